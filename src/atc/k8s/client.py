"""A small JSON client for the Kubernetes API; kubernetes-asyncio only for the kubeconfigs that need it.

``KubeClient.connect`` reads in-cluster credentials and simple kubeconfigs itself and sends
requests over ``atc.k8s.connection.Transport``; a kubeconfig with exec or auth-provider plugins
(or anything else ``atc.k8s.connection`` does not read) is loaded by kubernetes-asyncio and sent
through its ``ApiClient``, imported only then (docs/design.md, "Start-up"). This module sends
plain JSON requests and turns error responses into ``KubeError`` with the API server's own
message (``secrets "x" not found``). Every API call of the project goes
through a ``KubeClient``: in the library, apply, discovery, the reflector,
readiness, Events, the yoke.cd CRDs (``atc.k8s``), revisions and pruning
(``atc.release``), the flight host functions (through ``atc.k8s.gateway``) and
the docker-config watcher (``atc.service.docker_secret``); in the services, the
controller's reconcilers, child and external watches and Lease, and the
webhook's caches, admission checks, Event writer and registration.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

import aiohttp

from atc.k8s.connection import KubeConfigError, Transport, in_cluster_endpoint, kubeconfig_endpoint
from atc.model.types import Object

DEFAULT_TIMEOUT = 30.0
APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH"})
USER_AGENT = "yoke-atc-py"
LOADER_ENV = "KUBE_LOADER"  # "kubernetes-asyncio": every configuration through the library
LIBRARY_LOADER = "kubernetes-asyncio"

__all__ = ["ApiTransport", "KubeClient", "KubeConfigError", "KubeError", "resource_of"]


class ApiTransport(Protocol):
    """What ``KubeClient`` needs of its API client: ``atc.k8s.connection.Transport`` or kubernetes-asyncio's."""

    configuration: Any  # has ``host``

    async def call_api(
        self,
        resource_path: str,
        method: str,
        *,
        query_params: list[tuple[str, str]],
        header_params: dict[str, str],
        body: Any,
        auth_settings: list[str],
        _preload_content: bool,
        _request_timeout: float | aiohttp.ClientTimeout | None,
    ) -> Any: ...

    async def close(self) -> None: ...


