"""Formats shared with yoke's Go code, reproduced exactly where users or flights can see them.

- Go durations (``time.ParseDuration`` / ``Duration.String``): Airway ``timeout`` and
  ``fixDriftInterval``, and error texts such as ``execution timeout (10s) exceeded``.
- Go's ``encoding/json`` output (compact, sorted keys, ``<>&`` escaped): the flight's stdin.
- yoke's multi-error text (``msg:\\n  - err1\\n  - err2``).

Used by the flight runtime, the reconcilers and the webhook.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

_UNIT_NANOS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # U+00B5 micro sign
    "μs": 1_000,  # U+03BC Greek mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_COMPONENT = re.compile(r"(\d*)(?:\.(\d*))?([a-zµμ]+)")
_MAX_NANOS = 2**63 - 1


class DurationError(ValueError):
    """Text that ``time.ParseDuration`` would reject."""


def parse_duration(text: str) -> int:
    """Parse a Go duration string into nanoseconds (``"1m30s"`` -> 90_000_000_000)."""
    original, rest, sign = text, text, 1
    if rest[:1] in "+-" and rest:
        sign, rest = (-1 if rest[0] == "-" else 1), rest[1:]
    if rest == "0":
        return 0
    if not rest:
        raise DurationError(f'time: invalid duration "{original}"')
    total = 0
    while rest:
        match = _COMPONENT.match(rest)
        if not match or not (match.group(1) or match.group(2)):
            raise DurationError(f'time: invalid duration "{original}"')
        whole, frac, unit = match.groups()
        if unit not in _UNIT_NANOS:
            raise DurationError(f'time: unknown unit "{unit}" in duration "{original}"')
        scale = _UNIT_NANOS[unit]
        total += int(whole or "0") * scale
        if frac:
            total += int(frac) * scale // 10 ** len(frac)
        if total > _MAX_NANOS:
            raise DurationError(f'time: invalid duration "{original}"')
        rest = rest[match.end() :]
    return sign * total


def _format_fraction(value: int, digits: int) -> tuple[str, int]:
    """Go's fmtFrac: the fractional part of ``value`` with ``digits`` digits, trailing zeros dropped."""
    frac = value % 10**digits
    text = f"{frac:0{digits}d}".rstrip("0")
    return (f".{text}" if text else ""), value // 10**digits


def format_duration(nanos: int) -> str:
    """Format nanoseconds as Go's ``Duration.String`` does (``90s`` -> ``1m30s``)."""
    if nanos == 0:
        return "0s"
    sign = "-" if nanos < 0 else ""
    value = abs(nanos)
    if value < 1_000_000_000:
        for unit, scale, digits in (("ns", 1, 0), ("µs", 1_000, 3), ("ms", 1_000_000, 6)):
            if value < scale * 1000:
                frac, whole = _format_fraction(value, digits) if digits else ("", value)
                return f"{sign}{whole}{frac}{unit}"
    frac, seconds = _format_fraction(value, 9)
    text = f"{seconds % 60}{frac}s"
    minutes = seconds // 60
    if minutes:
        text = f"{minutes % 60}m{text}"
        if minutes >= 60:
            text = f"{minutes // 60}h{text}"
    return sign + text


def seconds_to_duration_text(seconds: float) -> str:
    """Go duration text of a number of seconds rounded to milliseconds (as yoke prints timeouts)."""
    return format_duration(round(seconds * 1000) * 1_000_000)


def _normalize_numbers(value: Any) -> Any:
    """Integral floats print as integers, as Kubernetes' unstructured JSON in Go does."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(value)
    if isinstance(value, dict):
        return {k: _normalize_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalize_numbers(v) for v in value]
    return value


_HTML_ESCAPES = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


def go_json(value: Any) -> bytes:
    """Encode like Go's ``json.Marshal`` of unstructured data: compact, sorted keys, ``<>&`` escaped."""
    text = json.dumps(_normalize_numbers(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.translate(_HTML_ESCAPES).encode()


def join_errors(message: str, errors: Iterable[str], *, ordered: bool = False) -> str:
    """yoke's multi-error text: ``msg: err`` for one error, an indented bullet list for several."""
    items = sorted(errors) if ordered else list(errors)
    if not items:
        return message
    if len(items) == 1:
        return f"{message}: {items[0]}" if message else items[0]
    bullets = "\n".join("  - " + item.replace("\n", "\n  ") for item in items)
    return f"{message or 'errors'}:\n{bullets}"
