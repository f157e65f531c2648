"""Go-compatible formats: durations, JSON encoding, yoke's multi-error text."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from atc.model.gocompat import (
    DurationError,
    format_duration,
    go_json,
    join_errors,
    parse_duration,
    seconds_to_duration_text,
)

SECOND = 1_000_000_000


@pytest.mark.parametrize(
    ("text", "nanos"),
    [
        ("0", 0),
        ("10s", 10 * SECOND),
        ("1m", 60 * SECOND),
        ("1m30s", 90 * SECOND),
        ("1.5h", 5400 * SECOND),
        ("30ms", 30_000_000),
        ("-2s", -2 * SECOND),
        ("+5m", 300 * SECOND),
        ("1h2m3s4ms5us6ns", 3723 * SECOND + 4_005_006),
        ("2µs", 2000),
        ("2μs", 2000),
        (".5s", SECOND // 2),
        ("1.s", SECOND),
    ],
)
def test_parse_duration(text: str, nanos: int) -> None:
    assert parse_duration(text) == nanos


@pytest.mark.parametrize("text", ["", "10", "1d", "s", "1.2.3s", "--1s", "1m-1s", " 1s", "."])
def test_parse_duration_rejects_what_go_rejects(text: str) -> None:
    with pytest.raises(DurationError, match=r"time: (invalid duration|unknown unit)"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("nanos", "text"),
    [
        (0, "0s"),
        (1, "1ns"),
        (1100, "1.1µs"),
        (2_200_000, "2.2ms"),
        (30_000_000, "30ms"),
        (SECOND, "1s"),
        (10 * SECOND, "10s"),
        (60 * SECOND, "1m0s"),
        (90 * SECOND, "1m30s"),
        (3600 * SECOND, "1h0m0s"),
        (3723 * SECOND + SECOND // 2, "1h2m3.5s"),
        (-90 * SECOND, "-1m30s"),
    ],
)
def test_format_duration_matches_go(nanos: int, text: str) -> None:
    assert format_duration(nanos) == text


@given(st.integers(min_value=-(2**62), max_value=2**62))
def test_format_then_parse_round_trips(nanos: int) -> None:
    assert parse_duration(format_duration(nanos)) == nanos


def test_timeout_text_is_rounded_to_milliseconds() -> None:
    assert seconds_to_duration_text(10) == "10s"
    assert seconds_to_duration_text(0.03) == "30ms"
    assert seconds_to_duration_text(0.0304) == "30ms"


def test_go_json_is_compact_sorted_and_html_escaped() -> None:
    value = {"b": 1, "a": {"z": "<x> & y", "y": [1.0, 2.5]}, "c": "\u2028"}
    assert go_json(value) == b'{"a":{"y":[1,2.5],"z":"\\u003cx\\u003e \\u0026 y"},"b":1,"c":"\\u2028"}'
    assert go_json({"s": "héllo"}) == '{"s":"héllo"}'.encode()


def test_join_errors_formats_like_yoke() -> None:
    assert join_errors("failed", []) == "failed"
    assert join_errors("failed", ["a"]) == "failed: a"
    assert join_errors("failed", ["b", "a"], ordered=True) == "failed:\n  - a\n  - b"
    assert join_errors("", ["only"]) == "only"
    assert join_errors("", ["x", "y"]) == "errors:\n  - x\n  - y"
    assert join_errors("outer", ["one\ntwo", "z"]) == "outer:\n  - one\n  two\n  - z"
