"""Start and stop a real Kubernetes control plane on loopback.

``Cluster`` runs etcd, kube-apiserver, kube-controller-manager, kube-scheduler
and KWOK as host processes (binaries from ``devcluster.build``), each in its
own process group, waits until each one is healthy, writes an admin
kubeconfig and registers a fake Node that KWOK turns Ready. Every started
process is recorded (PID and kernel start time) in ``state.json`` in the
runtime directory, so ``stop()`` (or ``devcluster down`` from another process)
signals exactly those processes and never a recycled PID.

Callers: ``python -m devcluster up|down`` (``make cluster-up``/``cluster-down``)
and the session fixture in ``tests/conftest.py``. ``audit_log`` (used by
``bench/vs_yoke.py``) makes kube-apiserver write an audit log of every request
at Metadata level, one JSON event a line, to count requests per user.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from . import build, pki

NODE_NAME = "kwok-node-0"
STATE_FILE = "state.json"
STOP_GRACE_SECONDS = 10.0
PR_SET_PDEATHSIG = 1
# Metadata level: user, verb, URI (so ``dryRun=All``), object reference and status, never bodies. One
# event per request when it completes (or starts streaming, for watches); RequestReceived is left out.
AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages:
- RequestReceived
rules:
- level: Metadata
"""


POD_COMPLETE_SELECTOR = """    - key: '.metadata.ownerReferences.[].kind'
      operator: 'In'
      values:
      - 'Job'
"""
SKIP_FAILING_PODS = """    - key: '.metadata.annotations["kwok.test/fail"]'
      operator: 'DoesNotExist'
"""
POD_FAIL_STAGE = """apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-fail
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.status.phase'
      operator: 'In'
      values:
      - 'Running'
    - key: '.metadata.annotations["kwok.test/fail"]'
      operator: 'Exists'
  next:
    statusTemplate: |
      {{ $now := Now }}
      containerStatuses:
      {{ range $index, $item := .spec.containers }}
      - image: {{ $item.image | Quote }}
        name: {{ $item.name | Quote }}
        ready: false
        restartCount: 0
        started: false
        state:
          terminated:
            exitCode: 1
            finishedAt: {{ $now | Quote }}
            reason: Error
            startedAt: {{ $now | Quote }}
      {{ end }}
      phase: Failed
"""


class ClusterError(RuntimeError):
    """The control plane did not come up; the message names the process and shows its log."""


MAIN_CLUSTER = "main"  # ``python -m devcluster`` without ``--name``: ``make cluster-up``'s cluster
_CLUSTER_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?")


def cluster_paths(name: str = MAIN_CLUSTER, local_dir: Path = Path(".local")) -> tuple[Path, Path]:
    """The (runtime directory, kubeconfig) of the cluster called ``name``.

    The main cluster keeps ``.local/cluster`` and ``.local/kubeconfig``; any other name lives in
    ``.local/clusters/<name>/`` (its kubeconfig there too), so several run side by side.
    """
    if not _CLUSTER_NAME.fullmatch(name):
        raise ClusterError(f"invalid cluster name {name!r}: lowercase letters, digits and '-', at most 40")
    if name == MAIN_CLUSTER:
        return local_dir / "cluster", local_dir / "kubeconfig"
    runtime_dir = local_dir / "clusters" / name
    return runtime_dir, runtime_dir / "kubeconfig"


@dataclass
class ProcessRecord:
    """One control-plane process we started: enough to find it again and only it."""

    name: str
    pid: int
    start_ticks: int
    log: str
    argv: list[str] = field(default_factory=list)  # to start it again (fault tests)


@dataclass
class ClusterState:
    """What ``state.json`` holds for a running cluster."""

    runtime_dir: str
    kubeconfig: str
    server: str
    bin_dir: str
    processes: list[ProcessRecord] = field(default_factory=list)

    def save(self) -> None:
        path = Path(self.runtime_dir) / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, runtime_dir: Path) -> ClusterState | None:
        path = runtime_dir / STATE_FILE
        if not path.is_file():
            return None
        raw = json.loads(path.read_text())
        raw["processes"] = [ProcessRecord(**p) for p in raw.get("processes", [])]
        return cls(**raw)


