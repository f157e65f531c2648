"""Benchmark of both services at scale: memory, throughput and a restart with N converged instances.

``.venv/bin/python bench/scale.py [--sizes 1000,3000,10000] [--children 5] [--concurrency N]``
runs, for each size N, on a fresh local control plane (or on ``make cluster-up``'s with
``DEVCLUSTER_REUSE=1``, or on the cluster of ``--kubeconfig``): the webhook registered over TLS and
the controller, each as its chart ServiceAccount (``tests/harness.py``, as the e2e tests and
``bench/dynamic.py`` run them), one Airway on the ``multi`` test flight and N instances of it with
``--children`` ConfigMaps each, created as fast as ``--create-concurrency`` requests at a time
allow. It reports the time until every instance is Ready, instances/s (overall, and sustained over
the middle 80 % of the Ready times), the controller's and the webhook's peak RSS and RSS after
convergence (and at every tenth of the instances Ready), API requests per instance by verb (the
controller's ``atc_kube_requests_total``, and kube-apiserver's ``apiserver_request_total`` for all
clients), and the controller's CPU seconds per instance.

Then it restarts the controller with the N instances converged and reports: the time until every
instance was reconciled once more (``reconcile successful`` in the controller's JSON log), the
writes the new controller sent meanwhile (expected: only those of the new instance below), the
objects of the N converged instances that changed (expected: 0), and the time until a new instance,
created as soon as the backlog starts, is Ready (goal: 2 s, docs/benchmarks.md).

A summary shows the RSS growth per 1,000 instances between sizes. Results go to
``.local/bench/<--results-name>.json`` (default ``scale``). Run by hand (docs/benchmarks.md), and
with ``--sizes 20`` by ``tests/bench/test_scale_smoke.py`` in ``make test``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import re
import secrets
import shutil
import ssl
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "tools"), str(REPO / "tests")]

from benchlib import control_plane, percentile, write_results  # noqa: E402
from harness import AirwayRef, Harness, Webhook  # noqa: E402
from support import ServiceProcess, start_service  # noqa: E402

import flightbuild  # noqa: E402
from atc.k8s.client import KubeClient, KubeError  # noqa: E402
from atc.k8s.reflector import EventType, Reflector  # noqa: E402
from atc.model.types import Object  # noqa: E402

WRITE_VERBS = ("POST", "PUT", "PATCH", "DELETE", "APPLY")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
REVISION_SELECTOR = "internal.yoke/kind=revision"
NEW_INSTANCE = "late"  # created during the restart's backlog; the others are b0 .. b(N-1)
RETRYABLE = {0, 429, 500, 502, 503, 504}


# ----------------------------------------------------------------------------------------------- processes
def _proc_status(pid: int, field_name: str) -> float:
    """A ``kB`` field of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``) in MiB; 0 once the process is gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field_name}:"):
                return int(line.split()[1]) / 1024
    return 0.0


def rss_mib(pid: int) -> float:
    return _proc_status(pid, "VmRSS")


def peak_rss_mib(pid: int) -> float:
    return _proc_status(pid, "VmHWM")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of the process (``/proc/<pid>/stat`` fields 14 and 15)."""
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return 0.0


# ----------------------------------------------------------------------------------------------- metrics
Sample = tuple[str, dict[str, str], float]
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> list[Sample]:
    """Prometheus text exposition as (name, labels, value) triples."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        name, _, labels = head.partition("{")
        with contextlib.suppress(ValueError):
            samples.append((name, dict(_LABEL.findall(labels)), float(value)))
    return samples


def grouped(
    samples: list[Sample], name: str, *keys: str, where: Callable[[dict[str, str]], bool] | None = None
) -> dict[str, float]:
    """Sum of the samples called ``name`` by the values of labels ``keys`` (joined with ``/``)."""
    sums: dict[str, float] = {}
    for sample_name, labels, value in samples:
        if sample_name == name and (where is None or where(labels)):
            key = "/".join(labels.get(k, "") for k in keys)
            sums[key] = sums.get(key, 0.0) + value
    return sums


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0.0) for k in sorted(after) if after[k] - before.get(k, 0.0)}


def per(counts: dict[str, float], n: int) -> dict[str, float]:
    return {k: round(v / n, 2) for k, v in counts.items()}


