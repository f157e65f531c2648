"""The webhook's clusters of kubeconfig Secrets (``atc.release.targets.RemoteClusters``) without a control plane.

One connection per Secret version, checked with ``GET /api`` before use, at most ``limit`` kept (the
least recently used is closed); every problem is a ``TargetError`` that names the Secret; a target
client bounds opening a connection.
"""

from __future__ import annotations

import base64
from typing import Any, cast

import aiohttp
import pytest

from atc.k8s import remote
from atc.k8s.client import KubeError
from atc.k8s.connection import Endpoint
from atc.model.target import TargetRef
from atc.model.types import Object
from atc.release import targets
from atc.release.targets import RemoteClusters, TargetError

KUBECONFIG = b"apiVersion: v1\nkind: Config\n"


class Secrets:
    def __init__(self) -> None:
        self.versions: dict[str, str] = {}

    async def get(self, path: str) -> Object:
        name = path.rsplit("/", 1)[-1]
        if name not in self.versions:
            raise KubeError(404, "not found")
        data = {"value": base64.b64encode(KUBECONFIG).decode()}
        return {"metadata": {"name": name, "resourceVersion": self.versions[name]}, "data": data}


class Remote:
    def __init__(self, answer: KubeError | None = None) -> None:
        self.answer = answer
        self.closed = False

    async def get(self, path: str) -> Object:
        if self.answer is not None:
            raise self.answer
        return {"kind": "APIVersions"}

    async def close(self) -> None:
        self.closed = True


@pytest.fixture
def connected(monkeypatch: pytest.MonkeyPatch) -> list[Remote]:
    made: list[Remote] = []

    async def connect(data: bytes, **_: Any) -> Remote:
        assert data == KUBECONFIG
        made.append(Remote())
        return made[-1]

    monkeypatch.setattr(targets, "connect_target", connect)
    monkeypatch.setattr(targets, "RestMapper", lambda kube: None)
    return made


def clusters(secrets: Secrets, limit: int = 2) -> RemoteClusters:
    return RemoteClusters(
        cast(Any, secrets),
        cast(Any, "engine"),
        allowed_servers=["https://*"],
        field_manager="m",
        user_agent="atc-webhook",
        limit=limit,
    )


async def test_one_connection_per_secret_version(connected: list[Remote]) -> None:
    secrets = Secrets()
    secrets.versions["a"] = "1"
    remote_clusters = clusters(secrets)
    first = await remote_clusters.cluster(TargetRef("ns", "a"))
    assert await remote_clusters.cluster(TargetRef("ns", "a")) is first
    secrets.versions["a"] = "2"
    second = await remote_clusters.cluster(TargetRef("ns", "a"))
    assert second is not first
    assert connected[0].closed
    assert len(connected) == 2


async def test_the_least_recently_used_connection_is_closed_beyond_the_limit(connected: list[Remote]) -> None:
    secrets = Secrets()
    secrets.versions.update(a="1", b="1", c="1")
    remote_clusters = clusters(secrets, limit=2)
    await remote_clusters.cluster(TargetRef("ns", "a"))
    await remote_clusters.cluster(TargetRef("ns", "b"))
    await remote_clusters.cluster(TargetRef("ns", "a"))  # a is now the most recent
    await remote_clusters.cluster(TargetRef("ns", "c"))
    assert [remote.closed for remote in connected] == [False, True, False]
    await remote_clusters.close()
    assert all(remote.closed for remote in connected)


async def test_a_missing_secret_is_a_target_error(connected: list[Remote]) -> None:
    with pytest.raises(TargetError, match="kubeconfig Secret ns/gone not found") as failed:
        await clusters(Secrets()).cluster(TargetRef("ns", "gone"))
    assert not failed.value.transient
    assert connected == []


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (KubeError(0, "GET /api: Cannot connect"), "is unreachable"),
        (KubeError(401, "Unauthorized"), "refused the kubeconfig's credentials"),
    ],
)
async def test_a_failed_check_closes_the_connection(
    monkeypatch: pytest.MonkeyPatch, answer: KubeError, message: str
) -> None:
    made = Remote(answer)

    async def connect(*_: Any, **__: Any) -> Remote:
        return made

    monkeypatch.setattr(targets, "connect_target", connect)
    secrets = Secrets()
    secrets.versions["a"] = "1"
    with pytest.raises(TargetError, match=message) as failed:
        await clusters(secrets).cluster(TargetRef("ns", "a"))
    assert failed.value.transient
    assert str(failed.value).startswith("the target cluster of kubeconfig Secret ns/a ")
    assert made.closed


async def test_a_target_client_bounds_opening_a_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that drops packets is unreachable after ``CONNECT_TIMEOUT_SECONDS``, not the OS's minutes."""
    monkeypatch.setattr(remote, "target_endpoint", lambda *_, **__: _endpoint())
    kube = await remote.connect_target(b"", allowed_servers=["*"], match=lambda *_: True, field_manager="m")
    seen: list[aiohttp.ClientTimeout] = []

    async def request(*_: Any, timeout: aiohttp.ClientTimeout, **__: Any) -> Any:
        seen.append(timeout)
        raise aiohttp.ClientConnectionError("stop here")

    transport: Any = kube._api
    monkeypatch.setattr(transport._session, "request", request)
    with pytest.raises(KubeError):
        await kube.get("/api")
    await kube.close()
    assert seen[0].sock_connect == remote.CONNECT_TIMEOUT_SECONDS


def _endpoint() -> Endpoint:
    return Endpoint(host="https://127.0.0.1:1")


async def test_a_kept_connection_is_checked_each_time(connected: list[Remote]) -> None:
    secrets = Secrets()
    secrets.versions["a"] = "1"
    remote_clusters = clusters(secrets)
    await remote_clusters.cluster(TargetRef("ns", "a"))
    connected[0].answer = KubeError(0, "GET /api: Cannot connect")  # the cluster went away since
    with pytest.raises(TargetError, match="the target cluster of kubeconfig Secret ns/a is unreachable"):
        await remote_clusters.cluster(TargetRef("ns", "a"))
