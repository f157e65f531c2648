"""docker-compose.yml as a real Compose implementation reads it: ``docker compose config`` (the Compose
v2 plugin) or Debian's ``docker-compose config`` (1.29), whichever is installed.

What it checks that the pure unit test (``tests/unit/test_compose.py``) cannot: the file is valid for a
real implementation, and after its normalisation both ATC services run the one image with their own
command. Running the stack needs the k3s image, which no registry here serves (docs/deploy.md).
Skips with one line when neither implementation is installed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

COMPOSE_FILE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


def compose_command() -> list[str] | None:
    if shutil.which("docker"):
        plugin = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
        if plugin.returncode == 0:
            return ["docker", "compose"]
    standalone = shutil.which("docker-compose")
    return [standalone] if standalone else None


def test_a_compose_implementation_accepts_the_file_and_both_services_run_the_one_image() -> None:
    command = compose_command()
    if command is None:
        pytest.skip("no Compose implementation installed (docker compose plugin or Debian's docker-compose)")
    done = subprocess.run(
        [*command, "-f", str(COMPOSE_FILE), "config"], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    assert services["webhook"]["image"] == services["controller"]["image"] == "atc:dev"
    assert services["webhook"]["command"] == ["atc-webhook"]
    assert services["controller"]["command"] == ["atc-controller"]
    assert "build" in services["webhook"], "the image is built from the repository's Dockerfile"
    assert "target" not in services["webhook"]["build"], "one image: no per-service Dockerfile target"