async def scrape_controller(port: int) -> list[Sample]:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as response:
        return parse_metrics(await response.text())


async def scrape_webhook(webhook: Webhook) -> list[Sample]:
    context = ssl.create_default_context(cafile=str(webhook.ca_cert))
    async with aiohttp.ClientSession() as session, session.get(f"{webhook.url}/metrics", ssl=context) as response:
        return parse_metrics(await response.text())


async def scrape_apiserver(kube: KubeClient) -> list[Sample]:
    return parse_metrics(await kube.get_text("/metrics"))


def apiserver_requests(samples: list[Sample]) -> dict[str, float]:
    """kube-apiserver's requests by verb, all clients, Lease renewals left out."""
    return grouped(samples, "apiserver_request_total", "verb", where=lambda labels: labels.get("resource") != "leases")


def controller_requests(samples: list[Sample]) -> dict[str, float]:
    return grouped(samples, "atc_kube_requests_total", "verb")


def controller_writes(samples: list[Sample]) -> dict[str, float]:
    """Writes by ``verb/resource`` (Lease renewals left out: leader election, not reconciling)."""
    return grouped(
        samples,
        "atc_kube_requests_total",
        "verb",
        "resource",
        where=lambda labels: labels.get("verb") in WRITE_VERBS and labels.get("resource") != "leases",
    )


# ----------------------------------------------------------------------------------------------- instances
def is_ready(obj: Object) -> bool:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _slim(obj: Object) -> Object:
    """What the watch keeps of an instance: name, resourceVersion and status."""
    meta = obj.get("metadata") or {}
    keep = {k: meta[k] for k in ("name", "namespace", "resourceVersion") if k in meta}
    return {"metadata": keep, "status": obj.get("status") or {}}


@dataclass
class ReadyWatch:
    """When each instance was first seen Ready, from a watch of the instances (monotonic seconds)."""

    ready_at: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)

    def on_event(self, event_type: EventType, obj: Object, old: Object | None) -> None:
        meta = obj.get("metadata") or {}
        name = str(meta.get("name", ""))
        if event_type == "DELETED":
            self.versions.pop(name, None)
            return
        self.versions[name] = str(meta.get("resourceVersion", ""))
        if name not in self.ready_at and is_ready(obj):
            self.ready_at[name] = time.monotonic()


async def create_instances(
    kube: KubeClient, ref: AirwayRef, namespace: str, names: list[str], children: int, concurrency: int
) -> int:
    """POST every instance, ``concurrency`` at a time; retries overload answers. Returns the retries."""
    gate = asyncio.Semaphore(concurrency)
    retries = 0

    async def create(name: str) -> None:
        nonlocal retries
        body = {
            "apiVersion": ref.api_version,
            "kind": ref.kind,
            "metadata": {"name": name},
            "spec": {"children": children},
        }
        async with gate:
            for attempt in range(8):
                try:
                    await kube.request("POST", ref.collection(namespace), body=body)
                    return
                except KubeError as exc:
                    if exc.conflict and attempt:  # an earlier attempt went through after all
                        return
                    if exc.status not in RETRYABLE or attempt == 7:
                        raise
                retries += 1
                await asyncio.sleep(0.2 * 2**attempt)

    await asyncio.gather(*(create(name) for name in names))
    return retries


async def object_versions(kube: KubeClient, path: str, label_selector: str = "") -> dict[str, str]:
    """name -> resourceVersion of every object in a collection (metadata only, in pages of 500)."""
    versions: dict[str, str] = {}
    token = ""
    while True:
        query = {"limit": "500", **({"continue": token} if token else {})}
        if label_selector:
            query["labelSelector"] = label_selector
        page = await kube.request("GET", path, query=query, accept=METADATA_LIST)
        for item in page.get("items") or []:
            versions[item["metadata"]["name"]] = item["metadata"]["resourceVersion"]
        token = str((page.get("metadata") or {}).get("continue") or "")
        if not token:
            return versions


async def snapshot(kube: KubeClient, ref: AirwayRef, namespace: str) -> dict[str, str]:
    """resourceVersions of the Airway, the instances, their ConfigMaps and revision Secrets, keyed ``kind/name``."""
    airway = await kube.get(f"/apis/yoke.cd/v1alpha1/airways/{ref.name}")
    found = {f"airway/{ref.name}": str(airway["metadata"]["resourceVersion"])}
    for kind, path, selector in (
        ("instance", ref.collection(namespace), ""),
        ("configmap", f"/api/v1/namespaces/{namespace}/configmaps", ""),
        ("secret", f"/api/v1/namespaces/{namespace}/secrets", REVISION_SELECTOR),
    ):
        found.update({f"{kind}/{name}": v for name, v in (await object_versions(kube, path, selector)).items()})
    return found


