"""Test helpers shared by many tests: waiting for conditions, running service subprocesses.

Imported by ``tests/conftest.py`` and by test modules (``tests`` is on
pytest's ``pythonpath``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from atc.k8s.client import KubeClient
from devcluster.cluster import die_with_parent

T = TypeVar("T")
SERVICES_KEY = pytest.StashKey[list["ServiceProcess"]]()
LOG_TAIL_BYTES = 64 * 1024


def config_map(name: str, namespace: str, value: str) -> dict[str, Any]:
    """A ConfigMap holding ``value`` under the key ``value``."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": {"value": value},
    }


def open_crd_spec(group: str, kind: str, *, status: bool = False) -> dict[str, Any]:
    """The spec of a namespaced CRD with one served version ``v1`` that accepts any fields.

    ``status`` adds the status subresource. Used as an Airway template and as a raw CRD.
    """
    plural = kind.lower() + "s"
    version: dict[str, Any] = {
        "name": "v1",
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
    }
    if status:
        version["subresources"] = {"status": {}}
    return {
        "group": group,
        "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
        "scope": "Namespaced",
        "versions": [version],
    }


async def eventually(
    probe: Callable[[], Awaitable[T | None]],
    *,
    timeout: float = 60.0,
    interval: float = 0.25,
    what: str = "",
) -> T:
    """Await ``probe`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what or probe}; last value: {last!r}")


@dataclass
class ServiceProcess:
    """A service started for one test, in its own process group, logging to a file."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self) -> str:
        with contextlib.suppress(OSError), self.log_path.open("rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - LOG_TAIL_BYTES))
            return log.read().decode(errors="replace")
        return "(no log)"

    def stop(self, grace: float = 10.0) -> int:
        """SIGTERM the process group, SIGKILL it after ``grace``; returns the exit code."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode


def start_service(name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> ServiceProcess:
    log_path = log_dir / f"{name}.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
    return ServiceProcess(name, proc, log_path)


# ----------------------------------------------------------------------------------------------- Backend flight
def backend_secret_hash(data: dict[str, str]) -> str:
    """The hash the Backend flight puts on its Deployment's pod template for a Secret with ``data``."""
    return hashlib.sha256("".join(f"{k}={data[k]}\n" for k in sorted(data)).encode()).hexdigest()


async def backend_deployment_hash(kube: KubeClient, namespace: str, name: str) -> str:
    """The Secret hash on the pod template of the Backend flight's Deployment ``namespace/name``."""
    deployment = await kube.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
    return str(deployment["spec"]["template"]["metadata"]["annotations"]["backend.test/secret-hash"])
