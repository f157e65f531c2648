"""Flights fetched over loopback HTTP and from an OCI registry, through the module cache, then run.

The servers are this project's own (tests/servers.py); nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from servers import OciRegistry, serve_files

from atc.release.invocation import flight_invocation
from atc.release.stages import parse_stages
from atc.wasm.cache import LoadedModule, ModuleCache
from atc.wasm.checksum import sha256_hex
from atc.wasm.engine import FlightEngine
from atc.wasm.errors import ChecksumMismatchError, ModuleFetchError, ModuleNotAllowedError
from atc.wasm.oci import push_module
from atc.wasm.runner import run_flight_async

INPUT = json.dumps({"metadata": {"name": "web", "namespace": "apps"}, "spec": {"replicas": 2}}).encode()


@pytest.fixture
async def engine() -> AsyncIterator[FlightEngine]:
    flight_engine = FlightEngine(workers=2)
    yield flight_engine
    flight_engine.close()


async def run_basic(engine: FlightEngine, module: LoadedModule) -> list[str]:
    invocation = flight_invocation(release="web", namespace="apps", stdin=INPUT)
    result = await run_flight_async(engine, module.prepared, invocation)
    return [obj["kind"] for stage in parse_stages(result.stdout) for obj in stage]


async def test_flight_over_http_plain_and_gzipped(
    engine: FlightEngine, tmp_path: Path, build_flight: Callable[[str], Path]
) -> None:
    wasm = build_flight("basic").read_bytes()
    digest = sha256_hex(wasm)
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / f"basic_sha256_{digest}.wasm").write_bytes(wasm)
    (tmp_path / "site" / "basic.wasm.gz").write_bytes(gzip.compress(wasm))
    cache = ModuleCache(engine, tmp_path / "cache")
    with serve_files(tmp_path / "site") as base:
        inferred = await cache.load(f"{base}/basic_sha256_{digest}.wasm")  # checksum inferred from the name
        assert await run_basic(engine, inferred) == ["ConfigMap", "Deployment"]
        zipped = await cache.load(f"{base}/basic.wasm.gz", checksum=digest)
        assert zipped.sha256 == digest
        with pytest.raises(ModuleFetchError, match=r"failed to load remote wasm: failed to load wasm: .*404"):
            await cache.load(f"{base}/missing.wasm")
    assert cache.stats.compiles == 1  # both URLs name the same module


async def test_flight_from_an_oci_registry(
    engine: FlightEngine, tmp_path: Path, build_flight: Callable[[str], Path]
) -> None:
    wasm = build_flight("basic").read_bytes()
    digest = sha256_hex(wasm)
    with OciRegistry() as registry:
        await push_module(registry.host, "flights/basic", wasm, ["v1.0.0"])
        cache = ModuleCache(engine, tmp_path / "cache", allow_list=[f"oci://{registry.host}/flights/*"])
        by_tag = await cache.load(f"oci://{registry.host}/flights/basic:v1.0.0", checksum=digest)
        assert await run_basic(engine, by_tag) == ["ConfigMap", "Deployment"]
        by_digest_tag = await cache.load(f"oci://{registry.host}/flights/basic:sha256_{digest}")
        assert by_digest_tag.sha256 == digest
        with pytest.raises(ChecksumMismatchError):
            await cache.load(f"oci://{registry.host}/flights/basic:v1.0.0", checksum="f" * 64)
        with pytest.raises(ModuleNotAllowedError, match=r'module "oci://.*/other/basic:v1.0.0" not allowed'):
            await cache.load(f"oci://{registry.host}/other/basic:v1.0.0")
