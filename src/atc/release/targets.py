"""Clusters a release deploys to other than this one: from a kubeconfig Secret to a checked ``Cluster``.

An object annotated ``atc.yoke.cd/kubeconfig-secret`` (``atc.model.target``) deploys to the cluster
of the kubeconfig in that Secret (docs/targets.md). This module holds what the controller
(``atc_controller.targets``, real takeoffs) and the webhook (dry runs) both do with it:

- ``read_kubeconfig_secret`` and ``kubeconfig_bytes``: the Secret, read with this cluster's client,
  and the kubeconfig in it (keys in the order the reference gives, at most 1 MiB);
- ``connect_checked``: a client built from the kubeconfig alone (``atc.k8s.remote.connect_target``:
  inline credentials, a server on the allow-list) and checked with ``GET /api``, so a wrong address
  or refused credentials are one clear ``TargetError`` before any flight runs;
- ``without_owners``: a takeoff request as it goes to another cluster (no ownerReferences: the owner
  is an object of this cluster, and the other cluster's garbage collector would delete children
  whose owner it cannot find);
- ``RemoteClusters``: the webhook's bounded cache of such clusters, one per Secret version.

Every ``TargetError`` names the Secret (``namespace/name``, DNS-validated) and never the kubeconfig's
content.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import replace

from atc.k8s.client import KubeClient, KubeError
from atc.k8s.discovery import RestMapper
from atc.k8s.readiness import CustomReadiness
from atc.k8s.remote import MAX_KUBECONFIG_BYTES, TargetKubeconfigError, connect_target
from atc.model.target import TargetRef
from atc.model.types import Object
from atc.release.takeoff import Cluster, TakeoffRequest
from atc.wasm.engine import FlightEngine
from atc.wasm.globs import path_match

CHECK_TIMEOUT_SECONDS = 10.0  # the GET /api that checks a new connection
DEFAULT_REMOTE_CLUSTERS = 32  # the webhook keeps at most this many connections


class TargetError(Exception):
    """The target cluster cannot be used; the message goes on the object's Ready condition.

    ``transient``: the cluster did not answer or refused the credentials, or this cluster's API
    failed; it may work later. Otherwise the configuration is what is wrong (no such Secret or key,
    a refused kubeconfig, a server off the allow-list): nothing was or can be deployed with it.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


def where(name: str) -> str:
    """How messages name the cluster of kubeconfig Secret ``name`` ("" for this cluster)."""
    return f"the target cluster of kubeconfig Secret {name}" if name else "this cluster"


def failure(name: str, exc: KubeError) -> str:
    """The condition message of a request to the cluster of kubeconfig Secret ``name`` that failed."""
    if exc.status == 0:
        return f"{where(name)} is unreachable: {exc.message}"
    if exc.status in (401, 403):
        return f"{where(name)} refused the kubeconfig's credentials: {exc.message}"
    return f"{where(name)}: {exc.message}"


async def read_kubeconfig_secret(kube: KubeClient, ref: TargetRef) -> Object:
    """The Secret ``ref`` names, read with this cluster's client ``kube``."""
    path = f"/api/v1/namespaces/{ref.namespace}/secrets/{ref.name}"
    try:
        return await kube.get(path)
    except KubeError as exc:
        if exc.not_found:
            raise TargetError(f"kubeconfig Secret {ref} not found") from None
        if exc.status == 403:
            raise TargetError(f"the controller may not read kubeconfig Secret {ref}") from None
        raise TargetError(f"failed to read kubeconfig Secret {ref}: {exc.message}", transient=True) from None


def kubeconfig_bytes(secret: Object, ref: TargetRef) -> bytes:
    """The kubeconfig in ``secret``: the first of ``ref.keys`` it has, base64-decoded."""
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


