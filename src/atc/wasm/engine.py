"""The process-wide wasmtime engines: configuration, linker with yoke's imports, epoch ticker.

One ``FlightEngine`` per process, with one wasmtime ``Engine`` per compiler a
module was compiled with: Cranelift, the optimising compiler and the default,
and Winch, wasmtime's baseline compiler, three to five times faster to compile a
large Go flight but whose code runs slower, used only for modules of trusted
provenance (``atc.wasm.cache`` decides; docs/flight-runtime.md says why). Each
``Config`` (compiler, epoch interruption) is also what the compile worker uses,
so serialized artefacts fit; ``fingerprint(compiler)`` names that configuration
plus the wasmtime version and CPU, and keys the on-disk compiled cache. A
module runs in a store of the engine it was compiled for (``PreparedModule``).
The linkers define WASI preview 1,
a deadline-aware ``poll_oneoff`` and both ``host`` imports (always, so every
yoke flight links with or without cluster access). A daemon thread advances
the epoch every ``TICK_SECONDS`` while at least one flight runs (``running``)
and sleeps otherwise, so an idle process (the webhook between dry-runs) is
not woken, and the GIL not taken, 100 times a second for nothing. Each
running store checks the epoch (see ``atc.wasm.runner``). Flights run on the
engine's own thread pool.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import os
import platform
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from wasmtime import Caller, Config, Engine, FuncType, InstancePre, Linker, Module, ValType

from . import host, wasi_poll
from .context import current_invocation
from .guest import GuestMemory, GuestMemoryError
from .wasmtime_internals import set_compiler_strategy

TICK_SECONDS = 0.01
CRANELIFT, WINCH = "cranelift", "winch"
COMPILERS = (CRANELIFT, WINCH)
ENGINE_SETTINGS = {
    CRANELIFT: {"strategy": CRANELIFT, "cranelift_opt_level": "speed", "epoch_interruption": "true"},
    WINCH: {"strategy": WINCH, "epoch_interruption": "true"},
}


def make_config(compiler: str = CRANELIFT, *, parallel_compilation: bool = True) -> Config:
    """The engine configuration every artefact ``compiler`` puts in the compiled cache is made with."""
    if compiler not in COMPILERS:
        raise ValueError(f"unknown compiler {compiler!r}: expected one of {', '.join(COMPILERS)}")
    config = Config()
    if compiler == WINCH:
        set_compiler_strategy(config, WINCH)  # Config.strategy does not accept Winch
    else:
        config.strategy = CRANELIFT
        config.cranelift_opt_level = ENGINE_SETTINGS[CRANELIFT]["cranelift_opt_level"]
    config.epoch_interruption = True
    config.parallel_compilation = parallel_compilation
    return config


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def wasmtime_version() -> str:
    return importlib.metadata.version("wasmtime")


def engine_fingerprint(compiler: str = CRANELIFT) -> str:
    """Names everything that decides whether a serialized module fits this process's ``compiler`` engine."""
    parts = [
        wasmtime_version(),
        platform.machine(),
        _cpu_flags(),
        *sorted(f"{k}={v}" for k, v in ENGINE_SETTINGS[compiler].items()),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _poll_oneoff_import(caller: Caller, in_ptr: int, out_ptr: int, count: int, nevents_ptr: int) -> int:
    invocation = current_invocation()
    try:
        memory = GuestMemory(caller)
        time_left = invocation.time_left if invocation else (lambda: None)
        return wasi_poll.poll_oneoff(memory, in_ptr, out_ptr, count, nevents_ptr, time_left)
    except GuestMemoryError as exc:
        if invocation is not None:
            invocation.abort(f"poll_oneoff: {exc}")
        return wasi_poll.ERRNO_FAULT


def _build_linker(engine: Engine) -> Linker:
    i32, i64 = ValType.i32(), ValType.i64()
    linker = Linker(engine)
    linker.define_wasi()
    linker.allow_shadowing = True
    linker.define_func(
        "wasi_snapshot_preview1", "poll_oneoff", FuncType([i32, i32, i32, i32], [i32]), _poll_oneoff_import, True
    )
    linker.define_func("host", "k8s_lookup", FuncType([i32, i64, i64, i64, i64], [i64]), host.lookup_import, True)
    linker.define_func("host", "k8s_rest_mapping", FuncType([i32, i64, i64], [i64]), host.rest_mapping_import, True)
    return linker


@dataclass(frozen=True)
class PreparedModule:
    """A module linked once, with the engine its stores must belong to; shared by every run, on any thread."""

    instance_pre: InstancePre
    engine: Engine
    compiler: str = CRANELIFT


@dataclass(frozen=True)
class _Backend:
    engine: Engine
    linker: Linker
    fingerprint: str


class FlightEngine:
    """Engines (one per compiler in use), linkers, epoch ticker and worker threads shared by every flight."""

    def __init__(self, *, workers: int | None = None) -> None:
        self._backends: dict[str, _Backend] = {}
        self._backends_lock = threading.Lock()
        self.engine = self.backend(CRANELIFT).engine
        self.fingerprint = self.backend(CRANELIFT).fingerprint
        self.workers = workers or max(1, os.cpu_count() or 1)
        self.executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="flight")
        self._stopped = False
        self._active_runs = 0
        self.ticks = 0  # epoch increments so far
        self._wake = threading.Condition()
        self._ticker = threading.Thread(target=self._tick, name="wasm-epoch", daemon=True)
        self._ticker.start()

    def _tick(self) -> None:
        with self._wake:
            while not self._stopped:
                if self._active_runs == 0:
                    self._wake.wait()  # idle: no wake-ups until a flight starts
                    continue
                self._wake.wait(TICK_SECONDS)
                if self._active_runs:
                    for backend in list(self._backends.values()):
                        backend.engine.increment_epoch()
                    self.ticks += 1

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Mark one flight as running on this thread: the epoch advances while any is."""
        with self._wake:
            self._active_runs += 1
            self._wake.notify_all()
        try:
            yield
        finally:
            with self._wake:
                self._active_runs -= 1

    def backend(self, compiler: str) -> _Backend:
        """The engine and linker for modules ``compiler`` compiled (made on first use)."""
        with self._backends_lock:
            if compiler not in self._backends:
                engine = Engine(make_config(compiler))
                self._backends[compiler] = _Backend(engine, _build_linker(engine), engine_fingerprint(compiler))
            return self._backends[compiler]

    def prepare(self, module: Module, compiler: str = CRANELIFT) -> PreparedModule:
        """Link ``module`` (made by ``compiler``'s engine) once, for every run of it."""
        backend = self.backend(compiler)
        return PreparedModule(backend.linker.instantiate_pre(module), backend.engine, compiler)

    def close(self) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify_all()
        self.executor.shutdown(wait=True, cancel_futures=True)
        self._ticker.join(timeout=1)

    def cache_dir_name(self, compiler: str = CRANELIFT) -> str:
        """The compiled cache's directory for ``compiler``'s artefacts."""
        return f"wasmtime-{wasmtime_version()}-{self.backend(compiler).fingerprint}"
