"""The module cache: allow-list and checksum on every load, one compile per module, disk reuse, corruption.

Modules are local files here (the fetchers have their own tests); a separate
Python process stands in for a service restart.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
import wasmtime

from atc.wasm.cache import CompileError, ModuleCache
from atc.wasm.checksum import sha256_hex
from atc.wasm.engine import FlightEngine
from atc.wasm.errors import ChecksumMismatchError, ModuleNotAllowedError
from atc.wasm.runner import Invocation, run_flight_async

WAT = '(module (memory (export "memory") 1) (func (export "_start")) (func (export "id_{n}")))'


def module_file(directory: Path, n: int) -> tuple[Path, str]:
    wasm = bytes(wasmtime.wat2wasm(WAT.format(n=n)))
    path = directory / f"m{n}.wasm"
    path.write_bytes(wasm)
    return path, sha256_hex(wasm)


async def test_load_compiles_once_then_serves_from_memory(engine: FlightEngine, tmp_path: Path) -> None:
    path, digest = module_file(tmp_path, 1)
    cache = ModuleCache(engine, tmp_path / "cache")
    first = await cache.load(str(path))
    second = await cache.load(str(path), checksum=digest)
    assert first.module is second.module
    assert (cache.stats.compiles, cache.stats.memory_hits, cache.stats.downloads) == (1, 1, 1)
    assert first.sha256 == digest
    await run_flight_async(engine, second.prepared, Invocation())


async def test_checksum_is_checked_on_every_load_including_memory_hits(engine: FlightEngine, tmp_path: Path) -> None:
    path, digest = module_file(tmp_path, 2)
    cache = ModuleCache(engine, tmp_path / "cache")
    await cache.load(str(path))
    wrong = "0" * 64
    with pytest.raises(ChecksumMismatchError) as mismatch:
        await cache.load(str(path), checksum=wrong)
    assert str(mismatch.value) == f'cannot verify module against expected checksum: wanted "{wrong}" but got "{digest}"'


async def test_checksum_inferred_from_the_url(engine: FlightEngine, tmp_path: Path) -> None:
    path, digest = module_file(tmp_path, 3)
    named = tmp_path / f"flight_sha256_{'a' * 64}.wasm"
    named.write_bytes(path.read_bytes())
    cache = ModuleCache(engine, tmp_path / "cache")
    with pytest.raises(ChecksumMismatchError, match=f'wanted "{"a" * 64}" but got "{digest}"'):
        await cache.load(str(named))
    good = tmp_path / f"flight_sha256_{digest}.wasm"
    good.write_bytes(path.read_bytes())
    assert (await cache.load(str(good))).sha256 == digest


async def test_allow_list_denies_with_yokes_wording(engine: FlightEngine, tmp_path: Path) -> None:
    path, _ = module_file(tmp_path, 4)
    cache = ModuleCache(engine, tmp_path / "cache", allow_list=["oci://registry.local/*"])
    with pytest.raises(ModuleNotAllowedError) as denied:
        await cache.load(str(path))
    assert str(denied.value) == f'module "{path}" not allowed'
    assert cache.stats.downloads == 0  # refused before any fetch


async def test_concurrent_loads_of_one_module_compile_it_once(engine: FlightEngine, tmp_path: Path) -> None:
    path, _ = module_file(tmp_path, 5)
    cache = ModuleCache(engine, tmp_path / "cache")
    loaded = await asyncio.gather(*(cache.load(str(path)) for _ in range(8)))
    assert len({id(item.module) for item in loaded}) == 1
    assert cache.stats.compiles == 1


RESTART = """
import asyncio, json, sys
from pathlib import Path
from atc.wasm.cache import ModuleCache
from atc.wasm.engine import FlightEngine

async def main():
    engine = FlightEngine(workers=1)
    cache = ModuleCache(engine, Path(sys.argv[1]))
    await cache.load(sys.argv[2])
    print(json.dumps(cache.stats.__dict__))
    engine.close()