async def connect_checked(
    ref: TargetRef, secret: Object, *, allowed_servers: Sequence[str], field_manager: str, user_agent: str
) -> KubeClient:
    """A client for the cluster of ``secret``'s kubeconfig, once ``GET /api`` answered with its credentials.

    ``user_agent`` names the service in the target's audit log (``atc-controller``, ``atc-webhook``).
    """
    try:
        kube = await connect_target(
            kubeconfig_bytes(secret, ref),
            allowed_servers=allowed_servers,
            match=path_match,
            field_manager=field_manager,
            user_agent=user_agent,
        )
    except TargetKubeconfigError as exc:
        raise TargetError(f"kubeconfig Secret {ref}: {exc}") from None
    try:
        await check_answers(ref, kube)
    except TargetError:
        await kube.close()
        raise
    return kube


async def check_answers(ref: TargetRef, kube: KubeClient) -> None:
    """``GET /api`` with ``kube``, the client of ``ref``'s cluster; ``TargetError`` (transient) if it fails."""
    try:
        await asyncio.wait_for(kube.get("/api"), CHECK_TIMEOUT_SECONDS)
    except TimeoutError:
        raise TargetError(
            f"{where(str(ref))} is unreachable: no answer within {CHECK_TIMEOUT_SECONDS:.0f}s", transient=True
        ) from None
    except KubeError as exc:
        raise TargetError(failure(str(ref), exc), transient=True) from None


def without_owners(request: TakeoffRequest) -> TakeoffRequest:
    """``request`` as it deploys to another cluster: no ownerReferences (module docstring)."""
    return replace(request, owner_references=())


class RemoteClusters:
    """Clusters of kubeconfig Secrets for dry runs: one per Secret version, at most ``limit`` kept.

    ``kube`` reads the Secrets; every cluster shares ``engine`` (the flight runtime) and needs no
    readiness rules (a dry run checks none). The least recently used connection is closed first. A
    kept connection is checked again (``GET /api``) each time it is handed out, so a cluster that went
    away since is a ``TargetError``, not a dry run that fails half-way.
    """

    def __init__(
        self,
        kube: KubeClient,
        engine: FlightEngine,
        *,
        allowed_servers: Sequence[str],
        field_manager: str,
        user_agent: str,
        readiness: CustomReadiness | None = None,
        limit: int = DEFAULT_REMOTE_CLUSTERS,
    ) -> None:
        self._kube = kube
        self._engine = engine
        self._allowed_servers = tuple(allowed_servers)
        self._field_manager = field_manager
        self._user_agent = user_agent
        self._readiness = readiness
        self._limit = limit
        self._clusters: OrderedDict[str, tuple[str, Cluster]] = OrderedDict()
        self._lock = asyncio.Lock()

    async def cluster(self, ref: TargetRef) -> Cluster:
        """The cluster ``ref``'s Secret names now; ``TargetError`` when it cannot be used."""
        secret = await read_kubeconfig_secret(self._kube, ref)
        version = str((secret.get("metadata") or {}).get("resourceVersion", ""))
        key = str(ref)
        async with self._lock:
            known = self._clusters.get(key)
            if known is not None and known[0] == version:
                self._clusters.move_to_end(key)
                await check_answers(ref, known[1].kube)
                return known[1]
            if known is not None:
                del self._clusters[key]
                await known[1].kube.close()
            kube = await connect_checked(
                ref,
                secret,
                allowed_servers=self._allowed_servers,
                field_manager=self._field_manager,
                user_agent=self._user_agent,
            )
            cluster = Cluster(kube, RestMapper(kube), self._engine, self._readiness)
            self._clusters[key] = (version, cluster)
            while len(self._clusters) > self._limit:
                _, (_, oldest) = self._clusters.popitem(last=False)
                await oldest.kube.close()
            return cluster

    async def close(self) -> None:
        async with self._lock:
            clusters, self._clusters = list(self._clusters.values()), OrderedDict()
        for _, cluster in clusters:
            await cluster.kube.close()
