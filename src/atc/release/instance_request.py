"""The takeoff of one Airway instance: its module, its input and its ``TakeoffRequest``, built in one place.

``instance_takeoff_request`` is the only builder of an instance's request. The controller's
instance reconciler calls it for the real takeoff and the webhook's ``/validations/{airway}`` for
the dry run (``dry_run=True``), so the dry run applies exactly what the controller would: the same
labels, the same ``instance.atc.yoke.cd/instanceRef`` annotation, the same owner. (A dry run that
differed would, under the same field manager, look like an edit of yoke's annotations to the
``atc-resources`` webhook and be refused.) ``load_instance_module`` resolves the module (the
``overrides.yoke.cd/flight`` annotation wins, fetched afresh) and ``instance_stdin`` the input
(the whole object, or the value at the Airway's ``objectPath``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from atc.k8s.access import ClusterAccess, ClusterGateway, LookupTracker
from atc.k8s.refs import resource_ref, split_api_version
from atc.model.constants import ANNOTATION_INSTANCE_REF, ANNOTATION_OVERRIDE_FLIGHT, MANAGED_BY_ATC
from atc.model.gocompat import go_json
from atc.model.specs import AirwaySpec
from atc.model.types import Object
from atc.release.invocation import FlightDefaults, timeout_seconds
from atc.release.prune import PruneOptions
from atc.release.revisions import release_name
from atc.release.takeoff import TakeoffRequest
from atc.wasm.cache import LoadedModule, ModuleCache


class ObjectPathError(ValueError):
    """``objectPath`` runs through something that is not an object."""

    def __init__(self, path: list[str], walked: list[str]) -> None:
        self.detail = f"value at {'.'.join(walked) or '.'} is not an object"
        super().__init__(f'failed to get object path from: "{",".join(path)}": {self.detail}')


def value_at(obj: Object, path: list[str]) -> Any:
    """The value at ``path`` (None when a key is missing); a non-object on the way is an error."""
    value: Any = obj
    for depth, key in enumerate(path):
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ObjectPathError(path, path[:depth])
        value = value.get(key)
    return value


def instance_stdin(spec: AirwaySpec, instance: Object) -> bytes:
    """The flight's input: the instance, or the value at ``objectPath``, as Go would encode it."""
    return go_json(value_at(instance, spec.object_path) if spec.object_path else instance)


def override_url(instance: Object) -> str:
    annotations = (instance.get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(ANNOTATION_OVERRIDE_FLIGHT, ""))


async def load_instance_module(modules: ModuleCache, spec: AirwaySpec, instance: Object) -> LoadedModule:
    """The flight module for ``instance``: its override annotation's URL (fetched again), else the Airway's.

    The module cache applies the allow-list, the checksum and the signature rules to either.
    """
    override = override_url(instance)
    return await modules.load(
        override or spec.wasm_urls.flight,
        checksum=spec.wasm_urls.flight_checksum,
        insecure=spec.insecure,
        fresh=bool(override),
    )


@dataclass(frozen=True)
class ParentMatcher:
    """Recognises the instance itself among the flight's output (its status is taken, it is not applied)."""

    group: str
    kind: str
    name: str
    namespace: str

    def __call__(self, obj: Object) -> bool:
        group, _ = split_api_version(str(obj.get("apiVersion", "")))
        meta = obj.get("metadata") or {}
        found = (group, obj.get("kind"), meta.get("name"), meta.get("namespace", "") or "")
        return found == (self.group, self.kind, self.name, self.namespace)


ANNOTATION_ALLOW_PRIVILEGED = "atc.yoke.cd/allow-cluster-resources"
NAMESPACED_AIRWAY_REFUSAL = (
    "instances of a namespaced Airway may not create cluster-scoped resources, RBAC, admission webhooks, "
    f'CRDs or Namespaces; annotate the Airway with {ANNOTATION_ALLOW_PRIVILEGED}="true" to allow it'
)


def allows_privileged(obj: Object) -> bool:
    """Whether an Airway or ClusterFlight opted in to privileged output (the annotation, "true")."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(ANNOTATION_ALLOW_PRIVILEGED, "")).lower() == "true"


def instance_refusal(airway: Object, namespaced: bool) -> str:
    """Why an instance may not create privileged resources ("" when it may): only a namespaced Airway's
    instances are held back, unless the Airway opted in. A cluster-scoped Airway's instances are
    created by someone with cluster-wide rights on its CRD."""
    return "" if not namespaced or allows_privileged(airway) else NAMESPACED_AIRWAY_REFUSAL


def instance_takeoff_request(
    airway: Object,
    spec: AirwaySpec,
    instance: Object,
    module: LoadedModule,
    *,
    defaults: FlightDefaults,
    gateway: ClusterGateway | None,
    tracker: LookupTracker | None = None,
    reapply_refs: frozenset[str] = frozenset(),
    dry_run: bool = False,
) -> TakeoffRequest:
    """The takeoff of ``instance`` of ``airway`` (its parsed ``spec``); raises ObjectPathError or DurationError."""
    template = spec.template
    namespaced = template.get("scope", "Namespaced") == "Namespaced"
    meta = instance.get("metadata") or {}
    namespace = str(meta.get("namespace") or "default")
    release = release_name(instance, namespaced=namespaced)
    matchers = tuple(spec.resource_access_matchers)
    owner = {
        "apiVersion": instance.get("apiVersion", ""),
        "kind": instance.get("kind", ""),
        "name": meta.get("name", ""),
        "uid": meta.get("uid", ""),
    }
    parent = ParentMatcher(
        str(template.get("group", "")),
        str((template.get("names") or {}).get("kind", "")),
        str(meta.get("name", "")),
        str(meta.get("namespace", "") or ""),
    )
    return TakeoffRequest(
        release=release,
        namespace=namespace,
        module=module,
        source_url=spec.wasm_urls.flight,
        stdin=instance_stdin(spec, instance),
        timeout=timeout_seconds(spec.timeout),
        max_memory_mib=defaults.memory_for(spec.max_memory_mib),
        stdout_limit=defaults.stdout_limit,
        yoke_version=defaults.yoke_version,
        access=ClusterAccess(spec.cluster_access, release, namespace, matchers, gateway, tracker or LookupTracker()),
        managed_by=MANAGED_BY_ATC,
        extra_annotations={ANNOTATION_INSTANCE_REF: resource_ref(instance)},
        owner_references=[owner],
        cross_namespace=not namespaced,
        history_cap=spec.history_cap,
        prune=PruneOptions(spec.prune.crds, spec.prune.namespaces),
        is_parent=parent,
        reapply_unchanged=spec.fix_drift_seconds > 0,
        reapply_refs=reapply_refs,
        dry_run=dry_run,
        privileged_refused=instance_refusal(airway, namespaced),
    )
