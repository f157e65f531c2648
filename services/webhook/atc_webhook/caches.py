"""The webhook's watch-backed read caches: admission answers from memory, no API call (docs/webhook.md).

``WebhookCaches.run()`` keeps, from list + watch (``atc.k8s.reflector``):
- **Airways**, by name and by the GroupKind (``Kind.group``) of their template;
- **instances**: the metadata (``PartialObjectMetadata``) of every object of every Airway's CRD at its
  storage version, one reflector per Airway, started, restarted and stopped as Airways come, change
  and go. An instance's effective mode is its valid ``overrides.yoke.cd/mode`` annotation, else the
  Airway's ``spec.mode``, else ``standard`` (only name, namespace, uid, resourceVersion and that
  annotation are kept: ``slim_instance``);
- **Flights and ClusterFlights**: the same metadata, from one metadata-only reflector each. A Flight's
  mode is its valid ``overrides.yoke.cd/mode`` annotation, else ``standard``; ``instance`` resolves
  ``<ns>/Flight.yoke.cd:<name>`` and ``/ClusterFlight.yoke.cd:<name>`` like an instance ref, with the
  kind's identity (``FLIGHT_KINDS``) in place of an Airway's;
- **revision Secrets** (label ``internal.yoke/kind=revision``), indexed by namespace and release label,
  kept as identity, release label, the two time stamps and the resources (``slim_revision``), decoded
  lazily and memoized per resourceVersion, so ``active_stages`` and ``desired_object`` are
  dictionary lookups after the first request.

``synced()`` is the readiness condition: every cache listed once (an Airway whose CRD is not served
yet counts as synced with no instances, and its reflector retries every few seconds; an Airway update,
such as the controller marking it Ready, retries at once; the same holds for Airways before the
controller installed their CRD, and for Flights and ClusterFlights; an Airway whose instances the
webhook's RBAC may not list counts as synced too, as do Flights the RBAC may not list, and their
reflectors keep retrying and logging the 403). The routers read the caches through ``airway``,
``instance`` and ``desired_object`` before they decide.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from dataclasses import dataclass, field

from atc.k8s.client import KubeClient, KubeError
from atc.k8s.crds import AIRWAYS_PATH, VERSION
from atc.k8s.reflector import EventType, Reflector
from atc.k8s.refs import group_kind, parse_ref
from atc.model.airway_template import storage_version
from atc.model.constants import ANNOTATION_OVERRIDE_MODE, API_GROUP
from atc.model.specs import Mode, effective_mode
from atc.model.types import Object
from atc.release.revisions import (
    ANNOTATION_ACTIVE_AT,
    ANNOTATION_CREATED_AT,
    KEY_RESOURCES,
    KIND_REVISION,
    LABEL_KIND,
    LABEL_RELEASE,
    ReleaseError,
    Stages,
    decode_stages,
    flight_release_prefix,
    parse_rfc3339,
    release_namespace,
    sha1_hex,
)

log = logging.getLogger("atc.webhook.caches")

SECRETS_PATH = "/api/v1/secrets"
REVISION_SELECTOR = f"{LABEL_KIND}={KIND_REVISION}"
CRD_RETRY_MAX_SECONDS = 5.0  # retry cap of reflectors whose resource may not be served yet (Airways, instances)
SYNC_POLL_SECONDS = 0.05
UNLISTABLE = frozenset({403, 404})  # forbidden, not found: the reflector retries, readiness does not wait


def _metadata(obj: Object) -> Object:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


# ----------------------------------------------------------------------------------------------- airways
@dataclass(frozen=True)
class AirwayInfo:
    """What admission needs from an Airway: its CRD's identity at the storage version, and its mode.

    ``FLIGHT_KINDS`` holds the same identity for Flight and ClusterFlight (mode ``standard``: a Flight
    has no Airway, only its own annotation).
    """

    name: str
    group: str
    kind: str
    plural: str
    version: str
    namespaced: bool
    mode: str

    @property
    def group_kind(self) -> str:
        return group_kind(self.group, self.kind)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    @property
    def collection_path(self) -> str:
        """Every instance, in all namespaces."""
        return f"/apis/{self.group}/{self.version}/{self.plural}"

    @classmethod
    def from_object(cls, airway: Object) -> AirwayInfo | None:
        """None when the Airway's template does not name a group, kind, plural and storage version."""
        spec = airway.get("spec") if isinstance(airway.get("spec"), dict) else {}
        template = (spec or {}).get("template")
        if not isinstance(template, dict):
            return None
        names = template.get("names") if isinstance(template.get("names"), dict) else {}
        info = cls(
            name=str(_metadata(airway).get("name", "")),
            group=str(template.get("group", "")),
            kind=str((names or {}).get("kind", "")),
            plural=str((names or {}).get("plural", "")),
            version=storage_version(template),
            namespaced=template.get("scope", "Namespaced") != "Cluster",
            mode=str((spec or {}).get("mode") or "standard"),
        )
        return info if info.group and info.kind and info.plural and info.version else None