def _start_ticks(pid: int) -> int | None:
    """The process start time in clock ticks since boot, from /proc (None if gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces; fields after it are fixed.
    fields_after_comm = stat.rsplit(")", 1)[1].split()
    return int(fields_after_comm[19])


def is_alive(record: ProcessRecord) -> bool:
    """True when the PID still belongs to the process we started."""
    ticks = _start_ticks(record.pid)
    if ticks != record.start_ticks:
        return False
    with contextlib.suppress(OSError):
        state = Path(f"/proc/{record.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    return False


def _signal_group(record: ProcessRecord, sig: signal.Signals) -> None:
    if is_alive(record):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(record.pid, sig)  # each process leads its own group


def stop_processes(records: list[ProcessRecord], grace: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM each recorded process group (newest first), SIGKILL what outlives the grace period."""
    for record in reversed(records):
        _signal_group(record, signal.SIGTERM)
        if not _wait_gone(record, grace):
            _signal_group(record, signal.SIGKILL)
            _wait_gone(record, grace)


def _wait_gone(record: ProcessRecord, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while is_alive(record):
        _reap(record.pid)
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    _reap(record.pid)
    return True


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def die_with_parent() -> None:
    """preexec hook: the kernel kills the child if the process that started it dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def kubeconfig_yaml(server: str, ca_pem: bytes, client: pki.KeyPair) -> str:
    """An admin kubeconfig (JSON is valid YAML, and keeps this module free of a YAML dependency)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": server, "certificate-authority-data": _b64(ca_pem)}}],
        "users": [
            {
                "name": "admin",
                "user": {"client-certificate-data": _b64(client.cert_pem), "client-key-data": _b64(client.key_pem)},
            }
        ],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": "admin"}}],
        "current-context": "local",
    }
    return json.dumps(config, indent=2) + "\n"


class ApiServer:
    """Minimal JSON client for the launcher's own calls (health, node, namespaces)."""

    def __init__(self, server: str, pki_dir: Path) -> None:
        self.server = server
        self._ssl = ssl.create_default_context(cafile=str(pki_dir / "ca.crt"))
        self._ssl.load_cert_chain(str(pki_dir / "admin.crt"), str(pki_dir / "admin.key"))

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.server + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, context=self._ssl, timeout=10) as resp:
                raw = resp.read()
                status = resp.status
        except urllib.error.HTTPError as exc:
            raw, status = exc.read(), exc.code
        try:
            return status, json.loads(raw) if raw else None
        except json.JSONDecodeError:
            return status, raw.decode(errors="replace")


def _healthz_ok(url: str) -> bool:
    return _insecure_get(url) == 200


def _insecure_get(url: str) -> int:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


