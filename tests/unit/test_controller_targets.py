"""Choosing the cluster a release deploys to (``atc_controller.targets``) without a control plane.

The kubeconfig Secret is read with this cluster's client; a remote target is built from the Secret
alone and kept until the Secret changes; every problem is one ``TargetError`` whose message names
the Secret and never the kubeconfig's content; requests to another cluster carry no
ownerReferences.
"""

from __future__ import annotations

import base64
import json
from types import SimpleNamespace
from typing import Any, cast

import pytest

from atc.k8s.client import KubeError
from atc.model.types import Object
from atc.release import targets as release_targets
from atc.release.takeoff import TakeoffRequest
from atc_controller import targets as targets_module
from atc_controller.targets import Target, TargetError, Targets, for_target

SECRET_PATH = "/api/v1/namespaces/team/secrets/wl"


class SecretStore:
    """The management cluster's client, as far as ``Targets`` uses it: GET of Secrets."""

    def __init__(self) -> None:
        self.secrets: dict[str, Object] = {}
        self.errors: dict[str, KubeError] = {}
        self.gets: list[str] = []

    async def get(self, path: str) -> Object:
        self.gets.append(path)
        if path in self.errors:
            raise self.errors[path]
        if path not in self.secrets:
            raise KubeError(404, "not found")
        return self.secrets[path]


class Watches:
    def __init__(self, *_: Any) -> None:
        self.following: dict[tuple[str, str], set[str]] = {}
        self.objects: dict[str, Object] = {}
        self.stopped = False

    def cached(self, ref: str) -> Object | None:
        return self.objects.get(ref)

    def follow(self, controller: str, key: str, refs: set[str]) -> None:
        self.following[controller, key] = set(refs)

    def route_to(self, _: Any) -> None:
        pass

    async def stop(self) -> None:
        self.stopped = True


class RemoteKube:
    def __init__(self, fail: KubeError | None = None) -> None:
        self.fail = fail
        self.closed = False

    async def get(self, path: str) -> Object:
        assert path == "/api"
        if self.fail:
            raise self.fail
        return {}

    async def close(self) -> None:
        self.closed = True


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> SecretStore:
    monkeypatch.setattr(targets_module, "ExternalWatches", Watches)
    monkeypatch.setattr(targets_module, "ChildWatches", Watches)
    monkeypatch.setattr(targets_module, "LoopGateway", lambda *_: "gateway")
    monkeypatch.setattr(targets_module, "RestMapper", lambda kube: SimpleNamespace(kube=kube))
    return SecretStore()


def local_target(store: SecretStore) -> Target:
    cluster = SimpleNamespace(kube=store, mapper=None, engine="engine", readiness=None)
    return Target("", cast(Any, cluster), cast(Any, None), cast(Any, Watches()), cast(Any, Watches()))


def targets(store: SecretStore) -> Targets:
    return Targets(local_target(store), manager=cast(Any, None), allowed_servers=["https://*"])


def instance(annotations: dict[str, str] | None = None) -> Object:
    return {"metadata": {"name": "i", "namespace": "team", "annotations": annotations or {}}}


def secret(data: dict[str, bytes], version: str = "1") -> Object:
    encoded = {key: base64.b64encode(value).decode() for key, value in data.items()}
    return {"metadata": {"name": "wl", "namespace": "team", "resourceVersion": version}, "data": encoded}


TARGETED = {"atc.yoke.cd/kubeconfig-secret": "wl"}
KUBECONFIG = json.dumps({"clusters": [{"cluster": {"server": "https://10.0.0.1:6443"}}]}).encode()


def connecting(monkeypatch: pytest.MonkeyPatch, remote: RemoteKube | None = None) -> list[bytes]:
    seen: list[bytes] = []

    async def connect(data: bytes, **_: Any) -> RemoteKube:
        seen.append(data)
        return remote or RemoteKube()

    monkeypatch.setattr(release_targets, "connect_target", connect)
    return seen


async def test_an_object_without_the_annotation_deploys_here(store: SecretStore) -> None:
    chosen = targets(store)
    assert await chosen.for_object("c", "team/i", instance()) is chosen.local
    assert store.gets == []


