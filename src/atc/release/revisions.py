"""yoke's release names and revision history, readable by the ``yoke`` CLI.

A release is the set of revision Secrets in one namespace labelled with the sha1 of the release name.
This module names releases the way yoke's ATC does, lists, reads, creates, caps and deletes their
revisions in yoke's exact format (labels, annotations, RFC3339Nano timestamps, gzip of compact Go
JSON), migrates legacy revisions labelled with the raw release name, and decides digest pinning.
The names are in docs/compatibility.md, "The same as yoke"; pinning in docs/flight-runtime.md,
"From URL to running module".
The instance and Flight reconcilers call it for takeoff, pruning and mayday; the webhook reads
active revisions through it; the interop tests check the ``yoke`` binary reads what it writes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import gzip
import hashlib
import json
import re
import secrets
import time
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import unquote, urlsplit

from atc.k8s.client import JSON_PATCH, MERGE_PATCH, KubeClient, KubeError
from atc.model.constants import API_GROUP, FIELD_MANAGER_APPLY
from atc.model.gocompat import go_json, join_errors

LABEL_KIND = "internal.yoke/kind"
LABEL_RELEASE = "internal.yoke/release"
KIND_REVISION = "revision"
ANNOTATION_SOURCE_URL = "internal.yoke/source-url"
ANNOTATION_SOURCE_CHECKSUM = "internal.yoke/source-checksum"
ANNOTATION_CREATED_AT = "internal.yoke/created-at"
ANNOTATION_ACTIVE_AT = "internal.yoke/active-at"
# Ours, not yoke's: a revision written before its resources are applied, activated (this annotation
# removed, active-at stamped) once they are. A crash in between leaves it behind, and the next takeoff
# prunes what only it had. yoke's CLI ignores the annotation.
ANNOTATION_PENDING = "atc.yoke.cd/pending"
ANNOTATION_RESOURCE_COUNT = "internal.yoke/resources"
ANNOTATION_RELEASE_NAME = "internal.yoke/release-name"
KEY_RESOURCES = "resources"
SECRET_PREFIX = "yoke."
DEFAULT_RELEASE_NAMESPACE = "default"

Stages = list[list[dict[str, Any]]]

_METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
_GZIP_MAGIC = b"\x1f\x8b"
_GO_DEFAULT_COMPRESSION = 6  # gzip.DefaultCompression in Go is zlib level 6
_CREATE_ATTEMPTS = 3  # a random 48-bit name collides only by bad luck; retry it then
_NANOS = 1_000_000_000
_GO_ZERO_TIME_NANOS = -62_135_596_800 * _NANOS  # time.Time{} (0001-01-01T00:00:00Z) as Unix nanoseconds
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:[.,](\d+))?(Z|[+-]\d{2}:\d{2})",
)
_LABEL_VALUE = re.compile(r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
_LABEL_VALUE_MAX = 63
_SEMVER_NUM = r"(?:0|[1-9][0-9]*)"
_PRERELEASE_ID = r"(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
_SEMVER = re.compile(
    rf"v{_SEMVER_NUM}(?:\.{_SEMVER_NUM}(?:\.{_SEMVER_NUM}"
    rf"(?:-{_PRERELEASE_ID}(?:\.{_PRERELEASE_ID})*)?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?)?)?"
)
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_GO_QUOTE_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


class ReleaseError(KubeError):
    """A release operation failed: ``status`` is the API server's when a call failed, 0 for bad revision data.

    It is a ``KubeError`` so callers handle every failure of this module like any failed API call;
    API errors that need no more context (create, read) propagate as the plain ``KubeError``.
    """

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(status, message)


# --- names -------------------------------------------------------------------------------------


def sha1_hex(text: str) -> str:
    """Lowercase hex sha1 of a string's UTF-8 bytes (yoke's ``SHA1HexFromString``)."""
    return hashlib.sha1(text.encode()).hexdigest()


def release_name(instance: dict[str, Any], *, namespaced: bool) -> str:
    """``<group>.<Kind>.<namespace>.<name>`` (namespaced CR) or ``<group>.<Kind>.<name>`` (cluster-scoped)."""
    group, _, _version = str(instance.get("apiVersion", "")).rpartition("/")
    metadata = instance.get("metadata") or {}
    parts = [group, str(instance.get("kind", ""))]
    if namespaced:
        namespace = str(metadata.get("namespace") or "")
        if not namespace:
            raise ValueError(f"namespaced {parts[1]} {metadata.get('name')!r} has no metadata.namespace")
        parts.append(namespace)
    parts.append(str(metadata.get("name", "")))
    return ".".join(parts)


def release_namespace(instance_namespace: str) -> str:
    """Where an instance's revisions live: its namespace, ``default`` for cluster-scoped instances."""
    return instance_namespace or DEFAULT_RELEASE_NAMESPACE


