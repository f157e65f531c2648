"""Module signatures, yoke's scheme: verification keys and the check of a signed module.

``load_verification_keys(path)`` reads ``MODULE_VERIFICATION_KEYS_PATH`` (a JSON array of PEM keys)
at start-up, through ``atc.service.settings.load_module_verification_keys``; ``verify_module(keys, wasm)`` is
called by the module cache (``atc.wasm.cache``) before a module is compiled or served. The scheme,
the precedence of the allow-list and the error strings are in docs/flight-runtime.md, "Module
signatures":

- a key's fingerprint is the sha256 (hex) of the subjectPublicKey bytes of its
  SubjectPublicKeyInfo;
- a signed module is the original module plus a custom section ``yoke.schematics:signature``
  holding JSON ``{"Fingerprint": "<hex>", "Signature": "<base64>"}``;
- the signed digest is the sha256 of the module without that section: RSA-PSS (SHA-256, any salt
  length) and ECDSA (ASN.1) sign the digest as a SHA-256 prehash, Ed25519 signs the 32 digest
  bytes as its message.

Messages never repeat module bytes or payload contents.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils

from .errors import ModuleVerificationError
from .sections import WasmFormatError, cut_custom_section

SIGNATURE_SECTION = "yoke.schematics:signature"
MAX_KEY_FILE_BYTES = 1 << 20
MAX_PAYLOAD_BYTES = 1 << 20
MIN_RSA_BITS = 1024
RSA_VERIFICATION_FAILED = "crypto/rsa: verification error"  # the text yoke shows for a bad RSA signature
SUPPORTED_CURVES = (ec.SECP224R1, ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)

PublicKey: TypeAlias = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
_PEM_BLOCK = re.compile(r"-----BEGIN ([^\r\n]*?)-----[ \t]*\r?\n(.*?)-----END \1-----", re.DOTALL)
_PEM_WHITESPACE = re.compile(r"[ \t\r\n]")


class KeyFileError(ValueError):
    """The verification key file is missing, unreadable or malformed; the message says why."""


# ----------------------------------------------------------------------------------------------- keys
@dataclass(frozen=True, eq=False)
class VerificationKeys:
    """Public keys by fingerprint; ``identity`` names the set (the module cache memoises verdicts by it)."""

    by_fingerprint: Mapping[str, PublicKey]

    @functools.cached_property
    def identity(self) -> str:
        return hashlib.sha256("\n".join(sorted(self.by_fingerprint)).encode()).hexdigest()

    def __len__(self) -> int:
        return len(self.by_fingerprint)


def load_verification_keys(path: Path) -> VerificationKeys:
    """The keys of a ``MODULE_VERIFICATION_KEYS_PATH`` file; ``KeyFileError`` says what is wrong."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_KEY_FILE_BYTES + 1)
    except FileNotFoundError:
        raise KeyFileError(f"no such file {str(path)!r}") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise KeyFileError(f"{str(path)!r} is larger than {MAX_KEY_FILE_BYTES} bytes")
    return parse_verification_keys(data)


def parse_verification_keys(data: bytes) -> VerificationKeys:
    """Keys from the JSON array of PEM strings (public keys, or private keys whose public half is used)."""
    try:
        pems = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise KeyFileError(f"not valid JSON: {exc}") from None
    if not isinstance(pems, list) or not all(isinstance(item, str) for item in pems):
        raise KeyFileError("not a JSON array of PEM strings")
    if not pems:
        raise KeyFileError("the array holds no keys")
    keys: dict[str, PublicKey] = {}
    for position, pem in enumerate(pems):
        try:
            key = public_key_from_pem(pem)
            keys[fingerprint(key)] = key
        except ValueError as exc:  # KeyFileError, or a SubjectPublicKeyInfo we cannot read
            raise KeyFileError(f"failed to parse key at position {position}: {exc}") from None
    return VerificationKeys(keys)


def _first_pem_block(text: str) -> tuple[str, bool, bytes]:
    """Type, whether it has headers (e.g. an encrypted key), and DER of the first decodable PEM block."""
    for match in _PEM_BLOCK.finditer(text):
        body = match.group(2)
        lines = [line for line in body.splitlines() if line.strip()]
        has_headers = any(":" in line for line in lines)
        encoded = "".join(line for line in lines if ":" not in line)
        try:
            der = base64.b64decode(_PEM_WHITESPACE.sub("", encoded), validate=True)
        except (binascii.Error, ValueError):
            continue
        return match.group(1), has_headers, der
    raise KeyFileError("failed to decode PEM")


def _pem(kind: str, der: bytes) -> bytes:
    body = base64.encodebytes(der).decode("ascii")
    return f"-----BEGIN {kind}-----\n{body}-----END {kind}-----\n".encode()


def public_key_from_pem(text: str) -> PublicKey:
    """The public key of the first PEM block: PUBLIC KEY (PKIX), RSA PUBLIC KEY (PKCS #1), or the
    public half of PRIVATE KEY (PKCS #8) / RSA PRIVATE KEY (PKCS #1)."""
    kind, has_headers, der = _first_pem_block(text)
    if kind not in ("PUBLIC KEY", "RSA PUBLIC KEY", "PRIVATE KEY", "RSA PRIVATE KEY"):
        raise KeyFileError(f"unsupported key type: {kind[:40]!r}")
    if has_headers:
        raise KeyFileError(f"invalid {kind}: encrypted or annotated PEM blocks are not supported")
    try:
        if kind.endswith("PUBLIC KEY"):
            loaded: Any = serialization.load_pem_public_key(_pem(kind, der))
        else:
            loaded = serialization.load_pem_private_key(_pem(kind, der), password=None).public_key()
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(f"invalid {kind}: {exc}") from None
    return _checked(loaded)


