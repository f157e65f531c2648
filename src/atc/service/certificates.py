"""X.509 certificates and EC keys made with ``cryptography``: the one certificate helper of the project.

``CertificateAuthority`` is a self-signed CA (new, or loaded from PEM) that issues serving and client
certificates as ``KeyPair``s (PEM certificate, PEM PKCS#8 key). Keys are ECDSA P-256, signatures
SHA-256, validity starts five minutes in the past (clock skew). Callers: the webhook's self-signed
TLS for local runs (``atc_webhook.tls``) and the local control plane's PKI (``tools/devcluster``).
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

BACKDATE = datetime.timedelta(minutes=5)
CA_DAYS = 3650
LEAF_DAYS = 365


@dataclass(frozen=True)
class KeyPair:
    """A PEM certificate and its PEM (PKCS#8) private key."""

    cert_pem: bytes
    key_pem: bytes

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        """Write ``<stem>.crt`` and ``<stem>.key`` (mode 0600) into ``directory``."""
        cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
        cert_path.write_bytes(self.cert_pem)
        key_path.write_bytes(self.key_pem)
        key_path.chmod(0o600)
        return cert_path, key_path


def new_key() -> ec.EllipticCurvePrivateKey:
    """A fresh ECDSA P-256 private key."""
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The private key as unencrypted PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def distinguished_name(common_name: str, organizations: Sequence[str] = ()) -> x509.Name:
    """CN plus one O per organization (Kubernetes reads O as the client's groups)."""
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    attributes += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    return x509.Name(attributes)


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, days: int
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=days))
    )


_CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


class CertificateAuthority:
    """A self-signed CA that signs serving and client certificates."""

    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self._cert = cert
        self._key = key

    @classmethod
    def create(cls, common_name: str, *, days: int = CA_DAYS, path_length: int | None = None) -> CertificateAuthority:
        """A new CA; ``path_length=0`` forbids intermediate CAs below it."""
        key = new_key()
        name = distinguished_name(common_name)
        cert = (
            _builder(name, name, key.public_key(), days)
            .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
            .add_extension(_CA_KEY_USAGE, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def load(cls, cert_pem: bytes, key_pem_bytes: bytes) -> CertificateAuthority:
        """An existing CA (e.g. a cluster's, to sign a client certificate for a test user)."""
        key = serialization.load_pem_private_key(key_pem_bytes, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise TypeError("only EC CA keys are supported")
        return cls(x509.load_pem_x509_certificate(cert_pem), key)

    @property
    def cert_pem(self) -> bytes:
        return self._cert.public_bytes(serialization.Encoding.PEM)

    @property
    def keypair(self) -> KeyPair:
        return KeyPair(self.cert_pem, key_pem(self._key))

    def _issue(
        self, subject: x509.Name, sans: list[x509.GeneralName], usages: list[x509.ObjectIdentifier], days: int
    ) -> KeyPair:
        key = new_key()
        builder = (
            _builder(subject, self._cert.subject, key.public_key(), days)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        return KeyPair(cert.public_bytes(serialization.Encoding.PEM), key_pem(key))

    def issue_serving(
        self, common_name: str, dns_names: Sequence[str] = (), ips: Sequence[str] = (), *, days: int = LEAF_DAYS
    ) -> KeyPair:
        """A TLS server certificate for these DNS names and IP addresses."""
        sans: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        return self._issue(distinguished_name(common_name), sans, [ExtendedKeyUsageOID.SERVER_AUTH], days)

    def issue_client(self, common_name: str, organizations: Sequence[str] = (), *, days: int = LEAF_DAYS) -> KeyPair:
        """A TLS client certificate: CN is the user, each O a group."""
        name = distinguished_name(common_name, organizations)
        return self._issue(name, [], [ExtendedKeyUsageOID.CLIENT_AUTH], days)
