"""Reaching the API server without importing kubernetes-asyncio: credentials and the HTTP transport.

``KubeClient.connect`` (``atc.k8s.client``) calls ``in_cluster_endpoint()`` (the pod's service
account) or ``kubeconfig_endpoint(path)`` and sends every request through a ``Transport`` built
from the ``Endpoint``. Importing kubernetes-asyncio imports every generated model (about half a
second and 60 MiB per process, docs/design.md "Start-up"), so the cases that need nothing of it are
read here:

- in-cluster: the same steps as kubernetes-asyncio's ``load_incluster_config`` (host from
  ``KUBERNETES_SERVICE_HOST``/``_PORT``, the service account CA, the token file re-read at most
  once a minute, the same error messages);
- a kubeconfig of one file whose current context's cluster is ``https`` with a CA, optional
  ``insecure-skip-tls-verify``, ``tls-server-name`` and ``proxy-url``, and whose user has only client
  certificate and key and/or an inline ``token``.

``kubeconfig_endpoint`` returns None for anything else (exec and auth-provider plugins, basic auth,
``tokenFile``, several files, unknown keys, a malformed file): the caller then loads it with
kubernetes-asyncio, which also gives the error messages of a bad kubeconfig. ``Transport``
mirrors what kubernetes-asyncio's ``ApiClient.call_api`` and ``RESTClientObject`` do for the
requests ``KubeClient`` sends (headers, query encoding, JSON bodies, timeouts, TLS, proxies from
the environment, a 100-connection pool, 2 MiB read buffer).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import os
import re
import ssl
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import yaml

SERVICE_HOST_ENV = "KUBERNETES_SERVICE_HOST"
SERVICE_PORT_ENV = "KUBERNETES_SERVICE_PORT"
SERVICE_TOKEN_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/token"
SERVICE_CA_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
TOKEN_REFRESH_SECONDS = 60.0  # kubernetes-asyncio's in-cluster TOKEN_REFRESH_PERIOD
CONNECTION_POOL_SIZE = 100  # kubernetes-asyncio's Configuration.connection_pool_maxsize
READ_BUFFER_BYTES = 2**21  # kubernetes-asyncio's: watch events of large objects exceed aiohttp's default
PEM_NAMES = ("ca.crt", "tls.crt", "tls.key")
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "OPTIONS", "DELETE"})
CLUSTER_KEYS = frozenset(
    {
        "server",
        "certificate-authority",
        "certificate-authority-data",
        "insecure-skip-tls-verify",
        "tls-server-name",
        "proxy-url",
        "extensions",
    }
)
USER_KEYS = frozenset(
    {"client-certificate", "client-certificate-data", "client-key", "client-key-data", "token", "extensions"}
)


class KubeConfigError(Exception):
    """The kubeconfig or the pod's service account cannot be used to reach the API server."""