class Cluster:
    """One local control plane rooted at ``runtime_dir``.

    ``tie_to_parent`` makes the kernel kill every child if this Python process
    dies (pytest sessions); ``devcluster up`` leaves it off so the cluster
    outlives the command that started it.
    """

    def __init__(
        self,
        runtime_dir: Path,
        *,
        kubeconfig_path: Path | None = None,
        tie_to_parent: bool = False,
        log: Callable[[str], None] = build.log,
        audit_log: Path | None = None,
    ) -> None:
        self.runtime_dir = runtime_dir.resolve()
        self.pki_dir = self.runtime_dir / "pki"
        self.log_dir = self.runtime_dir / "logs"
        self.kubeconfig_path = (kubeconfig_path or self.runtime_dir / "kubeconfig").resolve()
        self._tie_to_parent = tie_to_parent
        self._log = log
        self.audit_log = audit_log.resolve() if audit_log is not None else None
        self.state: ClusterState | None = None
        self.api: ApiServer | None = None

    @classmethod
    def attach(cls, state: ClusterState, *, tie_to_parent: bool = False) -> Cluster:
        """A handle on a cluster that runs already (a fixture's), for its fault methods below."""
        cluster = cls(Path(state.runtime_dir), kubeconfig_path=Path(state.kubeconfig), tie_to_parent=tie_to_parent)
        cluster.state = state
        cluster.api = ApiServer(state.server, cluster.pki_dir)
        return cluster

    # ----------------------------------------------------------------- lifecycle
    def start(self, bin_dir: Path | None = None) -> ClusterState:
        started = time.monotonic()
        bin_dir = bin_dir or build.ensure_binaries()
        self._prepare_dirs()
        ports = {name: free_port() for name in ("etcd", "etcd_peer", "apiserver", "kcm", "scheduler", "kwok")}
        server = f"https://127.0.0.1:{ports['apiserver']}"
        self._write_pki_and_kubeconfig(server)
        self.state = ClusterState(
            runtime_dir=str(self.runtime_dir),
            kubeconfig=str(self.kubeconfig_path),
            server=server,
            bin_dir=str(bin_dir),
        )
        self.state.save()
        try:
            self._boot(bin_dir, ports, server)
        except BaseException:
            self.stop()
            raise
        self._log(f"cluster ready in {time.monotonic() - started:.1f}s: {server} (kubeconfig {self.kubeconfig_path})")
        return self.state

    def stop(self) -> None:
        state = self.state or ClusterState.load(self.runtime_dir)
        if state is None:
            return
        stop_processes(state.processes)
        for sub in ("etcd-data", STATE_FILE):
            path = self.runtime_dir / sub
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        self.state = None

    # ----------------------------------------------------------------- faults (tests)
    def _record(self, name: str) -> ProcessRecord:
        assert self.state is not None, "the cluster is not running"
        for record in self.state.processes:
            if record.name == name:
                return record
        raise KeyError(f"no process {name!r} in this cluster")

    def stop_component(self, name: str, *, kill: bool = False) -> None:
        """Stop one process (``kube-apiserver``, ``etcd``, ...): SIGTERM, or SIGKILL when ``kill``."""
        record = self._record(name)
        if kill:
            _signal_group(record, signal.SIGKILL)
            _wait_gone(record, STOP_GRACE_SECONDS)
        else:
            stop_processes([record])

    def start_component(self, name: str) -> None:
        """Start a stopped process again with the arguments it had (same ports, same data).

        Call it from the thread that lives as long as the cluster: with ``tie_to_parent`` the kernel
        kills the process when the *thread* that started it ends (PR_SET_PDEATHSIG), so starting it
        from a short-lived worker thread (``asyncio.to_thread``) would kill it when that thread exits.
        """
        assert self.state is not None
        record = self._record(name)
        if is_alive(record):
            raise ClusterError(f"{name} is still running (pid {record.pid})")
        self.state.processes.remove(record)
        self._spawn(name, record.argv)

    def wait_api_ready(self, timeout: float = 120) -> None:
        """Block until kube-apiserver answers /readyz again (after a restart)."""
        self._wait("kube-apiserver /readyz", lambda: self._api_status("/readyz") == 200, timeout=timeout)

    def pause_component(self, name: str) -> None:
        """Freeze a process (SIGSTOP): it keeps its sockets but answers nothing."""
        _signal_group(self._record(name), signal.SIGSTOP)

    def resume_component(self, name: str) -> None:
        _signal_group(self._record(name), signal.SIGCONT)

    def _boot(self, bin_dir: Path, ports: dict[str, int], server: str) -> None:
        self._start_etcd(bin_dir, ports)
        self._start_apiserver(bin_dir, ports)
        self.api = ApiServer(server, self.pki_dir)
        self._wait("kube-apiserver /readyz", lambda: self._api_status("/readyz") == 200, timeout=180)
        self._wait("namespaces default and kube-system", self._core_namespaces_exist, timeout=60)
        self._start_kcm(bin_dir, ports)
        self._start_scheduler(bin_dir, ports)
        self._start_kwok(bin_dir, ports)
        for name, key in (("kube-controller-manager", "kcm"), ("kube-scheduler", "scheduler")):
            self._wait(f"{name} /healthz", partial(_healthz_ok, f"https://127.0.0.1:{ports[key]}/healthz"), 120)
        self._wait("kwok /healthz", lambda: _insecure_get_plain(f"http://127.0.0.1:{ports['kwok']}/healthz"), 60)
        self._register_node()
        self._wait(f"node {NODE_NAME} Ready", self._node_ready, timeout=120)
        self._wait("service account default/default", self._default_sa_exists, timeout=60)

    # ----------------------------------------------------------------- setup
    def _prepare_dirs(self) -> None:
        for sub in ("etcd-data", "pki", "logs"):
            path = self.runtime_dir / sub
            if path.exists():
                shutil.rmtree(path)
            path.mkdir(parents=True)
        self.kubeconfig_path.parent.mkdir(parents=True, exist_ok=True)

    def _write_pki_and_kubeconfig(self, server: str) -> None:
        ca = pki.new_ca("devcluster-ca")
        ca.keypair.write(self.pki_dir, "ca")
        ca.issue_serving(
            "kube-apiserver",
            dns_names=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            ips=("127.0.0.1", "10.0.0.1"),
        ).write(self.pki_dir, "apiserver")
        admin = ca.issue_client("admin", ("system:masters",))
        admin.write(self.pki_dir, "admin")
        sa_public, sa_private = pki.service_account_keys()
        (self.pki_dir / "sa.pub").write_bytes(sa_public)
        (self.pki_dir / "sa.key").write_bytes(sa_private)
        text = kubeconfig_yaml(server, ca.cert_pem, admin)
        (self.runtime_dir / "admin.kubeconfig").write_text(text)
        self.kubeconfig_path.write_text(text)
        self.kubeconfig_path.chmod(0o600)

    # ----------------------------------------------------------------- processes
    def _spawn(self, name: str, argv: list[str]) -> ProcessRecord:
        assert self.state is not None
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("ab") as log_file:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.runtime_dir,
                preexec_fn=die_with_parent if self._tie_to_parent else None,
            )
        ticks = _start_ticks(proc.pid)
        record = ProcessRecord(name=name, pid=proc.pid, start_ticks=ticks or -1, log=str(log_path), argv=argv)
        self.state.processes.append(record)
        self.state.save()
        self._log(f"started {name} (pid {proc.pid})")
        return record

    def _start_etcd(self, bin_dir: Path, ports: dict[str, int]) -> None:
        client = f"http://127.0.0.1:{ports['etcd']}"
        peer = f"http://127.0.0.1:{ports['etcd_peer']}"
        self._spawn(
            "etcd",
            [
                str(bin_dir / "etcd"),
                "--name=n0",
                f"--data-dir={self.runtime_dir / 'etcd-data'}",
                "--unsafe-no-fsync=true",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=n0={peer}",
                "--log-level=warn",
            ],
        )
        self._wait("etcd /health", lambda: _insecure_get_plain(f"{client}/health"), timeout=60)

    def _start_apiserver(self, bin_dir: Path, ports: dict[str, int]) -> None:
        p = self.pki_dir
        self._spawn(
            "kube-apiserver",
            [
                str(bin_dir / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
                "--bind-address=127.0.0.1",
                f"--secure-port={ports['apiserver']}",
                "--advertise-address=127.0.0.1",
                "--endpoint-reconciler-type=none",
                f"--tls-cert-file={p / 'apiserver.crt'}",
                f"--tls-private-key-file={p / 'apiserver.key'}",
                f"--client-ca-file={p / 'ca.crt'}",
                "--authorization-mode=Node,RBAC",
                "--allow-privileged=true",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={p / 'sa.pub'}",
                f"--service-account-signing-key-file={p / 'sa.key'}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--kubelet-preferred-address-types=InternalIP",
                f"--cert-dir={self.runtime_dir / 'apiserver-certs'}",
                "--profiling=false",
                *self._audit_args(),
            ],
        )

    def _audit_args(self) -> list[str]:
        """kube-apiserver flags for the optional audit log (none when ``audit_log`` is unset)."""
        if self.audit_log is None:
            return []
        policy = self.runtime_dir / "audit-policy.yaml"
        policy.write_text(AUDIT_POLICY)
        self.audit_log.parent.mkdir(parents=True, exist_ok=True)
        return [f"--audit-policy-file={policy}", f"--audit-log-path={self.audit_log}"]

    def _component_args(self, port: int) -> list[str]:
        kubeconfig = str(self.runtime_dir / "admin.kubeconfig")
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={self.runtime_dir / 'component-certs'}",
        ]

    def _start_kcm(self, bin_dir: Path, ports: dict[str, int]) -> None:
        p = self.pki_dir
        self._spawn(
            "kube-controller-manager",
            [
                str(bin_dir / "kube-controller-manager"),
                *self._component_args(ports["kcm"]),
                f"--root-ca-file={p / 'ca.crt'}",
                f"--service-account-private-key-file={p / 'sa.key'}",
                f"--cluster-signing-cert-file={p / 'ca.crt'}",
                f"--cluster-signing-key-file={p / 'ca.key'}",
                "--kube-api-qps=200",
                "--kube-api-burst=400",
                "--concurrent-gc-syncs=20",
                # each controller acts as its own kube-system ServiceAccount, as in real clusters
                # (admission webhooks see e.g. system:serviceaccount:kube-system:generic-garbage-collector)
                "--use-service-account-credentials=true",
            ],
        )

    def _start_scheduler(self, bin_dir: Path, ports: dict[str, int]) -> None:
        self._spawn(
            "kube-scheduler",
            [
                str(bin_dir / "kube-scheduler"),
                *self._component_args(ports["scheduler"]),
                "--kube-api-qps=200",
                "--kube-api-burst=400",
            ],
        )

    def _write_stages(self, bin_dir: Path) -> Path:
        """KWOK's stock stages, plus one that fails Job pods annotated ``kwok.test/fail`` (tests of failure paths)."""
        stock = (bin_dir / build.STAGES_FILE).read_text()
        marker = "  name: pod-complete\n"
        if marker not in stock or POD_COMPLETE_SELECTOR not in stock:
            raise ClusterError("KWOK's pod-complete stage changed shape; update devcluster's failure stage")
        stock = stock.replace(POD_COMPLETE_SELECTOR, POD_COMPLETE_SELECTOR + SKIP_FAILING_PODS, 1)
        path = self.runtime_dir / build.STAGES_FILE
        path.write_text(stock.rstrip() + "\n---\n" + POD_FAIL_STAGE)
        return path

    def _start_kwok(self, bin_dir: Path, ports: dict[str, int]) -> None:
        self._spawn(
            "kwok",
            [
                str(bin_dir / "kwok"),
                f"--kubeconfig={self.runtime_dir / 'admin.kubeconfig'}",
                f"--config={self._write_stages(bin_dir)}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--node-lease-duration-seconds=40",
                "--node-ip=127.0.0.1",
                "--cidr=10.244.0.0/16",
                f"--server-address=127.0.0.1:{ports['kwok']}",
            ],
        )

    # ----------------------------------------------------------------- waits
    def _wait(self, what: str, check: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self._fail_if_a_process_died(what)
            with contextlib.suppress(OSError, ssl.SSLError, urllib.error.URLError, ValueError):
                if check():
                    return
            if time.monotonic() > deadline:
                raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}\n{self._all_log_tails()}")
            time.sleep(0.25)

    def _fail_if_a_process_died(self, waiting_for: str) -> None:
        assert self.state is not None
        for record in self.state.processes:
            if not is_alive(record):
                raise ClusterError(
                    f"{record.name} (pid {record.pid}) exited while waiting for {waiting_for}; "
                    f"last lines of {record.log}:\n{_log_tail(Path(record.log))}"
                )

    def _all_log_tails(self) -> str:
        assert self.state is not None
        return "\n".join(f"--- {r.name} ({r.log})\n{_log_tail(Path(r.log), 15)}" for r in self.state.processes)

    def _api_status(self, path: str) -> int:
        assert self.api is not None
        return self.api.request("GET", path)[0]

    def _core_namespaces_exist(self) -> bool:
        return all(self._api_status(f"/api/v1/namespaces/{ns}") == 200 for ns in ("default", "kube-system"))

    def _default_sa_exists(self) -> bool:
        return self._api_status("/api/v1/namespaces/default/serviceaccounts/default") == 200

    def _register_node(self) -> None:
        assert self.api is not None
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": NODE_NAME,
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {
                    "kubernetes.io/hostname": NODE_NAME,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "type": "kwok",
                },
            },
            "status": {
                "capacity": {"cpu": "32", "memory": "256Gi", "pods": "1000"},
                "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "1000"},
            },
        }
        status, body = self.api.request("POST", "/api/v1/nodes", node)
        if status not in (201, 409):
            raise ClusterError(f"could not register node {NODE_NAME}: HTTP {status}: {body}")

    def _node_ready(self) -> bool:
        assert self.api is not None
        status, node = self.api.request("GET", f"/api/v1/nodes/{NODE_NAME}")
        if status != 200:
            return False
        conditions = node.get("status", {}).get("conditions") or []
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _insecure_get_plain(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return int(resp.status) == 200


def running_state(runtime_dir: Path) -> ClusterState | None:
    """The recorded cluster if all its processes still run and the apiserver answers."""
    state = ClusterState.load(runtime_dir)
    if state is None or not state.processes or not all(is_alive(r) for r in state.processes):
        return None
    try:
        api = ApiServer(state.server, runtime_dir / "pki")
        return state if api.request("GET", "/readyz")[0] == 200 else None
    except (OSError, ssl.SSLError, urllib.error.URLError):
        return None


@contextlib.contextmanager
def temporary_cluster(runtime_dir: Path) -> Iterator[Cluster]:
    """A cluster tied to this process, stopped on exit (also on Ctrl-C)."""
    cluster = Cluster(runtime_dir, tie_to_parent=True)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