asyncio.run(main())
"""


def _load_in_new_process(cache_dir: Path, url: str) -> dict[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", RESTART, str(cache_dir), url], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    stats: dict[str, int] = json.loads(done.stdout)
    return stats


def test_a_restarted_process_reuses_bytes_and_compiled_artefact(tmp_path: Path) -> None:
    path, _ = module_file(tmp_path, 6)
    first = _load_in_new_process(tmp_path / "cache", str(path))
    assert (first["compiles"], first["downloads"]) == (1, 1)
    path.unlink()  # the source is gone: the second process must not need it
    second = _load_in_new_process(tmp_path / "cache", str(path))
    assert (second["compiles"], second["downloads"], second["disk_loads"]) == (0, 0, 1)


def _artefact(cache_dir: Path) -> Path:
    (artefact,) = cache_dir.glob("wasmtime-*/*.cwasm")
    return artefact


def test_corrupt_artefact_is_detected_and_recompiled(tmp_path: Path) -> None:
    path, _ = module_file(tmp_path, 7)
    cache_dir = tmp_path / "cache"
    _load_in_new_process(cache_dir, str(path))
    artefact = _artefact(cache_dir)
    data = bytearray(artefact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artefact.write_bytes(bytes(data))
    stats = _load_in_new_process(cache_dir, str(path))
    assert (stats["compiles"], stats["disk_loads"]) == (1, 0)


def test_foreign_artefact_is_recompiled_not_loaded(tmp_path: Path) -> None:
    path, _ = module_file(tmp_path, 8)
    cache_dir = tmp_path / "cache"
    _load_in_new_process(cache_dir, str(path))
    artefact = _artefact(cache_dir)
    meta_path = artefact.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "fingerprint": "another-engine"}))
    assert _load_in_new_process(cache_dir, str(path))["compiles"] == 1


def test_corrupt_downloaded_bytes_are_fetched_again_before_compiling(tmp_path: Path) -> None:
    path, digest = module_file(tmp_path, 9)
    cache_dir = tmp_path / "cache"
    _load_in_new_process(cache_dir, str(path))
    (cache_dir / "modules" / f"{digest}.wasm").write_bytes(b"\0asm garbage")
    assert _load_in_new_process(cache_dir, str(path))["downloads"] == 0  # the verified artefact is enough
    _artefact(cache_dir).unlink()
    stats = _load_in_new_process(cache_dir, str(path))
    assert (stats["downloads"], stats["compiles"]) == (1, 1)
    assert (cache_dir / "modules" / f"{digest}.wasm").read_bytes() == path.read_bytes()


async def test_invalid_wasm_is_a_compile_error(engine: FlightEngine, tmp_path: Path) -> None:
    bad = tmp_path / "bad.wasm"
    bad.write_bytes(b"\0asm\x01\0\0\0garbage")
    with pytest.raises(CompileError, match="failed to compile module"):
        await ModuleCache(engine, tmp_path / "cache").load(str(bad))


async def test_an_artefact_that_cannot_be_mapped_executable_is_loaded_into_memory(
    engine: FlightEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # a CACHE_FS on a noexec mount (docker --tmpfs, hardened emptyDirs): mapping fails with EACCES
    def refused(*_: object) -> wasmtime.Module:
        raise wasmtime.WasmtimeError("unable to make memory executable: Permission denied (os error 13)")

    monkeypatch.setattr(wasmtime.Module, "deserialize_file", staticmethod(refused))
    path, _ = module_file(tmp_path, 11)
    loaded = await ModuleCache(engine, tmp_path / "cache").load(str(path))
    await run_flight_async(engine, loaded.prepared, Invocation())
    assert "loading them into memory" in caplog.text
    assert _artefact(tmp_path / "cache").is_file(), "the artefact stays cached on disk"
