"""Registry credentials from a Secret: yoke's ``DOCKER_CONFIG_SECRET_NAME`` watcher.

Both services' start-up code (``atc_controller.app``, ``atc_webhook.server``) runs inside
``docker_config_watch(kube, settings)``, which does nothing unless ``DOCKER_CONFIG_SECRET_NAME`` is
set. ``DockerConfigWatcher.start()`` reads the Secret in ``SVC_NAMESPACE`` and writes its
``.dockerconfigjson`` to the docker config file (``DOCKER_CONFIG_FILE``, default
``$DOCKER_CONFIG/config.json`` else ``$HOME/.docker/config.json``). As in yoke, a Secret that does
not exist yet is only a warning (no file until it is created); any other failure there is fatal
(``DockerConfigSecretError``, yoke's wording): a failed read (403 ...), no usable data, an unwritable
file. ``run()`` then follows that one Secret with a ``Reflector`` (field selector
``metadata.name=<name>``): an added or changed Secret rewrites the file when its content changed (an
empty or unusable one is logged and the previous file kept), a deleted one removes the file. The
file is replaced atomically, and ``atc.wasm.dockerconfig`` re-reads it at every registry
authentication, so a running service uses new credentials at once. The content is capped at
``MAX_DOCKER_CONFIG_BYTES`` and never logged. See docs/configuration.md and docs/chart.md.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from atc.k8s.client import KubeClient, KubeError
from atc.k8s.reflector import EventType, Reflector
from atc.service.settings import CommonSettings
from atc.wasm.dockerconfig import default_docker_config_path

log = logging.getLogger("atc.service.docker_secret")

DOCKER_CONFIG_KEY = ".dockerconfigjson"
MAX_DOCKER_CONFIG_BYTES = 1 << 20
FATAL_PREFIX = "error watching docker config secret: "
NO_DATA = f"docker config secret found but no data found under expected key {DOCKER_CONFIG_KEY}"


class DockerConfigSecretError(Exception):
    """The watcher cannot start (the Secret cannot be read, holds no config, or the file cannot be written)."""


class DockerConfigDataError(ValueError):
    """The Secret holds no usable docker config under ``.dockerconfigjson``."""


def docker_config_file(configured: str) -> Path:
    """The file OCI pulls read and the watcher writes: ``DOCKER_CONFIG_FILE``, else docker's default."""
    return Path(configured) if configured else default_docker_config_path()


def docker_config_bytes(secret: dict[str, Any]) -> bytes:
    """The decoded ``.dockerconfigjson`` of a Secret; ``DockerConfigDataError`` when empty, bad or too large."""
    encoded = (secret.get("data") or {}).get(DOCKER_CONFIG_KEY)
    if not encoded:
        raise DockerConfigDataError(NO_DATA)
    if not isinstance(encoded, str):
        raise DockerConfigDataError(f"docker config under key {DOCKER_CONFIG_KEY} is not a base64 string")
    if len(encoded) > (MAX_DOCKER_CONFIG_BYTES + 2) // 3 * 4:
        raise DockerConfigDataError(_too_large())
    try:
        content = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise DockerConfigDataError(f"docker config under key {DOCKER_CONFIG_KEY} is not valid base64") from None
    if not content:
        raise DockerConfigDataError(NO_DATA)
    if len(content) > MAX_DOCKER_CONFIG_BYTES:
        raise DockerConfigDataError(_too_large())
    return content


def _too_large() -> str:
    return f"docker config under key {DOCKER_CONFIG_KEY} is larger than {MAX_DOCKER_CONFIG_BYTES} bytes"


def write_docker_config(path: Path, content: bytes) -> bool:
    """Replace ``path`` (mode 0644, parent created 0755) with ``content`` unless it holds exactly that.

    Returns whether the file was written. The new file is renamed into place, so a reader sees the
    old content or the new, never a part.
    """
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        if path.read_bytes() == content:
            return False
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(content)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return True


