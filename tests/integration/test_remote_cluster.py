"""A client for another cluster from its kubeconfig bytes (``atc.k8s.remote``), against a second control plane.

``workload_cluster`` (tests/conftest.py) is a control plane of its own, with its own CA; its
kubeconfig embeds CA, client certificate and key, as a tenant's kubeconfig Secret would.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from atc.k8s.client import KubeError
from atc.k8s.remote import TargetKubeconfigError, connect_target
from atc.wasm.globs import path_match
from devcluster.cluster import ClusterState

pytestmark = pytest.mark.cluster


@pytest.fixture
def kubeconfig_bytes(workload_cluster: ClusterState) -> bytes:
    return Path(workload_cluster.kubeconfig).read_bytes()


async def test_connect_target_reaches_the_workload_cluster(
    workload_cluster: ClusterState, kubeconfig_bytes: bytes
) -> None:
    async with await connect_target(
        kubeconfig_bytes, allowed_servers=["https://127.0.0.1:*"], match=path_match, field_manager="atc-test"
    ) as target:
        assert target.server == workload_cluster.server
        namespace = await target.get("/api/v1/namespaces/default")
        assert namespace["metadata"]["name"] == "default"
        with pytest.raises(KubeError) as caught:
            await target.get("/api/v1/namespaces/no-such-namespace-here")
        assert caught.value.not_found


async def test_a_workload_server_outside_the_allow_list_is_refused(
    workload_cluster: ClusterState, kubeconfig_bytes: bytes
) -> None:
    port = workload_cluster.server.rsplit(":", 1)[1]
    with pytest.raises(TargetKubeconfigError, match="matches no pattern") as caught:
        await connect_target(
            kubeconfig_bytes,
            allowed_servers=["https://10.*:*", "https://localhost:*"],
            match=path_match,
            field_manager="x",
        )
    assert port not in str(caught.value)
    assert "127.0.0.1" not in str(caught.value)