FLIGHT_KINDS: dict[str, AirwayInfo] = {
    info.group_kind: info
    for info in (
        AirwayInfo(f"flights.{API_GROUP}", API_GROUP, "Flight", "flights", VERSION, True, "standard"),
        AirwayInfo(
            f"clusterflights.{API_GROUP}", API_GROUP, "ClusterFlight", "clusterflights", VERSION, False, "standard"
        ),
    )
}


@dataclass(frozen=True)
class InstanceInfo:
    """A cached instance of an Airway's CRD, or a Flight or ClusterFlight, with its effective mode."""

    airway: AirwayInfo
    namespace: str
    name: str
    uid: str
    mode: Mode

    @property
    def is_flight(self) -> bool:
        return FLIGHT_KINDS.get(self.airway.group_kind) == self.airway

    @property
    def history(self) -> tuple[str, str] | None:
        """(release, namespace) its revisions are stored under, when its children's annotations do not say it.

        A Flight's children carry the bare name in ``instance.atc.yoke.cd/release`` while its history is
        ``<namespace>/<Kind>.yoke.cd:<name>`` (``atc.release.flight_request.flight_release``); an
        instance's children carry the history name itself (None).
        """
        if not self.is_flight:
            return None
        release = flight_release_prefix(self.airway.kind, self.namespace) + self.name
        return release, release_namespace(self.namespace)


def _settled(reflector: Reflector) -> bool:
    """Listed once, or nothing to wait for: the resource is not served (yet; no CRD means no objects) or
    the webhook's RBAC does not cover it (an Airway outside ``controller.rbac.airwayGroups``; waiting
    would keep every restarted webhook unready, an admission outage caused by one Airway)."""
    error = reflector.last_error
    return reflector.synced.is_set() or (isinstance(error, KubeError) and error.status in UNLISTABLE)


@dataclass
class _InstanceWatch:
    airway: AirwayInfo
    reflector: Reflector
    task: asyncio.Task[None]

    def same_collection(self, airway: AirwayInfo) -> bool:
        return self.airway.collection_path == airway.collection_path

    def stop(self) -> None:
        self.reflector.stop()
        self.task.cancel()


# ----------------------------------------------------------------------------------------------- slimming
def slim_instance(obj: Object) -> Object:
    """What the instance cache keeps: identity, uid and the mode override (``instance``)."""
    meta = _metadata(obj)
    override = (meta.get("annotations") or {}).get(ANNOTATION_OVERRIDE_MODE)
    kept: Object = {key: meta[key] for key in ("name", "namespace", "uid", "resourceVersion") if key in meta}
    kept["annotations"] = {ANNOTATION_OVERRIDE_MODE: override} if override is not None else {}
    return {"metadata": kept}