async def test_the_kubeconfig_comes_from_the_value_key_and_the_target_is_kept(
    store: SecretStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = connecting(monkeypatch)
    store.secrets[SECRET_PATH] = secret({"value": KUBECONFIG})
    chosen = targets(store)
    first = await chosen.for_object("c", "team/i", instance(TARGETED))
    again = await chosen.for_object("c", "team/i", instance(TARGETED))
    assert first is again
    assert first.remote
    assert first.name == "team/wl"
    assert seen == [KUBECONFIG]  # connected once while the Secret is unchanged
    assert "this cluster" not in first.where()


async def test_a_changed_secret_builds_a_new_target_and_closes_the_old(
    store: SecretStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    connecting(monkeypatch)
    store.secrets[SECRET_PATH] = secret({"value.yaml": KUBECONFIG}, version="1")
    chosen = targets(store)
    first = await chosen.for_object("c", "team/i", instance(TARGETED))
    store.secrets[SECRET_PATH] = secret({"value.yaml": KUBECONFIG}, version="2")
    second = await chosen.for_object("c", "team/i", instance(TARGETED))
    assert second is not first
    assert cast(RemoteKube, first.kube).closed


@pytest.mark.parametrize(
    ("prepare", "message"),
    [
        (lambda s: None, "kubeconfig Secret team/wl not found"),
        (lambda s: s.errors.update({SECRET_PATH: KubeError(403, "forbidden")}), "the controller may not read"),
        (lambda s: s.secrets.update({SECRET_PATH: secret({"other": b"x"})}), "has no key value or value.yaml"),
        (
            lambda s: s.secrets.update({SECRET_PATH: {"metadata": {}, "data": {"value": "%%%"}}}),
            "key value is not valid base64",
        ),
    ],
)
async def test_secret_problems_are_one_clear_error(store: SecretStore, prepare: Any, message: str) -> None:
    prepare(store)
    with pytest.raises(TargetError, match=message):
        await targets(store).for_object("c", "team/i", instance(TARGETED))


async def test_a_malformed_annotation_is_an_error_before_any_request(store: SecretStore) -> None:
    with pytest.raises(TargetError, match="must name a Secret of the object's own namespace"):
        await targets(store).for_object("c", "team/i", instance({"atc.yoke.cd/kubeconfig-secret": "other/wl"}))
    assert store.gets == []


async def test_an_unreachable_target_is_reported_and_closed(
    store: SecretStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote = RemoteKube(KubeError(0, "GET /api: Cannot connect"))
    connecting(monkeypatch, remote)
    store.secrets[SECRET_PATH] = secret({"value": KUBECONFIG})
    with pytest.raises(TargetError) as failed:
        await targets(store).for_object("c", "team/i", instance(TARGETED))
    assert str(failed.value).startswith("the target cluster of kubeconfig Secret team/wl is unreachable")
    assert remote.closed


async def test_refused_credentials_are_reported(store: SecretStore, monkeypatch: pytest.MonkeyPatch) -> None:
    connecting(monkeypatch, RemoteKube(KubeError(401, "Unauthorized")))
    store.secrets[SECRET_PATH] = secret({"value": KUBECONFIG})
    with pytest.raises(TargetError, match="refused the kubeconfig's credentials"):
        await targets(store).for_object("c", "team/i", instance(TARGETED))


async def test_the_secret_is_followed_and_let_go(store: SecretStore, monkeypatch: pytest.MonkeyPatch) -> None:
    connecting(monkeypatch)
    store.secrets[SECRET_PATH] = secret({"value": KUBECONFIG})
    chosen = targets(store)
    watches = cast(Watches, chosen._secrets)
    await chosen.for_object("c", "team/i", instance(TARGETED))
    assert watches.following["c", "team/i"] == {"team/Secret:wl"}
    chosen.unbind("c", "team/i")
    assert watches.following["c", "team/i"] == set()


async def test_a_failing_secret_is_still_followed_so_a_fix_re_runs_at_once(store: SecretStore) -> None:
    chosen = targets(store)
    with pytest.raises(TargetError):
        await chosen.for_object("c", "team/i", instance(TARGETED))
    assert cast(Watches, chosen._secrets).following["c", "team/i"] == {"team/Secret:wl"}


async def test_moving_an_object_off_a_target_stops_its_external_watches_there(
    store: SecretStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    connecting(monkeypatch)
    store.secrets[SECRET_PATH] = secret({"value": KUBECONFIG})
    chosen = targets(store)
    remote = await chosen.for_object("c", "team/i", instance(TARGETED))
    remote.external_watches.follow("c", "team/i", {"team/Secret:looked-up"})
    await chosen.for_object("c", "team/i", instance())
    assert cast(Watches, remote.external_watches).following["c", "team/i"] == set()


def test_requests_to_another_cluster_carry_no_owner_references() -> None:
    request = cast(TakeoffRequest, SimpleNamespace())
    local = SimpleNamespace(remote=False)
    assert for_target(request, cast(Any, local)) is request
    real = TakeoffRequest(
        release="r",
        namespace="team",
        module=cast(Any, None),
        source_url="",
        stdin=b"",
        owner_references=[{"kind": "Backend", "uid": "u"}],
    )
    assert for_target(real, cast(Any, SimpleNamespace(remote=True))).owner_references == ()
    assert for_target(real, cast(Any, SimpleNamespace(remote=False))).owner_references == real.owner_references


async def test_a_watched_secret_is_read_from_its_watch(store: SecretStore, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = connecting(monkeypatch)
    chosen = targets(store)
    cast(Watches, chosen._secrets).objects["team/Secret:wl"] = secret({"value": KUBECONFIG})
    target = await chosen.for_object("c", "team/i", instance(TARGETED))
    assert target.remote
    assert seen == [KUBECONFIG]
    assert store.gets == []  # no GET of the Secret while its watch holds it
