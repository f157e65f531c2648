"""The controller end to end: Airways, instances, releases, status, pruning, deletion, Flights.

Each test starts ``atc-controller`` as a subprocess against the real control
plane and drives it only through the Kubernetes API, with Go test flights
built on yoke's SDK.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import re
from collections import Counter
from typing import Any

import pytest
from harness import AirwayRef, Harness, condition

from atc.k8s.client import KubeError
from atc.model.types import Object
from atc.wasm.checksum import sha1_hex

pytestmark = pytest.mark.cluster


async def ready_airway(harness: Harness, flight: str, **spec: Any) -> AirwayRef:
    ref = await harness.create_airway(flight, **spec)
    await harness.wait_airway_ready(ref)
    return ref


def decoded_stages(secret: Object) -> list[list[Object]]:
    stages: list[list[Object]] = json.loads(gzip.decompress(base64.b64decode(secret["data"]["resources"])))
    return stages


async def test_airway_becomes_ready_and_serves_its_crd(harness: Harness) -> None:
    await harness.start_controller()
    ref = await harness.create_airway("basic")
    airway = await harness.wait_airway_ready(ref)
    assert condition(airway, "Ready", "True", "Ready")["message"] == "Flight-Controller launched"  # type: ignore[index]
    assert "yoke.cd/strip.airway" in airway["metadata"]["finalizers"]
    crd = await harness.kube.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{ref.name}")
    assert crd["spec"]["names"]["kind"] == "Backend"
    assert crd["spec"]["names"]["plural"] == "backends"
    assert condition(crd, "Established", "True")
    assert crd["spec"]["versions"][0]["subresources"] == {"status": {}}
    assert crd["metadata"]["ownerReferences"][0]["kind"] == "Airway"


async def test_broken_airways_report_why_and_recover(harness: Harness) -> None:
    await harness.start_controller()
    unreachable = await harness.create_airway("basic", wasmUrls={"flight": "http://127.0.0.1:9/missing.wasm"})
    bad_template = await harness.create_airway("basic")
    patch = {
        "spec": {
            "template": {
                "versions": [
                    {
                        "name": "v1",
                        "served": True,
                        "storage": True,
                        "schema": {"openAPIV3Schema": {"type": "object", "properties": {"status": {"type": "string"}}}},
                    }
                ]
            }
        }
    }
    await harness.kube.request(
        "PATCH",
        f"/apis/yoke.cd/v1alpha1/airways/{bad_template.name}",
        body=patch,
        content_type="application/merge-patch+json",
    )

    async def error_of(ref: AirwayRef) -> str:
        found = condition(await harness.airway(ref), "Ready", "False", "Error")
        return str(found["message"]) if found else ""

    from support import eventually

    message = await eventually(lambda: error_of(unreachable), what="unreachable module reported")
    assert message.startswith("failed to setup cache: failed to warm cache: failed to load remote wasm")
    message = await eventually(lambda: error_of(bad_template), what="broken template reported")
    assert message == 'invalid airway: status must be an object but got type: "string"'
    good = await ready_airway(harness, "basic")  # the controller kept working
    await harness.create_instance(good, "z", {"replicas": 1})
    await harness.wait_condition(good, "z", "True", "Ready")


async def test_instance_children_carry_yokes_metadata_and_the_revision_matches(harness: Harness) -> None:
    await harness.start_controller()
    ref = await ready_airway(harness, "basic")
    created = await harness.create_instance(ref, "c4ts", {"replicas": 2, "data": {"greeting": "hello"}})
    instance = await harness.wait_condition(ref, "c4ts", "True", "Ready")
    assert "yoke.cd/mayday.flight" in instance["metadata"]["finalizers"]
    # yoke's field manager for the ATC's own writes: the finalizer and ownerReference, and the status
    entries = instance["metadata"]["managedFields"]
    assert {e["manager"] for e in entries if e.get("subresource") == "status"} == {"yoke.cd/atc"}
    assert {e["manager"] for e in entries if "f:finalizers" in json.dumps(e.get("fieldsV1"))} == {"yoke.cd/atc"}
    release = f"{ref.group}.Backend.{harness.namespace}.c4ts"
    owner = [{"apiVersion": ref.api_version, "kind": "Backend", "name": "c4ts", "uid": created["metadata"]["uid"]}]
    expected_annotations = {
        "instance.atc.yoke.cd/release": release,
        "instance.atc.yoke.cd/namespace": harness.namespace,
        "instance.atc.yoke.cd/instanceRef": f"{harness.namespace}/Backend.{ref.group}:c4ts",
    }
    deployment = await harness.kube.get(f"/apis/apps/v1/namespaces/{harness.namespace}/deployments/c4ts")
    config_map = await harness.kube.get(f"/api/v1/namespaces/{harness.namespace}/configmaps/c4ts-config")
    for child in (deployment, config_map):
        assert child["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "atc.yoke"
        annotations = child["metadata"]["annotations"]
        assert {k: annotations[k] for k in expected_annotations} == expected_annotations
        assert child["metadata"]["ownerReferences"] == owner
    assert deployment["status"]["availableReplicas"] == 2  # Ready waited for KWOK's pods
    [revision] = await harness.revisions()
    assert revision["metadata"]["labels"]["internal.yoke/release"] == sha1_hex(release.encode())
    annotations = revision["metadata"]["annotations"]
    assert annotations["internal.yoke/release-name"] == release
    assert annotations["internal.yoke/resources"] == "2"
    assert annotations["internal.yoke/source-checksum"] == sha1_hex(harness.build_flight("basic").read_bytes())
    [[stored_config_map, stored_deployment]] = decoded_stages(
        await harness.kube.get(f"/api/v1/namespaces/{harness.namespace}/secrets/{revision['metadata']['name']}")
    )
    assert stored_deployment["spec"]["replicas"] == 2
    assert stored_config_map["data"] == {"greeting": "hello"}
    assert stored_deployment["metadata"]["ownerReferences"] == owner
    reasons = [event["reason"] for event in await harness.events("c4ts")]
    assert "RevisionApplied" in reasons


async def test_update_writes_a_revision_and_prunes_a_removed_child(harness: Harness) -> None:
    await harness.start_controller()
    ref = await ready_airway(harness, "multi")
    await harness.create_instance(ref, "m", {"configMaps": {"a": "1", "b": "2"}})
    await harness.wait_condition(ref, "m", "True", "Ready")
    await harness.kube.get(f"/api/v1/namespaces/{harness.namespace}/configmaps/m-b")
    await harness.patch_instance(ref, "m", {"spec": {"configMaps": {"b": None}}})  # merge patch: null removes b
    await harness.gone(f"/api/v1/namespaces/{harness.namespace}/configmaps/m-b")
    assert len(await harness.revisions()) == 2
    pruned = await harness.wait_event("m", "ResourcesPruned")
    assert f"{harness.namespace}/core/v1/configmap/m-b" in pruned["message"]
    await harness.kube.get(f"/api/v1/namespaces/{harness.namespace}/configmaps/m-a")


async def test_unchanged_resync_sends_no_apply_and_writes_nothing(harness: Harness) -> None:
    """Resyncs of an unchanged instance and its unchanged Airway: reconciles, but no apply, no write."""
    controller = await harness.start_controller(RESYNC_SECONDS="1")
    ref = await ready_airway(harness, "multi")
    await harness.create_instance(ref, "quiet", {"configMaps": {"a": "1", "b": "2"}, "replicas": 1})
    before = await harness.wait_condition(ref, "quiet", "True", "Ready")
    await asyncio.sleep(2)  # let the last status write settle
    before = await harness.instance(ref, "quiet")
    applies = await harness.apiserver_requests("APPLY", "configmaps") + await harness.apiserver_requests(
        "APPLY", "deployments"
    )
    secret_posts = await harness.apiserver_requests("POST", "secrets")
    crd_applies = await harness.apiserver_requests("APPLY", "customresourcedefinitions")
    reconciles = await _reconcile_count(harness, controller.metrics_port, f"instance:{ref.name}")
    airway_reconciles = await _reconcile_count(harness, controller.metrics_port, "airway")
    await asyncio.sleep(5)  # about five resyncs
    assert await _reconcile_count(harness, controller.metrics_port, f"instance:{ref.name}") >= reconciles + 3
    assert await _reconcile_count(harness, controller.metrics_port, "airway") >= airway_reconciles + 3
    assert await harness.apiserver_requests("APPLY", "customresourcedefinitions") == crd_applies
    after_applies = await harness.apiserver_requests("APPLY", "configmaps") + await harness.apiserver_requests(
        "APPLY", "deployments"
    )
    assert after_applies == applies
    assert await harness.apiserver_requests("POST", "secrets") == secret_posts
    assert (await harness.instance(ref, "quiet"))["metadata"]["resourceVersion"] == before["metadata"][
        "resourceVersion"
    ]
    assert len(await harness.revisions()) == 1


async def test_a_create_costs_ten_requests(harness: Harness) -> None:
    """The requests of one create, by verb and resource (docs/controller.md, "API requests of one create").

    No dry run (the stage is new: undone on failure instead), no GET of the children (the apply
    answers tell readiness), no read before the status write (the cached copy is current), no LIST
    of the revisions (the watch-backed history), no InProgress write (the takeoff is quick).
    """
    controller = await harness.start_controller()
    ref = await ready_airway(harness, "multi")
    await asyncio.sleep(1)  # the Airway's own work settles
    before = await _kube_requests(controller.metrics_port)
    await harness.create_instance(ref, "counted", {"children": 5})
    await harness.wait_condition(ref, "counted", "True", "Ready")
    await asyncio.sleep(1)  # the status write comes back as a watch event: nothing more may follow
    sent = await _kube_requests(controller.metrics_port) - before
    del sent["PUT", "leases"], sent["GET", "leases"]
    assert dict(sent) == {
        ("PATCH", ref.plural): 1,  # finalizer and ownerReference
        ("POST", "secrets"): 1,  # the pending revision
        ("APPLY", "configmaps"): 5,
        ("PATCH", "secrets"): 1,  # the revision activated
        ("PUT", f"{ref.plural}/status"): 1,  # Ready, straight away
        ("POST", "events"): 1,  # RevisionApplied
    }


async def _kube_requests(metrics_port: int) -> Counter[tuple[str, str]]:
    """The controller's ``atc_kube_requests_total`` by (verb, resource)."""
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{metrics_port}/metrics") as response:
        text = await response.text()
    counts: Counter[tuple[str, str]] = Counter()
    for match in re.finditer(r"^atc_kube_requests_total\{([^}]*)\} (\S+)$", text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match[1]))
        counts[labels["verb"], labels["resource"]] += int(float(match[2]))
    return counts