def remove_docker_config(path: Path) -> bool:
    """Delete the file; returns whether there was one."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


class DockerConfigWatcher:
    """Keeps ``path`` equal to the ``.dockerconfigjson`` of Secret ``namespace/name``."""

    def __init__(self, kube: KubeClient, namespace: str, name: str, path: Path) -> None:
        self.namespace = namespace
        self.name = name
        self.path = path
        self._kube = kube
        self.reflector = Reflector(
            kube,
            f"/api/v1/namespaces/{namespace}/secrets",
            name="docker-config-secret",
            field_selector=f"metadata.name={name}",
            handler=self._on_event,
        )

    @classmethod
    def from_settings(cls, kube: KubeClient, settings: CommonSettings) -> DockerConfigWatcher | None:
        """The watcher ``DOCKER_CONFIG_SECRET_NAME`` asks for (in ``SVC_NAMESPACE``), or None when unset."""
        if not settings.docker_config_secret_name:
            return None
        path = docker_config_file(settings.docker_config_file)
        return cls(kube, settings.svc_namespace, settings.docker_config_secret_name, path)

    @property
    def _secret_path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/secrets/{self.name}"

    async def start(self) -> None:
        """Read the Secret and write the file; raises ``DockerConfigSecretError`` on any failure but one.

        A Secret that does not exist is yoke's warning, not an error: nothing is written, and ``run()``
        writes the file once the Secret is created.
        """
        try:
            secret = await self._kube.get(self._secret_path)
        except KubeError as exc:
            if exc.not_found:
                log.warning("docker config secret not found, waiting for it", extra=self._where())
                return
            raise DockerConfigSecretError(f"{FATAL_PREFIX}failed to lookup docker config secret: {exc}") from None
        try:
            content = docker_config_bytes(secret)
            await asyncio.to_thread(write_docker_config, self.path, content)
        except DockerConfigDataError as exc:
            raise DockerConfigSecretError(f"{FATAL_PREFIX}{exc}") from None
        except OSError as exc:
            raise DockerConfigSecretError(f"{FATAL_PREFIX}failed to write docker config: {exc}") from None
        log.info("wrote docker credentials from secret", extra=self._where())

    async def run(self) -> None:
        """Follow the Secret until ``stop`` or cancellation (list, then watch; retried with backoff)."""
        log.info("watching docker config secret", extra=self._where())
        following = asyncio.create_task(self.reflector.run(), name="docker-config-secret")
        try:
            await self.reflector.synced.wait()
            if self.reflector.get(self.namespace, self.name) is None:  # not created yet, or deleted since start()
                await self._removed()
            await following
        finally:
            following.cancel()
            await asyncio.gather(following, return_exceptions=True)

    def stop(self) -> None:
        self.reflector.stop()

    def _where(self) -> dict[str, str]:
        return {"secret": f"{self.namespace}/{self.name}", "path": str(self.path)}

    async def _on_event(self, event_type: EventType, secret: dict[str, Any], old: dict[str, Any] | None) -> None:
        if event_type == "DELETED":
            await self._removed()
        elif event_type in ("ADDED", "MODIFIED"):
            await self._changed(secret)

    async def _changed(self, secret: dict[str, Any]) -> None:
        try:
            content = docker_config_bytes(secret)
        except DockerConfigDataError as exc:
            log.error(
                "docker config secret unusable, keeping the previous file", extra={**self._where(), "error": str(exc)}
            )
            return
        try:
            written = await asyncio.to_thread(write_docker_config, self.path, content)
        except OSError as exc:
            log.error("failed to write docker config", extra={**self._where(), "error": str(exc)})
            return
        if written:
            log.info("docker config updated from secret", extra=self._where())

    async def _removed(self) -> None:
        try:
            removed = await asyncio.to_thread(remove_docker_config, self.path)
        except OSError as exc:
            log.error("failed to remove docker config", extra={**self._where(), "error": str(exc)})
            return
        if removed:
            log.info("docker config secret deleted, removed the file", extra=self._where())


@contextlib.asynccontextmanager
async def docker_config_watch(kube: KubeClient, settings: CommonSettings) -> AsyncIterator[DockerConfigWatcher | None]:
    """Start the watcher the settings ask for (``start()`` errors are fatal), follow the Secret while inside."""
    watcher = DockerConfigWatcher.from_settings(kube, settings)
    if watcher is None:
        yield None
        return
    await watcher.start()
    following = asyncio.create_task(watcher.run(), name="docker-config-secret")
    try:
        yield watcher
    finally:
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)
