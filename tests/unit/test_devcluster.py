"""Pure parts of the launcher: certificates, kubeconfig, process identity, build key."""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509

from devcluster import __main__ as cli
from devcluster import build, demo
from devcluster.cluster import (
    ClusterError,
    ProcessRecord,
    _start_ticks,
    cluster_paths,
    is_alive,
    kubeconfig_yaml,
    stop_processes,
)
from devcluster.pki import new_ca


def test_serving_certificate_verifies_against_its_ca_for_loopback(tmp_path: Path) -> None:
    ca = new_ca("t")
    cert_path, key_path = ca.issue_serving("srv", dns_names=("localhost",), ips=("127.0.0.1",)).write(tmp_path, "s")
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca.cert_pem))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_path, key_path)  # the key matches the certificate
    assert key_path.stat().st_mode & 0o777 == 0o600


def test_client_certificate_carries_groups_as_organizations() -> None:
    pair = new_ca().issue_client("admin", ("system:masters",))
    cert = x509.load_pem_x509_certificate(pair.cert_pem)
    assert cert.subject.rfc4514_string() == "O=system:masters,CN=admin"


def test_kubeconfig_points_at_server_with_embedded_credentials() -> None:
    ca = new_ca()
    config = json.loads(kubeconfig_yaml("https://127.0.0.1:1234", ca.cert_pem, ca.issue_client("a")))
    assert config["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:1234"
    assert config["current-context"] == "local"
    assert config["users"][0]["user"]["client-key-data"]


def test_kubeconfig_names_no_file() -> None:
    """Inline only, so its bytes work in a Secret of another cluster (a target kubeconfig)."""
    ca = new_ca()
    config = json.loads(kubeconfig_yaml("https://127.0.0.1:1234", ca.cert_pem, ca.issue_client("a")))
    assert set(config["clusters"][0]["cluster"]) == {"server", "certificate-authority-data"}
    assert set(config["users"][0]["user"]) == {"client-certificate-data", "client-key-data"}


# ----------------------------------------------------------------------------------------------- --name
def test_without_name_the_main_cluster_keeps_its_paths() -> None:
    args = cli.parse_args(["up"])
    assert (args.name, args.runtime_dir, args.kubeconfig) == ("main", Path(".local/cluster"), Path(".local/kubeconfig"))
    assert cluster_paths("main") == (Path(".local/cluster"), Path(".local/kubeconfig"))
    assert cli.down_command("main") == "make cluster-down"


def test_a_named_cluster_lives_in_its_own_directory() -> None:
    args = cli.parse_args(["up", "--name", "workload"])
    assert args.runtime_dir == Path(".local/clusters/workload")
    assert args.kubeconfig == Path(".local/clusters/workload/kubeconfig")
    assert cli.down_command("workload").endswith("-m devcluster down --name workload")
    explicit = cli.parse_args(["up", "--name", "w2", "--runtime-dir", "/tmp/x", "--kubeconfig", "/tmp/k"])
    assert (explicit.runtime_dir, explicit.kubeconfig) == (Path("/tmp/x"), Path("/tmp/k"))


@pytest.mark.parametrize("name", ["", "../main", "a/b", "Workload", "-x", "x-", "a" * 41, "main "])
def test_a_name_that_is_not_a_dns_label_is_refused(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ClusterError, match="invalid cluster name"):
        cli.parse_args(["status", f"--name={name}"])
    assert cli.main(["status", f"--name={name}"]) == 2
    assert "invalid cluster name" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["demo", "demo-down"])
def test_the_demo_runs_on_the_main_cluster_only(command: str) -> None:
    with pytest.raises(ClusterError, match="main cluster only"):
        cli.parse_args([command, "--name", "workload"])
    assert cli.parse_args([command]).name == "main"


def test_down_of_a_named_cluster_leaves_the_demo_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(signal, "signal", lambda *_: None)  # keep the session's SIGTERM handler
    calls: list[str] = []

    def demo_down() -> int:
        calls.append("demo-down")
        return 0

    monkeypatch.setattr(demo, "down", demo_down)
    assert cli.main(["down", "--name", "workload"]) == 0
    assert calls == []
    assert "no cluster recorded in .local/clusters/workload" in capsys.readouterr().err
    assert cli.main(["down"]) == 0
    assert calls == ["demo-down"]
    assert cli.main(["status", "--name", "workload"]) == 1
    assert capsys.readouterr().out == "not running\n"


SIGTERM_RECORDER = """
import pathlib, signal, sys, time
def on_term(*_):
    pathlib.Path(sys.argv[1]).write_text("SIGTERM")
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
pathlib.Path(sys.argv[1]).write_text("ready")
time.sleep(60)
"""


def test_stop_processes_terminates_the_recorded_process_but_not_a_recycled_pid(tmp_path: Path) -> None:
    marker = tmp_path / "signal"
    proc = subprocess.Popen([sys.executable, "-c", SIGTERM_RECORDER, str(marker)], start_new_session=True)
    while not marker.exists() or marker.read_text() != "ready":  # created first, written a moment later
        time.sleep(0.01)
    ticks = _start_ticks(proc.pid)
    assert ticks is not None
    record = ProcessRecord("sleeper", proc.pid, ticks, "")
    impostor = ProcessRecord("sleeper", proc.pid, ticks + 1, "")  # same PID, other start time
    assert is_alive(record)
    assert not is_alive(impostor)
    stop_processes([impostor], grace=0.1)
    assert proc.poll() is None  # a record that does not match the live process never signals it
    assert marker.read_text() == "ready"
    stop_processes([record], grace=5)
    assert marker.read_text() == "SIGTERM"  # asked politely first
    assert not is_alive(record)


def test_stop_processes_kills_what_ignores_sigterm() -> None:
    ignore = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('x', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", ignore], start_new_session=True, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.readline()
    ticks = _start_ticks(proc.pid)
    assert ticks is not None
    record = ProcessRecord("stubborn", proc.pid, ticks, "")
    started = time.monotonic()
    stop_processes([record], grace=0.5)
    assert not is_alive(record)
    assert 0.5 <= time.monotonic() - started < 5


def test_build_key_changes_with_the_wrapper_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = build.build_key()
    assert len(key) == 24
    assert build.build_key() == key  # stable
    for target in build.TARGETS:
        dest = tmp_path / target.module_dir
        dest.mkdir()
        for name in ("go.mod", "go.sum"):
            (dest / name).write_bytes((build.WRAPPERS_DIR / target.module_dir / name).read_bytes())
    monkeypatch.setattr(build, "WRAPPERS_DIR", tmp_path)
    assert build.build_key() == key  # same content, same key
    (tmp_path / "etcd" / "go.sum").write_text("changed\n")
    assert build.build_key() != key


def test_incomplete_cache_directory_is_not_reused(tmp_path: Path) -> None:
    for name in build.ALL_BINARIES[:-1]:
        (tmp_path / name).write_text("")
    assert not build.is_complete(tmp_path)
