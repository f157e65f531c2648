"""The ATC image built and its pods run as Docker containers, the way the chart's Deployments describe them.

- ``docker_unreachable()``: why no Docker daemon can be used (``None`` when one answers);
- ``ensure_atc_image()``: the image built from this repository's Dockerfile, tagged by a hash of what
  goes into it (so an unchanged tree reuses it), on the base ``ATC_TEST_BASE_IMAGE`` names, else the
  Debian-built one of ``tools/baseimage.py``;
- ``PodContainer.from_deployment(...)``: ``docker run`` arguments for the first container of an
  installed Deployment: its command, its environment (values, field and Secret references), its
  security context (user, read-only root filesystem, dropped capabilities, no privilege escalation),
  its volumes (``emptyDir`` as tmpfs, Secrets written to files and mounted read-only) and the
  in-cluster ServiceAccount token of its ServiceAccount (a TokenRequest, mounted where client
  libraries look for it). Containers share the host's network, where the control plane listens.

Used by ``tests/image/test_chart_install.py``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import baseimage

from atc.k8s.client import KubeClient
from atc.model.types import Object

REPO = Path(__file__).resolve().parents[2]
IMAGE_INPUTS = ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md", "requirements.lock", "src", "services")
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
TOKEN_SECONDS = 3600


def docker_unreachable() -> str | None:
    """Why the tests cannot use Docker, or ``None`` when a daemon answers."""
    if shutil.which("docker") is None:
        return "no docker CLI on PATH"
    done = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, check=False)
    if done.returncode != 0:
        return "no Docker daemon reachable (.ci/run starts one; see docs/deploy.md)"
    return None


def _tree_hash() -> str:
    digest = hashlib.sha256()
    for name in IMAGE_INPUTS:
        path = REPO / name
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            if "__pycache__" in file.parts or file.suffix in (".pyc", ".wasm"):
                continue
            digest.update(str(file.relative_to(REPO)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    base: str
    build_seconds: float  # 0 when an image of the same content was there already


def ensure_atc_image() -> BuiltImage:
    """The image of this tree, built when no image of the same content and base exists."""
    base = os.environ.get("ATC_TEST_BASE_IMAGE") or baseimage.ensure_base_image()
    tag = f"atc:test-{_tree_hash()}-{hashlib.sha256(base.encode()).hexdigest()[:6]}"
    if baseimage.image_exists(tag):
        return BuiltImage(tag, base, 0.0)
    started = time.monotonic()
    argv = ["docker", "build", "--network", "host", "--build-arg", f"PYTHON_IMAGE={base}", "-t", tag, str(REPO)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise AssertionError(f"docker build failed: {(done.stderr or done.stdout)[-3000:]}")
    return BuiltImage(tag, base, time.monotonic() - started)


def image_size_mib(tag: str) -> float:
    done = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Size}}", tag], capture_output=True, text=True, check=True
    )
    return int(done.stdout.strip()) / 2**20


@dataclass
class PodContainer:
    """One container of a pod template, as ``docker run`` arguments; ``start`` runs it attached, logging."""

    name: str
    image: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    options: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @classmethod
    async def from_deployment(
        cls, kube: KubeClient, deployment: Object, *, name: str, work_dir: Path, api_port: int
    ) -> PodContainer:
        namespace = deployment["metadata"]["namespace"]
        pod = deployment["spec"]["template"]["spec"]
        spec = pod["containers"][0]
        container = cls(name, spec["image"], [*spec.get("command", []), *spec.get("args", [])])
        container._security(pod.get("securityContext") or {}, spec.get("securityContext") or {})
        for variable in spec.get("env") or []:
            container.env[variable["name"]] = await _env_value(kube, namespace, variable, name)
        volumes = {volume["name"]: volume for volume in pod.get("volumes") or []}
        for mount in spec.get("volumeMounts") or []:
            await container._mount(kube, namespace, volumes[mount["name"]], mount, work_dir / name)
        account = pod.get("serviceAccountName") or "default"
        await container._service_account(kube, namespace, account, work_dir / name / "serviceaccount", api_port)
        return container

    def _security(self, pod: Object, spec: Object) -> None:
        user, group = spec.get("runAsUser", pod.get("runAsUser")), spec.get("runAsGroup", pod.get("runAsGroup"))
        if user is not None:
            self.options += ["--user", f"{user}:{group if group is not None else user}"]
        if spec.get("readOnlyRootFilesystem"):
            self.options.append("--read-only")
        for capability in (spec.get("capabilities") or {}).get("drop") or []:
            self.options += ["--cap-drop", capability]
        if spec.get("allowPrivilegeEscalation") is False:
            self.options += ["--security-opt", "no-new-privileges"]

    async def _mount(self, kube: KubeClient, namespace: str, volume: Object, mount: Object, base: Path) -> None:
        target = mount["mountPath"]
        if "emptyDir" in volume:
            self.options += ["--tmpfs", f"{target}:rw,mode=1777"]
            return
        if "secret" not in volume:
            raise AssertionError(f"volume {volume['name']}: only emptyDir and secret volumes are supported here")
        secret = await kube.get(f"/api/v1/namespaces/{namespace}/secrets/{volume['secret']['secretName']}")
        directory = base / volume["name"]
        _write_files(directory, {key: base64.b64decode(value) for key, value in (secret.get("data") or {}).items()})
        self.options += ["--mount", f"type=bind,source={directory},target={target},readonly"]

    async def _service_account(
        self, kube: KubeClient, namespace: str, account: str, directory: Path, port: int
    ) -> None:
        request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest"}
        path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token"
        answer = await kube.request("POST", path, body={**request, "spec": {"expirationSeconds": TOKEN_SECONDS}})
        config_map = await kube.get(f"/api/v1/namespaces/{namespace}/configmaps/kube-root-ca.crt")
        files = {"token": answer["status"]["token"], "ca.crt": config_map["data"]["ca.crt"], "namespace": namespace}
        _write_files(directory, {name: text.encode() for name, text in files.items()})
        self.options += ["--mount", f"type=bind,source={directory},target={SERVICE_ACCOUNT_DIR},readonly"]
        self.env |= {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(port)}

    def docker_run_argv(self) -> list[str]:
        env = [arg for key, value in sorted(self.env.items()) for arg in ("--env", f"{key}={value}")]
        return [
            "docker", "run", "--rm", "--name", self.name, "--network", "host", *self.options, *env,
            "--entrypoint", self.argv[0], self.image, *self.argv[1:],
        ]  # fmt: skip

    def start(self, log_dir: Path) -> None:
        """``docker run`` attached, its output in ``<log_dir>/<name>.log``."""
        self.remove()
        self.log_path = log_dir / f"{self.name}.log"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.docker_run_argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )

    def log_tail(self, size: int = 6000) -> str:
        if self.log_path is None or not self.log_path.is_file():
            return "(no log)"
        return self.log_path.read_bytes()[-size:].decode(errors="replace")

    def inspect(self, template: str) -> str:
        done = subprocess.run(["docker", "inspect", "--format", template, self.name], capture_output=True, text=True)
        return done.stdout.strip()

    def stop(self, grace: int = 10) -> None:
        subprocess.run(["docker", "stop", "--time", str(grace), self.name], capture_output=True, check=False)
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(grace + 5)

    def remove(self) -> None:
        subprocess.run(["docker", "rm", "--force", self.name], capture_output=True, check=False)


def _write_files(directory: Path, files: dict[str, bytes]) -> None:
    """Files readable by the container's user (the host directory is only mounted read-only)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (directory / name).write_bytes(content)
        (directory / name).chmod(0o644)


async def _env_value(kube: KubeClient, namespace: str, variable: Object, pod_name: str) -> str:
    if "value" in variable:
        return str(variable["value"])
    source = variable.get("valueFrom") or {}
    if not source:  # an empty value: the API server drops ``value: ""``
        return ""
    if "fieldRef" in source:
        fields = {"metadata.namespace": namespace, "metadata.name": pod_name, "status.podIP": "127.0.0.1"}
        return fields[source["fieldRef"]["fieldPath"]]
    if "secretKeyRef" in source:
        ref = source["secretKeyRef"]
        secret = await kube.get(f"/api/v1/namespaces/{namespace}/secrets/{ref['name']}")
        return base64.b64decode(secret["data"][ref["key"]]).decode()
    raise AssertionError(f"environment variable {variable['name']}: unsupported source {sorted(source)}")
