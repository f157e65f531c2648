"""A ``KubeClient`` for another (target) cluster, from a kubeconfig a tenant put in a Secret.

The controller reads the Secret an instance, Flight or ClusterFlight names (``atc.model.target``)
and calls ``connect_target(data, allowed_servers=..., match=..., field_manager=...)``;
``target_endpoint`` is the check behind it, usable on its own (the webhook can refuse a bad
kubeconfig early). The kubeconfig is untrusted, so only a narrow shape is accepted:

- one YAML or JSON document of at most 1 MiB, without anchors or aliases, read with
  ``yaml.safe_load``; its ``current-context``, or its only context;
- a cluster whose ``server`` is an ``https://`` URL (host, optional port and path; no user, query
  or fragment) matching one of ``allowed_servers`` (Go ``path.Match`` globs on the whole URL, the
  operator's ``TARGET_SERVER_ALLOW_LIST``; an empty list turns the feature off), with an inline
  ``certificate-authority-data`` and optionally ``tls-server-name``;
- a user with inline ``client-certificate-data`` and ``client-key-data`` and/or an inline ``token``.

Everything else is refused with ``TargetKubeconfigError``, in particular every key that names a
file (``certificate-authority``, ``client-certificate``, ``client-key``, ``tokenFile``), ``exec``
and ``auth-provider`` plugins, ``username``/``password``, impersonation (``as``, ``as-uid``,
``as-groups``, ``as-user-extra``), ``proxy-url`` and ``insecure-skip-tls-verify: true``. Why: a file
path would make the controller read its own files and send them to a server the tenant chose, e.g.
its service-account token (``/var/run/secrets/kubernetes.io/serviceaccount/token``) or its client
certificates; an exec plugin (or an auth-provider's command) would run a tenant's command inside the
controller pod; a proxy or a disabled certificate check would let someone else read the traffic.

The resulting ``Endpoint`` holds PEM bytes and a token only, so it reads no file of the process
(``Endpoint.ssl_context`` writes the PEM bytes to a private temporary directory while it loads
them, and the CA given means the system trust store is not loaded either). It never falls back to
the in-cluster service account, ``KUBECONFIG`` or kubernetes-asyncio (``KUBE_LOADER`` is ignored),
and its ``Transport`` has ``trust_env`` off (no proxy variables, no ``~/.netrc``) and does not
follow redirects (a redirect would reach a server the allow-list never saw).

Error messages name the field and the rule, never a value of the kubeconfig (no server, no name,
no token): they end up in conditions and logs that other people read.

Go ``path.Match`` lives in ``atc.wasm.globs``, a layer above this one (docs/design.md, "The
library's layers"), so the caller passes the matcher: ``match=atc.wasm.globs.path_match``.
"""

from __future__ import annotations

import base64
import binascii
import re
import ssl
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import yaml

from atc.k8s.client import KubeClient
from atc.k8s.connection import Endpoint, Transport

MAX_KUBECONFIG_BYTES = 1 << 20  # 1 MiB
MAX_YAML_DEPTH = 64  # a kubeconfig nests about 6 levels; deeper input would only exhaust the composer's stack
ALLOW_LIST_SETTING = "TARGET_SERVER_ALLOW_LIST"
CONNECT_TIMEOUT_SECONDS = 10.0  # a target that drops packets is "unreachable" after this, not after the OS gives up
DEFAULT_USER_AGENT = "atc-controller"

