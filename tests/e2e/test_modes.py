"""Airway modes end to end: static guard, dynamic re-runs over the Events channel, subscription filtering.

Both services run as separate processes; kube-apiserver calls the webhook over
TLS (url clientConfig + caBundle), and each service runs as its own chart
ServiceAccount with the chart's RBAC (the controller as
``<SVC_NAME>-service-account``, so the webhook's match conditions leave its own
writes alone), as in a cluster.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from typing import Any

import pytest
from harness import AirwayRef, Harness
from support import eventually

from atc.k8s.client import KubeError
from atc.model.types import Object

pytestmark = pytest.mark.cluster
MERGE = "application/merge-patch+json"


async def ready_airway(harness: Harness, flight: str, **spec: Any) -> AirwayRef:
    ref = await harness.create_airway(flight, **spec)
    await harness.wait_airway_ready(ref)
    return ref


def configmap_path(harness: Harness, name: str) -> str:
    return f"/api/v1/namespaces/{harness.namespace}/configmaps/{name}"


def denial(exc: KubeError) -> str:
    return exc.message


async def test_static_mode_guards_children(harness: Harness) -> None:
    await harness.start_atc()
    ref = await ready_airway(harness, "multi", mode="static")
    await harness.create_instance(ref, "s", {"configMaps": {"a": "1"}, "replicas": 1})
    await harness.wait_condition(ref, "s", "True", "Ready")
    path = configmap_path(harness, "s-a")
    with pytest.raises(KubeError) as edited:
        await harness.kube.request("PATCH", path, body={"data": {"value": "hacked"}}, content_type=MERGE)
    assert (
        denial(edited.value)
        == 'admission webhook "resources.yoke.cd" denied the request: cannot modify flight sub-resources'
    )
    with pytest.raises(KubeError) as deleted:
        await harness.kube.request("DELETE", path)
    assert "cannot delete resources managed by Air-Traffic-Controller" in denial(deleted.value)
    live = await harness.kube.get(path)
    await harness.kube.request("PUT", path, body=live)  # a no-op update passes
    deployment = f"/apis/apps/v1/namespaces/{harness.namespace}/deployments/s"
    status = (await harness.kube.get(deployment))["status"]
    await harness.kube.request(  # another controller's status update passes
        "PATCH",
        f"{deployment}/status",
        body={"status": {**status, "observedGeneration": status.get("observedGeneration", 1)}},
        content_type=MERGE,
    )
    assert (await harness.kube.get(path))["data"] == {"value": "1"}


@pytest.mark.parametrize("mode", ["static", "standard"])
async def test_a_reconciled_instance_can_be_updated(harness: Harness, mode: str) -> None:
    """The instance admission's dry run changes children exactly as the controller would, as the webhook's
    own ServiceAccount: neither yoke's annotations nor (in static mode) the guard may refuse it."""
    await harness.start_atc()
    ref = await ready_airway(harness, "multi", mode=mode)
    await harness.create_instance(ref, "u", {"configMaps": {"a": "1"}})
    await harness.wait_condition(ref, "u", "True", "Ready")
    await harness.patch_instance(ref, "u", {"spec": {"configMaps": {"a": "2"}}})

    async def updated() -> bool:
        return bool((await harness.kube.get(configmap_path(harness, "u-a")))["data"] == {"value": "2"})

    await eventually(updated, timeout=30, what="the child follows the spec change")
    override = {"metadata": {"annotations": {"overrides.yoke.cd/mode": "dynamic"}}}
    patched = await harness.patch_instance(ref, "u", override)
    assert patched["metadata"]["annotations"]["overrides.yoke.cd/mode"] == "dynamic"


async def test_dynamic_mode_puts_an_edited_child_back(harness: Harness) -> None:
    await harness.start_atc()
    ref = await ready_airway(harness, "multi", mode="dynamic")
    await harness.create_instance(ref, "d", {"configMaps": {"a": "1"}})
    await harness.wait_condition(ref, "d", "True", "Ready")
    path = configmap_path(harness, "d-a")
    await harness.kube.request("PATCH", path, body={"data": {"value": "hacked"}}, content_type=MERGE)

    async def restored() -> bool:
        return bool((await harness.kube.get(path))["data"] == {"value": "1"})

    await eventually(restored, timeout=30, what="the edited child put back")
    signal = await harness.wait_event("d", "SubresourceChanged")
    assert signal["metadata"]["annotations"]["atc.yoke.cd/child-ref"] == f"{harness.namespace}/ConfigMap:d-a"


