"""List + watch of one collection into a local cache, with change events for its owner.

A ``Reflector`` lists a collection (paginated), keeps the objects in memory
(key ``namespace/name``, or ``name`` for cluster-scoped ones) and then watches
from the list's resourceVersion with bookmarks. It relists on 410 Gone,
retries any other failure with backoff (0.5 s doubling to 30 s by default),
re-watches when the server ends a stream, and emits ``RESYNC`` for every
cached object each ``resync_period``. With ``metadata_only`` it asks the API
server for ``PartialObjectMetadata`` (names, labels, annotations, no spec or
data), which is enough to follow a collection's metadata cheaply; a ``transform``
shrinks each object before it is cached (keep only what the handler needs).

Both services run them: the controller one per watched kind (its handlers
enqueue keys on the manager and use ``changed_beyond_status`` to ignore
status-only updates, docs/controller.md, "The core"; reconcilers read objects
back with ``get`` / ``list``), the webhook for its read caches (``atc_webhook.caches``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Literal

from atc.k8s.client import KubeClient, KubeError
from atc.model.backoff import Backoff
from atc.model.clock import Clock, MonotonicClock
from atc.model.types import Object

log = logging.getLogger("atc.reflector")

__all__ = [
    "GONE",
    "METADATA_LIST_ACCEPT",
    "METADATA_WATCH_ACCEPT",
    "PAGE_SIZE",
    "RETRY_INITIAL_SECONDS",
    "RETRY_MAX_SECONDS",
    "WATCH_TIMEOUT_SECONDS",
    "EventType",
    "Handler",
    "Reflector",
    "ResourceExpiredError",
    "cache_key",
    "changed_beyond_status",
    "object_key",
    "resource_version",
    "retry_backoff",
]

EventType = Literal["ADDED", "MODIFIED", "DELETED", "RESYNC"]
Handler = Callable[[EventType, Object, Object | None], Awaitable[None] | None]

PAGE_SIZE = 500
WATCH_TIMEOUT_SECONDS = 300
RETRY_INITIAL_SECONDS = 0.5
RETRY_MAX_SECONDS = 30.0
GONE = 410
METADATA_LIST_ACCEPT = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
METADATA_WATCH_ACCEPT = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
_VOLATILE_METADATA = ("generation", "resourceVersion", "managedFields")


def cache_key(namespace: str, name: str) -> str:
    """``namespace/name``, or ``name`` for cluster-scoped objects."""
    return f"{namespace}/{name}" if namespace else name


def object_key(obj: Object) -> str:
    metadata = obj.get("metadata") or {}
    return cache_key(str(metadata.get("namespace") or ""), str(metadata.get("name") or ""))


def resource_version(obj: Object) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def _without_volatile_fields(obj: Object) -> Object:
    stripped = {field: value for field, value in obj.items() if field != "status"}
    metadata = obj.get("metadata") or {}
    stripped["metadata"] = {field: value for field, value in metadata.items() if field not in _VOLATILE_METADATA}
    return stripped


def changed_beyond_status(old: Object, new: Object) -> bool:
    """Whether two versions differ in more than status, generation, resourceVersion and managedFields."""
    return _without_volatile_fields(old) != _without_volatile_fields(new)


class ResourceExpiredError(Exception):
    """The resourceVersion or continue token is too old (410 Gone): the cache must be relisted."""


def _status_error(status: Object) -> Exception:
    """The exception for a watch ERROR event, whose object is a ``Status``."""
    code = int(status.get("code") or 0)
    message = str(status.get("message") or "watch error")
    if code == GONE:
        return ResourceExpiredError(message)
    return KubeError(code, message, str(status.get("reason") or ""), status)


def retry_backoff(maximum: float = RETRY_MAX_SECONDS) -> Backoff:
    """Delays for retrying a failing list or watch: 0.5 s doubling up to ``maximum``."""
    return Backoff(RETRY_INITIAL_SECONDS, maximum)


class Reflector:
    """Keeps a watched collection (e.g. ``/api/v1/namespaces/x/configmaps``) in memory and reports changes."""

    def __init__(
        self,
        kube: KubeClient,
        collection_path: str,
        *,
        name: str,
        handler: Handler,
        label_selector: str = "",
        field_selector: str = "",
        resync_period: float | None = None,
        page_size: int = PAGE_SIZE,
        watch_timeout_seconds: int = WATCH_TIMEOUT_SECONDS,
        clock: Clock | None = None,
        metadata_only: bool = False,
        retry_max_seconds: float = RETRY_MAX_SECONDS,
        transform: Callable[[Object], Object] | None = None,
    ) -> None:
        self.name = name
        self._transform = transform
        self.synced = asyncio.Event()
        self.last_error: Exception | None = None  # the failure being retried, None once a list or watch works
        self._metadata_only = metadata_only
        self._kube = kube
        self._path = collection_path
        self._handler = handler
        self._selectors = {"labelSelector": label_selector, "fieldSelector": field_selector}
        self._resync_period = resync_period
        self._page_size = page_size
        self._watch_timeout = watch_timeout_seconds
        self._clock: Clock = clock or MonotonicClock()
        self._backoff = retry_backoff(retry_max_seconds)
        self._cache: dict[str, Object] = {}
        self._resource_version = ""
        self._needs_list = True
        self._stopped = asyncio.Event()

    # --- reading the cache ------------------------------------------------------------------------------------

    def get(self, namespace: str, name: str) -> Object | None:
        """The cached object (shared: do not modify it), or ``None``."""
        return self._cache.get(cache_key(namespace, name))

    def list(self, namespace: str | None = None) -> list[Object]:
        """All cached objects, or those of one namespace."""
        objects = list(self._cache.values())
        if namespace is None:
            return objects
        return [obj for obj in objects if (obj.get("metadata") or {}).get("namespace", "") == namespace]

    def __len__(self) -> int:
        return len(self._cache)

    @property
    def resource_version(self) -> str:
        """The last resourceVersion seen (list, event or bookmark)."""
        return self._resource_version

    # --- running ------------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """List, then watch, until ``stop`` is called or the task is cancelled."""
        tasks = [asyncio.create_task(self._list_and_watch_forever(), name=f"reflector {self.name}")]
        if self._resync_period:
            tasks.append(asyncio.create_task(self._resync_forever(), name=f"reflector {self.name} resync"))
        stopped = asyncio.create_task(self._stopped.wait())
        try:
            done, _ = await asyncio.wait([*tasks, stopped], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            for task in [*tasks, stopped]:
                task.cancel()
            await asyncio.gather(*tasks, stopped, return_exceptions=True)

    def stop(self) -> None:
        self._stopped.set()

    async def resync(self) -> None:
        """Emit ``RESYNC`` for every cached object now."""
        for obj in list(self._cache.values()):
            await self._emit("RESYNC", obj, None)

    async def _resync_forever(self) -> None:
        assert self._resync_period
        await self.synced.wait()
        while True:
            await self._clock.sleep(self._resync_period)
            await self.resync()

    async def _list_and_watch_forever(self) -> None:
        while True:
            try:
                if self._needs_list:
                    await self._relist()
                await self._watch()
            except ResourceExpiredError as exc:
                log.info("resource version expired, relisting", extra={"reflector": self.name, "error": str(exc)})
                self._needs_list = True
            except Exception as exc:
                self.last_error = exc
                delay = self._backoff.next_delay()
                log.warning(
                    "list and watch failed",
                    extra={"reflector": self.name, "error": str(exc) or type(exc).__name__, "retryIn": delay},
                )
                await self._clock.sleep(delay)

    # --- list ---------------------------------------------------------------------------------------------------

    def _query(self) -> dict[str, str]:
        return {key: value for key, value in self._selectors.items() if value}

    async def _list_page(self, continue_token: str) -> Object:
        query = {**self._query(), "limit": str(self._page_size)}
        if continue_token:
            query["continue"] = continue_token
        try:
            if self._metadata_only:
                return await self._kube.request("GET", self._path, query=query, accept=METADATA_LIST_ACCEPT)
            return await self._kube.get(self._path, query=query)
        except KubeError as exc:
            if exc.status == GONE:
                raise ResourceExpiredError(exc.message) from exc
            raise

    async def _list_all(self) -> tuple[dict[str, Object], str]:
        """Every object of the collection by key, and the list's resourceVersion."""
        objects: dict[str, Object] = {}
        continue_token = ""
        while True:
            page = await self._list_page(continue_token)
            for item in _typed_items(page):
                objects[object_key(item)] = self._transform(item) if self._transform else item
            metadata = page.get("metadata") or {}
            continue_token = str(metadata.get("continue") or "")
            if not continue_token:
                return objects, str(metadata.get("resourceVersion") or "")

    async def _relist(self) -> None:
        """Replace the cache with a fresh list and emit what changed since the previous one."""
        fresh, list_version = await self._list_all()
        previous, self._cache = self._cache, fresh
        self._resource_version = list_version
        self._needs_list = False
        self._backoff.reset()
        self.last_error = None
        for key, obj in fresh.items():
            old = previous.get(key)
            if old is None:
                await self._emit("ADDED", obj, None)
            elif resource_version(old) != resource_version(obj):
                await self._emit("MODIFIED", obj, old)
        for key, old in previous.items():
            if key not in fresh:
                await self._emit("DELETED", old, old)
        if not self.synced.is_set():
            log.info("cache synced", extra={"reflector": self.name, "objects": len(fresh)})
            self.synced.set()

    # --- watch --------------------------------------------------------------------------------------------------

    async def _watch(self) -> None:
        """Watch from the last resourceVersion until the server ends the stream."""
        query = {**self._query(), "allowWatchBookmarks": "true"}
        if self._resource_version:
            query["resourceVersion"] = self._resource_version
        try:
            async for event in self._events(query):
                await self._apply(event)
                self._backoff.reset()
                self.last_error = None
        except KubeError as exc:
            if exc.status == GONE:
                raise ResourceExpiredError(exc.message) from exc
            raise

    def _events(self, query: dict[str, str]) -> AsyncIterator[Object]:
        if self._metadata_only:
            return self._kube.watch(
                self._path, query=query, timeout_seconds=self._watch_timeout, accept=METADATA_WATCH_ACCEPT
            )
        return self._kube.watch(self._path, query=query, timeout_seconds=self._watch_timeout)

    async def _apply(self, event: Object) -> None:
        event_type = event.get("type")
        obj: Object = event.get("object") or {}
        if event_type == "ERROR":
            raise _status_error(obj)
        if self._transform and event_type in ("ADDED", "MODIFIED", "DELETED"):
            obj = self._transform(obj)
        if event_type in ("ADDED", "MODIFIED"):
            key = object_key(obj)
            old = self._cache.get(key)
            self._cache[key] = obj
            self._resource_version = resource_version(obj) or self._resource_version
            await self._emit(event_type, obj, old)
        elif event_type == "DELETED":
            old = self._cache.pop(object_key(obj), None)
            self._resource_version = resource_version(obj) or self._resource_version
            await self._emit("DELETED", obj, old)
        elif event_type == "BOOKMARK":
            self._resource_version = resource_version(obj) or self._resource_version
        else:
            log.warning("unknown watch event type", extra={"reflector": self.name, "type": event_type})

    async def _emit(self, event_type: EventType, obj: Object, old: Object | None) -> None:
        try:
            outcome = self._handler(event_type, obj, old)
            if inspect.isawaitable(outcome):
                await outcome
        except Exception:
            log.exception("reflector handler failed", extra={"reflector": self.name, "event": event_type})


def _typed_items(page: Object) -> list[Object]:
    """The items of a list page with ``apiVersion`` and ``kind`` filled in (list items of built-ins lack them)."""
    api_version = page.get("apiVersion", "")
    kind = str(page.get("kind", "")).removesuffix("List")
    items: list[Object] = page.get("items") or []
    for item in items:
        item.setdefault("apiVersion", api_version)
        item.setdefault("kind", kind)
    return items
