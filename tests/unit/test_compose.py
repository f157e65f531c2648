"""docker-compose.yml is consistent with the repository and with the services' settings.

Pure unit test (no Docker): parses the compose file with PyYAML and checks that every file and
directory it references exists, that the ATC services get only real setting names (derived from
``ControllerSettings`` and ``WebhookSettings``), that published ports are valid and not taken twice,
and that ``depends_on`` and ``network_mode: service:<name>`` name services that exist.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from atc.service.settings import SettingsBase, env_name
from atc_controller.settings import ControllerSettings
from atc_webhook.settings import WebhookSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
# the ATC image's commands -> the settings model of the service each runs
COMMAND_SETTINGS: dict[str, type[SettingsBase]] = {"atc-controller": ControllerSettings, "atc-webhook": WebhookSettings}
ATC_IMAGE = "atc:dev"
# what the images set themselves or the Python runtime reads; not settings
RUNTIME_VARIABLES = {"PATH", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"}


def load_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())  # the module global, so a test can point it at a broken copy
    assert isinstance(data, dict)
    return data


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # ["NAME=value", ...]
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(key): str(value) for key, value in env.items()}


def setting_names(model: type[SettingsBase]) -> set[str]:
    return {env_name(field) for field in model.model_fields}


def atc_services(compose: dict[str, Any]) -> dict[str, type[SettingsBase]]:
    """Compose services running the ATC image, with the settings model of their command."""
    found = {}
    for name, service in compose["services"].items():
        command = service.get("command") or []
        if service.get("image") == ATC_IMAGE and command and command[0] in COMMAND_SETTINGS:
            found[name] = COMMAND_SETTINGS[command[0]]
    return found


def host_ports(service: dict[str, Any]) -> list[tuple[int, int, str]]:
    """(host port, container port, protocol) of every published port."""
    result = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            published, target, protocol = entry.get("published"), entry["target"], entry.get("protocol", "tcp")
        else:
            match = re.fullmatch(
                r"(?:(?P<ip>\d+\.\d+\.\d+\.\d+):)?(?:(?P<host>\d+):)?(?P<target>\d+)(?:/(?P<proto>tcp|udp))?", entry
            )
            assert match, f"unparsable port {entry!r}"
            published, target, protocol = match["host"], match["target"], match["proto"] or "tcp"
        result.append((int(published if published is not None else target), int(target), protocol))
    return result


def test_compose_parses_and_has_the_documented_services() -> None:
    compose = load_compose()
    assert {"k3s", "controller", "webhook", "flights"} <= set(compose["services"])
    assert set(atc_services(compose)) == {"controller", "webhook"}
    k3s = compose["services"]["k3s"]
    assert str(k3s["image"]).startswith("rancher/k3s:")
    assert k3s.get("privileged") is True


def test_build_contexts_dockerfiles_and_host_paths_exist() -> None:
    compose = load_compose()
    named_volumes = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        build = service.get("build")
        if build is not None:
            context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
            assert context.is_dir(), f"{name}: build context {context} missing"
            if isinstance(build, dict):
                dockerfile = context / build.get("dockerfile", "Dockerfile")
                assert dockerfile.is_file(), f"{name}: {dockerfile} missing"
                target = build.get("target")
                if target:
                    stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", dockerfile.read_text(), re.MULTILINE | re.I)
                    assert target in stages, f"{name}: no stage {target!r} in {dockerfile}"
        for env_file in (
            [service["env_file"]] if isinstance(service.get("env_file"), str) else service.get("env_file") or []
        ):
            path = env_file if isinstance(env_file, str) else env_file["path"]
            assert (ROOT / path).is_file(), f"{name}: env_file {path} missing"
        for volume in service.get("volumes") or []:
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name}: host path {source} missing"
            elif ":" in (volume if isinstance(volume, str) else ":"):
                assert source in named_volumes, f"{name}: volume {source!r} not declared under volumes:"


def test_atc_services_get_only_real_setting_names() -> None:
    compose = load_compose()
    for name, model in atc_services(compose).items():
        env = environment(compose["services"][name])
        unknown = set(env) - setting_names(model) - RUNTIME_VARIABLES
        assert not unknown, f"{name}: not settings of {model.__name__}: {sorted(unknown)}"
        assert "KUBE" in env, f"{name}: KUBE must point at a kubeconfig (no in-cluster config in compose)"


def test_atc_service_environments_validate_against_their_settings() -> None:
    """The values (not only the names) are accepted: a typo like PORT=30OO fails here, not at startup."""
    compose = load_compose()
    for name, model in atc_services(compose).items():
        env = environment(compose["services"][name])
        raw: dict[str, Any] = {key.lower(): value for key, value in env.items() if key not in RUNTIME_VARIABLES}
        for field in raw:
            if getattr(model.model_fields[field].annotation, "__origin__", None) is list:
                raw[field] = [item.strip() for item in raw[field].split(",") if item.strip()]
        model.model_validate(raw)


def test_webhook_is_reachable_by_the_apiserver_with_a_covered_name() -> None:
    """WEBHOOK_URL's host is one the generated certificate covers, in the network namespace of k3s."""
    compose = load_compose()
    services = compose["services"]
    webhook_env = environment(services["webhook"])
    url = webhook_env["WEBHOOK_URL"]
    match = re.fullmatch(r"https://(?P<host>[^:/]+):(?P<port>\d+)", url)
    assert match, url
    assert int(match["port"]) == int(webhook_env.get("PORT", "3000"))
    covered = {"127.0.0.1", "localhost", f"{webhook_env['SVC_NAME']}.{webhook_env['SVC_NAMESPACE']}.svc"}
    assert match["host"] in covered
    if match["host"] in ("127.0.0.1", "localhost"):
        assert services["webhook"].get("network_mode") == "service:k3s"
    assert environment(services["controller"])["WEBHOOK_URL"] == url


