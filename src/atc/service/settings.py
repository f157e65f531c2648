"""Service settings read from command-line flags and environment variables, yoke-style.

Both services declare a pydantic model of their settings (subclasses of
``SettingsBase``) and call ``load_settings``. As in yoke's ATC, each setting
has an environment name (``SVC_NAME``) and a flag made from it (``--svc-name``);
a flag wins over the environment, which wins over the default. A bare boolean
flag means true, and list settings take comma-separated values.
``--help`` lists every setting with its environment variable, default and
expected form; a bad value raises ``SettingsError`` naming the setting and the
expected form, which the services' ``__main__`` print before exiting 2.
``check_startup`` adds the checks that need the filesystem or environment
(the kubeconfig exists, in-cluster config is possible, the CA file exists, the
module verification keys parse).
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from atc.model.constants import DEFAULT_YOKE_VERSION
from atc.wasm.fetch_policy import parse_networks
from atc.wasm.signatures import KeyFileError, VerificationKeys, load_verification_keys

SettingsT = TypeVar("SettingsT", bound="SettingsBase")
KEYS_FILE_FORM = "a file holding a JSON array of PEM public or private keys"


class SettingsError(ValueError):
    """A setting has a bad value; the message names the setting and the expected form."""


class SettingsBase(BaseModel):
    """Base for service settings: field ``svc_name`` is env ``SVC_NAME`` and flag ``--svc-name``."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def env_name(field: str) -> str:
    return field.upper()


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def _is_bool(model: type[SettingsBase], field: str) -> bool:
    return model.model_fields[field].annotation is bool


def _is_list(model: type[SettingsBase], field: str) -> bool:
    annotation = model.model_fields[field].annotation
    return getattr(annotation, "__origin__", None) in (list, tuple)


def expected_form(model: type[SettingsBase], field: str) -> str:
    """What a value of ``field`` must look like, for ``--help`` and error messages (e.g. "an integer >= 1")."""
    info = model.model_fields[field]
    extra = info.json_schema_extra
    if isinstance(extra, dict) and isinstance(extra.get("expected"), str):
        return str(extra["expected"])
    annotation = info.annotation
    if annotation is bool:
        return "true or false"
    if _is_list(model, field):
        return "comma-separated values"
    if annotation is int:
        noun = "an integer"
    elif annotation is float:
        noun = "a number"
    else:
        return "text"
    low = high = ""
    for item in info.metadata:  # annotated_types.Ge/Gt/Le/Lt from Field(ge=..., ...)
        for attribute, operator in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            bound = getattr(item, attribute, None)
            if bound is None:
                continue
            if attribute in ("ge", "gt"):
                low = f"{operator} {bound}"
            else:
                high = f"{operator} {bound}"
    if low.startswith(">= ") and high.startswith("<= "):
        return f"{noun} from {low[3:]} to {high[3:]}"
    bounds = [bound for bound in (low, high) if bound]
    return f"{noun} {' and '.join(bounds)}" if bounds else noun


def _default_text(model: type[SettingsBase], field: str) -> str:
    info = model.model_fields[field]
    if info.is_required():
        return "required"
    default = info.get_default(call_default_factory=True)
    if isinstance(default, (list, tuple)):
        return ",".join(map(str, default)) or "(empty)"
    if default == "" or default is None:
        return "(empty)"
    return str(default).lower() if isinstance(default, bool) else str(default)


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Wraps help at spaces only, so names like ``atc-controller`` and ``comma-separated`` stay whole."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


def build_parser(model: type[SettingsBase], prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        formatter_class=_HelpFormatter,
        epilog="Every flag can also be given as the environment variable shown; the flag wins.",
    )
    for field, info in model.model_fields.items():
        help_text = (
            f"{info.description or ''} [env {env_name(field)}; default {_default_text(model, field)};"
            f" {expected_form(model, field)}]"
        )
        if _is_bool(model, field):
            parser.add_argument(
                flag_name(field),
                dest=field,
                nargs="?",
                const="true",
                default=None,
                metavar="BOOL",
                help=help_text.replace("%", "%%"),
            )
        else:
            parser.add_argument(
                flag_name(field),
                dest=field,
                action="append",
                default=None,
                metavar=env_name(field),
                help=help_text.replace("%", "%%"),
            )
    return parser


def _raw_values(model: type[SettingsBase], flags: argparse.Namespace, environ: Mapping[str, str]) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    for field in model.model_fields:
        given = getattr(flags, field)
        if given is None:
            if env_name(field) not in environ:
                continue
            value: Any = environ[env_name(field)]
        elif isinstance(given, list):
            value = ",".join(given)  # repeated flags are joined, as yoke does
        else:
            value = given
        if _is_list(model, field):
            value = [item.strip() for item in str(value).split(",") if item.strip()]
        raw[field] = value
    return raw


