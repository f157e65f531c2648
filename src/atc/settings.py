"""Service settings read from command-line flags and environment variables, yoke-style.

Both services declare a pydantic model of their settings (subclasses of
``SettingsBase``) and call ``load_settings``. As in yoke's ATC, each setting
has an environment name (``SVC_NAME``) and a flag made from it (``--svc-name``);
a flag wins over the environment, which wins over the default. A bare boolean
flag means true, and list settings take comma-separated values.
``--help`` lists every setting with its environment variable and default.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from atc.constants import DEFAULT_YOKE_VERSION

SettingsT = TypeVar("SettingsT", bound="SettingsBase")


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


def build_parser(model: type[SettingsBase], prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Every flag can also be given as the environment variable shown; the flag wins.",
    )
    for field, info in model.model_fields.items():
        help_text = f"{info.description or ''} [env {env_name(field)}; default {_default_text(model, field)}]"
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
        lines.append(f"invalid setting {where}: {item['msg']}{shown}")
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


class CommonSettings(SettingsBase):
    """Settings both services read, with yoke's environment names (spec 12.1)."""

    kube: str = Field("", description="kubeconfig path; empty means in-cluster config")
    log_format: str = Field("json", description="log format: json or text")
    verbose: bool = Field(False, description="log every external-resource admission request")
    cache_fs: str = Field("/tmp", description="directory for downloaded and compiled wasm modules")
    module_allow_list: list[str] = Field(
        default_factory=list, description="comma-separated path.Match globs a module URL must match"
    )
    module_verification_keys_path: str = Field(
        "", description="module signature verification keys (not supported yet: setting it stops the service)"
    )

    @field_validator("module_verification_keys_path")
    @classmethod
    def _signatures_not_supported(cls, value: str) -> str:
        if value:
            raise ValueError("module signature verification is not supported yet; unset it to start")
        return value

    svc_name: str = Field("atc", description="name of the Service the apiserver calls the webhook through")
    svc_namespace: str = Field("atc", description="namespace of that Service (and of the services' ServiceAccounts)")
    svc_port: int = Field(443, ge=1, le=65535, description="port of that Service")
    webhook_url: str = Field(
        "",
        description="base URL the API server calls the webhook at (e.g. https://127.0.0.1:8443) in webhook "
        "configurations, for local and test runs; empty means through the Service (SVC_NAMESPACE/SVC_NAME:SVC_PORT)",
    )
    flight_stdout_limit_mib: int = Field(16, ge=1, le=1024, description="largest flight output accepted, in MiB")
    yoke_version: str = Field(DEFAULT_YOKE_VERSION, description="YOKE_VERSION that flights see")

    @field_validator("webhook_url")
    @classmethod
    def _https_url(cls, value: str) -> str:
        if value and not value.startswith("https://"):
            raise ValueError("must be an https:// URL (the API server only calls webhooks over TLS)")
        return value
