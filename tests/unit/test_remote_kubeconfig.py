"""Target kubeconfigs from tenants (``atc.k8s.remote``): what is accepted, what is refused and why.

Refusal messages must name the rule and never a value of the kubeconfig (server, names, token,
file paths), so every refusal is also checked against the secrets of its input. The client tests
run against a local HTTPS server that requires a client certificate.
"""

from __future__ import annotations

import base64
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from servers import mutual_tls_server

from atc.k8s.client import KubeError
from atc.k8s.connection import Endpoint
from atc.k8s.remote import MAX_KUBECONFIG_BYTES, TargetKubeconfigError, connect_target, target_endpoint
from atc.service.certificates import CertificateAuthority, KeyPair
from atc.wasm.globs import path_match

SERVER = "https://secret-host.example.com:6443"
TOKEN = "s3cr3t-t0ken-value"
SA_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
NAMES = ("ctx-hidden-name", "cluster-hidden-name", "user-hidden-name")
ALLOW = ("https://*.example.com:6443",)
# What no message may contain: values of the kubeconfigs below.
SECRETS = (SERVER, "secret-host", TOKEN, SA_TOKEN, "/etc/", "evil", "proxy.example", *NAMES)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass(frozen=True)
class Pki:
    ca: CertificateAuthority
    client: KeyPair
    serving: KeyPair


@pytest.fixture(scope="module")
def pki() -> Pki:
    ca = CertificateAuthority.create("target-ca")
    return Pki(
        ca, ca.issue_client("deployer", ("system:masters",)), ca.issue_serving("api", ["localhost"], ["127.0.0.1"])
    )


def config(
    pki: Pki,
    *,
    server: str = SERVER,
    cluster: dict[str, Any] | None = None,
    user: dict[str, Any] | None = None,
    with_cert: bool = True,
) -> dict[str, Any]:
    """A kubeconfig of one context; ``cluster``/``user`` entries are added (a None value removes a key)."""
    cluster_body: dict[str, Any] = {"server": server, "certificate-authority-data": b64(pki.ca.cert_pem)}
    user_body: dict[str, Any] = {}
    if with_cert:
        user_body = {"client-certificate-data": b64(pki.client.cert_pem), "client-key-data": b64(pki.client.key_pem)}
    for body, extra in ((cluster_body, cluster), (user_body, user)):
        for key, value in (extra or {}).items():
            if value is None:
                body.pop(key, None)
            else:
                body[key] = value
    context, cluster_name, user_name = NAMES
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster_name, "cluster": cluster_body}],
        "users": [{"name": user_name, "user": user_body}],
        "contexts": [{"name": context, "context": {"cluster": cluster_name, "user": user_name}}],
        "current-context": context,
    }


def dump(value: dict[str, Any]) -> bytes:
    return json.dumps(value).encode()


def refused(data: bytes, allowed: tuple[str, ...] = ALLOW) -> str:
    """The refusal message for ``data``, checked to carry no value of it."""
    with pytest.raises(TargetKubeconfigError) as caught:
        target_endpoint(data, allowed_servers=allowed, match=path_match)
    message = str(caught.value)
    for secret in SECRETS:
        assert secret not in message
    assert caught.value.__cause__ is None  # ``from None``: no parser error quoting the input either
    return message


def accepted(data: bytes, allowed: tuple[str, ...] = ALLOW) -> Endpoint:
    return target_endpoint(data, allowed_servers=allowed, match=path_match)


# ----------------------------------------------------------------------------------------------- accepted
def test_a_client_certificate_kubeconfig_gives_an_inline_endpoint(pki: Pki) -> None:
    endpoint = accepted(dump(config(pki)))
    assert endpoint.host == SERVER
    assert endpoint.ca_cert == pki.ca.cert_pem
    assert (endpoint.client_cert, endpoint.client_key) == (pki.client.cert_pem, pki.client.key_pem)
    assert endpoint.authorization() is None
    assert endpoint.verify_ssl
    assert endpoint.proxy is None
    assert endpoint.token_file is None
    assert endpoint.tls_server_name is None


