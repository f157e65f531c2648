"""Shared pytest fixtures: the local control plane, per-test namespaces, service subprocesses.

The control plane (``cluster``) starts once per session, only when a test asks
for it, and stops at the end of the session, also after a failure or Ctrl-C
(its processes die with this one if it is killed). ``DEVCLUSTER_REUSE=1`` reuses
a cluster started by ``make cluster-up`` instead.
"""

from __future__ import annotations

import os
import secrets
import signal
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from pathlib import Path

import pytest
from harness import Harness
from kubernetes_asyncio import client, config
from support import SERVICES_KEY, ServiceProcess, start_service

import flightbuild
from atc.k8s.client import KubeClient
from devcluster.cluster import Cluster, ClusterState, cluster_paths, running_state

REPO_ROOT = Path(__file__).resolve().parent.parent


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    # SIGTERM (CI cancelling the job, `timeout`) tears down like Ctrl-C: fixtures stop the cluster.
    signal.signal(signal.SIGTERM, _interrupt)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterState]:
    if os.environ.get("DEVCLUSTER_REUSE") == "1":
        state = running_state(REPO_ROOT / ".local" / "cluster")
        if state is None:
            pytest.fail("DEVCLUSTER_REUSE=1 but no running cluster: run `make cluster-up` first")
        yield state
        return
    control_plane = Cluster(tmp_path_factory.mktemp("cluster"), tie_to_parent=True)
    try:
        yield control_plane.start()
    finally:
        control_plane.stop()


@pytest.fixture(scope="module")
def workload_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterState]:
    """A second control plane (a target cluster to deploy to), for the tests of one module.

    Its kubeconfig (``state.kubeconfig``) embeds CA, certificate and key (``*-data`` keys), so its
    bytes can go into a Secret of the ``cluster``. ``DEVCLUSTER_REUSE=1`` reuses the cluster of
    ``python -m devcluster up --name workload`` when one runs, else starts one as without it.
    """
    if os.environ.get("DEVCLUSTER_REUSE") == "1":
        state = running_state(cluster_paths("workload", REPO_ROOT / ".local")[0])
        if state is not None:
            yield state
            return
    control_plane = Cluster(tmp_path_factory.mktemp("workload-cluster"), tie_to_parent=True)
    try:
        yield control_plane.start()
    finally:
        control_plane.stop()


@pytest.fixture(scope="session")
def build_flight() -> Callable[[str], Path]:
    """Path of a test flight's .wasm (Go with yoke's SDK, or WAT), built once and cached by content."""
    return flightbuild.build


@pytest.fixture(scope="session")
def module_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CACHE_FS shared by the session, so each test flight is compiled once."""
    return tmp_path_factory.mktemp("module-cache")


@pytest.fixture
def kubeconfig(cluster: ClusterState) -> Path:
    return Path(cluster.kubeconfig)


@pytest.fixture
async def kube_client(kubeconfig: Path) -> AsyncIterator[KubeClient]:
    """Our own client, with the admin kubeconfig, for the test's own calls."""
    async with await KubeClient.connect(str(kubeconfig)) as kube:
        yield kube


@pytest.fixture
async def kube(kubeconfig: Path) -> AsyncIterator[client.ApiClient]:
    """An admin API client for the test's own calls."""
    configuration = client.Configuration()
    await config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    async with client.ApiClient(configuration) as api:
        yield api


@pytest.fixture
async def namespace(kube: client.ApiClient) -> AsyncIterator[str]:
    """A fresh namespace for one test, deleted (without waiting) afterwards."""
    name = f"t-{secrets.token_hex(4)}"
    core = client.CoreV1Api(kube)
    await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    await core.delete_namespace(name)


@pytest.fixture
def run_service(
    request: pytest.FixtureRequest, kubeconfig: Path, tmp_path: Path
) -> Iterator[Callable[..., ServiceProcess]]:
    """Start a service command against the cluster; its log joins the report if the test fails."""
    started: list[ServiceProcess] = []
    request.node.stash[SERVICES_KEY] = started

    def run(name: str, argv: list[str], env: dict[str, str] | None = None) -> ServiceProcess:
        service = start_service(name, argv, {"KUBE": str(kubeconfig), **(env or {})}, tmp_path)
        started.append(service)
        return service

    yield run
    for service in reversed(started):
        service.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        for service in item.stash.get(SERVICES_KEY, []):
            report.sections.append((f"service {service.name} (pid {service.pid}) log", service.log_tail()))
    return report


@pytest.fixture
async def harness(
    cluster: ClusterState,
    kubeconfig: Path,
    namespace: str,
    module_cache_dir: Path,
    build_flight: Callable[[str], Path],
    run_service: Callable[..., ServiceProcess],
) -> AsyncIterator[Harness]:
    """Drives the controller end to end; deletes its Airways before the controller stops."""
    async with await KubeClient.connect(str(kubeconfig)) as kube:
        pki = Path(cluster.runtime_dir) / "pki"
        harness = Harness(kube, namespace, kubeconfig, module_cache_dir, build_flight, run_service, pki)
        yield harness
        await harness.clean_up()
