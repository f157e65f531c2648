"""Go flights built with yoke's SDK, run by our runtime, looking things up in the real control plane.

Covers the host ABI end to end (docs/flight-runtime.md, "Host functions (yoke's ABI)"): an owned Secret is found,
an unowned one is forbidden with yoke's message, a matcher grants access, a
missing one is state 3, and without cluster access the state is 1; REST
mapping finds built-in kinds and kinds of a CRD created a moment ago; a
takeoff whose flight looked up data that changed before the apply is refused
by the resourceVersion precondition and applies nothing.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import eventually

from atc.k8s.access import FORBIDDEN_OUTSIDE_RELEASE, ClusterAccess, ClusterGateway
from atc.k8s.client import KubeClient
from atc.k8s.discovery import RestMapper, RestMapping
from atc.k8s.gateway import LoopGateway
from atc.release.invocation import flight_invocation
from atc.release.revisions import list_release
from atc.release.stages import parse_stages
from atc.release.takeoff import Cluster, StaleLookupError, TakeoffRequest, takeoff
from atc.wasm.cache import LoadedModule, ModuleCache
from atc.wasm.engine import FlightEngine
from atc.wasm.runner import RunResult, run_flight_async

pytestmark = pytest.mark.cluster
RELEASE = "examples.com.Backend.x.b1"


@pytest.fixture
async def engine() -> AsyncIterator[FlightEngine]:
    flight_engine = FlightEngine(workers=2)
    yield flight_engine
    flight_engine.close()


async def load(engine: FlightEngine, cache_dir: Path, wasm: Path) -> LoadedModule:
    return await ModuleCache(engine, cache_dir).load(str(wasm))


async def gateway_for(kube: KubeClient) -> LoopGateway:
    return LoopGateway(kube, RestMapper(kube), asyncio.get_running_loop())


async def make_secret(kube: KubeClient, namespace: str, name: str, data: dict[str, str], owner: str = "") -> None:
    annotations = {}
    if owner:
        annotations = {"instance.atc.yoke.cd/release": owner, "instance.atc.yoke.cd/namespace": namespace}
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "annotations": annotations},
        "stringData": data,
    }
    await kube.request("POST", f"/api/v1/namespaces/{namespace}/secrets", body=body)


def expected_hash(data: dict[str, str]) -> str:
    return hashlib.sha256("".join(f"{k}={data[k]}\n" for k in sorted(data)).encode()).hexdigest()


@dataclass
class LookupBench:
    """The lookup flight, loaded once, run against one test namespace."""

    engine: FlightEngine
    kube: KubeClient
    module: LoadedModule
    namespace: str

    async def secret(self, name: str, data: dict[str, str], owner: str = "") -> None:
        await make_secret(self.kube, self.namespace, name, data, owner)

    async def run(
        self, secret: str, *, enabled: bool = True, matchers: tuple[str, ...] = ()
    ) -> tuple[dict[str, Any], RunResult]:
        access = ClusterAccess(enabled, RELEASE, self.namespace, matchers, await gateway_for(self.kube))
        instance = {
            "metadata": {"name": "b1", "namespace": self.namespace},
            "spec": {"secretName": secret, "secretNamespace": self.namespace},
        }
        invocation = flight_invocation(
            release=RELEASE, namespace=self.namespace, stdin=json.dumps(instance).encode(), access=access, timeout=30
        )
        result = await run_flight_async(self.engine, self.module.prepared, invocation)
        [[config_map]] = parse_stages(result.stdout)
        data: dict[str, Any] = config_map["data"]
        return data, result


@pytest.fixture
async def lookups(
    engine: FlightEngine,
    kube_client: KubeClient,
    namespace: str,
    module_cache_dir: Path,
    build_flight: Callable[[str], Path],
) -> LookupBench:
    return LookupBench(engine, kube_client, await load(engine, module_cache_dir, build_flight("lookup")), namespace)


async def test_lookup_of_an_owned_secret_finds_it(lookups: LookupBench) -> None:
    secret_data = {"password": "hunter2", "user": "admin"}
    await lookups.secret("db", secret_data, owner=RELEASE)
    data, result = await lookups.run("db")
    assert data["state"] == "found"
    assert data["hash"] == expected_hash(secret_data)
    assert result.lookups.internal == {f"{lookups.namespace}/Secret:db"}


async def test_lookup_of_an_unowned_secret_is_forbidden(lookups: LookupBench) -> None:
    await lookups.secret("theirs", {"k": "v"}, owner="someone-else")
    data, _ = await lookups.run("theirs")
    assert data["state"] == "forbidden"
    assert data["message"] == FORBIDDEN_OUTSIDE_RELEASE


async def test_matcher_grants_access_to_an_unowned_secret(lookups: LookupBench) -> None:
    await lookups.secret("shared", {"token": "t"})
    data, result = await lookups.run("shared", matchers=(f"{lookups.namespace}/Secret:shared",))
    assert data["state"] == "found"
    assert data["hash"] == expected_hash({"token": "t"})
    assert result.lookups.external == {f"{lookups.namespace}/Secret:shared"}


async def test_lookup_of_a_missing_secret_is_not_found(lookups: LookupBench) -> None:
    data, result = await lookups.run("nope")
    assert data["state"] == "notfound"
    assert data["message"] == 'secrets "nope" not found'
    assert result.lookups.candidate == {f"{lookups.namespace}/Secret:nope"}


async def test_lookup_without_cluster_access_is_not_granted(lookups: LookupBench) -> None:
    await lookups.secret("db", {"k": "v"}, owner=RELEASE)
    data, _ = await lookups.run("db", enabled=False)
    assert data["state"] == "notgranted"


async def run_mapping(
    engine: FlightEngine, module: LoadedModule, access: ClusterAccess, group: str, kind: str
) -> dict[str, Any]:
    instance = {"metadata": {"name": "m", "namespace": "default"}, "spec": {"group": group, "kind": kind}}
    invocation = flight_invocation(release="m", namespace="default", stdin=json.dumps(instance).encode(), access=access)
    result = await run_flight_async(engine, module.prepared, invocation)
    [[config_map]] = parse_stages(result.stdout)
    data: dict[str, Any] = config_map["data"]
    return data


async def test_rest_mapping_of_builtin_and_freshly_created_kinds(
    engine: FlightEngine, kube_client: KubeClient, module_cache_dir: Path, build_flight: Callable[[str], Path]
) -> None:
    module = await load(engine, module_cache_dir, build_flight("restmapping"))
    mapper = RestMapper(kube_client, min_refresh_interval=0)
    access = ClusterAccess(True, "m", "default", (), LoopGateway(kube_client, mapper, asyncio.get_running_loop()))
    deployment = await run_mapping(engine, module, access, "apps", "Deployment")
    assert {k: deployment[k] for k in ("group", "version", "resource", "namespaced")} == {
        "group": "apps",
        "version": "v1",
        "resource": "deployments",
        "namespaced": "true",
    }
    assert (await run_mapping(engine, module, access, "", "Namespace"))["namespaced"] == "false"
    group = f"fresh-{secrets.token_hex(3)}.test"
    missing = await run_mapping(engine, module, access, group, "Thing")
    assert missing["state"] == "error"
    assert missing["message"].endswith(f'no matches for kind "Thing" in group "{group}"')
    await create_crd(kube_client, f"things.{group}", group, "Thing", "things")

    async def mapped() -> dict[str, Any] | None:  # each miss refreshes discovery, which serves the group soon
        answer = await run_mapping(engine, module, access, group, "Thing")
        return answer if "resource" in answer else None

    found = await eventually(mapped, timeout=30, what=f"REST mapping of Thing.{group}")
    assert (found["resource"], found["version"], found["namespaced"]) == ("things", "v1", "true")


async def create_crd(kube: KubeClient, name: str, group: str, kind: str, plural: str) -> None:
    schema = {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": name},
        "spec": {
            "group": group,
            "names": {"kind": kind, "plural": plural},
            "scope": "Namespaced",
            "versions": [{"name": "v1", "served": True, "storage": True, "schema": schema}],
        },
    }
    await kube.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", body=crd)

    async def established() -> bool:
        live = await kube.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
        conditions = (live.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    await eventually(established, what=f"CRD {name} Established")


@dataclass
class StaleGateway:
    """A gateway whose lookups answer with a snapshot taken earlier: the flight sees data that changed since."""

    real: LoopGateway
    snapshot: dict[str, Any]

    def rest_mapping(self, group: str, kind: str, version: str) -> RestMapping:
        return self.real.rest_mapping(group, kind, version)

    def get(self, mapping: RestMapping, namespace: str, name: str) -> dict[str, Any]:
        answer: dict[str, Any] = json.loads(json.dumps(self.snapshot))
        return answer


async def test_output_computed_from_a_lookup_that_changed_since_is_refused_not_applied(
    engine: FlightEngine,
    kube_client: KubeClient,
    namespace: str,
    module_cache_dir: Path,
    build_flight: Callable[[str], Path],
) -> None:
    module = await load(engine, module_cache_dir, build_flight("backend"))
    cluster = Cluster(kube_client, RestMapper(kube_client), engine)
    instance = {"apiVersion": "examples.com/v1", "kind": "Backend", "metadata": {"name": "b1", "namespace": namespace}}
    secret_path = f"/api/v1/namespaces/{namespace}/secrets/b1-secret"
    deployment_path = f"/apis/apps/v1/namespaces/{namespace}/deployments/b1"

    async def fly(gateway: ClusterGateway) -> None:
        request = TakeoffRequest(
            release=RELEASE,
            namespace=namespace,
            module=module,
            source_url="file://backend.wasm",
            stdin=json.dumps({**instance, "spec": {"secretData": {"password": "first"}}}).encode(),
            access=ClusterAccess(True, RELEASE, namespace, (), gateway),
            is_parent=lambda obj: obj.get("kind") == "Backend",
        )
        await takeoff(cluster, request)

    async def deployed_hash() -> str:
        deployment = await kube_client.get(deployment_path)
        return str(deployment["spec"]["template"]["metadata"]["annotations"]["backend.test/secret-hash"])

    await fly(await gateway_for(kube_client))
    snapshot = await kube_client.get(secret_path)  # what the next lookup will see
    await kube_client.request(
        "PATCH",
        secret_path,
        body={"stringData": {"password": "second"}},
        content_type="application/merge-patch+json",
    )
    with pytest.raises(StaleLookupError, match=r"core/v1/secret/b1-secret changed after the flight looked it up"):
        await fly(StaleGateway(await gateway_for(kube_client), snapshot))
    live = await kube_client.get(secret_path)
    assert base64.b64decode(live["data"]["password"]) == b"second"  # the newer data survives
    assert await deployed_hash() == expected_hash({"password": "first"})  # nothing of the stale run was applied
    assert len((await list_release(kube_client, RELEASE, namespace)).history) == 1

    await fly(await gateway_for(kube_client))  # a fresh run converges on the newer data
    assert await deployed_hash() == expected_hash({"password": "second"})
