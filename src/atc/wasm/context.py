"""The state of one flight invocation, visible to host functions on the thread running it.

Host functions are shared by every store, so the runner puts the running
invocation's ``InvocationContext`` in a context variable before ``_start``:
its cluster access, its deadline, and ``abort()``, which stops the guest with
a reason without raising through wasmtime (raising there would go through
wasmtime-py's process-global last-exception slot and could surface in another
thread's run). ``abort()`` sets the store's epoch deadline to now, so the next
epoch check calls the runner's watchdog, which traps with the reason.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass, field

from wasmtime import Store

from atc.k8s.access import ClusterAccess


@dataclass
class InvocationContext:
    """Per-run facts the host functions and the watchdog share."""

    access: ClusterAccess = field(default_factory=lambda: ClusterAccess(enabled=False))
    deadline: float | None = None  # time.monotonic() value, None for no deadline
    store: Store | None = None
    abort_reason: str | None = None

    def time_left(self) -> float | None:
        if self.abort_reason is not None:
            return 0.0
        return None if self.deadline is None else self.deadline - time.monotonic()

    def abort(self, reason: str) -> None:
        """End the run at the guest's next epoch check, with ``reason`` as the error."""
        if self.abort_reason is None:
            self.abort_reason = reason
        if self.store is not None:
            self.store.set_epoch_deadline(0)


_CURRENT: ContextVar[InvocationContext | None] = ContextVar("flight_invocation", default=None)


def current_invocation() -> InvocationContext | None:
    return _CURRENT.get()


def set_current_invocation(context: InvocationContext | None) -> None:
    _CURRENT.set(context)
