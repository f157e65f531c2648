"""yoke.cd CRDs and Airway-generated CRDs against the real apiserver: installed, Established, validating."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from atc.k8s.client import KubeClient, KubeError
from atc.k8s.crds import AIRWAYS_PATH as AIRWAYS
from atc.k8s.crds import CRD_PATH, airway_schema, flight_schema, install_yoke_crds, wait_established, yoke_crds
from atc.k8s.readiness import is_ready
from atc.model.airway_template import airway_crd, mutate_template
from atc.model.types import Object

pytestmark = pytest.mark.cluster


@pytest.fixture
async def api(kubeconfig: Path) -> AsyncIterator[KubeClient]:
    async with await KubeClient.connect(str(kubeconfig)) as kube:
        await install_yoke_crds(kube)
        yield kube


def backend_template(group: str) -> Object:
    """The template of yoke's Backend example: spec.image/replicas, a user status with a phase."""
    return {
        "group": group,
        "names": {"kind": "Backend", "plural": "backends", "singular": "backend", "shortNames": ["be"]},
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "required": ["spec", "status"],
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["image"],
                                "properties": {
                                    "image": {"type": "string"},
                                    "replicas": {"type": "integer", "minimum": 0},
                                },
                            },
                            "status": {"type": "object", "properties": {"phase": {"type": "string"}}},
                        },
                    }
                },
                "subresources": {
                    "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}
                },
            }
        ],
    }


def airway(group: str, *, with_template: bool = True) -> Object:
    spec: Object = {
        "wasmUrls": {"flight": "https://github.com/yokecd/examples/releases/download/latest/atc_backend_v1.wasm.gz"},
        "mode": "dynamic",
        "clusterAccess": True,
        "fixDriftInterval": "30s",
        "historyCapSize": 5,
        "prune": {"crds": False, "namespaces": False},
        "timeout": "15s",
    }
    if with_template:
        spec["template"] = backend_template(group)
    return {"apiVersion": "yoke.cd/v1alpha1", "kind": "Airway", "metadata": {"name": f"backends.{group}"}, "spec": spec}


async def test_yoke_crds_are_established_with_schemas_and_printer_columns(api: KubeClient) -> None:
    expected = {crd["metadata"]["name"]: crd for crd in yoke_crds()}
    assert set(expected) == {"airways.yoke.cd", "flights.yoke.cd", "clusterflights.yoke.cd"}
    for name, crd in expected.items():
        live = await api.get(f"{CRD_PATH}/{name}")
        assert await is_ready(api, live)
        assert live["spec"]["scope"] == crd["spec"]["scope"]
        assert live["spec"]["names"]["kind"] == crd["spec"]["names"]["kind"]
        (version,) = live["spec"]["versions"]
        assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
        assert version["subresources"] == {"status": {}}
        assert version["additionalPrinterColumns"] == crd["spec"]["versions"][0]["additionalPrinterColumns"]
        golden = airway_schema() if name == "airways.yoke.cd" else flight_schema()
        assert version["schema"]["openAPIV3Schema"] == golden

    columns = (await api.get(f"{CRD_PATH}/airways.yoke.cd"))["spec"]["versions"][0]["additionalPrinterColumns"]
    assert columns == [
        {"name": "flight", "type": "string", "jsonPath": ".spec.wasmUrls.flight"},
        {"name": "mode", "type": "string", "jsonPath": ".spec.mode"},
        {"name": "cluster_access", "type": "boolean", "jsonPath": ".spec.clusterAccess"},
        {"name": "fix_drift_interval", "type": "string", "format": "date", "jsonPath": ".spec.fixDriftInterval"},
    ]
    managers = {
        entry["manager"] for entry in (await api.get(f"{CRD_PATH}/flights.yoke.cd"))["metadata"]["managedFields"]
    }
    assert "yoke" in managers


async def test_installing_again_is_idempotent(api: KubeClient) -> None:
    before = await api.get(f"{CRD_PATH}/airways.yoke.cd")
    await install_yoke_crds(api)
    after = await api.get(f"{CRD_PATH}/airways.yoke.cd")
    assert after["metadata"]["generation"] == before["metadata"]["generation"]


async def test_airway_schema_accepts_the_example_and_requires_a_template(api: KubeClient) -> None:
    group = f"t{secrets.token_hex(4)}.examples.com"
    accepted = await api.request("POST", AIRWAYS, query={"dryRun": "All"}, body=airway(group))
    assert accepted["spec"]["mode"] == "dynamic"
    assert accepted["spec"]["template"]["names"]["kind"] == "Backend"

    defaults = airway(group)
    del defaults["spec"]["mode"], defaults["spec"]["clusterAccess"]
    defaulted = await api.request("POST", AIRWAYS, query={"dryRun": "All"}, body=defaults)
    assert (defaulted["spec"]["mode"], defaulted["spec"]["clusterAccess"]) == ("standard", False)

    bad_mode = airway(group)
    bad_mode["spec"]["mode"] = "sometimes"
    with pytest.raises(KubeError, match=r"spec\.mode: Unsupported value"):
        await api.request("POST", AIRWAYS, query={"dryRun": "All"}, body=bad_mode)

    with pytest.raises(KubeError) as rejected:
        await api.request("POST", AIRWAYS, query={"dryRun": "All"}, body=airway(group, with_template=False))
    assert rejected.value.status == 422
    assert "spec.template: Required value" in rejected.value.message


async def test_airway_crd_is_accepted_established_and_owned(api: KubeClient, namespace: str) -> None:
    group = f"t{secrets.token_hex(4)}.examples.com"
    owner = await api.request("POST", AIRWAYS, body=airway(group))
    name = owner["metadata"]["name"]
    crd = airway_crd(owner, mutate_template(owner["spec"]["template"]))
    try:
        await api.apply(f"{CRD_PATH}/{name}", crd, field_manager="yoke")
        await wait_established(api, [name], timeout=60)
        live = await api.get(f"{CRD_PATH}/{name}")
        assert live["metadata"]["ownerReferences"][0]["uid"] == owner["metadata"]["uid"]
        assert "status" not in live["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["required"]
        assert set(live["spec"]["versions"][0]["subresources"]) == {"status", "scale"}

        backends = f"/apis/{group}/v1/namespaces/{namespace}/backends"
        created = await api.request(
            "POST",
            backends,
            body={
                "apiVersion": f"{group}/v1",
                "kind": "Backend",
                "metadata": {"name": "b"},
                "spec": {"image": "nginx"},
            },
        )  # status no longer required
        ready = {
            "type": "Ready",
            "status": "True",
            "lastTransitionTime": "2026-11-23T10:00:00Z",
            "reason": "Ready",
            "message": "ok",
        }
        created["status"] = {"phase": "Running", "conditions": [ready]}
        updated = await api.request("PUT", f"{backends}/b/status", body=created)
        assert updated["status"]["conditions"] == [ready]  # the conditions schema keeps the ATC's condition
        assert updated["status"]["phase"] == "Running"
    finally:
        await api.request("DELETE", f"{AIRWAYS}/{name}")
        try:  # the garbage collector removes the owned CRD too, perhaps already
            await api.request("DELETE", f"{CRD_PATH}/{name}")
        except KubeError as exc:
            if not exc.not_found:
                raise
