"""Run one flight: WASI stdin/stdout/stderr, argv and env, deadline, memory cap, output caps.

``run_flight`` (blocking, on a worker thread) and ``run_flight_async`` (from
the event loop, on the engine's pool) execute a linked module as yoke does
(docs/flight-runtime.md, "One run"): stdin holds the input, stdout and stderr go to files on tmpfs,
``_start`` runs, and the Go exit code decides success. A watchdog, called by
wasmtime at every epoch tick, stops the guest at its deadline, when stdout or
stderr outgrows its cap, or when a host function aborts it. Every failure is a
``FlightError`` whose message follows yoke's wording and whose ``stdout`` holds
what the flight printed before failing (yoke reads a parent's status from it).
Callers: the takeoff pipeline (``atc.release.takeoff``, for the reconcilers and the
admission dry runs) and the webhook's CRD conversion (``atc_webhook.conversion``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from wasmtime import ExitTrap, Func, Store, Trap, WasiConfig, WasmtimeError

from atc.k8s.access import ClusterAccess, LookupTracker
from atc.model.gocompat import seconds_to_duration_text

from .context import InvocationContext, set_current_invocation
from .engine import FlightEngine, PreparedModule
from .wasmtime_internals import set_stdin_bytes, watch_epochs

MIB = 1 << 20
DEFAULT_TIMEOUT_SECONDS = 10.0
DEFAULT_STDOUT_LIMIT = 16 * MIB
DEFAULT_STDERR_LIMIT = 64 * 1024
NO_STDERR = "(no output captured on stderr)"


def _scratch_root() -> str:
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else tempfile.gettempdir()


@dataclass(frozen=True)
class Invocation:
    """Everything one run needs besides the module."""

    stdin: bytes = b""
    argv: Sequence[str] = ("flight",)
    env: Mapping[str, str] = field(default_factory=dict)
    timeout: float | None = DEFAULT_TIMEOUT_SECONDS  # None: no deadline
    max_memory_mib: int = 0  # 0: wasm32's 4 GiB
    stdout_limit: int = DEFAULT_STDOUT_LIMIT
    stderr_limit: int = DEFAULT_STDERR_LIMIT
    access: ClusterAccess = field(default_factory=lambda: ClusterAccess(enabled=False))


@dataclass
class RunResult:
    stdout: bytes
    stderr: bytes
    seconds: float
    lookups: LookupTracker


class FlightError(Exception):
    """A flight run that did not succeed; ``reason`` is exit, timeout, memory, output, aborted, trap or link."""

    def __init__(self, message: str, reason: str, *, stdout: bytes = b"", stderr: bytes = b"", exit_code: int = -1):
        super().__init__(message)
        self.reason = reason
        self.stdout = stdout
        self.stderr = stderr
        self.exit_code = exit_code


class _Run:
    """One execution's files, store and watchdog."""

    def __init__(self, invocation: Invocation, scratch: Path) -> None:
        self.invocation = invocation
        self.stdout_path = scratch / "stdout"
        self.stderr_path = scratch / "stderr"
        deadline = time.monotonic() + invocation.timeout if invocation.timeout is not None else None
        self.context = InvocationContext(access=invocation.access, deadline=deadline)
        self.stopped_for: str | None = None  # "timeout" | "output" | "aborted"
        self.stop_message = ""

    def _file_size(self, path: Path) -> int:
        try:
            return path.stat().st_size
        except OSError:
            return 0

    def _reason_to_stop(self) -> tuple[str, str] | None:
        if self.context.abort_reason is not None:
            return "aborted", self.context.abort_reason
        left = self.context.time_left()
        if left is not None and left <= 0:
            return "timeout", self._timeout_message()
        if self._file_size(self.stdout_path) > self.invocation.stdout_limit:
            return "output", f"flight stdout exceeded its limit of {self.invocation.stdout_limit} bytes"
        if self._file_size(self.stderr_path) > 16 * self.invocation.stderr_limit:
            return "output", f"flight stderr exceeded its limit of {16 * self.invocation.stderr_limit} bytes"
        return None

    def _timeout_message(self) -> str:
        assert self.invocation.timeout is not None
        duration = seconds_to_duration_text(self.invocation.timeout)
        return f"module closed with context deadline exceeded: execution timeout ({duration}) exceeded"

    def watchdog(self) -> str | None:
        """Called by wasmtime at each epoch deadline: the message to trap with, or None to wait one more tick."""
        stop = self._reason_to_stop()
        if stop is None:
            return None
        self.stopped_for, self.stop_message = stop
        return self.stop_message

    def read_stdout(self) -> bytes:
        with contextlib.suppress(OSError), self.stdout_path.open("rb") as out:
            return out.read(self.invocation.stdout_limit)
        return b""

    def read_stderr(self) -> bytes:
        with contextlib.suppress(OSError), self.stderr_path.open("rb") as err:
            data = err.read(self.invocation.stderr_limit + 1)
            if len(data) > self.invocation.stderr_limit:
                return data[: self.invocation.stderr_limit] + b"\n... (stderr truncated)"
            return data
        return b""


