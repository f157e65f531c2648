"""The takeoff of a Flight or ClusterFlight object: its release names and ``TakeoffRequest``.

A Flight's history is stored under ``"<namespace>/<Kind>.yoke.cd:<name>"`` while the flight
itself, and ownership, see the bare name (docs/compatibility.md, "The same as yoke").
``flight_takeoff_request`` builds the request from the object and its parsed spec. Callers: the
controller's Flight reconciler (a real takeoff) and the webhook's ``/validations/flights.yoke.cd``
(``dry_run=True``), so both run the flight the same way.
"""

from __future__ import annotations

from atc.k8s.access import ClusterAccess, ClusterGateway, LookupTracker
from atc.k8s.refs import resource_ref
from atc.model.constants import ANNOTATION_INSTANCE_REF, MANAGED_BY_ATC
from atc.model.specs import FlightSpec, Mode
from atc.model.types import Object
from atc.release.instance_request import allows_privileged
from atc.release.invocation import FlightDefaults
from atc.release.prune import PruneOptions
from atc.release.revisions import flight_release_prefix
from atc.release.takeoff import TakeoffRequest
from atc.wasm.cache import LoadedModule


def flight_release(flight: Object, kind: str) -> tuple[str, str, str]:
    """(history name, bare name, release namespace) of a Flight (``kind`` Flight or ClusterFlight)."""
    meta = flight.get("metadata") or {}
    name, namespace = str(meta.get("name", "")), str(meta.get("namespace") or "")
    return flight_release_prefix(kind, namespace) + name, name, namespace or "default"


FLIGHT_REFUSAL = (
    "a Flight may not create cluster-scoped resources, RBAC, admission webhooks, CRDs or Namespaces; "
    'use a ClusterFlight annotated atc.yoke.cd/allow-cluster-resources="true"'
)
CLUSTER_FLIGHT_REFUSAL = (
    "this ClusterFlight may not create cluster-scoped resources, RBAC, admission webhooks, CRDs or "
    'Namespaces; annotate it with atc.yoke.cd/allow-cluster-resources="true" to allow it'
)


def flight_refusal(flight: Object, kind: str) -> str:
    """Why a Flight or ClusterFlight may not create privileged resources ("" when it may).

    A Flight is namespaced: whoever may create one in a namespace never may. A ClusterFlight may
    when it says so (its author has cluster-wide rights on ClusterFlights).
    """
    if kind != "ClusterFlight":
        return FLIGHT_REFUSAL
    return "" if allows_privileged(flight) else CLUSTER_FLIGHT_REFUSAL


def flight_takeoff_request(
    flight: Object,
    kind: str,
    spec: FlightSpec,
    module: LoadedModule,
    *,
    timeout: float | None,
    defaults: FlightDefaults,
    gateway: ClusterGateway | None,
    dry_run: bool = False,
    tracker: LookupTracker | None = None,
    mode: Mode = "standard",
    reapply_refs: frozenset[str] = frozenset(),
) -> TakeoffRequest:
    """The takeoff of ``flight`` with ``module``; ``timeout`` is ``timeout_seconds(spec.timeout)``.

    In a mode other than ``standard`` the children carry the Flight's ``instanceRef`` annotation, as
    an instance's children do, so the modes find the Flight from a child (docs/flight-modes.md).
    """
    release, bare, namespace = flight_release(flight, kind)
    meta = flight.get("metadata") or {}
    owner = {"apiVersion": flight.get("apiVersion", ""), "kind": kind, "name": bare, "uid": meta.get("uid", "")}
    return TakeoffRequest(
        release=release,
        flight_release=bare,
        namespace=namespace,
        module=module,
        source_url=spec.wasm_url,
        stdin=spec.stdin(),
        args=tuple(spec.args),
        timeout=timeout,
        max_memory_mib=defaults.memory_for(spec.max_memory_mib),
        stdout_limit=defaults.stdout_limit,
        yoke_version=defaults.yoke_version,
        access=ClusterAccess(
            spec.cluster_access,
            bare,
            namespace,
            tuple(spec.resource_access_matchers),
            gateway,
            tracker or LookupTracker(),
        ),
        managed_by=MANAGED_BY_ATC,
        extra_annotations={} if mode == "standard" else {ANNOTATION_INSTANCE_REF: resource_ref(flight)},
        owner_references=[owner],
        cross_namespace=kind == "ClusterFlight",
        history_cap=spec.history_cap,
        prune=PruneOptions(spec.prune.crds, spec.prune.namespaces),
        reapply_unchanged=spec.fix_drift_seconds > 0,
        dry_run=dry_run,
        reapply_refs=reapply_refs,
        privileged_refused=flight_refusal(flight, kind),
    )
