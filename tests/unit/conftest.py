"""Fixtures of the unit tests: a flight engine per test (modules that need another kind of engine define their own)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from atc.wasm.engine import FlightEngine


@pytest.fixture
async def engine() -> AsyncIterator[FlightEngine]:
    """A ``FlightEngine`` with two workers, closed after the test."""
    flight_engine = FlightEngine(workers=2)
    yield flight_engine
    flight_engine.close()
