"""Injectable monotonic time: the ``Clock`` protocol and the real ``MonotonicClock``.

Everything that waits or measures intervals (the reflector's retries and
resyncs, the controller's work queue and Lease, the webhook's TLS reloader)
takes a ``Clock``, so unit tests substitute a manually advanced one
(``tests/fakes.py``'s ``FakeClock``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """Monotonic time in seconds and a way to wait for it; tests substitute a manually advanced one."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class MonotonicClock:
    """The real clock: ``time.monotonic`` and ``asyncio.sleep``."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