async def _reconcile_count(harness: Harness, metrics_port: int, controller: str) -> float:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{metrics_port}/metrics") as response:
        text = await response.text()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("controller_runtime_reconcile_total{") and f'controller="{controller}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def _stages_airway(harness: Harness) -> AirwayRef:
    """ATC with the webhook, and a ready Airway of the ``stages`` flight (a CRD, then a Gadget of it)."""
    # the flight creates objects of its own CRD: the operator grants that kind, as the chart allows,
    # and lets the Airway's instances create a cluster-scoped resource (docs/security.md)
    rule = {"apiGroups": ["stages.test"], "resources": ["gadgets"], "verbs": ["get", "create", "patch", "delete"]}
    harness.chart_values = ["--set-json", f"controller.rbac.extraRules={json.dumps([rule])}"]
    await harness.start_atc()  # with the webhook: the instance's admission dry-runs both stages
    opt_in = {"atc.yoke.cd/allow-cluster-resources": "true"}
    return await ready_airway(harness, "stages", annotations=opt_in, prune={"crds": True})


async def test_stages_apply_a_crd_then_its_custom_resource(harness: Harness) -> None:
    ref = await _stages_airway(harness)
    # stage 2's Gadget cannot be dry-run before stage 1's CRD exists: admission checks it against
    # the CRD's schema instead of denying "no matches for kind" (no skipAdmissionWebhook needed)
    await harness.create_instance(ref, "g1", {"size": 7})
    await harness.wait_condition(ref, "g1", "True", "Ready", timeout=90)
    gadget = await harness.kube.get(f"/apis/stages.test/v1/namespaces/{harness.namespace}/gadgets/g1")
    assert gadget["spec"]["size"] == 7
    [revision] = await harness.revisions()
    stages = decoded_stages(
        await harness.kube.get(f"/api/v1/namespaces/{harness.namespace}/secrets/{revision['metadata']['name']}")
    )
    assert [[obj["kind"] for obj in stage] for stage in stages] == [["CustomResourceDefinition"], ["Gadget"]]


