"""The image and the chart for real: ``helm install``, both services as containers of the image, ``helm
upgrade``, ``helm uninstall``, on a control plane of their own.

The image is built from the Dockerfile (``containers.ensure_atc_image``). ``helm install`` puts the
chart into a fresh local control plane; KWOK plays its pods, and each Deployment's container runs for
real as a Docker container made from the installed Deployment: its command and environment, user
65532, read-only root filesystem with only the chart's writable mounts, all capabilities dropped,
the TLS Secret the install generated, and the in-cluster token of the ServiceAccount the install
created (``containers.PodContainer``). The webhook Service is of type ExternalName (``localhost``),
so the API server calls the webhook container over TLS, checking the certificate for the Service's
name. Through the containers: the Backend scenario reaches Ready, a Secret change rolls its
Deployment, a reconciled instance is updated, the probes and metrics answer. ``helm upgrade`` keeps
the self-signed CA and serving certificate; ``helm uninstall`` leaves nothing but the CRDs.

Skips with one line when no Docker daemon is reachable. Start-to-ready seconds of each service, the
image size and build time are recorded as test properties.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import helmcli
import pytest
import yaml
from containers import BuiltImage, PodContainer, docker_unreachable, ensure_atc_image, image_size_mib
from servers import serve_files
from support import backend_deployment_hash, backend_secret_hash, eventually

from atc.k8s.client import MERGE_PATCH, KubeClient, KubeError
from atc.model.types import Object
from devcluster.cluster import Cluster, ClusterState, free_port

pytestmark = [pytest.mark.cluster, pytest.mark.image]

CHART = Path(__file__).resolve().parents[2] / "charts" / "atc"
NAMESPACE = "atc"
RELEASE = "atc"
AIRWAYS = "/apis/yoke.cd/v1alpha1/airways"
GROUP = "images.examples.com"
INSTANCES = f"/apis/{GROUP}/v1/namespaces/default/backends"
TLS_SECRET = f"{RELEASE}-webhook-tls"
CHART_LABEL = "app.kubernetes.io/instance=atc"


@pytest.fixture(scope="module")
def image() -> BuiltImage:
    reason = docker_unreachable()
    if reason:
        pytest.skip(f"image tests need Docker: {reason}")
    return ensure_atc_image()


@pytest.fixture(scope="module")
def control_plane(cluster: ClusterState, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterState]:
    """A control plane for this module alone: the chart's webhooks must not judge other tests' writes."""
    own = Cluster(tmp_path_factory.mktemp("image-cluster"), tie_to_parent=True)
    try:
        yield own.start(Path(cluster.bin_dir))
    finally:
        own.stop()


@pytest.fixture
async def admin(control_plane: ClusterState) -> AsyncIterator[KubeClient]:
    async with await KubeClient.connect(control_plane.kubeconfig) as kube:
        yield kube


async def helm(control_plane: ClusterState, *args: str) -> str:
    done = await asyncio.to_thread(helmcli.run_helm, list(args), kubeconfig=control_plane.kubeconfig, timeout=300)
    return done.stdout


def chart_values(image: BuiltImage, ports: dict[str, int], directory: Path) -> list[str]:
    """helm arguments: the test's image, free ports, the webhook outside the cluster, flights on loopback."""
    repository, tag = image.tag.split(":", 1)
    values = {
        "controller": {
            "replicaCount": 1,
            "image": {"repository": repository, "tag": tag},
            "healthPort": ports["health"],
            "metricsPort": ports["metrics"],
            "rbac": {"airwayGroups": [GROUP], "readAllResources": True},
        },
        "webhook": {
            "replicaCount": 1,
            "image": {"repository": repository, "tag": tag},
            "port": ports["webhook"],
            "service": {"port": ports["webhook"], "type": "ExternalName", "externalName": "localhost"},
        },
        "moduleFetchAllowedNetworks": ["127.0.0.0/8"],
        "logFormat": "text",
    }
    path = directory / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return [f"--values={path}"]


async def deployment(admin: KubeClient, component: str) -> Object:
    found: Object = await admin.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{RELEASE}-{component}")
    return found


