"""A WASI ``poll_oneoff`` that honours the flight's deadline.

wasmtime's own ``poll_oneoff`` blocks inside host code, where epoch
interruption cannot reach, so a Go flight in ``time.Sleep`` would outlive its
timeout. This replacement (installed by ``atc.wasm.engine`` over the WASI
import) reports file descriptor subscriptions ready at once and sleeps for
clock subscriptions only until the invocation's deadline; the guest then
re-enters wasm and the epoch check stops it.

Layouts (WASI preview 1): a subscription is 48 bytes (userdata u64 @0, tag u8
@8, then for clocks: id u32 @16, timeout u64 @24, precision u64 @32, flags u16
@40; for fds: fd u32 @16); an event is 32 bytes (userdata u64 @0, errno u16 @8,
type u8 @10, nbytes u64 @16, flags u16 @24).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from .guest import GuestMemory

SUBSCRIPTION_SIZE = 48
EVENT_SIZE = 32
TAG_CLOCK, TAG_FD_READ, TAG_FD_WRITE = 0, 1, 2
CLOCK_REALTIME, CLOCK_MONOTONIC = 0, 1
FLAG_ABSOLUTE = 1
ERRNO_SUCCESS, ERRNO_FAULT, ERRNO_INVAL = 0, 21, 28
MAX_SLEEP_SLICE = 0.05  # seconds; re-check the deadline at least this often


@dataclass(frozen=True)
class Subscription:
    userdata: int
    tag: int
    clock_id: int
    timeout_ns: int
    flags: int


def _parse(raw: bytes, count: int) -> list[Subscription]:
    subscriptions = []
    for index in range(count):
        chunk = raw[index * SUBSCRIPTION_SIZE : (index + 1) * SUBSCRIPTION_SIZE]
        (userdata,) = struct.unpack_from("<Q", chunk, 0)
        tag = chunk[8]
        clock_id, timeout_ns, flags = 0, 0, 0
        if tag == TAG_CLOCK:
            (clock_id,) = struct.unpack_from("<I", chunk, 16)
            (timeout_ns,) = struct.unpack_from("<Q", chunk, 24)
            (flags,) = struct.unpack_from("<H", chunk, 40)
        subscriptions.append(Subscription(userdata, tag, clock_id, timeout_ns, flags))
    return subscriptions


def _event(sub: Subscription, errno: int = ERRNO_SUCCESS) -> bytes:
    event = bytearray(EVENT_SIZE)
    struct.pack_into("<QHB", event, 0, sub.userdata, errno, sub.tag)
    return bytes(event)


def _seconds_until(sub: Subscription) -> float:
    if not sub.flags & FLAG_ABSOLUTE:
        return sub.timeout_ns / 1e9
    now_ns = time.time_ns() if sub.clock_id == CLOCK_REALTIME else time.monotonic_ns()
    return max(0.0, (sub.timeout_ns - now_ns) / 1e9)


def _sleep_until_due(seconds: float, time_left: Callable[[], float | None]) -> bool:
    """Sleep ``seconds`` in slices; stop early (False) when the invocation's time is up."""
    end = time.monotonic() + seconds
    while True:
        remaining = end - time.monotonic()
        if remaining <= 0:
            return True
        left = time_left()
        if left is not None and left <= 0:
            return False
        time.sleep(min(remaining, MAX_SLEEP_SLICE, left if left is not None else MAX_SLEEP_SLICE))


def poll_oneoff(
    memory: GuestMemory, in_ptr: int, out_ptr: int, count: int, nevents_ptr: int, time_left: Callable[[], float | None]
) -> int:
    """Serve one ``poll_oneoff`` call; returns a WASI errno."""
    if count <= 0:
        return ERRNO_INVAL
    subscriptions = _parse(memory.read(in_ptr, count * SUBSCRIPTION_SIZE), count)
    ready = [s for s in subscriptions if s.tag in (TAG_FD_READ, TAG_FD_WRITE)]
    clocks = [s for s in subscriptions if s.tag == TAG_CLOCK]
    if not ready and clocks:
        soonest = min(clocks, key=_seconds_until)
        _sleep_until_due(_seconds_until(soonest), time_left)
        ready = [soonest]
    events = b"".join(_event(sub) for sub in ready)
    memory.write(out_ptr, events)
    memory.write_u32(nevents_ptr, len(ready))
    return ERRNO_SUCCESS
