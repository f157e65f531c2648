"""Two controllers with leader election, and the ``yoke`` CLI reading a release this controller made.

Failover: only the Lease holder reconciles; after the holder is killed with
SIGKILL (no chance to release the Lease) the other takes over once the Lease
expires and converges a change made meanwhile. Interop: ``yoke blackbox``
(built from yoke v0.20.12) lists the release and shows its resources.
"""

from __future__ import annotations

import os
import signal

import pytest
from harness import Harness
from support import eventually
from yokecli import run_yoke, strip_ansi

from atc.k8s.client import KubeError

pytestmark = pytest.mark.cluster


async def lease_holder(harness: Harness) -> str:
    try:
        lease = await harness.kube.get(
            f"/apis/coordination.k8s.io/v1/namespaces/{harness.namespace}/leases/atc-controller"
        )
    except KubeError as exc:
        if exc.not_found:
            return ""
        raise
    return str(lease["spec"].get("holderIdentity") or "")


async def test_only_the_leader_reconciles_and_the_other_takes_over_after_kill_9(harness: Harness) -> None:
    first = await harness.start_controller("controller-a", POD_NAME="controller-a")
    holder = await eventually(lambda: lease_holder(harness), what="a lease holder")
    assert holder == "controller-a"
    second = await harness.start_controller("controller-b", POD_NAME="controller-b")
    ref = await harness.create_airway("multi")
    await harness.wait_airway_ready(ref)
    await harness.create_instance(ref, "ha", {"configMaps": {"a": "1"}})
    await harness.wait_condition(ref, "ha", "True", "Ready")
    assert "processing event" in first.process.log_tail()
    assert "processing event" not in second.process.log_tail()  # the standby never reconciled

    os.killpg(first.process.pid, signal.SIGKILL)
    first.process.proc.wait(10)
    await harness.patch_instance(ref, "ha", {"spec": {"configMaps": {"b": "2"}}})

    async def second_leads() -> bool:
        return await lease_holder(harness) == "controller-b"

    await eventually(second_leads, timeout=30, what="controller-b holds the Lease")

    async def converged() -> bool:
        try:
            await harness.kube.get(f"/api/v1/namespaces/{harness.namespace}/configmaps/ha-b")
        except Exception:
            return False
        return True

    await eventually(converged, timeout=60, what="the change made during failover applied by controller-b")
    assert len(await harness.revisions()) == 2
    assert second.process.proc.poll() is None


async def test_yoke_cli_reads_a_release_made_by_the_controller(harness: Harness) -> None:
    await harness.start_controller()
    ref = await harness.create_airway("basic")
    await harness.wait_airway_ready(ref)
    await harness.create_instance(ref, "web", {"replicas": 2, "data": {"k": "v"}})
    await harness.wait_condition(ref, "web", "True", "Ready")
    release = f"{ref.group}.Backend.{harness.namespace}.web"
    listing = strip_ansi(run_yoke(["blackbox", "--namespace", harness.namespace], kubeconfig=harness.kubeconfig).stdout)
    assert release in listing
    [revision] = await harness.revisions()
    history = run_yoke(["blackbox", "--namespace", harness.namespace, release], kubeconfig=harness.kubeconfig)
    assert revision["metadata"]["name"] in strip_ansi(history.stdout) or "1" in strip_ansi(history.stdout)
    shown = strip_ansi(
        run_yoke(["blackbox", "--namespace", harness.namespace, release, "1"], kubeconfig=harness.kubeconfig).stdout
    )
    assert f"{harness.namespace}/apps/v1/deployment/web" in shown
    assert f"{harness.namespace}/core/v1/configmap/web-config" in shown
    assert "instance.atc.yoke.cd/instanceRef" in shown