async def test_stages_deny_a_custom_resource_its_earlier_crd_schema_rejects(harness: Harness) -> None:
    ref = await _stages_airway(harness)
    # the CRD of stage 1 says spec.size is an integer of at least 0: admission checks stage 2's
    # Gadget against that schema offline and denies the instance
    for name, size, message in [
        ("negative", -1, "spec.size: must be greater than or equal to 0"),
        ("word", "big", "spec.size: must be of type integer"),
    ]:
        with pytest.raises(KubeError) as denied:
            await harness.create_instance(ref, name, {"size": size})
        assert "spec.size" in denied.value.message
        assert message in denied.value.message
        assert "big" not in denied.value.message  # the offending value is never echoed
    assert await harness.revisions() == []


async def test_parent_status_comes_from_the_flight_and_parent_only_output_keeps_children(harness: Harness) -> None:
    await harness.start_controller()
    ref = await ready_airway(harness, "status")
    await harness.create_instance(ref, "s1", {"value": 7})
    instance = await harness.wait_condition(ref, "s1", "True", "Echoed")
    assert (instance["status"]["phase"], instance["status"]["observed"]) == ("Echoed", 7)
    child_path = f"/api/v1/namespaces/{harness.namespace}/configmaps/s1-child"
    child = await harness.kube.get(child_path)
    await harness.patch_instance(ref, "s1", {"spec": {"value": 8, "onlyParent": True}})

    async def observed_eight() -> bool:
        return bool((await harness.instance(ref, "s1"))["status"].get("observed") == 8)

    from support import eventually

    await eventually(observed_eight, what="status.observed == 8")
    assert (await harness.kube.get(child_path))["metadata"]["uid"] == child["metadata"]["uid"]  # untouched
    assert len(await harness.revisions()) == 1


