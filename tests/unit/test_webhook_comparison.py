"""Static mode's comparison (docs/compatibility.md), no-op detection and the yoke-annotation rule (docs/webhook.md)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from atc.model.types import Object
from atc_webhook.comparison import (
    annotations_message,
    changed_yoke_annotations,
    is_noop_update,
    modifies_desired,
    strip_absent,
)

RELEASE = "instance.atc.yoke.cd/release"
NAMESPACE = "instance.atc.yoke.cd/namespace"
INSTANCE_REF = "instance.atc.yoke.cd/instanceRef"


def desired_deployment() -> Object:
    """As a flight prints it and takeoff stamps it (no server fields)."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "ns",
            "labels": {"app": "web", "app.kubernetes.io/managed-by": "atc.yoke"},
            "annotations": {RELEASE: "rel", NAMESPACE: "ns", INSTANCE_REF: "ns/Backend.x.com:b"},
        },
        "spec": {
            "replicas": 2,
            "template": {"spec": {"containers": [{"name": "main", "image": "nginx:1", "args": ["a", "b"]}]}},
        },
    }


def live(desired: Object) -> Object:
    """The same object as the API server returns it: server fields, defaults, status."""
    obj = copy.deepcopy(desired)
    obj["metadata"].update(
        uid="u-1",
        resourceVersion="42",
        generation=3,
        creationTimestamp="2026-01-01T00:00:00Z",
        managedFields=[{"manager": "yoke"}],
    )
    obj["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "1"
    obj["spec"].update(revisionHistoryLimit=10, progressDeadlineSeconds=600, strategy={"type": "RollingUpdate"})
    container = obj["spec"]["template"]["spec"]["containers"][0]
    container.update(imagePullPolicy="IfNotPresent", terminationMessagePath="/dev/termination-log", resources={})
    obj["spec"]["template"]["spec"]["restartPolicy"] = "Always"
    obj["status"] = {"replicas": 2, "readyReplicas": 2}
    return obj


# ----------------------------------------------------------------------------------------------- strip_absent
def test_strip_absent_keeps_only_what_the_desired_object_sets() -> None:
    update = {"a": 1, "b": {"c": 2, "d": 3}, "e": 4}
    assert strip_absent(update, {"a": 0, "b": {"c": 0}}) == {"a": 1, "b": {"c": 2}}


def test_strip_absent_goes_into_the_common_list_items_and_keeps_extra_ones() -> None:
    update = [{"name": "a", "x": 1}, {"name": "b", "x": 2}, {"name": "c"}]
    assert strip_absent(update, [{"name": "a"}, {"name": "b"}]) == [{"name": "a"}, {"name": "b"}, {"name": "c"}]
    assert strip_absent([{"name": "a", "x": 1}], [{"name": "a"}, {"name": "b"}]) == [{"name": "a"}]


def test_strip_absent_keeps_values_whose_shape_differs() -> None:
    assert strip_absent({"a": "scalar"}, {"a": {"nested": 1}}) == {"a": "scalar"}
    assert strip_absent({"a": [1, 2]}, {"a": "text"}) == {"a": [1, 2]}


# ----------------------------------------------------------------------------------------------- modifies_desired
def test_server_defaults_status_and_server_metadata_are_harmless() -> None:
    desired = desired_deployment()
    assert not modifies_desired(live(desired), desired)


def test_a_status_update_is_harmless() -> None:
    desired = desired_deployment()
    update = live(desired)
    update["status"] = {"replicas": 2, "readyReplicas": 0, "conditions": [{"type": "Available", "status": "False"}]}
    assert not modifies_desired(update, desired)


def test_an_added_label_or_annotation_is_harmless() -> None:
    desired = desired_deployment()
    update = live(desired)
    update["metadata"]["labels"]["team"] = "blue"
    update["metadata"]["annotations"]["note"] = "hello"
    assert not modifies_desired(update, desired)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda o: o["metadata"]["labels"].update(app="other"), id="changed label"),
        pytest.param(lambda o: o["metadata"]["labels"].pop("app"), id="removed label"),
        pytest.param(lambda o: o["spec"].update(replicas=5), id="spec field"),
        pytest.param(lambda o: o["spec"]["template"]["spec"]["containers"][0].update(image="evil"), id="list item"),
        pytest.param(lambda o: o["spec"]["template"]["spec"]["containers"][0]["args"].append("c"), id="extra item"),
        pytest.param(lambda o: o["spec"]["template"]["spec"]["containers"][0]["args"].pop(), id="missing item"),
        pytest.param(lambda o: o["spec"]["template"]["spec"]["containers"].append({"name": "x"}), id="extra container"),
    ],
)
def test_changing_or_removing_what_the_flight_set_is_denied(change: Any) -> None:
    desired = desired_deployment()
    update = live(desired)
    change(update)
    assert modifies_desired(update, desired)


def test_status_the_flight_set_is_ignored_too() -> None:
    desired = {**desired_deployment(), "status": {"phase": "Planned"}}
    assert not modifies_desired({**live(desired), "status": {"phase": "Running"}}, desired)


# ----------------------------------------------------------------------------------------------- no-op updates
def test_noop_ignores_generation_resource_version_and_managed_fields_but_not_status() -> None:
    before = live(desired_deployment())
    after = copy.deepcopy(before)
    after["metadata"].update(resourceVersion="43", generation=4, managedFields=[{"manager": "kubectl"}])
    assert is_noop_update(before, after)
    after["status"]["readyReplicas"] = 1
    assert not is_noop_update(before, after)


# ----------------------------------------------------------------------------------------------- yoke annotations
def with_annotations(**annotations: str) -> Object:
    return {"metadata": {"annotations": annotations}}


def test_changed_yoke_annotations_compare_missing_as_empty() -> None:
    prev = with_annotations(**{RELEASE: "r", NAMESPACE: "ns"})
    assert changed_yoke_annotations(prev, with_annotations(**{RELEASE: "r", NAMESPACE: "ns", "other": "x"})) == []
    assert changed_yoke_annotations(prev, with_annotations(**{RELEASE: "r", NAMESPACE: "ns", INSTANCE_REF: ""})) == []
    assert changed_yoke_annotations(prev, with_annotations(**{RELEASE: "r2", NAMESPACE: ""})) == [RELEASE, NAMESPACE]
    assert changed_yoke_annotations(None, with_annotations(**{INSTANCE_REF: "a/B:c"})) == [INSTANCE_REF]


def test_annotation_denial_wording() -> None:
    assert annotations_message([RELEASE]) == "cannot modify yoke annotations: instance.atc.yoke.cd/release"
    assert annotations_message([RELEASE, INSTANCE_REF]) == (
        "cannot modify yoke annotations:\n  - instance.atc.yoke.cd/release\n  - instance.atc.yoke.cd/instanceRef"
    )