def flight_release_prefix(kind: str, namespace: str) -> str:
    """History prefix of a Flight or ClusterFlight release: ``"<namespace>/<Kind>.yoke.cd:"``."""
    return f"{namespace}/{kind}.{API_GROUP}:"


def is_valid_label_value(value: str) -> bool:
    """Whether Kubernetes accepts ``value`` as a label value (so a legacy raw-name label can exist)."""
    return len(value) <= _LABEL_VALUE_MAX and _LABEL_VALUE.fullmatch(value) is not None


# --- Go time -----------------------------------------------------------------------------------


def unix_nanos(when: datetime) -> int:
    """Unix nanoseconds of a timezone-aware datetime (the inverse of ``parse_rfc3339``'s first value)."""
    if when.tzinfo is None:
        raise ValueError("datetime must be timezone-aware")
    return (when - _EPOCH) // timedelta(microseconds=1) * 1000


def format_rfc3339_nano(epoch_nanos: int) -> str:
    """Go's ``Format(time.RFC3339Nano)`` in UTC: fraction without trailing zeros, no dot if it is zero."""
    seconds, nanos = divmod(epoch_nanos, _NANOS)
    stamp = (_EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{nanos:09d}".rstrip("0")
    return f"{stamp}.{fraction}Z" if fraction else f"{stamp}Z"


def parse_rfc3339(text: str) -> tuple[datetime, int]:
    """Go's ``time.Parse(time.RFC3339, text)``: the instant (microseconds) and exact Unix nanoseconds.

    Text Go rejects (where yoke's CLI would panic) yields Go's zero time instead, so one bad
    annotation cannot stop the controller.
    """
    match = _RFC3339.fullmatch(text)
    if match is None:
        return _go_zero_time()
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    fraction, zone = match.group(7) or "", match.group(8)
    try:
        whole = datetime(year, month, day, hour, minute, second, tzinfo=_zone(zone))
    except ValueError:
        return _go_zero_time()
    nanos = int(fraction[:9].ljust(9, "0")) if fraction else 0
    unix = (whole - _EPOCH) // timedelta(seconds=1) * _NANOS + nanos
    return whole + timedelta(microseconds=nanos // 1000), unix


def _go_zero_time() -> tuple[datetime, int]:
    return datetime(1, 1, 1, tzinfo=UTC), _GO_ZERO_TIME_NANOS


def _zone(text: str) -> timezone:
    if text == "Z":
        return UTC
    hours, minutes = int(text[1:3]), int(text[4:6])
    if hours > 23 or minutes > 59:
        raise ValueError(f"bad time zone offset {text}")
    offset = timedelta(hours=hours, minutes=minutes)
    return timezone(-offset if text[0] == "-" else offset)


# --- revisions and releases --------------------------------------------------------------------


@dataclass(frozen=True)
class Revision:
    """One revision Secret's metadata (its resources are read separately with ``read_stages``)."""

    name: str
    namespace: str
    release: str
    created_at: datetime
    active_at: datetime
    resources: int
    source_url: str
    source_checksum: str
    created_at_text: str = ""  # the annotation as stored (nanoseconds, original zone)
    active_at_text: str = ""
    created_at_nanos: int = 0  # exact Unix nanoseconds, used for ordering
    active_at_nanos: int = 0
    pending: bool = False  # written before its resources were applied, not activated yet
    resource_version: str = ""  # of the Secret, as listed or written


@dataclass(frozen=True)
class Release:
    """A release's revisions in one namespace, oldest first (by created-at, as yoke orders them)."""

    name: str
    namespace: str
    history: list[Revision] = field(default_factory=list)

    @property
    def active_index(self) -> int:
        """Index of the active revision (the first with the latest active-at among those not pending).

        0 for a history without such a revision.
        """
        best = None
        for index, revision in enumerate(self.history):
            if revision.pending:
                continue
            if best is None or revision.active_at_nanos > self.history[best].active_at_nanos:
                best = index
        return best or 0

    @property
    def active(self) -> Revision | None:
        """The active revision (max active-at, pending ones aside), or None when there is none."""
        settled = [revision for revision in self.history if not revision.pending]
        return self.history[self.active_index] if settled else None

    @property
    def pending(self) -> list[Revision]:
        """Revisions written for a takeoff that did not finish (a crash between writing and activating)."""
        return [revision for revision in self.history if revision.pending]

    @property
    def settled(self) -> list[Revision]:
        return [revision for revision in self.history if not revision.pending]


def ordered_by_creation(revisions: list[Revision]) -> list[Revision]:
    """Sort by created-at like yoke: ``Release.Add`` inserts before equal stamps, then a stable sort."""
    last_listed_first = list(reversed(revisions))  # so stamps that tie keep Add's order
    return sorted(last_listed_first, key=lambda revision: revision.created_at_nanos)


def revision_from_metadata(metadata: dict[str, Any], namespace: str, release: str) -> Revision:
    """A ``Revision`` from a revision Secret's metadata (annotations parsed as yoke's CLI parses them)."""
    annotations: dict[str, str] = metadata.get("annotations") or {}
    created, created_nanos = parse_rfc3339(annotations.get(ANNOTATION_CREATED_AT, ""))
    active, active_nanos = parse_rfc3339(annotations.get(ANNOTATION_ACTIVE_AT, ""))
    return Revision(
        name=str(metadata.get("name", "")),
        namespace=namespace,
        release=release,
        created_at=created,
        active_at=active,
        resources=_go_atoi(annotations.get(ANNOTATION_RESOURCE_COUNT, "")),
        source_url=annotations.get(ANNOTATION_SOURCE_URL, ""),
        source_checksum=annotations.get(ANNOTATION_SOURCE_CHECKSUM, ""),
        created_at_text=annotations.get(ANNOTATION_CREATED_AT, ""),
        active_at_text=annotations.get(ANNOTATION_ACTIVE_AT, ""),
        created_at_nanos=created_nanos,
        active_at_nanos=active_nanos,
        pending=ANNOTATION_PENDING in annotations,
        resource_version=str(metadata.get("resourceVersion", "")),
    )


def _go_atoi(text: str) -> int:
    """``strconv.Atoi`` with errors ignored (yoke's ``MustParseInt``): anything invalid is 0."""
    return int(text) if re.fullmatch(r"[+-]?[0-9]+", text) else 0


# --- reading -----------------------------------------------------------------------------------


def _secrets_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/secrets"


async def _list_secret_metadata(kube: KubeClient, namespace: str, selector: str) -> list[dict[str, Any]]:
    """Metadata of the Secrets matching ``selector`` (a PartialObjectMetadataList, data left out)."""
    answer = await kube.request(
        "GET", _secrets_path(namespace), query={"labelSelector": selector}, accept=_METADATA_ONLY
    )
    return [item.get("metadata") or {} for item in answer.get("items") or []]


def _json_pointer_token(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _migration_patch(metadata: dict[str, Any], release: str) -> list[dict[str, Any]]:
    """JSON patch turning a legacy revision (raw-name label) into the sha1-labelled format."""
    label = str((metadata.get("labels") or {}).get(LABEL_RELEASE, ""))
    patch: list[dict[str, Any]] = [
        {"op": "replace", "path": f"/metadata/labels/{_json_pointer_token(LABEL_RELEASE)}", "value": sha1_hex(label)}
    ]
    if metadata.get("annotations") is None:
        patch.append({"op": "add", "path": "/metadata/annotations", "value": {ANNOTATION_RELEASE_NAME: release}})
    else:
        path = f"/metadata/annotations/{_json_pointer_token(ANNOTATION_RELEASE_NAME)}"
        patch.append({"op": "add", "path": path, "value": release})
    return patch


async def migrate_legacy(
    kube: KubeClient, namespace: str, release: str, legacy: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Relabel revisions of older yoke versions (label = raw release name); return their new metadata."""
    migrated = []
    for metadata in legacy:
        name = str(metadata.get("name", ""))
        try:
            patched = await kube.request(
                "PATCH",
                f"{_secrets_path(namespace)}/{name}",
                query={"fieldManager": FIELD_MANAGER_APPLY},
                body=_migration_patch(metadata, release),
                content_type=JSON_PATCH,
            )
        except KubeError as exc:
            raise ReleaseError(f"failed to patch revision: {exc}", exc.status) from exc
        migrated.append(patched.get("metadata") or {})
    return migrated


def _release_selector(release: str) -> str:
    """One selector for the release's revisions and its legacy ones (label = raw name), so one LIST finds both."""
    hashed = sha1_hex(release)
    if not is_valid_label_value(release) or release == hashed:
        return f"{LABEL_RELEASE}={hashed}"
    return f"{LABEL_RELEASE} in ({hashed},{release})"


async def list_release(kube: KubeClient, release: str, namespace: str) -> Release:
    """The release's revisions in ``namespace`` (migrating legacy ones), oldest first: one LIST."""
    selector = _release_selector(release)
    try:
        items = await _list_secret_metadata(kube, namespace, selector)
    except KubeError as exc:
        raise ReleaseError(f"failed to list revision items for selector: {selector}: {exc}", exc.status) from exc
    hashed = sha1_hex(release)
    current = [metadata for metadata in items if (metadata.get("labels") or {}).get(LABEL_RELEASE) == hashed]
    legacy = [metadata for metadata in items if (metadata.get("labels") or {}).get(LABEL_RELEASE) != hashed]
    current += await migrate_legacy(kube, namespace, release, legacy)
    revisions = [revision_from_metadata(metadata, namespace, release) for metadata in current]
    return Release(name=release, namespace=namespace, history=ordered_by_creation(revisions))


def decode_stages(raw: bytes) -> Stages:
    """Revision data to stages: gzip of JSON, or plain JSON as older yoke versions stored it."""
    if raw.startswith(_GZIP_MAGIC):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise ReleaseError(f"failed to read secret data: {exc}") from exc
    try:
        decoded = json.loads(raw) if raw.strip() else None
    except ValueError as exc:
        raise ReleaseError(f"revision resources are not JSON: {exc}") from exc
    return _checked_stages(decoded)


def _checked_stages(decoded: Any) -> Stages:
    """Validate the decoded shape: a list of stages (``null`` counts as empty), each a list of objects."""
    if decoded is None:
        return []
    if not isinstance(decoded, list):
        raise ReleaseError("revision resources must be a JSON array of stages")
    stages: Stages = []
    for stage in decoded:
        objects = [] if stage is None else stage
        if not isinstance(objects, list) or not all(isinstance(obj, dict) for obj in objects):
            raise ReleaseError("each revision stage must be a JSON array of objects")
        stages.append(objects)
    return stages


async def read_stages(kube: KubeClient, revision: Revision) -> Stages:
    """The resources stored in a revision; an already deleted revision reads as empty (as in yoke)."""
    try:
        secret = await kube.get(f"{_secrets_path(revision.namespace)}/{revision.name}")
    except KubeError as exc:
        if exc.not_found:
            return []
        raise
    encoded = str((secret.get("data") or {}).get(KEY_RESOURCES, ""))
    try:
        raw = base64.b64decode(encoded, validate=True)
    except binascii.Error as exc:
        raise ReleaseError(f"revision {revision.name}: data is not base64: {exc}") from exc
    return decode_stages(raw)


# --- writing -----------------------------------------------------------------------------------


def encode_stages(stages: Stages) -> bytes:
    """gzip of Go-style compact JSON (sorted keys, integral floats as integers), as yoke stores it."""
    for stage in stages:
        for obj in stage:
            if not isinstance(obj, dict) or not obj.get("kind"):
                raise ReleaseError(f"revision object without kind cannot be read by yoke: {obj!r:.200}")
    return gzip.compress(go_json(stages), compresslevel=_GO_DEFAULT_COMPRESSION, mtime=0)


def random_secret_name() -> str:
    """``yoke.`` and 12 random lowercase hex characters (yoke's ``RandomString``)."""
    return SECRET_PREFIX + secrets.token_hex(6)


def _revision_secret(name: str, release: str, annotations: dict[str, str], data: bytes) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "labels": {LABEL_KIND: KIND_REVISION, LABEL_RELEASE: sha1_hex(release)},
            "annotations": annotations,
        },
        "data": {KEY_RESOURCES: base64.b64encode(data).decode()},
    }


async def _post_revision(kube: KubeClient, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST the Secret, drawing a new random name if the drawn one already exists."""
    for attempt in range(_CREATE_ATTEMPTS):
        try:
            return await kube.request(
                "POST", _secrets_path(namespace), query={"fieldManager": FIELD_MANAGER_APPLY}, body=body
            )
        except KubeError as exc:
            if not exc.conflict or attempt == _CREATE_ATTEMPTS - 1:
                raise
            body["metadata"]["name"] = random_secret_name()
    raise AssertionError("unreachable")


async def create_revision(
    kube: KubeClient,
    release: str,
    namespace: str,
    stages: Stages,
    *,
    source_url: str,
    source_checksum: str,
    now: datetime | None = None,
    pending: bool = False,
) -> Revision:
    """Store ``stages`` as the release's new (and active) revision Secret and return it.

    ``pending``: written before the resources are applied; ``activate_revision`` makes it the active
    one once they are.
    """
    stamp = format_rfc3339_nano(time.time_ns() if now is None else unix_nanos(now))
    annotations = {
        ANNOTATION_CREATED_AT: stamp,
        ANNOTATION_ACTIVE_AT: stamp,
        ANNOTATION_RESOURCE_COUNT: str(sum(len(stage) for stage in stages)),
        ANNOTATION_SOURCE_URL: source_url,
        ANNOTATION_SOURCE_CHECKSUM: source_checksum,
        ANNOTATION_RELEASE_NAME: release,
    }
    if pending:
        annotations[ANNOTATION_PENDING] = "true"
    body = _revision_secret(random_secret_name(), release, annotations, encode_stages(stages))
    created = await _post_revision(kube, namespace, body)
    return revision_from_metadata(created.get("metadata") or body["metadata"], namespace, release)


async def activate_revision(kube: KubeClient, revision: Revision) -> Revision:
    """Make a pending revision the active one: active-at now, the pending mark removed."""
    stamp = format_rfc3339_nano(time.time_ns())
    patch = {"metadata": {"annotations": {ANNOTATION_ACTIVE_AT: stamp, ANNOTATION_PENDING: None}}}
    path = f"{_secrets_path(revision.namespace)}/{revision.name}"
    updated = await kube.request("PATCH", path, body=patch, content_type=MERGE_PATCH)
    return revision_from_metadata(updated.get("metadata") or {}, revision.namespace, revision.release)


# --- deleting ----------------------------------------------------------------------------------


async def _delete_secrets(
    kube: KubeClient, namespace: str, names: list[str], message: str, *, ordered: bool
) -> list[str]:
    """Delete the named Secrets (already gone counts as deleted) and return their names.

    Every name is tried; failures are raised together afterwards as one ``ReleaseError``.
    """
    outcomes = await asyncio.gather(*(_delete_secret(kube, namespace, name) for name in names))
    failures = [failure for failure in outcomes if failure is not None]
    if failures:
        raise ReleaseError(join_errors(message, [str(f) for f in failures], ordered=ordered), failures[0].status)
    return list(names)


async def _delete_secret(kube: KubeClient, namespace: str, name: str) -> KubeError | None:
    """Delete one Secret (already gone counts as deleted); the failure, if any."""
    try:
        await kube.request("DELETE", f"{_secrets_path(namespace)}/{name}")
    except KubeError as exc:
        if not exc.not_found:
            return KubeError(exc.status, f"{name}: {exc}")
    return None


def over_cap(release: Release, cap: int) -> list[str]:
    """Names of the revisions beyond the ``cap`` most recently active ones (``cap <= 0`` keeps all)."""
    if cap <= 0 or cap >= len(release.settled):
        return []
    newest_first = sorted(release.settled, key=lambda revision: revision.active_at_nanos, reverse=True)
    return [revision.name for revision in newest_first[cap:]]


async def cap_history(
    kube: KubeClient, release: str, namespace: str, cap: int, *, known: Release | None = None
) -> list[str]:
    """Keep the ``cap`` most recently active revisions and delete the rest; ``cap <= 0`` keeps all.

    ``known`` is the history as the caller knows it after its own writes (the takeoff lists the
    release once and then knows what it wrote); without it the release is listed afresh, as yoke
    does after writing a revision. Returns the deleted names.
    """
    if cap <= 0:
        return []
    names = over_cap(known or await list_release(kube, release, namespace), cap)
    if not names:
        return []
    return await _delete_secrets(kube, namespace, names, "deleting release history", ordered=False)


async def delete_revisions(kube: KubeClient, revisions: list[Revision]) -> list[str]:
    """Delete these revision Secrets (pending ones a finished takeoff has superseded)."""
    if not revisions:
        return []
    names = [revision.name for revision in revisions]
    return await _delete_secrets(kube, revisions[0].namespace, names, "deleting pending revisions", ordered=False)


async def delete_release(kube: KubeClient, release: str, namespace: str, current: Release | None = None) -> list[str]:
    """Delete every revision Secret of the release (mayday); return the deleted names.

    ``current`` is the release as the caller already listed it.
    """
    current = current or await list_release(kube, release, namespace)
    names = [revision.name for revision in current.history]
    return await _delete_secrets(kube, namespace, names, "removing revision history secrets", ordered=True)


# --- digest pinning ----------------------------------------------------------------------------


def _go_url_scheme(ref: str) -> str | None:
    """The lowercased scheme as Go's ``url.Parse`` sees it; None where Go would fail to parse ``ref``."""
    if any(ord(char) < 0x20 or char == "\x7f" for char in ref) or ref.startswith(":"):
        return None
    if _BAD_ESCAPE.search(ref.partition("?")[0]):
        return None
    match = _SCHEME.match(ref)
    if match is None and ":" in ref.partition("/")[0]:
        return None  # Go: "first path segment in URL cannot contain colon"
    return match.group(1).lower() if match else ""


def is_pinnable(ref: str) -> bool:
    """Whether a module ref is pinned to its first checksum: http(s) and unknown schemes always,
    oci only with a semver tag (``v`` optional), ``file`` never, unparsable refs never."""
    scheme = _go_url_scheme(ref)
    if scheme is None or scheme == "file":
        return False
    if scheme != "oci":
        return True
    try:
        path = unquote(urlsplit(ref).path)
    except ValueError:
        return False
    _, _, tag = path.partition(":")
    if not tag:
        return False
    return _SEMVER.fullmatch(tag if tag.startswith("v") else "v" + tag) is not None


def go_quote(text: str) -> str:
    """Go's ``%q`` of a string: double quotes, backslash escapes, printable Unicode kept as is."""
    out = []
    for char in text:
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif char in _GO_QUOTE_ESCAPES:
            out.append(_GO_QUOTE_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        elif ord(char) < 0x80:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(f"\\u{ord(char):04x}" if ord(char) < 0x10000 else f"\\U{ord(char):08x}")
    return '"' + "".join(out) + '"'


def pinning_error(release: Release, source_url: str, source_sha1: str) -> str | None:
    """yoke's pinning check: a pinnable ref that an earlier revision used with another checksum."""
    if not is_pinnable(source_url):
        return None
    for revision in release.history:
        if revision.source_url == source_url and revision.source_checksum != source_sha1:
            return (
                f"module {go_quote(source_url)} has changed since last use: "
                f"got {go_quote(source_sha1)} but wanted {go_quote(revision.source_checksum)}"
            )
    return None
