"""Faults on the real control plane: the services converge without a restart of their own.

These tests get a control plane of their own (the ``cluster`` fixture is overridden for this module),
because they stop and freeze its processes: kube-apiserver stopped for 20 s, etcd frozen for 8 s.
Either makes the controller lose its Lease (6 s here). Afterwards, with the same service processes,
a new instance must reach Ready and a dynamic-mode edit must be put back, within 60 s. Before the
fix, the controller took the Lease again and then reconciled nothing, with ``/readyz`` at 200.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness import Controller, Harness, Webhook
from support import eventually

from atc.k8s.client import MERGE_PATCH, KubeError
from devcluster.cluster import Cluster, ClusterState

pytestmark = pytest.mark.cluster
RECOVERY_SECONDS = 60


@pytest.fixture(scope="module")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("faults-cluster"), tie_to_parent=True)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def cluster(control_plane: Cluster) -> ClusterState:
    """The module's own control plane in place of the session's (the faults would hit every test)."""
    assert control_plane.state is not None
    return control_plane.state


async def answering(harness: Harness) -> bool:
    try:
        await harness.kube.get_text("/readyz")
    except KubeError:
        return False
    return True


async def controller_ready(controller: Controller) -> bool:
    import aiohttp

    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{controller.health_port}/readyz") as answer,
        ):
            return answer.status == 200
    except aiohttp.ClientError:
        return False


async def converges_after_the_fault(harness: Harness, controller: Controller, webhook: Webhook, airway: str) -> float:
    """A new instance reaches Ready and an edited child of the old one is put back; returns the seconds taken."""
    started = time.monotonic()
    await eventually(lambda: answering(harness), timeout=RECOVERY_SECONDS, what="kube-apiserver answering")
    ref = next(r for r in harness.airways if r.name == airway)
    await eventually(lambda: controller_ready(controller), timeout=RECOVERY_SECONDS, what="controller /readyz 200")
    await harness.create_instance(ref, "after", {"configMaps": {"a": "1"}})
    await harness.wait_condition(ref, "after", "True", "Ready", timeout=RECOVERY_SECONDS)
    child = f"/api/v1/namespaces/{harness.namespace}/configmaps/before-a"
    await harness.kube.request("PATCH", child, body={"data": {"value": "edited"}}, content_type=MERGE_PATCH)

    async def restored() -> bool:
        return bool((await harness.kube.get(child))["data"] == {"value": "1"})

    await eventually(restored, timeout=RECOVERY_SECONDS, what="the edited child put back")
    for service in (controller.process, webhook.process):
        assert service.proc.poll() is None, f"{service.name} exited: the services must recover on their own"
    return time.monotonic() - started


async def ready_before_the_fault(harness: Harness) -> tuple[Controller, Webhook, str]:
    controller, webhook = await harness.start_atc()
    ref = await harness.create_airway("multi", mode="dynamic")
    await harness.wait_airway_ready(ref)
    await harness.create_instance(ref, "before", {"configMaps": {"a": "1"}})
    await harness.wait_condition(ref, "before", "True", "Ready")
    return controller, webhook, ref.name


async def test_the_services_recover_after_the_api_server_was_gone_for_20_seconds(
    harness: Harness, control_plane: Cluster, record_property: Callable[[str, object], None]
) -> None:
    controller, webhook, airway = await ready_before_the_fault(harness)
    await asyncio.to_thread(control_plane.stop_component, "kube-apiserver")
    await asyncio.sleep(20)  # longer than the Lease (6 s): the controller loses it
    control_plane.start_component("kube-apiserver")  # not from a worker thread: see Cluster.start_component
    await asyncio.to_thread(control_plane.wait_api_ready)
    seconds = await converges_after_the_fault(harness, controller, webhook, airway)
    record_property("recovery_seconds_after_api_server_outage", round(seconds, 1))


async def test_the_services_recover_after_etcd_was_frozen_for_8_seconds(
    harness: Harness, control_plane: Cluster, record_property: Callable[[str, object], None]
) -> None:
    controller, webhook, airway = await ready_before_the_fault(harness)
    await asyncio.to_thread(control_plane.pause_component, "etcd")
    try:
        await asyncio.sleep(8)
    finally:
        await asyncio.to_thread(control_plane.resume_component, "etcd")
    seconds = await converges_after_the_fault(harness, controller, webhook, airway)
    record_property("recovery_seconds_after_etcd_freeze", round(seconds, 1))


def test_a_stopped_component_starts_again_with_its_arguments(control_plane: Cluster, tmp_path: Path) -> None:
    """The fault tools themselves: what is stopped comes back on the same port."""
    assert control_plane.state is not None
    before = next(r for r in control_plane.state.processes if r.name == "kube-scheduler")
    control_plane.stop_component("kube-scheduler")
    control_plane.start_component("kube-scheduler")
    after = next(r for r in control_plane.state.processes if r.name == "kube-scheduler")
    assert after.pid != before.pid
    assert after.argv == before.argv
