"""``atc.model.backoff.Backoff``: doubling delays, a cap, a reset."""

from __future__ import annotations

import pytest

from atc.model.backoff import Backoff


def test_delays_double_up_to_the_maximum_and_reset() -> None:
    backoff = Backoff(0.25, 3)
    assert [backoff.next_delay() for _ in range(6)] == [0.25, 0.5, 1, 2, 3, 3]
    backoff.reset()
    assert backoff.next_delay() == 0.25


def test_a_maximum_below_the_initial_delay_caps_it() -> None:
    backoff = Backoff(0.5, 0.05)
    assert [backoff.next_delay() for _ in range(2)] == [0.05, 0.05]


@pytest.mark.parametrize(("initial", "maximum"), [(0, 1), (1, 0), (-1, 1)])
def test_delays_must_be_positive(initial: float, maximum: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        Backoff(initial, maximum)
