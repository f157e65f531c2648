"""What both services do the same way at start-up: build the module cache, report a bad start.

``module_cache(settings, engine)`` turns ``CACHE_FS``, ``MODULE_ALLOW_LIST``,
``MODULE_VERIFICATION_KEYS_PATH``, ``MODULE_COMPILER``, ``MODULE_ALLOW_LOCAL_FILES``,
``MODULE_FETCH_ALLOWED_NETWORKS`` and the docker config file into a
``ModuleCache``, ``flight_defaults(settings)`` the caps and version every flight run gets (both
called by ``atc_controller.app`` and ``atc_webhook.server``).
``startup_exit_code(service, error)`` turns an error a user must fix before the service can start
into one line on stderr and an exit code (called by both ``__main__`` modules).
"""

from __future__ import annotations

import sys
from pathlib import Path

from atc.k8s.connection import KubeConfigError
from atc.release.invocation import FlightDefaults
from atc.service.docker_secret import DockerConfigSecretError, docker_config_file
from atc.service.settings import CommonSettings, SettingsError, load_module_verification_keys
from atc.wasm.cache import ModuleCache
from atc.wasm.engine import FlightEngine
from atc.wasm.fetch_policy import FetchPolicy


def module_cache(settings: CommonSettings, engine: FlightEngine) -> ModuleCache:
    return ModuleCache(
        engine,
        Path(settings.cache_fs),
        allow_list=settings.module_allow_list,
        docker_config_path=docker_config_file(settings.docker_config_file),
        verification_keys=load_module_verification_keys(settings),
        compiler_policy=settings.module_compiler,
        fetch_policy=FetchPolicy.strict(
            allow_local_files=settings.module_allow_local_files,
            allowed_networks=settings.module_fetch_allowed_networks,
        ),
    )


def flight_defaults(settings: CommonSettings) -> FlightDefaults:
    """Output cap, default memory cap and YOKE_VERSION of every flight run."""
    return FlightDefaults(
        stdout_limit=settings.flight_stdout_limit_mib << 20,
        memory_mib=settings.flight_default_memory_mib,
        yoke_version=settings.yoke_version,
    )


def startup_exit_code(service: str, error: Exception) -> int | None:
    """Print one line for a start-up error a user must fix and return the exit code; None for any other error.

    2 for settings (an unusable kubeconfig, verification keys that went bad after they were checked),
    1 for a docker config Secret that cannot be read.
    """
    if isinstance(error, KubeConfigError):
        message, code = f"failed to load config: invalid setting KUBE (--kube): {error}", 2
    elif isinstance(error, SettingsError):
        message, code = str(error), 2
    elif isinstance(error, DockerConfigSecretError):
        message, code = str(error), 1
    else:
        return None
    print(f"{service}: {message}", file=sys.stderr)
    return code
