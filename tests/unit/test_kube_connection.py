"""Reaching the API server without kubernetes-asyncio (``atc.k8s.connection``) and with it for the rest.

Simple kubeconfigs and in-cluster credentials are read by our loader; anything else is left to
kubernetes-asyncio (``kubeconfig_endpoint`` returns None). Requests go to a local HTTPS server
that checks the client certificate and echoes what it received.
"""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from servers import mutual_tls_server

from atc.k8s import connection
from atc.k8s.client import KubeClient, KubeConfigError, KubeError
from atc.k8s.connection import Endpoint, Transport, in_cluster_endpoint, kubeconfig_endpoint
from atc.service.certificates import CertificateAuthority, KeyPair
from atc.service.runtime import startup_exit_code


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def write_kubeconfig(path: Path, server: str, *, cluster: dict[str, Any], user: dict[str, Any] | None) -> Path:
    """A kubeconfig of one context ``test``; ``user=None`` leaves the context without a user."""
    context: dict[str, Any] = {"cluster": "c"}
    config: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server, **cluster}}],
        "contexts": [{"name": "test", "context": context}],
        "current-context": "test",
    }
    if user is not None:
        context["user"] = "u"
        config["users"] = [{"name": "u", "user": user}]
    path.write_text(json.dumps(config))
    return path


@dataclass
class ApiServer:
    """A local HTTPS server requiring client certificates of ``ca``; records each request."""

    url: str
    ca: CertificateAuthority
    client: KeyPair
    seen: list[dict[str, Any]]


@pytest.fixture(scope="module")
def pki() -> tuple[CertificateAuthority, KeyPair, KeyPair]:
    ca = CertificateAuthority.create("test-ca")
    return ca, ca.issue_serving("apiserver", ["localhost"], ["127.0.0.1"]), ca.issue_client("tester")


@pytest.fixture
async def api_server(tmp_path: Path, pki: tuple[CertificateAuthority, KeyPair, KeyPair]) -> AsyncIterator[ApiServer]:
    ca, serving, client = pki
    seen: list[dict[str, Any]] = []

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        seen.append(
            {
                "method": request.method,
                "path": request.path,
                "query": request.query_string,
                "headers": dict(request.headers),
                "body": body,
                "peer": request.transport.get_extra_info("peercert") if request.transport else None,
            }
        )
        if request.path == "/api/v1/namespaces/x/secrets/missing":
            status = {"kind": "Status", "message": 'secrets "missing" not found', "reason": "NotFound"}
            return web.json_response(status, status=404)
        return web.json_response({"kind": "Echo", "path": request.path})

    async with mutual_tls_server(handle, serving, ca, tmp_path) as url:
        yield ApiServer(url, ca, client, seen)


# ----------------------------------------------------------------------------------------------- kubeconfigs
def test_inline_certificates_and_token_are_read(tmp_path: Path) -> None:
    ca = CertificateAuthority.create("ca")
    client = ca.issue_client("me")
    path = write_kubeconfig(
        tmp_path / "kubeconfig",
        "https://10.0.0.1:6443/",
        cluster={"certificate-authority-data": b64(ca.cert_pem), "tls-server-name": "kubernetes"},
        user={
            "client-certificate-data": b64(client.cert_pem),
            "client-key-data": b64(client.key_pem),
            "token": "abc",
        },
    )
    endpoint = kubeconfig_endpoint(str(path))
    assert endpoint is not None
    assert endpoint.host == "https://10.0.0.1:6443"
    assert endpoint.ca_cert == ca.cert_pem
    assert (endpoint.client_cert, endpoint.client_key) == (client.cert_pem, client.key_pem)
    assert endpoint.tls_server_name == "kubernetes"
    assert endpoint.authorization() == "Bearer abc"
    assert endpoint.verify_ssl
    assert "abc" not in repr(endpoint)
    assert "PRIVATE KEY" not in repr(endpoint)


