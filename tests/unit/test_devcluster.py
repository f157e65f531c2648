"""Pure parts of the launcher: certificates, kubeconfig, process identity, build key."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509

from devcluster import build
from devcluster.cluster import ProcessRecord, _start_ticks, is_alive, kubeconfig_yaml, stop_processes
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
    while not marker.exists():
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
