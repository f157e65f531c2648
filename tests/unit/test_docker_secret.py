"""The docker-config Secret watcher without a cluster: data checks, the file it writes, its events, its logs.

The API is a fake with only ``get``; the Secret's events are handed to the watcher's handler as its
``Reflector`` would. The same watcher against the local control plane (and the chart's Role) is in
tests/integration/test_docker_config_secret.py.
"""

from __future__ import annotations

import base64
import json
import logging
import stat
from pathlib import Path
from typing import Any, cast

import pytest

from atc.k8s.client import KubeClient, KubeError
from atc.service.docker_secret import (
    MAX_DOCKER_CONFIG_BYTES,
    NO_DATA,
    DockerConfigDataError,
    DockerConfigSecretError,
    DockerConfigWatcher,
    docker_config_bytes,
    docker_config_file,
    remove_docker_config,
    write_docker_config,
)
from atc.service.settings import CommonSettings
from atc.wasm.dockerconfig import registry_credentials

MARKER = "s3cr3t-marker"


def config(user: str = "robot", password: str = MARKER) -> bytes:
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    return json.dumps({"auths": {"registry.example.com": {"auth": auth}}}).encode()


def secret(content: bytes | None, name: str = "regcred") -> dict[str, Any]:
    data = {} if content is None else {".dockerconfigjson": base64.b64encode(content).decode()}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "atc"}, "data": data}


class FakeKube:
    """``get`` answers with one Secret, or raises the error it was given."""

    def __init__(self, answer: dict[str, Any] | KubeError) -> None:
        self.answer = answer
        self.paths: list[str] = []

    async def get(self, path: str, **_: Any) -> dict[str, Any]:
        self.paths.append(path)
        if isinstance(self.answer, KubeError):
            raise self.answer
        return self.answer


def watcher(tmp_path: Path, answer: dict[str, Any] | KubeError) -> tuple[DockerConfigWatcher, FakeKube, Path]:
    kube = FakeKube(answer)
    path = tmp_path / "home" / ".docker" / "config.json"
    return DockerConfigWatcher(cast(KubeClient, kube), "atc", "regcred", path), kube, path


def assert_never_logged(caplog: pytest.LogCaptureFixture, text: str) -> None:
    for record in caplog.records:
        assert text not in str(record.__dict__), record


# ----------------------------------------------------------------------------------------------- data
def test_the_config_comes_from_the_dockerconfigjson_key() -> None:
    assert docker_config_bytes(secret(config())) == config()


@pytest.mark.parametrize("content", [None, b""])
def test_missing_or_empty_data_is_yokes_error(content: bytes | None) -> None:
    with pytest.raises(DockerConfigDataError) as error:
        docker_config_bytes(secret(content))
    assert str(error.value) == "docker config secret found but no data found under expected key .dockerconfigjson"


def test_oversized_and_undecodable_data_are_refused_without_echoing_them() -> None:
    huge = {"data": {".dockerconfigjson": base64.b64encode(b"x" * (MAX_DOCKER_CONFIG_BYTES + 1)).decode()}}
    with pytest.raises(DockerConfigDataError, match="larger than 1048576 bytes"):
        docker_config_bytes(huge)
    with pytest.raises(DockerConfigDataError, match="not valid base64") as error:
        docker_config_bytes({"data": {".dockerconfigjson": MARKER + "!"}})
    assert MARKER not in str(error.value)
    exactly = {"data": {".dockerconfigjson": base64.b64encode(b"x" * MAX_DOCKER_CONFIG_BYTES).decode()}}
    assert len(docker_config_bytes(exactly)) == MAX_DOCKER_CONFIG_BYTES


# ----------------------------------------------------------------------------------------------- the file
def test_write_creates_the_directory_and_a_0644_file(tmp_path: Path) -> None:
    path = tmp_path / "home" / ".docker" / "config.json"
    assert write_docker_config(path, config()) is True
    assert path.read_bytes() == config()
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert path.parent.is_dir()
    assert [p.name for p in path.parent.iterdir()] == ["config.json"]  # no temporary file left