@pytest.mark.parametrize(
    ("flight", "spec", "airway_spec", "message"),
    [
        (
            "failing",
            {},
            {},
            "failed to evaluate flight: failed to instantiate module: flight failed: intentional failure for x",
        ),
        ("spin", {}, {"timeout": "500ms"}, "execution timeout (500ms) exceeded"),
        ("membomb", {}, {"maxMemoryMib": 32}, "exceeded its memory limit of 32 MiB"),
        ("garbage", {}, {}, "input must be resource, list of resources, or list of list of resources"),
    ],
)
async def test_bad_flights_end_as_error_conditions_and_the_controller_lives_on(
    harness: Harness, flight: str, spec: Object, airway_spec: Object, message: str
) -> None:
    controller = await harness.start_controller()
    bad = await ready_airway(harness, flight, **airway_spec)
    await harness.create_instance(bad, "x", spec)
    instance = await harness.wait_condition(bad, "x", "False", "Error", message=message, timeout=90)
    assert "FlightFailed" in [event["reason"] for event in await harness.events("x")]
    assert instance["metadata"]["finalizers"] == ["yoke.cd/mayday.flight"]
    good = await ready_airway(harness, "basic")
    await harness.create_instance(good, "y", {"replicas": 1})
    await harness.wait_condition(good, "y", "True", "Ready")
    assert controller.process.proc.poll() is None


