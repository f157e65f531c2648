"""Where a takeoff reads and records a release's history: the API server, or a watch-backed cache.

``takeoff`` (``atc.release.takeoff``) asks its ``Cluster.history`` for the release's revisions and
a revision's stages, and tells it about its own writes. ``ApiHistory`` (the default, and what the
webhook's dry runs use) lists and reads from the API server each time. ``CachedHistory`` (started
by the controller) keeps the revision Secrets (label ``internal.yoke/kind=revision``) from one list
and watch, indexed by namespace and release label, so a takeoff costs no LIST and no GET of the
active revision (docs/controller.md, "Revision history from a cache").

Read-your-writes: each write a takeoff makes becomes an expectation on its release (the created or
activated revision seen at its new resourceVersion, a deleted one gone). The next read of that
release waits until the watch shows them all, at most ``CATCH_UP_SECONDS``; while the watch has not
caught up, the cache has not listed yet, or the watch is failing, the release is listed from the
API server as ``ApiHistory`` does. So a takeoff never reads a history older than its own last
write.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import time
from dataclasses import dataclass, field

from atc.k8s.client import KubeClient
from atc.k8s.reflector import EventType, Reflector
from atc.model.types import Object

from .revisions import (
    KEY_RESOURCES,
    KIND_REVISION,
    LABEL_KIND,
    LABEL_RELEASE,
    Release,
    ReleaseError,
    Revision,
    Stages,
    decode_stages,
    is_valid_label_value,
    list_release,
    migrate_legacy,
    ordered_by_creation,
    read_stages,
    revision_from_metadata,
    sha1_hex,
)

SECRETS_PATH = "/api/v1/secrets"
REVISION_SELECTOR = f"{LABEL_KIND}={KIND_REVISION}"
CATCH_UP_SECONDS = 5.0
EXPECTATION_SECONDS = 60.0


class ApiHistory:
    """The release's history straight from the API server: a LIST per release, a GET per revision read."""

    def __init__(self, kube: KubeClient) -> None:
        self._kube = kube

    async def release(self, release: str, namespace: str) -> Release:
        return await list_release(self._kube, release, namespace)

    async def stages(self, revision: Revision) -> Stages:
        return await read_stages(self._kube, revision)

    def wrote(self, revision: Revision) -> None:
        """A revision this process created or changed (nothing to remember without a cache)."""

    def deleted(self, release: str, namespace: str, names: list[str]) -> None:
        """Revisions this process deleted (nothing to remember without a cache)."""

    def forget(self, release: str, namespace: str) -> None:
        """The whole history was deleted (mayday; nothing to remember without a cache)."""


def slim_revision(secret: Object) -> Object:
    """What the cache keeps of a revision Secret: identity, labels, yoke's annotations, the resources."""
    meta = secret.get("metadata") or {}
    kept: Object = {key: meta[key] for key in ("name", "namespace", "resourceVersion") if key in meta}
    kept["labels"] = dict(meta.get("labels") or {})
    kept["annotations"] = dict(meta.get("annotations") or {})
    return {"metadata": kept, "data": {KEY_RESOURCES: (secret.get("data") or {}).get(KEY_RESOURCES, "")}}


def _version(text: str) -> int:
    """A resourceVersion as a number (etcd revisions; a non-number never satisfies an expectation)."""
    return int(text) if text.isdigit() else -1


@dataclass
class _Expectations:
    """What the watch must show of one release before it is read: name -> resourceVersion, or None for gone."""

    names: dict[str, int | None] = field(default_factory=dict)
    since: float = field(default_factory=time.monotonic)
    waited: bool = False  # a read already gave the watch its moment to catch up