def secret_hash(data: dict[str, str]) -> str:
    return hashlib.sha256("".join(f"{k}={data[k]}\n" for k in sorted(data)).encode()).hexdigest()


async def deployment_hash(harness: Harness, name: str) -> str:
    deployment = await harness.kube.get(f"/apis/apps/v1/namespaces/{harness.namespace}/deployments/{name}")
    return str(deployment["spec"]["template"]["metadata"]["annotations"]["backend.test/secret-hash"])


async def test_backend_scenario_secret_change_rolls_the_deployment_and_no_update_is_lost(harness: Harness) -> None:
    await harness.start_atc()
    ref = await ready_airway(harness, "backend", mode="dynamic", clusterAccess=True)
    await harness.create_instance(ref, "api", {"secretData": {"password": "first"}, "replicas": 1})
    await harness.wait_condition(ref, "api", "True", "Ready", timeout=90)
    assert await deployment_hash(harness, "api") == secret_hash({"password": "first"})
    secret_path = f"/api/v1/namespaces/{harness.namespace}/secrets/api-secret"
    replicasets = f"/apis/apps/v1/namespaces/{harness.namespace}/replicasets"
    before = len((await harness.kube.get(replicasets, query={"labelSelector": "app=api"}))["items"])
    await harness.kube.request("PATCH", secret_path, body={"stringData": {"password": "second"}}, content_type=MERGE)

    async def rolled() -> bool:
        return await deployment_hash(harness, "api") == secret_hash({"password": "second"})

    await eventually(rolled, timeout=30, what="pod template hash follows the Secret")
    after = (await harness.kube.get(replicasets, query={"labelSelector": "app=api"}))["items"]
    assert len(after) > before  # a new ReplicaSet for the new pod template

    for round_ in range(50):  # rapid updates: the last one must win
        await harness.kube.request(
            "PATCH", secret_path, body={"stringData": {"password": f"v{round_}"}}, content_type=MERGE
        )
    final = secret_hash({"password": "v49"})

    async def converged() -> bool:
        return await deployment_hash(harness, "api") == final

    await eventually(converged, timeout=60, what="hash of the final Secret data")
    await asyncio.sleep(3)
    assert await deployment_hash(harness, "api") == final  # and it stays there


async def test_subscription_mode_re_runs_only_for_tracked_and_external_objects(harness: Harness) -> None:
    controller, _ = await harness.start_atc()
    ref = await ready_airway(
        harness, "app", mode="subscription", clusterAccess=True, resourceAccessMatchers=[f"{harness.namespace}/Secret"]
    )
    await harness.create_instance(ref, "web", {})

    async def waiting() -> bool:
        status = (await harness.instance(ref, "web")).get("status") or {}
        return status.get("message") == "waiting for secret web-connection" and status.get("phase") == "Waiting"

    await eventually(waiting, timeout=60, what="status saying it waits for the connection Secret")
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "web-connection"},
        "stringData": {"url": "db:5432"},
    }
    await harness.kube.request(
        "POST", f"/api/v1/namespaces/{harness.namespace}/secrets", body=secret
    )  # missing one appears
    deployment_path = f"/apis/apps/v1/namespaces/{harness.namespace}/deployments/web"

    async def deployed() -> Object | None:
        return await harness.kube.get_or_none(deployment_path)

    deployment = await eventually(deployed, timeout=30, what="the Deployment after the connection Secret appeared")
    annotation = "app.test/connection-hash"
    assert deployment["spec"]["template"]["metadata"]["annotations"][annotation] == secret_hash({"url": "db:5432"})
    await harness.kube.request(  # the looked-up external Secret changes: re-run
        "PATCH",
        f"/api/v1/namespaces/{harness.namespace}/secrets/web-connection",
        body={"stringData": {"url": "db:6543"}},
        content_type=MERGE,
    )

    async def followed() -> bool:
        live = await harness.kube.get(deployment_path)
        return bool(live["spec"]["template"]["metadata"]["annotations"][annotation] == secret_hash({"url": "db:6543"}))

    await eventually(followed, timeout=30, what="the Deployment following the external Secret")
    runs_before = await _flight_runs(harness, controller.metrics_port)
    await harness.kube.request(  # an untracked child (never looked up) changes: nothing re-runs
        "PATCH", deployment_path, body={"metadata": {"labels": {"touched": "yes"}}}, content_type=MERGE
    )
    await asyncio.sleep(4)
    assert await _flight_runs(harness, controller.metrics_port) == runs_before


