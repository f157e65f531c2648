"""The only module that touches wasmtime-py's private names (``wasmtime._bindings``, its ctypes layer).

wasmtime-py's public API lacks three things the flight runtime needs, so
they are reached through the C API bindings here, behind small typed
functions:

- ``set_compiler_strategy``: ``Config.strategy`` accepts only "auto" and
  "cranelift"; ``atc.wasm.engine`` also needs Winch (docs/flight-runtime.md).
- ``set_stdin_bytes``: ``WasiConfig`` can read stdin only from a file;
  ``atc.wasm.runner`` hands the flight its input from memory.
- ``watch_epochs``: ``Store`` can only trap or yield at an epoch deadline;
  ``atc.wasm.runner`` decides at each tick whether to stop the guest, and
  with which message.

``tests/unit/test_wasmtime_internals.py`` checks the shape of every private
name used here and runs each function, so an incompatible wasmtime upgrade
fails there first; it also checks no other module imports ``wasmtime._*``.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from wasmtime import Config, Store, WasiConfig, _bindings

# wasmtime_strategy_t of wasmtime's C API (wasmtime/config.h). The generated
# ``_bindings.wasmtime_strategy_enum`` numbers its members from 1, so it cannot be used as is.
STRATEGIES = {"auto": 0, "cranelift": 1, "winch": 2}
_UPDATE_DEADLINE_CONTINUE = 0  # wasmtime_update_deadline_kind_t WASMTIME_UPDATE_DEADLINE_CONTINUE

_EPOCH_CALLBACK = _bindings._wasmtime_store_epoch_deadline_callback.argtypes[1]
_FINALIZER = _bindings._wasmtime_store_epoch_deadline_callback.argtypes[3]
_NO_FINALIZER = _FINALIZER(lambda _data: None)

EpochCheck = Callable[[], str | None]
"""Called at each epoch deadline: ``None`` lets the guest run one more tick, a message traps it."""


def set_compiler_strategy(config: Config, strategy: str) -> None:
    """Make ``config`` compile with ``strategy`` ("auto", "cranelift" or "winch")."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown compiler strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}")
    _bindings.wasmtime_config_strategy_set(config.ptr(), STRATEGIES[strategy])


def set_stdin_bytes(wasi: WasiConfig, data: bytes) -> None:
    """Give the guest ``data`` as its stdin (the config keeps its own copy)."""
    vector = _bindings.wasm_byte_vec_t()
    buffer = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
    _bindings.wasm_byte_vec_new(ctypes.byref(vector), len(data), buffer)
    _bindings.wasi_config_set_stdin_bytes(wasi.ptr(), ctypes.byref(vector))  # the config takes ownership


@dataclass(frozen=True)
class EpochWatch:
    """The native callback ``watch_epochs`` installed; keep it referenced while the store can run."""

    callback: Any


def _error_address(message: str) -> int:
    """A new ``wasmtime_error_t`` (owned by wasmtime once returned from the callback), as an address."""
    error = _bindings.wasmtime_error_new(message.encode())
    return int(ctypes.cast(error, ctypes.c_void_p).value or 0)


def watch_epochs(store: Store, check: EpochCheck) -> EpochWatch:
    """Call ``check`` at each epoch deadline of ``store``; a message it returns traps the guest with that text.

    The deadline itself is still set with ``Store.set_epoch_deadline``; after
    each ``None`` the next deadline is one tick later.
    """

    def on_deadline(_context: Any, _data: Any, delta: Any, kind: Any) -> int:
        message = check()
        if message is not None:
            return _error_address(message)
        delta[0] = 1
        kind[0] = _UPDATE_DEADLINE_CONTINUE
        return 0

    callback = _EPOCH_CALLBACK(on_deadline)
    _bindings.wasmtime_store_epoch_deadline_callback(store.ptr(), callback, None, _NO_FINALIZER)
    return EpochWatch(callback)
