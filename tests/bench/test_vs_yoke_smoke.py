"""Smoke run of ``bench/vs_yoke.py``: yoke's ATC and ours, 3 instances, 1 round, short windows.

Runs the benchmark with ``--quick`` (results in ``.local/bench/vs_yoke_smoke.json``) and checks
that every row of its table is there and that both systems reached Ready and were seen by the audit
log. About 95 s with warm caches; the first build of yoke's ATC with a cold Go build cache adds
about 7 minutes on 2 busy cores (docs/benchmarks.md). Skips without a Go toolchain.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from devcluster.cluster import die_with_parent

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / ".local" / "bench" / "vs_yoke_smoke.json"
ROW_LABELS = (
    "time for N instances to all Ready (s)",
    "instances/s",
    "API requests per instance (whole system)",
    "… of which dry-run writes",
    "CPU per instance (ms)",
    "peak RSS, all processes (MiB)",
    "process start → port answers (s)",
    "process start → ready (s)",
    "Airway created → Ready, cold compile (s)",
    "restart, nothing changed: writes per instance",
    "restart, nothing changed: seconds until quiet",
    "idle API requests per minute",
)


def test_vs_yoke_quick() -> None:
    if shutil.which("go") is None:
        pytest.skip("bench/vs_yoke.py builds yoke's ATC with Go: no Go toolchain")
    RESULTS.unlink(missing_ok=True)
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "vs_yoke.py"), "--quick", "--name", RESULTS.stem],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1500,  # a cold Go build of yoke's ATC is most of it
        check=False,
        preexec_fn=die_with_parent,
    )
    output = f"{done.stdout}\n{done.stderr[-6000:]}"
    assert done.returncode == 0, output
    table = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert [line.split(" | ")[0].removeprefix("| ") for line in table[1:]] == list(ROW_LABELS), output

    result = json.loads(RESULTS.read_text())
    assert result["instances"] == 3
    for name in ("yoke", "ours"):
        (run,) = result["runs"][name]
        assert run["seconds_until_all_ready"] > 0, (name, run)
        assert run["instances_per_second"] > 0, (name, run)
        assert run["requests_per_instance"] > 1, (name, run)  # each instance is read and written
        assert run["requests_during_instances"]["writes"] > 0, (name, run)
        assert run["cpu_ms_per_instance"] > 0, (name, run)
        assert 10 < run["peak_rss_mib"] < 4096, (name, run)
        assert 0 < run["start_to_port_answer_s"] <= run["start_to_ready_s"], (name, run)
        assert run["airway_create_to_ready_cold_s"] > 0, (name, run)
        assert run["restart_writes_per_instance"] >= 0, (name, run)
        assert run["restart_to_quiet_s"] >= 0, (name, run)
        assert run["idle_requests_per_minute"] >= 0, (name, run)
