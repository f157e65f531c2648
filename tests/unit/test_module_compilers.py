"""Which compiler a module gets, validation without compiling, and compiles that outlive an impatient caller.

``MODULE_COMPILER=auto`` gives Winch (fast to compile) only to modules of trusted provenance (URL in
the allow-list, or a verified signature) and Cranelift to the rest; ``validate`` answers from a
wasm validation and compiles in the background; only binary wasm is ever handed to wasmtime.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import wasmtime
from cryptography.hazmat.primitives.asymmetric import ed25519
from signing import public_pem, sign_module

from atc.wasm.cache import CompileError, ModuleCache, compiler_for
from atc.wasm.engine import CRANELIFT, WINCH, FlightEngine, make_config
from atc.wasm.errors import ModuleFetchError
from atc.wasm.runner import Invocation, run_flight_async
from atc.wasm.signatures import parse_verification_keys

WAT = '(module (memory (export "memory") 1) (func (export "_start")) (func (export "id_{n}")))'


def module_file(directory: Path, n: int, wasm: bytes | None = None) -> Path:
    path = directory / f"m{n}.wasm"
    path.write_bytes(wasm if wasm is not None else bytes(wasmtime.wat2wasm(WAT.format(n=n))))
    return path


@pytest.mark.parametrize(
    ("policy", "trusted", "compiler"),
    [
        ("auto", True, WINCH),
        ("auto", False, CRANELIFT),
        ("cranelift", True, CRANELIFT),
        ("winch", False, WINCH),
    ],
)
def test_the_policy_picks_winch_only_for_trusted_modules_by_default(policy: str, trusted: bool, compiler: str) -> None:
    assert compiler_for(policy, trusted=trusted) == compiler


def test_an_unknown_compiler_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown compiler 'llvm'"):
        make_config("llvm")


async def test_an_allow_listed_module_is_compiled_by_winch_and_runs(engine: FlightEngine, tmp_path: Path) -> None:
    path = module_file(tmp_path, 1)
    cache = ModuleCache(engine, tmp_path / "cache", allow_list=[f"{tmp_path}/*"])
    loaded = await cache.load(str(path))
    assert loaded.compiler == WINCH
    assert loaded.prepared.engine is engine.backend(WINCH).engine
    await run_flight_async(engine, loaded.prepared, Invocation())
    artefacts = list((tmp_path / "cache" / engine.cache_dir_name(WINCH)).glob("*.cwasm"))
    assert len(artefacts) == 1


async def test_a_module_of_unknown_provenance_is_compiled_by_cranelift(engine: FlightEngine, tmp_path: Path) -> None:
    cache = ModuleCache(engine, tmp_path / "cache")
    loaded = await cache.load(str(module_file(tmp_path, 2)))
    assert loaded.compiler == CRANELIFT
    assert loaded.prepared.engine is engine.engine


async def test_a_verified_signature_earns_winch(engine: FlightEngine, tmp_path: Path) -> None:
    private = ed25519.Ed25519PrivateKey.generate()
    signed = sign_module(bytes(wasmtime.wat2wasm(WAT.format(n=3))), private)
    keys = parse_verification_keys(json.dumps([public_pem(private)]).encode())
    cache = ModuleCache(engine, tmp_path / "cache", verification_keys=keys)
    loaded = await cache.load(str(module_file(tmp_path, 3, signed)))
    assert loaded.compiler == WINCH
    await run_flight_async(engine, loaded.prepared, Invocation())


async def test_validate_checks_without_compiling_then_compiles_in_the_background(
    engine: FlightEngine, tmp_path: Path
) -> None:
    path = module_file(tmp_path, 4)
    cache = ModuleCache(engine, tmp_path / "cache")
    await cache.validate(str(path))
    assert cache.stats.compiles == 0  # the answer came before any compile
    loaded = await cache.load(str(path))  # joins the background compile
    assert cache.stats.compiles == 1
    await run_flight_async(engine, loaded.prepared, Invocation())


async def test_validate_refuses_invalid_wasm_without_compiling(engine: FlightEngine, tmp_path: Path) -> None:
    broken = b"\0asm\x01\0\0\0\x01\x05\x01\x60\x00"  # a type section cut short
    cache = ModuleCache(engine, tmp_path / "cache")
    with pytest.raises(CompileError, match="failed to compile module: "):
        await cache.validate(str(module_file(tmp_path, 5, broken)))
    assert cache.stats.compiles == 0


async def test_text_is_never_compiled_and_never_quoted(engine: FlightEngine, tmp_path: Path) -> None:
    secret = "(module) ;; password=hunter2"
    cache = ModuleCache(engine, tmp_path / "cache")
    for check in (cache.load, cache.validate):
        with pytest.raises(ModuleFetchError) as refused:
            await check(str(module_file(tmp_path, 6, secret.encode())))
        assert "not a WebAssembly binary module" in str(refused.value)
        assert "hunter2" not in str(refused.value)


async def test_a_caller_that_stops_waiting_does_not_cancel_the_compile(engine: FlightEngine, tmp_path: Path) -> None:
    path = module_file(tmp_path, 7)
    cache = ModuleCache(engine, tmp_path / "cache")
    impatient = asyncio.ensure_future(cache.load(str(path)))
    await asyncio.sleep(0.05)  # the compile has started
    impatient.cancel()
    with pytest.raises(asyncio.CancelledError):
        await impatient
    loaded = await cache.load(str(path))
    assert cache.stats.compiles == 1
    await run_flight_async(engine, loaded.prepared, Invocation())