def test_a_token_kubeconfig_in_yaml_gives_a_bearer_token(pki: Pki) -> None:
    data = yaml.safe_dump(config(pki, user={"token": TOKEN}, with_cert=False)).encode()
    endpoint = accepted(data)
    assert endpoint.host == SERVER
    assert endpoint.authorization() == f"Bearer {TOKEN}"
    assert endpoint.client_cert is None
    assert endpoint.client_key is None
    assert TOKEN not in repr(endpoint)


def test_certificate_and_token_together_tls_server_name_and_a_path(pki: Pki) -> None:
    data = dump(
        config(
            pki,
            server="https://proxy.example.com:6443/k8s/clusters/c-1/",
            cluster={"tls-server-name": "kubernetes", "insecure-skip-tls-verify": False},
            user={"token": TOKEN},
        )
    )
    endpoint = accepted(data, ("https://*.example.com:6443/k8s/clusters/*/",))
    assert endpoint.host == "https://proxy.example.com:6443/k8s/clusters/c-1"
    assert endpoint.tls_server_name == "kubernetes"
    assert endpoint.client_cert == pki.client.cert_pem
    assert endpoint.authorization() == f"Bearer {TOKEN}"


def test_the_endpoint_loads_no_system_trust_store(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = accepted(dump(config(pki)))
    assert all(isinstance(pem, bytes) for pem in (endpoint.ca_cert, endpoint.client_cert, endpoint.client_key))

    def forbidden(*_: object, **__: object) -> None:
        raise AssertionError("the system trust store was loaded")

    monkeypatch.setattr(ssl.SSLContext, "load_default_certs", forbidden)
    assert endpoint.ssl_context().verify_mode == ssl.CERT_REQUIRED


# ----------------------------------------------------------------------------------------------- contexts
def two_contexts(pki: Pki, current: str | None) -> dict[str, Any]:
    value = config(pki)
    value["clusters"].append(
        {"name": "other", "cluster": {**value["clusters"][0]["cluster"], "server": "https://b.example.com:6443"}}
    )
    value["contexts"].append({"name": "second", "context": {"cluster": "other", "user": NAMES[2]}})
    if current is None:
        del value["current-context"]
    else:
        value["current-context"] = current
    return value


def test_current_context_picks_among_several(pki: Pki) -> None:
    assert accepted(dump(two_contexts(pki, "second"))).host == "https://b.example.com:6443"
    assert accepted(dump(two_contexts(pki, NAMES[0]))).host == SERVER


def test_without_current_context_the_only_context_is_used(pki: Pki) -> None:
    value = config(pki)
    value["current-context"] = ""
    assert accepted(dump(value)).host == SERVER


def test_without_current_context_several_contexts_are_refused(pki: Pki) -> None:
    assert "no current-context" in refused(dump(two_contexts(pki, None)))


def test_a_current_context_that_names_nothing_is_refused(pki: Pki) -> None:
    assert "current-context names no entry of its contexts" in refused(dump(two_contexts(pki, "evil")))


def test_a_context_naming_a_missing_cluster_is_refused(pki: Pki) -> None:
    value = config(pki)
    value["contexts"][0]["context"]["cluster"] = "evil"
    assert "names no entry of its clusters" in refused(dump(value))


# ----------------------------------------------------------------------------------------------- the allow-list
def test_an_empty_allow_list_turns_the_feature_off(pki: Pki) -> None:
    assert refused(dump(config(pki)), ()) == (
        "deploying to other clusters is off: no server is allowed by TARGET_SERVER_ALLOW_LIST"
    )


@pytest.mark.parametrize(
    "patterns",
    [
        ("https://*.example.com:6443",),
        ("https://other.example.org", "https://secret-host.example.com:*"),
        ("https://secret-host.example.com:6443",),
        ("https://[rs]ecret-host.example.com:644?",),
    ],
)
def test_a_server_matching_one_glob_is_allowed(pki: Pki, patterns: tuple[str, ...]) -> None:
    assert accepted(dump(config(pki)), patterns).host == SERVER


@pytest.mark.parametrize(
    ("server", "patterns"),
    [
        (SERVER, ("https://*.example.org:6443",)),
        (SERVER, ("https://secret-host.example.com",)),  # the whole URL must match, port included
        (SERVER, ("*",)),  # a star does not cross '/'
        ("https://secret-host.example.com:6443/x", ("https://*.example.com:6443",)),
        (SERVER, ("https://[",)),  # a malformed pattern matches nothing
    ],
)
def test_a_server_matching_no_glob_is_refused(pki: Pki, server: str, patterns: tuple[str, ...]) -> None:
    assert "matches no pattern of TARGET_SERVER_ALLOW_LIST" in refused(dump(config(pki, server=server)), patterns)


@pytest.mark.parametrize(
    "server",
    [
        "http://secret-host.example.com:6443",
        "secret-host.example.com:6443",
        "https://evil.net#.example.com:6443",  # would match the glob, but dials evil.net
        "https://evil.net?.example.com:6443",
        "https://evil.net@x.example.com:6443",
        "https://evil.net\\.example.com:6443",
        "https://evil%2enet.example.com:6443",
        "https://secret-host.example.com:99999",
        "https://",
        " https://secret-host.example.com:6443",
    ],
)
def test_a_server_that_is_not_a_plain_https_url_is_refused(pki: Pki, server: str) -> None:
    message = refused(dump(config(pki, server=server)), ("*", *ALLOW, "https://*"))
    assert "server must be an https:// URL" in message


# ----------------------------------------------------------------------------------------------- refusals
@pytest.mark.parametrize(
    ("cluster", "user", "expected"),
    [
        ({"certificate-authority": "/etc/ssl/certs/ca.crt"}, {}, "certificate-authority names a file"),
        (
            {"certificate-authority": SA_TOKEN, "certificate-authority-data": None},
            {},
            "certificate-authority names a file",
        ),
        ({"insecure-skip-tls-verify": True}, {}, "insecure-skip-tls-verify: true is not allowed"),
        ({"insecure-skip-tls-verify": "yes"}, {}, "insecure-skip-tls-verify is not true or false"),
        ({"proxy-url": "http://proxy.example:3128"}, {}, "proxy-url is not supported"),
        ({"certificate-authority-data": None}, {}, "cluster has no certificate-authority-data"),
        ({"server": None}, {}, "cluster has no server"),
        ({"evil-key": "x"}, {}, "cluster has a key the controller does not know"),
        ({"tls-server-name": "evil host"}, {}, "tls-server-name is not a host name"),
        ({}, {"client-certificate": "/etc/evil.crt"}, "client-certificate names a file"),
        ({}, {"client-key": "/etc/evil.key"}, "client-key names a file"),
        ({}, {"tokenFile": SA_TOKEN}, "tokenFile names a file"),
        ({}, {"exec": {"command": "/etc/evil", "apiVersion": "client.authentication.k8s.io/v1"}}, "user exec"),
        ({}, {"auth-provider": {"name": "evil", "config": {"cmd-path": "/etc/evil"}}}, "user auth-provider"),
        ({}, {"username": "evil", "password": TOKEN}, "user username is not supported"),
        ({}, {"password": TOKEN}, "user password is not supported"),
        ({}, {"as": "evil"}, "user as is not supported: impersonation"),
        ({}, {"as-uid": "evil"}, "user as-uid is not supported: impersonation"),
        ({}, {"as-groups": ["evil"]}, "user as-groups is not supported: impersonation"),
        ({}, {"as-user-extra": {"evil": ["x"]}}, "user as-user-extra is not supported: impersonation"),
        ({}, {"evil-key": TOKEN}, "user has a key the controller does not know"),
        ({}, {"client-key-data": None}, "both client-certificate-data and client-key-data"),
        ({}, {"client-certificate-data": "not base64!"}, "client-certificate-data is not base64"),
        ({}, {"client-key-data": b64(b"evil")}, "client-key-data does not hold PEM"),
        ({}, {"token": TOKEN + "\nX-Evil: 1"}, "token has characters an Authorization header cannot carry"),
        ({}, {"token": 42}, "user token is not a string"),
        (
            {"certificate-authority-data": b64(b"-----BEGIN CERTIFICATE-----\nevil\n-----END CERTIFICATE-----\n")},
            {},
            "cannot be loaded",
        ),
    ],
)
def test_unsafe_or_malformed_settings_are_refused(
    pki: Pki, cluster: dict[str, Any], user: dict[str, Any], expected: str
) -> None:
    assert expected in refused(dump(config(pki, cluster=cluster, user=user)))


def test_a_key_that_does_not_match_the_certificate_is_refused(pki: Pki) -> None:
    other = pki.ca.issue_client("someone-else")
    assert "cannot be loaded" in refused(dump(config(pki, user={"client-key-data": b64(other.key_pem)})))


def test_a_user_without_credentials_is_refused(pki: Pki) -> None:
    expected = "the kubeconfig's user has no inline client certificate or token"
    assert refused(dump(config(pki, with_cert=False))) == expected
    value = config(pki)
    del value["contexts"][0]["context"]["user"]
    assert refused(dump(value)) == expected


# ----------------------------------------------------------------------------------------------- the document
def test_the_size_is_bounded_at_one_mebibyte(pki: Pki) -> None:
    data = dump(config(pki)) + b"\n#"
    padded = data + b"x" * (MAX_KUBECONFIG_BYTES - len(data))
    assert accepted(padded).host == SERVER
    assert refused(padded + b"x") == "the kubeconfig is larger than 1 MiB"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\xff\xfe not utf-8", "not UTF-8"),
        (b"{clusters: [", "not valid YAML or JSON"),
        (b"- evil\n", "not a YAML or JSON mapping"),
        (b"a: 1\n---\nb: 2\n", "more than one YAML document"),
        (b"a: &x [1]\nb: *x\n", "anchors or aliases"),
        (b"a: " + b"[" * 100 + b"]" * 100, "nests deeper than"),
        (b"[" * 500_000, "nests deeper than"),
        (b"kind: Config\n", "no current-context, so it must have exactly one context"),
        (b"{contexts: [{context: {cluster: x}}]}", "an entry of the kubeconfig's contexts has no name"),
    ],
)
def test_malformed_documents_are_refused(data: bytes, expected: str) -> None:
    assert expected in refused(data)


