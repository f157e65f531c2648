"""``make demo``: the Backend scenario, end to end, on the local control plane.

Run by ``python -m devcluster demo`` after ``devcluster up``. It builds the ``backend`` test flight,
starts ``atc-webhook`` (TLS generated, registered with the API server) and ``atc-controller``, each
as its own ServiceAccount with exactly the Helm chart's RBAC (``tools/deployed.py``), applies an Airway in dynamic mode
and a Backend, then shows the instance, its children and its Events, changes the Backend's Secret
and shows the Deployment rolling to the new hash. The services keep running afterwards so you can
look around; ``python -m devcluster demo-down`` (or ``make cluster-down``) stops them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from deployed import ChartIdentities, WebhookTarget, install_chart_identities, register_static_webhooks

from atc.k8s.client import KubeClient, KubeError

from .cluster import ClusterState, ProcessRecord, _start_ticks, free_port, is_alive, stop_processes

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
NAMESPACE, SVC_NAMESPACE, SVC_NAME = "demo", "atc", "atc"
AIRWAY = "backends.examples.com"
MERGE = "application/merge-patch+json"


def say(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def kubectl(state: ClusterState, *args: str) -> None:
    """Show something the way a user would see it."""
    print(f"$ kubectl {' '.join(args)}", flush=True)
    env = {**os.environ, "KUBECONFIG": state.kubeconfig}
    subprocess.run([str(Path(state.bin_dir) / "kubectl"), *args], env=env, check=False)


async def until(what: str, probe: Callable[[], Awaitable[T | None]], timeout: float = 120) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if value := await probe():
                return value
        except KubeError:
            pass
        await asyncio.sleep(0.5)
    raise SystemExit(f"demo: timed out waiting for {what}")


class Demo:
    def __init__(self, state: ClusterState, kube: KubeClient, work: Path) -> None:
        self.state, self.kube, self.work = state, kube, work
        self.records: list[ProcessRecord] = []

    # ------------------------------------------------------------------------------------ services
    def _spawn(self, name: str, module: str, env: dict[str, str]) -> None:
        log = (self.work / f"{name}.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", module],
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.records.append(
            ProcessRecord(name, process.pid, _start_ticks(process.pid) or -1, str(self.work / f"{name}.log"))
        )
        (self.work / "state.json").write_text(json.dumps([asdict(r) for r in self.records]))

    async def _ensure(self, path: str, body: dict[str, Any]) -> None:
        try:
            await self.kube.request("POST", path, body=body)
        except KubeError as exc:
            if not exc.conflict:
                raise

    async def _chart_identities(self) -> ChartIdentities:
        """The chart's ServiceAccounts and RBAC in SVC_NAMESPACE: each service runs as its own account."""
        await self._ensure("/api/v1/namespaces", {"metadata": {"name": SVC_NAMESPACE}})
        kubeconfig = Path(self.state.kubeconfig)
        return await install_chart_identities(self.kube, kubeconfig, SVC_NAMESPACE, SVC_NAME, self.work)

    async def start_services(self) -> tuple[int, int]:
        webhook_port, health_port = free_port(), free_port()
        tls = self.work / "tls"
        identities = await self._chart_identities()
        common = {
            "SVC_NAME": SVC_NAME,
            "SVC_NAMESPACE": SVC_NAMESPACE,
            "LOG_FORMAT": "text",
            "CACHE_FS": str(self.work / "cache"),
            "WEBHOOK_URL": f"https://127.0.0.1:{webhook_port}",
            "MODULE_ALLOW_LOCAL_FILES": "true",  # the demo's flight is a file built on this machine
        }
        self._spawn(
            "atc-webhook",
            "atc_webhook",
            {
                **common,
                "KUBE": str(identities.webhook_kubeconfig),
                "PORT": str(webhook_port),
                "ADDRESS": "127.0.0.1",
                "TLS_GENERATE_DIR": str(tls),
                "TLS_CA_CERT": str(tls / "ca.crt"),
                "TLS_SERVER_CERT": str(tls / "server.crt"),
                "TLS_SERVER_KEY": str(tls / "server.key"),
                "REGISTER_WEBHOOKS": "false",
            },
        )
        await until("the webhook's CA", lambda: _exists(tls / "ca.crt"))
        await until("the webhook to be ready", lambda: self._webhook_ready(webhook_port, tls / "ca.crt"))
        target = WebhookTarget(SVC_NAME, SVC_NAMESPACE, common["WEBHOOK_URL"], str(tls / "ca.crt"))
        await register_static_webhooks(self.kube, target)  # as the chart would
        self._spawn(
            "atc-controller",
            "atc_controller",
            {
                **common,
                "KUBE": str(identities.controller_kubeconfig),
                "TLS_CA_CERT": str(tls / "ca.crt"),
                "HEALTH_PORT": str(health_port),
                "METRICS_PORT": str(free_port()),
            },
        )
        await until("the controller to be ready", lambda: _http_ok(f"http://127.0.0.1:{health_port}/readyz"))
        return webhook_port, health_port

    async def _webhook_ready(self, port: int, ca: Path) -> bool:
        context = await asyncio.to_thread(ssl.create_default_context, cafile=str(ca))
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"https://127.0.0.1:{port}/readyz", ssl=context) as response,
            ):
                return response.status == 200
        except aiohttp.ClientError:
            return False

    # ------------------------------------------------------------------------------------ the scenario
    async def airway(self, flight: Path) -> None:
        schema = {
            "openAPIV3Schema": {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": True,
                "properties": {"status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
            }
        }
        body = {
            "apiVersion": "yoke.cd/v1alpha1",
            "kind": "Airway",
            "metadata": {"name": AIRWAY},
            "spec": {
                "wasmUrls": {"flight": str(flight)},
                "mode": "dynamic",
                "clusterAccess": True,
                "template": {
                    "group": "examples.com",
                    "names": {"kind": "Backend", "plural": "backends", "singular": "backend"},
                    "scope": "Namespaced",
                    "versions": [{"name": "v1", "served": True, "storage": True, "schema": schema}],
                },
            },
        }
        await self.kube.apply(f"/apis/yoke.cd/v1alpha1/airways/{AIRWAY}", body, field_manager="demo", force=True)

        async def ready() -> bool:
            airway = await self.kube.get(f"/apis/yoke.cd/v1alpha1/airways/{AIRWAY}")
            return any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in (airway.get("status") or {}).get("conditions", [])
            )

        await until("the Airway to be Ready", ready)

    async def backend(self) -> None:
        await self._ensure("/api/v1/namespaces", {"metadata": {"name": NAMESPACE}})
        body = {
            "apiVersion": "examples.com/v1",
            "kind": "Backend",
            "metadata": {"name": "c4ts", "namespace": NAMESPACE},
            "spec": {"image": "nginx", "replicas": 2, "secretData": {"password": "first-password"}},
        }
        await self.kube.apply(
            f"/apis/examples.com/v1/namespaces/{NAMESPACE}/backends/c4ts", body, field_manager="demo", force=True
        )

        async def ready() -> bool:
            backend = await self.kube.get(f"/apis/examples.com/v1/namespaces/{NAMESPACE}/backends/c4ts")
            return any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in (backend.get("status") or {}).get("conditions", [])
            )

        await until("the Backend to be Ready", ready)

    async def template_hash(self) -> str:
        deployment = await self.kube.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/c4ts")
        return str(deployment["spec"]["template"]["metadata"]["annotations"].get("backend.test/secret-hash", ""))

    async def change_secret(self) -> tuple[str, str]:
        before = await self.template_hash()
        patch = {"data": {"password": base64.b64encode(b"second-password").decode()}}
        await self.kube.request(
            "PATCH", f"/api/v1/namespaces/{NAMESPACE}/secrets/c4ts-secret", body=patch, content_type=MERGE
        )

        async def rolled() -> str | None:
            after = await self.template_hash()
            return after if after != before else None

        return before, await until("the Deployment to follow the Secret", rolled, timeout=60)