async def _flight_runs(harness: Harness, port: int) -> float:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("atc_flight_runs_total{"))


async def test_pipeline_scenario_runs_jobs_in_sequence(harness: Harness) -> None:
    await harness.start_atc()
    ref = await ready_airway(harness, "pipeline", mode="dynamic", clusterAccess=True)
    await harness.create_instance(ref, "p", {})
    done = await harness.wait_condition(ref, "p", "True", message="all jobs have completed", timeout=120)
    assert done["status"]["message"] == "all jobs have completed"
    for suffix in ("one", "two", "three"):
        job = await harness.kube.get(f"/apis/batch/v1/namespaces/{harness.namespace}/jobs/p-{suffix}")
        assert any(c["type"] == "Complete" and c["status"] == "True" for c in job["status"]["conditions"])


async def test_pipeline_scenario_stops_at_a_failed_job(harness: Harness) -> None:
    await harness.start_atc()
    ref = await ready_airway(harness, "pipeline", mode="dynamic", clusterAccess=True)
    await harness.create_instance(ref, "q", {"fail": "two"})
    job_path = f"/apis/batch/v1/namespaces/{harness.namespace}/jobs/q-two"

    async def job_two() -> Object | None:
        return await harness.kube.get_or_none(job_path)

    await eventually(job_two, timeout=90, what="job two created")  # its pod fails (kwok.test/fail)
    stopped = await harness.wait_condition(ref, "q", "False", message="job q-two failed", timeout=60)
    assert stopped["status"]["message"] == "job q-two failed"
    assert await harness.kube.get_or_none(f"/apis/batch/v1/namespaces/{harness.namespace}/jobs/q-three") is None


async def test_conversion_through_the_converter_flight_keeps_status(harness: Harness) -> None:
    await harness.start_atc()
    converter = str(harness.build_flight("converter"))
    ref = await harness.create_gadget_airway("basic", converter)
    await harness.wait_airway_ready(ref)
    gadget = {"apiVersion": f"{ref.group}/v1", "kind": "Gadget", "metadata": {"name": "g"}, "spec": {"size": 3}}
    path_v1 = f"/apis/{ref.group}/v1/namespaces/{harness.namespace}/gadgets"
    await harness.kube.request("POST", path_v1, body=gadget)
    await harness.kube.request(
        "PATCH", f"{path_v1}/g/status", body={"status": {"phase": "Measured"}}, content_type=MERGE
    )
    as_v2 = await harness.kube.get(f"/apis/{ref.group}/v2/namespaces/{harness.namespace}/gadgets/g")
    assert as_v2["spec"]["dimensions"] == {"size": 3, "unit": "cm"}
    assert as_v2["status"]["phase"] == "Measured"


async def test_instance_admission_denies_bad_input_and_unauthorised_overrides(harness: Harness) -> None:
    await harness.start_atc()
    ref = await ready_airway(harness, "basic")
    with pytest.raises(KubeError) as bad:
        await harness.create_instance(ref, "bad", {"replicas": "three"})
    message = denial(bad.value)
    assert message.startswith(f'admission webhook "{ref.name}" denied the request: applying resource returned errors')
    assert "replicas" in message
    alice = await harness.user_kubeconfig("alice", can_write=ref)
    from atc.k8s.client import KubeClient

    async with await KubeClient.connect(str(alice)) as as_alice:
        body = {
            "apiVersion": ref.api_version,
            "kind": ref.kind,
            "metadata": {"name": "sneaky", "annotations": {"overrides.yoke.cd/mode": "static"}},
            "spec": {"replicas": 1},
        }
        with pytest.raises(KubeError) as forbidden:
            await as_alice.request("POST", ref.collection(harness.namespace), body=body)
        assert "user does not have permissions to create or update override annotations" in denial(forbidden.value)
        body["metadata"] = {"name": "plain"}
        await as_alice.request("POST", ref.collection(harness.namespace), body=body)  # without overrides she may


