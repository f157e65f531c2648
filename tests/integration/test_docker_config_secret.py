"""The docker-config Secret watcher (``DOCKER_CONFIG_SECRET_NAME``) against the local control plane.

Runs ``DockerConfigWatcher`` as the services do, authenticated as a ServiceAccount that holds only the
chart's ``<full name>-docker-config`` Role (get, list and watch on that one Secret by resourceNames),
so it also shows the chart's least-privilege RBAC is enough: creating the Secret then starting writes
the file, an update rewrites it, an emptied Secret keeps it, a delete removes it. As in yoke, a Secret
missing at start is only a warning: the watcher keeps following it and writes the file once it is
created; a Secret the account may not read is yoke's fatal error. Last, the same with both services:
started as the chart runs them while the Secret is absent, they become ready and write their files
when it appears; started as an account without read access to it, they exit at once.
Run with ``DEVCLUSTER_REUSE=1 .venv/bin/pytest -q tests/integration/test_docker_config_secret.py``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import helmcli
import pytest
import yaml
from harness import Harness
from support import ServiceProcess, eventually

from atc.k8s.client import MERGE_PATCH, KubeClient, KubeError
from atc.service.docker_secret import DockerConfigSecretError, DockerConfigWatcher

pytestmark = pytest.mark.cluster
CHART = Path(__file__).resolve().parents[2] / "charts" / "atc"
RBAC = "/apis/rbac.authorization.k8s.io/v1"
SECRET = "regcred"


def docker_config(password: str) -> bytes:
    auth = base64.b64encode(f"robot:{password}".encode()).decode()
    return json.dumps({"auths": {"registry.example.com": {"auth": auth}}}).encode()


def secret_body(content: bytes, name: str = SECRET) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "type": "Opaque",  # a kubernetes.io/dockerconfigjson Secret cannot be emptied, which the test does
        "data": {".dockerconfigjson": base64.b64encode(content).decode()},
    }


@pytest.fixture
async def admin(kubeconfig: Path) -> AsyncIterator[KubeClient]:
    async with await KubeClient.connect(str(kubeconfig)) as kube:
        yield kube


async def chart_rbac_objects(namespace: str) -> list[dict[str, Any]]:
    """The Role and RoleBinding the chart renders for ``dockerConfigSecretName``."""
    args = ["template", "atc", str(CHART), "--namespace", namespace, "--set", f"dockerConfigSecretName={SECRET}"]
    done = await asyncio.to_thread(helmcli.run_helm, args)
    objects = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    return [obj for obj in objects if obj["metadata"]["name"] == "atc-docker-config"]


async def token_kubeconfig(admin: KubeClient, kubeconfig: Path, namespace: str, account: str) -> Path:
    """A kubeconfig authenticating as ServiceAccount ``account`` (which must exist), next to the admin's."""
    token = await admin.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token",
        body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 3600}},
    )
    config = json.loads(await asyncio.to_thread(kubeconfig.read_text))
    config["users"] = [{"name": account, "user": {"token": token["status"]["token"]}}]
    config["contexts"] = [{"name": "local", "context": {"cluster": "local", "user": account}}]
    path = kubeconfig.parent / f"kubeconfig-{namespace}-{account}-docker"
    await asyncio.to_thread(path.write_text, json.dumps(config))
    return path


async def least_privilege_client(admin: KubeClient, kubeconfig: Path, namespace: str) -> KubeClient:
    """A client for the chart's webhook ServiceAccount bound only to the chart's docker-config Role."""
    for account in ("atc-service-account", "atc-webhook"):
        await admin.request(
            "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts", body={"metadata": {"name": account}}
        )
    role, binding = sorted(await chart_rbac_objects(namespace), key=lambda obj: str(obj["kind"]))
    assert (role["kind"], binding["kind"]) == ("Role", "RoleBinding")
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [SECRET], "verbs": ["get", "list", "watch"]}
    ]
    await admin.request("POST", f"{RBAC}/namespaces/{namespace}/roles", body=role)
    await admin.request("POST", f"{RBAC}/namespaces/{namespace}/rolebindings", body=binding)
    return await KubeClient.connect(str(await token_kubeconfig(admin, kubeconfig, namespace, "atc-webhook")))


