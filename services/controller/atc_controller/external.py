"""Targeted watches on objects flights look up but do not own (dynamic and subscription modes).

yoke follows these "external" objects with a cluster-wide admission webhook,
so every write in the cluster pays an admission call. Here the controller
watches exactly the objects instances looked up (one watch per object,
field-selected by name, shared by every instance that follows it) and
re-runs those instances when one is created, changed or deleted (docs/design.md,
"The Events channel"). ``follow(controller, key, refs)`` is called after every takeoff
with the instance's current external refs; watches nobody follows stop.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from atc.k8s.client import KubeClient
from atc.k8s.discovery import NoMatchError, RestMapper
from atc.k8s.reflector import Reflector, changed_beyond_status
from atc.k8s.refs import parse_ref
from atc.model.types import Object

from .core.controller import Manager

log = logging.getLogger("atc.controller.external")
Follower = tuple[str, str]  # (controller name, instance key)


@dataclass
class _Watch:
    reflector: Reflector
    task: asyncio.Task[None]
    followers: set[Follower] = field(default_factory=set)


class ExternalWatches:
    """One watch per external ref; changes re-run the instances that follow it."""

    def __init__(self, kube: KubeClient, mapper: RestMapper, manager: Manager) -> None:
        self._kube = kube
        self._mapper = mapper
        self._manager = manager
        self._watches: dict[str, _Watch] = {}
        self._following: dict[Follower, set[str]] = defaultdict(set)
        self._pending: set[asyncio.Task[None]] = set()

    def follow(self, controller: str, key: str, refs: set[str]) -> None:
        """``key`` of ``controller`` now follows exactly ``refs``."""
        follower = (controller, key)
        before = self._following.get(follower, set())
        for ref in before - refs:
            self._unfollow(ref, follower)
        for ref in refs - before:
            self._start_following(ref, follower)
        if refs:
            self._following[follower] = set(refs)
        else:
            self._following.pop(follower, None)

    def forget(self, controller: str) -> None:
        """An instance controller stopped: drop everything its instances followed."""
        for follower in [f for f in self._following if f[0] == controller]:
            self.follow(*follower, set())

    @property
    def watched(self) -> set[str]:
        return set(self._watches)

    def cached(self, ref: str) -> Object | None:
        """The object ``ref`` names as its watch holds it; None until that watch listed it (or it does not exist)."""
        watch = self._watches.get(ref)
        if watch is None or not watch.reflector.synced.is_set():
            return None
        parsed = parse_ref(ref)
        return watch.reflector.get(parsed.namespace, parsed.name)

    def _start_following(self, ref: str, follower: Follower) -> None:
        watch = self._watches.get(ref)
        if watch is not None:
            watch.followers.add(follower)
            return
        task = asyncio.create_task(self._start_watch(ref, follower), name=f"external-watch-start {ref}")
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _start_watch(self, ref: str, follower: Follower) -> None:
        parsed = parse_ref(ref)
        try:
            mapping = await self._mapper.mapping(parsed.group, parsed.kind, refresh_on_miss=True)
        except NoMatchError as exc:
            log.warning("cannot watch external resource", extra={"ref": ref, "error": str(exc)})
            return
        if ref in self._watches:  # started meanwhile by another follower
            self._watches[ref].followers.add(follower)
            return
        reflector = Reflector(
            self._kube,
            mapping.collection_path(parsed.namespace),
            name=f"external {ref}",
            field_selector=f"metadata.name={parsed.name}",
            handler=self._handler(ref),
        )
        task = asyncio.create_task(reflector.run(), name=f"external-watch {ref}")
        self._watches[ref] = _Watch(reflector, task, {follower})

    def _handler(self, ref: str) -> Any:
        def handle(event_type: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
            watch = self._watches.get(ref)
            if watch is None or not watch.reflector.synced.is_set() or event_type == "RESYNC":
                return  # the initial list is what the flight already saw
            if event_type == "MODIFIED" and old is not None and not changed_beyond_status(old, obj):
                return
            for controller, key in watch.followers:
                self._manager.enqueue(controller, key)

        return handle

    def _unfollow(self, ref: str, follower: Follower) -> None:
        watch = self._watches.get(ref)
        if watch is None:
            return
        watch.followers.discard(follower)
        if not watch.followers:
            watch.reflector.stop()
            watch.task.cancel()
            del self._watches[ref]

    async def stop(self) -> None:
        for task in list(self._pending):
            task.cancel()
        for watch in self._watches.values():
            watch.reflector.stop()
            watch.task.cancel()
        await asyncio.gather(*(w.task for w in self._watches.values()), *self._pending, return_exceptions=True)
        self._watches.clear()
        self._following.clear()