# Accepted keys; the other known keys get a message of their own (``_REFUSED_*``), unknown ones a generic one.
CLUSTER_KEYS = frozenset(
    {"server", "certificate-authority-data", "tls-server-name", "insecure-skip-tls-verify", "disable-compression"}
    | {"extensions"}
)
USER_KEYS = frozenset({"client-certificate-data", "client-key-data", "token", "extensions"})
CONTEXT_KEYS = frozenset({"cluster", "user", "namespace", "extensions"})
_FILE_RULE = "names a file, and the controller reads no file for another cluster; put the content in"
_REFUSED_CLUSTER = {
    "certificate-authority": f"{_FILE_RULE} certificate-authority-data",
    "proxy-url": "is not supported: the controller reaches other clusters directly, never through a proxy",
}
_REFUSED_USER = {
    "client-certificate": f"{_FILE_RULE} client-certificate-data",
    "client-key": f"{_FILE_RULE} client-key-data",
    "tokenFile": f"{_FILE_RULE} token",
    "exec": "is not supported: the controller runs no command of a kubeconfig; use an inline client certificate "
    "or token",
    "auth-provider": "is not supported: the controller runs no auth provider of a kubeconfig; use an inline client "
    "certificate or token",
    "username": "is not supported (basic authentication); use an inline client certificate or token",
    "password": "is not supported (basic authentication); use an inline client certificate or token",
    "as": "is not supported: impersonation is not allowed in a target kubeconfig",
    "as-uid": "is not supported: impersonation is not allowed in a target kubeconfig",
    "as-groups": "is not supported: impersonation is not allowed in a target kubeconfig",
    "as-user-extra": "is not supported: impersonation is not allowed in a target kubeconfig",
}
# https://host[:port][/path]: an ASCII host name, IPv4 or [IPv6] address; a path of plain characters. No
# userinfo, query, fragment, percent-escape or backslash, so what the allow-list glob sees is what is dialled.
_SERVER = re.compile(
    r"https://(?P<host>[A-Za-z0-9](?:[-A-Za-z0-9.]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])"
    r"(?::(?P<port>[0-9]{1,5}))?(?P<path>(?:/[-A-Za-z0-9._~]*)*)"
)
_TOKEN = re.compile(r"[\x21-\x7e]+")  # visible ASCII: what an Authorization header can carry
_HOST_NAME = re.compile(r"[A-Za-z0-9](?:[-A-Za-z0-9.]*[A-Za-z0-9])?")


class TargetKubeconfigError(Exception):
    """The target kubeconfig is refused; the message names the field and the rule, never a value."""


def target_endpoint(data: bytes, *, allowed_servers: Sequence[str], match: Callable[[str, str], bool]) -> Endpoint:
    """The endpoint of a tenant's kubeconfig ``data`` (module docstring), or ``TargetKubeconfigError``.

    ``match(pattern, server)`` decides whether a glob of ``allowed_servers`` allows the server URL:
    pass ``atc.wasm.globs.path_match`` (Go's ``path.Match``, as yoke's ``MODULE_ALLOW_LIST``).
    """
    if not allowed_servers:
        raise TargetKubeconfigError(f"deploying to other clusters is off: no server is allowed by {ALLOW_LIST_SETTING}")
    config = _load(data)
    context = _context(config)
    cluster = _named_section(config, "clusters", "cluster", context.get("cluster"))
    user_name = context.get("user")
    user = {} if user_name in (None, "") else _named_section(config, "users", "user", user_name)
    server = _server(cluster, allowed_servers, match)
    endpoint = Endpoint(host=server.rstrip("/"), **_cluster_tls(cluster), **_credentials(user))
    _check_pem(endpoint)
    return endpoint


async def connect_target(
    data: bytes,
    *,
    allowed_servers: Sequence[str],
    match: Callable[[str, str], bool],
    field_manager: str,
    user_agent: str = DEFAULT_USER_AGENT,
) -> KubeClient:
    """A ``KubeClient`` for the target cluster of ``data``; close it (``await client.close()`` or
    ``async with``). Nothing is sent before the first request."""
    endpoint = target_endpoint(data, allowed_servers=allowed_servers, match=match)
    transport = Transport(
        endpoint,
        user_agent=user_agent,
        trust_env=False,
        follow_redirects=False,
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
    )
    return KubeClient(transport, field_manager=field_manager)


