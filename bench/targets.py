"""Benchmark of deploying to another cluster: creates and drift repairs here versus in a workload cluster.

``.venv/bin/python bench/targets.py [--instances 20] [--repairs 10] [--deployment] [--json]`` starts
two fresh local control planes on this host, a management cluster and a workload cluster, both
with a kube-apiserver audit log. In the management cluster it runs both services as in the e2e
tests (``tests/harness.py``: each as its chart ServiceAccount, the webhook registered over TLS, the
services with ``TARGET_SERVER_ALLOW_LIST=https://127.0.0.1:*``), and puts the workload cluster's
kubeconfig in a Secret that instances name with ``atc.yoke.cd/kubeconfig-secret`` (docs/targets.md,
``tests/e2e/test_targets.py``). Then, with the ``multi`` test flight (spec
``{"configMaps": {"a": "1"}}``; ``--deployment`` adds ``replicas: 1``, a Deployment child):

1. **Create to Ready.** On one standard-mode Airway, one warm-up instance deployed here and one to
   the workload cluster (the first targeted create also connects to that cluster; reported apart),
   then ``--instances`` instances deployed here and as many to the workload cluster. Creates are
   sequential: each instance is created once the one before is Ready, so every sample is one
   uncontended create. The time runs from just before the POST to the watch event that shows
   ``Ready=True``.
2. **Dynamic-mode drift repair.** On a dynamic-mode Airway, one instance here and one in the workload
   cluster; its ConfigMap child is edited (merge patch of ``data.value``) ``--repairs`` times, one
   at a time, and the time runs from just before the PATCH to the watch event that shows the child
   restored. Here the signal is the webhook's (admission -> ``SubresourceChanged`` Event ->
   controller); in the workload cluster the management cluster's webhook never sees the edit, and
   the controller's own child watch in that cluster is the signal.
3. **API requests per create**, from the two audit logs (Lease requests left out): the controller's
   and the webhook's requests to the management cluster (by ServiceAccount), and theirs to the
   workload cluster (by their target clients' user agents, ``atc-controller`` and ``atc-webhook``),
   per create of each block of step 1.

It prints p50/p90/max and the target/local ratio as Markdown tables, after a header naming the
machine (both control planes, both services and this script share it). Results go to
``.local/bench/<--results-name>.json`` (default ``targets``); ``--json`` prints them too. It exits
non-zero when an instance is not Ready or a child is not restored within ``--timeout`` seconds.
Run by hand (docs/benchmarks.md, "Deploying to another cluster"), and with tiny sizes by
``tests/bench/test_targets_smoke.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "tools"), str(REPO / "tests")]

from benchlib import AuditLog, percentiles, write_results  # noqa: E402
from harness import AirwayRef, Harness  # noqa: E402
from support import ServiceProcess, start_service  # noqa: E402

import flightbuild  # noqa: E402
from atc.k8s.client import KubeClient  # noqa: E402
from atc.k8s.reflector import EventType, Reflector  # noqa: E402
from atc.model.types import Object  # noqa: E402
from devcluster.cluster import Cluster, ClusterState  # noqa: E402

MERGE = "application/merge-patch+json"
SECRET_ANNOTATION = "atc.yoke.cd/kubeconfig-secret"
KUBECONFIG_SECRET = "workload-kubeconfig"
LOOPBACK_SERVERS = "https://127.0.0.1:*"
CONTROLLER_USER_AGENT = "atc-controller"  # the user agents of the services' clients for a target cluster
WEBHOOK_USER_AGENT = "atc-webhook"
DESIRED = {"value": "1"}
SIDES = ("local", "target")


class ConvergenceError(Exception):
    """An instance not Ready, or a child not restored, in time: the benchmark exits non-zero."""


# ----------------------------------------------------------------------------------------------- watches
def is_ready(obj: Object) -> bool:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


@dataclass
class ReadyTimes:
    """When each instance was first seen Ready (monotonic seconds), from a watch of the instances."""

    ready_at: dict[str, float] = field(default_factory=dict)
    last: dict[str, Object] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def on_event(self, event_type: EventType, obj: Object, old: Object | None) -> None:
        name = str((obj.get("metadata") or {}).get("name", ""))
        if event_type == "DELETED":
            return
        self.last[name] = obj
        if name not in self.ready_at and is_ready(obj):
            self.ready_at[name] = time.monotonic()
            self.changed.set()

    async def wait(self, name: str, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while name not in self.ready_at:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                conditions = (self.last.get(name, {}).get("status") or {}).get("conditions")
                raise ConvergenceError(f"instance {name} not Ready within {timeout:g} s; its conditions: {conditions}")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)
        return self.ready_at[name]


@dataclass
class ChildVersions:
    """Every version of one child seen by a watch: (resourceVersion, data, monotonic time seen)."""

    seen: list[tuple[int, Object, float]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def on_event(self, event_type: EventType, obj: Object, old: Object | None) -> None:
        if event_type in ("ADDED", "MODIFIED"):
            version = int((obj.get("metadata") or {}).get("resourceVersion") or 0)
            self.seen.append((version, obj.get("data") or {}, time.monotonic()))
            self.changed.set()

    async def restored_after(self, version: int, timeout: float, what: str) -> float:
        """When a version newer than ``version`` with the desired data was seen."""
        deadline = time.monotonic() + timeout
        while True:
            found = [seen for v, data, seen in self.seen if v > version and data == DESIRED]
            if found:
                return found[0]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ConvergenceError(f"{what} not restored within {timeout:g} s")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)


@contextlib.asynccontextmanager
async def watching(reflector: Reflector) -> AsyncIterator[Reflector]:
    """Run ``reflector`` until the block ends, once it has listed."""
    task = asyncio.create_task(reflector.run())
    try:
        await asyncio.wait_for(reflector.synced.wait(), 60)
        yield reflector
    finally:
        reflector.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


# ----------------------------------------------------------------------------------------------- audit logs


def count_requests(events: list[dict[str, Any]], matches: Callable[[dict[str, Any]], bool]) -> Counter[str]:
    """Requests that ``matches``, by ``verb resource[/subresource][ (dry run)]``; Lease requests left out."""
    counts: Counter[str] = Counter()
    for event in events:
        ref = event.get("objectRef") or {}
        if ref.get("resource") == "leases" or not matches(event):
            continue
        resource = str(ref.get("resource") or event.get("requestURI", "?").split("?")[0])
        what = f"{event.get('verb', '?')} {resource}" + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        counts[what + (" (dry run)" if "dryRun=All" in event.get("requestURI", "") else "")] += 1
    return counts


def by_user(username: str) -> Callable[[dict[str, Any]], bool]:
    return lambda event: (event.get("user") or {}).get("username") == username


def by_user_agent(prefix: str) -> Callable[[dict[str, Any]], bool]:
    return lambda event: str(event.get("userAgent", "")).startswith(prefix)


# ----------------------------------------------------------------------------------------------- the run
@dataclass
class Bench:
    harness: Harness
    workload: KubeClient
    audits: dict[str, AuditLog]  # "management", "workload"
    controller_user: str
    webhook_user: str
    spec: Object
    timeout: float

    @property
    def namespace(self) -> str:
        return self.harness.namespace

    async def create_and_wait(self, ref: AirwayRef, ready: ReadyTimes, name: str, targeted: bool) -> float:
        metadata = {"annotations": {SECRET_ANNOTATION: KUBECONFIG_SECRET}} if targeted else {}
        started = time.monotonic()
        await self.harness.create_instance(ref, name, self.spec, **metadata)
        return await ready.wait(name, self.timeout) - started

    def requests(self, side: str, creates: int) -> dict[str, Any]:
        """Requests since the last call, per create: the services' to the management cluster and to the
        workload cluster."""
        management, workload = self.audits["management"].take(), self.audits["workload"].take()
        counts = {
            "controller_to_management": count_requests(management, by_user(self.controller_user)),
            "webhook_to_management": count_requests(management, by_user(self.webhook_user)),
            "controller_to_workload": count_requests(workload, by_user_agent(CONTROLLER_USER_AGENT)),
            "webhook_to_workload": count_requests(workload, by_user_agent(WEBHOOK_USER_AGENT)),
        }
        result: dict[str, Any] = {"side": side, "creates": creates}
        for key, counter in counts.items():
            result[key] = round(sum(counter.values()) / creates, 2)
            result[f"{key}_by_request"] = {k: round(v / creates, 2) for k, v in sorted(counter.items())}
        result["total"] = round(sum(result[key] for key in counts), 2)
        return result


async def measure_creates(bench: Bench, instances: int) -> dict[str, Any]:
    harness = bench.harness
    ref = await harness.create_airway("multi")
    await harness.wait_airway_ready(ref, timeout=90)
    ready = ReadyTimes()
    reflector = Reflector(harness.kube, ref.collection(bench.namespace), name="bench instances", handler=ready.on_event)
    async with watching(reflector):
        warm_up = {
            "local": await bench.create_and_wait(ref, ready, "warm-local", targeted=False),
            "target": await bench.create_and_wait(ref, ready, "warm-target", targeted=True),
        }
        await asyncio.sleep(2)
        bench.requests("warm-up", 1)  # leaves the warm-up's requests out of the blocks' counts
        samples: dict[str, list[float]] = {}
        requests: dict[str, Any] = {}
        for side in SIDES:
            prefix = "l" if side == "local" else "t"
            samples[side] = [
                await bench.create_and_wait(ref, ready, f"{prefix}{i}", targeted=side == "target")
                for i in range(instances)
            ]
            await asyncio.sleep(2)  # the Events and status writes that follow Ready reach the logs
            requests[side] = bench.requests(side, instances)
    return {
        "warm_up_seconds": {side: round(seconds, 3) for side, seconds in warm_up.items()},
        "seconds": {side: summary(values) for side, values in samples.items()},
        "samples": {side: [round(v, 4) for v in values] for side, values in samples.items()},
        "ready": {side: len(values) for side, values in samples.items()},
        "requests_per_create": requests,
    }


async def measure_repairs(bench: Bench, repairs: int) -> dict[str, Any]:
    harness = bench.harness
    ref = await harness.create_airway("multi", mode="dynamic")
    await harness.wait_airway_ready(ref, timeout=90)
    ready = ReadyTimes()
    reflector = Reflector(harness.kube, ref.collection(bench.namespace), name="bench dynamic", handler=ready.on_event)
    samples: dict[str, list[float]] = {}
    async with watching(reflector):
        for side in SIDES:
            name = f"dyn-{side}"
            await bench.create_and_wait(ref, ready, name, targeted=side == "target")
            kube = harness.kube if side == "local" else bench.workload
            samples[side] = await edit_and_time(bench, kube, f"{name}-a", repairs, side)
    return {
        "seconds": {side: summary(values) for side, values in samples.items()},
        "samples": {side: [round(v, 4) for v in values] for side, values in samples.items()},
        "restored": {side: len(values) for side, values in samples.items()},
    }


async def edit_and_time(bench: Bench, kube: KubeClient, child: str, repairs: int, side: str) -> list[float]:
    collection = f"/api/v1/namespaces/{bench.namespace}/configmaps"
    versions = ChildVersions()
    reflector = Reflector(
        kube, collection, name=f"bench {child}", handler=versions.on_event, field_selector=f"metadata.name={child}"
    )
    times = []
    async with watching(reflector):
        for index in range(repairs):
            await asyncio.sleep(0.5)  # the previous repair's re-run settles (status, Event)
            started = time.monotonic()
            patched = await kube.request(
                "PATCH", f"{collection}/{child}", body={"data": {"value": f"edit {index}"}}, content_type=MERGE
            )
            version = int(patched["metadata"]["resourceVersion"])
            what = f"{side} child {child} (edit {index})"
            times.append(await versions.restored_after(version, bench.timeout, what) - started)
    return times


def summary(values: list[float]) -> dict[str, float]:
    stats = percentiles(values)
    return {k: (v if k == "n" else round(v, 4)) for k, v in stats.items()}


async def run(
    management: ClusterState, workload: ClusterState, audits: dict[str, AuditLog], work: Path, args: argparse.Namespace
) -> dict[str, Any]:
    services: list[ServiceProcess] = []

    def run_service(name: str, argv: list[str], env: dict[str, str] | None = None) -> ServiceProcess:
        service = start_service(name, argv, {"KUBE": management.kubeconfig, **(env or {})}, work)
        services.append(service)
        return service

    build: Callable[[str], Path] = flightbuild.build
    spec: Object = {"configMaps": {"a": "1"}, **({"replicas": 1} if args.deployment else {})}
    namespace = f"bench-targets-{os.getpid()}"
    (work / "cache").mkdir()
    kubeconfig = Path(management.kubeconfig)
    async with (
        await KubeClient.connect(management.kubeconfig) as kube,
        await KubeClient.connect(workload.kubeconfig) as remote,
    ):
        for client in (kube, remote):
            await client.request("POST", "/api/v1/namespaces", body={"metadata": {"name": namespace}})
        secret_data = base64.b64encode(await asyncio.to_thread(Path(workload.kubeconfig).read_bytes)).decode()
        secret = {"metadata": {"name": KUBECONFIG_SECRET}, "data": {"value": secret_data}}
        await kube.request("POST", f"/api/v1/namespaces/{namespace}/secrets", body=secret)
        pki = Path(management.runtime_dir) / "pki"
        harness = Harness(kube, namespace, kubeconfig, work / "cache", build, run_service, pki)
        try:
            allowed = {"TARGET_SERVER_ALLOW_LIST": LOOPBACK_SERVERS}
            await harness.start_atc(webhook_env=allowed, **allowed)
            identities = await harness.identities()
            account = f"system:serviceaccount:{namespace}"
            bench = Bench(
                harness,
                remote,
                audits,
                f"{account}:{identities.controller_account}",
                f"{account}:{identities.fullname}-webhook",
                spec,
                args.timeout,
            )
            creates = await measure_creates(bench, args.instances)
            repairs = await measure_repairs(bench, args.repairs)
        finally:  # both clusters are thrown away: no clean-up of the objects
            for service in reversed(services):
                service.stop()
    return {"spec": spec, "creates": creates, "repairs": repairs}


# ----------------------------------------------------------------------------------------------- report
def fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}"


def ms(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value * 1000:,.0f} ms"


def ratio(target: float, local: float) -> str:
    return f"{target / local:.2f}×" if local > 0 else "n/a"


def table(header: list[str], rows: list[list[str]]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


def timing_rows(seconds: dict[str, dict[str, float]], labels: dict[str, str]) -> list[list[str]]:
    rows = [
        [labels[side], str(int(seconds[side]["n"])), *(ms(seconds[side][k]) for k in ("p50", "p90", "max"))]
        for side in SIDES
    ]
    local, target = seconds["local"], seconds["target"]
    rows.append(["ratio target / local", "", *(ratio(target[k], local[k]) for k in ("p50", "p90", "max"))])
    return rows


CREATE_LABELS = {"local": "create → Ready, this cluster", "target": "create → Ready, workload cluster"}
REPAIR_LABELS = {
    "local": "drift repaired, this cluster (webhook signal)",
    "target": "drift repaired, workload cluster (controller's watch there)",
}
REQUEST_ROWS = (
    ("controller → management cluster", "controller_to_management"),
    ("controller → workload cluster", "controller_to_workload"),
    ("webhook → management cluster", "webhook_to_management"),
    ("webhook → workload cluster (its dry run)", "webhook_to_workload"),
    ("total", "total"),
)


def header(args: argparse.Namespace, load: tuple[float, float, float]) -> None:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    children = "one ConfigMap and a Deployment (replicas: 1)" if args.deployment else "one ConfigMap (configMaps only)"
    print("# bench/targets.py: deploying to another cluster")
    print(
        f"\nmachine: {os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}; both control planes "
        "(management and workload), both services and this script run on this same host; "
        f"load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    print(
        f"flight: multi, spec {{configMaps: {{a: '1'}}{', replicas: 1' if args.deployment else ''}}}: {children}; "
        f"{args.instances} instances per side, created one at a time (each once the previous is Ready), "
        f"after one warm-up create per side; {args.repairs} drift repairs per side, one at a time"
    )


def report(result: dict[str, Any]) -> None:
    creates, repairs = result["creates"], result["repairs"]
    print("\n## Create → Ready\n")
    table(["measurement", "n", "p50", "p90", "max"], timing_rows(creates["seconds"], CREATE_LABELS))
    warm = creates["warm_up_seconds"]
    print(
        f"\nwarm-up creates (not in the table): this cluster {ms(warm['local'])}, "
        f"workload cluster {ms(warm['target'])} (includes connecting to it)"
    )
    print("\n## Dynamic-mode drift repair (edit of a child ConfigMap → restored)\n")
    table(["measurement", "n", "p50", "p90", "max"], timing_rows(repairs["seconds"], REPAIR_LABELS))
    print("\n## API requests per create (audit logs, Lease requests left out)\n")
    requests = creates["requests_per_create"]
    rows = [[label, fmt(requests["local"][key]), fmt(requests["target"][key])] for label, key in REQUEST_ROWS]
    table(["requests per create", "this cluster", "workload cluster"], rows)
    print()
    for side in SIDES:
        for label, key in REQUEST_ROWS[:-1]:
            detail = ", ".join(f"{k} {v:g}" for k, v in requests[side][f"{key}_by_request"].items()) or "none"
            print(f"- {CREATE_LABELS[side].split(', ')[1]}, {label}: {detail}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=20, help="instances created per side (this and workload)")
    parser.add_argument("--repairs", type=int, default=10, help="drift repairs timed per side")
    parser.add_argument("--deployment", action="store_true", help="add replicas: 1 (a Deployment child) to the spec")
    parser.add_argument("--timeout", type=float, default=60, help="seconds to wait for each Ready or repair")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    parser.add_argument("--audit-dir", default="", help="keep the two audit logs here (default: a temporary directory)")
    parser.add_argument("--results-name", default="targets", help="results go to .local/bench/<name>.json")
    args = parser.parse_args()
    if args.instances < 1 or args.repairs < 1:
        parser.error("--instances and --repairs must be at least 1")
    load = os.getloadavg()
    header(args, load)
    with tempfile.TemporaryDirectory(prefix="targets-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        clusters: dict[str, ClusterState] = {}
        audits: dict[str, AuditLog] = {}
        for name in ("management", "workload"):
            audit = (Path(args.audit_dir).resolve() if args.audit_dir else work) / f"{name}-audit.log"
            audit.unlink(missing_ok=True)
            cluster = Cluster(work / name, tie_to_parent=True, audit_log=audit)
            stack.callback(cluster.stop)
            clusters[name] = cluster.start()
            audits[name] = AuditLog(audit)
        started = time.monotonic()
        try:
            result = asyncio.run(run(clusters["management"], clusters["workload"], audits, work, args))
        except ConvergenceError as exc:
            print(f"\nFAILED: {exc}", file=sys.stderr)
            return 1
    result = {
        "cpus": os.cpu_count(),
        "load_average_start": [round(v, 2) for v in load],
        "load_average_end": [round(v, 2) for v in os.getloadavg()],
        "seconds": round(time.monotonic() - started, 1),
        "instances": args.instances,
        "repairs": args.repairs,
        **result,
    }
    report(result)
    end = result["load_average_end"]
    print(f"\nload average at the end {end[0]:.2f} {end[1]:.2f} {end[2]:.2f}; measured in {result['seconds']} s")
    write_results(args.results_name, result, print_values=False)
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
