"""End-to-end harness: the controller as a subprocess, Airways and instances made from test flights.

``Harness`` is what e2e tests and benchmarks drive: it starts ``atc-controller``
against the test cluster (logs attached to the report on failure), creates
Airways whose CRD group is unique to the test (so tests never share a CRD),
runs each service as its own ServiceAccount with exactly the Helm chart's RBAC
(``tools/deployed.py``; never an admin identity),
creates and reads instances, waits for conditions, counts API requests from
kube-apiserver's own metrics, and deletes what it made before the controller
stops. Imported by tests (``tests`` is on pytest's pythonpath).
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from deployed import ChartIdentities, WebhookTarget, install_chart_identities, register_static_webhooks
from support import ServiceProcess, eventually

from atc.k8s.client import KubeClient, KubeError
from atc.k8s.crds import AIRWAYS_PATH as AIRWAYS
from atc.model.types import Object
from devcluster.cluster import free_port
from devcluster.pki import CertificateAuthority

SCHEMA = {
    "openAPIV3Schema": {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
        # without this the API server prunes what flights put in status besides conditions
        "properties": {"status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
    }
}


@dataclass(frozen=True)
class AirwayRef:
    """An Airway made by the harness and the CRD it serves."""

    name: str
    group: str
    kind: str
    plural: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/v1"

    def collection(self, namespace: str) -> str:
        scope = f"/namespaces/{namespace}" if self.namespaced else ""
        return f"/apis/{self.group}/v1{scope}/{self.plural}"

    def path(self, namespace: str, name: str) -> str:
        return f"{self.collection(namespace)}/{name}"


@dataclass
class Controller:
    process: ServiceProcess
    health_port: int
    metrics_port: int


@dataclass
class Webhook:
    process: ServiceProcess
    port: int
    tls_dir: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_cert(self) -> Path:
        return self.tls_dir / "ca.crt"

    async def readyz(self) -> int | None:
        """The status of ``/readyz``, None while the server does not answer yet; raises once the process exited."""
        if self.process.proc.poll() is not None:
            raise AssertionError(f"atc-webhook exited with {self.process.proc.returncode}")
        if not self.ca_cert.is_file():
            return None
        context = ssl.create_default_context(cafile=str(self.ca_cert))
        try:
            async with aiohttp.ClientSession() as session, session.get(f"{self.url}/readyz", ssl=context) as answer:
                return answer.status
        except (aiohttp.ClientError, ssl.SSLError):
            return None


STATIC_WEBHOOKS = ("atc-airway", "atc-flight", "atc-resources")
# Test flights are local files and test servers listen on loopback: the harness allows both, which the
# services refuse by default (docs/security.md); the tests of that refusal pass their own settings.
LOCAL_MODULES = {"MODULE_ALLOW_LOCAL_FILES": "true", "MODULE_FETCH_ALLOWED_NETWORKS": "127.0.0.0/8"}


@dataclass
class Harness:
    kube: KubeClient
    namespace: str
    kubeconfig: Path
    cache_dir: Path
    build_flight: Callable[[str], Path]
    run_service: Callable[..., ServiceProcess]
    pki_dir: Path
    airways: list[AirwayRef] = field(default_factory=list)
    controllers: list[Controller] = field(default_factory=list)  # every controller started, live or not
    webhook: Webhook | None = None
    cleanups: list[str] = field(default_factory=list)  # API paths to delete at the end
    chart_values: list[str] = field(default_factory=list)  # helm arguments for the test's chart RBAC
    _identities: ChartIdentities | None = None

    # ------------------------------------------------------------------------------------ identities
    async def identities(self) -> ChartIdentities:
        """The chart's ServiceAccounts and RBAC for this test (made once): the services run as those.

        ``chart_values`` (helm ``--set``/``--values`` arguments) must be set before the first call.
        """
        if self._identities is None:
            self._identities = await install_chart_identities(
                self.kube, self.kubeconfig, self.namespace, self.svc_name, self.cache_dir.parent, *self.chart_values
            )
            self.cleanups.extend(self._identities.cluster_scoped)
        return self._identities

    @property
    def svc_name(self) -> str:
        """The chart's fullname for this test: SVC_NAME, and the prefix of its cluster-scoped roles."""
        return f"atc-{self.namespace}"

    # ------------------------------------------------------------------------------------ controller
    async def start_controller(self, name: str = "atc-controller", **env: str) -> Controller:
        """Start the controller and wait until its /readyz passes (CRDs installed, caches synced if leading)."""
        controller = await self.spawn_controller(name, **env)

        async def ready() -> bool:
            if controller.process.proc.poll() is not None:
                raise AssertionError(f"{name} exited with {controller.process.proc.returncode}")
            try:
                url = f"http://127.0.0.1:{controller.health_port}/readyz"
                async with aiohttp.ClientSession() as session, session.get(url) as response:
                    return response.status == 200
            except aiohttp.ClientError:
                return False

        await eventually(ready, timeout=60, what=f"{name} /readyz")
        return controller

    async def spawn_controller(self, name: str = "atc-controller", **env: str) -> Controller:
        """The controller as the chart runs it: as ``<SVC_NAME>-service-account`` with the chart's RBAC."""
        identities = await self.identities()
        health, metrics = free_port(), free_port()
        settings = {
            "KUBE": str(identities.controller_kubeconfig),
            "SVC_NAME": self.svc_name,
            "CACHE_FS": str(self.cache_dir),
            "SVC_NAMESPACE": self.namespace,
            "HEALTH_PORT": str(health),
            "METRICS_PORT": str(metrics),
            "LOG_FORMAT": "text",
            "CONCURRENCY": "2",
            "LEASE_DURATION_SECONDS": "6",
            "RENEW_DEADLINE_SECONDS": "4",
            "RETRY_PERIOD_SECONDS": "1",
            **LOCAL_MODULES,
            **env,
        }
        process = self.run_service(name, [sys.executable, "-m", "atc_controller"], settings)
        controller = Controller(process, health, metrics)
        self.controllers.append(controller)
        return controller

    async def start_atc(
        self, *, webhook_env: dict[str, str] | None = None, **controller_env: str
    ) -> tuple[Controller, Webhook]:
        """Both services, wired like in a cluster: the webhook registered with the API server (TLS, url
        clientConfig), each service running as its own chart ServiceAccount with the chart's RBAC."""
        webhook = await self.start_webhook(**(webhook_env or {}))
        controller = await self.start_controller(
            TLS_CA_CERT=str(webhook.ca_cert), WEBHOOK_URL=webhook.url, **controller_env
        )
        return controller, webhook

    async def start_webhook(self, name: str = "atc-webhook", **env: str) -> Webhook:
        """The webhook as its chart ServiceAccount; the static configurations are applied as the chart would."""
        identities = await self.identities()
        port = free_port()
        tls_dir = self.cache_dir.parent / f"tls-{self.namespace}-{port}"
        settings = {
            "KUBE": str(identities.webhook_kubeconfig),
            "PORT": str(port),
            "ADDRESS": "127.0.0.1",
            "TLS_GENERATE_DIR": str(tls_dir),
            "TLS_CA_CERT": str(tls_dir / "ca.crt"),
            "TLS_SERVER_CERT": str(tls_dir / "server.crt"),
            "TLS_SERVER_KEY": str(tls_dir / "server.key"),
            "REGISTER_WEBHOOKS": "false",
            "WEBHOOK_URL": f"https://127.0.0.1:{port}",
            "SVC_NAMESPACE": self.namespace,
            "SVC_NAME": self.svc_name,
            "CACHE_FS": str(self.cache_dir),
            "LOG_FORMAT": "text",
            **LOCAL_MODULES,
            **env,
        }
        process = self.run_service(name, [sys.executable, "-m", "atc_webhook"], settings)
        webhook = Webhook(process, port, tls_dir)
        self.webhook = webhook
        await self.wait_webhook_ready(webhook)
        target = WebhookTarget(self.svc_name, self.namespace, webhook.url, str(webhook.ca_cert))
        await register_static_webhooks(self.kube, target)
        return webhook

    async def wait_webhook_ready(self, webhook: Webhook) -> None:
        async def ready() -> bool:
            return await webhook.readyz() == 200

        await eventually(ready, timeout=60, what="webhook /readyz")

    async def user_kubeconfig(self, user: str, *, can_write: AirwayRef) -> Path:
        """A kubeconfig for a plain user (client certificate from the cluster CA) who may create and read
        instances of ``can_write`` in the test namespace, and nothing else."""
        ca = CertificateAuthority.load((self.pki_dir / "ca.crt").read_bytes(), (self.pki_dir / "ca.key").read_bytes())
        client = ca.issue_client(user)
        role = {
            "metadata": {"name": f"{user}-instances"},
            "rules": [
                {"apiGroups": [can_write.group], "resources": [can_write.plural], "verbs": ["create", "get", "list"]}
            ],
        }
        rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{self.namespace}"
        await self.kube.request("POST", f"{rbac}/roles", body=role)
        binding = {
            "metadata": {"name": f"{user}-instances"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": f"{user}-instances"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        }
        await self.kube.request("POST", f"{rbac}/rolebindings", body=binding)
        admin = json.loads(self.kubeconfig.read_text())
        config = {
            **admin,
            "users": [
                {
                    "name": user,
                    "user": {
                        "client-certificate-data": _b64(client.cert_pem),
                        "client-key-data": _b64(client.key_pem),
                    },
                }
            ],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": user}}],
        }
        path = self.cache_dir.parent / f"kubeconfig-{self.namespace}-{user}"
        path.write_text(json.dumps(config))
        return path

    async def create_gadget_airway(self, flight: str, converter: str) -> AirwayRef:
        """An Airway for ``Gadget`` with versions v1 (storage) and v2, converted by ``converter``."""
        group = f"t{secrets.token_hex(4)}.convert.test"
        ref = AirwayRef(f"gadgets.{group}", group, "Gadget", "gadgets")
        versions = [{"name": name, "served": True, "storage": name == "v1", "schema": SCHEMA} for name in ("v1", "v2")]
        template = {
            "group": group,
            "names": {"kind": "Gadget", "plural": "gadgets", "singular": "gadget"},
            "scope": "Namespaced",
            "versions": versions,
        }
        spec = {"wasmUrls": {"flight": str(self.build_flight(flight)), "converter": converter}, "template": template}
        body = {"apiVersion": "yoke.cd/v1alpha1", "kind": "Airway", "metadata": {"name": ref.name}, "spec": spec}
        await self.kube.request("POST", AIRWAYS, body=body)
        self.airways.append(ref)
        return ref

    # ------------------------------------------------------------------------------------ airways
    async def create_airway(
        self,
        flight: str,
        *,
        kind: str = "Backend",
        namespaced: bool = True,
        annotations: dict[str, str] | None = None,
        **spec: Any,
    ) -> AirwayRef:
        group = f"t{secrets.token_hex(4)}.examples.com"
        ref = AirwayRef(f"{kind.lower()}s.{group}", group, kind, f"{kind.lower()}s", namespaced)
        wasm_urls = {"flight": str(self.build_flight(flight)), **spec.pop("wasmUrls", {})}
        template = {
            "group": group,
            "names": {"kind": kind, "plural": ref.plural, "singular": kind.lower()},
            "scope": "Namespaced" if namespaced else "Cluster",
            "versions": [{"name": "v1", "served": True, "storage": True, "schema": SCHEMA}],
        }
        body = {
            "apiVersion": "yoke.cd/v1alpha1",
            "kind": "Airway",
            "metadata": {"name": ref.name, "annotations": annotations or {}},
            "spec": {"wasmUrls": wasm_urls, "template": template, **spec},
        }
        await self.kube.request("POST", AIRWAYS, body=body)
        self.airways.append(ref)
        return ref

    async def airway(self, ref: AirwayRef) -> Object:
        return await self.kube.get(f"{AIRWAYS}/{ref.name}")

    async def wait_airway_ready(self, ref: AirwayRef, timeout: float = 90) -> Object:
        async def ready() -> Object | None:
            airway = await self.airway(ref)
            return airway if condition(airway, "Ready", "True") else None

        return await eventually(ready, timeout=timeout, what=f"Airway {ref.name} Ready")

    # ------------------------------------------------------------------------------------ instances
    async def create_instance(self, ref: AirwayRef, name: str, spec: Object, **metadata: Any) -> Object:
        body = {
            "apiVersion": ref.api_version,
            "kind": ref.kind,
            "metadata": {"name": name, **({"namespace": self.namespace} if ref.namespaced else {}), **metadata},
            "spec": spec,
        }
        return await self.kube.request("POST", ref.collection(self.namespace), body=body)

    async def instance(self, ref: AirwayRef, name: str) -> Object:
        return await self.kube.get(ref.path(self.namespace, name))

    async def patch_instance(self, ref: AirwayRef, name: str, patch: Object) -> Object:
        path = ref.path(self.namespace, name)
        return await self.kube.request("PATCH", path, body=patch, content_type="application/merge-patch+json")

    async def wait_condition(
        self, ref: AirwayRef, name: str, status: str, reason: str = "", *, message: str = "", timeout: float = 60
    ) -> Object:
        async def reached() -> Object | None:
            instance = await self.instance(ref, name)
            found = condition(instance, "Ready", status, reason)
            return instance if found and message in found.get("message", "") else None

        what = f"{ref.kind} {name} Ready={status} {reason} {message}".strip()
        return await eventually(reached, timeout=timeout, what=what)

    # ------------------------------------------------------------------------------------ flights
    def flights_path(self, kind: str) -> str:
        """The collection of ``kind`` (Flight: in the test namespace; ClusterFlight)."""
        if kind == "Flight":
            return f"/apis/yoke.cd/v1alpha1/namespaces/{self.namespace}/flights"
        return "/apis/yoke.cd/v1alpha1/clusterflights"

    async def create_flight(
        self, kind: str, name: str, spec: Object, *, annotations: dict[str, str] | None = None
    ) -> str:
        """Create a Flight (in the test namespace) or ClusterFlight; returns its path."""
        manifest = {
            "apiVersion": "yoke.cd/v1alpha1",
            "kind": kind,
            "metadata": {"name": name, "annotations": annotations or {}},
            "spec": spec,
        }
        await self.kube.request("POST", self.flights_path(kind), body=manifest)
        return f"{self.flights_path(kind)}/{name}"

    async def wait_ready(self, path: str, timeout: float = 90) -> Object:
        """The object at ``path`` once its ``Ready`` condition is True."""

        async def ready() -> Object | None:
            obj = await self.kube.get(path)
            return obj if condition(obj, "Ready", "True") else None

        return await eventually(ready, timeout=timeout, what=f"{path} Ready")

    async def revisions(self, release_namespace: str | None = None) -> list[Object]:
        namespace = release_namespace or self.namespace
        listing = await self.kube.get(
            f"/api/v1/namespaces/{namespace}/secrets", query={"labelSelector": "internal.yoke/kind=revision"}
        )
        items: list[Object] = listing["items"]
        return items

    async def wait_event(self, name: str, reason: str, timeout: float = 30) -> Object:
        async def recorded() -> Object | None:
            return next((e for e in await self.events(name) if e["reason"] == reason), None)

        return await eventually(recorded, timeout=timeout, what=f"Event {reason} about {name}")

    async def events(self, name: str, namespace: str | None = None) -> list[Object]:
        listing = await self.kube.get(
            f"/api/v1/namespaces/{namespace or self.namespace}/events",
            query={"fieldSelector": f"involvedObject.name={name}"},
        )
        items: list[Object] = listing["items"]
        return items

    async def gone(self, path: str, timeout: float = 90) -> None:
        async def missing() -> bool:
            try:
                await self.kube.get(path)
            except KubeError as exc:
                return exc.not_found
            return False

        await eventually(missing, timeout=timeout, what=f"{path} deleted")

    # ------------------------------------------------------------------------------------ counting
    async def apiserver_requests(self, verb: str, resource: str) -> float:
        """kube-apiserver's own count of requests (all namespaces) with this verb on this resource."""
        text = await self.kube.get_text("/metrics")
        total = 0.0
        pattern = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
        wanted = (f'verb="{verb}"', f'resource="{resource}"')
        for line in text.splitlines():
            match = pattern.match(line)
            if match and all(label in match["labels"] for label in wanted) and 'dry_run="All"' not in match["labels"]:
                total += float(match["value"])
        return total

    # ------------------------------------------------------------------------------------ cleanup
    async def delete_airways(self) -> None:
        """Delete every Airway this harness made and wait until each is gone.

        Their finalizers need a controller: one is started if none runs (a test that failed after
        stopping its own). An Airway still there after two minutes has its finalizers removed, so it
        cannot leak into later tests (its instances' watches would hit RBAC that is gone), and the
        time-out is raised.
        """
        if not self.airways:
            return
        if not any(c.process.proc.poll() is None for c in self.controllers):
            await self.start_controller("controller-cleanup")
        for ref in self.airways:
            await self._delete_if_present(f"{AIRWAYS}/{ref.name}")
        paths = [f"{AIRWAYS}/{ref.name}" for ref in self.airways]
        self.airways.clear()
        try:
            await asyncio.gather(*(self.gone(path, timeout=120) for path in paths))
        finally:
            for path in paths:
                await self._strip_finalizers(path)

    async def _delete_if_present(self, path: str) -> None:
        try:
            await self.kube.request("DELETE", path)
        except KubeError as exc:
            if not exc.not_found:
                raise

    async def _strip_finalizers(self, path: str) -> None:
        try:
            await self.kube.request(
                "PATCH", path, body={"metadata": {"finalizers": None}}, content_type="application/merge-patch+json"
            )
        except KubeError as exc:
            if not exc.not_found:
                raise

    async def clean_up(self) -> None:
        """Airways first (the services must still run), then registrations and RBAC made for the test."""
        try:
            await self.delete_airways()
        finally:
            await self._delete_test_objects()

    async def _delete_test_objects(self) -> None:
        paths = list(self.cleanups)
        if self.webhook is not None:  # registrations are never removed by the webhook itself
            paths += [
                f"/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/{n}" for n in STATIC_WEBHOOKS
            ]
        for path in paths:
            await self._delete_if_present(path)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def condition(obj: Object, kind: str, status: str, reason: str = "") -> Object | None:
    for item in (obj.get("status") or {}).get("conditions") or []:
        if item.get("type") == kind and item.get("status") == status and (not reason or item.get("reason") == reason):
            found: Object = item
            return found
    return None