async def test_flight_admission_dry_runs_the_flight_as_the_controller_would(harness: Harness) -> None:
    await harness.start_atc()
    flights = f"/apis/yoke.cd/v1alpha1/namespaces/{harness.namespace}/flights"

    def flight(name: str, wasm: str, spec: Object) -> Object:
        body = {"wasmUrl": wasm, "inputObject": {"metadata": {"name": name}, "spec": spec}}
        return {"apiVersion": "yoke.cd/v1alpha1", "kind": "Flight", "metadata": {"name": name}, "spec": body}

    with pytest.raises(KubeError) as failing:
        await harness.kube.request("POST", flights, body=flight("doomed", str(harness.build_flight("failing")), {}))
    message = denial(failing.value)
    assert message.startswith('admission webhook "flights.yoke.cd" denied the request:')
    assert "intentional failure for doomed" in message
    assert await harness.kube.get_or_none(f"{flights}/doomed") is None
    await harness.kube.request("POST", flights, body=flight("web", str(harness.build_flight("basic")), {"replicas": 1}))

    async def ready() -> Object | None:
        obj = await harness.kube.get(f"{flights}/web")
        conditions = (obj.get("status") or {}).get("conditions") or []
        return obj if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions) else None

    await eventually(ready, timeout=60, what="the admitted Flight Ready")
    deployment = await harness.kube.get(f"/apis/apps/v1/namespaces/{harness.namespace}/deployments/web")
    assert deployment["metadata"]["annotations"]["instance.atc.yoke.cd/release"] == "web"  # the bare name


@pytest.mark.parametrize("mode", ["static", "dynamic"])
async def test_drift_made_while_the_webhook_is_down_is_repaired_by_the_controllers_watches(
    harness: Harness, mode: str, record_property: Callable[[str, object], None]
) -> None:
    """atc-resources fails open: with the webhook down, an edit and a delete of children pass. The
    controller's own watches put both back (no fixDriftInterval: without the watches nothing would), and
    the guard works again after. How fast is recorded (``repair_seconds``; about 1 s on a quiet machine),
    not asserted: timing belongs to benchmarks, and a loaded CI machine must not fail it."""
    _, webhook = await harness.start_atc()
    ref = await ready_airway(harness, "multi", mode=mode)
    await harness.create_instance(ref, "o", {"configMaps": {"a": "1", "b": "1"}})
    await harness.wait_condition(ref, "o", "True", "Ready")
    webhook.process.stop()
    edited, deleted = configmap_path(harness, "o-a"), configmap_path(harness, "o-b")
    started = time.monotonic()
    await harness.kube.request("PATCH", edited, body={"data": {"value": "during outage"}}, content_type=MERGE)
    await harness.kube.request("DELETE", deleted)

    async def repaired() -> bool:
        restored = (await harness.kube.get(edited))["data"] == {"value": "1"}
        back = await harness.kube.get_or_none(deleted)
        return restored and back is not None and not back["metadata"].get("deletionTimestamp")

    await eventually(repaired, timeout=30, interval=0.05, what="both children put back while the webhook is down")
    record_property("repair_seconds", round(time.monotonic() - started, 2))
    await harness.start_webhook("atc-webhook-again")  # back: the guard works again
    if mode == "static":
        # the API server takes a moment to follow the re-registered configuration (the new webhook
        # listens on another port); until then the old address fails open and the controller repairs
        async def refused() -> str:
            try:
                await harness.kube.request("PATCH", edited, body={"data": {"value": "after"}}, content_type=MERGE)
            except KubeError as exc:
                return denial(exc)
            return ""

        message = await eventually(refused, timeout=30, interval=0.5, what="the guard refusing edits again")
        assert "cannot modify flight sub-resources" in message
