"""``atc.service.startup.gc_paused``: no automatic collections inside, the collector's state restored after."""

from __future__ import annotations

import gc

import pytest

from atc.service.startup import gc_paused


def test_the_collector_is_off_inside_and_back_on_after_also_on_error() -> None:
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), gc_paused():
        raise RuntimeError("start-up failed")
    assert gc.isenabled()


def test_a_collector_switched_off_before_stays_off() -> None:
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
