"""The wasmtime adapter (``atc.wasm.wasmtime_internals``): private names still there, each function still works.

An incompatible wasmtime-py upgrade (a private name renamed, a C signature
changed) fails here rather than in a flight: every private name the adapter
reads is checked for its ctypes shape, and every adapter function is run for
real, directly and through the flight runner. A source scan keeps every other
module off wasmtime's private names.
"""

from __future__ import annotations

import ast
import ctypes
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import wasmtime
from wasmtime import _bindings

from atc.wasm import wasmtime_internals
from atc.wasm.engine import FlightEngine
from atc.wasm.runner import FlightError, Invocation, run_flight
from atc.wasm.wasmtime_internals import STRATEGIES, set_compiler_strategy, set_stdin_bytes, watch_epochs

REPO = Path(__file__).resolve().parents[2]
ADAPTER = REPO / "src" / "atc" / "wasm" / "wasmtime_internals.py"

ANSWER = '(module (func (export "answer") (result i32) i32.const 42))'
SPIN = '(module (memory (export "memory") 1) (func (export "_start") (loop br 0)))'
# Copies stdin to stdout, 64 KiB at a time, until a read returns nothing.
ECHO = """(module
 (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
 (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
 (memory (export "memory") 2)
 (func (export "_start")
   (loop $more
     (i32.store (i32.const 0) (i32.const 1024)) (i32.store (i32.const 4) (i32.const 65536))
     (drop (call $read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
     (if (i32.load (i32.const 8)) (then
       (i32.store (i32.const 4) (i32.load (i32.const 8)))
       (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 12)))
       (br $more))))))"""


# --- the private names and their shapes -----------------------------------------------------------


def _argtypes(name: str) -> list[Any]:
    return list(getattr(_bindings, name).argtypes)


def _check_strategy_set() -> None:
    assert callable(_bindings.wasmtime_config_strategy_set)
    assert _argtypes("_wasmtime_config_strategy_set") == [
        ctypes.POINTER(_bindings.wasm_config_t),
        _bindings.wasmtime_strategy_t,
    ]
    assert _bindings.wasmtime_strategy_t is ctypes.c_uint8
    # The C enum counts from 0 in this order; the adapter's numbers follow it.
    members = [member.name for member in _bindings.wasmtime_strategy_enum]
    assert members == ["WASMTIME_STRATEGY_AUTO", "WASMTIME_STRATEGY_CRANELIFT", "WASMTIME_STRATEGY_WINCH"]
    assert [STRATEGIES[name] for name in ("auto", "cranelift", "winch")] == [0, 1, 2]


def _check_byte_vec() -> None:
    assert list(_bindings.wasm_byte_vec_t._fields_) == [
        ("size", ctypes.c_size_t),
        ("data", ctypes.POINTER(ctypes.c_ubyte)),
    ]


def _check_byte_vec_new() -> None:
    assert callable(_bindings.wasm_byte_vec_new)
    assert _argtypes("_wasm_byte_vec_new") == [
        ctypes.POINTER(_bindings.wasm_byte_vec_t),
        ctypes.c_size_t,
        ctypes.POINTER(ctypes.c_ubyte),
    ]


def _check_stdin_bytes() -> None:
    assert callable(_bindings.wasi_config_set_stdin_bytes)
    assert _argtypes("_wasi_config_set_stdin_bytes") == [
        ctypes.POINTER(_bindings.wasi_config_t),
        ctypes.POINTER(_bindings.wasm_byte_vec_t),
    ]


def _check_error_new() -> None:
    assert callable(_bindings.wasmtime_error_new)
    assert _argtypes("_wasmtime_error_new") == [ctypes.POINTER(ctypes.c_char)]
    assert _bindings._wasmtime_error_new.restype is ctypes.POINTER(_bindings.wasmtime_error_t)


def _check_epoch_callback() -> None:
    assert callable(_bindings.wasmtime_store_epoch_deadline_callback)
    store, callback, data, finalizer = _argtypes("_wasmtime_store_epoch_deadline_callback")
    assert store is ctypes.POINTER(_bindings.wasmtime_store_t)
    assert data is ctypes.c_void_p
    assert callback._restype_ is ctypes.c_size_t  # a wasmtime_error_t* or 0
    assert callback._argtypes_ == (
        ctypes.POINTER(_bindings.wasmtime_context_t),
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_uint64),
        ctypes.POINTER(_bindings.wasmtime_update_deadline_kind_t),
    )
    assert _bindings.wasmtime_update_deadline_kind_t is ctypes.c_uint8
    assert finalizer._restype_ is None
    assert finalizer._argtypes_ == (ctypes.c_void_p,)


