"""Where a release lives: this cluster, or the workload cluster a kubeconfig Secret names (docs/targets.md).

An instance, Flight or ClusterFlight annotated ``atc.yoke.cd/kubeconfig-secret`` (``atc.model.target``)
deploys to another cluster. The flight still runs here; its lookups, the applies, pruning,
readiness, the revision history and the drift watches of the modes all use the ``Target`` that
``Targets.for_object(obj)`` returns, while the object's status, conditions and Events stay here.

A remote ``Target`` is built from the Secret alone (``atc.k8s.remote.connect_target``: inline
credentials only, the server on ``TARGET_SERVER_ALLOW_LIST``), so this cluster's credentials never
reach a target. It is kept per Secret and built again when the Secret's resourceVersion changes; a
new one is checked with ``GET /api`` before use, so a wrong address or refused credentials give one
clear ``TargetError`` instead of a failure in the middle of a takeoff.
Each kubeconfig Secret in use is watched, so fixing or rotating it re-runs its objects at once, and
a reconcile reads the Secret from that watch (a GET only until the watch has listed it). The
reconcilers call ``for_object`` and ``unbind``; ``app`` builds ``Targets`` and stops it when
leadership ends.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from atc.k8s.client import KubeClient, KubeError
from atc.k8s.discovery import RestMapper
from atc.k8s.gateway import LoopGateway
from atc.k8s.refs import ref_of
from atc.k8s.remote import TargetKubeconfigError, connect_target
from atc.model.constants import FIELD_MANAGER_ATC
from atc.model.target import TargetRef, TargetRefError, target_ref
from atc.model.types import Object
from atc.release.takeoff import Cluster, TakeoffRequest
from atc.wasm.globs import path_match

from .children import ChildChange, ChildWatches
from .core.controller import Manager
from .external import ExternalWatches

log = logging.getLogger("atc.controller.targets")
MAX_KUBECONFIG_BYTES = 1 << 20


class TargetError(Exception):
    """The target cluster cannot be used; the message goes on the object's Ready condition.

    ``transient``: the cluster did not answer or refused the credentials, or this cluster's API
    failed; it may work later. Otherwise the configuration is what is wrong (no such Secret or key,
    a refused kubeconfig, a server off the allow-list): nothing was or can be deployed with it.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


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
        return f"the target cluster of kubeconfig Secret {self.name}" if self.remote else "this cluster"

    def failure(self, exc: KubeError) -> str:
        """The condition message of a request to this target that failed."""
        if exc.status == 0:
            return f"{self.where()} is unreachable: {exc.message}"
        if exc.status in (401, 403):
            return f"{self.where()} refused the kubeconfig's credentials: {exc.message}"
        return f"{self.where()}: {exc.message}"


def _kubeconfig_bytes(secret: Object, ref: TargetRef) -> bytes:
    data = secret.get("data") if isinstance(secret.get("data"), dict) else {}
    for key in ref.keys:
        encoded = (data or {}).get(key)
        if not isinstance(encoded, str):
            continue
        if len(encoded) > MAX_KUBECONFIG_BYTES * 4 // 3 + 4:
            raise TargetError(f"kubeconfig Secret {ref}: key {key} is larger than 1 MiB")
        try:
            return base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise TargetError(f"kubeconfig Secret {ref}: key {key} is not valid base64") from None
    raise TargetError(f"kubeconfig Secret {ref} has no key {' or '.join(ref.keys)}")


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
        secret = watched if watched is not None else await self._read_secret(ref)
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

    async def _read_secret(self, ref: TargetRef) -> Object:
        path = f"/api/v1/namespaces/{ref.namespace}/secrets/{ref.name}"
        try:
            return await self.local.kube.get(path)
        except KubeError as exc:
            if exc.not_found:
                raise TargetError(f"kubeconfig Secret {ref} not found") from None
            if exc.status == 403:
                raise TargetError(f"the controller may not read kubeconfig Secret {ref}") from None
            raise TargetError(f"failed to read kubeconfig Secret {ref}: {exc.message}", transient=True) from None

    async def _connect(self, ref: TargetRef, secret: Object, version: str) -> Target:
        data = _kubeconfig_bytes(secret, ref)
        try:
            kube = await connect_target(
                data, allowed_servers=self._allowed_servers, match=path_match, field_manager=FIELD_MANAGER_ATC
            )
        except TargetKubeconfigError as exc:
            raise TargetError(f"kubeconfig Secret {ref}: {exc}") from None
        target = self._target(str(ref), kube, version)
        try:
            await kube.get("/api")
        except KubeError as exc:
            message = target.failure(exc)
            await self._close(target)
            raise TargetError(message, transient=True) from None
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
    """``request`` as it deploys to ``target``: no ownerReferences in another cluster.

    The owner (the instance or Flight) is an object of this cluster; the target's garbage collector
    would find no such owner there and delete the children.
    """
    return replace(request, owner_references=()) if target.remote else request