# ----------------------------------------------------------------------------------------------- parsing
def _load(data: bytes) -> dict[str, Any]:
    if len(data) > MAX_KUBECONFIG_BYTES:
        raise TargetKubeconfigError("the kubeconfig is larger than 1 MiB")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise TargetKubeconfigError("the kubeconfig is not UTF-8 text") from None
    try:
        _check_events(text)
        config = yaml.safe_load(text)
    except yaml.YAMLError:
        raise TargetKubeconfigError("the kubeconfig is not valid YAML or JSON") from None
    if not isinstance(config, dict):
        raise TargetKubeconfigError("the kubeconfig is not a YAML or JSON mapping (kind: Config)")
    return config


def _check_events(text: str) -> None:
    """One document, no anchors or aliases, nesting bounded: checked on the parser's events, before any
    object is built (the parser keeps no recursion; the composer does)."""
    depth = documents = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise TargetKubeconfigError("the kubeconfig uses YAML anchors or aliases, which are not allowed")
        if isinstance(event, yaml.DocumentStartEvent):
            documents += 1
            if documents > 1:
                raise TargetKubeconfigError("the kubeconfig holds more than one YAML document")
        elif isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise TargetKubeconfigError(f"the kubeconfig nests deeper than {MAX_YAML_DEPTH} levels")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _context(config: Mapping[str, Any]) -> Mapping[str, Any]:
    current = config.get("current-context")
    if current not in (None, ""):
        return _named_section(config, "contexts", "context", current, what="current-context")
    contexts = config.get("contexts")
    if not isinstance(contexts, list) or len(contexts) != 1:
        raise TargetKubeconfigError(
            "the kubeconfig has no current-context, so it must have exactly one context; set current-context"
        )
    return _named_section(config, "contexts", "context", _item_name(contexts[0], "contexts"))


def _item_name(item: Any, section: str) -> Any:
    if not isinstance(item, dict) or "name" not in item:
        raise TargetKubeconfigError(f"an entry of the kubeconfig's {section} has no name")
    return item["name"]


def _named_section(config: Mapping[str, Any], section: str, key: str, name: Any, *, what: str = "") -> dict[str, Any]:
    """The ``key`` mapping of the one entry of ``config[section]`` called ``name``."""
    referrer = what or f"the context's {key}"
    if not isinstance(name, str) or not name:
        raise TargetKubeconfigError(f"the kubeconfig's {what or 'context ' + key} is missing or not a string")
    items = config.get(section)
    if not isinstance(items, list):
        raise TargetKubeconfigError(f"the kubeconfig has no {section} list")
    found = [item for item in items if _item_name(item, section) == name]
    if not found:
        raise TargetKubeconfigError(f"the kubeconfig's {referrer} names no entry of its {section}")
    if len(found) > 1:
        raise TargetKubeconfigError(f"the kubeconfig's {referrer} names more than one entry of its {section}")
    body = found[0].get(key)
    if not isinstance(body, dict):
        raise TargetKubeconfigError(f"the kubeconfig's {section} entry has no {key} mapping")
    if key == "context" and not set(body) <= CONTEXT_KEYS:
        raise TargetKubeconfigError(
            f"the kubeconfig's context has a key the controller does not know (allowed: {_listed(CONTEXT_KEYS)})"
        )
    return body


def _listed(keys: frozenset[str]) -> str:
    return ", ".join(sorted(keys))


def _check_keys(section: Mapping[str, Any], which: str, refused: Mapping[str, str], allowed: frozenset[str]) -> None:
    for key, rule in refused.items():
        if key in section:
            raise TargetKubeconfigError(f"the kubeconfig's {which} {key} {rule}")
    if not set(section) <= allowed:
        raise TargetKubeconfigError(
            f"the kubeconfig's {which} has a key the controller does not know (allowed: {_listed(allowed)})"
        )