class CachedHistory:
    """Revision Secrets from a watch, with read-your-writes for the takeoffs of this process (module docstring)."""

    def __init__(self, kube: KubeClient, *, catch_up_seconds: float = CATCH_UP_SECONDS) -> None:
        self._kube = kube
        self._catch_up = catch_up_seconds
        self._api = ApiHistory(kube)
        self._index: dict[tuple[str, str], dict[str, Object]] = {}  # (namespace, release label) -> name -> Secret
        self._labels: dict[tuple[str, str], str] = {}  # (namespace, name) -> the release label it is indexed under
        self._expected: dict[tuple[str, str], _Expectations] = {}  # (namespace, release label) -> expectations
        self._news = asyncio.Event()  # set (and replaced) on every watch event
        self.reflector = self.fresh_reflector()

    def fresh_reflector(self) -> Reflector:
        """An empty cache and a new reflector to fill it (the controller runs one per leadership term)."""
        self._index.clear()
        self._labels.clear()
        self._expected.clear()
        self.reflector = Reflector(
            self._kube,
            SECRETS_PATH,
            name="revisions",
            label_selector=REVISION_SELECTOR,
            handler=self._on_event,
            transform=slim_revision,
        )
        return self.reflector

    def __len__(self) -> int:
        return len(self._labels)

    # --- the watch ------------------------------------------------------------------------------------------

    def _on_event(self, event_type: EventType, secret: Object, old: Object | None) -> None:
        self._index_event(event_type, secret)
        self._news.set()  # wakes the reads waiting for their writes to show
        self._news = asyncio.Event()

    def _index_event(self, event_type: EventType, secret: Object) -> None:
        meta = secret["metadata"]
        key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        label = self._labels.pop(key, None)
        if label is not None:
            revisions = self._index[(key[0], label)]
            revisions.pop(key[1], None)
            if not revisions:
                del self._index[(key[0], label)]
        if event_type == "DELETED":
            return
        label = str((meta.get("labels") or {}).get(LABEL_RELEASE, ""))
        self._index.setdefault((key[0], label), {})[key[1]] = secret
        self._labels[key] = label

    # --- reading --------------------------------------------------------------------------------------------

    async def release(self, release: str, namespace: str) -> Release:
        """The release's revisions, oldest first, legacy ones migrated (as ``list_release`` returns them)."""
        hashed = sha1_hex(release)
        usable = self.reflector.synced.is_set() and self.reflector.last_error is None
        if not usable or not await self._caught_up((namespace, hashed)):
            return await self._api.release(release, namespace)
        current = [secret["metadata"] for secret in self._index.get((namespace, hashed), {}).values()]
        legacy_label = release if is_valid_label_value(release) and release != hashed else None
        legacy = (
            [s["metadata"] for s in self._index.get((namespace, legacy_label), {}).values()] if legacy_label else []
        )
        if legacy:
            migrated = await migrate_legacy(self._kube, namespace, release, legacy)
            current += migrated
            for metadata in migrated:
                self.wrote(revision_from_metadata(metadata, namespace, release))
        revisions = [revision_from_metadata(metadata, namespace, release) for metadata in current]
        return Release(name=release, namespace=namespace, history=ordered_by_creation(revisions))

    async def stages(self, revision: Revision) -> Stages:
        """The revision's resources from the cache (read from the API server when the cache lacks them)."""
        secret = self._index.get((revision.namespace, sha1_hex(revision.release)), {}).get(revision.name)
        if secret is None:
            return await self._api.stages(revision)
        encoded = str(secret["data"].get(KEY_RESOURCES, ""))
        try:
            raw = base64.b64decode(encoded, validate=True)
        except binascii.Error as exc:
            raise ReleaseError(f"revision {revision.name}: data is not base64: {exc}") from exc
        return decode_stages(raw)

    # --- our own writes -------------------------------------------------------------------------------------

    def wrote(self, revision: Revision) -> None:
        """Expect the watch to show ``revision`` at the resourceVersion this process wrote."""
        expected = self._expected.setdefault((revision.namespace, sha1_hex(revision.release)), _Expectations())
        expected.names[revision.name] = _version(revision.resource_version)

    def deleted(self, release: str, namespace: str, names: list[str]) -> None:
        """Expect the watch to show these revisions gone."""
        expected = self._expected.setdefault((namespace, sha1_hex(release)), _Expectations())
        for name in names:
            expected.names[name] = None

    def forget(self, release: str, namespace: str) -> None:
        """Expect the watch to show every revision of the release it holds gone (after a mayday)."""
        self.deleted(release, namespace, list(self._index.get((namespace, sha1_hex(release)), {})))

    async def _caught_up(self, key: tuple[str, str]) -> bool:
        """Whether the watch shows every write expected for the release.

        The first read after a write waits up to ``CATCH_UP_SECONDS`` for it; later reads only look.
        Expectations the watch has not met after ``EXPECTATION_SECONDS`` (of a healthy watch) are
        dropped: someone else changed or deleted those revisions since, and the cache shows that.
        """
        expected = self._expected.get(key)
        if expected is None:
            return True
        if not expected.waited:
            expected.waited = True
            deadline = time.monotonic() + self._catch_up
            while not self._shows(key, expected) and (left := deadline - time.monotonic()) > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._news.wait(), left)
        if self._shows(key, expected) or time.monotonic() - expected.since > EXPECTATION_SECONDS:
            if self._expected.get(key) is expected:
                del self._expected[key]
            return True
        return False

    def _shows(self, key: tuple[str, str], expected: _Expectations) -> bool:
        revisions = self._index.get(key, {})
        for name, version in expected.names.items():
            secret = revisions.get(name)
            if version is None:
                if secret is not None:
                    return False
            elif secret is None or _version(str(secret["metadata"].get("resourceVersion", ""))) < version:
                return False
        return True


History = ApiHistory | CachedHistory
