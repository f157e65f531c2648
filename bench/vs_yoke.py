"""Side by side with yoke: yoke's own Go ATC and this project, same flight, same workload, fresh clusters.

``.venv/bin/python bench/vs_yoke.py [--instances 100] [--rounds 3] [--children 5] [--idle 60]``
(``--quick`` for a smoke run; ``tests/bench/test_vs_yoke_smoke.py`` runs it that way). It builds
yoke's ATC from the yoke module at ``yokesuite.YOKE_VERSION`` (downloaded by the Go toolchain
through the module proxy, as ``tests/conformance/yokesuite.py`` does, and built with
``go build ./cmd/atc`` in the module's directory; the binary is cached under
``${XDG_CACHE_HOME:-~/.cache}/yoke-atc-py/yoke-atc/<key>/atc``). Then, for R interleaved rounds,
each system in turn gets a FRESH local control plane (``tools/devcluster``) whose kube-apiserver
writes an audit log, and:

1. its processes start (yoke: one ``atc`` process running as ServiceAccount
   ``yoke-atc:atc-service-account`` with cluster-admin, its webhooks reached through an
   ExternalName Service ``atc.yoke-atc`` pointing at ``localhost``, as in
   ``tests/image/test_chart_install.py``; ours: ``atc-webhook`` and ``atc-controller`` as the
   chart's ServiceAccounts, as the conformance supervisor runs them); time to the webhook port's
   first answer and to ready;
2. one Airway on the ``multi`` test flight (served over loopback HTTP to both), with an empty module
   cache: time from creating it to Ready (cold compile);
3. N instances of C ConfigMaps each, created at once: time until all are Ready; API requests per
   instance counted from the audit log by the system's users (verbs, dry-run writes), CPU time of
   all the system's processes (``/proc``), peak RSS summed over them;
4. the controller restarts with nothing changed (yoke: its one process): writes per instance from the
   stop until the system is quiet (no request but Lease renewals for ``--quiet`` seconds, and at
   least ``--settle`` seconds after the restart), and how long that took;
5. then an idle window of ``--idle`` seconds: API requests by the system, per minute.

Prints a markdown table (medians over rounds, yoke vs ours and ours/yoke) and writes every round to
``.local/bench/<--name>.json``. docs/benchmarks.md shows a run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "tools"), str(REPO / "tests")]

from benchlib import AuditLog, create_bench_instances, write_results  # noqa: E402
from conformance import yokesuite  # noqa: E402
from deployed import WebhookTarget, install_chart_identities, register_static_webhooks, token_kubeconfig  # noqa: E402
from servers import serve_files  # noqa: E402
from support import ServiceProcess, start_service  # noqa: E402

import flightbuild  # noqa: E402
from atc.k8s.client import KubeClient, KubeError  # noqa: E402
from devcluster import pki  # noqa: E402
from devcluster.cluster import Cluster, free_port  # noqa: E402

RECIPE_VERSION = "1"  # bump to rebuild the cached yoke ATC binary
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
BENCH_NAMESPACE = "bench"
GROUP = "vs.bench.local"
AIRWAY = f"benches.{GROUP}"
INSTANCES = f"/apis/{GROUP}/v1/namespaces/{BENCH_NAMESPACE}/benches"
YOKE_NAMESPACE = "yoke-atc"  # yoke's SVC_NAMESPACE; its webhooks skip <ns>:<SVC_NAME>-service-account
YOKE_SERVICE = "atc"
YOKE_USER = f"system:serviceaccount:{YOKE_NAMESPACE}:{YOKE_SERVICE}-service-account"
OUR_NAMESPACE = "atc"
OUR_FULLNAME = "atc"  # the chart's fullname, the services' SVC_NAME (as in tests/conformance/supervisor.py)
OUR_USERS = (
    f"system:serviceaccount:{OUR_NAMESPACE}:{OUR_FULLNAME}-service-account",
    f"system:serviceaccount:{OUR_NAMESPACE}:{OUR_FULLNAME}-webhook",
)
START_TIMEOUT = 180.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def say(message: str) -> None:
    print(f"[vs_yoke] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------- yoke's binary
def yoke_atc_binary() -> Path:
    """yoke's ``cmd/atc`` at YOKE_VERSION, built once per module directory, go version and recipe."""
    module_dir = yokesuite.download_module()
    go_version = subprocess.run(
        ["go", "version"], capture_output=True, text=True, check=True, env=yokesuite.go_env()
    ).stdout
    flags = ("-trimpath",)
    key = hashlib.sha256(
        "\0".join((RECIPE_VERSION, yokesuite.YOKE_VERSION, str(module_dir), go_version, *flags)).encode()
    ).hexdigest()[:16]
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "yoke-atc-py" / "yoke-atc"
    final = root / key / "atc"
    if final.is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not final.is_file():
            say(f"building yoke's ATC {yokesuite.YOKE_VERSION} (minutes with a cold Go build cache)")
            started = time.monotonic()
            tmp = final.with_name(f".atc.{os.getpid()}.tmp")
            done = subprocess.run(
                ["go", "build", *flags, "-o", str(tmp), "./cmd/atc"],
                cwd=module_dir,
                env=yokesuite.go_env(),
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                tmp.unlink(missing_ok=True)
                tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-40:])
                raise SystemExit(f"go build ./cmd/atc in {module_dir} failed (exit {done.returncode}):\n{tail}")
            os.replace(tmp, final)
            say(f"built in {time.monotonic() - started:.1f}s -> {final}")
    return final


