"""Module signatures (yoke's scheme): keys, fingerprints, every error string, hostile modules.

Modules are small WAT modules signed by ``tests/signing.py`` (which lays them out as ``yoke sign``
does); the interop with yoke's own CLI is in tests/integration/test_module_signing_interop.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import wasmtime
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils, x25519
from hypothesis import given, settings
from hypothesis import strategies as st
from signing import (
    SIGNATURE_SECTION,
    AlreadySignedError,
    PrivateKey,
    custom_section,
    key_fingerprint,
    payload,
    private_pem,
    public_pem,
    sign_digest,
    sign_module,
)

from atc.wasm.errors import ModuleVerificationError
from atc.wasm.sections import WasmFormatError, cut_custom_section, read_u32
from atc.wasm.signatures import (
    KeyFileError,
    VerificationKeys,
    fingerprint,
    load_verification_keys,
    parse_verification_keys,
    public_key_from_pem,
    verify_module,
)

WASM = bytes(wasmtime.wat2wasm('(module (memory (export "memory") 1) (func (export "_start")) (func (export "f")))'))
UNSIGNED = "failed to verify module: module is unsigned"
NO_KEY = "failed to verify module: module's key fingerprint does not match provided key(s)"
INVALID = "failed to verify module: invalid signature"
RSA_INVALID = "failed to verify module: crypto/rsa: verification error"


def ed25519_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def keys_of(*pems: str) -> VerificationKeys:
    return parse_verification_keys(json.dumps(list(pems)).encode())


def failure(keys: VerificationKeys, wasm: bytes) -> str:
    with pytest.raises(ModuleVerificationError) as error:
        verify_module(keys, wasm)
    return str(error.value)


# ----------------------------------------------------------------------------------------------- key types
KEY_MAKERS: dict[str, Callable[[], PrivateKey]] = {
    "ed25519": ed25519_key,
    "ecdsa-p256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "ecdsa-p384": lambda: ec.generate_private_key(ec.SECP384R1()),
}


@pytest.mark.parametrize("kind", sorted(KEY_MAKERS))
@pytest.mark.parametrize("form", ["public", "private"])
def test_ed25519_and_ecdsa_keys_verify_what_they_signed(kind: str, form: str) -> None:
    key = KEY_MAKERS[kind]()
    keys = keys_of(public_pem(key) if form == "public" else private_pem(key))
    assert list(keys.by_fingerprint) == [key_fingerprint(key)]
    verify_module(keys, sign_module(WASM, key))
    assert failure(keys, sign_module(WASM, KEY_MAKERS[kind]())) == NO_KEY


@pytest.mark.parametrize(
    ("form", "header"),
    [
        ("pkix", "PUBLIC KEY"),
        ("pkcs1", "RSA PUBLIC KEY"),
        ("pkcs8-private", "PRIVATE KEY"),
        ("pkcs1-private", "RSA PRIVATE KEY"),
    ],
)
def test_rsa_pss_keys_in_every_pem_form(rsa_key: rsa.RSAPrivateKey, form: str, header: str) -> None:
    pem = {
        "pkix": public_pem(rsa_key),
        "pkcs1": public_pem(rsa_key, pkcs1=True),
        "pkcs8-private": private_pem(rsa_key),
        "pkcs1-private": private_pem(rsa_key, pkcs1=True),
    }[form]
    assert pem.startswith(f"-----BEGIN {header}-----")
    keys = keys_of(pem)
    assert list(keys.by_fingerprint) == [key_fingerprint(rsa_key)]
    verify_module(keys, sign_module(WASM, rsa_key))


def test_rsa_pss_accepts_any_salt_length(rsa_key: rsa.RSAPrivateKey) -> None:
    digest = hashlib.sha256(WASM).digest()
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)
    signature = rsa_key.sign(digest, pss, utils.Prehashed(hashes.SHA256()))
    signed = WASM + custom_section(SIGNATURE_SECTION, payload(key_fingerprint(rsa_key), signature))
    verify_module(keys_of(public_pem(rsa_key)), signed)


def test_fingerprints_hash_the_subject_public_key_bits() -> None:
    key = ed25519_key()
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert fingerprint(key.public_key()) == hashlib.sha256(raw).hexdigest()
    # the same key in every PEM form has one fingerprint
    assert len(keys_of(public_pem(key), private_pem(key))) == 1


def test_several_keys_each_verify_their_own_modules(rsa_key: rsa.RSAPrivateKey) -> None:
    others: list[PrivateKey] = [ed25519_key(), ec.generate_private_key(ec.SECP256R1())]
    keys = keys_of(public_pem(rsa_key), *(public_pem(key) for key in others))
    for key in [rsa_key, *others]:
        verify_module(keys, sign_module(WASM, key))


# ----------------------------------------------------------------------------------------------- error strings
def test_unsigned_module() -> None:
    keys = keys_of(public_pem(ed25519_key()))
    assert failure(keys, WASM) == UNSIGNED
    assert failure(keys, WASM + custom_section(SIGNATURE_SECTION, b"")) == UNSIGNED  # empty payload
    assert failure(keys, WASM + custom_section("yoke.schematics.cmd:signature", b"{}")) == UNSIGNED
    assert failure(keys, WASM + custom_section("yoke.schematics:signature2", b"{}")) == UNSIGNED


@pytest.mark.parametrize(
    ("section_payload", "why"),
    [
        (b'{"Fingerprint": "SECRET-MARKER', "Unterminated string"),
        (b"SECRET-MARKER", "Expecting value"),
        (b'{"Fingerprint": 7, "Signature": "SECRET-MARKER"}', "Fingerprint must be a string, got number"),
        (b'{"Fingerprint": "ab", "Signature": "SECRET-MARKER!"}', "Signature is not valid base64"),
        (b'{"Fingerprint": "ab", "Signature": ["SECRET-MARKER"]}', "Signature must be a string, got array"),
        (b'["SECRET-MARKER"]', "expected a JSON object, got array"),
        (b'{"Fingerprint": NaN}', "NaN is not JSON"),
        (b"[" * 100_000, "not JSON"),
    ],
)
def test_bad_payloads_are_named_without_echoing_them(section_payload: bytes, why: str) -> None:
    message = failure(keys_of(public_pem(ed25519_key())), WASM + custom_section(SIGNATURE_SECTION, section_payload))
    assert message.startswith("failed to verify module: invalid signature payload: ")
    assert why in message
    assert "SECRET" not in message


def test_unknown_fingerprint() -> None:
    signer, trusted = ed25519_key(), ed25519_key()
    assert failure(keys_of(public_pem(trusted)), sign_module(WASM, signer)) == NO_KEY
    null_payload = WASM + custom_section(SIGNATURE_SECTION, b"null")  # Go leaves the fields empty
    assert failure(keys_of(public_pem(trusted)), null_payload) == NO_KEY


def test_payload_field_names_match_case_insensitively_like_go() -> None:
    key = ed25519_key()
    signature = sign_digest(key, hashlib.sha256(WASM).digest())
    document = {"fingerprint": key_fingerprint(key), "SIGNATURE": base64.b64encode(signature).decode()}
    verify_module(keys_of(public_pem(key)), WASM + custom_section(SIGNATURE_SECTION, json.dumps(document).encode()))


@pytest.mark.parametrize("kind", sorted(KEY_MAKERS))
def test_a_forged_signature_is_invalid(kind: str) -> None:
    key = KEY_MAKERS[kind]()
    keys = keys_of(public_pem(key))
    forged = WASM + custom_section(SIGNATURE_SECTION, payload(key_fingerprint(key), b"invalid"))
    assert failure(keys, forged) == INVALID  # yoke's own test: a payload with Signature "invalid"
    impostor = KEY_MAKERS[kind]()
    claimed = WASM + custom_section(
        SIGNATURE_SECTION, payload(key_fingerprint(key), sign_digest(impostor, hashlib.sha256(WASM).digest()))
    )
    assert failure(keys, claimed) == INVALID


def test_a_changed_module_fails_its_signature() -> None:
    key = ed25519_key()
    signed = bytearray(sign_module(WASM, key))
    signed[len(WASM) - 2] ^= 0x01  # inside the last original section, before the signature section
    assert failure(keys_of(public_pem(key)), bytes(signed)) == INVALID


def test_rsa_failures_read_as_yokes(rsa_key: rsa.RSAPrivateKey) -> None:
    keys = keys_of(public_pem(rsa_key))
    forged = WASM + custom_section(SIGNATURE_SECTION, payload(key_fingerprint(rsa_key), b"invalid"))
    assert failure(keys, forged) == RSA_INVALID
    good = sign_digest(rsa_key, hashlib.sha256(WASM).digest())
    shortened = WASM + custom_section(SIGNATURE_SECTION, payload(key_fingerprint(rsa_key), good[1:]))
    assert failure(keys, shortened) == RSA_INVALID
    other = sign_module(WASM + b"\x00\x01\x00", rsa_key)  # another module's signature
    moved = WASM + other[len(WASM) + 3 :]
    assert failure(keys, moved) == RSA_INVALID


def test_an_unsupported_key_type_in_the_set() -> None:
    key = x25519.X25519PrivateKey.generate().public_key()
    keys = VerificationKeys({"ab": key})  # type: ignore[dict-item]  # load never accepts one: verify says so
    assert failure(keys, WASM + custom_section(SIGNATURE_SECTION, payload("ab", b"x"))) == (
        "failed to verify module: unsupported key"
    )


# ----------------------------------------------------------------------------------------------- sections
def test_only_the_first_signature_section_is_removed() -> None:
    key = ed25519_key()
    keys = keys_of(public_pem(key))
    decoy = custom_section(SIGNATURE_SECTION, b'{"Fingerprint": "decoy"}')
    # signed over the module with the decoy: the decoy is not the first section named so, so it is kept
    body = WASM + decoy
    signature = sign_digest(key, hashlib.sha256(body).digest())
    first = custom_section(SIGNATURE_SECTION, payload(key_fingerprint(key), signature))
    verify_module(keys, WASM + first + decoy)
    # the first section is the one read: a decoy in front makes the module fail
    assert failure(keys, WASM + decoy + first) == NO_KEY


def test_the_section_is_cut_wherever_it_is_and_the_rest_kept_verbatim() -> None:
    key = ed25519_key()
    header, rest = WASM[:8], WASM[8:]
    signature = sign_digest(key, hashlib.sha256(WASM).digest())
    section = custom_section(SIGNATURE_SECTION, payload(key_fingerprint(key), signature))
    in_front = header + section + rest
    verify_module(keys_of(public_pem(key)), in_front)
    cut = cut_custom_section(in_front, SIGNATURE_SECTION)
    assert cut is not None
    assert bytes(cut.before) + bytes(cut.after) == WASM
    wasmtime.Module(wasmtime.Engine(), in_front)  # a custom section anywhere is valid wasm


def test_signing_twice_needs_force_and_keeps_one_signature() -> None:
    key = ed25519_key()
    signed = sign_module(WASM, key)
    with pytest.raises(AlreadySignedError):
        sign_module(signed, key)
    resigned = sign_module(signed, key, force=True)
    assert resigned.count(SIGNATURE_SECTION.encode()) == 1
    verify_module(keys_of(public_pem(key)), resigned)


@pytest.mark.parametrize(
    ("wasm", "why"),
    [
        (b"", "not a WebAssembly module"),
        (b"hello world, not wasm", "not a WebAssembly module"),
        (b"\x00asm\x02\x00\x00\x00", "not a WebAssembly module"),
        (WASM[:8] + b"\x01\xff\xff\xff\xff\xff\x01", "longer than 5 bytes"),
        (WASM[:8] + b"\x01\xff\xff\xff\xff\x7f", "does not fit in 32 bits"),
        (WASM[:8] + b"\x01\x80", "unexpected end of module"),
        (WASM[:8] + b"\x01\x10\x00", "runs past the end of the module"),
        (WASM[:8] + b"\x00\x02\x05ab", "name longer than the section"),
    ],
)
def test_malformed_modules_get_a_clear_error(wasm: bytes, why: str) -> None:
    message = failure(keys_of(public_pem(ed25519_key())), wasm)
    assert message.startswith("failed to verify module: invalid wasm module: ")
    assert why in message


def test_every_truncation_of_a_signed_module_fails_cleanly() -> None:
    key = ed25519_key()
    keys = keys_of(public_pem(key))
    signed = sign_module(WASM, key)
    for length in range(len(signed)):
        with pytest.raises(ModuleVerificationError):
            verify_module(keys, signed[:length])


_KEYS_FOR_FUZZ = keys_of(public_pem(ed25519_key()))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64), st.booleans())
def test_garbage_raises_only_module_errors(garbage: bytes, with_header: bool) -> None:
    wasm = WASM[:8] + garbage if with_header else garbage
    with pytest.raises(ModuleVerificationError):  # and nothing else: no IndexError, no ValueError
        verify_module(_KEYS_FOR_FUZZ, wasm)


def test_leb128_reads_u32_values() -> None:
    assert read_u32(b"\xe5\x8e\x26", 0) == (624485, 3)
    assert read_u32(b"\x80\x80\x80\x80\x00", 0) == (0, 5)  # padded encodings are valid wasm
    assert read_u32(b"\xff\xff\xff\xff\x0f", 0) == (2**32 - 1, 5)
    with pytest.raises(WasmFormatError):
        read_u32(b"\xff\xff\xff\xff\x1f", 0)


# ----------------------------------------------------------------------------------------------- key files
def test_key_file_round_trip(tmp_path: Path) -> None:
    key = ed25519_key()
    path = tmp_path / "keys.json"
    path.write_text(json.dumps([public_pem(key)]))
    assert list(load_verification_keys(path).by_fingerprint) == [key_fingerprint(key)]


def _small_rsa_pem() -> str:
    numbers = rsa.RSAPublicNumbers(65537, (2**511) + 111)
    return public_pem(numbers.public_key())


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"not json", "not valid JSON"),
        (b'{"keys": []}', "not a JSON array of PEM strings"),
        (b"[1]", "not a JSON array of PEM strings"),
        (b"[]", "the array holds no keys"),
        (b'["no pem here"]', "failed to parse key at position 0: failed to decode PEM"),
        (
            json.dumps(["-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"]).encode(),
            "failed to parse key at position 0: unsupported key type: 'CERTIFICATE'",
        ),
        (
            json.dumps(["-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"]).encode(),
            "failed to parse key at position 0: invalid PUBLIC KEY",
        ),
    ],
)
def test_bad_key_files_say_what_is_wrong(tmp_path: Path, content: bytes, why: str) -> None:
    path = tmp_path / "keys.json"
    path.write_bytes(content)
    with pytest.raises(KeyFileError) as error:
        load_verification_keys(path)
    assert why in str(error.value)


def test_key_types_yoke_cannot_verify_with_are_refused() -> None:
    secp256k1 = ec.generate_private_key(ec.SECP256K1())
    with pytest.raises(KeyFileError, match="unsupported elliptic curve secp256k1"):
        public_key_from_pem(public_pem(secp256k1))
    with pytest.raises(KeyFileError, match="unsupported key type"):
        public_key_from_pem(public_pem(x25519.X25519PrivateKey.generate()))  # type: ignore[arg-type]
    with pytest.raises(KeyFileError, match="RSA key of 512 bits is too short"):
        public_key_from_pem(_small_rsa_pem())
    encrypted = ed25519_key().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")
    )
    with pytest.raises(KeyFileError, match="unsupported key type: 'ENCRYPTED PRIVATE KEY'"):
        public_key_from_pem(encrypted.decode())


def test_the_second_key_of_a_file_is_named_by_position() -> None:
    with pytest.raises(KeyFileError, match="failed to parse key at position 1: failed to decode PEM"):
        keys_of(public_pem(ed25519_key()), "garbage")


def test_missing_and_unreadable_key_files(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="no such file"):
        load_verification_keys(tmp_path / "absent.json")
    with pytest.raises(KeyFileError, match="cannot read"):
        load_verification_keys(tmp_path)  # a directory
    big = tmp_path / "big.json"
    big.write_bytes(b" " * ((1 << 20) + 1))
    with pytest.raises(KeyFileError, match="larger than"):
        load_verification_keys(big)


def test_pem_text_around_the_block_is_ignored() -> None:
    key = ed25519_key()
    pem = "comment line\n" + public_pem(key).replace("\n", "\r\n") + "trailing"
    assert fingerprint(public_key_from_pem(pem)) == key_fingerprint(key)
