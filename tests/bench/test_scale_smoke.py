"""Smoke run of ``bench/scale.py`` with 20 instances on the session's control plane.

The benchmark itself is run by hand at 1,000 to 10,000 instances (docs/benchmarks.md, "At scale");
this test keeps it working: it runs the script as a subprocess against the ``cluster`` fixture
(``--kubeconfig``, so no second control plane starts) and checks that its report is sane.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from devcluster.cluster import ClusterState

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
SIZE = 20


def test_scale_bench_reports_a_converged_size_and_a_clean_restart(cluster: ClusterState) -> None:
    results = REPO / ".local" / "bench" / "scale-smoke.json"
    results.unlink(missing_ok=True)
    command = [
        sys.executable,
        str(REPO / "bench" / "scale.py"),
        *("--sizes", str(SIZE), "--settle", "2", "--results-name", "scale-smoke"),
        *("--kubeconfig", cluster.kubeconfig, "--pki-dir", str(Path(cluster.runtime_dir) / "pki")),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "## Summary" in done.stdout

    (size,) = json.loads(results.read_text())["sizes"]
    assert size["instances"] == SIZE
    assert 0 < size["seconds_until_all_ready"] < 120
    assert size["instances_per_second"] > 0
    for service in ("controller", "webhook"):
        assert 50 < size[f"{service}_peak_rss_mib"] < 1024
        assert 0 < size[f"{service}_rss_converged_mib"] <= size[f"{service}_peak_rss_mib"]
    assert size["webhook_cache_objects"]["instances"] == SIZE
    assert size["controller_requests_per_instance"]["APPLY"] >= size["children_per_instance"]
    assert size["controller_cpu_seconds_per_instance"] > 0
    assert size["rss_by_tenth_ready"][-1]["ready"] == SIZE

    restart = size["restart"]
    assert restart["instances_verified"] == SIZE
    assert restart["seconds_until_all_verified"] > 0
    assert restart["new_instance_seconds_until_ready"] is not None
    assert restart["instance_objects_changed"] == 0, restart["changed_examples"]
    # the counted writes are the new instance's own: no more than creating one instance costs
    instance_writes = sum(restart["writes_to_instances_and_children"].values())
    assert 0 < instance_writes <= size["controller_writes_per_instance"] * 2
