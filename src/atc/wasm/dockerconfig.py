"""Registry credentials from a docker ``config.json``, for pulling ``oci://`` modules.

Called by ``atc.wasm.oci`` each time it must authenticate, so a file rewritten
by the docker-config watcher (``DOCKER_CONFIG_SECRET_NAME`` in
docs/configuration.md) is picked up without a restart. The
file is ``$DOCKER_CONFIG/config.json``, else ``$HOME/.docker/config.json``, or
the path the caller passes. Entries under ``auths`` are matched by registry
host (keys may be ``host``, ``host:port`` or URLs such as
``https://index.docker.io/v1/``) and give ``auth`` (base64 ``user:password``)
or ``username``/``password``. Credential helpers are not supported.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atc.wasm.errors import ModuleFetchError

DOCKER_HUB_ALIASES = frozenset({"index.docker.io", "docker.io", "registry-1.docker.io"})


@dataclass(frozen=True)
class RegistryCredentials:
    """A username and password for one registry."""

    username: str
    password: str

    def basic_authorization(self) -> str:
        """The value of an ``Authorization: Basic`` header."""
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode("ascii")
        return f"Basic {token}"


def default_docker_config_path() -> Path:
    """Where docker keeps its config: ``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``."""
    directory = os.environ.get("DOCKER_CONFIG")
    return Path(directory) / "config.json" if directory else Path.home() / ".docker" / "config.json"


def registry_credentials(registry: str, config_path: Path | None = None) -> RegistryCredentials | None:
    """The credentials the docker config holds for ``registry`` (``host[:port]``), if any."""
    path = config_path or default_docker_config_path()
    document = _read_config(path)
    auths = document.get("auths")
    if not isinstance(auths, dict):
        return None
    wanted = _aliases(registry)
    for key, entry in auths.items():
        if _registry_of_key(key) in wanted and isinstance(entry, dict):
            credentials = _credentials_from(entry, path)
            if credentials is not None:
                return credentials
    return None


def _read_config(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as err:
        raise ModuleFetchError(f"failed to read docker config {path}: {err}") from err
    if not text.strip():
        return {}
    try:
        document = json.loads(text)
    except json.JSONDecodeError as err:
        raise ModuleFetchError(f"failed to parse docker config {path}: {err}") from err
    if not isinstance(document, dict):
        raise ModuleFetchError(f"failed to parse docker config {path}: not a JSON object")
    return document


def _aliases(registry: str) -> frozenset[str]:
    host = registry.lower()
    return DOCKER_HUB_ALIASES if host in DOCKER_HUB_ALIASES else frozenset({host})


def _registry_of_key(key: str) -> str:
    """``https://index.docker.io/v1/`` -> ``index.docker.io``; ``host:5000`` stays."""
    without_scheme = key.partition("://")[2] if "://" in key else key
    return without_scheme.partition("/")[0].lower()


def _credentials_from(entry: dict[str, Any], path: Path) -> RegistryCredentials | None:
    encoded = entry.get("auth")
    if isinstance(encoded, str) and encoded:
        return _decode_auth(encoded, path)
    username, password = entry.get("username"), entry.get("password")
    if isinstance(username, str) and isinstance(password, str) and (username or password):
        return RegistryCredentials(username, password)
    return None


def _decode_auth(encoded: str, path: Path) -> RegistryCredentials:
    try:
        decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as err:
        raise ModuleFetchError(f"invalid auth entry in docker config {path}: {err}") from err
    username, has_colon, password = decoded.partition(":")
    if not has_colon:
        raise ModuleFetchError(f"invalid auth entry in docker config {path}: expected base64 of user:password")
    return RegistryCredentials(username, password)
