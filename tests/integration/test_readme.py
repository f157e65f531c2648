"""Every shell block of README.md runs, in the README's order, as a user would type it.

Which blocks run: those fenced ```` ```sh ````, ```` ```bash ```` or ```` ```console ````. Other
blocks (``mermaid``, ``yaml``, ...) are not commands. In a ``console`` block only the lines that
start with ``$ `` are commands; the rest is output. Blank lines and ``#`` comments are skipped, and a
line ending in ``\\`` continues on the next one.

How a block runs: as one ``bash`` script with ``set -euo pipefail``, from the repository root, so
an ``export`` holds for the rest of its block and any failing command fails the block and the
test. Blocks share nothing but the files and processes they leave behind. The test also checks
what some commands print (``EXPECTED_OUTPUT``), because ``kubectl get`` succeeds on an empty list.

Commands that cannot run as written:

- ``make test`` would run this test again. It runs as ``make -n test``, and the commands make
  would run must reach ``.venv/bin/pytest``. ``make conformance`` (yoke's suite, which ``make test``
  runs too) runs as ``make -n conformance`` the same way.
- ``make demo`` runs for real: it starts (or reuses) the local control plane in ``.local/cluster``
  with ``make cluster-up`` and the demo services in ``.local/demo``. Blocks after it, such as the
  ``kubectl`` commands against ``.local/kubeconfig``, see that cluster; ``make cluster-up`` links
  kubectl at ``.local/bin/kubectl``.
- Commands that stop things (``make demo-down``, ``make cluster-down``) are held back and run last,
  in the README's order, in a ``finally``: the demo and the cluster are stopped even when a block
  fails or the run is interrupted, and the test fails if one of them fails. The README must have
  both, so cleanup is documented and tested.

Because it stops the cluster in ``.local/cluster``, the test is skipped when a cluster is already
running there (from ``make cluster-up`` in another shell): it never stops a cluster it did not
start. It needs the binaries ``make test`` builds first; a cold build takes about 8 minutes.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from devcluster.cluster import running_state

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
SHELL_FENCES = ("sh", "bash", "console")
BLOCK_TIMEOUT_SECONDS = 1200  # a cold binary build behind `make demo` takes about 8 minutes on 2 cores
TEARDOWN = re.compile(r"^make\s+(demo-down|cluster-down)\b")
REWRITES = {
    # `make test` runs this suite: dry-run it and check that it ends in pytest.
    re.compile(r"^make\s+test\b.*$"): "make -n test | grep -F '.venv/bin/pytest'",
    # `make conformance` is part of `make test` (it runs on its own control plane there): dry-run it.
    re.compile(r"^make\s+conformance\b.*$"): "make -n conformance | grep -F '.venv/bin/pytest tests/conformance'",
}
# A block whose commands contain the key must print the value.
EXPECTED_OUTPUT = {
    "make demo": "pod template hash:",
    "kubectl describe backend c4ts": "RevisionApplied",
    "kubectl get secret,deployment": "deployment.apps/c4ts",
    "atc-controller --help": "--health-port",
}
REQUIRED_TEARDOWN = ("make demo-down", "make cluster-down")


@dataclass
class Block:
    line: int  # where the fence opens, 1-based
    commands: list[str] = field(default_factory=list)


def shell_blocks(text: str) -> list[Block]:
    """The commands of each shell block, in order."""
    blocks: list[Block] = []
    current: Block | None = None
    console = False
    pending = ""
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if current is None:
            match = re.fullmatch(r"```(\w+)", stripped)
            if match and match.group(1) in SHELL_FENCES:
                current, console = Block(number), match.group(1) == "console"
            continue
        if stripped == "```":
            assert not pending, f"README.md:{number}: a command ends in a line continuation"
            blocks.append(current)
            current = None
            continue
        if console and not pending:
            if not stripped.startswith("$ "):
                continue
            stripped = stripped[2:]
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1].rstrip() + " "
            continue
        current.commands.append(pending + stripped)
        pending = ""
    if current is not None:
        pytest.fail(f"README.md:{current.line}: unterminated code block")
    return blocks


def rewrite(command: str) -> str:
    for pattern, replacement in REWRITES.items():
        if pattern.match(command):
            return replacement
    return command


def run_script(commands: list[str], where: str) -> str:
    """Run ``commands`` as one bash script from the repository root; fail the test when it fails."""
    env = {key: value for key, value in os.environ.items() if key not in ("KUBECONFIG", "DEVCLUSTER_REUSE")}
    script = "set -euo pipefail\n" + "\n".join(commands) + "\n"
    try:
        done = subprocess.run(
            ["bash", "-c", script],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=BLOCK_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        output = exc.stdout if isinstance(exc.stdout, str) else (exc.stdout or b"").decode(errors="replace")
        pytest.fail(f"{where} timed out after {BLOCK_TIMEOUT_SECONDS} s:\n{script}\n--- output ---\n{output[-6000:]}")
    assert done.returncode == 0, (
        f"{where} failed with exit code {done.returncode}:\n{script}\n--- output ---\n{done.stdout[-6000:]}"
    )
    return done.stdout


def test_shell_blocks_are_found() -> None:
    """The parser itself, on a small sample (no cluster needed, but it lives with the test it serves)."""
    sample = (
        "text\n```sh\nmake demo   # comment\n# only a comment\n\nexport A=1 \\\n  B=2\n```\n"
        "```yaml\nkind: Pod\n```\n```console\n$ make test\nsome output\n```\n"
    )
    blocks = shell_blocks(sample)
    assert [b.commands for b in blocks] == [["make demo   # comment", "export A=1 B=2"], ["make test"]]
    assert rewrite("make test    # lint") == REWRITES[next(iter(REWRITES))]
    assert TEARDOWN.match("make cluster-down    # stop it")


def test_every_readme_command_runs() -> None:
    if running_state(REPO / ".local" / "cluster") is not None:
        pytest.skip("a cluster from `make cluster-up` runs in .local/cluster; this test starts and stops its own")
    blocks = shell_blocks(README.read_text())
    assert blocks, "README.md has no shell blocks"
    teardown = [c for b in blocks for c in b.commands if TEARDOWN.match(c)]
    for required in REQUIRED_TEARDOWN:
        assert any(c.startswith(required) for c in teardown), f"README.md must show `{required}`"
    seen: set[str] = set()
    try:
        for block in blocks:
            commands = [rewrite(c) for c in block.commands if not TEARDOWN.match(c)]
            if not commands:
                continue
            output = run_script(commands, f"README.md:{block.line}")
            for needle, expected in EXPECTED_OUTPUT.items():
                if any(needle in c for c in commands):
                    seen.add(needle)
                    assert expected in output, f"README.md:{block.line}: `{needle}` did not print {expected!r}"
    finally:
        failures = []
        for command in teardown:
            done = subprocess.run(
                ["bash", "-c", command], cwd=REPO, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
            )
            if done.returncode != 0:
                failures.append(f"{command}: exit {done.returncode}\n{done.stdout}{done.stderr}")
        if failures:  # also reported when a block failed: Python chains it to that error
            pytest.fail("README cleanup failed:\n" + "\n".join(failures))
    assert seen == set(EXPECTED_OUTPUT), f"README.md no longer shows {sorted(set(EXPECTED_OUTPUT) - seen)}"