# ----------------------------------------------------------------------------------------------- the client
@dataclass
class Target:
    url: str
    seen: list[dict[str, Any]]


@pytest.fixture
async def target(pki: Pki, tmp_path: Path) -> AsyncIterator[Target]:
    """An HTTPS API server requiring a client certificate of the target CA; ``/redirect`` answers 302."""
    seen: list[dict[str, Any]] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        seen.append({"path": request.path, "authorization": request.headers.get("Authorization"), "peer": peer})
        if request.path == "/redirect":
            raise web.HTTPFound("/api/v1/namespaces/elsewhere")
        return web.json_response({"kind": "Namespace", "metadata": {"name": request.path.rsplit("/", 1)[-1]}})

    async with mutual_tls_server(handle, pki.serving, pki.ca, tmp_path) as url:
        yield Target(url, seen)


@pytest.fixture
def hostile_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Proxy variables that lead nowhere and a ~/.netrc with a password: a target client must use neither."""
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login controller password controller-secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))


@pytest.mark.usefixtures("hostile_environment")
async def test_connect_target_sends_the_client_certificate_and_token_directly(pki: Pki, target: Target) -> None:
    data = dump(config(pki, server=target.url, user={"token": TOKEN}))
    async with await connect_target(
        data, allowed_servers=["https://127.0.0.1:*"], match=path_match, field_manager="atc"
    ) as kube:
        assert kube.server == target.url
        assert kube.field_manager == "atc"
        namespace = await kube.get("/api/v1/namespaces/default")
    assert namespace["metadata"]["name"] == "default"
    (request,) = target.seen
    assert request["authorization"] == f"Bearer {TOKEN}"
    subject = dict(part[0] for part in request["peer"]["subject"])
    assert subject["commonName"] == "deployer"


@pytest.mark.usefixtures("hostile_environment")
async def test_connect_target_does_not_follow_redirects(pki: Pki, target: Target) -> None:
    data = dump(config(pki, server=target.url))
    kube = await connect_target(data, allowed_servers=["https://127.0.0.1:*"], match=path_match, field_manager="atc")
    try:
        with pytest.raises(KubeError) as caught:
            await kube.get("/redirect")
    finally:
        await kube.close()
    assert caught.value.status == 302
    assert [request["path"] for request in target.seen] == ["/redirect"]
    assert target.seen[0]["authorization"] is None  # no token in this kubeconfig, and none from ~/.netrc


async def test_connect_target_refuses_before_connecting(pki: Pki) -> None:
    with pytest.raises(TargetKubeconfigError, match="matches no pattern"):
        await connect_target(dump(config(pki)), allowed_servers=["https://10.*"], match=path_match, field_manager="atc")
