"""Flight modules by URL: allow-list, checksum on every load, raw and compiled caches on disk.

``ModuleCache.load(url, checksum=..., insecure=...)`` returns a ``LoadedModule``
ready to run. Every call checks the allow-list and the expected sha256
(explicit, or inferred from the URL), also when the module comes from memory.
Bytes are fetched once per URL (``atc.wasm.sources``) and kept under
``CACHE_FS/modules/<sha256>.wasm``; compiled artefacts live under
``CACHE_FS/<wasmtime version + engine fingerprint>/<sha256>.cwasm`` with a
digest beside them, so a corrupt, truncated or foreign file is detected and
recompiled instead of being handed to wasmtime. Compilation runs in a child
process (``atc.wasm.compile_worker``), one at a time; concurrent loads of one
module share a single compile. A bounded LRU keeps recently used modules in
memory. Callers: the reconcilers (through ``atc.flight``) and the webhook.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import sys
import tempfile
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from wasmtime import InstancePre, Module, WasmtimeError

from .checksum import checksum_from_url, sha1_hex, sha256_hex
from .engine import FlightEngine
from .errors import ChecksumMismatchError, ModuleError, ModuleFetchError, ModuleNotAllowedError
from .globs import allowed
from .sources import fetch_module


class CompileError(ModuleError):
    """The module is not valid wasm for this engine: ``failed to compile module: ...``."""


class _BytesUnusableError(ModuleError):
    """The stored module bytes are missing or corrupt: fetch them again."""

    def __init__(self, sha256: str) -> None:
        super().__init__(f"stored bytes of module {sha256} are missing or corrupt")


class LinkError(ModuleError):
    """The module imports something the host does not provide."""


@dataclass(frozen=True)
class LoadedModule:
    """A module ready to run, with the digests yoke records about it."""

    url: str
    sha256: str
    sha1: str  # yoke stores the SHA-1 of the wasm as a revision's source checksum
    size: int
    module: Module
    prepared: InstancePre


@dataclass
class CacheStats:
    memory_hits: int = 0
    disk_loads: int = 0
    compiles: int = 0
    downloads: int = 0


@dataclass
class _Entry:
    sha256: str
    sha1: str
    size: int


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as data:
        for chunk in iter(lambda: data.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class ModuleCache:
    """Modules by URL for one process; see the module docstring for the guarantees."""

    engine: FlightEngine
    root: Path
    allow_list: Sequence[str] = ()
    docker_config_path: Path | None = None
    memory_entries: int = 32
    fetch_timeout: float = 60.0
    stats: CacheStats = field(default_factory=CacheStats)

    def __post_init__(self) -> None:
        self._by_url: dict[str, _Entry] = {}
        self._compiled: OrderedDict[str, LoadedModule] = OrderedDict()
        self._url_locks: dict[str, asyncio.Lock] = {}
        self._compiling: dict[str, asyncio.Future[LoadedModule]] = {}
        self._compile_slots = asyncio.Semaphore(1)

    # ------------------------------------------------------------------ public
    async def load(self, url: str, *, checksum: str = "", insecure: bool = False, fresh: bool = False) -> LoadedModule:
        """The module at ``url``; ``fresh`` fetches it again (yoke's per-instance flight override)."""
        if not allowed(url, self.allow_list):
            raise ModuleNotAllowedError(url)
        try:
            return await self._load_checked(url, checksum, insecure=insecure, fresh=fresh)
        except _BytesUnusableError:  # the stored bytes went missing or bad before they were compiled
            self.forget(url)
            return await self._load_checked(url, checksum, insecure=insecure, fresh=True)

    async def _load_checked(self, url: str, checksum: str, *, insecure: bool, fresh: bool) -> LoadedModule:
        entry = await self._entry(url, insecure=insecure, fresh=fresh)
        expected = (checksum or checksum_from_url(url)).lower()
        if expected and expected != entry.sha256:
            raise ChecksumMismatchError(expected, entry.sha256)
        return await self._compiled_module(url, entry)

    def forget(self, url: str) -> None:
        """Drop the URL's record so the next load fetches it again."""
        self._by_url.pop(url, None)

    # ------------------------------------------------------------------ bytes
    def _module_path(self, sha256: str) -> Path:
        return self.root / "modules" / f"{sha256}.wasm"

    def _url_record(self, url: str) -> Path:
        return self.root / "urls" / hashlib.sha256(url.encode()).hexdigest()

    async def _entry(self, url: str, *, insecure: bool, fresh: bool) -> _Entry:
        if not fresh and url in self._by_url:
            return self._by_url[url]
        lock = self._url_locks.setdefault(url, asyncio.Lock())
        async with lock:
            if not fresh and url in self._by_url:
                return self._by_url[url]
            entry = None if fresh else await asyncio.to_thread(self._entry_from_disk, url)
            if entry is None:
                try:
                    wasm = await fetch_module(
                        url, insecure=insecure, docker_config_path=self.docker_config_path, timeout=self.fetch_timeout
                    )
                except ModuleFetchError as exc:
                    raise ModuleFetchError(f"failed to load remote wasm: failed to load wasm: {exc}") from exc
                self.stats.downloads += 1
                entry = await asyncio.to_thread(self._store_bytes, url, wasm)
            self._by_url[url] = entry
            return entry

    def _entry_from_disk(self, url: str) -> _Entry | None:
        """What a previous process recorded about the URL's bytes (they are verified before compiling)."""
        try:
            record = json.loads(self._url_record(url).read_text())
            return _Entry(str(record["sha256"]), str(record["sha1"]), int(record["size"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _store_bytes(self, url: str, wasm: bytes) -> _Entry:
        entry = _Entry(sha256_hex(wasm), sha1_hex(wasm), len(wasm))
        _write_atomically(self._module_path(entry.sha256), wasm)  # also replaces a corrupt copy
        record = {"url": url, "sha256": entry.sha256, "sha1": entry.sha1, "size": entry.size}
        _write_atomically(self._url_record(url), json.dumps(record).encode())
        return entry

    def _check_bytes(self, sha256: str) -> None:
        """Compile only bytes that still hash to their name."""
        try:
            intact = _file_sha256(self._module_path(sha256)) == sha256
        except OSError:
            intact = False
        if not intact:
            raise _BytesUnusableError(sha256)

    # ------------------------------------------------------------------ compiled
    def _artefact_paths(self, sha256: str) -> tuple[Path, Path]:
        directory = self.root / self.engine.cache_dir_name
        return directory / f"{sha256}.cwasm", directory / f"{sha256}.json"

    async def _compiled_module(self, url: str, entry: _Entry) -> LoadedModule:
        if entry.sha256 in self._compiled:
            self._compiled.move_to_end(entry.sha256)
            self.stats.memory_hits += 1
            return self._with_url(self._compiled[entry.sha256], url)
        pending = self._compiling.get(entry.sha256)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._compiling[entry.sha256] = pending
            try:
                pending.set_result(await self._load_or_compile(url, entry))
            except BaseException as exc:
                pending.set_exception(exc)
                pending.exception()  # mark retrieved: waiters (if any) re-raise it below
            finally:
                del self._compiling[entry.sha256]
        loaded = await asyncio.shield(pending)
        return self._with_url(loaded, url)

    @staticmethod
    def _with_url(loaded: LoadedModule, url: str) -> LoadedModule:
        if loaded.url == url:
            return loaded
        return LoadedModule(url, loaded.sha256, loaded.sha1, loaded.size, loaded.module, loaded.prepared)

    async def _load_or_compile(self, url: str, entry: _Entry) -> LoadedModule:
        module = await asyncio.to_thread(self._deserialize_verified, entry.sha256)
        if module is None:
            await self._compile(entry.sha256)
            module = await asyncio.to_thread(self._deserialize_verified, entry.sha256)
            if module is None:
                raise CompileError(f"failed to compile module: artefact for {entry.sha256} did not load")
        else:
            self.stats.disk_loads += 1
        try:
            prepared = await asyncio.to_thread(self.engine.prepare, module)
        except WasmtimeError as exc:  # e.g. an import yoke does not provide
            raise LinkError(f"failed to link module: {exc}") from None
        loaded = LoadedModule(url, entry.sha256, entry.sha1, entry.size, module, prepared)
        self._compiled[entry.sha256] = loaded
        while len(self._compiled) > self.memory_entries:
            self._compiled.popitem(last=False)
        return loaded

    def _deserialize_verified(self, sha256: str) -> Module | None:
        """Load the artefact only if its recorded digest matches; anything odd means recompile."""
        artefact, meta_path = self._artefact_paths(sha256)
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("fingerprint") != self.engine.fingerprint or meta.get("cwasm_sha256") != _file_sha256(artefact):
                raise ValueError("artefact does not match its record")
            return Module.deserialize_file(self.engine.engine, str(artefact))
        except (OSError, ValueError, KeyError, WasmtimeError):
            for path in (artefact, meta_path):
                with contextlib.suppress(OSError):
                    path.unlink()
            return None

    async def _compile(self, sha256: str) -> None:
        artefact, meta_path = self._artefact_paths(sha256)
        artefact.parent.mkdir(parents=True, exist_ok=True)
        tmp = artefact.parent / f".{sha256}.{os.getpid()}.cwasm"
        await asyncio.to_thread(self._check_bytes, sha256)
        async with self._compile_slots:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "atc.wasm.compile_worker",
                str(self._module_path(sha256)),
                str(tmp),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            _, stderr = await process.communicate()
        self.stats.compiles += 1
        if process.returncode != 0:
            tmp.unlink(missing_ok=True)
            message = stderr.decode(errors="replace").strip() or f"compiler exited with {process.returncode}"
            raise CompileError(
                message if message.startswith("failed to compile") else f"failed to compile module: {message}"
            )
        digest = await asyncio.to_thread(_file_sha256, tmp)
        os.replace(tmp, artefact)
        meta = {"wasm_sha256": sha256, "cwasm_sha256": digest, "fingerprint": self.engine.fingerprint}
        _write_atomically(meta_path, json.dumps(meta).encode())
