"""Build and run a pinned ``helm`` CLI (v3.22.0) for the chart tests.

``tests/integration/test_chart.py`` calls ``helm_binary()`` for the path of a ``helm`` built from the
wrapper module ``tools/kbin/helm`` (go.mod and go.sum only, a ``tool helm.sh/helm/v3/cmd/helm``
line), and ``run_helm(...)`` to run it. Building and caching is ``tools/gotool.py``'s
(content-keyed, built once under a lock, read-only against the committed go.sum). The link flags
set what helm's own Makefile sets: its version, and the Kubernetes version ``helm template`` and
``helm lint`` assume (from the client-go the module pins), so ``kubeVersion`` constraints are
checked against a current cluster.
``python tools/helmcli.py`` prints the path; ``python tools/helmcli.py ARGS...`` runs helm with
ARGS. Standard library only.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from gotool import BuildError, GoTool, ToolError

__all__ = ["HELM", "HELM_PACKAGE", "ToolError", "helm_binary", "helm_version", "main", "run_helm"]

HELM_MODULE = "helm.sh/helm/v3"
HELM_PACKAGE = f"{HELM_MODULE}/cmd/helm"
WRAPPER_DIR = Path(__file__).resolve().parent / "kbin" / "helm"


def _required_version(module: str) -> str:
    """The version of ``module`` in the wrapper's go.mod (``v3.22.0``)."""
    text = (WRAPPER_DIR / "go.mod").read_text()
    match = re.search(rf"^\s*{re.escape(module)} (v\S+)", text, re.MULTILINE)
    if match is None:
        raise BuildError(f"{module} is not required by {WRAPPER_DIR / 'go.mod'}")
    return match.group(1)


def helm_version() -> str:
    """The helm version the wrapper pins."""
    return _required_version(HELM_MODULE)


def _ldflags() -> str:
    """What helm's Makefile links in: the version, and the Kubernetes version of its client-go."""
    kube = re.match(r"v0\.(\d+)\.", _required_version("k8s.io/client-go"))
    if kube is None:
        raise BuildError("cannot read the k8s.io/client-go version from the wrapper's go.mod")
    flags = ["-s", "-w", f"-X {HELM_MODULE}/internal/version.version={helm_version()}"]
    for package in ("pkg/lint/rules", "pkg/chartutil"):
        flags += [
            f"-X {HELM_MODULE}/{package}.k8sVersionMajor=1",
            f"-X {HELM_MODULE}/{package}.k8sVersionMinor={kube[1]}",
        ]
    return " ".join(flags)


def _isolated_env(home: Path) -> dict[str, str]:
    """helm's config, cache and data directories under ``home``: no user repositories or plugins leak in."""
    return {
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_DATA_HOME": str(home / "data"),
    }


def _tool() -> GoTool:
    cache_home = Path(os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")) / "yoke-atc-py" / "helm"
    return GoTool(
        name="helm",
        package=HELM_PACKAGE,
        version=helm_version(),
        wrapper_dir=WRAPPER_DIR,
        build_flags=("-trimpath", "-ldflags", _ldflags()),
        run_env=_isolated_env(cache_home / "home"),
    )


HELM = _tool()


def helm_binary() -> Path:
    """Path of the helm CLI binary, building it on first use."""
    return HELM.binary()


def run_helm(
    args: Sequence[str],
    *,
    kubeconfig: Path | str | None = None,
    check: bool = True,
    timeout: float = 120.0,
) -> subprocess.CompletedProcess[str]:
    """Run ``helm ARGS [--kubeconfig K]``; raise ToolError on a non-zero exit if ``check``."""
    flags = ["--kubeconfig", str(kubeconfig)] if kubeconfig is not None else []
    return HELM.run([*args, *flags], check=check, timeout=timeout)


def main(argv: list[str] | None = None) -> int:
    return HELM.main(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
