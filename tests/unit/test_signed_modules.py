"""Signature checks in the module cache and the webhook: on every load, before compiling, after the allow-list.

Also runs a signed Go test flight (yoke's SDK): the signature section stays in the module that runs.
Modules are local files signed by ``tests/signing.py``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
import wasmtime
from cryptography.hazmat.primitives.asymmetric import ed25519
from signing import public_pem, sign_module

from atc.release.invocation import flight_invocation
from atc.release.stages import parse_stages
from atc.release.takeoff import Cluster
from atc.wasm.cache import ModuleCache
from atc.wasm.checksum import sha256_hex
from atc.wasm.engine import FlightEngine
from atc.wasm.errors import ModuleNotAllowedError, ModuleVerificationError
from atc.wasm.runner import Invocation, run_flight_async
from atc.wasm.signatures import VerificationKeys, parse_verification_keys
from atc_webhook.admission import Review
from atc_webhook.context import FlightServices
from atc_webhook.routers.flights import admit_airway, admit_flight

WASM = bytes(wasmtime.wat2wasm('(module (memory (export "memory") 1) (func (export "_start")))'))
UNSIGNED = "failed to verify module: module is unsigned"


@pytest.fixture
def key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture
def keys(key: ed25519.Ed25519PrivateKey) -> VerificationKeys:
    return parse_verification_keys(json.dumps([public_pem(key)]).encode())


def write(directory: Path, name: str, wasm: bytes) -> str:
    path = directory / name
    path.write_bytes(wasm)
    return str(path)


async def test_unsigned_module_is_refused_before_it_is_compiled(
    engine: FlightEngine, keys: VerificationKeys, tmp_path: Path
) -> None:
    cache = ModuleCache(engine, tmp_path / "cache", verification_keys=keys)
    with pytest.raises(ModuleVerificationError) as refused:
        await cache.load(write(tmp_path, "unsigned.wasm", WASM))
    assert str(refused.value) == UNSIGNED
    assert cache.stats.compiles == 0
    assert not list((tmp_path / "cache").glob("wasmtime-*/*.cwasm"))


async def test_signed_module_loads_and_runs_with_its_signature_section(
    engine: FlightEngine, key: ed25519.Ed25519PrivateKey, keys: VerificationKeys, tmp_path: Path
) -> None:
    signed = sign_module(WASM, key)
    cache = ModuleCache(engine, tmp_path / "cache", verification_keys=keys)
    loaded = await cache.load(write(tmp_path, "signed.wasm", signed))
    assert loaded.sha256 == sha256_hex(signed)  # the module that runs is the signed file, as is
    await run_flight_async(engine, loaded.prepared, Invocation())


async def test_the_signature_is_checked_on_every_load_also_from_memory(
    engine: FlightEngine, keys: VerificationKeys, tmp_path: Path
) -> None:
    url = write(tmp_path, "unsigned.wasm", WASM)
    cache = ModuleCache(engine, tmp_path / "cache")
    await cache.load(url)  # no keys yet: compiled and kept in memory
    cache.verification_keys = keys
    with pytest.raises(ModuleVerificationError, match="module is unsigned"):
        await cache.load(url)
    assert cache.stats.memory_hits == 0


async def test_the_verdict_is_memoised_per_module_digest(
    engine: FlightEngine, key: ed25519.Ed25519PrivateKey, keys: VerificationKeys, tmp_path: Path
) -> None:
    signed = sign_module(WASM, key)
    url = write(tmp_path, "signed.wasm", signed)
    cache = ModuleCache(engine, tmp_path / "cache", verification_keys=keys)
    await cache.load(url)
    (tmp_path / "cache" / "modules" / f"{sha256_hex(signed)}.wasm").unlink()  # verifying again would need them
    await cache.load(url)
    assert (cache.stats.downloads, cache.stats.memory_hits) == (1, 1)


async def test_verification_reads_the_stored_bytes_and_refetches_bad_ones(
    engine: FlightEngine, key: ed25519.Ed25519PrivateKey, keys: VerificationKeys, tmp_path: Path
) -> None:
    signed = sign_module(WASM, key)
    url = write(tmp_path, "signed.wasm", signed)
    await ModuleCache(engine, tmp_path / "cache").load(url)  # stored and compiled without keys
    (tmp_path / "cache" / "modules" / f"{sha256_hex(signed)}.wasm").write_bytes(b"\0asm corrupt")
    cache = ModuleCache(engine, tmp_path / "cache", verification_keys=keys)  # a restart, now with keys
    await cache.load(url)
    assert cache.stats.downloads == 1  # the corrupt copy was fetched again, then verified


async def test_the_allow_list_takes_precedence(engine: FlightEngine, keys: VerificationKeys, tmp_path: Path) -> None:
    url = write(tmp_path, "unsigned.wasm", WASM)
    with pytest.raises(ModuleVerificationError):  # keys and no allow-list: every module is verified
        await ModuleCache(engine, tmp_path / "cache", verification_keys=keys).load(url)
    allow = [str(tmp_path / "*.wasm")]
    listed = ModuleCache(engine, tmp_path / "cache", allow_list=allow, verification_keys=keys)
    assert (await listed.load(url)).sha256 == sha256_hex(WASM)  # an allow-listed URL skips the signature check


async def test_a_url_outside_the_allow_list_is_refused_by_the_allow_list(
    engine: FlightEngine, key: ed25519.Ed25519PrivateKey, keys: VerificationKeys, tmp_path: Path
) -> None:
    url = write(tmp_path, "signed.wasm", sign_module(WASM, key))
    cache = ModuleCache(engine, tmp_path / "cache", allow_list=["oci://registry.local/*"], verification_keys=keys)
    with pytest.raises(ModuleNotAllowedError):
        await cache.load(url)  # never reaches the signature check, as in yoke


async def test_a_signed_go_flight_runs(
    engine: FlightEngine,
    key: ed25519.Ed25519PrivateKey,
    keys: VerificationKeys,
    tmp_path: Path,
    build_flight: Callable[[str], Path],
) -> None:
    signed = sign_module(build_flight("basic").read_bytes(), key)
    cache = ModuleCache(engine, tmp_path / "cache", verification_keys=keys)
    loaded = await cache.load(write(tmp_path, "basic.wasm", signed))
    resource = {"apiVersion": "examples.com/v1", "kind": "Backend", "metadata": {"name": "b1", "namespace": "ns1"}}
    stdin = json.dumps({**resource, "spec": {"replicas": 2}}).encode()
    invocation = flight_invocation(release="b1", namespace="ns1", stdin=stdin, timeout=30, max_memory_mib=0)
    result = await run_flight_async(engine, loaded.prepared, invocation)
    [[_, deployment]] = parse_stages(result.stdout)
    assert deployment["spec"]["replicas"] == 2


# ----------------------------------------------------------------------------------------------- admission
def _services(cache: ModuleCache) -> FlightServices:
    return FlightServices(cast(Cluster, None), cache)  # the checks below stop at the module load


def _creation(obj: dict[str, Any]) -> Review:
    return Review("admission.k8s.io/v1", "AdmissionReview", {"uid": "u-1", "operation": "CREATE", "object": obj})


async def test_airway_admission_names_the_url_and_the_reason(
    engine: FlightEngine, keys: VerificationKeys, tmp_path: Path
) -> None:
    url = write(tmp_path, "unsigned.wasm", WASM)
    airway: dict[str, Any] = {
        "metadata": {"name": "backends.examples.com"},
        "spec": {"wasmUrls": {"flight": url}, "template": {}},
    }
    verdict = await admit_airway(
        _services(ModuleCache(engine, tmp_path / "cache", verification_keys=keys)), _creation(airway)
    )
    assert not verdict.allowed
    assert verdict.message == f'failed to validate flight url "{url}": {UNSIGNED}'


async def test_flight_admission_says_failed_to_verify_module(
    engine: FlightEngine, keys: VerificationKeys, tmp_path: Path
) -> None:
    flight = {"metadata": {"name": "f", "namespace": "ns"}, "spec": {"wasmUrl": write(tmp_path, "u.wasm", WASM)}}
    cache = ModuleCache(engine, tmp_path / "cache", verification_keys=keys)
    verdict = await admit_flight(_services(cache), _creation(flight))
    assert not verdict.allowed
    assert verdict.message == UNSIGNED