class KubeError(Exception):
    """An error answer (or a failed call) from the API server."""

    def __init__(self, status: int, message: str, reason: str = "", body: Object | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason
        self.body = body or {}

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409


def resource_of(path: str) -> str:
    """The resource a request path addresses: ``/api/v1/namespaces/x/secrets/y`` -> ``secrets``."""
    parts = [part for part in path.split("?", 1)[0].split("/") if part]
    rest = parts[2:] if parts[:1] == ["api"] else parts[3:]
    if len(rest) >= 2 and rest[0] == "namespaces" and len(rest) > 2:
        rest = rest[2:]
    if not rest:
        return "discovery"
    return f"{rest[0]}/{rest[2]}" if len(rest) > 2 else rest[0]


def _error_from(status: int, raw: bytes) -> KubeError:
    try:
        body = json.loads(raw)
    except ValueError:
        return KubeError(status, raw.decode(errors="replace").strip() or f"HTTP {status}")
    if isinstance(body, dict) and body.get("kind") == "Status":
        return KubeError(status, str(body.get("message", "")), str(body.get("reason", "")), body)
    return KubeError(status, f"HTTP {status}: {raw[:200].decode(errors='replace')}")


async def _kubernetes_asyncio_client(kubeconfig: str, headers: Mapping[str, str]) -> ApiTransport:
    """kubernetes-asyncio's ApiClient: for what ``atc.k8s.connection`` does not read (exec plugins, ...),
    and for everything when ``KUBE_LOADER=kubernetes-asyncio`` (in-cluster too, ``kubeconfig`` empty)."""
    from kubernetes_asyncio import client, config  # imported here: half a second of generated models

    configuration = client.Configuration()
    try:
        if kubeconfig:
            await config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        else:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except config.ConfigException as exc:
        raise KubeConfigError(str(exc)) from exc
    api = client.ApiClient(configuration)
    api.user_agent = USER_AGENT
    for key, value in headers.items():
        api.set_default_header(key, value)
    return api


class KubeClient:
    """JSON requests to one API server with the credentials of a kubeconfig or the pod."""

    def __init__(self, api: ApiTransport, *, field_manager: str = "") -> None:
        self._api = api
        self.field_manager = field_manager  # sent with every write that names no manager of its own
        self.requests: Counter[tuple[str, str]] = Counter()  # (verb, resource), for metrics

    @classmethod
    async def connect(
        cls, kubeconfig: str = "", *, qps_headers: Mapping[str, str] | None = None, field_manager: str = ""
    ) -> KubeClient:
        """Credentials from ``kubeconfig`` (a path), or the in-cluster service account when empty.

        ``KUBE_LOADER=kubernetes-asyncio`` in the environment loads every configuration with
        kubernetes-asyncio instead of ``atc.k8s.connection`` (docs/design.md, "Start-up").

        ``field_manager`` is the manager of writes that name none (status updates, metadata patches);
        without it the API server derives one from the user agent.
        """
        if os.environ.get(LOADER_ENV) == LIBRARY_LOADER:
            api = await _kubernetes_asyncio_client(kubeconfig, qps_headers or {})
        elif kubeconfig:
            endpoint = kubeconfig_endpoint(kubeconfig)
            api = (
                Transport(endpoint, user_agent=USER_AGENT, headers=qps_headers)
                if endpoint is not None
                else await _kubernetes_asyncio_client(kubeconfig, qps_headers or {})
            )
        else:
            api = Transport(in_cluster_endpoint(), user_agent=USER_AGENT, headers=qps_headers)
        return cls(api, field_manager=field_manager)

    @property
    def server(self) -> str:
        return str(self._api.configuration.host)

    async def close(self) -> None:
        await self._api.close()

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def _send(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None,
        body: Any,
        content_type: str,
        accept: str,
        timeout: float | aiohttp.ClientTimeout | None,
    ) -> aiohttp.ClientResponse:
        self.requests["APPLY" if content_type == APPLY_PATCH else method, resource_of(path)] += 1
        if self.field_manager and method in WRITE_METHODS and "fieldManager" not in (query or {}):
            query = {**(query or {}), "fieldManager": self.field_manager}
        try:
            response: aiohttp.ClientResponse = await self._api.call_api(
                path,
                method,
                query_params=list((query or {}).items()),
                header_params={"Content-Type": content_type, "Accept": accept},
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=timeout,
            )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise KubeError(0, f"{method} {path}: {exc or type(exc).__name__}") from exc
        return response

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        accept: str = "application/json",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> Object:
        """Send one request and return the decoded JSON answer; error answers raise ``KubeError``."""
        _, decoded = await self._exchange(method, path, query, body, content_type, accept, timeout)
        return decoded

    async def _exchange(
        self,
        method: str,
        path: str,
        query: Mapping[str, str] | None,
        body: Any,
        content_type: str,
        accept: str,
        timeout: float,
    ) -> tuple[int, Object]:
        """One request: the HTTP status of a successful answer and its decoded JSON."""
        response = await self._send(
            method, path, query=query, body=body, content_type=content_type, accept=accept, timeout=timeout
        )
        async with response:
            try:
                raw = await response.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise KubeError(0, f"{method} {path}: {exc or type(exc).__name__}") from exc
            if not 200 <= response.status < 300:
                raise _error_from(response.status, raw)
        decoded: Object = json.loads(raw) if raw else {}
        return response.status, decoded

    async def get_text(self, path: str) -> str:
        """A non-JSON GET (``/metrics``, ``/readyz``)."""
        response = await self._send(
            "GET", path, query=None, body=None, content_type="text/plain", accept="text/plain", timeout=DEFAULT_TIMEOUT
        )
        async with response:
            raw = await response.read()
            if not 200 <= response.status < 300:
                raise _error_from(response.status, raw)
        return raw.decode(errors="replace")

    async def get(self, path: str, *, query: Mapping[str, str] | None = None) -> Object:
        return await self.request("GET", path, query=query)

    async def get_or_none(self, path: str) -> Object | None:
        """The object at ``path``, or None when it does not exist."""
        try:
            return await self.get(path)
        except KubeError as exc:
            if exc.not_found:
                return None
            raise

    async def apply(
        self, path: str, body: Object, *, field_manager: str, force: bool = False, dry_run: bool = False
    ) -> Object:
        """Server-side apply ``body`` to the object at ``path``."""
        applied, _ = await self.apply_reporting_create(
            path, body, field_manager=field_manager, force=force, dry_run=dry_run
        )
        return applied

    async def apply_reporting_create(
        self, path: str, body: Object, *, field_manager: str, force: bool = False, dry_run: bool = False
    ) -> tuple[Object, bool]:
        """Server-side apply, and whether this very request created the object (HTTP 201)."""
        query = {"fieldManager": field_manager}
        if force:
            query["force"] = "true"
        if dry_run:
            query["dryRun"] = "All"
        status, applied = await self._exchange(
            "PATCH", path, query, body, APPLY_PATCH, "application/json", DEFAULT_TIMEOUT
        )
        return applied, status == 201

    async def watch(
        self,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        timeout_seconds: int = 300,
        accept: str = "application/json",
    ) -> AsyncIterator[Object]:
        """Yield watch events (``{"type", "object"}``) until the server closes the stream.

        ``accept`` may ask for another representation, e.g. ``PartialObjectMetadata`` (metadata only).
        """
        params = {**(query or {}), "watch": "true", "timeoutSeconds": str(timeout_seconds)}
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=DEFAULT_TIMEOUT, sock_read=timeout_seconds + 30)
        response = await self._send(
            "GET",
            path,
            query=params,
            body=None,
            content_type="application/json",
            accept=accept,
            timeout=timeout,
        )
        async with response:
            if response.status != 200:
                raise _error_from(response.status, await response.read())
            async for line in response.content:
                if line.strip():
                    yield json.loads(line)