def test_relative_files_are_resolved_against_the_kubeconfig_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pki").mkdir()
    ca = CertificateAuthority.create("ca")
    (tmp_path / "pki" / "ca.crt").write_bytes(ca.cert_pem)
    cert, key = ca.issue_client("me").write(tmp_path / "pki", "me")
    path = write_kubeconfig(
        tmp_path / "kubeconfig",
        "https://127.0.0.1:6443",
        cluster={"certificate-authority": "pki/ca.crt"},
        user={"client-certificate": "pki/me.crt", "client-key": str(key)},
    )
    endpoint = kubeconfig_endpoint(str(path))
    assert endpoint is not None
    assert endpoint.ca_cert == str(tmp_path / "pki" / "ca.crt")
    assert (endpoint.client_cert, endpoint.client_key) == (str(cert), str(key))
    assert endpoint.authorization() is None

    def no_temporary_files(*_: object, **__: object) -> None:
        raise AssertionError("files are loaded where they are")

    monkeypatch.setattr(tempfile, "TemporaryDirectory", no_temporary_files)
    assert endpoint.ssl_context().verify_mode == ssl.CERT_REQUIRED


def test_insecure_skip_tls_verify_and_no_user(tmp_path: Path) -> None:
    path = write_kubeconfig(
        tmp_path / "kubeconfig", "https://127.0.0.1:6443", cluster={"insecure-skip-tls-verify": True}, user=None
    )
    endpoint = kubeconfig_endpoint(str(path))
    assert endpoint is not None
    assert not endpoint.verify_ssl
    context = endpoint.ssl_context()
    assert context.verify_mode == ssl.CERT_NONE
    assert not context.check_hostname


@pytest.mark.parametrize(
    ("cluster", "user"),
    [
        ({}, {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "get-token"}}),
        ({}, {"auth-provider": {"name": "oidc", "config": {}}}),
        ({}, {"username": "admin", "password": "secret"}),
        ({}, {"tokenFile": "/var/run/token"}),
        ({}, {"token": "abc", "as": "someone-else"}),
        ({}, {"client-certificate": "missing.crt", "client-key": "missing.key"}),
        ({}, {"client-certificate-data": b64(b"cert")}),  # no key
        ({}, {"client-key-data": "not base64!", "client-certificate-data": b64(b"cert")}),
        ({}, {"token": ""}),
        ({"certificate-authority": "missing-ca.crt"}, {}),
        ({"certificate-authority-data": ""}, {}),
        ({"insecure-skip-tls-verify": "yes"}, {}),
        ({"server": "http://127.0.0.1:8080"}, {}),
        ({"disable-compression": True}, {}),
    ],
)
def test_anything_else_is_left_to_kubernetes_asyncio(
    tmp_path: Path, cluster: dict[str, Any], user: dict[str, Any]
) -> None:
    path = write_kubeconfig(tmp_path / "kubeconfig", "https://127.0.0.1:6443", cluster=cluster, user=user)
    assert kubeconfig_endpoint(str(path)) is None


@pytest.mark.parametrize(
    "text",
    [
        "",
        "apiVersion: v1\nkind: Config\n",  # no contexts
        "current-context: a\ncontexts: [{name: a, context: {cluster: c}}, {name: a, context: {cluster: c}}]\n",
        "current-context: a\ncontexts: [{name: a, context: {cluster: c}}]\nclusters: [{cluster: {}}]\n",
        "- just\n- a list\n",
        "{unbalanced",
    ],
)
def test_malformed_kubeconfigs_are_left_to_kubernetes_asyncio(tmp_path: Path, text: str) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(text)
    assert kubeconfig_endpoint(str(path)) is None


def test_several_kubeconfig_files_are_left_to_kubernetes_asyncio(tmp_path: Path) -> None:
    first = write_kubeconfig(tmp_path / "a", "https://127.0.0.1:6443", cluster={}, user={})
    assert kubeconfig_endpoint(f"{first}:{tmp_path / 'b'}") is None
    assert kubeconfig_endpoint(str(tmp_path / "missing")) is None


# ----------------------------------------------------------------------------------------------- in-cluster
def service_account(tmp_path: Path, token: str = "t0", ca: bytes = b"CA") -> tuple[str, str]:
    (tmp_path / "token").write_text(token)
    (tmp_path / "ca.crt").write_bytes(ca)
    return str(tmp_path / "token"), str(tmp_path / "ca.crt")


