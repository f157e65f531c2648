"""Benchmark of the controller: many instances at once, then an unchanged resync.

``.venv/bin/python bench/reconcile.py [--instances 200] [--children 5]`` starts a
local control plane (or reuses ``make cluster-up``'s with ``DEVCLUSTER_REUSE=1``),
runs ``atc-controller`` as a subprocess, creates one Airway on the ``multi``
test flight (N ConfigMaps per instance) and all instances at once, and reports:
time until every instance is Ready, API requests the controller sent per
instance (by verb), the controller's peak RSS; then it waits for a periodic
resync of every instance with nothing changed and reports the writes it
caused (expected: 0). Results go to ``.local/bench/reconcile.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))

from benchlib import control_plane, create_bench_instances, service, write_results  # noqa: E402

import flightbuild  # noqa: E402
from atc.k8s.client import KubeClient, KubeError  # noqa: E402
from devcluster.cluster import free_port  # noqa: E402

WRITE_VERBS = ("POST", "PUT", "PATCH", "DELETE", "APPLY")


@contextlib.contextmanager
def controller(
    kubeconfig: str, work: Path, namespace: str, resync: int, concurrency: int
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    metrics_port = free_port()
    env = {
        "KUBE": kubeconfig,
        "CACHE_FS": str(work / "cache"),
        "SVC_NAMESPACE": namespace,
        "HEALTH_PORT": str(free_port()),
        "METRICS_PORT": str(metrics_port),
        "RESYNC_SECONDS": str(resync),
        **({"CONCURRENCY": str(concurrency)} if concurrency else {}),
        "MODULE_ALLOW_LOCAL_FILES": "true",  # the benchmark's flight is a local file
    }
    with service("atc_controller", env, work / "controller.log") as process:
        yield process, metrics_port


async def scrape(port: int) -> dict[str, float]:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def requests_by_verb(metrics: dict[str, float], *, leases: bool = True) -> dict[str, float]:
    """Requests by verb from ``atc_kube_requests_total{resource,verb}`` (Lease renewals optionally left out)."""
    counts: dict[str, float] = {}
    for key, value in metrics.items():
        if not key.startswith("atc_kube_requests_total{"):
            continue
        labels = dict(part.split("=", 1) for part in key[key.index("{") + 1 : -1].split(","))
        if not leases and labels["resource"].strip('"') == "leases":
            continue
        verb = labels["verb"].strip('"')
        counts[verb] = counts.get(verb, 0) + value
    return counts


def reconciles(metrics: dict[str, float], controller_name: str) -> float:
    return sum(
        v
        for k, v in metrics.items()
        if k.startswith("controller_runtime_reconcile_total{") and f'controller="{controller_name}"' in k
    )


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def create_airway(kube: KubeClient, group: str, wasm: Path) -> str:
    name = f"benches.{group}"
    schema = {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}
    template = {
        "group": group,
        "names": {"kind": "Bench", "plural": "benches", "singular": "bench"},
        "scope": "Namespaced",
        "versions": [{"name": "v1", "served": True, "storage": True, "schema": schema}],
    }
    body = {
        "apiVersion": "yoke.cd/v1alpha1",
        "kind": "Airway",
        "metadata": {"name": name},
        "spec": {"wasmUrls": {"flight": str(wasm)}, "template": template},
    }
    while True:  # the controller installs the CRDs; the API server needs a moment to serve them
        try:
            await kube.request("POST", "/apis/yoke.cd/v1alpha1/airways", body=body)
            break
        except KubeError:
            await asyncio.sleep(0.2)
    while True:
        airway = await kube.get(f"/apis/yoke.cd/v1alpha1/airways/{name}")
        if any(
            c["type"] == "Ready" and c["status"] == "True" for c in (airway.get("status") or {}).get("conditions", [])
        ):
            return name
        await asyncio.sleep(0.5)


async def delete_instances(kube: KubeClient, group: str, namespace: str, count: int, deadline: float) -> float:
    """Delete every instance at once; seconds until the last is gone (children and history removed)."""
    collection = f"/apis/{group}/v1/namespaces/{namespace}/benches"
    gate = asyncio.Semaphore(20)

    async def delete(index: int) -> None:
        async with gate:
            await kube.request("DELETE", f"{collection}/b{index}")

    started = time.monotonic()
    await asyncio.gather(*(delete(i) for i in range(count)))
    while (await kube.get(collection))["items"]:
        if time.monotonic() - started > deadline:
            raise SystemExit(f"instances still there {deadline}s after their deletion")
        await asyncio.sleep(0.5)
    return time.monotonic() - started


async def count_ready(kube: KubeClient, group: str, namespace: str) -> int:
    listing = await kube.get(f"/apis/{group}/v1/namespaces/{namespace}/benches")
    return sum(
        1
        for item in listing["items"]
        if any(c["type"] == "Ready" and c["status"] == "True" for c in (item.get("status") or {}).get("conditions", []))
    )


async def bench(kubeconfig: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    wasm = flightbuild.build("multi")
    namespace, group = f"bench-{secrets.token_hex(3)}", f"b{secrets.token_hex(3)}.bench.local"
    async with await KubeClient.connect(kubeconfig) as kube:
        await kube.request("POST", "/api/v1/namespaces", body={"metadata": {"name": namespace}})
        with controller(kubeconfig, work, namespace, args.resync, args.concurrency) as (process, port):
            await create_airway(kube, group, wasm)
            await asyncio.sleep(1)
            before = requests_by_verb(await scrape(port))
            started = time.monotonic()
            await create_bench_instances(
                kube, f"/apis/{group}/v1/namespaces/{namespace}/benches", f"{group}/v1", args.instances, args.children
            )
            while (ready := await count_ready(kube, group, namespace)) < args.instances:
                if time.monotonic() - started > args.deadline:
                    raise SystemExit(
                        f"only {ready}/{args.instances} Ready after {args.deadline}s; see {work}/controller.log"
                    )
                await asyncio.sleep(0.5)
            converge = time.monotonic() - started
            await asyncio.sleep(3)
            metrics = await scrape(port)
            after = requests_by_verb(metrics)
            per_instance = {verb: (after.get(verb, 0) - before.get(verb, 0)) / args.instances for verb in sorted(after)}
            controller_name = f"instance:benches.{group}"
            resync_from, writes_from = reconciles(metrics, controller_name), requests_by_verb(metrics, leases=False)
            await asyncio.sleep(args.resync + 20)
            metrics = await scrape(port)
            resynced = reconciles(metrics, controller_name) - resync_from
            now = requests_by_verb(metrics, leases=False)
            writes = {v: now.get(v, 0) - writes_from.get(v, 0) for v in WRITE_VERBS}
            deleted = await delete_instances(kube, group, namespace, args.instances, args.deadline)
            rss = peak_rss_mib(process.pid)
        await kube.request("DELETE", f"/apis/yoke.cd/v1alpha1/airways/benches.{group}")
    return {
        "instances": args.instances,
        "children_per_instance": args.children,
        "seconds_until_all_ready": round(converge, 2),
        "instances_per_second": round(args.instances / converge, 2),
        "requests_per_instance": {k: round(v, 2) for k, v in per_instance.items()},
        "requests_per_instance_total": round(sum(per_instance.values()), 2),
        "controller_peak_rss_mib": round(rss, 1),
        "resync_reconciles": resynced,
        "resync_writes_excluding_lease_renewals": writes,
        "seconds_until_all_deleted": round(deleted, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--children", type=int, default=5)
    parser.add_argument("--resync", type=int, default=30, help="controller resync period, seconds")
    parser.add_argument(
        "--concurrency", type=int, default=0, help="the controller's reconcile workers (0: its default)"
    )
    parser.add_argument("--deadline", type=float, default=600)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, control_plane(Path(tmp)) as state:
        result = asyncio.run(bench(state.kubeconfig, Path(tmp), args))
    write_results("reconcile", result, width=28)
    return 0


if __name__ == "__main__":
    sys.exit(main())