class _TokenFile:
    """A bearer token read from a file, again once ``TOKEN_REFRESH_SECONDS`` have passed (rotated tokens)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._value = ""
        self._expires = 0.0
        self.read()

    def read(self) -> None:
        with open(self.path) as token:
            content = token.read()
        if not content:
            raise KubeConfigError("Token file exists but empty.")
        self._value, self._expires = f"Bearer {content}", time.monotonic() + TOKEN_REFRESH_SECONDS

    def authorization(self) -> str:
        if time.monotonic() >= self._expires:
            self.read()
        return self._value


@dataclass(frozen=True)
class Endpoint:
    """One API server and the credentials to call it with (``host`` like kubernetes-asyncio's Configuration).

    Certificates and keys are files, or PEM bytes (a kubeconfig's ``*-data``) that ``ssl_context``
    writes to a private directory only while it loads them.
    """

    host: str
    ca_cert: str | bytes | None = field(default=None, repr=False)
    client_cert: str | bytes | None = field(default=None, repr=False)
    client_key: str | bytes | None = field(default=None, repr=False)
    verify_ssl: bool = True
    tls_server_name: str | None = None
    proxy: str | None = None
    token: str | None = field(default=None, repr=False)  # the whole Authorization value, "Bearer <token>"
    token_file: _TokenFile | None = field(default=None, repr=False)

    def authorization(self) -> str | None:
        if self.token_file is not None:
            return self.token_file.authorization()
        return self.token

    def ssl_context(self) -> ssl.SSLContext:
        """What kubernetes-asyncio's RESTClientObject builds: the CA alone (or the system's), the client pair."""
        pems = (self.ca_cert, self.client_cert, self.client_key)
        if not any(isinstance(pem, bytes) for pem in pems):  # paths only: no directory (read-only file systems)
            return self._ssl_context(*(_as_file(pem, "") for pem in pems))
        with tempfile.TemporaryDirectory(prefix="atc-kube-") as directory:  # mode 0700, removed at once
            return self._ssl_context(
                *(_as_file(pem, os.path.join(directory, name)) for pem, name in zip(pems, PEM_NAMES, strict=True))
            )

    def _ssl_context(self, ca_file: str | None, cert_file: str | None, key_file: str | None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=ca_file)
        if cert_file:
            context.load_cert_chain(cert_file, keyfile=key_file)
        if not self.verify_ssl:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


def _as_file(content: str | bytes | None, path: str) -> str | None:
    """``content`` itself when it is a path, else the PEM bytes written to ``path`` (mode 0600)."""
    if content is None or isinstance(content, str):
        return content
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(content)
    return path


# ----------------------------------------------------------------------------------------------- loading
def _join_host_port(host: str, port: str) -> str:
    return f"[{host}]:{port}" if ":" in host or "%" in host else f"{host}:{port}"


def in_cluster_endpoint(
    environ: Mapping[str, str] | None = None,
    *,
    token_file: str = SERVICE_TOKEN_FILE,
    ca_file: str = SERVICE_CA_FILE,
) -> Endpoint:
    """The pod's service account, as kubernetes-asyncio's ``load_incluster_config`` reads it (same messages)."""
    env = os.environ if environ is None else environ
    if SERVICE_HOST_ENV not in env or SERVICE_PORT_ENV not in env:
        raise KubeConfigError("Service host/port is not set.")
    if not env[SERVICE_HOST_ENV] or not env[SERVICE_PORT_ENV]:
        raise KubeConfigError("Service host/port is set but empty.")
    host = "https://" + _join_host_port(env[SERVICE_HOST_ENV], env[SERVICE_PORT_ENV])
    if not os.path.isfile(token_file):
        raise KubeConfigError("Service token file does not exist.")
    token = _TokenFile(token_file)
    if not os.path.isfile(ca_file):
        raise KubeConfigError("Service certification file does not exists.")
    with open(ca_file) as ca:
        if not ca.read():
            raise KubeConfigError("Cert file exists but empty.")
    return Endpoint(host=host, ca_cert=ca_file, token_file=token)


class _UnsupportedError(Exception):
    """A kubeconfig this module does not read: kubernetes-asyncio loads it (or says what is wrong with it)."""


def _named(items: Any, name: Any, key: str) -> dict[str, Any]:
    """The ``key`` section of the one item called ``name`` in a kubeconfig list."""
    if not isinstance(items, list) or not all(isinstance(item, dict) and "name" in item for item in items):
        raise _UnsupportedError
    found = [item.get(key) for item in items if item["name"] == name]
    if len(found) != 1 or not isinstance(found[0], dict):
        raise _UnsupportedError
    return found[0]


def _text(section: Mapping[str, Any], key: str) -> str | None:
    """An optional non-empty string setting."""
    value = section.get(key)
    if value is not None and not (isinstance(value, str) and value):
        raise _UnsupportedError
    return value


def _file_or_data(section: Mapping[str, Any], key: str, base: str) -> str | bytes | None:
    """``<key>-data`` decoded (it wins, as in kubernetes-asyncio), else the path of the file ``<key>``."""
    if f"{key}-data" in section:
        data = _text(section, f"{key}-data")
        try:
            return base64.b64decode(data or "", validate=True) or None
        except (binascii.Error, ValueError):
            raise _UnsupportedError from None
    if key in section:
        path = os.path.normpath(os.path.join(base, _text(section, key) or ""))
        if not os.path.isfile(path):
            raise _UnsupportedError  # kubernetes-asyncio names the missing file
        return path
    return None


def kubeconfig_endpoint(path: str) -> Endpoint | None:
    """The endpoint of a simple kubeconfig (module docstring); None when kubernetes-asyncio must load it."""
    if not path or os.pathsep in path:
        return None  # several files to merge
    try:
        config = yaml.safe_load(Path(path).expanduser().read_text())
        if not isinstance(config, dict):
            return None
        context = _named(config.get("contexts"), config.get("current-context"), "context")
        cluster = _named(config.get("clusters"), context.get("cluster"), "cluster")
        user = {} if context.get("user") is None else _named(config.get("users"), context["user"], "user")
        if not set(cluster) <= CLUSTER_KEYS or not set(user) <= USER_KEYS:
            return None  # exec, auth-provider, username and password, tokenFile, impersonation, ...
        return _tls_endpoint(cluster, user, os.path.abspath(os.path.dirname(Path(path).expanduser())))
    except (OSError, UnicodeError, yaml.YAMLError, _UnsupportedError):
        return None


def _tls_endpoint(cluster: Mapping[str, Any], user: Mapping[str, Any], base: str) -> Endpoint:
    server, token = _text(cluster, "server"), _text(user, "token")
    insecure = cluster.get("insecure-skip-tls-verify", False)
    if server is None or not server.startswith("https://") or not isinstance(insecure, bool):
        raise _UnsupportedError
    cert, key = _file_or_data(user, "client-certificate", base), _file_or_data(user, "client-key", base)
    if (cert is None) != (key is None):
        raise _UnsupportedError  # a certificate without its key (or the other way round)
    return Endpoint(
        host=server.rstrip("/"),
        ca_cert=_file_or_data(cluster, "certificate-authority", base),
        client_cert=cert,
        client_key=key,
        verify_ssl=not insecure,
        tls_server_name=_text(cluster, "tls-server-name"),
        proxy=_text(cluster, "proxy-url"),
        token=f"Bearer {token}" if token else None,
    )


# ----------------------------------------------------------------------------------------------- transport
def _json_default(value: object) -> str:
    """What kubernetes-asyncio's ``sanitize_for_serialization`` does with dates: ISO 8601."""
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


class Transport:
    """Requests to one ``Endpoint`` over one aiohttp session; ``call_api`` takes kubernetes-asyncio's arguments."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        user_agent: str,
        headers: Mapping[str, str] | None = None,
        trust_env: bool = True,
        follow_redirects: bool = True,
        connect_timeout: float | None = None,
    ) -> None:
        """``trust_env=False`` ignores proxy variables and ``~/.netrc``; ``follow_redirects=False`` returns a
        3xx as it is; ``connect_timeout`` bounds opening a connection (else only the OS does, for a
        host that drops packets about two minutes). ``atc.k8s.remote`` sets all three for other
        clusters' kubeconfigs."""
        self.configuration = endpoint  # ``configuration.host``, as on kubernetes-asyncio's ApiClient
        self.default_headers = {**(headers or {}), "User-Agent": user_agent}
        self._follow_redirects = follow_redirects
        self._connect_timeout = connect_timeout
        connector = aiohttp.TCPConnector(limit=CONNECTION_POOL_SIZE, ssl=endpoint.ssl_context())
        self._session = aiohttp.ClientSession(connector=connector, trust_env=trust_env, read_bufsize=READ_BUFFER_BYTES)

    async def close(self) -> None:
        await self._session.close()

    async def call_api(
        self,
        resource_path: str,
        method: str,
        *,
        query_params: list[tuple[str, str]] | None = None,
        header_params: Mapping[str, str] | None = None,
        body: Any = None,
        auth_settings: list[str] | None = None,
        _preload_content: bool = False,
        _request_timeout: float | aiohttp.ClientTimeout | None = None,
    ) -> aiohttp.ClientResponse:
        """Send one request and return the unread response (kubernetes-asyncio's ``_preload_content=False``)."""
        endpoint = self.configuration
        headers = {**(header_params or {}), **self.default_headers}
        headers.setdefault("Content-Type", "application/json")
        authorization = endpoint.authorization() if auth_settings and "BearerToken" in auth_settings else None
        if authorization:
            headers["authorization"] = authorization
        url = endpoint.host + resource_path
        if query_params:
            url += "?" + urlencode(query_params)
        timeout = aiohttp.ClientTimeout()
        if isinstance(_request_timeout, aiohttp.ClientTimeout):
            timeout = _request_timeout
        elif _request_timeout:
            timeout = aiohttp.ClientTimeout(total=_request_timeout)
        if self._connect_timeout is not None and timeout.sock_connect is None:
            timeout = aiohttp.ClientTimeout(
                total=timeout.total,
                connect=timeout.connect,
                sock_read=timeout.sock_read,
                sock_connect=self._connect_timeout,
            )
        data: Any = None
        if method in BODY_METHODS:
            content_type = headers["Content-Type"]
            if re.search("json", content_type, re.IGNORECASE) or content_type == "application/apply-patch+yaml":
                data = None if body is None else json.dumps(body, default=_json_default)
            elif isinstance(body, bytes):
                data = body
            elif body is not None:
                raise ValueError(f"cannot send a {type(body).__name__} body as {content_type}")
        return await self._session.request(
            method,
            url,
            headers=headers,
            data=data,
            timeout=timeout,
            proxy=endpoint.proxy,
            server_hostname=endpoint.tls_server_name,
            allow_redirects=self._follow_redirects,
        )
