"""Logging setup shared by both services: JSON lines by default, text on request.

``configure_logging(fmt)`` is called once by each service's ``main``; yoke's
``LOG_FORMAT`` setting picks the format (``text`` gives text, anything else
JSON). Structured context (``controller``, ``namespace``, ``name``,
``reconcileID`` ...) is passed with ``extra=`` and lands as top-level keys.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import Any

_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


# ``name`` is reserved on LogRecord (the logger's name), so callers pass the object's name as
# ``objectName``; the output shows it as ``name``, next to ``namespace`` and ``controller``.
_RENAMED = {"objectName": "name"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {_RENAMED.get(k, k): v for k, v in record.__dict__.items() if k not in _RESERVED and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, msg, then the record's extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(_extras(record))
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """Human-readable lines with the extras appended as key=value."""

    def format(self, record: logging.LogRecord) -> str:
        base = f"{self.formatTime(record)} {record.levelname:7} {record.name}: {record.getMessage()}"
        extras = " ".join(f"{k}={v}" for k, v in _extras(record).items())
        text = f"{base} {extras}".rstrip()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def configure_logging(fmt: str = "json", level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(TextFormatter() if fmt == "text" else JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
