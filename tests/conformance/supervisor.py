"""Runs our two services for yoke's suite as the cluster would, and restarts them when the tests ask.

Started by ``tests/conformance/test_yoke_suite.py`` as its own process against a fresh local control
plane, it:

- applies the Helm chart's ServiceAccounts and RBAC in namespace ``atc`` (``tools/deployed.py``, with
  the values in ``values.yaml`` beside this file) and runs ``atc-webhook`` and ``atc-controller``
  as those accounts (token kubeconfigs), never as an admin;
- runs each service in a private mount namespace whose ``/etc/hosts`` also maps the name
  ``registry`` to the loopback registry, so yoke's ``oci://registry:80/...`` URLs resolve for those
  processes only and nothing on the machine changes;
- registers the static webhook configurations with a ``url`` client config, as the chart would
  with a Service;
- keeps a stand-in for yoke's ATC Deployment (``atc/atc-atc``, pods labelled ``yoke.cd/app=atc``,
  run by KWOK): scaling it to 0 stops both services, scaling it up starts them (``TestRestarts``);
- answers ``POST /reinstall`` from the Go harness (``harness_test.go``): the settings a test gave
  yoke's installer (module verification keys, allow-list) restart both services with those
  settings, and the answer comes once both are ready.

When it is ready it writes a JSON file (``--ready-file``) with the control URL; SIGTERM stops the
services and the process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import ssl
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from deployed import ChartIdentities, WebhookTarget, install_chart_identities, register_static_webhooks
from support import ServiceProcess, start_service

from atc.k8s.client import KubeClient, KubeError
from atc.model.types import Object
from devcluster.cluster import free_port

NAMESPACE = "atc"
FULLNAME = "atc"  # SVC_NAME: the webhooks leave out system:serviceaccount:atc:atc-service-account
DEFAULT_ALLOW_LIST = "oci://registry:80/*"  # what yoke's tests give their installer
DEPLOYMENT_PATH = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/atc-atc"
POLL_SECONDS = 0.5
READY_TIMEOUT = 120.0
HERE = Path(__file__).resolve().parent


def stand_in_deployment(replicas: int) -> Object:
    """yoke's ATC Deployment as its tests see it: name, namespace and pod label; KWOK runs the pods."""
    labels = {"yoke.cd/app": "atc"}
    container = {"name": "atc", "image": "yoke-atc-py:conformance-stand-in"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "atc-atc", "namespace": NAMESPACE, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
        },
    }


@dataclass
class Settings:
    """The settings a reinstall may change."""

    verification_keys: list[str] = field(default_factory=list)
    allow_list: list[str] = field(default_factory=lambda: [DEFAULT_ALLOW_LIST])