async def ready_within(url: str, container: PodContainer, context: ssl.SSLContext | None = None) -> float:
    """Seconds from now until ``url`` answers 200; fails if the container exits."""
    started = time.monotonic()

    async def ready() -> bool:
        assert container.process is not None
        if container.process.poll() is not None:
            raise AssertionError(f"{container.name} exited {container.process.returncode}: {container.log_tail()}")
        try:
            async with aiohttp.ClientSession() as session, session.get(url, ssl=context or False) as answer:
                return answer.status == 200
        except aiohttp.ClientError:
            return False

    await eventually(ready, timeout=120, interval=0.1, what=f"{container.name} {url}")
    return time.monotonic() - started


async def instance_ready(admin: KubeClient, name: str) -> Object | None:
    try:
        found = await admin.get(f"{INSTANCES}/{name}")
    except KubeError:
        return None
    conditions = (found.get("status") or {}).get("conditions") or []
    ok = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    return found if ok else None


async def run_backend_scenario(admin: KubeClient, flight_url: str) -> None:
    template = {
        "group": GROUP,
        "names": {"kind": "Backend", "plural": "backends", "singular": "backend"},
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
            }
        ],
    }
    airway = {
        "apiVersion": "yoke.cd/v1alpha1",
        "kind": "Airway",
        "metadata": {"name": f"backends.{GROUP}"},
        "spec": {"wasmUrls": {"flight": flight_url}, "template": template, "mode": "dynamic", "clusterAccess": True},
    }
    await admin.request("POST", AIRWAYS, body=airway)

    async def served() -> bool:
        try:
            await admin.get(INSTANCES)
        except KubeError:
            return False
        return True

    await eventually(served, timeout=90, what="the Airway's CRD served")
    instance = {
        "apiVersion": f"{GROUP}/v1",
        "kind": "Backend",
        "metadata": {"name": "api", "namespace": "default"},
        "spec": {"secretData": {"password": "first"}, "replicas": 1},
    }

    async def created() -> bool:  # the per-Airway admission webhook may not be registered the first moment
        try:
            await admin.request("POST", INSTANCES, body=instance)
        except KubeError as exc:
            return exc.status == 409
        return True

    await eventually(created, timeout=60, what="the instance created through admission")
    await eventually(lambda: instance_ready(admin, "api"), timeout=120, what="the instance Ready")
    assert await backend_deployment_hash(admin, "default", "api") == backend_secret_hash({"password": "first"})

    # a Secret change rolls the Deployment (dynamic mode: webhook signal -> controller)
    secret_path = "/api/v1/namespaces/default/secrets/api-secret"
    await admin.request("PATCH", secret_path, body={"stringData": {"password": "second"}}, content_type=MERGE_PATCH)

    async def rolled() -> bool:
        return await backend_deployment_hash(admin, "default", "api") == backend_secret_hash({"password": "second"})

    await eventually(rolled, timeout=60, what="the Deployment's template follows the Secret")

    # a reconciled instance can be updated (the webhook's dry run admits it), and the update lands
    await admin.request("PATCH", f"{INSTANCES}/api", body={"spec": {"replicas": 2}}, content_type=MERGE_PATCH)

    async def scaled() -> bool:
        found = await admin.get("/apis/apps/v1/namespaces/default/deployments/api")
        return bool(found["spec"]["replicas"] == 2)

    await eventually(scaled, timeout=60, what="the update applied")


async def leftovers(admin: KubeClient) -> list[str]:
    """Objects of the release still in the cluster, CRDs excepted."""
    paths = [
        f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts",
        f"/api/v1/namespaces/{NAMESPACE}/services",
        f"/api/v1/namespaces/{NAMESPACE}/secrets",
        f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments",
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
    ]
    found: list[str] = []
    for path in paths:
        listing = await admin.get(path, query={"labelSelector": CHART_LABEL})
        found += [f"{path}/{item['metadata']['name']}" for item in listing["items"]]
    return found


