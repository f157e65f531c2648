"""A stage is applied all or nothing on the real API server, with or without a dry run first.

``apply_stage`` dry-runs a stage of objects the release already has, and applies a stage of objects
new to the release at once, deleting what it created if any object fails (docs/controller.md,
"All or nothing per stage"). These tests break one object of a stage and look at what is left.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from support import config_map

from atc.k8s.apply import ApplyError, apply_stage
from atc.k8s.client import KubeClient
from atc.k8s.discovery import RestMapper

pytestmark = pytest.mark.cluster


def invalid_config_map(name: str, namespace: str) -> dict[str, Any]:
    """Refused by the API server's validation: a data key may not contain a space."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": {"a b": "x"},
    }


async def names(kube: KubeClient, namespace: str) -> set[str]:
    listed = await kube.get(f"/api/v1/namespaces/{namespace}/configmaps")
    return {item["metadata"]["name"] for item in listed["items"]} - {"kube-root-ca.crt"}


def writes(kube: KubeClient) -> Counter[str]:
    return Counter({verb: count for (verb, _), count in kube.requests.items() if verb != "GET"})


async def test_a_new_stage_with_a_broken_object_leaves_nothing_behind(kube_client: KubeClient, namespace: str) -> None:
    stage = [config_map(f"ok-{i}", namespace, "1") for i in range(4)] + [invalid_config_map("broken", namespace)]
    before = writes(kube_client)
    with pytest.raises(ApplyError) as caught:
        await apply_stage(kube_client, RestMapper(kube_client), stage, all_new=True)
    assert caught.value.written == 0
    assert "broken" in str(caught.value)
    assert "dry run" not in str(caught.value)
    assert await names(kube_client, namespace) == set()
    sent = writes(kube_client) - before
    assert sent["APPLY"] == 5  # no dry run: each object sent once, and the four created ones deleted
    assert sent["DELETE"] == 4


async def test_a_new_stage_applies_without_a_dry_run(kube_client: KubeClient, namespace: str) -> None:
    stage = [config_map(f"ok-{i}", namespace, "1") for i in range(3)]
    before = writes(kube_client)
    live = await apply_stage(kube_client, RestMapper(kube_client), stage, all_new=True)
    assert [obj["metadata"]["name"] for obj in live] == ["ok-0", "ok-1", "ok-2"]
    assert all(obj["metadata"].get("uid") for obj in live)  # the apply answers: readiness needs no GET
    assert (writes(kube_client) - before) == Counter({"APPLY": 3})


async def test_an_object_that_existed_already_is_not_deleted_by_the_undo(
    kube_client: KubeClient, namespace: str
) -> None:
    mapper = RestMapper(kube_client)
    await apply_stage(kube_client, mapper, [config_map("someone-elses", namespace, "1")])
    stage = [config_map("someone-elses", namespace, "2"), config_map("new", namespace, "1")]
    stage.append(invalid_config_map("broken", namespace))
    with pytest.raises(ApplyError) as caught:
        await apply_stage(kube_client, mapper, stage, all_new=True)
    assert caught.value.written == 1  # the update of the object that existed stays written
    assert await names(kube_client, namespace) == {"someone-elses"}


async def test_a_stage_of_existing_objects_is_dry_run_first(kube_client: KubeClient, namespace: str) -> None:
    mapper = RestMapper(kube_client)
    await apply_stage(kube_client, mapper, [config_map("a", namespace, "1"), config_map("b", namespace, "1")])
    stage = [config_map("a", namespace, "2"), invalid_config_map("b", namespace)]
    with pytest.raises(ApplyError) as caught:
        await apply_stage(kube_client, mapper, stage)
    assert "dry run: " in str(caught.value)
    assert caught.value.written == 0
    kept = await kube_client.get(f"/api/v1/namespaces/{namespace}/configmaps/a")
    assert kept["data"] == {"value": "1"}