SHAPES: dict[str, Callable[[], None]] = {
    "wasmtime_config_strategy_set": _check_strategy_set,
    "_wasmtime_config_strategy_set": _check_strategy_set,
    "wasm_byte_vec_t": _check_byte_vec,
    "wasm_byte_vec_new": _check_byte_vec_new,
    "wasi_config_set_stdin_bytes": _check_stdin_bytes,
    "wasmtime_error_new": _check_error_new,
    "wasmtime_store_epoch_deadline_callback": _check_epoch_callback,
    "_wasmtime_store_epoch_deadline_callback": _check_epoch_callback,
}


def _private_names_the_adapter_reads() -> set[str]:
    tree = ast.parse(ADAPTER.read_text())
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "_bindings"
    }


def test_every_private_name_the_adapter_reads_has_a_shape_check() -> None:
    used = _private_names_the_adapter_reads()
    assert used  # the scan sees the adapter's uses
    assert used <= set(SHAPES), f"add shape checks for {sorted(used - set(SHAPES))}"


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_private_name_keeps_its_shape(name: str) -> None:
    assert hasattr(_bindings, name)
    SHAPES[name]()


@pytest.mark.parametrize("managed", [wasmtime.Config, wasmtime.WasiConfig])
def test_the_objects_handed_to_the_c_api_expose_their_pointers(managed: type) -> None:
    assert callable(managed().ptr)


# --- the adapter's functions, for real --------------------------------------------------------------


def _call_answer(engine: wasmtime.Engine, module: wasmtime.Module) -> object:
    store = wasmtime.Store(engine)
    answer = wasmtime.Instance(store, module, []).exports(store)["answer"]
    assert isinstance(answer, wasmtime.Func)
    return answer(store)


def _engine(strategy: str) -> wasmtime.Engine:
    config = wasmtime.Config()
    set_compiler_strategy(config, strategy)
    return wasmtime.Engine(config)


def test_a_winch_config_compiles_and_runs_with_winch() -> None:
    winch, cranelift = _engine("winch"), _engine("cranelift")
    module = wasmtime.Module(winch, ANSWER)
    assert _call_answer(winch, module) == 42
    artefact = module.serialize()
    other_winch = _engine("winch")
    assert _call_answer(other_winch, wasmtime.Module.deserialize(other_winch, artefact)) == 42
    with pytest.raises(wasmtime.WasmtimeError, match="Winch"):  # the code really is Winch's
        wasmtime.Module.deserialize(cranelift, artefact)


def test_a_cranelift_config_compiles_with_cranelift() -> None:
    cranelift = _engine("cranelift")
    module = wasmtime.Module(cranelift, ANSWER)
    assert _call_answer(cranelift, module) == 42
    with pytest.raises(wasmtime.WasmtimeError):
        wasmtime.Module.deserialize(_engine("winch"), module.serialize())


def test_an_unknown_strategy_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown compiler strategy 'llvm'"):
        set_compiler_strategy(wasmtime.Config(), "llvm")


def _run_echo(data: bytes, tmp_path: Path) -> bytes:
    engine = wasmtime.Engine()
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    wasi = wasmtime.WasiConfig()
    set_stdin_bytes(wasi, data)
    wasi.stdout_file = str(tmp_path / "stdout")
    store = wasmtime.Store(engine)
    store.set_wasi(wasi)
    start = linker.instantiate(store, wasmtime.Module(engine, ECHO)).exports(store)["_start"]
    assert isinstance(start, wasmtime.Func)
    start(store)
    return (tmp_path / "stdout").read_bytes()


@pytest.mark.parametrize("data", [b"", b"hello\x00world\n", bytes(range(256)) * 1000])
def test_stdin_bytes_reach_the_guest(data: bytes, tmp_path: Path) -> None:
    assert _run_echo(data, tmp_path) == data


