"""The local control plane's PKI, on the project's one certificate helper (``atc.service.certificates``).

Used by the launcher (``devcluster.cluster``) to create the cluster CA, the apiserver serving
certificate, the admin client certificate and the service-account signing key, and by tests to issue
serving certificates for webhooks that kube-apiserver calls on 127.0.0.1.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization

from atc.service.certificates import CertificateAuthority, KeyPair, key_pem, new_key

__all__ = ["CertificateAuthority", "KeyPair", "new_ca", "service_account_keys"]


def new_ca(common_name: str = "devcluster-ca") -> CertificateAuthority:
    """A fresh cluster CA (ten years, no path length limit)."""
    return CertificateAuthority.create(common_name)


def service_account_keys() -> tuple[bytes, bytes]:
    """The (public PEM, private PEM) pair kube-apiserver signs service-account tokens with."""
    key = new_key()
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return public, key_pem(key)