# ----------------------------------------------------------------------------------------------- measuring


def count_requests(events: list[dict[str, Any]], users: tuple[str, ...]) -> dict[str, Any]:
    """Requests by ``users``: total, by verb, dry-run writes, writes (also without Lease writes), by resource."""
    verbs: Counter[str] = Counter()
    dry_runs: Counter[str] = Counter()
    writes: Counter[str] = Counter()
    for event in events:
        if event.get("user", {}).get("username") not in users:
            continue
        verb = event.get("verb", "")
        verbs[verb] += 1
        if verb in WRITE_VERBS:
            ref = event.get("objectRef") or {}
            what = f"{verb} {ref.get('resource', '?')}" + (f"/{ref['subresource']}" if ref.get("subresource") else "")
            (dry_runs if "dryRun=All" in event.get("requestURI", "") else writes)[what] += 1
    lease_writes = sum(count for what, count in writes.items() if what.endswith(" leases"))
    return {
        "total": sum(verbs.values()),
        "by_verb": dict(sorted(verbs.items())),
        "dry_run_writes": sum(dry_runs.values()),
        "writes": sum(writes.values()),
        "writes_without_leases": sum(writes.values()) - lease_writes,
        "writes_by_resource": dict(sorted(writes.items())),
        "dry_run_writes_by_resource": dict(sorted(dry_runs.items())),
    }


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (field 3 on), or None when gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _hwm_kib(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


class ProcessSampler:
    """Every process in the sessions of the watched leaders (each service starts its own session),
    sampled every 0.2 s: the peak RSS (VmHWM) of each, so short-lived children (our module compiler)
    count too."""

    def __init__(self) -> None:
        self.leaders: set[int] = set()
        self.peaks: dict[tuple[int, str], tuple[int, int, str]] = {}  # (pid, start) -> (session, VmHWM KiB, comm)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ProcessSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    @staticmethod
    def members(leaders: set[int]) -> Iterator[tuple[int, list[str]]]:
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                fields = _stat(int(entry.name))
                if fields is not None and int(fields[3]) in leaders:
                    yield int(entry.name), fields

    def sample(self) -> None:
        with self._lock:
            leaders = set(self.leaders)
        for pid, fields in self.members(leaders):
            key = (pid, fields[19])
            hwm = _hwm_kib(pid)
            with contextlib.suppress(OSError), self._lock:
                peak = max(hwm, self.peaks.get(key, (0, 0, ""))[1])
                self.peaks[key] = (int(fields[3]), peak, Path(f"/proc/{pid}/comm").read_text().strip())

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.sample()

    def watch(self, pid: int) -> None:
        with self._lock:
            self.leaders.add(pid)

    def peak_rss_mib(self, leaders: set[int]) -> tuple[float, list[str]]:
        """Peak RSS summed over every process seen in these sessions, and each one's (``comm: MiB``)."""
        self.sample()
        with self._lock:
            seen = [(hwm / 1024, comm) for session, hwm, comm in self.peaks.values() if session in leaders]
        return sum(mib for mib, _ in seen), [f"{comm}: {mib:.1f}" for mib, comm in sorted(seen, reverse=True)]

    def cpu_seconds(self, leaders: set[int]) -> float:
        """CPU time of the live processes in these sessions, with the children they reaped."""
        ticks = sum(sum(int(f) for f in fields[11:15]) for _, fields in self.members(leaders))
        return ticks / CLOCK_TICKS


async def answers(url: str, *, ok_only: bool, context: ssl.SSLContext | bool = False) -> bool:
    """True once ``url`` answers (any HTTP status, or only 200 when ``ok_only``)."""
    try:
        timeout = aiohttp.ClientTimeout(total=2)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url, ssl=context) as answer:
            return answer.status == 200 or not ok_only
    except (aiohttp.ClientError, ssl.SSLError, OSError, TimeoutError):
        return False


