"""The process-wide wasmtime engine: configuration, linker with yoke's imports, epoch ticker.

One ``FlightEngine`` per process. Its ``Config`` (Cranelift, epoch
interruption) is also what the compile worker uses, so serialized artefacts
fit; ``fingerprint`` names that configuration plus the wasmtime version and
CPU, and keys the on-disk compiled cache. The linker defines WASI preview 1,
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
from functools import cached_property
from pathlib import Path

from wasmtime import Caller, Config, Engine, FuncType, InstancePre, Linker, Module, ValType

from . import host, wasi_poll
from .context import current_invocation
from .guest import GuestMemory, GuestMemoryError

TICK_SECONDS = 0.01
ENGINE_SETTINGS = {"strategy": "cranelift", "cranelift_opt_level": "speed", "epoch_interruption": "true"}


def make_config(*, parallel_compilation: bool = True) -> Config:
    """The engine configuration every artefact in the compiled cache is made with."""
    config = Config()
    config.strategy = ENGINE_SETTINGS["strategy"]
    config.cranelift_opt_level = ENGINE_SETTINGS["cranelift_opt_level"]
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


def engine_fingerprint() -> str:
    """Names everything that decides whether a serialized module fits this process."""
    parts = [
        wasmtime_version(),
        platform.machine(),
        _cpu_flags(),
        *sorted(f"{k}={v}" for k, v in ENGINE_SETTINGS.items()),
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


class FlightEngine:
    """Engine, linker, epoch ticker and worker threads shared by every flight in the process."""

    def __init__(self, *, workers: int | None = None) -> None:
        self.engine = Engine(make_config())
        self.linker = _build_linker(self.engine)
        self.fingerprint = engine_fingerprint()
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
                    self.engine.increment_epoch()
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

    def prepare(self, module: Module) -> InstancePre:
        """Link ``module`` once; the result is shared by every run of it, on any thread."""
        return self.linker.instantiate_pre(module)

    def close(self) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify_all()
        self.executor.shutdown(wait=True, cancel_futures=True)
        self._ticker.join(timeout=1)

    @cached_property
    def cache_dir_name(self) -> str:
        return f"wasmtime-{wasmtime_version()}-{self.fingerprint}"