def test_an_epoch_watch_continues_until_the_check_returns_a_message() -> None:
    config = wasmtime.Config()
    config.epoch_interruption = True
    engine = wasmtime.Engine(config)
    store = wasmtime.Store(engine)
    calls: list[int] = []

    def check() -> str | None:
        calls.append(1)
        return "stopped by the test" if len(calls) == 3 else None

    watch = watch_epochs(store, check)
    store.set_epoch_deadline(1)
    start = wasmtime.Instance(store, wasmtime.Module(engine, SPIN), []).exports(store)["_start"]
    assert isinstance(start, wasmtime.Func)
    done = threading.Event()
    ticker = threading.Thread(target=_tick, args=(engine, done))
    ticker.start()
    try:
        with pytest.raises((wasmtime.Trap, wasmtime.WasmtimeError), match="stopped by the test"):
            start(store)
    finally:
        done.set()
        ticker.join()
    assert len(calls) == 3  # two ``None`` answers let the guest run on
    assert watch.callback is not None


def _tick(engine: wasmtime.Engine, done: threading.Event) -> None:
    while not done.wait(0.001):
        engine.increment_epoch()


# --- the runner, which uses the adapter -----------------------------------------------------------


@pytest.fixture(scope="module")
def flight_engine() -> Iterator[FlightEngine]:
    engine = FlightEngine(workers=1)
    yield engine
    engine.close()


@pytest.mark.parametrize("compiler", ["cranelift", "winch"])
def test_the_runner_feeds_stdin_and_stops_at_its_deadline(flight_engine: FlightEngine, compiler: str) -> None:
    backend = flight_engine.backend(compiler)
    echo = flight_engine.prepare(wasmtime.Module(backend.engine, ECHO), compiler)
    assert run_flight(flight_engine, echo, Invocation(stdin=b'{"kind": "Input"}')).stdout == b'{"kind": "Input"}'
    spin = flight_engine.prepare(wasmtime.Module(backend.engine, SPIN), compiler)
    with pytest.raises(FlightError, match="execution timeout") as failure:
        run_flight(flight_engine, spin, Invocation(timeout=0.05))
    assert failure.value.reason == "timeout"


# --- nobody else imports wasmtime's private names ----------------------------------------------------


def _private_wasmtime_uses(path: Path) -> list[str]:
    """Every ``wasmtime._*`` import or attribute in ``path``, as text."""
    uses = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            uses += [alias.name for alias in node.names if _is_private_module(alias.name)]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if _is_private_module(node.module):
                uses.append(node.module)
            elif node.module == "wasmtime":
                uses += [f"wasmtime.{alias.name}" for alias in node.names if _is_private(alias.name)]
        elif _is_private_wasmtime_attribute(node):
            assert isinstance(node, ast.Attribute)
            uses.append(f"wasmtime.{node.attr}")
    return uses


def _is_private_wasmtime_attribute(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "wasmtime"
        and _is_private(node.attr)
    )


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _is_private_module(dotted: str) -> bool:
    parts = dotted.split(".")
    return parts[0] == "wasmtime" and any(_is_private(part) for part in parts[1:])


def test_only_the_adapter_uses_wasmtime_private_names() -> None:
    sources = sorted([*(REPO / "src").rglob("*.py"), *(REPO / "services").rglob("*.py")])
    offenders = {
        str(path.relative_to(REPO)): uses
        for path in sources
        if path != ADAPTER and (uses := _private_wasmtime_uses(path))
    }
    assert offenders == {}
    assert _private_wasmtime_uses(ADAPTER) == ["wasmtime._bindings"]  # the scan does find them


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("from wasmtime import _ffi as ffi", ["wasmtime._ffi"]),
        ("import wasmtime._bindings", ["wasmtime._bindings"]),
        ("from wasmtime._store import Store", ["wasmtime._store"]),
        ("import wasmtime\nwasmtime._ffi.dll", ["wasmtime._ffi"]),
        ("from wasmtime import Store, __version__\nimport wasmtime\nwasmtime.Config()", []),
    ],
)
def test_the_scan_recognises_private_imports(source: str, found: list[str], tmp_path: Path) -> None:
    path = tmp_path / "module.py"
    path.write_text(source)
    assert _private_wasmtime_uses(path) == found


def test_the_adapter_module_is_the_one_scanned() -> None:
    assert Path(wasmtime_internals.__file__).resolve() == ADAPTER
