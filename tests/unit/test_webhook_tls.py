"""The webhook's TLS: generated certificates, file resolution, and live reload of the serving pair.

Reload is checked the way a client sees it: a TLS server (asyncio, and uvicorn
with the service's ``ssl_context_factory``) listens with the reloader's context,
the files are rotated, and the next handshake presents the new certificate,
with no SNI (clients connect to 127.0.0.1) and with SNI.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import shutil
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import uvicorn
import uvloop
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from fakes import FakeClock, settle
from fastapi import FastAPI
from support import eventually

from atc_webhook.settings import WebhookSettings
from atc_webhook.tls import (
    CertificateReloader,
    TlsFiles,
    TlsSetupError,
    ensure_tls_files,
    generate_certificates,
    resolve_tls_files,
)


def files_in(directory: Path) -> TlsFiles:
    return TlsFiles(directory / "ca.crt", directory / "server.crt", directory / "server.key")


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


@pytest.fixture
def generated(tmp_path: Path) -> TlsFiles:
    files = files_in(tmp_path / "tls")
    generate_certificates(files, ["localhost", "atc.ns.svc"], ["127.0.0.1"])
    return files


# ----------------------------------------------------------------------------------------------- generation
def test_generated_certificate_covers_the_service_loopback_and_chains_to_the_ca(generated: TlsFiles) -> None:
    assert generated.ca_cert is not None
    cert, ca = load_cert(generated.server_cert), load_cert(generated.ca_cert)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost", "atc.ns.svc"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usage
    cert.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    lifetime = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(days=89) < lifetime <= datetime.timedelta(days=90)


def test_the_key_is_private_to_the_owner(generated: TlsFiles) -> None:
    assert generated.server_key.stat().st_mode & 0o777 == 0o600


def test_tls_generate_dir_fills_in_paths_and_generates_missing_files(tmp_path: Path) -> None:
    settings = WebhookSettings(tls_generate_dir=str(tmp_path / "gen"), svc_name="hook", svc_namespace="ops")
    files = ensure_tls_files(settings)
    assert files == files_in(tmp_path / "gen")
    assert not files.missing()
    sans = load_cert(files.server_cert).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "hook.ops.svc" in sans.get_values_for_type(x509.DNSName)
    before = files.server_cert.read_bytes()
    assert ensure_tls_files(settings) == files
    assert files.server_cert.read_bytes() == before  # present files are kept


def test_explicit_paths_win_over_the_generate_dir(tmp_path: Path) -> None:
    settings = WebhookSettings(tls_generate_dir=str(tmp_path), tls_server_cert=str(tmp_path / "mine.pem"))
    files = resolve_tls_files(settings)
    assert files.server_cert == tmp_path / "mine.pem"
    assert files.server_key == tmp_path / "server.key"


def test_missing_files_without_a_generate_dir_are_an_error(tmp_path: Path) -> None:
    with pytest.raises(TlsSetupError, match="TLS_SERVER_CERT and TLS_SERVER_KEY are required"):
        resolve_tls_files(WebhookSettings())
    settings = WebhookSettings(tls_server_cert=str(tmp_path / "c.pem"), tls_server_key=str(tmp_path / "k.pem"))
    with pytest.raises(TlsSetupError, match="TLS file not found"):
        ensure_tls_files(settings)


# ----------------------------------------------------------------------------------------------- reload
def rotate(files: TlsFiles) -> int:
    """New CA and serving pair in place; returns the new certificate's serial number."""
    generate_certificates(files, ["localhost"], ["127.0.0.1"])
    return load_cert(files.server_cert).serial_number


async def presented_serial(port: int, server_hostname: str | None = None) -> int:
    """Serial number of the certificate the server presents on a fresh handshake."""
    client = ssl.create_default_context()
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname=server_hostname or "")
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der).serial_number
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()