def _wasi_config(invocation: Invocation, run: _Run) -> WasiConfig:
    wasi = WasiConfig()
    wasi.argv = list(invocation.argv)
    wasi.env = list(invocation.env.items())
    set_stdin_bytes(wasi, invocation.stdin)
    wasi.stdout_file = str(run.stdout_path)
    wasi.stderr_file = str(run.stderr_path)
    return wasi


def _execute(prepared: PreparedModule, engine: FlightEngine, run: _Run) -> int:
    """Instantiate and run ``_start``; returns the exit code or raises wasmtime's error."""
    store = Store(prepared.engine)
    store.set_wasi(_wasi_config(run.invocation, run))
    if run.invocation.max_memory_mib > 0:
        store.set_limits(memory_size=run.invocation.max_memory_mib * MIB)
    watch = watch_epochs(store, run.watchdog)  # referenced until the store is gone
    store.set_epoch_deadline(1)
    run.context.store = store
    set_current_invocation(run.context)
    try:
        start = prepared.instance_pre.instantiate(store).exports(store).get("_start")
        if not isinstance(start, Func):
            raise FlightError("failed to instantiate module: module does not export _start", "link")
        with engine.running():
            start(store)
        return 0
    except ExitTrap as exit_trap:
        code = exit_trap.code
        exit_trap.__traceback__ = None
        return code
    finally:
        set_current_invocation(None)
        run.context.store = None
        del store, watch


def _failure(run: _Run, error: WasmtimeError | Trap, stdout: bytes, stderr: bytes) -> FlightError:
    if run.stopped_for == "timeout":
        return FlightError(run.stop_message, "timeout", stderr=stderr)  # yoke returns no stdout on timeout
    if run.stopped_for is not None:
        return FlightError(
            f"failed to instantiate module: {run.stop_message}", run.stopped_for, stdout=stdout, stderr=stderr
        )
    text = stderr.decode(errors="replace").strip() or NO_STDERR
    reason = "trap" if isinstance(error, Trap) else "link"
    return FlightError(f"failed to instantiate module: {text} ({error})", reason, stdout=stdout, stderr=stderr)


def _exit_failure(run: _Run, code: int, stdout: bytes, stderr: bytes) -> FlightError:
    text = stderr.decode(errors="replace").strip() or NO_STDERR
    if code == 2 and "fatal error: out of memory" in text and run.invocation.max_memory_mib:
        limit = run.invocation.max_memory_mib
        message = f"failed to instantiate module: flight exceeded its memory limit of {limit} MiB: {text}"
        return FlightError(message, "memory", stdout=stdout, stderr=stderr, exit_code=code)
    return FlightError(f"failed to instantiate module: {text}", "exit", stdout=stdout, stderr=stderr, exit_code=code)


def run_flight(engine: FlightEngine, prepared: PreparedModule, invocation: Invocation) -> RunResult:
    """Run a linked flight to completion on this thread."""
    started = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix="flight-", dir=_scratch_root()))
    run = _Run(invocation, scratch)
    try:
        try:
            code = _execute(prepared, engine, run)
        except FlightError:
            raise
        except (WasmtimeError, Trap) as error:  # traps, link errors, watchdog stops
            error.__traceback__ = None
            raise _failure(run, error, run.read_stdout(), run.read_stderr()) from None
        stdout, stderr = run.read_stdout(), run.read_stderr()
        if run.context.abort_reason is not None:  # the guest finished before its next epoch check
            message = f"failed to instantiate module: {run.context.abort_reason}"
            raise FlightError(message, "aborted", stdout=stdout, stderr=stderr)
        if run.stopped_for == "output" or (len(stdout) >= invocation.stdout_limit > 0 and _oversized(run)):
            raise FlightError(
                f"failed to instantiate module: {run.stop_message}", "output", stdout=stdout, stderr=stderr
            )
        if code != 0:
            raise _exit_failure(run, code, stdout, stderr)
        return RunResult(stdout, stderr, time.monotonic() - started, invocation.access.tracker)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        gc.collect(0)  # trap objects can keep a store (and its memory) alive through reference cycles


def _oversized(run: _Run) -> bool:
    if run._file_size(run.stdout_path) > run.invocation.stdout_limit:
        run.stop_message = f"flight stdout exceeded its limit of {run.invocation.stdout_limit} bytes"
        return True
    return False


async def run_flight_async(engine: FlightEngine, prepared: PreparedModule, invocation: Invocation) -> RunResult:
    """Run a flight on the engine's worker pool; the event loop keeps serving meanwhile."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(engine.executor, run_flight, engine, prepared, invocation)
