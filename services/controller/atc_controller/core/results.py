"""What a reconcile returns or raises: ``Result``, ``RequeueAfterError`` and ``TerminalError``.

Reconcilers (Airway, instance, Flight) return a ``Result`` or raise; the
manager (``core.controller``) maps the outcome to a requeue decision of the
work queue, following yoke's ``ctrl.Result`` and ``ctrl.Terminal``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Result:
    """A successful reconcile.

    ``requeue_after`` is ``None`` (done), a positive number of seconds (look again
    then), or ``0`` (look again soon, after the item's current backoff, like
    controller-runtime's ``Requeue: true``).
    """

    requeue_after: float | None = None

    def __post_init__(self) -> None:
        if self.requeue_after is not None and self.requeue_after < 0:
            raise ValueError(f"requeue_after must be >= 0, got {self.requeue_after}")


class RequeueAfterError(Exception):
    """A retryable error that asks to be retried after ``requeue_after`` seconds instead of the backoff."""

    def __init__(self, message: str, requeue_after: float) -> None:
        super().__init__(message)
        self.requeue_after = requeue_after


class TerminalError(Exception):
    """A non-retryable error (module not allowed, bad objectPath): not requeued unless ``requeue_after`` > 0."""

    def __init__(self, message: str, requeue_after: float | None = None) -> None:
        super().__init__(message)
        self.requeue_after = requeue_after