def _checked(key: Any) -> PublicKey:
    """Only the key types yoke verifies with: RSA (>= 1024 bits), ECDSA on a NIST curve, Ed25519."""
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise KeyFileError(f"RSA key of {key.key_size} bits is too short (at least {MIN_RSA_BITS})")
        return key
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, SUPPORTED_CURVES):
            raise KeyFileError(f"unsupported elliptic curve {key.curve.name}")
        return key
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    raise KeyFileError("unsupported key type")


def fingerprint(key: PublicKey) -> str:
    """sha256 hex of the subjectPublicKey BIT STRING contents of the key's SubjectPublicKeyInfo."""
    spki = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(_subject_public_key(spki)).hexdigest()


def _der_element(der: bytes, offset: int, tag: int) -> tuple[int, int]:
    """Start and end of the contents of the DER element with ``tag`` at ``offset``."""
    if offset + 2 > len(der) or der[offset] != tag:
        raise ValueError("unexpected DER element")
    length, start = der[offset + 1], offset + 2
    if length & 0x80:
        count = length & 0x7F
        if not 0 < count <= 4 or start + count > len(der):
            raise ValueError("bad DER length")
        length, start = int.from_bytes(der[start : start + count], "big"), start + count
    if start + length > len(der):
        raise ValueError("DER element overruns")
    return start, start + length


def _subject_public_key(spki: bytes) -> bytes:
    """The BIT STRING bytes (without the unused-bits octet) of SEQUENCE { AlgorithmIdentifier, BIT STRING }."""
    start, _ = _der_element(spki, 0, 0x30)
    _, algorithm_end = _der_element(spki, start, 0x30)
    bits_start, bits_end = _der_element(spki, algorithm_end, 0x03)
    if bits_end <= bits_start or spki[bits_start] != 0:
        raise ValueError("subjectPublicKey is not a whole number of bytes")
    return spki[bits_start + 1 : bits_end]


# ----------------------------------------------------------------------------------------------- modules
@dataclass(frozen=True)
class _Payload:
    fingerprint: str
    signature: bytes


def verify_module(keys: VerificationKeys, wasm: bytes) -> None:
    """Raise ``ModuleVerificationError`` unless ``wasm`` carries a valid signature by one of ``keys``."""
    try:
        cut = cut_custom_section(wasm, SIGNATURE_SECTION)
    except WasmFormatError as exc:
        raise ModuleVerificationError(f"invalid wasm module: {exc}") from None
    if cut is None or not len(cut.payload):
        raise ModuleVerificationError("module is unsigned")
    payload = _parse_payload(cut.payload)
    key = keys.by_fingerprint.get(payload.fingerprint)
    if key is None:
        raise ModuleVerificationError("module's key fingerprint does not match provided key(s)")
    digest = hashlib.sha256(cut.before)
    digest.update(cut.after)
    _check_signature(key, digest.digest(), payload.signature)


def _parse_payload(raw: memoryview) -> _Payload:
    """``{"Fingerprint": str, "Signature": base64}``; keys match case-insensitively, null means absent."""
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise ModuleVerificationError(f"invalid signature payload: larger than {MAX_PAYLOAD_BYTES} bytes")
    try:
        document = json.loads(bytes(raw).decode("utf-8", errors="replace"), parse_constant=_no_constants)
    except json.JSONDecodeError as exc:
        raise ModuleVerificationError(f"invalid signature payload: {exc.msg}") from None
    except (ValueError, RecursionError) as exc:  # NaN/Infinity (our message), or nesting too deep
        reason = str(exc) if isinstance(exc, ValueError) else "not JSON: nested too deeply"
        raise ModuleVerificationError(f"invalid signature payload: {reason}") from None
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ModuleVerificationError(f"invalid signature payload: expected a JSON object, got {_json_type(document)}")
    fields: dict[str, Any] = {}
    for key, value in document.items():
        for wanted in ("Fingerprint", "Signature"):
            if key.casefold() == wanted.casefold():
                fields[wanted] = value
    return _Payload(_fingerprint_field(fields.get("Fingerprint")), _signature_field(fields.get("Signature")))


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else "value"


def _fingerprint_field(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ModuleVerificationError(
            f"invalid signature payload: Fingerprint must be a string, got {_json_type(value)}"
        )
    return value


def _signature_field(value: Any) -> bytes:
    if value is None:
        return b""
    if not isinstance(value, str):
        raise ModuleVerificationError(f"invalid signature payload: Signature must be a string, got {_json_type(value)}")
    try:
        return base64.b64decode(value.replace("\r", "").replace("\n", ""), validate=True)
    except (binascii.Error, ValueError):
        raise ModuleVerificationError("invalid signature payload: Signature is not valid base64") from None


def _check_signature(key: PublicKey, digest: bytes, signature: bytes) -> None:
    prehashed = utils.Prehashed(hashes.SHA256())
    try:
        if isinstance(key, rsa.RSAPublicKey):
            if len(signature) != (key.key_size + 7) // 8:
                raise InvalidSignature
            pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO)
            key.verify(signature, digest, pss, prehashed)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, digest, ec.ECDSA(prehashed))
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, digest)
        else:
            raise ModuleVerificationError("unsupported key")
    except InvalidSignature:
        failed = RSA_VERIFICATION_FAILED if isinstance(key, rsa.RSAPublicKey) else "invalid signature"
        raise ModuleVerificationError(failed) from None