def slim_revision(secret: Object) -> Object:
    """What the revision cache keeps of a Secret: identity, release label, the two stamps, the resources."""
    meta = _metadata(secret)
    annotations = meta.get("annotations") or {}
    kept: Object = {key: meta[key] for key in ("name", "namespace", "resourceVersion") if key in meta}
    kept["labels"] = {LABEL_RELEASE: (meta.get("labels") or {}).get(LABEL_RELEASE, "")}
    kept["annotations"] = {
        key: annotations[key] for key in (ANNOTATION_CREATED_AT, ANNOTATION_ACTIVE_AT) if key in annotations
    }
    return {"metadata": kept, "data": {KEY_RESOURCES: (secret.get("data") or {}).get(KEY_RESOURCES, "")}}


# ----------------------------------------------------------------------------------------------- revisions
@dataclass
class CachedRevision:
    """One revision Secret; its stages are decoded on first use."""

    name: str
    resource_version: str
    created_nanos: int
    active_nanos: int
    encoded: str
    _stages: Stages | None = None
    _desired: dict[tuple[str, str, str], Object] = field(default_factory=dict)

    @classmethod
    def from_secret(cls, secret: Object) -> CachedRevision:
        meta = _metadata(secret)
        annotations = meta.get("annotations") or {}
        _, created = parse_rfc3339(str(annotations.get(ANNOTATION_CREATED_AT, "")))
        _, active = parse_rfc3339(str(annotations.get(ANNOTATION_ACTIVE_AT, "")))
        encoded = str((secret.get("data") or {}).get(KEY_RESOURCES, ""))
        return cls(str(meta.get("name", "")), str(meta.get("resourceVersion", "")), created, active, encoded)

    def stages(self) -> Stages:
        """The revision's stages (empty when the data cannot be decoded; that is logged once)."""
        if self._stages is None:
            try:
                self._stages = decode_stages(base64.b64decode(self.encoded, validate=True))
            except (binascii.Error, ReleaseError) as exc:
                log.warning("undecodable revision", extra={"secret": self.name, "error": str(exc)})
                self._stages = []
            self._index()
        return self._stages

    def _index(self) -> None:
        for stage in self._stages or []:
            for obj in stage:
                key = (str(obj.get("apiVersion", "")), str(obj.get("kind", "")), str(_metadata(obj).get("name", "")))
                self._desired.setdefault(key, obj)

    def desired(self, api_version: str, kind: str, name: str) -> Object | None:
        """The first object of the revision with this apiVersion, kind and name (any namespace)."""
        self.stages()
        return self._desired.get((api_version, kind, name))


class RevisionCache:
    """Revision Secrets by ``(namespace, release label)`` then name, fed by a reflector's events."""

    def __init__(self) -> None:
        self._releases: dict[tuple[str, str], dict[str, CachedRevision]] = {}
        self._labels: dict[tuple[str, str], str] = {}  # (namespace, name) -> release label it is indexed under

    def __len__(self) -> int:
        return len(self._labels)

    def on_event(self, event_type: EventType, secret: Object, old: Object | None) -> None:
        meta = _metadata(secret)
        namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        previous = self._remove(namespace, name)
        if event_type == "DELETED":
            return
        version = str(meta.get("resourceVersion", ""))
        same = previous is not None and previous.resource_version == version
        revision = previous if same and previous is not None else CachedRevision.from_secret(secret)
        label = str((meta.get("labels") or {}).get(LABEL_RELEASE, ""))
        self._releases.setdefault((namespace, label), {})[name] = revision
        self._labels[(namespace, name)] = label

    def _remove(self, namespace: str, name: str) -> CachedRevision | None:
        label = self._labels.pop((namespace, name), None)
        if label is None:
            return None
        revisions = self._releases[(namespace, label)]
        removed = revisions.pop(name, None)
        if not revisions:
            del self._releases[(namespace, label)]
        return removed

    def active(self, release: str, namespace: str) -> CachedRevision | None:
        """The release's active revision: the latest active-at (the earliest created among equals)."""
        candidates = [
            *self._releases.get((namespace, sha1_hex(release)), {}).values(),
            *self._releases.get((namespace, release), {}).values(),  # legacy label: the raw release name
        ]
        if not candidates:
            return None
        return max(candidates, key=lambda revision: (revision.active_nanos, -revision.created_nanos))