async def test_helm_install_runs_both_services_from_the_image_and_upgrade_and_uninstall_are_clean(
    image: BuiltImage,
    control_plane: ClusterState,
    admin: KubeClient,
    build_flight: Any,
    tmp_path: Path,
    record_property: Any,
) -> None:
    record_property("image_size_mib", round(image_size_mib(image.tag), 1))
    record_property("image_build_seconds", round(image.build_seconds, 1))
    ports = {"webhook": free_port(), "health": free_port(), "metrics": free_port()}
    values = chart_values(image, ports, tmp_path)
    api_port = int(control_plane.server.rsplit(":", 1)[1])
    await helm(control_plane, "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--create-namespace", *values)

    webhook = await PodContainer.from_deployment(
        admin, await deployment(admin, "webhook"), name="atc-image-webhook", work_dir=tmp_path, api_port=api_port
    )
    controller = await PodContainer.from_deployment(
        admin, await deployment(admin, "controller"), name="atc-image-controller", work_dir=tmp_path, api_port=api_port
    )
    tls = await admin.get(f"/api/v1/namespaces/{NAMESPACE}/secrets/{TLS_SECRET}")
    ca_pem = base64.b64decode(tls["data"]["ca.crt"]).decode()
    try:
        webhook.start(tmp_path)
        context = ssl.create_default_context(cadata=ca_pem)
        context.check_hostname = False  # the certificate names the Service; we reach it on loopback
        record_property(
            "webhook_start_to_ready_seconds",
            round(await ready_within(f"https://127.0.0.1:{ports['webhook']}/readyz", webhook, context), 2),
        )
        controller.start(tmp_path)
        record_property(
            "controller_start_to_ready_seconds",
            round(await ready_within(f"http://127.0.0.1:{ports['health']}/readyz", controller), 2),
        )
        # as the chart runs them: non-root, read-only root filesystem, no capabilities
        for container in (webhook, controller):
            assert container.inspect("{{.Config.User}}") == "65532:65532"
            assert container.inspect("{{.HostConfig.ReadonlyRootfs}}") == "true"
            assert container.inspect("{{.HostConfig.CapDrop}}") == "[ALL]"

        flight = build_flight("backend")
        with serve_files(flight.parent) as base_url:
            await run_backend_scenario(admin, f"{base_url}/{flight.name}")

        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{ports['health']}/healthz") as answer:
                assert answer.status == 200
            async with session.get(f"https://127.0.0.1:{ports['webhook']}/healthz", ssl=context) as answer:
                assert answer.status == 200
            async with session.get(f"http://127.0.0.1:{ports['metrics']}/metrics") as answer:
                text = await answer.text()
            assert 'controller_runtime_reconcile_total{controller="instance:backends.images.examples.com"' in text
            async with session.get(f"https://127.0.0.1:{ports['webhook']}/metrics", ssl=context) as answer:
                assert answer.status == 200

        # helm upgrade: a changed value, the same CA and serving certificate (the chart's lookup)
        configs = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"
        bundle_before = (await admin.get(f"{configs}/{RELEASE}-airway"))["webhooks"][0]["clientConfig"]["caBundle"]
        await helm(
            control_plane, "upgrade", RELEASE, str(CHART), "--namespace", NAMESPACE, *values,
            "--set", "controller.concurrency=3",
        )  # fmt: skip
        after = await admin.get(f"/api/v1/namespaces/{NAMESPACE}/secrets/{TLS_SECRET}")
        assert after["data"] == tls["data"], "helm upgrade must keep the CA and serving certificate"
        bundle_after = (await admin.get(f"{configs}/{RELEASE}-airway"))["webhooks"][0]["clientConfig"]["caBundle"]
        assert bundle_after == bundle_before
        upgraded = await deployment(admin, "controller")
        env = {e["name"]: e.get("value") for e in upgraded["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["CONCURRENCY"] == "3"

        await admin.request("DELETE", f"{AIRWAYS}/backends.{GROUP}")

        async def airway_gone() -> bool:
            try:
                await admin.get(f"{AIRWAYS}/backends.{GROUP}")
            except KubeError as exc:
                return exc.not_found
            return False

        await eventually(airway_gone, timeout=90, what="the Airway deleted through the controller")
    finally:
        controller.stop()
        webhook.stop()

    await helm(control_plane, "uninstall", RELEASE, "--namespace", NAMESPACE, "--wait")
    assert await leftovers(admin) == []
    crds = await admin.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/airways.yoke.cd")
    assert crds["metadata"]["name"] == "airways.yoke.cd"  # CRDs stay, as docs/chart.md says
