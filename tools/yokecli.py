"""Build and run the real ``yoke`` CLI (v0.20.12) for the interop tests.

The interop tests (``tests/integration/test_yoke_cli_interop.py``,
``tests/e2e/test_controller_ha_and_interop.py``) call ``yoke_binary()`` for the path of a ``yoke``
built from the wrapper module ``tools/kbin/yoke`` (go.mod and go.sum only, a ``tool
github.com/yokecd/yoke/cmd/yoke`` line) and ``run_yoke(...)`` to run it against a kubeconfig.
Building and caching is ``tools/gotool.py``'s (content-keyed, built once under a lock). yoke
v0.20.12 and github.com/davidmdm/x are missing from sum.golang.org, so they skip the checksum
database (the committed go.sum pins them). ``python tools/yokecli.py`` prints the path;
``python tools/yokecli.py ARGS...`` runs yoke with ARGS. Standard library only.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from gotool import GoTool, ToolError

__all__ = ["YOKE", "YOKE_PACKAGE", "YOKE_VERSION", "ToolError", "main", "run_yoke", "strip_ansi", "yoke_binary"]

YOKE_VERSION = "v0.20.12"
YOKE_PACKAGE = "github.com/yokecd/yoke/cmd/yoke"
YOKE = GoTool(
    name="yoke",
    package=YOKE_PACKAGE,
    version=YOKE_VERSION,
    wrapper_dir=Path(__file__).resolve().parent / "kbin" / "yoke",
    no_sumdb_modules=("github.com/yokecd", "github.com/davidmdm"),
    run_env={"NO_COLOR": "1"},
)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def yoke_binary() -> Path:
    """Path of the yoke CLI binary, building it on first use."""
    return YOKE.binary()


def strip_ansi(text: str) -> str:
    """``text`` without terminal colour codes (yoke colours diffs and help even when not on a tty)."""
    return _ANSI.sub("", text)


def run_yoke(
    args: Sequence[str],
    *,
    kubeconfig: Path | str | None = None,
    stdin: str | None = None,
    check: bool = True,
    timeout: float = 120.0,
) -> subprocess.CompletedProcess[str]:
    """Run ``yoke <command> [--kubeconfig K] <args...>``; raise ToolError on a non-zero exit if ``check``.

    ``args[0]`` is the sub-command; ``--kubeconfig`` goes right after it (yoke's sub-commands parse
    their own flags, and Go's flag package stops at the first positional argument).
    """
    command, *rest = args
    flags = ["--kubeconfig", str(kubeconfig)] if kubeconfig is not None else []
    return YOKE.run([command, *flags, *rest], stdin=stdin or "", check=check, timeout=timeout)


def main(argv: list[str] | None = None) -> int:
    return YOKE.main(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