# ----------------------------------------------------------------------------------------------- caches
class WebhookCaches:
    """Airways, their instances' metadata and the revision Secrets, from watches."""

    def __init__(self, kube: KubeClient, *, crd_retry_max_seconds: float = CRD_RETRY_MAX_SECONDS) -> None:
        self._kube = kube
        self._crd_retry_max = crd_retry_max_seconds
        self._airways: dict[str, AirwayInfo] = {}
        self._by_group_kind: dict[str, str] = {}
        self._instances: dict[str, _InstanceWatch] = {}
        self._stopping: set[asyncio.Task[None]] = set()
        self._synced = False
        self.revisions = RevisionCache()
        self._airway_reflector = Reflector(
            kube, AIRWAYS_PATH, name="airways", handler=self._on_airway, retry_max_seconds=crd_retry_max_seconds
        )
        self._flight_reflectors = {
            group_kind_text: Reflector(
                kube,
                info.collection_path,
                name=info.plural,
                handler=_ignore,
                metadata_only=True,
                transform=slim_instance,
                retry_max_seconds=crd_retry_max_seconds,
            )
            for group_kind_text, info in FLIGHT_KINDS.items()
        }
        self._revision_reflector = Reflector(
            kube,
            SECRETS_PATH,
            name="revisions",
            label_selector=REVISION_SELECTOR,
            handler=self.revisions.on_event,
            transform=slim_revision,
        )

    # --- reading ----------------------------------------------------------------------------------------------

    def synced(self) -> bool:
        """Whether every cache has listed once since the start (readiness; stays true once reached).

        An Airway added later does not make the service unready while its instances are first listed.
        """
        if not self._synced:
            self._synced = (
                _settled(self._airway_reflector)
                and self._revision_reflector.synced.is_set()
                and all(_settled(reflector) for reflector in self._flight_reflectors.values())
                and all(_settled(watch.reflector) for watch in self._instances.values())
            )
        return self._synced

    async def wait_synced(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for ``synced()``; returns it."""
        deadline = time.monotonic() + timeout
        # synced() spans several reflectors and their error states; only requests right after a start poll it
        while not self.synced() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(SYNC_POLL_SECONDS)
        return self.synced()

    def airway(self, name: str) -> Object | None:
        """The full Airway object named ``name``, as last seen."""
        return self._airway_reflector.get("", name)

    def airway_for(self, group_kind_text: str) -> AirwayInfo | None:
        """The Airway whose CRD has this GroupKind (``Kind.group``)."""
        name = self._by_group_kind.get(group_kind_text)
        return self._airways.get(name) if name is not None else None

    def instance(self, ref: str) -> InstanceInfo | None:
        """The instance a resource ref (``<ns>/<Kind.group>:<name>``) names, if its Airway and it are cached.

        A Flight or ClusterFlight ref (``resource_ref`` of the Flight) is resolved from the Flight caches;
        its mode is its own annotation, else ``standard``.
        """
        parsed = parse_ref(ref)
        flights = self._flight_reflectors.get(parsed.group_kind)
        if flights is not None:
            return self._flight(parsed.group_kind, flights.get(parsed.namespace, parsed.name))
        airway = self.airway_for(parsed.group_kind)
        watch = self._instances.get(airway.name) if airway is not None else None
        if airway is None or watch is None:
            return None
        obj = watch.reflector.get(parsed.namespace, parsed.name)
        if obj is None:
            return None
        meta = _metadata(obj)
        mode = effective_mode(meta.get("annotations") or {}, airway.mode)
        return InstanceInfo(airway, parsed.namespace, parsed.name, str(meta.get("uid", "")), mode)

    @staticmethod
    def _flight(group_kind_text: str, obj: Object | None) -> InstanceInfo | None:
        if obj is None:
            return None
        info = FLIGHT_KINDS[group_kind_text]
        meta = _metadata(obj)
        mode = effective_mode(meta.get("annotations") or {}, info.mode)
        namespace = str(meta.get("namespace") or "") if info.namespaced else ""
        return InstanceInfo(info, namespace, str(meta.get("name", "")), str(meta.get("uid", "")), mode)

    def desired_object(self, release: str, namespace: str, api_version: str, kind: str, name: str) -> Object | None:
        """The object with this apiVersion, kind and name in the release's active revision."""
        revision = self.revisions.active(release, namespace)
        return revision.desired(api_version, kind, name) if revision is not None else None

    def active_stages(self, release: str, namespace: str) -> Stages | None:
        """The stages of the release's active revision, None when it has no revision."""
        revision = self.revisions.active(release, namespace)
        return revision.stages() if revision is not None else None

    def sizes(self) -> dict[str, int]:
        instances = sum(len(watch.reflector) for watch in self._instances.values())
        flights = sum(len(reflector) for reflector in self._flight_reflectors.values())
        return {
            "airways": len(self._airways),
            "instances": instances,
            "flights": flights,
            "revisions": len(self.revisions),
        }

    # --- airways and their instance reflectors ------------------------------------------------------------------

    def _on_airway(self, event_type: EventType, airway: Object, old: Object | None) -> None:
        name = str(_metadata(airway).get("name", ""))
        previous = self._airways.pop(name, None)
        if previous is not None and self._by_group_kind.get(previous.group_kind) == name:
            del self._by_group_kind[previous.group_kind]
        info = AirwayInfo.from_object(airway) if event_type != "DELETED" else None
        if info is None:
            self._stop_instances(name)
            return
        self._airways[name] = info
        self._by_group_kind[info.group_kind] = name
        self._follow_instances(info)

    def _follow_instances(self, airway: AirwayInfo) -> None:
        watch = self._instances.get(airway.name)
        if watch is not None and watch.same_collection(airway):
            watch.airway = airway
            if watch.reflector.synced.is_set() or watch.reflector.last_error is None:
                return
            # not listed yet and failing (e.g. the CRD was not served): try again now rather than after backoff
        self._stop_instances(airway.name)
        reflector = Reflector(
            self._kube,
            airway.collection_path,
            name=f"instances:{airway.name}",
            handler=_ignore,
            metadata_only=True,
            transform=slim_instance,
            retry_max_seconds=self._crd_retry_max,
        )
        task = asyncio.create_task(reflector.run(), name=f"reflector instances:{airway.name}")
        self._instances[airway.name] = _InstanceWatch(airway, reflector, task)

    def _stop_instances(self, airway_name: str) -> None:
        watch = self._instances.pop(airway_name, None)
        if watch is None:
            return
        watch.stop()
        self._stopping.add(watch.task)
        watch.task.add_done_callback(self._stopping.discard)

    # --- running ----------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run every reflector until cancelled."""
        tasks = [
            asyncio.create_task(self._airway_reflector.run(), name="reflector airways"),
            asyncio.create_task(self._revision_reflector.run(), name="reflector revisions"),
            *(
                asyncio.create_task(reflector.run(), name=f"reflector {reflector.name}")
                for reflector in self._flight_reflectors.values()
            ),
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            for name in list(self._instances):
                self._stop_instances(name)
            await asyncio.gather(*tasks, *self._stopping, return_exceptions=True)


def _ignore(event_type: EventType, obj: Object, old: Object | None) -> None:
    """Instance and Flight reflectors only keep the cache; nothing reacts to their events."""