@dataclass
class Supervisor:
    kube: KubeClient
    admin_kubeconfig: Path
    work: Path
    registry_ip: str
    identities: ChartIdentities | None = None
    settings: Settings = field(default_factory=Settings)
    webhook: ServiceProcess | None = None
    controller: ServiceProcess | None = None

    def __post_init__(self) -> None:
        self.webhook_port = free_port()
        self.health_port = free_port()
        self.metrics_port = free_port()
        self.tls_dir = self.work / "tls"
        self.logs = self.work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.hosts = self.work / "hosts"
        self.lock = asyncio.Lock()
        self.starts = 0

    @property
    def webhook_url(self) -> str:
        return f"https://127.0.0.1:{self.webhook_port}"

    @property
    def running(self) -> bool:
        return self.webhook is not None

    # ------------------------------------------------------------------ setup
    async def install(self) -> None:
        try:
            await self.kube.request("POST", "/api/v1/namespaces", body={"metadata": {"name": NAMESPACE}})
        except KubeError as exc:
            if exc.status != 409:
                raise
        self.identities = await install_chart_identities(
            self.kube, self.admin_kubeconfig, NAMESPACE, FULLNAME, self.work, "--values", str(HERE / "values.yaml")
        )
        await asyncio.to_thread(self._write_hosts)
        await self.start()
        target = WebhookTarget(FULLNAME, NAMESPACE, self.webhook_url, str(self.tls_dir / "ca.crt"))
        await register_static_webhooks(self.kube, target)
        await self.kube.apply(DEPLOYMENT_PATH, stand_in_deployment(1), field_manager="conformance", force=True)

    def _write_hosts(self) -> None:
        hosts = Path("/etc/hosts").read_text()
        self.hosts.write_text(f"{hosts.rstrip()}\n{self.registry_ip} registry\n")

    # ------------------------------------------------------------------ processes
    def _argv(self, module: str) -> list[str]:
        """The service in a private mount namespace whose /etc/hosts also names the registry."""
        bind = 'mount --bind "$0" /etc/hosts && exec "$@"'
        namespace = ["unshare", "--mount", "--propagation", "private", "--"]
        return [*namespace, "sh", "-c", bind, str(self.hosts), sys.executable, "-m", module]

    def _common_env(self, cache: str) -> dict[str, str]:
        env = {
            "SVC_NAME": FULLNAME,
            "SVC_NAMESPACE": NAMESPACE,
            # a new pod gets a new emptyDir: every start begins with an empty module cache, as after
            # yoke's installer replaces its pod (the code-signing tests re-push a tag with new content)
            "CACHE_FS": str(self.work / f"{cache}-{self.starts}"),
            "LOG_FORMAT": "text",
            "MODULE_ALLOW_LIST": ",".join(self.settings.allow_list),
            # the registry answers on loopback (127.0.0.2 as "registry"): allowed as an in-cluster
            # registry's network would be
            "MODULE_FETCH_ALLOWED_NETWORKS": "127.0.0.0/8",
        }
        if self.settings.verification_keys:
            keys = self.work / "verification-keys.json"
            keys.write_text(json.dumps(self.settings.verification_keys))
            env["MODULE_VERIFICATION_KEYS_PATH"] = str(keys)
        return env

    async def start(self) -> None:
        assert self.identities is not None
        self.starts += 1
        tls = {
            "TLS_GENERATE_DIR": str(self.tls_dir),
            "TLS_CA_CERT": str(self.tls_dir / "ca.crt"),
            "TLS_SERVER_CERT": str(self.tls_dir / "server.crt"),
            "TLS_SERVER_KEY": str(self.tls_dir / "server.key"),
        }
        webhook_env = {
            **self._common_env("webhook-cache"),
            **tls,
            "KUBE": str(self.identities.webhook_kubeconfig),
            "PORT": str(self.webhook_port),
            "ADDRESS": "127.0.0.1",
            "REGISTER_WEBHOOKS": "false",
            "WEBHOOK_URL": self.webhook_url,
        }
        self.webhook = start_service("atc-webhook", self._argv("atc_webhook"), webhook_env, self.logs)
        await self._wait_ready(self.webhook, self._webhook_ready)
        controller_env = {
            **self._common_env("controller-cache"),
            "KUBE": str(self.identities.controller_kubeconfig),
            "HEALTH_PORT": str(self.health_port),
            "METRICS_PORT": str(self.metrics_port),
            "TLS_CA_CERT": str(self.tls_dir / "ca.crt"),
            "WEBHOOK_URL": self.webhook_url,
        }
        self.controller = start_service("atc-controller", self._argv("atc_controller"), controller_env, self.logs)
        await self._wait_ready(self.controller, self._controller_ready)
        print(f"services started (allow-list {self.settings.allow_list}, keys {len(self.settings.verification_keys)})")

    async def stop(self) -> None:
        for service in (self.controller, self.webhook):
            if service is not None:
                await asyncio.to_thread(service.stop)
        self.controller = self.webhook = None
        print("services stopped")

    async def _wait_ready(self, service: ServiceProcess, probe: Any) -> None:
        deadline = asyncio.get_running_loop().time() + READY_TIMEOUT
        while asyncio.get_running_loop().time() < deadline:
            if service.proc.poll() is not None:
                raise RuntimeError(f"{service.name} exited with {service.proc.returncode}:\n{service.log_tail()}")
            if await probe():
                return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"{service.name} not ready after {READY_TIMEOUT:.0f}s:\n{service.log_tail()}")

    async def _webhook_ready(self) -> bool:
        ca = self.tls_dir / "ca.crt"
        if not ca.is_file():
            return False
        context = ssl.create_default_context(cafile=str(ca))
        return await _status(f"{self.webhook_url}/readyz", context) == 200

    async def _controller_ready(self) -> bool:
        return await _status(f"http://127.0.0.1:{self.health_port}/readyz", None) == 200

    # ------------------------------------------------------------------ what the tests drive
    async def reinstall(self, settings: Settings) -> None:
        async with self.lock:
            self.settings = settings
            await self.stop()
            await self.start()

    async def follow_deployment(self) -> None:
        """Run the services while the stand-in Deployment wants replicas, stop them at 0."""
        while True:
            await asyncio.sleep(POLL_SECONDS)
            try:
                deployment = await self.kube.get_or_none(DEPLOYMENT_PATH)
            except KubeError:
                continue  # the API server is busy or restarting: keep the services as they are
            wanted = int(((deployment or {}).get("spec") or {}).get("replicas", 1)) if deployment else 1
            async with self.lock:
                if wanted == 0 and self.running:
                    await self.stop()
                elif wanted > 0 and not self.running:
                    await self.start()


async def _status(url: str, context: ssl.SSLContext | None) -> int | None:
    try:
        timeout = aiohttp.ClientTimeout(total=2)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url, ssl=context or False) as answer:
            return answer.status
    except (aiohttp.ClientError, ssl.SSLError, TimeoutError):
        return None


def control_app(supervisor: Supervisor) -> web.Application:
    async def reinstall(request: web.Request) -> web.Response:
        body = await request.json()
        settings = Settings(
            verification_keys=[str(k) for k in body.get("moduleVerificationKeys") or []],
            allow_list=[str(g) for g in body.get("moduleAllowList") or []],
        )
        try:
            await supervisor.reinstall(settings)
        except RuntimeError as exc:
            return web.Response(status=500, text=str(exc))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/reinstall", reinstall)
    return app


async def main(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with await KubeClient.connect(args.kubeconfig) as kube:
        supervisor = Supervisor(kube, Path(args.kubeconfig), Path(args.work), args.registry_ip)
        runner = web.AppRunner(control_app(supervisor))
        try:
            await supervisor.install()
            await runner.setup()
            port = free_port()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            follower = asyncio.create_task(supervisor.follow_deployment())
            ready = {"control": f"http://127.0.0.1:{port}", "logs": str(supervisor.logs)}
            await asyncio.to_thread(Path(args.ready_file).write_text, json.dumps(ready))
            await stop.wait()
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
        finally:
            await runner.cleanup()
            await supervisor.stop()


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True, help="admin kubeconfig of the control plane")
    parser.add_argument("--work", required=True, help="directory for logs, TLS files, module caches")
    parser.add_argument("--registry-ip", required=True, help="loopback address the name 'registry' resolves to")
    parser.add_argument("--ready-file", required=True, help="written with the control URL once ready")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args(sys.argv[1:])))