def test_in_cluster_reads_the_service_account_and_rereads_a_rotated_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token, ca = service_account(tmp_path)
    env = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
    endpoint = in_cluster_endpoint(env, token_file=token, ca_file=ca)
    assert endpoint.host == "https://[fd00::1]:443"
    assert endpoint.ca_cert == ca
    assert endpoint.authorization() == "Bearer t0"
    Path(token).write_text("t1")
    assert endpoint.authorization() == "Bearer t0"  # read again only after a minute
    clock = time.monotonic() + connection.TOKEN_REFRESH_SECONDS + 1
    monkeypatch.setattr(time, "monotonic", lambda: clock)
    assert endpoint.authorization() == "Bearer t1"
    env_v4 = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    assert in_cluster_endpoint(env_v4, token_file=token, ca_file=ca).host == "https://10.96.0.1:443"


@pytest.mark.parametrize(
    ("env", "files", "message"),
    [
        ({}, {}, "Service host/port is not set."),
        ({"KUBERNETES_SERVICE_HOST": "", "KUBERNETES_SERVICE_PORT": "443"}, {}, "Service host/port is set but empty."),
        ({"KUBERNETES_SERVICE_HOST": "h", "KUBERNETES_SERVICE_PORT": "443"}, {"token": None}, "token file does not"),
        ({"KUBERNETES_SERVICE_HOST": "h", "KUBERNETES_SERVICE_PORT": "443"}, {"token": ""}, "Token file exists but"),
        ({"KUBERNETES_SERVICE_HOST": "h", "KUBERNETES_SERVICE_PORT": "443"}, {"ca": None}, "certification file"),
        ({"KUBERNETES_SERVICE_HOST": "h", "KUBERNETES_SERVICE_PORT": "443"}, {"ca": ""}, "Cert file exists but"),
    ],
)
def test_in_cluster_errors_say_what_is_missing(
    tmp_path: Path, env: dict[str, str], files: dict[str, str | None], message: str
) -> None:
    token, ca = service_account(tmp_path)
    for name, path in (("token", token), ("ca", ca)):
        if name in files:
            content = files[name]
            if content is None:
                Path(path).unlink()
            else:
                Path(path).write_text(content)
    with pytest.raises(KubeConfigError, match=message):
        in_cluster_endpoint(env, token_file=token, ca_file=ca)


# ----------------------------------------------------------------------------------------------- requests
def client_kubeconfig(tmp_path: Path, api_server: ApiServer, token: str) -> Path:
    """A kubeconfig for ``api_server`` with its CA, the client certificate it asks for, and ``token``."""
    return write_kubeconfig(
        tmp_path / "kubeconfig",
        api_server.url,
        cluster={"certificate-authority-data": b64(api_server.ca.cert_pem)},
        user={
            "client-certificate-data": b64(api_server.client.cert_pem),
            "client-key-data": b64(api_server.client.key_pem),
            "token": token,
        },
    )


async def test_requests_carry_credentials_headers_query_and_json(tmp_path: Path, api_server: ApiServer) -> None:
    path = client_kubeconfig(tmp_path, api_server, "s3cret")
    async with await KubeClient.connect(str(path), qps_headers={"X-Test": "1"}, field_manager="atc") as kube:
        assert isinstance(kube._api, Transport)
        assert kube.server == api_server.url
        answer = await kube.apply(
            "/apis/yoke.cd/v1alpha1/airways/a", {"kind": "Airway", "spec": {"n": 1}}, field_manager="fm", force=True
        )
        assert answer == {"kind": "Echo", "path": "/apis/yoke.cd/v1alpha1/airways/a"}
        assert await kube.get_text("/readyz") == '{"kind": "Echo", "path": "/readyz"}'
        with pytest.raises(KubeError, match='secrets "missing" not found') as raised:
            await kube.get("/api/v1/namespaces/x/secrets/missing")
        assert raised.value.not_found
    patch, text, _ = api_server.seen
    assert patch["method"] == "PATCH"
    assert patch["query"] == "fieldManager=fm&force=true"
    assert json.loads(patch["body"]) == {"kind": "Airway", "spec": {"n": 1}}
    headers = patch["headers"]
    assert headers["Content-Type"] == "application/apply-patch+yaml"
    assert headers["Accept"] == "application/json"
    assert headers["Authorization"] == "Bearer s3cret"
    assert headers["User-Agent"] == "yoke-atc-py"
    assert headers["X-Test"] == "1"
    assert patch["peer"] is not None  # the server saw our client certificate
    assert text["headers"]["Accept"] == "text/plain"
    assert text["body"] == b""