# ----------------------------------------------------------------------------------------------- the systems
def write_tls(directory: Path, service_host: str) -> dict[str, str]:
    """A CA and a serving certificate for ``service_host`` and 127.0.0.1, as a chart would provide them."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = pki.new_ca("vs-yoke-bench-ca")
    (directory / "ca.crt").write_bytes(ca.cert_pem)
    cert, key = ca.issue_serving(service_host, dns_names=(service_host, "localhost"), ips=("127.0.0.1",)).write(
        directory, "server"
    )
    return {"TLS_CA_CERT": str(directory / "ca.crt"), "TLS_SERVER_CERT": str(cert), "TLS_SERVER_KEY": str(key)}


@dataclass
class System:
    """One ATC under test: how to install its identities, start, restart and stop its processes."""

    name: str
    users: tuple[str, ...]
    work: Path
    kube: KubeClient
    admin_kubeconfig: Path
    sampler: ProcessSampler
    processes: dict[str, ServiceProcess] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.logs = self.work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.cache = self.work / "module-cache"  # empty: the first Airway compiles cold

    async def install(self) -> None:
        raise NotImplementedError

    def spawn(self, which: str) -> None:
        raise NotImplementedError

    async def probes(self, which: str) -> tuple[bool, bool]:
        """(the port answers, the process is ready) for one process."""
        raise NotImplementedError

    @property
    def controller(self) -> str:
        """The process a restart restarts."""
        raise NotImplementedError

    def leaders(self) -> set[int]:
        return {process.pid for process in self.processes.values()}

    async def start(self, which: tuple[str, ...]) -> tuple[float, float]:
        """Start these processes at once; seconds until all their ports answer, and until all are ready."""
        started = time.monotonic()
        for name in which:
            self.spawn(name)
            self.sampler.watch(self.processes[name].pid)
        answered: dict[str, float] = {}
        ready: dict[str, float] = {}
        while len(ready) < len(which):
            if time.monotonic() - started > START_TIMEOUT:
                raise SystemExit(f"{self.name}: not ready after {START_TIMEOUT:.0f}s; logs in {self.logs}")
            for name in which:
                process = self.processes[name]
                if process.proc.poll() is not None:
                    raise SystemExit(f"{self.name}: {name} exited {process.proc.returncode}:\n{process.log_tail()}")
                if name in ready:
                    continue
                port, is_ready = await self.probes(name)
                now = time.monotonic() - started
                if port or is_ready:
                    answered.setdefault(name, now)
                if is_ready:
                    ready[name] = now
            await asyncio.sleep(0.05)
        return max(answered.values()), max(ready.values())

    def stop(self, which: tuple[str, ...] | None = None) -> None:
        for name in which or tuple(reversed(self.processes)):
            if name in self.processes:
                self.processes.pop(name).stop(grace=30)


class YokeAtc(System):
    """yoke's ATC: one process, webhook and controller, configured by environment (cmd/atc/config.go)."""

    def __init__(self, binary: Path, **kwargs: Any) -> None:
        super().__init__("yoke", (YOKE_USER,), **kwargs)
        self.binary = binary
        self.port = free_port()

    @property
    def controller(self) -> str:
        return "atc"

    async def install(self) -> None:
        kube = self.kube
        await kube.request("POST", "/api/v1/namespaces", body={"metadata": {"name": YOKE_NAMESPACE}})
        account = f"{YOKE_SERVICE}-service-account"
        await kube.request(
            "POST", f"/api/v1/namespaces/{YOKE_NAMESPACE}/serviceaccounts", body={"metadata": {"name": account}}
        )
        binding = {
            "metadata": {"name": "yoke-atc-cluster-admin"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": YOKE_NAMESPACE}],
        }
        await kube.request("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", body=binding)
        self.kubeconfig = await token_kubeconfig(kube, self.admin_kubeconfig, YOKE_NAMESPACE, account, self.work)
        # the API server resolves the webhooks' Service to https://localhost:PORT and checks the
        # certificate for atc.yoke-atc.svc (the ExternalName trick of tests/image/test_chart_install.py)
        service = {
            "metadata": {"name": YOKE_SERVICE},
            "spec": {
                "type": "ExternalName",
                "externalName": "localhost",
                "ports": [{"name": "https", "port": self.port, "targetPort": self.port}],
            },
        }
        await kube.request("POST", f"/api/v1/namespaces/{YOKE_NAMESPACE}/services", body=service)
        tls = write_tls(self.work / "tls", f"{YOKE_SERVICE}.{YOKE_NAMESPACE}.svc")
        self.env = {
            "KUBE": str(self.kubeconfig),
            "PORT": str(self.port),
            "SVC_NAME": YOKE_SERVICE,
            "SVC_NAMESPACE": YOKE_NAMESPACE,
            "SVC_PORT": str(self.port),
            **tls,
            "CACHE_FS": str(self.cache),
            "LOG_FORMAT": "text",
        }

    def spawn(self, which: str) -> None:
        self.cache.mkdir(exist_ok=True)
        self.processes[which] = start_service("yoke-atc", [str(self.binary)], self.env, self.logs)

    async def probes(self, which: str) -> tuple[bool, bool]:
        ok = await answers(f"https://127.0.0.1:{self.port}/ready", ok_only=True)
        return ok, ok


class OurAtc(System):
    """This project: ``atc-webhook`` and ``atc-controller`` as the chart's ServiceAccounts."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("ours", OUR_USERS, **kwargs)
        self.webhook_port = free_port()
        self.health_port = free_port()

    @property
    def controller(self) -> str:
        return "controller"

    async def install(self) -> None:
        await self.kube.request("POST", "/api/v1/namespaces", body={"metadata": {"name": OUR_NAMESPACE}})
        identities = await install_chart_identities(
            self.kube, self.admin_kubeconfig, OUR_NAMESPACE, OUR_FULLNAME, self.work
        )
        webhook_url = f"https://127.0.0.1:{self.webhook_port}"
        tls = write_tls(self.work / "tls", f"{OUR_FULLNAME}.{OUR_NAMESPACE}.svc")
        common = {
            "SVC_NAME": OUR_FULLNAME,
            "SVC_NAMESPACE": OUR_NAMESPACE,
            "CACHE_FS": str(self.cache),
            "LOG_FORMAT": "text",
            "MODULE_FETCH_ALLOWED_NETWORKS": "127.0.0.0/8",  # the flight is served on loopback
            # the operator trusts its flight server: Winch compiles (docs/flight-runtime.md); yoke has no such choice
            "MODULE_ALLOW_LIST": "http://127.0.0.1:*/*",
            "TLS_CA_CERT": tls["TLS_CA_CERT"],
            "WEBHOOK_URL": webhook_url,
        }
        self.envs = {
            "webhook": {
                **common,
                "KUBE": str(identities.webhook_kubeconfig),
                **tls,
                "PORT": str(self.webhook_port),
                "ADDRESS": "127.0.0.1",
                "REGISTER_WEBHOOKS": "false",
            },
            "controller": {
                **common,
                "KUBE": str(identities.controller_kubeconfig),
                "HEALTH_PORT": str(self.health_port),
                "METRICS_PORT": str(free_port()),
            },
        }
        self.ca = tls["TLS_CA_CERT"]
        await register_static_webhooks(self.kube, WebhookTarget(OUR_FULLNAME, OUR_NAMESPACE, webhook_url, self.ca))

    def spawn(self, which: str) -> None:
        self.cache.mkdir(exist_ok=True)
        argv = [sys.executable, "-m", f"atc_{which}"]
        self.processes[which] = start_service(f"atc-{which}", argv, self.envs[which], self.logs)

    async def probes(self, which: str) -> tuple[bool, bool]:
        if which == "controller":
            base = f"http://127.0.0.1:{self.health_port}"
            context: ssl.SSLContext | bool = False
        else:
            base, context = f"https://127.0.0.1:{self.webhook_port}", ssl.create_default_context(cafile=self.ca)
        port = await answers(f"{base}/healthz", ok_only=False, context=context)
        return port, port and await answers(f"{base}/readyz", ok_only=True, context=context)


# ----------------------------------------------------------------------------------------------- the workload
def conditions_ready(obj: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in (obj.get("status") or {}).get("conditions", [])
    )


async def airway_ready(kube: KubeClient, flight_url: str, deadline: float) -> float:
    """Create the Airway; seconds until it is Ready."""
    schema = {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}
    body = {
        "apiVersion": "yoke.cd/v1alpha1",
        "kind": "Airway",
        "metadata": {"name": AIRWAY},
        "spec": {
            "wasmUrls": {"flight": flight_url},
            "template": {
                "group": GROUP,
                "names": {"kind": "Bench", "plural": "benches", "singular": "bench"},
                "scope": "Namespaced",
                "versions": [{"name": "v1", "served": True, "storage": True, "schema": schema}],
            },
        },
    }
    started = time.monotonic()
    while True:  # the ATC installs the yoke.cd CRDs; the API server needs a moment to serve them
        try:
            await kube.request("POST", "/apis/yoke.cd/v1alpha1/airways", body=body)
            break
        except KubeError as exc:
            if time.monotonic() - started > deadline:
                raise SystemExit(f"could not create the Airway: {exc}") from exc
            await asyncio.sleep(0.2)
    while not conditions_ready(await kube.get(f"/apis/yoke.cd/v1alpha1/airways/{AIRWAY}")):
        if time.monotonic() - started > deadline:
            raise SystemExit(f"Airway not Ready after {deadline:.0f}s")
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def instances_ready(kube: KubeClient, count: int, children: int, deadline: float) -> float:
    """Create ``count`` instances at once (20 requests in flight); seconds until all are Ready."""
    started = time.monotonic()
    await create_bench_instances(kube, INSTANCES, f"{GROUP}/v1", count, children, attempts=50)
    while (ready := sum(map(conditions_ready, (await kube.get(INSTANCES))["items"]))) < count:
        if time.monotonic() - started > deadline:
            raise SystemExit(f"only {ready}/{count} instances Ready after {deadline:.0f}s")
        await asyncio.sleep(0.25)
    return time.monotonic() - started


async def measure(system: System, audit: AuditLog, flight_url: str, args: argparse.Namespace) -> dict[str, Any]:
    kube, n = system.kube, args.instances
    await kube.request("POST", "/api/v1/namespaces", body={"metadata": {"name": BENCH_NAMESPACE}})
    await system.install()
    every = ("webhook", "controller") if isinstance(system, OurAtc) else ("atc",)
    answer_s, ready_s = await system.start(every)
    say(f"{system.name}: serving after {answer_s:.2f}s, ready after {ready_s:.2f}s")
    airway_s = await airway_ready(kube, flight_url, args.deadline)
    say(f"{system.name}: Airway Ready after {airway_s:.2f}s")
    await asyncio.sleep(1)
    audit.take()
    leaders = system.leaders()
    cpu_before = system.sampler.cpu_seconds(leaders)
    converge_s = await instances_ready(kube, n, args.children, args.deadline)
    await asyncio.sleep(3)  # the requests that follow the last Ready (status, revisions) land
    cpu = system.sampler.cpu_seconds(leaders) - cpu_before
    work = count_requests(audit.take(), system.users)
    rss, rss_by_process = system.sampler.peak_rss_mib(leaders)
    say(f"{system.name}: {n} instances Ready after {converge_s:.2f}s, {work['total'] / n:.1f} requests each")

    system.stop((system.controller,))
    restarted = time.monotonic()
    _, restart_ready_s = await system.start((system.controller,))
    events, quiet_s = await until_quiet(audit, system.users, restarted, args)
    restart = count_requests(events, system.users)
    say(f"{system.name}: restart: {restart['writes_without_leases']} writes (Leases apart), quiet after {quiet_s:.0f}s")

    await asyncio.sleep(args.idle)
    idle = count_requests(audit.take(), system.users)
    system.stop()
    return {
        "start_to_port_answer_s": round(answer_s, 3),
        "start_to_ready_s": round(ready_s, 3),
        "airway_create_to_ready_cold_s": round(airway_s, 3),
        "seconds_until_all_ready": round(converge_s, 3),
        "instances_per_second": round(n / converge_s, 3),
        "requests_per_instance": round(work["total"] / n, 3),
        "dry_run_writes_per_instance": round(work["dry_run_writes"] / n, 3),
        "requests_during_instances": work,
        "cpu_ms_per_instance": round(cpu * 1000 / n, 2),
        "peak_rss_mib": round(rss, 1),
        "peak_rss_by_process_mib": rss_by_process,
        "restart_start_to_ready_s": round(restart_ready_s, 3),
        "restart_writes_per_instance": round(restart["writes_without_leases"] / n, 3),
        "restart_to_quiet_s": round(quiet_s, 1),
        "requests_after_restart": restart,
        "idle_requests_per_minute": round(idle["total"] * 60 / args.idle, 2),
        "requests_while_idle": idle,
    }


async def until_quiet(
    audit: AuditLog, users: tuple[str, ...], since: float, args: argparse.Namespace
) -> tuple[list[dict[str, Any]], float]:
    """Audit events until ``users`` sent nothing but Lease requests for ``args.quiet`` seconds (and at least
    ``args.settle`` seconds passed since ``since``); the events and the seconds from ``since`` to the last
    other request."""
    events: list[dict[str, Any]] = []
    last = since
    while True:
        await asyncio.sleep(0.5)
        now = time.monotonic()
        fresh = audit.take()
        events += fresh
        if any(
            e.get("user", {}).get("username") in users and (e.get("objectRef") or {}).get("resource") != "leases"
            for e in fresh
        ):
            last = now
        if now - last >= args.quiet and now - since >= args.settle:
            return events, last - since
        if now - since > args.deadline:
            raise SystemExit(f"still busy {args.deadline:.0f}s after the restart")


def run_one(name: str, round_no: int, flight_url: str, binary: Path, work: Path, args: argparse.Namespace) -> Any:
    """One system on a fresh control plane with an audit log."""
    root = work / f"{name}-{round_no}"
    audit_path = root / "audit.log"
    cluster = Cluster(root / "cluster", tie_to_parent=True, audit_log=audit_path)
    state = cluster.start()
    say(f"round {round_no}: {name} on a fresh control plane ({state.server})")

    async def go() -> dict[str, Any]:
        async with await KubeClient.connect(state.kubeconfig) as kube:
            common: dict[str, Any] = {
                "work": root,
                "kube": kube,
                "admin_kubeconfig": Path(state.kubeconfig),
                "sampler": sampler,
            }
            system: System = YokeAtc(binary, **common) if name == "yoke" else OurAtc(**common)
            try:
                return await measure(system, AuditLog(audit_path), flight_url, args)
            finally:
                system.stop()

    try:
        with ProcessSampler() as sampler:
            return asyncio.run(go())
    finally:
        cluster.stop()


# ----------------------------------------------------------------------------------------------- the table
ROWS = (
    ("time for N instances to all Ready (s)", "seconds_until_all_ready", 2),
    ("instances/s", "instances_per_second", 2),
    ("API requests per instance (whole system)", "requests_per_instance", 1),
    ("… of which dry-run writes", "dry_run_writes_per_instance", 1),
    ("CPU per instance (ms)", "cpu_ms_per_instance", 1),
    ("peak RSS, all processes (MiB)", "peak_rss_mib", 1),
    ("process start → port answers (s)", "start_to_port_answer_s", 2),
    ("process start → ready (s)", "start_to_ready_s", 2),
    ("Airway created → Ready, cold compile (s)", "airway_create_to_ready_cold_s", 2),
    ("restart, nothing changed: writes per instance", "restart_writes_per_instance", 2),
    ("restart, nothing changed: seconds until quiet", "restart_to_quiet_s", 1),
    ("idle API requests per minute", "idle_requests_per_minute", 1),
)


def medians(rounds: list[dict[str, Any]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in rounds) for _, key, _ in ROWS}


def table(result: dict[str, Any]) -> str:
    yoke, ours = result["median"]["yoke"], result["median"]["ours"]
    lines = [
        f"| N = {result['instances']} × {result['children_per_instance']} ConfigMaps, "
        f"median of {result['rounds']} round(s) | yoke {result['yoke_version']} | ours | ours / yoke |",
        "|---|---|---|---|",
    ]
    for label, key, digits in ROWS:
        ratio = f"{ours[key] / yoke[key]:.2f}" if yoke[key] else "–"
        lines.append(f"| {label} | {yoke[key]:,.{digits}f} | {ours[key]:,.{digits}f} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=100)
    parser.add_argument("--children", type=int, default=5, help="ConfigMaps per instance")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each system once per round, alternating first")
    parser.add_argument("--idle", type=float, default=60, help="idle window, seconds")
    parser.add_argument("--settle", type=float, default=30, help="count at least this long after the restart, s")
    parser.add_argument("--quiet", type=float, default=10, help="after the restart, count until this long quiet, s")
    parser.add_argument("--deadline", type=float, default=600)
    parser.add_argument("--name", default="vs_yoke", help="results file .local/bench/<name>.json")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 instances, 1 round, 8 s windows")
    args = parser.parse_args(argv)
    if args.quick:
        args.instances, args.rounds, args.idle, args.settle, args.quiet = 3, 1, 8.0, 5.0, 4.0
    binary = yoke_atc_binary()
    wasm = flightbuild.build("multi")
    runs: dict[str, list[dict[str, Any]]] = {"yoke": [], "ours": []}
    with tempfile.TemporaryDirectory(prefix="vs-yoke-") as tmp, serve_files(wasm.parent) as base:
        flight_url = f"{base}/{wasm.name}"
        for round_no in range(args.rounds):
            order = ("yoke", "ours") if round_no % 2 == 0 else ("ours", "yoke")
            for name in order:
                try:
                    runs[name].append(run_one(name, round_no, flight_url, binary, Path(tmp), args))
                except BaseException:
                    keep = REPO / ".local" / "bench" / f"{args.name}-failed"
                    shutil.rmtree(keep, ignore_errors=True)
                    shutil.copytree(Path(tmp), keep, ignore=shutil.ignore_patterns("etcd-data", "module-cache"))
                    say(f"failed: logs kept in {keep}")
                    raise
    result = {
        "yoke_version": yokesuite.YOKE_VERSION,
        "instances": args.instances,
        "children_per_instance": args.children,
        "rounds": args.rounds,
        "idle_window_s": args.idle,
        "restart_min_window_s": args.settle,
        "restart_quiet_s": args.quiet,
        "median": {name: medians(rounds) for name, rounds in runs.items()},
        "runs": runs,
    }
    print(table(result))
    write_results(args.name, result, print_values=False)
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops the clusters like Ctrl-C
    sys.exit(main())