def forbidden(name: str, namespace: str, account: str) -> str:
    """The API server's answer to a GET of Secret ``name`` by an account without the right to it."""
    return (
        f'secrets "{name}" is forbidden: User "system:serviceaccount:{namespace}:{account}" cannot get resource '
        f'"secrets" in API group "" in the namespace "{namespace}"'
    )


def content_of(path: Path) -> bytes | None:
    """The file's content, None when there is none (also when it is removed while being read)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


async def file_holds(path: Path, content: bytes | None) -> None:
    async def check() -> bool:
        return await asyncio.to_thread(content_of, path) == content

    await eventually(check, timeout=20, what=f"{path} to hold the expected content")


async def log_shows(process: ServiceProcess, text: str) -> None:
    async def check() -> bool:
        return text in await asyncio.to_thread(process.log_tail)

    await eventually(check, timeout=20, what=f"{process.name} to log {text!r}")


async def test_the_file_follows_the_secret(admin: KubeClient, kubeconfig: Path, namespace: str, tmp_path: Path) -> None:
    secrets = f"/api/v1/namespaces/{namespace}/secrets"
    await admin.request("POST", secrets, body=secret_body(docker_config("first")))
    await admin.request("POST", secrets, body=secret_body(b"{}", name="unrelated"))
    path = tmp_path / "home" / ".docker" / "config.json"
    async with await least_privilege_client(admin, kubeconfig, namespace) as kube:
        with pytest.raises(KubeError) as forbidden:  # the Role names one Secret: nothing else is readable
            await kube.get(f"{secrets}/unrelated")
        assert forbidden.value.status == 403
        watcher = DockerConfigWatcher(kube, namespace, SECRET, path)
        await watcher.start()
        assert content_of(path) == docker_config("first")
        following = asyncio.create_task(watcher.run())
        try:
            await asyncio.wait_for(watcher.reflector.synced.wait(), 20)
            assert watcher.reflector.last_error is None  # list and watch were authorized by resourceNames
            patch = {"data": {".dockerconfigjson": base64.b64encode(docker_config("second")).decode()}}
            await admin.request("PATCH", f"{secrets}/{SECRET}", body=patch, content_type=MERGE_PATCH)
            await file_holds(path, docker_config("second"))
            await admin.request(
                "PATCH", f"{secrets}/{SECRET}", body={"data": {".dockerconfigjson": None}}, content_type=MERGE_PATCH
            )
            await asyncio.sleep(1)
            assert content_of(path) == docker_config("second")  # emptied: the previous file is kept
            await admin.request("DELETE", f"{secrets}/{SECRET}")
            await file_holds(path, None)
            await admin.request("POST", secrets, body=secret_body(docker_config("third")))
            await file_holds(path, docker_config("third"))
        finally:
            following.cancel()
            await asyncio.gather(following, return_exceptions=True)


async def test_a_missing_secret_at_start_is_waited_for(
    admin: KubeClient, kubeconfig: Path, namespace: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="atc.service.docker_secret")
    path = tmp_path / "home" / ".docker" / "config.json"
    async with await least_privilege_client(admin, kubeconfig, namespace) as kube:
        watcher = DockerConfigWatcher(kube, namespace, SECRET, path)
        await watcher.start()  # yoke's warning, not an error
        assert content_of(path) is None
        warnings = [(r.getMessage(), r.__dict__.get("secret")) for r in caplog.records if r.levelno >= logging.WARNING]
        assert warnings == [("docker config secret not found, waiting for it", f"{namespace}/{SECRET}")]
        following = asyncio.create_task(watcher.run())
        try:
            await asyncio.wait_for(watcher.reflector.synced.wait(), 20)
            assert watcher.reflector.last_error is None  # an empty list and a watch, authorized by resourceNames
            assert not following.done()
            assert content_of(path) is None
            secrets = f"/api/v1/namespaces/{namespace}/secrets"
            await admin.request("POST", secrets, body=secret_body(docker_config("late")))
            await file_holds(path, docker_config("late"))
            assert not following.done()
        finally:
            following.cancel()
            await asyncio.gather(following, return_exceptions=True)


async def test_a_secret_the_account_cannot_read_is_fatal(
    admin: KubeClient, kubeconfig: Path, namespace: str, tmp_path: Path
) -> None:
    async with await least_privilege_client(admin, kubeconfig, namespace) as kube:
        watcher = DockerConfigWatcher(kube, namespace, "unrelated", tmp_path / "config.json")  # not in resourceNames
        with pytest.raises(DockerConfigSecretError) as error:
            await watcher.start()
    assert str(error.value) == (
        "error watching docker config secret: failed to lookup docker config secret: "
        + forbidden("unrelated", namespace, "atc-webhook")
    )
    assert content_of(tmp_path / "config.json") is None


async def test_both_services_wait_for_a_missing_secret(harness: Harness, tmp_path: Path) -> None:
    harness.chart_values = ["--set", f"dockerConfigSecretName={SECRET}"]  # the chart's Role, as deployed
    files = {"controller": tmp_path / "controller" / "config.json", "webhook": tmp_path / "webhook" / "config.json"}
    controller, webhook = await harness.start_atc(  # both ready (caches synced) with the Secret absent
        webhook_env={"DOCKER_CONFIG_SECRET_NAME": SECRET, "DOCKER_CONFIG_FILE": str(files["webhook"])},
        DOCKER_CONFIG_SECRET_NAME=SECRET,
        DOCKER_CONFIG_FILE=str(files["controller"]),
    )
    processes = {"controller": controller.process, "webhook": webhook.process}
    for name, process in processes.items():
        assert process.proc.poll() is None, name
        assert content_of(files[name]) is None, name
        assert "docker config secret not found, waiting for it" in process.log_tail(), name
    secrets = f"/api/v1/namespaces/{harness.namespace}/secrets"
    await harness.kube.request("POST", secrets, body=secret_body(docker_config("late")))
    for name, process in processes.items():
        await file_holds(files[name], docker_config("late"))
        await log_shows(process, "docker config updated from secret")  # logged just after the write
        assert process.proc.poll() is None, name
        assert base64.b64encode(b"robot:late").decode() not in process.log_tail(), name  # the content is never logged


@pytest.mark.parametrize("service", ["atc-controller", "atc-webhook"])
async def test_the_services_do_not_start_when_they_cannot_read_the_secret(
    admin: KubeClient, kubeconfig: Path, namespace: str, tmp_path: Path, service: str
) -> None:
    account = "no-secrets"  # a ServiceAccount with no role at all
    await admin.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts", body={"metadata": {"name": account}})
    env = {
        "KUBE": str(await token_kubeconfig(admin, kubeconfig, namespace, account)),
        "SVC_NAMESPACE": namespace,
        "DOCKER_CONFIG_SECRET_NAME": SECRET,
        "DOCKER_CONFIG_FILE": str(tmp_path / "config.json"),
        "CACHE_FS": str(tmp_path / "cache"),
        "HEALTH_PORT": "0",
        "METRICS_PORT": "0",
        "TLS_GENERATE_DIR": str(tmp_path / "tls"),
        "PATH": "/usr/bin:/bin",
    }
    if service == "atc-controller":
        env = {key: value for key, value in env.items() if key != "TLS_GENERATE_DIR"}
    else:
        env = {key: value for key, value in env.items() if not key.endswith("_PORT")}
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", service.replace("-", "_")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stderr.strip() == (
        f"{service}: error watching docker config secret: failed to lookup docker config secret: "
        + forbidden(SECRET, namespace, account)
    )
    assert content_of(tmp_path / "config.json") is None