async def _exists(path: Path) -> bool:
    return await asyncio.to_thread(path.exists)


async def _http_ok(url: str) -> bool:
    try:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            return response.status == 200
    except aiohttp.ClientError:
        return False


async def run(state: ClusterState, flight: Path) -> None:
    work = REPO / ".local" / "demo"
    (work / "cache").mkdir(parents=True, exist_ok=True)
    async with await KubeClient.connect(state.kubeconfig) as kube:
        demo = Demo(state, kube, work)
        say("Starting atc-webhook (TLS, registered with the API server) and atc-controller (as atc-service-account)")
        webhook_port, _ = await demo.start_services()
        print(f"webhook on https://127.0.0.1:{webhook_port}; logs in {work}/atc-webhook.log and atc-controller.log")
        kubectl(state, "get", "validatingwebhookconfigurations")
        say(f"Applying the Airway {AIRWAY} in dynamic mode (flight: {flight.name}, cluster access)")
        await demo.airway(flight)
        kubectl(state, "get", "airways")
        kubectl(state, "get", "crd", AIRWAY)
        say("Creating a Backend: the flight emits a Secret, a Deployment with the Secret's hash, and echoes status")
        await demo.backend()
        kubectl(state, "get", "backends", "-n", NAMESPACE, "-o", "yaml")
        kubectl(
            state, "get", "secret,deployment,replicaset", "-n", NAMESPACE, "-l", "app.kubernetes.io/managed-by=atc.yoke"
        )
        kubectl(state, "get", "events", "-n", NAMESPACE, "--field-selector", "involvedObject.name=c4ts")
        say("Changing the Secret by hand: the webhook signals the controller, which re-runs the flight")
        before, after = await demo.change_secret()
        print(f"pod template hash: {before[:16]}... -> {after[:16]}...")
        await asyncio.sleep(1)
        kubectl(state, "get", "replicasets", "-n", NAMESPACE, "-l", "app=c4ts")
        kubectl(state, "get", "events", "-n", NAMESPACE, "--field-selector", "involvedObject.name=c4ts")
    say("Look around, then clean up")
    print(f"""  export KUBECONFIG={state.kubeconfig} PATH=$PWD/.local/bin:$PATH
  kubectl get backends,deployments,secrets -n {NAMESPACE}
  kubectl describe backend c4ts -n {NAMESPACE}      # Events: RevisionApplied, SubresourceChanged
  kubectl edit deployment c4ts -n {NAMESPACE}       # dynamic mode puts it back
  tail -f .local/demo/atc-controller.log

  make demo-down      # stop the two services
  make cluster-down   # stop the services and the local control plane""")


def down() -> int:
    path = REPO / ".local" / "demo" / "state.json"
    if not path.exists():
        print("no demo services recorded")
        return 0
    records = [ProcessRecord(**raw) for raw in json.loads(path.read_text())]
    alive = [r.name for r in records if is_alive(r)]
    stop_processes(records)
    path.unlink()
    print(f"stopped {', '.join(alive) or 'nothing (already stopped)'}")
    return 0