# ----------------------------------------------------------------------------------------------- controller log
@dataclass
class LogFollower:
    """Reads a JSON log as it grows: when each instance was first reconciled successfully."""

    path: Path
    controller: str
    offset: int = 0
    partial: bytes = b""
    verified_at: dict[str, float] = field(default_factory=dict)
    errors: int = 0

    def poll(self) -> None:
        with contextlib.suppress(FileNotFoundError), self.path.open("rb") as log:
            log.seek(self.offset)
            chunk = log.read()
        if not chunk:
            return
        self.offset += len(chunk)
        lines = (self.partial + chunk).split(b"\n")
        self.partial = lines.pop()
        now = time.monotonic()
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if not isinstance(entry, dict) or entry.get("controller") != self.controller:
                continue
            if entry.get("msg") == "reconcile successful":
                self.verified_at.setdefault(str(entry.get("name")), now)
            elif entry.get("msg") == "error processing event":
                self.errors += 1


# ----------------------------------------------------------------------------------------------- one size
@dataclass
class Services:
    """The services one size started (logs in ``logs``), stopped at its end."""

    logs: Path
    kubeconfig: str
    started: list[ServiceProcess] = field(default_factory=list)

    def run(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> ServiceProcess:
        process = start_service(name, argv, {"KUBE": self.kubeconfig, **(env or {})}, self.logs)
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in reversed(self.started):
            process.stop()


def deadline_for(n: int, seconds_per_instance: float) -> float:
    return 120 + n * seconds_per_instance


async def measure_size(
    kubeconfig: str, pki: Path, work: Path, n: int, args: argparse.Namespace, fresh: bool
) -> dict[str, Any]:
    namespace = f"scale-{secrets.token_hex(3)}"
    logs = REPO / ".local" / "bench" / f"{args.results_name}-logs" / str(n)  # kept: the services' logs
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    services = Services(logs, kubeconfig)
    (work / "cache").mkdir(exist_ok=True)
    async with await KubeClient.connect(kubeconfig) as kube:
        await kube.request("POST", "/api/v1/namespaces", body={"metadata": {"name": namespace}})
        harness = Harness(kube, namespace, Path(kubeconfig), work / "cache", flightbuild.build, services.run, pki)
        try:
            return await _measure(harness, services, n, args)
        finally:
            if not fresh:  # a shared cluster: leave nothing behind (a fresh one is thrown away whole)
                with contextlib.suppress(Exception):
                    await harness.clean_up()
                with contextlib.suppress(KubeError):
                    await kube.request("DELETE", f"/api/v1/namespaces/{namespace}")
            services.stop_all()


async def _measure(harness: Harness, services: Services, n: int, args: argparse.Namespace) -> dict[str, Any]:
    kube, namespace = harness.kube, harness.namespace
    controller_env = {"RESYNC_SECONDS": str(args.resync), "LOG_FORMAT": "json"}
    if args.concurrency:
        controller_env["CONCURRENCY"] = str(args.concurrency)
    webhook = await harness.start_webhook()
    controller = await harness.start_controller(
        TLS_CA_CERT=str(webhook.ca_cert), WEBHOOK_URL=webhook.url, **controller_env
    )  # as Harness.start_atc does
    ref = await harness.create_airway("multi", kind="Bench")
    await harness.wait_airway_ready(ref, timeout=120)
    instance_controller = f"instance:{ref.name}"
    watch = ReadyWatch()
    reflector = Reflector(
        kube, ref.collection(namespace), name="bench instances", handler=watch.on_event, transform=_slim
    )
    watching = asyncio.create_task(reflector.run())
    try:
        await asyncio.wait_for(reflector.synced.wait(), 60)
        creation = await _create_and_converge(
            harness, ref, watch, controller.process, webhook, controller.metrics_port, n, args
        )
        restart = await _restart(
            harness, ref, watch, controller.process, webhook, instance_controller, n, args, controller_env
        )
    finally:
        reflector.stop()
        await asyncio.gather(watching, return_exceptions=True)
    return {
        "instances": n,
        "children_per_instance": args.children,
        "controller_concurrency": args.concurrency,
        **creation,
        "restart": restart,
    }


async def _create_and_converge(
    harness: Harness,
    ref: AirwayRef,
    watch: ReadyWatch,
    controller: ServiceProcess,
    webhook: Webhook,
    metrics_port: int,
    n: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    kube, namespace = harness.kube, harness.namespace
    await asyncio.sleep(1)
    ctl_before, api_before = await scrape_controller(metrics_port), await scrape_apiserver(kube)
    wh_before = await scrape_webhook(webhook)
    cpu_before = cpu_seconds(controller.pid), cpu_seconds(webhook.process.pid)
    rss_idle = rss_mib(controller.pid), rss_mib(webhook.process.pid)
    milestones: list[dict[str, float]] = []
    started = time.monotonic()

    async def sample() -> None:  # RSS at every tenth of the instances Ready
        step = 1
        while step <= 10:
            ready = len(watch.ready_at)
            if ready >= math.ceil(n * step / 10):
                milestones.append(
                    {
                        "ready": ready,
                        "seconds": round(time.monotonic() - started, 1),
                        "controller_rss_mib": round(rss_mib(controller.pid), 1),
                        "webhook_rss_mib": round(rss_mib(webhook.process.pid), 1),
                    }
                )
                step = max(step, ready * 10 // n) + 1
                continue
            await asyncio.sleep(0.5)

    sampler = asyncio.create_task(sample())
    names = [f"b{i}" for i in range(n)]
    retries = await create_instances(kube, ref, namespace, names, args.children, args.create_concurrency)
    created = time.monotonic() - started
    deadline = deadline_for(n, args.seconds_per_instance)
    while len(watch.ready_at) < n:
        if controller.proc.poll() is not None or webhook.process.proc.poll() is not None:
            raise SystemExit(f"a service exited; see the logs in {services_dir(controller)}")
        if time.monotonic() - started > deadline:
            raise SystemExit(
                f"only {len(watch.ready_at)}/{n} Ready after {deadline:.0f}s; see {services_dir(controller)}"
            )
        await asyncio.sleep(0.2)
    converged = time.monotonic() - started
    await asyncio.wait_for(sampler, 10)
    times = sorted(t - started for t in watch.ready_at.values())
    low, high = percentile(times, 0.1), percentile(times, 0.9)
    sustained = (math.ceil(n * 0.9) - math.ceil(n * 0.1)) / (high - low) if high > low else float("nan")
    await asyncio.sleep(args.settle)
    ctl_after, api_after = await scrape_controller(metrics_port), await scrape_apiserver(kube)
    wh_after = await scrape_webhook(webhook)
    ctl_requests = delta(controller_requests(ctl_after), controller_requests(ctl_before))
    api_requests = delta(apiserver_requests(api_after), apiserver_requests(api_before))
    admissions = delta(
        grouped(wh_after, "atc_webhook_requests_total", "path", "result"),
        grouped(wh_before, "atc_webhook_requests_total", "path", "result"),
    )
    return {
        "seconds_until_all_created": round(created, 2),
        "create_retries": retries,
        "seconds_until_all_ready": round(converged, 2),
        "instances_per_second": round(n / converged, 2),
        "instances_per_second_middle_80pct": round(sustained, 2),
        "controller_rss_idle_mib": round(rss_idle[0], 1),
        "controller_peak_rss_mib": round(peak_rss_mib(controller.pid), 1),
        "controller_rss_converged_mib": round(rss_mib(controller.pid), 1),
        "webhook_rss_idle_mib": round(rss_idle[1], 1),
        "webhook_peak_rss_mib": round(peak_rss_mib(webhook.process.pid), 1),
        "webhook_rss_converged_mib": round(rss_mib(webhook.process.pid), 1),
        "webhook_cache_objects": grouped(wh_after, "atc_webhook_cache_objects", "cache"),
        "rss_by_tenth_ready": milestones,
        "controller_requests_per_instance": per(ctl_requests, n),
        "controller_requests_per_instance_total": round(sum(ctl_requests.values()) / n, 2),
        "controller_writes_per_instance": round(
            sum(delta(controller_writes(ctl_after), controller_writes(ctl_before)).values()) / n, 2
        ),
        "apiserver_requests_per_instance_all_clients": per(api_requests, n),
        "controller_cpu_seconds_per_instance": round((cpu_seconds(controller.pid) - cpu_before[0]) / n, 4),
        "webhook_cpu_seconds_per_instance": round((cpu_seconds(webhook.process.pid) - cpu_before[1]) / n, 4),
        "webhook_admissions_per_instance": per(admissions, n),
    }


def services_dir(process: ServiceProcess) -> Path:
    return process.log_path.parent


async def _restart(
    harness: Harness,
    ref: AirwayRef,
    watch: ReadyWatch,
    old: ServiceProcess,
    webhook: Webhook,
    instance_controller: str,
    n: int,
    args: argparse.Namespace,
    controller_env: dict[str, str],
) -> dict[str, Any]:
    kube, namespace = harness.kube, harness.namespace
    old.stop()
    before = await snapshot(kube, ref, namespace)
    started = time.monotonic()
    controller = await harness.spawn_controller(
        "atc-controller-restarted", TLS_CA_CERT=str(webhook.ca_cert), WEBHOOK_URL=webhook.url, **controller_env
    )
    follower = LogFollower(controller.process.log_path, instance_controller)
    names = {f"b{i}" for i in range(n)}
    deadline = deadline_for(n, args.restart_seconds_per_instance)
    created_at: float | None = None
    backlog_at_creation = 0
    first_reconcile: float | None = None
    while True:
        follower.poll()
        if follower.verified_at and first_reconcile is None:
            first_reconcile = min(follower.verified_at.values()) - started
        if created_at is None and follower.verified_at:  # the backlog has started: the new instance joins it
            backlog_at_creation = len(names - follower.verified_at.keys())
            created_at = time.monotonic()
            body = {
                "apiVersion": ref.api_version,
                "kind": ref.kind,
                "metadata": {"name": NEW_INSTANCE},
                "spec": {"children": args.children},
            }
            await kube.request("POST", ref.collection(namespace), body=body)
        if names <= follower.verified_at.keys() and NEW_INSTANCE in watch.ready_at:
            break
        if controller.process.proc.poll() is not None:
            raise SystemExit(f"the restarted controller exited; see {controller.process.log_path}")
        if time.monotonic() - started > deadline:
            break
        await asyncio.sleep(0.1)
    verified = [t for name, t in follower.verified_at.items() if name in names]
    all_verified = len(verified) == n
    await asyncio.sleep(args.settle)
    metrics = await scrape_controller(controller.metrics_port)
    after = await snapshot(kube, ref, namespace)
    changed = sorted(
        key
        for key, version in after.items()
        if key in before and before[key] != version and not key.split("/", 1)[1].startswith(NEW_INSTANCE)
    )
    writes = delta(controller_writes(metrics), {})
    instance_resources = {ref.plural, f"{ref.plural}/status", "configmaps", "secrets", "events"}
    of_instances = {k: v for k, v in writes.items() if k.split("/", 1)[1] in instance_resources}
    new_ready = watch.ready_at.get(NEW_INSTANCE)
    return {
        "seconds_until_first_reconcile": round(first_reconcile, 2) if first_reconcile is not None else None,
        "seconds_until_all_verified": round(max(verified) - started, 2) if all_verified else None,
        "instances_verified": len(verified),
        "reconcile_errors": follower.errors,
        "requests_per_instance": per(
            grouped(
                metrics, "atc_kube_requests_total", "verb", where=lambda labels: labels.get("resource") != "leases"
            ),
            n,
        ),
        "writes_to_instances_and_children": of_instances,
        "writes_other_excluding_leases": {k: v for k, v in writes.items() if k not in of_instances},
        "instance_objects_changed": len([key for key in changed if not key.startswith("airway/")]),
        "changed_examples": changed[:5],
        "airway_changed": any(key.startswith("airway/") for key in changed),
        "new_instance_backlog_at_creation": backlog_at_creation,
        "new_instance_seconds_until_ready": (
            round(new_ready - created_at, 2) if new_ready is not None and created_at is not None else None
        ),
        "controller_peak_rss_mib": round(peak_rss_mib(controller.process.pid), 1),
        "controller_rss_after_mib": round(rss_mib(controller.process.pid), 1),
        "controller_cpu_seconds": round(cpu_seconds(controller.process.pid), 1),
    }


# ----------------------------------------------------------------------------------------------- report
def fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return ", ".join(f"{k} {fmt(v)}" for k, v in value.items()) or "none"
    if isinstance(value, float):
        return f"{value:,.2f}".rstrip("0").rstrip(".") if not math.isnan(value) else "n/a"
    if isinstance(value, int):
        return f"{value:,}"
    return "n/a" if value is None else str(value)


TABLE_ROWS = (
    ("time until all Ready (s)", "seconds_until_all_ready"),
    ("time until all created (s)", "seconds_until_all_created"),
    ("instances/s, overall", "instances_per_second"),
    ("instances/s, middle 80 %", "instances_per_second_middle_80pct"),
    (
        "controller RSS idle / peak / converged (MiB)",
        ("controller_rss_idle_mib", "controller_peak_rss_mib", "controller_rss_converged_mib"),
    ),
    (
        "webhook RSS idle / peak / converged (MiB)",
        ("webhook_rss_idle_mib", "webhook_peak_rss_mib", "webhook_rss_converged_mib"),
    ),
    ("webhook cache objects", "webhook_cache_objects"),
    ("controller requests per instance", "controller_requests_per_instance"),
    ("controller writes per instance (Lease renewals left out)", "controller_writes_per_instance"),
    ("API server requests per instance (all clients)", "apiserver_requests_per_instance_all_clients"),
    ("admission requests per instance", "webhook_admissions_per_instance"),
    ("controller CPU s per instance", "controller_cpu_seconds_per_instance"),
    ("webhook CPU s per instance", "webhook_cpu_seconds_per_instance"),
)
RESTART_ROWS = (
    ("restart: time until first reconcile (s)", "seconds_until_first_reconcile"),
    ("restart: time until all verified (s)", "seconds_until_all_verified"),
    ("restart: instances verified", "instances_verified"),
    ("restart: requests per instance (Lease renewals left out)", "requests_per_instance"),
    ("restart: writes to instances, children, revisions, Events", "writes_to_instances_and_children"),
    ("restart: other writes (Lease renewals left out)", "writes_other_excluding_leases"),
    ("restart: objects of converged instances changed (instances, children, revisions)", "instance_objects_changed"),
    ("restart: Airway changed", "airway_changed"),
    ("restart: new instance Ready after (s)", "new_instance_seconds_until_ready"),
    ("restart: backlog when the new instance was created", "new_instance_backlog_at_creation"),
    ("restart: controller peak RSS (MiB)", "controller_peak_rss_mib"),
)


def print_size(result: dict[str, Any]) -> None:
    print(f"\n## N = {result['instances']:,} instances × {result['children_per_instance']} ConfigMaps\n")
    print("| measurement | result |\n|---|---|")
    for label, key in TABLE_ROWS:
        value = " / ".join(fmt(result[k]) for k in key) if isinstance(key, tuple) else fmt(result[key])
        print(f"| {label} | {value} |")
    for label, key in RESTART_ROWS:
        print(f"| {label} | {fmt(result['restart'][key])} |")
    print("\n| instances Ready | seconds | controller RSS (MiB) | webhook RSS (MiB) |\n|---|---|---|---|")
    for m in result["rss_by_tenth_ready"]:
        print(
            f"| {m['ready']:,} | {fmt(m['seconds'])} | {fmt(m['controller_rss_mib'])} | {fmt(m['webhook_rss_mib'])} |"
        )


def growth(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """RSS growth per 1,000 instances between consecutive sizes."""
    rows = []
    for a, b in itertools.pairwise(results):
        thousands = (b["instances"] - a["instances"]) / 1000
        row: dict[str, Any] = {"from": a["instances"], "to": b["instances"]}
        for key in (
            "controller_rss_converged_mib",
            "controller_peak_rss_mib",
            "webhook_rss_converged_mib",
            "webhook_peak_rss_mib",
        ):
            row[f"{key}_per_1000"] = round((b[key] - a[key]) / thousands, 2)
        rows.append(row)
    return rows


def table(header: list[str], rows: list[list[str]]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


def print_summary(results: list[dict[str, Any]], rows: list[dict[str, Any]]) -> None:
    print("\n## Summary\n")
    header = ["N", "all Ready (s)", "inst/s (middle 80 %)", "controller RSS peak / converged"]
    header += ["webhook RSS peak / converged", "requests/instance", "restart: all verified (s)"]
    header += ["restart: instance writes", "restart: new instance Ready (s)"]
    lines = []
    for r in results:
        restart = r["restart"]
        lines.append(
            [
                fmt(r["instances"]),
                fmt(r["seconds_until_all_ready"]),
                f"{fmt(r['instances_per_second'])} ({fmt(r['instances_per_second_middle_80pct'])})",
                f"{fmt(r['controller_peak_rss_mib'])} / {fmt(r['controller_rss_converged_mib'])}",
                f"{fmt(r['webhook_peak_rss_mib'])} / {fmt(r['webhook_rss_converged_mib'])}",
                fmt(r["controller_requests_per_instance_total"]),
                fmt(restart["seconds_until_all_verified"]),
                fmt(sum(restart["writes_to_instances_and_children"].values())),
                fmt(restart["new_instance_seconds_until_ready"]),
            ]
        )
    table(header, lines)
    if rows:
        print()
        header = ["sizes", "controller converged / peak (MiB per 1,000)", "webhook converged / peak (MiB per 1,000)"]
        lines = [
            [
                f"{row['from']:,} → {row['to']:,}",
                f"{fmt(row['controller_rss_converged_mib_per_1000'])} / {fmt(row['controller_peak_rss_mib_per_1000'])}",
                f"{fmt(row['webhook_rss_converged_mib_per_1000'])} / {fmt(row['webhook_peak_rss_mib_per_1000'])}",
            ]
            for row in rows
        ]
        table(header, lines)


# ----------------------------------------------------------------------------------------------- main
@contextlib.contextmanager
def cluster_for(args: argparse.Namespace, work: Path) -> Iterator[tuple[str, Path, bool]]:
    """(kubeconfig, PKI directory, fresh or not): ``--kubeconfig``'s cluster, or ``benchlib.control_plane``'s."""
    if args.kubeconfig:
        yield args.kubeconfig, Path(args.pki_dir), False
        return
    with control_plane(work) as state:
        yield state.kubeconfig, Path(state.runtime_dir) / "pki", os.environ.get("DEVCLUSTER_REUSE") != "1"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,3000,10000", help="comma-separated instance counts, one run each")
    parser.add_argument("--children", type=int, default=5, help="ConfigMaps per instance")
    parser.add_argument(
        "--concurrency", type=int, default=0, help="the controller's CONCURRENCY (reconcile workers; 0: its default)"
    )
    parser.add_argument("--create-concurrency", type=int, default=16, help="instance POSTs in flight at once")
    parser.add_argument(
        "--resync",
        type=float,
        default=0,
        help="the controller's RESYNC_SECONDS (0: none, so the counts are of creation alone)",
    )
    parser.add_argument("--settle", type=float, default=5, help="seconds to wait before reading the counters")
    parser.add_argument(
        "--seconds-per-instance", type=float, default=0.5, help="deadline for all Ready: 120 s plus this per instance"
    )
    parser.add_argument(
        "--restart-seconds-per-instance", type=float, default=0.2, help="restart deadline: 120 s plus this per instance"
    )
    parser.add_argument(
        "--kubeconfig", default="", help="use this running cluster (admin kubeconfig) instead of a fresh one per size"
    )
    parser.add_argument("--pki-dir", default="", help="with --kubeconfig: the cluster's PKI directory (ca.crt, ca.key)")
    parser.add_argument("--results-name", default="scale", help="results go to .local/bench/<name>.json")
    args = parser.parse_args()
    if args.kubeconfig and not args.pki_dir:
        parser.error("--kubeconfig needs --pki-dir")
    sizes = [int(size) for size in args.sizes.split(",")]
    results: list[dict[str, Any]] = []
    for n in sizes:
        with (
            tempfile.TemporaryDirectory(prefix="scale-") as tmp,
            cluster_for(args, Path(tmp)) as (kubeconfig, pki, fresh),
        ):
            results.append(asyncio.run(measure_size(kubeconfig, pki, Path(tmp), n, args, fresh)))
        print_size(results[-1])
    rows = growth(results)
    print_summary(results, rows)
    write_results(args.results_name, {"sizes": results, "growth": rows}, print_values=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
