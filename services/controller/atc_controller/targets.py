"""Where a release lives: this cluster, or the workload cluster a kubeconfig Secret names (docs/targets.md).

An instance, Flight or ClusterFlight annotated ``atc.yoke.cd/kubeconfig-secret`` (``atc.model.target``)
deploys to another cluster. The flight still runs here; its lookups, the applies, pruning,
readiness, the revision history and the drift watches of the modes all use the ``Target`` that
``Targets.for_object(obj)`` returns, while the object's status, conditions and Events stay here.

A remote ``Target`` is built from the Secret alone (``atc.release.targets.connect_checked``: inline
credentials only, the server on ``TARGET_SERVER_ALLOW_LIST``, checked with ``GET /api``), so this
cluster's credentials never reach a target, and a wrong address or refused credentials give one
clear ``TargetError`` instead of a failure in the middle of a takeoff. It is kept per Secret and
built again when the Secret's resourceVersion changes. Each kubeconfig Secret in use is watched, so
fixing or rotating it re-runs its objects at once, and a reconcile reads the Secret from that watch
(a GET only until the watch has listed it). The reconcilers call ``for_object`` and ``unbind``;
``app`` builds ``Targets`` and stops it when leadership ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from atc.k8s.client import KubeClient, KubeError
from atc.k8s.discovery import RestMapper
from atc.k8s.gateway import LoopGateway
from atc.k8s.refs import ref_of
from atc.model.constants import FIELD_MANAGER_ATC
from atc.model.target import TargetRef, TargetRefError, target_ref
from atc.model.types import Object
from atc.release.takeoff import Cluster, TakeoffRequest
from atc.release.targets import (
    TargetError,
    connect_checked,
    failure,
    read_kubeconfig_secret,
    where,
    without_owners,
)

from .children import ChildChange, ChildWatches
from .core.controller import Manager
from .external import ExternalWatches

log = logging.getLogger("atc.controller.targets")
USER_AGENT = "atc-controller"  # how the controller shows in a workload cluster's audit log
__all__ = ["Target", "TargetError", "Targets", "for_target"]


@dataclass
class Target:
    """One cluster releases are deployed to, with everything the reconcilers use there.

    ``name`` is "" for this cluster, else the kubeconfig Secret's ``namespace/name``.
    """

    name: str
    cluster: Cluster
    gateway: LoopGateway
    child_watches: ChildWatches
    external_watches: ExternalWatches
    secret_version: str = ""

    @property
    def remote(self) -> bool:
        return bool(self.name)

    @property
    def kube(self) -> KubeClient:
        return self.cluster.kube

    @property
    def mapper(self) -> RestMapper:
        return self.cluster.mapper

    def where(self) -> str:
        """How messages name the cluster."""
        return where(self.name)

    def failure(self, exc: KubeError) -> str:
        """The condition message of a request to this target that failed."""
        return failure(self.name, exc)


class Targets:
    """This cluster's ``Target``, and one remote ``Target`` per kubeconfig Secret in use."""

    def __init__(self, local: Target, *, manager: Manager, allowed_servers: Sequence[str]) -> None:
        self.local = local
        self._manager = manager
        # one watch per kubeconfig Secret in use: a changed (fixed, rotated) Secret re-runs its objects at once
        self._secrets = ExternalWatches(local.kube, local.mapper, manager)
        self._allowed_servers = tuple(allowed_servers)
        self._remote: dict[str, Target] = {}
        self._bound: dict[tuple[str, str], Target] = {}
        self._on_child_change: Callable[[ChildChange], None] | None = None
        self._lock = asyncio.Lock()

    @property
    def remote(self) -> dict[str, Target]:
        return dict(self._remote)

    def route_children_to(self, on_change: Callable[[ChildChange], None]) -> None:
        """Where every target's child watches send changes while this process leads."""
        self._on_child_change = on_change
        self.local.child_watches.route_to(on_change)
        for target in self._remote.values():
            target.child_watches.route_to(on_change)

    async def for_object(self, controller: str, key: str, obj: Object) -> Target:
        """The target ``obj`` (``key`` of ``controller``) deploys to.

        ``TargetError`` when its Secret or cluster cannot be used; the Secret is watched either way,
        so a fix re-runs the object at once instead of at the end of its back-off.
        """
        try:
            ref = target_ref(obj)
        except TargetRefError as exc:
            self._secrets.follow(controller, key, set())
            raise TargetError(str(exc)) from None
        secret_ref = ref_of(ref.namespace, "", "Secret", ref.name) if ref else ""
        self._secrets.follow(controller, key, {secret_ref} if ref else set())
        target = self.local if ref is None else await self._remote_target(ref, self._secrets.cached(secret_ref))
        self._bind(controller, key, target)
        return target

    async def _remote_target(self, ref: TargetRef, watched: Object | None) -> Target:
        """The target of ``ref``; ``watched`` is the Secret as its watch has it (None: read it now)."""
        secret = watched if watched is not None else await read_kubeconfig_secret(self.local.kube, ref)
        version = str(secret.get("metadata", {}).get("resourceVersion", ""))
        async with self._lock:
            known = self._remote.get(str(ref))
            if known is not None and known.secret_version == version:
                return known
            if known is not None:
                await self._close(known)
            target = await self._connect(ref, secret, version)
            self._remote[str(ref)] = target
            return target

    def _bind(self, controller: str, key: str, target: Target) -> None:
        """``key`` of ``controller`` now deploys to ``target``: a previous target stops following it."""
        follower = (controller, key)
        previous = self._bound.get(follower)
        if previous is not None and previous is not target:
            previous.external_watches.follow(controller, key, set())
        self._bound[follower] = target

    def unbind(self, controller: str, key: str) -> None:
        """``key`` of ``controller`` is gone: nothing follows it any more."""
        self._secrets.follow(controller, key, set())
        target = self._bound.pop((controller, key), None)
        if target is not None:
            target.external_watches.follow(controller, key, set())

    async def _connect(self, ref: TargetRef, secret: Object, version: str) -> Target:
        kube = await connect_checked(
            ref,
            secret,
            allowed_servers=self._allowed_servers,
            field_manager=FIELD_MANAGER_ATC,
            user_agent=USER_AGENT,
        )
        target = self._target(str(ref), kube, version)
        log.info("connected to a target cluster", extra={"secret": str(ref)})
        return target

    def _target(self, name: str, kube: KubeClient, version: str) -> Target:
        local = self.local.cluster
        mapper = RestMapper(kube)
        child_watches = ChildWatches(kube)
        if self._on_child_change is not None:
            child_watches.route_to(self._on_child_change)
        return Target(
            name=name,
            cluster=Cluster(kube, mapper, local.engine, local.readiness),
            gateway=LoopGateway(kube, mapper, asyncio.get_running_loop()),
            child_watches=child_watches,
            external_watches=ExternalWatches(kube, mapper, self._manager),
            secret_version=version,
        )

    async def _close(self, target: Target) -> None:
        await target.child_watches.stop()
        await target.external_watches.stop()
        await target.kube.close()

    async def stop(self) -> None:
        """Leadership ended: close every remote target (they are connected again on demand)."""
        async with self._lock:
            remote, self._remote = list(self._remote.values()), {}
        self._bound.clear()
        await self._secrets.stop()
        for target in remote:
            await self._close(target)


def for_target(request: TakeoffRequest, target: Target) -> TakeoffRequest:
    """``request`` as it deploys to ``target``: without ownerReferences in another cluster."""
    return without_owners(request) if target.remote else request