def test_write_skips_identical_content_and_replaces_changed_content(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    write_docker_config(path, config())
    before = path.stat().st_ino
    assert write_docker_config(path, config()) is False
    assert path.stat().st_ino == before
    assert write_docker_config(path, config(password="rotated")) is True
    assert path.stat().st_ino != before  # renamed into place: readers see old or new, never half
    assert path.read_bytes() == config(password="rotated")


def test_remove(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    assert remove_docker_config(path) is False
    path.write_bytes(b"{}")
    assert remove_docker_config(path) is True
    assert not path.exists()


def test_a_rewritten_file_is_what_the_next_pull_authenticates_with(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    write_docker_config(path, config(password="first"))
    assert registry_credentials("registry.example.com", path).password == "first"  # type: ignore[union-attr]
    write_docker_config(path, config(password="second"))
    assert registry_credentials("registry.example.com", path).password == "second"  # type: ignore[union-attr]
    remove_docker_config(path)
    assert registry_credentials("registry.example.com", path) is None


def test_the_file_defaults_to_dockers_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert docker_config_file("") == tmp_path / ".docker" / "config.json"
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "d"))
    assert docker_config_file("") == tmp_path / "d" / "config.json"
    assert docker_config_file("/x/c.json") == Path("/x/c.json")


def test_the_watcher_comes_from_the_settings(tmp_path: Path) -> None:
    kube = cast(KubeClient, FakeKube(secret(config())))
    assert DockerConfigWatcher.from_settings(kube, CommonSettings()) is None
    settings = CommonSettings(
        docker_config_secret_name="regcred", docker_config_file=str(tmp_path / "c.json"), svc_namespace="ops"
    )
    made = DockerConfigWatcher.from_settings(kube, settings)
    assert made is not None
    assert (made.namespace, made.name, made.path) == ("ops", "regcred", tmp_path / "c.json")


# ----------------------------------------------------------------------------------------------- start
async def test_start_writes_the_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    docker, kube, path = watcher(tmp_path, secret(config()))
    await docker.start()
    assert kube.paths == ["/api/v1/namespaces/atc/secrets/regcred"]
    assert path.read_bytes() == config()
    assert_never_logged(caplog, MARKER)


async def test_a_missing_secret_is_a_warning_as_in_yoke(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    docker, kube, path = watcher(tmp_path, KubeError(404, 'secrets "regcred" not found', "NotFound"))
    await docker.start()  # no error: run() writes the file once the Secret is created
    assert kube.paths == ["/api/v1/namespaces/atc/secrets/regcred"]
    assert not path.exists()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [(r.name, r.getMessage()) for r in warnings] == [
        ("atc.service.docker_secret", "docker config secret not found, waiting for it")
    ]
    assert (warnings[0].secret, warnings[0].path) == ("atc/regcred", str(path))  # type: ignore[attr-defined]
    await docker._on_event("ADDED", secret(config()), None)  # what run()'s Reflector hands over when it appears
    assert path.read_bytes() == config()
    assert_never_logged(caplog, MARKER)


async def test_a_secret_that_cannot_be_read_is_fatal_with_yokes_message(tmp_path: Path) -> None:
    forbidden = (
        'secrets "regcred" is forbidden: User "system:serviceaccount:atc:atc-webhook" cannot get resource '
        '"secrets" in API group "" in the namespace "atc"'
    )
    docker, _, path = watcher(tmp_path, KubeError(403, forbidden, "Forbidden"))
    with pytest.raises(DockerConfigSecretError) as error:
        await docker.start()
    assert str(error.value) == (
        f"error watching docker config secret: failed to lookup docker config secret: {forbidden}"
    )
    assert not path.exists()


async def test_a_secret_without_data_is_fatal(tmp_path: Path) -> None:
    docker, _, _ = watcher(tmp_path, secret(None))
    with pytest.raises(DockerConfigSecretError) as error:
        await docker.start()
    assert str(error.value) == f"error watching docker config secret: {NO_DATA}"


async def test_an_unwritable_file_is_fatal(tmp_path: Path) -> None:
    docker, _, path = watcher(tmp_path, secret(config()))
    path.parent.parent.mkdir(parents=True)
    path.parent.write_text("a file where the directory should be")
    with pytest.raises(DockerConfigSecretError, match="error watching docker config secret: failed to write docker"):
        await docker.start()


# ----------------------------------------------------------------------------------------------- events
async def test_events_update_keep_and_remove_the_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    docker, _, path = watcher(tmp_path, secret(config()))
    await docker.start()
    handle = docker._on_event  # what its Reflector calls for each event
    await handle("ADDED", secret(config()), None)  # the first list after start: same content
    assert path.read_bytes() == config()
    await handle("MODIFIED", secret(config(password=MARKER + "2")), None)
    assert path.read_bytes() == config(password=MARKER + "2")
    await handle("MODIFIED", secret(b""), None)  # emptied: logged, previous file kept
    assert path.read_bytes() == config(password=MARKER + "2")
    assert any(r.levelno == logging.ERROR and "keeping the previous file" in r.getMessage() for r in caplog.records)
    await handle("DELETED", secret(config()), None)
    assert not path.exists()
    await handle("DELETED", secret(config()), None)  # already gone: nothing to do, no error
    await handle("ADDED", secret(config(password="back")), None)
    assert path.read_bytes() == config(password="back")
    assert_never_logged(caplog, MARKER)