def _explain(model: type[SettingsBase], error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        field = str(item["loc"][0]) if item["loc"] else "?"
        where = f"{env_name(field)} ({flag_name(field)})" if field in model.model_fields else field
        got = item.get("input")
        shown = "" if isinstance(got, dict) else f", got {got!r}"
        form = f" (expected {expected_form(model, field)})" if field in model.model_fields else ""
        lines.append(f"invalid setting {where}: {item['msg']}{shown}{form}")
    return "failed to load config: " + "; ".join(lines)


def load_settings(
    model: type[SettingsT],
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    prog: str,
    description: str,
) -> SettingsT:
    """Parse flags (``argv``) over environment (``environ``) into ``model``.

    ``--help`` prints the settings and exits 0; a bad value raises
    ``SettingsError`` naming the variable, its flag and what was wrong.
    """
    parser = build_parser(model, prog, description)
    flags = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    raw = _raw_values(model, flags, os.environ if environ is None else environ)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise SettingsError(_explain(model, exc)) from None


def _invalid(field: str, problem: str) -> str:
    return f"invalid setting {env_name(field)} ({flag_name(field)}): {problem}"


def check_startup(settings: SettingsBase, environ: Mapping[str, str] | None = None) -> None:
    """Checks a service makes before starting that need the filesystem or the environment.

    Called by both services' ``__main__`` after ``load_settings``: ``KUBE`` names
    a readable file, or is empty inside a pod (``KUBERNETES_SERVICE_HOST`` set);
    ``CACHE_FS`` is not a file; ``MODULE_VERIFICATION_KEYS_PATH``, when set, holds
    usable keys; the ``TLS_*`` files set explicitly exist (the webhook's
    ``TLS_GENERATE_DIR`` generates missing ones, so it skips them).
    Raises ``SettingsError`` naming every bad setting and what was expected.
    """
    env = os.environ if environ is None else environ
    values = settings.model_dump()
    problems: list[str] = []
    kube = values.get("kube")
    if isinstance(kube, str):
        if kube and not os.path.isfile(kube):
            problems.append(_invalid("kube", f"no such file {kube!r} (expected the path of a kubeconfig file)"))
        elif not kube and not env.get("KUBERNETES_SERVICE_HOST"):
            problems.append(
                _invalid(
                    "kube",
                    "empty means in-cluster config, but KUBERNETES_SERVICE_HOST is not set (not in a pod); "
                    "expected the path of a kubeconfig file",
                )
            )
    cache_fs = values.get("cache_fs")
    if isinstance(cache_fs, str) and os.path.exists(cache_fs) and not os.path.isdir(cache_fs):
        problems.append(_invalid("cache_fs", f"{cache_fs!r} is not a directory (expected a directory path)"))
    keys_path = values.get("module_verification_keys_path")
    if isinstance(keys_path, str) and keys_path:
        try:
            load_verification_keys(Path(keys_path))
        except KeyFileError as exc:
            problems.append(_keys_problem(exc))
    docker_file = values.get("docker_config_file")
    if isinstance(docker_file, str) and os.path.isdir(docker_file):
        problems.append(_invalid("docker_config_file", f"{docker_file!r} is a directory (expected a file path)"))
    if not values.get("tls_generate_dir"):
        for field in ("tls_ca_cert", "tls_server_cert", "tls_server_key"):
            path = values.get(field)
            if isinstance(path, str) and path and not os.path.isfile(path):
                problems.append(_invalid(field, f"no such file {path!r} (expected the path of a PEM file)"))
    if problems:
        raise SettingsError("failed to load config: " + "; ".join(problems))


def _keys_problem(error: KeyFileError) -> str:
    return _invalid("module_verification_keys_path", f"{error} (expected {KEYS_FILE_FORM})")


def load_module_verification_keys(settings: CommonSettings) -> VerificationKeys | None:
    """The keys of ``MODULE_VERIFICATION_KEYS_PATH`` (None when unset), for the services' module caches.

    ``check_startup`` has already read the file once, so a failure here means it changed since;
    it raises ``SettingsError`` like the start-up check.
    """
    path = settings.module_verification_keys_path
    if not path:
        return None
    try:
        return load_verification_keys(Path(path))
    except KeyFileError as exc:
        raise SettingsError("failed to load config: " + _keys_problem(exc)) from None


class CommonSettings(SettingsBase):
    """Settings both services read, with yoke's environment names (docs/configuration.md)."""

    kube: str = Field(
        "",
        description="kubeconfig path; empty means in-cluster config",
        json_schema_extra={"expected": "a kubeconfig file path or empty"},
    )
    log_format: str = Field("json", description="log format", json_schema_extra={"expected": "json or text"})
    verbose: bool = Field(False, description="log every external-resource admission request")
    cache_fs: str = Field("/tmp", description="directory for downloaded and compiled wasm modules")
    module_allow_list: list[str] = Field(
        default_factory=list, description="comma-separated path.Match globs a module URL must match"
    )
    target_server_allow_list: list[str] = Field(
        default_factory=list,
        description="comma-separated path.Match globs of API server URLs (e.g. https://*.workload.example:6443) "
        "that instances and Flights annotated atc.yoke.cd/kubeconfig-secret may deploy to (the controller "
        "applies there, the webhook dry-runs there); empty (the default) turns deploying to other clusters off "
        "(docs/targets.md)",
    )
    module_verification_keys_path: str = Field(
        "",
        description="file holding a JSON array of PEM keys (public, or private whose public half is used); when "
        "set, a module whose URL MODULE_ALLOW_LIST does not name must carry a yoke signature made with one of them",
        json_schema_extra={"expected": "a file path or empty"},
    )
    docker_config_secret_name: str = Field(
        "",
        description="name of a Secret in SVC_NAMESPACE whose .dockerconfigjson (registry credentials for oci:// "
        "modules) is written to DOCKER_CONFIG_FILE and kept in step with it (watched; deleting the Secret removes "
        "the file); as in yoke, a Secret missing at start-up is a warning and is waited for, one that cannot be "
        "read (e.g. forbidden) stops the service. Empty disables",
        json_schema_extra={"expected": "a Secret name or empty"},
    )
    docker_config_file: str = Field(
        "",
        description="docker config file oci:// pulls read registry credentials from (read again at each pull) and "
        "DOCKER_CONFIG_SECRET_NAME writes; empty means $DOCKER_CONFIG/config.json, else $HOME/.docker/config.json",
        json_schema_extra={"expected": "a file path or empty"},
    )

    module_compiler: str = Field(
        "auto",
        description="compiler for flight modules: auto (Winch, three to five times faster to compile, for modules "
        "whose URL MODULE_ALLOW_LIST names or whose signature was verified; Cranelift for all others), cranelift "
        "(always; slower to compile, faster to run) or winch (always)",
        json_schema_extra={"expected": "auto, cranelift or winch"},
    )

    module_allow_local_files: bool = Field(
        False,
        description="allow module URLs that are local paths or file:// (read from the service's own filesystem; "
        "a Flight author could read any file the service can)",
    )
    module_fetch_allowed_networks: list[str] = Field(
        default_factory=list,
        description="networks (CIDR) besides public addresses that module fetches may connect to, e.g. an "
        "in-cluster registry's 10.0.0.0/8; loopback, link-local (cloud metadata) and private addresses are "
        "refused unless listed",
        json_schema_extra={"expected": "comma-separated CIDRs"},
    )

    @field_validator("module_fetch_allowed_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        parse_networks(value)
        return value

    @field_validator("module_compiler")
    @classmethod
    def _known_compiler(cls, value: str) -> str:
        if value not in ("auto", "cranelift", "winch"):
            raise ValueError("unknown compiler")
        return value

    @field_validator("log_format")
    @classmethod
    def _known_log_format(cls, value: str) -> str:
        if value not in ("json", "text"):
            raise ValueError("unknown log format")
        return value

    svc_name: str = Field("atc", description="name of the Service the apiserver calls the webhook through")
    svc_namespace: str = Field("atc", description="namespace of that Service (and of the services' ServiceAccounts)")
    svc_port: int = Field(443, ge=1, le=65535, description="port of that Service")
    webhook_url: str = Field(
        "",
        description="base URL the API server calls the webhook at (e.g. https://127.0.0.1:8443) in webhook "
        "configurations, for local and test runs; empty means through the Service (SVC_NAMESPACE/SVC_NAME:SVC_PORT)",
        json_schema_extra={"expected": "an https:// URL or empty"},
    )
    flight_stdout_limit_mib: int = Field(16, ge=1, le=1024, description="largest flight output accepted, in MiB")
    flight_default_memory_mib: int = Field(
        256,
        ge=0,
        le=4096,
        description="memory cap of a flight whose maxMemoryMib is 0 (yoke's unlimited), in MiB; 0 keeps wasm32's "
        "4 GiB. An Airway, Flight or ClusterFlight may set its own maxMemoryMib, higher or lower",
    )
    yoke_version: str = Field(DEFAULT_YOKE_VERSION, description="YOKE_VERSION that flights see")

    @field_validator("webhook_url")
    @classmethod
    def _https_url(cls, value: str) -> str:
        if value and not value.startswith("https://"):
            raise ValueError("must be an https:// URL (the API server only calls webhooks over TLS)")
        return value
