"""Who a flight may see in the cluster, and what it looked at (docs/flight-runtime.md, "Host functions (yoke's ABI)").

Pure answer logic for yoke's two host functions: ``answer_lookup`` checks the
invocation's ``ClusterAccess`` (granted at all; object owned by this release;
or matched by a ``resourceAccessMatchers`` entry), asks a ``ClusterGateway``
and records refs in a ``LookupTracker`` (internal, external, candidate) that
dynamic and subscription modes use. ``answer_rest_mapping`` answers REST
mapping questions. The wire side (memory, malloc, state codes) is in
``atc.wasm.host``; the gateway over the real API server is in ``atc.k8s.gateway``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Protocol

from atc.k8s.discovery import NoMatchError, RestMapping
from atc.k8s.refs import ApiVersionError, owner_of, ref_of, resource_ref, split_api_version


class State(IntEnum):
    """The u32 the host writes at the guest's state pointer on failure."""

    OK = 0
    FEATURE_NOT_GRANTED = 1
    ERROR = 2
    NOT_FOUND = 3
    UNAUTHENTICATED = 4
    FORBIDDEN = 5


FORBIDDEN_OUTSIDE_RELEASE = "forbidden: cannot access resource outside of target release ownership"


class GatewayError(Exception):
    """A failed cluster call; ``status`` is the HTTP status (0 when no answer came)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ClusterGateway(Protocol):
    """Blocking cluster reads for host functions (they run on flight worker threads)."""

    def rest_mapping(self, group: str, kind: str, version: str) -> RestMapping: ...

    def get(self, mapping: RestMapping, namespace: str, name: str) -> dict[str, Any]: ...


@dataclass
class LookupTracker:
    """Refs a flight looked up in one run: internal, external and candidate."""

    internal: set[str] = field(default_factory=set)
    external: set[str] = field(default_factory=set)
    candidate: set[str] = field(default_factory=set)
    versions: dict[str, str] = field(default_factory=dict)  # internal ref -> resourceVersion the flight saw


@dataclass
class ClusterAccess:
    """What one flight invocation may read, and where its lookups are recorded."""

    enabled: bool
    release: str = ""
    release_namespace: str = ""
    matchers: Sequence[str] = ()
    gateway: ClusterGateway | None = None
    tracker: LookupTracker = field(default_factory=LookupTracker)

    @property
    def owner(self) -> str:
        return f"{self.release_namespace}/{self.release}"


@dataclass(frozen=True)
class HostAnswer:
    state: State
    payload: bytes


NOT_GRANTED = HostAnswer(State.FEATURE_NOT_GRANTED, b"feature not granted")


# --------------------------------------------------------------------------- matchers (resourceAccessMatchers)
def _split_matcher(text: str) -> tuple[str, str, str]:
    namespace, slash, rest = text.partition("/")
    if not slash:
        namespace, rest = "*", text
    gk, colon, name = rest.partition(":")
    return namespace, gk, (name if colon else "*")


def matches_resource(matcher: str, namespace: str, group_kind: str, name: str) -> bool:
    """Does ``[<ns>/]<Kind.group>[:<name>]`` (``*`` wildcards) match the object?"""
    if matcher == "":
        return False
    if matcher == "*":
        return True
    pattern = _split_matcher(matcher)
    return all(want in ("*", have) for want, have in zip(pattern, (namespace, group_kind, name), strict=True))


def matcher_contains(matcher: str, ref: str) -> bool:
    """Is every object the ref names also named by the matcher (both in matcher grammar)?"""
    return all(want in ("*", have) for want, have in zip(_split_matcher(matcher), _split_matcher(ref), strict=True))


# --------------------------------------------------------------------------- answers
def _error_answer(error: Exception) -> HostAnswer:
    status = error.status if isinstance(error, GatewayError) else 0
    state = {404: State.NOT_FOUND, 403: State.FORBIDDEN, 401: State.UNAUTHENTICATED}.get(status, State.ERROR)
    return HostAnswer(state, str(error).encode())


def answer_lookup(access: ClusterAccess, name: str, namespace: str, kind: str, api_version: str) -> HostAnswer:
    """Resolve ``k8s_lookup``: access rules, the GET, and tracking of what was seen."""
    if not access.enabled or access.gateway is None:
        return NOT_GRANTED
    try:
        group, version = split_api_version(api_version)
        mapping = access.gateway.rest_mapping(group, kind, version)
    except (ApiVersionError, NoMatchError, GatewayError) as exc:
        return _error_answer(exc)
    if mapping.namespaced and not namespace:
        namespace = "default"
    if not mapping.namespaced:
        namespace = ""
    try:
        found = access.gateway.get(mapping, namespace, name)
    except GatewayError as exc:
        if exc.status == 404:
            _track_missing(access, ref_of(namespace, group, kind, name))
        return _error_answer(exc)
    return _check_found(access, found)


def _track_missing(access: ClusterAccess, ref: str) -> None:
    if any(matcher_contains(m, ref) for m in access.matchers):
        access.tracker.external.add(ref)
    else:
        access.tracker.candidate.add(ref)


def _check_found(access: ClusterAccess, found: dict[str, Any]) -> HostAnswer:
    ref = resource_ref(found)
    payload = json.dumps(found, separators=(",", ":")).encode()
    if owner_of(found) == access.owner:
        access.tracker.internal.add(ref)
        access.tracker.versions[ref] = str((found.get("metadata") or {}).get("resourceVersion", ""))
        return HostAnswer(State.OK, payload)
    namespace, rest = ref.split("/", 1)
    group_kind, _, name = rest.partition(":")
    if any(matches_resource(m, namespace, group_kind, name) for m in access.matchers):
        access.tracker.external.add(ref)
        return HostAnswer(State.OK, payload)
    return HostAnswer(State.FORBIDDEN, FORBIDDEN_OUTSIDE_RELEASE.encode())


def answer_rest_mapping(access: ClusterAccess, group_or_api_version: str, kind: str) -> HostAnswer:
    """Resolve ``k8s_rest_mapping``: ``apps`` or ``apps/v1`` (core is ``""``) and a kind."""
    if not access.enabled or access.gateway is None:
        return NOT_GRANTED
    group, _, version = group_or_api_version.partition("/")
    try:
        mapping = access.gateway.rest_mapping(group, kind, version)
    except (NoMatchError, GatewayError) as exc:
        return _error_answer(exc)
    body = {
        "Group": mapping.group,
        "Version": mapping.version,
        "Kind": mapping.kind,
        "Resource": mapping.resource,
        "Namespaced": mapping.namespaced,
    }
    return HostAnswer(State.OK, json.dumps(body, separators=(",", ":")).encode())
