"""Smoke run of ``bench/targets.py`` with 2 instances and 2 drift repairs per side.

The benchmark is run by hand with its defaults (docs/benchmarks.md, "Deploying to another
cluster"); this test keeps it working: it runs the script as a subprocess (it starts its own two
control planes, about 10 s, and the whole run takes about 40 s) and checks that every table row is
printed, that every instance became Ready and every edit was put back, and that the audit logs saw
the controller write to the workload cluster only for the targeted creates.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from devcluster.cluster import die_with_parent

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / ".local" / "bench" / "targets-smoke.json"
N = 2
ROW_LABELS = (
    "create → Ready, this cluster",
    "create → Ready, workload cluster",
    "ratio target / local",
    "drift repaired, this cluster (webhook signal)",
    "drift repaired, workload cluster (controller's watch there)",
    "ratio target / local",
    "controller → management cluster",
    "controller → workload cluster",
    "webhook → management cluster",
    "webhook → workload cluster (its dry run)",
    "total",
)


def test_targets_bench_converges_on_both_clusters() -> None:
    RESULTS.unlink(missing_ok=True)
    command = [sys.executable, str(REPO / "bench" / "targets.py"), "--instances", str(N), "--repairs", str(N)]
    done = subprocess.run(
        [*command, "--results-name", RESULTS.stem],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        preexec_fn=die_with_parent,
    )
    output = f"{done.stdout}\n{done.stderr[-6000:]}"
    assert done.returncode == 0, output
    assert "both control planes (management and workload)" in done.stdout
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and not line.startswith("| measure")]
    labels = [line.split(" | ")[0].removeprefix("| ") for line in rows if not line.startswith("| requests per")]
    assert labels == list(ROW_LABELS), output

    result = json.loads(RESULTS.read_text())
    creates, repairs = result["creates"], result["repairs"]
    assert creates["ready"] == {"local": N, "target": N}
    assert repairs["restored"] == {"local": N, "target": N}
    for side in ("local", "target"):
        assert 0 < creates["seconds"][side]["max"] < 60
        assert 0 < repairs["seconds"][side]["max"] < 60
    requests = creates["requests_per_create"]
    assert requests["local"]["controller_to_workload"] == 0
    assert requests["target"]["controller_to_workload"] >= 1  # at least the ConfigMap's apply
    assert requests["local"]["webhook_to_workload"] == 0
    assert requests["target"]["webhook_to_workload"] >= 1  # at least the dry-run apply
    assert requests["local"]["controller_to_management"] >= 1
