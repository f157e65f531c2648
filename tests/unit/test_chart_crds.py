"""The Helm chart's copy of the ``yoke.cd`` CRDs equals ``atc.k8s.crds.yoke_crds()``, so the two cannot drift.

``charts/atc/crds/yoke.cd.yaml`` is what ``helm install`` creates before anything else; the
controller installs ``yoke_crds()`` itself at start-up. Run by pytest (unit suite, no cluster).
``python tests/unit/test_chart_crds.py --write`` regenerates the chart file from ``yoke_crds()``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from atc.k8s.crds import yoke_crds

CHART_CRDS = Path(__file__).resolve().parents[2] / "charts" / "atc" / "crds" / "yoke.cd.yaml"
HEADER = """# The yoke.cd CRDs (Flight, ClusterFlight, Airway), generated from atc.k8s.crds.yoke_crds().
# Do not edit by hand: tests/unit/test_chart_crds.py fails when this file and yoke_crds() differ.
# Regenerate with:  .venv/bin/python tests/unit/test_chart_crds.py --write
"""


def render() -> str:
    """The chart file's expected text: a header, then each CRD as a YAML document, in yoke's order."""
    documents = [yaml.safe_dump(crd, sort_keys=False, width=120) for crd in yoke_crds()]
    return HEADER + "---\n" + "---\n".join(documents)


def chart_crds() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(CHART_CRDS.read_text()) if doc]


def test_the_chart_crds_equal_yoke_crds() -> None:
    assert chart_crds() == yoke_crds()


def test_the_chart_crds_file_is_the_generated_text() -> None:
    # byte-for-byte, so a hand edit that keeps the data (comments, reordering) is caught too
    assert CHART_CRDS.read_text() == render(), f"regenerate with: python {Path(__file__).name} --write"


def test_the_chart_carries_the_three_yoke_crds() -> None:
    assert [crd["metadata"]["name"] for crd in chart_crds()] == [
        "flights.yoke.cd",
        "clusterflights.yoke.cd",
        "airways.yoke.cd",
    ]


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        CHART_CRDS.write_text(render())
        print(f"wrote {CHART_CRDS}")
    else:
        print(render(), end="")
