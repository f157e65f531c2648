"""An Airway release made by hand, as the controller would leave it: for webhook tests and the admission benchmark.

No controller runs: ``create_airway`` creates an Airway and the CRD it declares
(``atc.model.airway_template``), ``create_instance`` an instance, and
``create_release`` writes a revision Secret in yoke's format
(``atc.release.revisions.create_revision``) whose single stage holds the given children,
stamped with yoke's labels, annotations and ownerReference, and server-side
applies those children. Imported by ``tests/integration/test_webhook_service.py``
and ``bench/admission.py``.
"""

from __future__ import annotations

import copy
import secrets

from harness import SCHEMA, AirwayRef

from atc.k8s.client import KubeClient, KubeError
from atc.k8s.crds import AIRWAYS_PATH as AIRWAYS
from atc.k8s.crds import CRD_PATH as CRDS
from atc.k8s.crds import install_yoke_crds, wait_established
from atc.k8s.refs import resource_ref
from atc.model.airway_template import airway_crd, mutate_template
from atc.model.constants import (
    ANNOTATION_INSTANCE_REF,
    ANNOTATION_RELEASE,
    ANNOTATION_RELEASE_NAMESPACE,
    FIELD_MANAGER_APPLY,
    LABEL_MANAGED_BY,
    MANAGED_BY_ATC,
)
from atc.model.types import Object
from atc.release.revisions import create_revision, release_name


def object_path(obj: Object) -> str:
    """The API path of a namespaced core or apps object (the kinds these tests use)."""
    api_version, kind, meta = obj["apiVersion"], obj["kind"], obj["metadata"]
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    return f"{prefix}/namespaces/{meta['namespace']}/{kind.lower()}s/{meta['name']}"


async def create_airway(kube: KubeClient, *, mode: str = "static", kind: str = "Backend") -> AirwayRef:
    """An Airway of a fresh group, and its CRD (Established) as the controller would apply it."""
    await install_yoke_crds(kube)
    group = f"t{secrets.token_hex(4)}.examples.com"
    airway = AirwayRef(f"{kind.lower()}s.{group}", group, kind, f"{kind.lower()}s")
    template = {
        "group": group,
        "names": {"kind": kind, "plural": airway.plural, "singular": kind.lower()},
        "scope": "Namespaced",
        "versions": [{"name": "v1", "served": True, "storage": True, "schema": SCHEMA}],
    }
    body = {
        "apiVersion": "yoke.cd/v1alpha1",
        "kind": "Airway",
        "metadata": {"name": airway.name},
        "spec": {"wasmUrls": {"flight": "http://127.0.0.1:9/unused.wasm"}, "template": template, "mode": mode},
    }
    created = await kube.request("POST", AIRWAYS, body=body)
    crd = airway_crd(created, mutate_template(template))
    await kube.apply(f"{CRDS}/{airway.name}", crd, field_manager=FIELD_MANAGER_APPLY)
    await wait_established(kube, [airway.name], timeout=30)
    return airway


async def delete_airway(kube: KubeClient, airway: AirwayRef) -> None:
    """Delete the CRD (and so every instance) and the Airway; already gone is fine."""
    for path in (f"{CRDS}/{airway.name}", f"{AIRWAYS}/{airway.name}"):
        try:
            await kube.request("DELETE", path)
        except KubeError as exc:
            if not exc.not_found:
                raise


async def create_instance(
    kube: KubeClient, airway: AirwayRef, namespace: str, name: str, annotations: dict[str, str] | None = None
) -> Object:
    body = {
        "apiVersion": airway.api_version,
        "kind": airway.kind,
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations or {}},
        "spec": {},
    }
    return await kube.request("POST", airway.collection(namespace), body=body)


def stamped(child: Object, instance: Object) -> Object:
    """``child`` with what takeoff adds: managed-by label, release annotations, instanceRef, ownerReference."""
    meta = instance["metadata"]
    stamped_child = copy.deepcopy(child)
    child_meta = stamped_child.setdefault("metadata", {})
    child_meta.setdefault("namespace", meta["namespace"])
    child_meta.setdefault("labels", {})[LABEL_MANAGED_BY] = MANAGED_BY_ATC
    child_meta.setdefault("annotations", {}).update(
        {
            ANNOTATION_RELEASE: release_name(instance, namespaced=True),
            ANNOTATION_RELEASE_NAMESPACE: meta["namespace"],
            ANNOTATION_INSTANCE_REF: resource_ref(instance),
        }
    )
    owner = {
        "apiVersion": instance["apiVersion"],
        "kind": instance["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "blockOwnerDeletion": True,
        "controller": True,
    }
    child_meta["ownerReferences"] = [owner]
    return stamped_child


async def create_release(kube: KubeClient, instance: Object, children: list[Object]) -> list[Object]:
    """Record ``children`` (stamped) as the instance's active revision and apply them; returns them as applied."""
    desired = [stamped(child, instance) for child in children]
    namespace = instance["metadata"]["namespace"]
    await create_revision(
        kube,
        release_name(instance, namespaced=True),
        namespace,
        [desired],
        source_url="http://127.0.0.1:9/unused.wasm",
        source_checksum="0" * 40,
    )
    applied = []
    for child in desired:
        applied.append(await kube.apply(object_path(child), child, field_manager=FIELD_MANAGER_APPLY, force=True))
    return applied


def configmap(name: str, data: dict[str, str]) -> Object:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def deployment(name: str, image: str = "busybox:1.36") -> Object:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "main", "image": image}]}},
        },
    }
