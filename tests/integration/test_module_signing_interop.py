"""Module signatures against the real ``yoke`` CLI (v0.20.12): ``yoke sign`` and ``yoke verify``.

Modules signed by ``yoke sign`` (Ed25519, RSA, ECDSA P-256) verify with ``atc.wasm.signatures`` and
are refused for another key; a module signed by ``tests/signing.py`` passes ``yoke verify``; and an
Ed25519 signature (deterministic) from both is byte-for-byte the same file, so the test helper lays
modules out exactly as yoke does. No cluster: the CLI's sign and verify work on local files.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import wasmtime
import yokecli
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from signing import PrivateKey, private_pem, public_pem, sign_module

from atc.wasm.errors import ModuleVerificationError
from atc.wasm.signatures import parse_verification_keys, verify_module

WASM = bytes(wasmtime.wat2wasm('(module (memory (export "memory") 1) (func (export "_start")))'))
KEYS: dict[str, Callable[[], PrivateKey]] = {
    "ed25519": ed25519.Ed25519PrivateKey.generate,
    "rsa": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "ecdsa-p256": lambda: ec.generate_private_key(ec.SECP256R1()),
}


@pytest.fixture(scope="module")
def yoke_binary() -> Path:
    return yokecli.yoke_binary()


def yoke_sign(tmp_path: Path, wasm: bytes, key: PrivateKey, *, pkcs1: bool = False) -> bytes:
    source, signed, pem = tmp_path / "in.wasm", tmp_path / "signed.wasm", tmp_path / "private.pem"
    source.write_bytes(wasm)
    pem.write_text(private_pem(key, pkcs1=pkcs1))
    yokecli.run_yoke(["sign", "-key", str(pem), "-o", str(signed), str(source)])
    return signed.read_bytes()


@pytest.mark.usefixtures("yoke_binary")
@pytest.mark.parametrize("kind", sorted(KEYS))
def test_modules_signed_by_yoke_verify_here_and_only_with_their_key(tmp_path: Path, kind: str) -> None:
    key = KEYS[kind]()
    signed = yoke_sign(tmp_path, WASM, key, pkcs1=kind == "rsa")
    verify_module(parse_verification_keys(json.dumps([public_pem(key)]).encode()), signed)
    other = parse_verification_keys(json.dumps([public_pem(KEYS[kind]())]).encode())
    with pytest.raises(ModuleVerificationError) as refused:
        verify_module(other, signed)
    assert str(refused.value) == "failed to verify module: module's key fingerprint does not match provided key(s)"


@pytest.mark.usefixtures("yoke_binary")
@pytest.mark.parametrize("kind", sorted(KEYS))
def test_modules_signed_by_the_test_helper_pass_yoke_verify(tmp_path: Path, kind: str) -> None:
    key = KEYS[kind]()
    module, public = tmp_path / "signed.wasm", tmp_path / "public.pem"
    module.write_bytes(sign_module(WASM, key))
    public.write_text(public_pem(key))
    yokecli.run_yoke(["verify", "-key", str(public), str(module)])
    public.write_text(public_pem(KEYS[kind]()))
    done = yokecli.run_yoke(["verify", "-key", str(public), str(module)], check=False)
    assert done.returncode != 0
    assert "module's key fingerprint does not match provided key(s)" in done.stderr


@pytest.mark.usefixtures("yoke_binary")
def test_an_ed25519_signature_is_byte_for_byte_yokes(tmp_path: Path, build_flight: Callable[[str], Path]) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    for wasm in (WASM, build_flight("basic").read_bytes()):
        assert sign_module(wasm, key) == yoke_sign(tmp_path, wasm, key)
