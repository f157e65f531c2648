"""Smoke test of ``bench/startup.py``: each service started once on the local control plane serves,
gets ready and exits 0 on SIGTERM (the benchmark fails otherwise). No timing is asserted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from devcluster.cluster import ClusterState

REPO = Path(__file__).resolve().parent.parent.parent


def test_both_services_start_serve_get_ready_and_stop(cluster: ClusterState) -> None:
    command = [sys.executable, str(REPO / "bench" / "startup.py"), "--runs", "1", "--no-warm-up", "--no-results"]
    done = subprocess.run(
        [*command, "--kubeconfig", cluster.kubeconfig], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for service in ("controller", "webhook"):
        for measure in ("serving_seconds", "ready_seconds", "peak_rss_mib"):
            assert f"{service} {measure}" in done.stdout
