"""Exponential backoff for retry loops: the one helper every retrying loop in the ATC uses.

``Backoff(initial, maximum)`` gives ``initial``, doubling on each ``next_delay()`` up to ``maximum``;
``reset()`` after a success starts again from ``initial``. Used by the reflector's list/watch retries
(``atc.k8s.reflector``), the webhook's signal writes and configuration registration, and the
controller's wait for a signalled child to change. The work queue's per-item backoff follows yoke's
own curve with jitter and is separate (``atc_controller.core.workqueue``).
"""

from __future__ import annotations


class Backoff:
    """Delays that double from ``initial`` up to ``maximum`` (a maximum below ``initial`` caps it too)."""

    def __init__(self, initial: float, maximum: float) -> None:
        if initial <= 0 or maximum <= 0:
            raise ValueError("backoff delays must be positive")
        self._initial = min(initial, maximum)
        self._maximum = maximum
        self._next = self._initial

    def next_delay(self) -> float:
        """The delay to wait now; the following one is twice as long, up to the maximum."""
        delay = self._next
        self._next = min(self._next * 2, self._maximum)
        return delay

    def reset(self) -> None:
        """Start again from the initial delay (after a success)."""
        self._next = self._initial
