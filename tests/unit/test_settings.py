"""Settings come from yoke-style flags over environment variables over defaults."""

from __future__ import annotations

import subprocess
import sys

import pytest

from atc.settings import SettingsError, env_name, flag_name, load_settings
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


def test_signature_keys_are_refused_until_verification_exists() -> None:
    with pytest.raises(SettingsError, match=r"MODULE_VERIFICATION_KEYS_PATH .*not supported yet"):
        load([], {"MODULE_VERIFICATION_KEYS_PATH": "/keys.json"})