async def test_a_wrong_ca_fails_the_request_not_the_connect(tmp_path: Path, api_server: ApiServer) -> None:
    other = CertificateAuthority.create("other")
    path = write_kubeconfig(
        tmp_path / "kubeconfig", api_server.url, cluster={"certificate-authority-data": b64(other.cert_pem)}, user={}
    )
    async with await KubeClient.connect(str(path)) as kube:
        with pytest.raises(KubeError) as raised:
            await kube.get("/api")
        assert raised.value.status == 0
    assert api_server.seen == []


async def test_exec_plugins_go_through_kubernetes_asyncio(tmp_path: Path, api_server: ApiServer) -> None:
    plugin = tmp_path / "get-token"
    credential = {
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "status": {"token": "from-exec"},
    }
    plugin.write_text(f"#!/bin/sh\ncat <<'EOF'\n{json.dumps(credential)}\nEOF\n")
    plugin.chmod(0o755)
    path = write_kubeconfig(
        tmp_path / "kubeconfig",
        api_server.url,
        cluster={"certificate-authority-data": b64(api_server.ca.cert_pem)},
        user={
            "exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": str(plugin)},
            "client-certificate-data": b64(api_server.client.cert_pem),  # the test server asks for one
            "client-key-data": b64(api_server.client.key_pem),
        },
    )
    assert kubeconfig_endpoint(str(path)) is None
    async with await KubeClient.connect(str(path), qps_headers={"X-Test": "2"}) as kube:
        assert not isinstance(kube._api, Transport)
        assert await kube.get("/api/v1/namespaces") == {"kind": "Echo", "path": "/api/v1/namespaces"}
    (seen,) = api_server.seen
    assert seen["headers"]["Authorization"] == "Bearer from-exec"
    assert seen["headers"]["User-Agent"] == "yoke-atc-py"
    assert seen["headers"]["X-Test"] == "2"


async def test_kube_loader_setting_sends_every_kubeconfig_through_kubernetes_asyncio(
    tmp_path: Path, api_server: ApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = client_kubeconfig(tmp_path, api_server, "plain")
    assert kubeconfig_endpoint(str(path)) is not None  # a shape atc.k8s.connection reads itself
    monkeypatch.setenv("KUBE_LOADER", "kubernetes-asyncio")
    async with await KubeClient.connect(str(path)) as kube:
        assert not isinstance(kube._api, Transport)
        assert await kube.get("/api") == {"kind": "Echo", "path": "/api"}
    (seen,) = api_server.seen
    assert seen["headers"]["Authorization"] == "Bearer plain"


async def test_kube_loader_setting_reads_the_pod_service_account_with_kubernetes_asyncio(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KUBE_LOADER", "kubernetes-asyncio")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(KubeConfigError, match="Service host/port is not set"):
        await KubeClient.connect("")


async def test_an_unusable_kubeconfig_is_a_config_error_with_exit_code_2(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text("apiVersion: v1\nkind: Config\n")
    with pytest.raises(KubeConfigError) as raised:
        await KubeClient.connect(str(path))
    assert startup_exit_code("atc-test", raised.value) == 2


def test_transport_sends_dates_as_iso_8601() -> None:
    import datetime

    moment = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    assert json.dumps({"at": moment}, default=connection._json_default) == '{"at": "2026-01-02T03:04:05+00:00"}'
    with pytest.raises(TypeError):
        json.dumps({"x": object()}, default=connection._json_default)
    assert Endpoint("https://h").authorization() is None


def test_the_services_do_not_import_kubernetes_asyncio() -> None:
    """Its generated models cost half a second and 60 MiB per process (docs/design.md, "Start-up")."""
    code = "import sys, atc_controller.__main__, atc_controller.app, atc_webhook.__main__, atc_webhook.server\n"
    code += "print(sorted(m for m in sys.modules if m.startswith('kubernetes_asyncio')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
