"""Sign flight modules the way ``yoke sign`` does, for tests only (the product only verifies).

``sign_module(wasm, private_key)`` drops the first ``yoke.schematics:signature`` custom section,
signs the sha256 of what is left (RSA-PSS with the largest salt, ECDSA as ASN.1, Ed25519 over the
32 digest bytes), drops every other custom section named ``signature`` under yoke's two prefixes
and appends a new ``yoke.schematics:signature`` section holding ``{"Fingerprint","Signature"}``
as compact JSON. ``key_fingerprint`` computes the key id from the key's raw encoding (PKCS #1 for
RSA, the uncompressed point for ECDSA, the 32 raw bytes for Ed25519), independently of
``atc.wasm.signatures``. ``custom_section`` and ``public_pem``/``private_pem`` help tests build
hostile modules and key files. Imported by ``tests/unit/test_module_signatures.py`` and the
interop tests (``tests`` is on pytest's pythonpath).
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils

from atc.wasm.sections import CUSTOM_SECTION_ID, HEADER_SIZE, custom_section_name, cut_custom_section, sections

SIGNATURE_SECTION = "yoke.schematics:signature"
YOKE_PREFIXES = ("yoke.schematics:", "yoke.schematics.cmd:")
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


class AlreadySignedError(ValueError):
    """The module carries a signature and ``force`` was not given (yoke: ``module is already signed``)."""


def uleb128(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def custom_section(name: str, payload: bytes) -> bytes:
    """The bytes of one custom section: id 0, size, name, payload."""
    raw_name = name.encode()
    body = uleb128(len(raw_name)) + raw_name + payload
    return bytes([CUSTOM_SECTION_ID]) + uleb128(len(body)) + body


def key_fingerprint(key: PublicKey | PrivateKey) -> str:
    public: Any = key.public_key() if not isinstance(key, PublicKey) else key
    if isinstance(public, rsa.RSAPublicKey):
        raw = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        raw = public.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    else:
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def sign_digest(key: PrivateKey, digest: bytes) -> bytes:
    prehashed = utils.Prehashed(hashes.SHA256())
    if isinstance(key, rsa.RSAPrivateKey):
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.MAX_LENGTH)
        return key.sign(digest, pss, prehashed)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(digest, ec.ECDSA(prehashed))
    return key.sign(digest)


def payload(fingerprint: str, signature: bytes) -> bytes:
    """The section payload as Go's encoding/json writes it: compact, fields in order, base64 bytes."""
    document = {"Fingerprint": fingerprint, "Signature": base64.b64encode(signature).decode("ascii")}
    return json.dumps(document, separators=(",", ":")).encode()


def _without_signature_sections(wasm: bytes) -> bytes:
    kept = bytearray(wasm[:HEADER_SIZE])
    for section in sections(wasm):
        if section.id == CUSTOM_SECTION_ID:
            name, _ = custom_section_name(wasm, section)
            if any(name == (prefix + "signature").encode() for prefix in YOKE_PREFIXES):
                continue
        kept += wasm[section.start : section.end]
    return bytes(kept)


def sign_module(wasm: bytes, key: PrivateKey, *, force: bool = False) -> bytes:
    """``wasm`` signed with ``key`` exactly as ``yoke sign`` (``-f`` is ``force``) lays it out."""
    cut = cut_custom_section(wasm, SIGNATURE_SECTION)
    if cut is not None and len(cut.payload) and not force:
        raise AlreadySignedError("module is already signed")
    unsigned = wasm if cut is None else bytes(cut.before) + bytes(cut.after)
    signature = sign_digest(key, hashlib.sha256(unsigned).digest())
    section = custom_section(SIGNATURE_SECTION, payload(key_fingerprint(key), signature))
    return _without_signature_sections(unsigned) + section


def public_pem(key: PublicKey | PrivateKey, *, pkcs1: bool = False) -> str:
    """``PUBLIC KEY`` (PKIX), or ``RSA PUBLIC KEY`` (PKCS #1) with ``pkcs1``."""
    public: Any = key.public_key() if not isinstance(key, PublicKey) else key
    form = serialization.PublicFormat.PKCS1 if pkcs1 else serialization.PublicFormat.SubjectPublicKeyInfo
    return str(public.public_bytes(serialization.Encoding.PEM, form).decode("ascii"))


def private_pem(key: PrivateKey, *, pkcs1: bool = False) -> str:
    """``PRIVATE KEY`` (PKCS #8), or ``RSA PRIVATE KEY`` (PKCS #1) with ``pkcs1``."""
    form = serialization.PrivateFormat.TraditionalOpenSSL if pkcs1 else serialization.PrivateFormat.PKCS8
    encoded = key.private_bytes(serialization.Encoding.PEM, form, serialization.NoEncryption())
    return encoded.decode("ascii")
