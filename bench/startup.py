"""Benchmark of start-up: process start → port answering → ready, for each service, N times.

``.venv/bin/python bench/startup.py [--runs 10] [--services controller,webhook] [--kubeconfig PATH]``
starts a local control plane (or reuses ``make cluster-up``'s with ``DEVCLUSTER_REUSE=1``, or uses
the cluster of ``--kubeconfig``) and then, N times per service, starts ``python -m atc_controller``
/ ``python -m atc_webhook`` and polls every 10 ms until

- ``serving``: the controller's ``/healthz`` (HEALTH_PORT) or the webhook's HTTPS ``/healthz``
  (PORT) answers 200 (the port is open and the app answers);
- ``ready``: ``/readyz`` answers 200 (controller: API server reachable, ``yoke.cd`` CRDs
  installed, Lease held, reflector caches synced, workers running; webhook: TLS loaded,
  caches synced);

then reads the CPU time the process has used (user + system: less disturbed than wall time by
other load on the machine) and its peak RSS (``VmHWM``), and stops it with SIGTERM (it must exit
0). One warm-up start per service comes first and is not counted: it writes the ``.pyc`` files,
generates the webhook's TLS files and installs the CRDs, as a rollout of a new version over an
old one finds them. It also reports how long importing each service's modules takes
(``python -c "import …"``). Prints percentiles (seconds, MiB) and writes
``.local/bench/startup.json``. ``tests/integration/test_startup_bench.py`` runs it once per
service (``--runs 1 --no-warm-up --no-results``) as a smoke test.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import secrets
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))

from benchlib import control_plane, percentiles, service, write_results  # noqa: E402

from atc.k8s.client import KubeClient  # noqa: E402
from devcluster.cluster import free_port  # noqa: E402

POLL_SECONDS = 0.01
SERVICES = ("controller", "webhook")
MODULES = {"controller": "atc_controller", "webhook": "atc_webhook"}
IMPORTS = {
    "controller": "atc_controller.__main__, atc_controller.app",
    "webhook": "atc_webhook.__main__, atc_webhook.server",
}


@dataclass
class Start:
    """One start of one service: seconds from ``Popen`` to serving and to ready, CPU seconds, peak RSS in MiB."""

    serving: float
    ready: float
    cpu_at_ready: float
    peak_rss_mib: float


def status_of(port: int, path: str, *, tls: bool) -> int:
    """The HTTP status of ``GET path`` on 127.0.0.1:``port``; 0 while nothing answers."""
    connection: http.client.HTTPConnection
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=2, context=context)
    else:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    except OSError:
        return 0
    finally:
        connection.close()


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of ``pid`` so far (less disturbed by other load than wall time)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wait_for(
    check: Callable[[], bool], process: subprocess.Popen[bytes], deadline: float, what: str, log: Path
) -> None:
    while not check():
        if process.poll() is not None:
            raise SystemExit(f"{what}: the process exited with {process.returncode}; see {log}")
        if time.monotonic() > deadline:
            raise SystemExit(f"{what}: not reached in time; see {log}")
        time.sleep(POLL_SECONDS)


def start_once(name: str, env: dict[str, str], port: int, log: Path, timeout: float) -> Start:
    """Start ``name`` with ``env``, wait until it serves and is ready, stop it; the times and peak RSS."""
    tls = name == "webhook"
    started = time.monotonic()
    with service(MODULES[name], env, log) as process:
        deadline = started + timeout
        wait_for(lambda: status_of(port, "/healthz", tls=tls) == 200, process, deadline, f"{name} serving", log)
        serving = time.monotonic() - started
        wait_for(lambda: status_of(port, "/readyz", tls=tls) == 200, process, deadline, f"{name} ready", log)
        ready = time.monotonic() - started
        cpu, rss = cpu_seconds(process.pid), peak_rss_mib(process.pid)
        os.kill(process.pid, signal.SIGTERM)
        if process.wait(30) != 0:
            raise SystemExit(f"{name} exited with {process.returncode} after SIGTERM; see {log}")
    return Start(serving, ready, cpu, rss)


def environment(name: str, kubeconfig: str, work: Path, namespace: str, run: int) -> tuple[dict[str, str], int]:
    """The settings of one start of ``name`` and the port its probes answer on."""
    port = free_port()
    env = {"KUBE": kubeconfig, "CACHE_FS": str(work / "cache"), "SVC_NAMESPACE": namespace}
    if name == "controller":
        # a Lease of its own per start: no run waits for the previous one's Lease
        env |= {
            "HEALTH_PORT": str(port),
            "METRICS_PORT": str(free_port()),
            "LEADER_ELECTION_ID": f"startup-{run}",
        }
    else:
        env |= {"PORT": str(port), "ADDRESS": "127.0.0.1", "TLS_GENERATE_DIR": str(work / "tls")}
    return env, port


def import_seconds(name: str) -> float:
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", f"import {IMPORTS[name]}"], check=True)
    return time.monotonic() - started


def summary(samples: list[float]) -> dict[str, float]:
    return {key: round(value, 3) for key, value in percentiles(samples).items()}


async def create_namespace(kubeconfig: str, namespace: str) -> None:
    async with await KubeClient.connect(kubeconfig) as kube:
        await kube.request("POST", "/api/v1/namespaces", body={"metadata": {"name": namespace}})


def bench(kubeconfig: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    namespace = f"startup-{secrets.token_hex(3)}"
    asyncio.run(create_namespace(kubeconfig, namespace))
    result: dict[str, Any] = {"runs": args.runs}
    for name in args.services:
        starts: list[Start] = []
        for run in range(-1 if args.warm_up else 0, args.runs):
            env, port = environment(name, kubeconfig, work, namespace, run)
            start = start_once(name, env, port, work / f"{name}-{run}.log", args.timeout)
            if run >= 0:
                starts.append(start)
        imports = [import_seconds(name) for _ in range(args.runs)]
        result[name] = {
            "import_seconds": summary(imports),
            "serving_seconds": summary([s.serving for s in starts]),
            "ready_seconds": summary([s.ready for s in starts]),
            "cpu_seconds_until_ready": summary([s.cpu_at_ready for s in starts]),
            "peak_rss_mib": summary([s.peak_rss_mib for s in starts]),
        }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="counted starts per service")
    parser.add_argument("--services", type=lambda s: s.split(","), default=list(SERVICES))
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a start may take until ready")
    parser.add_argument("--no-warm-up", dest="warm_up", action="store_false", help="count the first start too")
    parser.add_argument("--kubeconfig", default="", help="use this cluster instead of starting one")
    parser.add_argument("--no-results", dest="results", action="store_false", help="do not write the results file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.kubeconfig:
            result = bench(args.kubeconfig, Path(tmp), args)
        else:
            with control_plane(Path(tmp)) as state:
                result = bench(state.kubeconfig, Path(tmp), args)
    for name in args.services:
        for key, value in result[name].items():
            print(f"{name + ' ' + key:32} {value}")
    if args.results:
        write_results("startup", result, print_values=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
