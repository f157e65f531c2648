"""What both services do the same way at start-up: build the module cache, report a bad start.

``module_cache(settings, engine)`` turns ``CACHE_FS``, ``MODULE_ALLOW_LIST``,
``MODULE_VERIFICATION_KEYS_PATH``, ``MODULE_COMPILER`` and the docker config file into a
``ModuleCache`` (called by ``atc_controller.app`` and ``atc_webhook.server``).
``startup_exit_code(service, error)`` turns an error a user must fix before the service can start
into one line on stderr and an exit code (called by both ``__main__`` modules).
"""

from __future__ import annotations

import sys
from pathlib import Path

from kubernetes_asyncio.config.config_exception import ConfigException

from atc.docker_secret import DockerConfigSecretError, docker_config_file
from atc.settings import CommonSettings, SettingsError, load_module_verification_keys
from atc.wasm.cache import ModuleCache
from atc.wasm.engine import FlightEngine


def module_cache(settings: CommonSettings, engine: FlightEngine) -> ModuleCache:
    return ModuleCache(
        engine,
        Path(settings.cache_fs),
        allow_list=settings.module_allow_list,
        docker_config_path=docker_config_file(settings.docker_config_file),
        verification_keys=load_module_verification_keys(settings),
        compiler_policy=settings.module_compiler,
    )


def startup_exit_code(service: str, error: Exception) -> int | None:
    """Print one line for a start-up error a user must fix and return the exit code; None for any other error.

    2 for settings (an unusable kubeconfig, verification keys that went bad after they were checked),
    1 for a docker config Secret that cannot be read.
    """
    if isinstance(error, ConfigException):
        message, code = f"failed to load config: invalid setting KUBE (--kube): {error}", 2
    elif isinstance(error, SettingsError):
        message, code = str(error), 2
    elif isinstance(error, DockerConfigSecretError):
        message, code = str(error), 1
    else:
        return None
    print(f"{service}: {message}", file=sys.stderr)
    return code
