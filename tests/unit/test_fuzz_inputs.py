"""Property-based fuzzing of what comes from untrusted hands: admission bodies and flight output.

Admission reviews carry objects anyone with write access shaped; a flight's stdout is whatever its
module prints. Whatever they hold, the code must answer with its own error types (a denial, an
``OutputError``, a ``TakeoffError``), never crash with another exception.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atc.release.stages import OutputError, parse_stages
from atc.release.takeoff import TakeoffError, TakeoffRequest, _check_cross_namespace, _decorate, privileged
from atc_webhook.admission import ReviewDecodeError, parse_review
from atc_webhook.comparison import changed_yoke_annotations, is_noop_update, modifies_desired
from atc_webhook.decisions import static_verdict

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
keys = st.sampled_from(["metadata", "apiVersion", "kind", "spec", "status", "data", "name", "annotations", "labels"])
objects = st.recursive(
    st.dictionaries(keys, scalars, max_size=5),
    lambda children: st.dictionaries(keys | st.text(max_size=8), children | scalars, max_size=5),
    max_leaves=25,
)


@FUZZ
@given(st.binary(max_size=300))
def test_any_bytes_are_a_review_or_a_decode_error(body: bytes) -> None:
    with contextlib.suppress(ReviewDecodeError):
        parse_review(body)


@FUZZ
@given(json_values)
def test_any_json_is_a_review_or_a_decode_error(value: Any) -> None:
    with contextlib.suppress(ReviewDecodeError):
        parse_review(json.dumps(value).encode())


@FUZZ
@given(objects, objects, objects)
def test_the_guard_decides_on_any_objects(old: dict[str, Any], new: dict[str, Any], desired: dict[str, Any]) -> None:
    changed_yoke_annotations(old, new)
    is_noop_update(old, new)
    modifies_desired(new, desired)
    body = {"request": {"uid": "u", "operation": "UPDATE", "object": new, "oldObject": old, "userInfo": {}}}
    review = parse_review(json.dumps(body).encode())
    verdict = static_verdict(review, desired)
    assert isinstance(verdict.allowed, bool)


@FUZZ
@given(st.binary(max_size=400) | json_values.map(lambda v: json.dumps(v).encode()))
def test_any_flight_output_is_stages_of_objects_or_an_output_error(stdout: bytes) -> None:
    try:
        stages = parse_stages(stdout)
    except OutputError:
        return
    assert all(isinstance(obj, dict) for stage in stages for obj in stage)


printed_objects = st.fixed_dictionaries(
    {"kind": st.text(min_size=1, max_size=10)},
    optional={"apiVersion": json_values, "metadata": json_values | objects, "spec": json_values},
)


@FUZZ
@given(st.lists(st.lists(printed_objects, min_size=1, max_size=3), min_size=1, max_size=3))
def test_the_takeoff_stamps_and_checks_any_printed_objects(stages: list[list[dict[str, Any]]]) -> None:
    try:
        parsed = parse_stages(json.dumps(stages).encode())
    except OutputError:
        return
    request = TakeoffRequest(
        release="r", namespace="ns", module=cast(Any, None), source_url="", stdin=b"", privileged_refused="no"
    )
    for stage in parsed:
        for obj in stage:
            _decorate(obj, request)
            privileged(obj, namespaced=True)
    with contextlib.suppress(TakeoffError):
        _check_cross_namespace(parsed, request)


def test_printed_objects_of_the_wrong_shape_get_a_clear_error() -> None:
    cases = {
        b'[{"kind": "ConfigMap", "metadata": "cm"}]': "resource 0: metadata must be an object",
        b'[{"kind": "ConfigMap", "metadata": {"name": 7}}]': "resource 0: metadata.name must be a string",
        b'[{"kind": "A"}, {"kind": "B", "metadata": {"labels": {"a": 1}}}]': "resource 1: metadata.labels must map",
        b'[{"kind": "ConfigMap", "apiVersion": ["v1"]}]': "resource 0: apiVersion must be a string",
    }
    for stdout, message in cases.items():
        with pytest.raises(OutputError, match=message):
            parse_stages(stdout)
    [[obj]] = parse_stages(b'[{"kind": "ConfigMap", "metadata": {"name": "cm", "labels": null}}]')
    assert obj["metadata"] == {"name": "cm"}  # null is absent, as in Go