def _text(section: Mapping[str, Any], key: str, which: str) -> str | None:
    value = section.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise TargetKubeconfigError(f"the kubeconfig's {which} {key} is not a string")
    return value


def _server(cluster: Mapping[str, Any], allowed_servers: Sequence[str], match: Callable[[str, str], bool]) -> str:
    _check_keys(cluster, "cluster", _REFUSED_CLUSTER, CLUSTER_KEYS)
    server = _text(cluster, "server", "cluster")
    if server is None:
        raise TargetKubeconfigError("the kubeconfig's cluster has no server")
    found = _SERVER.fullmatch(server)
    if found is None or (found["port"] is not None and not 0 < int(found["port"]) < 65536):
        raise TargetKubeconfigError(
            "the kubeconfig's cluster server must be an https:// URL: a host name or IP address, an optional port "
            "and path, and no user, query, fragment or escaped characters"
        )
    if not any(match(pattern, server) for pattern in allowed_servers):
        raise TargetKubeconfigError(
            f"the kubeconfig's cluster server is not allowed: it matches no pattern of {ALLOW_LIST_SETTING}"
        )
    return server


def _cluster_tls(cluster: Mapping[str, Any]) -> dict[str, Any]:
    insecure = cluster.get("insecure-skip-tls-verify", False)
    if not isinstance(insecure, bool):
        raise TargetKubeconfigError("the kubeconfig's cluster insecure-skip-tls-verify is not true or false")
    if insecure:
        raise TargetKubeconfigError(
            "the kubeconfig's cluster insecure-skip-tls-verify: true is not allowed; "
            "give the cluster's CA in certificate-authority-data"
        )
    ca = _pem(cluster, "certificate-authority-data", "cluster")
    if ca is None:
        raise TargetKubeconfigError(
            "the kubeconfig's cluster has no certificate-authority-data: the controller trusts another cluster "
            "only through the CA given inline"
        )
    server_name = _text(cluster, "tls-server-name", "cluster")
    if server_name is not None and not _HOST_NAME.fullmatch(server_name):
        raise TargetKubeconfigError("the kubeconfig's cluster tls-server-name is not a host name")
    return {"ca_cert": ca, "tls_server_name": server_name}


def _credentials(user: Mapping[str, Any]) -> dict[str, Any]:
    _check_keys(user, "user", _REFUSED_USER, USER_KEYS)
    cert = _pem(user, "client-certificate-data", "user")
    key = _pem(user, "client-key-data", "user")
    if (cert is None) != (key is None):
        raise TargetKubeconfigError(
            "the kubeconfig's user must have both client-certificate-data and client-key-data, or neither"
        )
    token = _text(user, "token", "user")
    if token is not None and not _TOKEN.fullmatch(token):
        raise TargetKubeconfigError("the kubeconfig's user token has characters an Authorization header cannot carry")
    if cert is None and token is None:
        raise TargetKubeconfigError("the kubeconfig's user has no inline client certificate or token")
    return {"client_cert": cert, "client_key": key, "token": None if token is None else f"Bearer {token}"}


def _pem(section: Mapping[str, Any], key: str, which: str) -> bytes | None:
    text = _text(section, key, which)
    if text is None:
        return None
    try:
        decoded = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise TargetKubeconfigError(f"the kubeconfig's {which} {key} is not base64") from None
    if b"-----BEGIN " not in decoded:
        raise TargetKubeconfigError(f"the kubeconfig's {which} {key} does not hold PEM")
    return decoded


def _check_pem(endpoint: Endpoint) -> None:
    """Load the CA and the client pair once, so a bad one is refused here rather than at the first request."""
    try:
        endpoint.ssl_context()
    except (ssl.SSLError, ValueError):
        raise TargetKubeconfigError(
            "the kubeconfig's certificate-authority-data, client-certificate-data or client-key-data "
            "cannot be loaded (not a certificate, not a key, or a key that does not match the certificate)"
        ) from None