def test_ports_are_valid_and_not_published_twice() -> None:
    compose = load_compose()
    seen: dict[tuple[int, str], str] = {}
    for name, service in compose["services"].items():
        for host, target, protocol in host_ports(service):
            assert 1 <= host <= 65535, (name, host)
            assert 1 <= target <= 65535, (name, target)
            assert (host, protocol) not in seen, f"host port {host}/{protocol}: {seen.get((host, protocol))} and {name}"
            seen[(host, protocol)] = name


def test_services_sharing_a_network_namespace_listen_on_distinct_ports() -> None:
    compose = load_compose()
    listening: dict[int, str] = {}
    for name, model in atc_services(compose).items():
        service = compose["services"][name]
        if service.get("network_mode") != "service:k3s":
            continue
        env = environment(service)
        ports = {key.lower(): env[key] for key in ("PORT", "METRICS_PORT", "HEALTH_PORT") if key in env}
        values = model.model_validate(ports)
        for field in ("port", "metrics_port", "health_port"):
            port = getattr(values, field, 0)
            if port:
                assert port not in listening, f"{name} and {listening[port]} both listen on {port}"
                listening[port] = name
                assert any(target == port for _, target, _ in host_ports(compose["services"]["k3s"])), port


def test_depends_on_and_network_mode_name_existing_services() -> None:
    compose = load_compose()
    names = set(compose["services"])
    for name, service in compose["services"].items():
        depends = service.get("depends_on") or []
        for dependency in depends if isinstance(depends, list) else depends.keys():
            assert dependency in names, f"{name} depends on unknown {dependency}"
            assert dependency != name
        mode = service.get("network_mode", "")
        if mode.startswith("service:"):
            assert mode.removeprefix("service:") in names
            assert mode.removeprefix("service:") in (depends if isinstance(depends, list) else depends.keys())
            assert not service.get("ports"), f"{name}: publish ports on the service whose network it shares"


@pytest.mark.parametrize(
    ("mutation", "message"),
    [
        (lambda c: c["services"]["webhook"]["environment"].update(TLS_GENERATE=1), "not settings"),
        (lambda c: c["services"]["controller"]["depends_on"].update(nowhere={}), "depends on unknown"),
        (lambda c: c["services"]["flights"]["ports"].append("6443:1"), "host port 6443"),
        (lambda c: c["services"]["flights"].update(volumes=["./no-such-dir:/x"]), "host path"),
    ],
)
def test_checks_catch_broken_compose_files(
    mutation: Any, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compose = load_compose()
    mutation(compose)
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(yaml.safe_dump(compose))
    monkeypatch.setitem(globals(), "COMPOSE", broken)
    checks = [
        test_build_contexts_dockerfiles_and_host_paths_exist,
        test_atc_services_get_only_real_setting_names,
        test_ports_are_valid_and_not_published_twice,
        test_depends_on_and_network_mode_name_existing_services,
    ]
    failures = []
    for check in checks:
        try:
            check()
        except AssertionError as exc:
            failures.append(str(exc))
    assert any(message in failure for failure in failures), failures
