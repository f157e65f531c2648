"""Log lines: JSON by default with structured context as top-level keys, text on request."""

from __future__ import annotations

import json
import logging

from atc.service.logs import JsonFormatter, TextFormatter


def record(**extra: object) -> logging.LogRecord:
    log_record = logging.LogRecord("atc.controller", logging.INFO, __file__, 1, "reconcile successful", None, None)
    for key, value in extra.items():
        setattr(log_record, key, value)
    return log_record


def test_json_line_carries_controller_namespace_name_and_reconcile_id() -> None:
    line = JsonFormatter().format(
        record(controller="instance:backends.examples.com", namespace="default", objectName="c4ts", reconcileID="r-1")
    )
    entry = json.loads(line)
    assert entry["msg"] == "reconcile successful"
    assert entry["level"] == "INFO"
    assert (entry["controller"], entry["namespace"], entry["name"], entry["reconcileID"]) == (
        "instance:backends.examples.com",
        "default",
        "c4ts",
        "r-1",
    )
    assert "objectName" not in entry


def test_text_line_is_readable() -> None:
    line = TextFormatter().format(record(namespace="default", objectName="c4ts"))
    assert line.endswith("atc.controller: reconcile successful namespace=default name=c4ts")
