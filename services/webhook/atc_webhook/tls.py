"""The webhook's TLS: where the certificate files are, generating them for local runs, reloading them live.

- ``resolve_tls_files(settings)``: the CA, certificate and key paths (``TLS_*``,
  or the files in ``TLS_GENERATE_DIR`` for those left empty);
- ``ensure_tls_files(settings)``: with ``TLS_GENERATE_DIR``, generate a CA and a
  serving certificate (SANs ``127.0.0.1``, ``localhost``, ``<svc>.<ns>.svc``)
  when a file is missing;
- ``CertificateReloader``: the ``ssl.SSLContext`` uvicorn listens with. A watcher
  task compares the files' inode, mtime and size every ``TLS_RELOAD_SECONDS``;
  on a change it loads the new pair into a *fresh* context (a half-written or
  mismatched pair is rejected and the old one kept) and the listening context's
  SNI callback, which OpenSSL calls on every ClientHello (with or without SNI),
  moves each new handshake onto the newest context. Established connections keep
  the certificate they were opened with; no restart.

``atc_webhook.server`` calls ``ensure_tls_files`` at startup and runs the reloader.
"""

from __future__ import annotations

import datetime
import logging
import os
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from atc.model.clock import Clock, MonotonicClock
from atc.service.certificates import CertificateAuthority

from . import metrics
from .settings import WebhookSettings

log = logging.getLogger("atc.webhook.tls")

GENERATED_CA = "ca.crt"
GENERATED_CERT = "server.crt"
GENERATED_KEY = "server.key"
CA_DAYS = 365
SERVING_DAYS = 90

Fingerprint = tuple[tuple[int, int, int], ...]


class TlsSetupError(RuntimeError):
    """The TLS files are missing or unusable and cannot be generated."""


@dataclass(frozen=True)
class TlsFiles:
    """The PEM files the webhook serves with; ``ca_cert`` is None when no CA file is configured."""

    ca_cert: Path | None
    server_cert: Path
    server_key: Path

    def missing(self) -> list[Path]:
        paths = [self.server_cert, self.server_key, *([self.ca_cert] if self.ca_cert else [])]
        return [path for path in paths if not path.is_file()]


# ----------------------------------------------------------------------------------------------- files
def resolve_tls_files(settings: WebhookSettings) -> TlsFiles:
    """``TLS_*`` paths; with ``TLS_GENERATE_DIR``, empty ones default to that directory's files."""
    generate = Path(settings.tls_generate_dir) if settings.tls_generate_dir else None

    def pick(explicit: str, default_name: str) -> Path | None:
        if explicit:
            return Path(explicit)
        return generate / default_name if generate else None

    cert, key = pick(settings.tls_server_cert, GENERATED_CERT), pick(settings.tls_server_key, GENERATED_KEY)
    if cert is None or key is None:
        raise TlsSetupError("TLS_SERVER_CERT and TLS_SERVER_KEY are required (or set TLS_GENERATE_DIR)")
    return TlsFiles(pick(settings.tls_ca_cert, GENERATED_CA), cert, key)


def serving_names(settings: WebhookSettings) -> tuple[list[str], list[str]]:
    """DNS names and IP addresses a generated serving certificate covers."""
    service = f"{settings.svc_name}.{settings.svc_namespace}.svc"
    return ["localhost", service, f"{service}.cluster.local"], ["127.0.0.1"]


def ensure_tls_files(settings: WebhookSettings) -> TlsFiles:
    """The TLS files, generated first when ``TLS_GENERATE_DIR`` is set and one of them is missing."""
    files = resolve_tls_files(settings)
    missing = files.missing()
    if not missing:
        return files
    if not settings.tls_generate_dir:
        raise TlsSetupError(f"TLS file not found: {missing[0]}")
    dns_names, ips = serving_names(settings)
    generate_certificates(files, dns_names, ips)
    log.info("generated a CA and a serving certificate", extra={"dir": settings.tls_generate_dir, "dns": dns_names})
    return files


def _write_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    temporary.chmod(mode)
    os.replace(temporary, path)


