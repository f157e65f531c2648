"""What every benchmark shares: the control plane to run against, percentiles, the results file, and
the creation of ``Bench`` instances of the ``multi`` flight, and reading API server audit logs.

Imported by the benchmarks in ``bench/`` (each puts ``tools/`` and ``tests/`` on ``sys.path`` first).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from atc.k8s.client import KubeClient, KubeError
from devcluster.cluster import Cluster, ClusterState, running_state

REPO = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def control_plane(work: Path) -> Iterator[ClusterState]:
    """The running ``make cluster-up`` cluster when ``DEVCLUSTER_REUSE=1``, else a temporary one in ``work``."""
    if os.environ.get("DEVCLUSTER_REUSE") == "1":
        state = running_state(REPO / ".local" / "cluster")
        if state is None:
            raise SystemExit("DEVCLUSTER_REUSE=1 but no cluster is running (make cluster-up)")
        yield state
        return
    cluster = Cluster(work / "cluster", tie_to_parent=True)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@contextlib.contextmanager
def service(module: str, env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m <module>`` with ``env`` added to ours, output to ``log_path``; SIGTERM and reaped on exit."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", module],
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of ``values`` (``fraction`` in 0..1); NaN when there are none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def percentiles(samples: list[float]) -> dict[str, float]:
    """Count, min, p50 (median), p90, p99 and max of ``samples``."""
    return {
        "n": len(samples),
        "min": min(samples),
        "p50": statistics.median(samples),
        "p90": percentile(samples, 0.9),
        "p99": percentile(samples, 0.99),
        "max": max(samples),
    }


def write_results(name: str, result: dict[str, Any], *, width: int = 36, print_values: bool = True) -> None:
    """Write ``result`` to ``.local/bench/<name>.json``, after printing it one key a line if asked."""
    for key, value in result.items() if print_values else ():
        print(f"{key:{width}} {value}")
    out = REPO / ".local" / "bench" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results written to {out}")


async def create_bench_instances(
    kube: KubeClient, collection: str, api_version: str, count: int, children: int, *, attempts: int = 1
) -> None:
    """Create ``count`` ``Bench`` instances ``b0``, ``b1``, ... of the ``multi`` flight, 20 requests at a time.

    Each create is tried ``attempts`` times, 0.2 s apart (an instance webhook may still be registering).
    """
    gate = asyncio.Semaphore(20)

    async def create(index: int) -> None:
        body = {
            "apiVersion": api_version,
            "kind": "Bench",
            "metadata": {"name": f"b{index}"},
            "spec": {"children": children},
        }
        async with gate:
            for attempt in range(attempts):
                try:
                    await kube.request("POST", collection, body=body)
                    return
                except KubeError:
                    if attempt == attempts - 1:
                        raise
                    await asyncio.sleep(0.2)

    await asyncio.gather(*(create(i) for i in range(count)))


class AuditLog:
    """A kube-apiserver audit log (``Cluster(audit_log=...)``) read forward: each request once (by auditID)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.seen: set[str] = set()

    def take(self) -> list[dict[str, Any]]:
        """The requests logged since the last call (first event of each auditID)."""
        if not self.path.is_file():
            return []
        with self.path.open("rb") as log:
            log.seek(self.offset)
            data = log.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        events = []
        for line in data[:end].splitlines():
            event = json.loads(line)
            if event.get("auditID") not in self.seen:
                self.seen.add(event["auditID"])
                events.append(event)
        return events
