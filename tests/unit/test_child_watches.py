"""What the controller's child watches keep of an object, and which events are changes to act on."""

from __future__ import annotations

from atc.k8s.discovery import RestMapping
from atc.model.constants import ANNOTATION_INSTANCE_REF
from atc.model.types import Object
from atc_controller.children import child_change
from atc_controller.children import slim as slim_with

DEPLOYMENTS = RestMapping("apps", "v1", "Deployment", "deployments", namespaced=True)


def slim(obj: Object) -> Object:
    return slim_with(obj, DEPLOYMENTS)


REF = "team/Backend.examples.com:c4ts"


def child(rv: str, *, generation: int | None = 1, writer: tuple[str, str, str] = ("yoke", "Apply", "t1")) -> Object:
    meta: Object = {
        "name": "web",
        "namespace": "team",
        "resourceVersion": rv,
        "annotations": {ANNOTATION_INSTANCE_REF: REF, "big": "x" * 1000},
        "labels": {"app.kubernetes.io/managed-by": "atc.yoke"},
        "managedFields": [
            {"manager": "kube-controller-manager", "operation": "Update", "time": "t0", "subresource": "status"},
            {"manager": writer[0], "operation": writer[1], "time": writer[2]},
        ],
    }
    if generation is not None:
        meta["generation"] = generation
    return {"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": meta}  # as watched


def test_slim_keeps_only_identity_versions_instance_and_last_writer() -> None:
    kept = slim(child("5"))
    assert kept == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "team",
            "resourceVersion": "5",
            "generation": 1,
            "annotations": {ANNOTATION_INSTANCE_REF: REF},
            "lastWriter": {"manager": "yoke", "operation": "Apply"},
        },
    }


def test_an_edit_by_someone_else_is_a_spec_change_not_ours() -> None:
    found = child_change(
        "MODIFIED", slim(child("6", generation=2, writer=("kubectl", "Update", "t2"))), slim(child("5"))
    )
    assert found is not None
    assert (found.instance_ref, found.child_ref, found.old_resource_version) == (REF, "team/Deployment.apps:web", "5")
    assert found.spec_changed
    assert not found.by_us
    assert not found.deleted


def test_a_status_update_is_not_a_spec_change() -> None:
    found = child_change(
        "MODIFIED", slim(child("6", writer=("kube-controller-manager", "Update", "t2"))), slim(child("5"))
    )
    assert found is not None
    assert not found.spec_changed


def test_an_object_without_generation_changes_with_its_resource_version() -> None:
    found = child_change(
        "MODIFIED", slim(child("6", generation=None, writer=("me", "Update", "t2"))), slim(child("5", generation=None))
    )
    assert found is not None
    assert found.spec_changed


def test_our_own_apply_is_recognised_and_a_tie_is_not_trusted() -> None:
    ours = child_change("MODIFIED", slim(child("6", generation=2)), slim(child("5")))
    assert ours is not None
    assert ours.by_us
    tie = child_change("MODIFIED", slim(child("6", generation=2, writer=("yoke", "Apply", "t0"))), slim(child("5")))
    assert tie is not None
    assert not tie.by_us  # two entries stamped in the same second: not sure it was us


def test_deletions_count_and_the_initial_list_does_not() -> None:
    deleted = child_change("DELETED", slim(child("6")), slim(child("5")))
    assert deleted is not None
    assert deleted.deleted
    assert child_change("ADDED", slim(child("5")), None) is None
    assert child_change("RESYNC", slim(child("5")), None) is None


def test_a_flights_child_has_no_instance_to_tell() -> None:
    flight_child = child("6")
    del flight_child["metadata"]["annotations"][ANNOTATION_INSTANCE_REF]
    assert child_change("MODIFIED", slim(flight_child), slim(child("5"))) is None