@contextlib.asynccontextmanager
async def tls_server(context: ssl.SSLContext) -> AsyncIterator[int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def test_the_next_handshake_presents_the_rotated_certificate(generated: TlsFiles) -> None:
    reloader = CertificateReloader(generated.server_cert, generated.server_key)
    reloader.load()
    first = load_cert(generated.server_cert).serial_number
    async with tls_server(reloader.context) as port:
        assert await presented_serial(port) == first
        second = rotate(generated)
        assert await presented_serial(port) == first  # nothing reloads until the watcher looks
        assert reloader.reload_if_changed()
        assert await presented_serial(port) == second
        assert await presented_serial(port, "localhost") == second
        assert not reloader.reload_if_changed()  # unchanged files are not loaded again


async def test_a_mismatched_pair_keeps_the_current_certificate(generated: TlsFiles, tmp_path: Path) -> None:
    reloader = CertificateReloader(generated.server_cert, generated.server_key)
    reloader.load()
    first = load_cert(generated.server_cert).serial_number
    other = files_in(tmp_path / "other")
    generate_certificates(other, ["localhost"], ["127.0.0.1"])
    shutil.copy(other.server_cert, generated.server_cert)  # the new certificate landed, its key not yet
    async with tls_server(reloader.context) as port:
        assert not reloader.reload_if_changed()
        assert await presented_serial(port) == first
        shutil.copy(other.server_key, generated.server_key)
        assert reloader.reload_if_changed()
        assert await presented_serial(port) == load_cert(other.server_cert).serial_number


async def test_the_watcher_reloads_on_its_interval_and_reports_a_ca_change(generated: TlsFiles) -> None:
    clock, ca_changes = FakeClock(), []

    async def on_ca_change() -> None:
        ca_changes.append(True)

    reloader = CertificateReloader(
        generated.server_cert,
        generated.server_key,
        ca_file=generated.ca_cert,
        interval=3,
        clock=clock,
        on_ca_change=on_ca_change,
    )
    reloader.load()
    watcher = asyncio.create_task(reloader.run())
    try:
        second = rotate(generated)
        async with tls_server(reloader.context) as port:
            await clock.advance(3)
            await settle()
            assert await presented_serial(port) == second
            assert ca_changes == [True]
            assert clock.sleeps == [3, 3]
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)


def test_an_unusable_pair_fails_at_startup(tmp_path: Path) -> None:
    (tmp_path / "c.pem").write_text("not a certificate")
    (tmp_path / "k.pem").write_text("not a key")
    reloader = CertificateReloader(tmp_path / "c.pem", tmp_path / "k.pem")
    with pytest.raises(TlsSetupError, match="failed to load TLS certificate"):
        reloader.load()
    assert not reloader.loaded


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_uvicorn_serves_the_rotated_certificate_without_a_restart(generated: TlsFiles) -> None:
    reloader = CertificateReloader(generated.server_cert, generated.server_key)
    reloader.load()
    app, port = FastAPI(), free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        ssl_context_factory=lambda _config, _default: reloader.context,
        log_config=None,
        lifespan="off",
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:

        async def started() -> bool:
            return server.started

        await eventually(started, timeout=10, interval=0.01, what="uvicorn started")
        first = load_cert(generated.server_cert).serial_number
        assert await presented_serial(port) == first
        second = rotate(generated)
        reloader.reload_if_changed()
        assert await presented_serial(port) == second
    finally:
        server.should_exit = True
        await serving


def test_rotation_works_on_uvloop_as_the_service_runs(generated: TlsFiles) -> None:
    async def scenario() -> tuple[int, int]:
        reloader = CertificateReloader(generated.server_cert, generated.server_key)
        reloader.load()
        async with tls_server(reloader.context) as port:
            before = await presented_serial(port)
            rotate(generated)
            reloader.reload_if_changed()
            return before, await presented_serial(port)

    first = load_cert(generated.server_cert).serial_number
    before, after = uvloop.run(scenario())
    assert before == first
    assert after == load_cert(generated.server_cert).serial_number != first