async def test_deleting_an_instance_removes_children_and_history(harness: Harness) -> None:
    await harness.start_controller()
    ref = await ready_airway(harness, "basic")
    await harness.create_instance(ref, "gone", {"replicas": 1})
    await harness.wait_condition(ref, "gone", "True", "Ready")
    await harness.kube.request("DELETE", ref.path(harness.namespace, "gone"))
    await harness.gone(ref.path(harness.namespace, "gone"))
    await harness.gone(f"/apis/apps/v1/namespaces/{harness.namespace}/deployments/gone")
    await harness.gone(f"/api/v1/namespaces/{harness.namespace}/configmaps/gone-config")
    assert await harness.revisions() == []


async def test_deleting_an_airway_removes_its_crd_and_instances(harness: Harness) -> None:
    await harness.start_controller()
    ref = await ready_airway(harness, "basic")
    await harness.create_instance(ref, "one", {"replicas": 1})
    await harness.wait_condition(ref, "one", "True", "Ready")
    await harness.delete_airways()
    await harness.gone(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{ref.name}")
    await harness.gone(f"/apis/apps/v1/namespaces/{harness.namespace}/deployments/one")
    assert await harness.revisions() == []


async def test_flight_lifecycle(harness: Harness) -> None:
    await harness.start_controller()
    wasm = str(harness.build_flight("basic"))
    path = await harness.create_flight(
        "Flight", "direct", {"wasmUrl": wasm, "inputObject": {"metadata": {"name": "web"}, "spec": {"replicas": 1}}}
    )
    flight = await harness.wait_ready(path)
    inventory = {item["resource"]: item["ready"] for item in flight["status"]["inventory"]}
    assert inventory == {
        f"{harness.namespace}/ConfigMap:web-config": True,
        f"{harness.namespace}/Deployment.apps:web": True,
    }
    [revision] = await harness.revisions()
    assert (
        revision["metadata"]["annotations"]["internal.yoke/release-name"]
        == f"{harness.namespace}/Flight.yoke.cd:direct"
    )
    deployment = await harness.kube.get(f"/apis/apps/v1/namespaces/{harness.namespace}/deployments/web")
    assert deployment["metadata"]["annotations"]["instance.atc.yoke.cd/release"] == "direct"
    await harness.kube.request("DELETE", path)
    await harness.gone(path)
    await harness.gone(f"/apis/apps/v1/namespaces/{harness.namespace}/deployments/web")
    assert await harness.revisions() == []


async def test_cluster_flight_lifecycle_across_namespaces(harness: Harness) -> None:
    await harness.start_controller()
    wasm = str(harness.build_flight("multi"))
    name = f"cf-{harness.namespace}"
    spec = {
        "wasmUrl": wasm,
        "inputObject": {"metadata": {"name": "cf", "namespace": harness.namespace}, "spec": {"children": 2}},
    }
    path = await harness.create_flight("ClusterFlight", name, spec)
    await harness.wait_ready(path)
    await harness.kube.get(f"/api/v1/namespaces/{harness.namespace}/configmaps/cf-1")
    revisions = [
        r
        for r in await harness.revisions("default")
        if r["metadata"]["annotations"]["internal.yoke/release-name"] == f"/ClusterFlight.yoke.cd:{name}"
    ]
    assert len(revisions) == 1
    await harness.kube.request("DELETE", path)
    await harness.gone(path)
    await harness.gone(f"/api/v1/namespaces/{harness.namespace}/configmaps/cf-1")
    with pytest.raises(KubeError):
        await harness.kube.get(f"/api/v1/namespaces/default/secrets/{revisions[0]['metadata']['name']}")
