"""Benchmark of dynamic mode: from a child change to the start of the flight's re-run (goal P6).

``.venv/bin/python bench/dynamic.py [--changes 40]`` runs both services like the e2e tests do (the
webhook registered over TLS, the controller as its ServiceAccount), makes a dynamic-mode instance
of the ``multi`` flight, then edits its child ConfigMap ``--changes`` times, one at a time. For each
edit it measures: the time until the controller starts reconciling the instance (from the
controller's JSON log: the first ``processing event`` of that instance after the edit), and the
time until the child is back to its desired state. The signal travels webhook -> Event -> API
server -> controller watch, as in a cluster. Results go to ``.local/bench/dynamic.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "tools"), str(REPO / "tests")]

from benchlib import control_plane, percentiles, write_results  # noqa: E402
from harness import Harness  # noqa: E402
from support import ServiceProcess, start_service  # noqa: E402

import flightbuild  # noqa: E402
from atc.k8s.client import KubeClient  # noqa: E402

MERGE = "application/merge-patch+json"


def reconcile_starts(log: Path, instance: str) -> list[float]:
    """Wall-clock times (epoch seconds) of ``processing event`` log lines of one instance."""
    starts = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("msg") == "processing event" and entry.get("name") == instance:
            starts.append(datetime.datetime.fromisoformat(entry["time"]).timestamp())
    return starts


async def run(kubeconfig: str, pki_dir: Path, work: Path, changes: int) -> dict[str, Any]:
    services: list[ServiceProcess] = []

    def run_service(name: str, argv: list[str], env: dict[str, str] | None = None) -> ServiceProcess:
        service = start_service(name, argv, {"KUBE": kubeconfig, **(env or {})}, work)
        services.append(service)
        return service

    build: Callable[[str], Path] = flightbuild.build
    async with await KubeClient.connect(kubeconfig) as kube:
        namespace = f"bench-{os.getpid()}"
        await kube.request("POST", "/api/v1/namespaces", body={"metadata": {"name": namespace}})
        (work / "cache").mkdir()
        harness = Harness(kube, namespace, Path(kubeconfig), work / "cache", build, run_service, pki_dir)
        try:
            controller, _ = await harness.start_atc(LOG_FORMAT="json")
            ref = await harness.create_airway("multi", mode="dynamic")
            await harness.wait_airway_ready(ref)
            await harness.create_instance(ref, "dyn", {"configMaps": {"a": "1"}})
            await harness.wait_condition(ref, "dyn", "True", "Ready")
            edits, restored = await edit_and_wait(harness, changes)
            starts = reconcile_starts(controller.process.log_path, "dyn")
            to_rerun = [min(s for s in starts if s > edit) - edit for edit in edits if any(s > edit for s in starts)]
            await harness.clean_up()
        finally:
            for service in reversed(services):
                service.stop()
            await kube.request("DELETE", f"/api/v1/namespaces/{namespace}")
    return {
        "changes": changes,
        "child_change_to_rerun_start_ms": {k: v * 1000 if k != "n" else v for k, v in percentiles(to_rerun).items()},
        "child_change_to_child_restored_ms": {k: v * 1000 if k != "n" else v for k, v in percentiles(restored).items()},
    }


async def edit_and_wait(harness: Harness, changes: int) -> tuple[list[float], list[float]]:
    path = f"/api/v1/namespaces/{harness.namespace}/configmaps/dyn-a"
    edits, restored = [], []
    for index in range(changes):
        edited_at = time.time()
        started = time.monotonic()
        await harness.kube.request("PATCH", path, body={"data": {"value": f"edit {index}"}}, content_type=MERGE)
        edits.append(edited_at)
        deadline = started + 30
        while (await harness.kube.get(path))["data"] != {"value": "1"}:
            if time.monotonic() > deadline:
                raise SystemExit(f"edit {index} was not put back within 30s")
            await asyncio.sleep(0.005)
        restored.append(time.monotonic() - started)
        await asyncio.sleep(0.3)  # let the re-run settle before the next edit
    return edits, restored


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--changes", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, control_plane(Path(tmp)) as state:
        pki = Path(state.runtime_dir) / "pki"
        result = asyncio.run(run(state.kubeconfig, pki, Path(tmp), args.changes))
    write_results("dynamic", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
