"""Settings come from yoke-style flags over environment variables over defaults.

Also runs the installed console scripts (``atc-controller``, ``atc-webhook`` next to the test
interpreter) to check ``--help`` and the one-line, exit-2 errors for bad configuration.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from atc.service.settings import (
    SettingsBase,
    SettingsError,
    _default_text,
    check_startup,
    env_name,
    expected_form,
    flag_name,
    load_module_verification_keys,
    load_settings,
)
from atc_controller.settings import ControllerSettings
from atc_webhook.settings import WebhookSettings


def load(argv: list[str], env: dict[str, str]) -> WebhookSettings:
    return load_settings(WebhookSettings, argv, env, prog="t", description="t")


def test_flag_wins_over_environment_which_wins_over_default() -> None:
    assert load([], {}).port == 3000
    assert load([], {"PORT": "4000"}).port == 4000
    assert load(["--port", "5000"], {"PORT": "4000"}).port == 5000
    assert load(["--port=6000"], {}).port == 6000


def test_yoke_names_for_service_settings() -> None:
    settings = load(
        ["--svc-name", "atc", "--tls-server-cert", "/c"], {"SVC_NAMESPACE": "ns", "SVC_PORT": "8443", "KUBE": "/k"}
    )
    assert (settings.svc_name, settings.svc_namespace, settings.svc_port) == ("atc", "ns", 8443)
    assert (settings.tls_server_cert, settings.kube) == ("/c", "/k")


def test_bare_boolean_flag_means_true_and_lists_are_comma_separated() -> None:
    settings = load(["--verbose", "--module-allow-list", "oci://a/*", "--module-allow-list", "https://b/*"], {})
    assert settings.verbose is True
    assert settings.module_allow_list == ["oci://a/*", "https://b/*"]
    assert load([], {"MODULE_ALLOW_LIST": "x, y", "VERBOSE": "false"}).module_allow_list == ["x", "y"]
    assert load([], {"VERBOSE": "false"}).verbose is False


def test_bad_value_names_the_setting_and_the_expected_form() -> None:
    with pytest.raises(SettingsError) as error:
        load([], {"SVC_PORT": "eighty"})
    message = str(error.value)
    assert message.startswith("failed to load config: invalid setting SVC_PORT (--svc-port)")
    assert "valid integer" in message
    assert "'eighty'" in message
    assert "(expected an integer from 1 to 65535)" in message


@pytest.mark.parametrize(
    ("env", "name", "form"),
    [
        ({"CONCURRENCY": "abc"}, "CONCURRENCY", "an integer >= 1"),
        ({"LEADER_ELECT": "maybe"}, "LEADER_ELECT", "true or false"),
        ({"LEASE_DURATION_SECONDS": "soon"}, "LEASE_DURATION_SECONDS", "a number > 0"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT", "json or text"),
        ({"WEBHOOK_URL": "http://x"}, "WEBHOOK_URL", "an https:// URL or empty"),
    ],
)
def test_errors_say_what_form_is_expected(env: dict[str, str], name: str, form: str) -> None:
    with pytest.raises(SettingsError) as error:
        load_settings(ControllerSettings, [], env, prog="t", description="t")
    assert f"invalid setting {name} ({flag_name(name.lower())})" in str(error.value)
    assert f"(expected {form})" in str(error.value)


def test_startup_checks_name_the_kubeconfig_and_files(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\n")
    check_startup(load([], {"KUBE": str(kubeconfig)}), {})  # a file: fine
    check_startup(load([], {}), {"KUBERNETES_SERVICE_HOST": "10.0.0.1"})  # in a pod: fine
    with pytest.raises(SettingsError, match=r"invalid setting KUBE \(--kube\): no such file .*kubeconfig file"):
        check_startup(load([], {"KUBE": str(tmp_path / "missing")}), {})
    with pytest.raises(SettingsError, match=r"KUBE \(--kube\): empty means in-cluster config"):
        check_startup(load([], {}), {})
    with pytest.raises(SettingsError, match=r"invalid setting CACHE_FS .*not a directory"):
        check_startup(load([], {"KUBE": str(kubeconfig), "CACHE_FS": str(kubeconfig)}), {})
    missing_cert = {"KUBE": str(kubeconfig), "TLS_SERVER_CERT": str(tmp_path / "tls.crt")}
    with pytest.raises(SettingsError, match=r"invalid setting TLS_SERVER_CERT .*no such file"):
        check_startup(load([], missing_cert), {})
    check_startup(load([], {**missing_cert, "TLS_GENERATE_DIR": str(tmp_path)}), {})  # generated at startup


@pytest.mark.parametrize("model", [ControllerSettings, WebhookSettings])
def test_every_field_has_a_described_expected_form(model: type[SettingsBase]) -> None:
    for field, info in model.model_fields.items():
        assert info.description, field
        form = expected_form(model, field)
        assert form, field
        if info.annotation in (int, float):
            assert form.startswith(("an integer", "a number")), (field, form)


def test_out_of_range_is_rejected() -> None:
    with pytest.raises(SettingsError, match=r"invalid setting CONCURRENCY \(--concurrency\)"):
        load_settings(ControllerSettings, [], {"CONCURRENCY": "0"}, prog="t", description="t")


@pytest.mark.parametrize(
    ("script", "model"), [("atc-controller", ControllerSettings), ("atc-webhook", WebhookSettings)]
)
def test_help_lists_every_setting_with_its_environment_variable(script: str, model: type[WebhookSettings]) -> None:
    module = script.replace("-", "_")
    done = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, check=True, timeout=60
    )
    help_text = " ".join(done.stdout.split())  # argparse wraps lines
    for field in model.model_fields:
        assert flag_name(field) in help_text
        assert f"env {env_name(field)};" in help_text


@pytest.mark.parametrize("script", ["atc-controller", "atc-webhook"])
def test_bad_configuration_exits_2_with_the_setting_named(script: str) -> None:
    module = script.replace("-", "_")
    done = subprocess.run([sys.executable, "-m", module, "--svc-port", "x"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "invalid setting SVC_PORT (--svc-port)" in done.stderr


SCRIPTS: list[tuple[str, type[SettingsBase]]] = [
    ("atc-controller", ControllerSettings),
    ("atc-webhook", WebhookSettings),
]


def script_path(script: str) -> Path:
    """The console script pip installed next to the interpreter running the tests (``.venv/bin``)."""
    path = Path(sys.executable).parent / script
    assert path.is_file(), f"{path} missing: install the project (make venv)"
    return path


def run_script(script: str, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {key: value for key, value in os.environ.items() if key not in ("KUBE", "KUBERNETES_SERVICE_HOST")}
    return subprocess.run(
        [str(script_path(script)), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, **(env or {})},
    )


@pytest.mark.parametrize(("script", "model"), SCRIPTS)
def test_console_script_help_lists_every_env_var_with_its_default(script: str, model: type[SettingsBase]) -> None:
    done = run_script(script, "--help")
    assert done.returncode == 0, done.stderr
    help_text = " ".join(done.stdout.split())
    assert help_text.startswith(f"usage: {script}")
    for field in model.model_fields:
        default = " ".join(_default_text(model, field).split())
        shown = f"[env {env_name(field)}; default {default}; {expected_form(model, field)}]"
        assert shown in help_text, shown
    # the defaults shown are the model's own: e.g. the webhook's port and the controller's metrics port
    assert ("[env PORT; default 3000;" in help_text) is (model is WebhookSettings)
    assert ("[env METRICS_PORT; default 8080;" in help_text) is (model is ControllerSettings)


@pytest.mark.parametrize(
    ("script", "env", "name", "form"),
    [
        ("atc-controller", {"CONCURRENCY": "abc"}, "CONCURRENCY", "an integer"),
        ("atc-webhook", {"PORT": "https"}, "PORT", "an integer from 1 to 65535"),
        ("atc-webhook", {"REGISTER_WEBHOOKS": "perhaps"}, "REGISTER_WEBHOOKS", "true or false"),
        ("atc-controller", {"KUBE": "/nonexistent/kubeconfig"}, "KUBE", "kubeconfig file"),
        ("atc-webhook", {}, "KUBE", "kubeconfig file"),
    ],
)
def test_console_script_bad_value_exits_2_naming_the_setting(
    script: str, env: dict[str, str], name: str, form: str
) -> None:
    done = run_script(script, env=env)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert re.search(rf"^{script}: failed to load config: invalid setting {name} \(", done.stderr, re.MULTILINE)
    assert form in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


@pytest.mark.parametrize("script", ["atc-controller", "atc-webhook"])
def test_console_script_unusable_kubeconfig_exits_2(script: str, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")  # no contexts
    env = {"KUBE": str(kubeconfig), "CACHE_FS": str(tmp_path / "cache")}
    if script == "atc-webhook":  # the kubeconfig is loaded before the port is bound
        env["TLS_GENERATE_DIR"] = str(tmp_path / "tls")
    else:
        env.update(HEALTH_PORT="0", METRICS_PORT="0")
    done = run_script(script, env=env)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert f"{script}: failed to load config: invalid setting KUBE (--kube)" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def _kubeconfig(tmp_path: Path) -> Path:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\n")
    return kubeconfig


def test_module_verification_keys_are_loaded_at_startup(tmp_path: Path) -> None:
    kube = str(_kubeconfig(tmp_path))
    keys = tmp_path / "keys.json"
    pem = (
        ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    keys.write_text(json.dumps([pem.decode()]))
    settings = load([], {"KUBE": kube, "MODULE_VERIFICATION_KEYS_PATH": str(keys)})
    check_startup(settings, {})
    loaded = load_module_verification_keys(settings)
    assert loaded is not None
    assert len(loaded) == 1
    assert load_module_verification_keys(load([], {})) is None


@pytest.mark.parametrize(
    ("content", "problem"),
    [(None, "no such file"), ("[]", "the array holds no keys"), ('["x"]', "failed to parse key at position 0")],
)
def test_bad_module_verification_keys_name_the_setting(tmp_path: Path, content: str | None, problem: str) -> None:
    keys = tmp_path / "keys.json"
    if content is not None:
        keys.write_text(content)
    settings = load([], {"KUBE": str(_kubeconfig(tmp_path)), "MODULE_VERIFICATION_KEYS_PATH": str(keys)})
    with pytest.raises(SettingsError) as error:
        check_startup(settings, {})
    message = str(error.value)
    assert message.startswith(
        "failed to load config: invalid setting MODULE_VERIFICATION_KEYS_PATH (--module-verification-keys-path): "
    )
    assert problem in message
    assert "(expected a file holding a JSON array of PEM public or private keys)" in message


@pytest.mark.parametrize("script", ["atc-controller", "atc-webhook"])
def test_console_script_with_unusable_keys_exits_2_naming_the_setting(script: str, tmp_path: Path) -> None:
    keys = tmp_path / "keys.json"
    keys.write_text("not json")
    done = run_script(script, env={"KUBE": str(_kubeconfig(tmp_path)), "MODULE_VERIFICATION_KEYS_PATH": str(keys)})
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{script}: failed to load config: invalid setting MODULE_VERIFICATION_KEYS_PATH")
    assert "not valid JSON" in lines[0]


def test_docker_config_settings(tmp_path: Path) -> None:
    settings = load([], {"DOCKER_CONFIG_SECRET_NAME": "regcred", "DOCKER_CONFIG_FILE": str(tmp_path / "c.json")})
    assert (settings.docker_config_secret_name, settings.docker_config_file) == ("regcred", str(tmp_path / "c.json"))
    with pytest.raises(
        SettingsError, match=r"invalid setting DOCKER_CONFIG_FILE \(--docker-config-file\): .*directory"
    ):
        check_startup(load([], {"KUBE": str(_kubeconfig(tmp_path)), "DOCKER_CONFIG_FILE": str(tmp_path)}), {})