def generate_certificates(files: TlsFiles, dns_names: Sequence[str], ips: Sequence[str]) -> None:
    """Write a new CA (when ``files.ca_cert`` is set) and a serving certificate and key signed by it."""
    ca = CertificateAuthority.create("atc-webhook-ca", days=CA_DAYS, path_length=0)
    serving = ca.issue_serving(dns_names[0] if dns_names else "atc-webhook", dns_names, ips, days=SERVING_DAYS)
    _write_atomically(files.server_key, serving.key_pem, 0o600)
    _write_atomically(files.server_cert, serving.cert_pem)
    if files.ca_cert:
        _write_atomically(files.ca_cert, ca.cert_pem)


# ----------------------------------------------------------------------------------------------- reloading
def _fingerprint(paths: Sequence[Path]) -> Fingerprint | None:
    """Inode, mtime and size of each file (following symlinks, as Secret volumes swap them); None if one is missing."""
    try:
        stats = [path.stat() for path in paths]
    except OSError:
        return None
    return tuple((stat.st_ino, stat.st_mtime_ns, stat.st_size) for stat in stats)


def _not_after(cert_file: Path) -> datetime.datetime | None:
    try:
        return x509.load_pem_x509_certificate(cert_file.read_bytes()).not_valid_after_utc
    except (OSError, ValueError):
        return None


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A TLS 1.2+ server context holding one certificate and key (raises when the pair is unusable)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert_file), str(key_file))
    return context


class CertificateReloader:
    """The listening ``SSLContext``; new handshakes use the newest certificate pair found on disk."""

    def __init__(
        self,
        cert_file: Path,
        key_file: Path,
        *,
        ca_file: Path | None = None,
        interval: float = 5.0,
        clock: Clock | None = None,
        on_ca_change: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.ca_file = ca_file
        self.interval = interval
        self._clock: Clock = clock or MonotonicClock()
        self._on_ca_change = on_ca_change
        self._listening: ssl.SSLContext | None = None
        self._current: ssl.SSLContext | None = None
        self._loaded_fingerprint: Fingerprint | None = None
        self._ca_fingerprint = _fingerprint([ca_file]) if ca_file else None

    @property
    def loaded(self) -> bool:
        """Whether a certificate pair is loaded (readiness)."""
        return self._current is not None

    @property
    def context(self) -> ssl.SSLContext:
        """The context to listen with (``load`` first)."""
        if self._listening is None:
            raise TlsSetupError("no certificate loaded yet")
        return self._listening

    def load(self) -> None:
        """Load the pair for the first time; raises ``TlsSetupError`` when it is unusable."""
        fingerprint = _fingerprint([self.cert_file, self.key_file])
        try:
            listening = server_context(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise TlsSetupError(
                f"failed to load TLS certificate {self.cert_file} and key {self.key_file}: {exc}"
            ) from exc
        listening.sni_callback = self._select
        self._listening = self._current = listening
        self._loaded_fingerprint = fingerprint
        self._observe()

    def _select(self, connection: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext) -> None:
        """SNI callback, called on every ClientHello: hand the handshake to the newest context."""
        current = self._current
        if current is not None and current is not self._listening:
            connection.context = current

    def reload_if_changed(self) -> bool:
        """Load the files again if they changed since the last successful load; True when a new pair is in use."""
        fingerprint = _fingerprint([self.cert_file, self.key_file])
        if fingerprint is None or fingerprint == self._loaded_fingerprint:
            return False
        try:
            fresh = server_context(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            metrics.TLS_RELOADS.labels(result="error").inc()
            log.warning("keeping the current certificate: the new files do not load", extra={"error": str(exc)})
            return False
        self._current = fresh
        self._loaded_fingerprint = fingerprint
        metrics.TLS_RELOADS.labels(result="success").inc()
        self._observe()
        log.info("serving certificate reloaded", extra={"cert": str(self.cert_file)})
        return True

    def _observe(self) -> None:
        not_after = _not_after(self.cert_file)
        if not_after is not None:
            metrics.TLS_NOT_AFTER.set(not_after.timestamp())

    async def _check_ca(self) -> None:
        if self.ca_file is None:
            return
        fingerprint = _fingerprint([self.ca_file])
        if fingerprint is None or fingerprint == self._ca_fingerprint:
            return
        self._ca_fingerprint = fingerprint
        log.info("CA certificate changed", extra={"ca": str(self.ca_file)})
        if self._on_ca_change is not None:
            await self._on_ca_change()

    async def run(self) -> None:
        """Check the files every ``interval`` seconds until cancelled."""
        while True:
            await self._clock.sleep(self.interval)
            self.reload_if_changed()
            await self._check_ca()
