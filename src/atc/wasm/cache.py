"""Flight modules by URL: allow-list, checksum and signature on every load, raw and compiled caches on disk.

``ModuleCache.load(url, checksum=..., insecure=...)`` returns a ``LoadedModule``
ready to run. Every call checks the allow-list, the expected sha256 (explicit,
or inferred from the URL) and, with verification keys, the module's signature
(``atc.wasm.signatures``; skipped for URLs the allow-list names), also when the
module comes from memory. Signature verdicts are memoised per module sha256 and
key set, since bytes with one sha256 never change. Only WebAssembly binaries
are accepted (never text). ``validate`` runs the same checks and validates the
bytes without compiling, then compiles in the background: Airway admission
must answer in seconds.
Bytes are fetched once per URL (``atc.wasm.sources``) and kept under
``CACHE_FS/modules/<sha256>.wasm``; compiled artefacts live under
``CACHE_FS/<wasmtime version + engine fingerprint>/<sha256>.cwasm`` with a
digest beside them, so a corrupt, truncated or foreign file is detected and
recompiled instead of being handed to wasmtime. ``compiler_for`` picks the
compiler (``MODULE_COMPILER``): by default Winch for modules of trusted
provenance, Cranelift for the rest. Compilation runs in a child process
(``atc.wasm.compile_worker``), one at a time, in a task of its own, so
concurrent loads share one compile and a caller that stops waiting does not
cancel it. A bounded LRU keeps recently used modules in memory. Built from the
settings by ``atc.service.runtime``; callers: the reconcilers (through
``atc.release.instance_request`` and their service context) and the webhook.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import sys
import tempfile
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from wasmtime import Engine, Module, WasmtimeError

from .checksum import checksum_from_url, sha1_hex, sha256_hex
from .engine import COMPILERS, CRANELIFT, WINCH, FlightEngine, PreparedModule
from .errors import (
    ChecksumMismatchError,
    ModuleError,
    ModuleFetchError,
    ModuleNotAllowedError,
    ModuleVerificationError,
)
from .fetch_policy import FetchPolicy
from .globs import allowed
from .signatures import VerificationKeys, verify_module
from .sources import fetch_module

VERDICTS_KEPT = 4096
WASM_MAGIC = b"\0asm"
NOT_WASM = "failed to load remote wasm: the content is not a WebAssembly binary module"
AUTO = "auto"
COMPILER_POLICIES = (AUTO, *COMPILERS)
log = logging.getLogger("atc.wasm.cache")


def compiler_for(policy: str, *, trusted: bool) -> str:
    """The compiler for a module: Winch only for trusted provenance under ``auto`` (docs/flight-runtime.md).

    Trusted means the URL matches ``MODULE_ALLOW_LIST`` or the module's signature was verified with
    ``MODULE_VERIFICATION_KEYS_PATH``: the operator named its source or its signer. Anything else
    gets Cranelift, whatever it costs to compile.
    """
    if policy == AUTO:
        return WINCH if trusted else CRANELIFT
    return policy


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
    prepared: PreparedModule
    compiler: str = CRANELIFT


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
    verification_keys: VerificationKeys | None = None
    compiler_policy: str = AUTO  # MODULE_COMPILER: auto, cranelift or winch
    fetch_policy: FetchPolicy = field(default_factory=FetchPolicy)  # what a fetch may read (default: anything)
    memory_entries: int = 32
    fetch_timeout: float = 60.0
    stats: CacheStats = field(default_factory=CacheStats)

    def __post_init__(self) -> None:
        self._by_url: dict[str, _Entry] = {}
        self._compiled: OrderedDict[tuple[str, str], LoadedModule] = OrderedDict()  # (sha256, compiler)
        self._url_locks: dict[str, asyncio.Lock] = {}
        self._compiling: dict[tuple[str, str], asyncio.Future[LoadedModule]] = {}
        self._background: set[asyncio.Future[LoadedModule]] = set()
        self._compile_slots = asyncio.Semaphore(1)
        self._noexec_reported = False
        self._verdicts: OrderedDict[tuple[str, str], str | None] = OrderedDict()  # -> failure reason or None

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
        entry, compiler = await self._checked_entry(url, checksum, insecure=insecure, fresh=fresh)
        return await self._compiled_module(url, entry, compiler)

    async def _checked_entry(self, url: str, checksum: str, *, insecure: bool, fresh: bool) -> tuple[_Entry, str]:
        """The URL's verified bytes, and the compiler its provenance earns (``compiler_for``)."""
        entry = await self._entry(url, insecure=insecure, fresh=fresh)
        expected = (checksum or checksum_from_url(url)).lower()
        if expected and expected != entry.sha256:
            raise ChecksumMismatchError(expected, entry.sha256)
        keys = self.verification_keys
        allow_listed = bool(self.allow_list) and allowed(url, self.allow_list)
        if keys and not allow_listed:  # the allow-list takes precedence over signatures, as in yoke
            await self._verify_signature(entry, keys)
        return entry, compiler_for(self.compiler_policy, trusted=allow_listed or bool(keys))

    async def validate(self, url: str, *, checksum: str = "", insecure: bool = False) -> None:
        """Everything ``load`` checks, without compiling: for Airway admission, which must answer in seconds.

        The module is fetched, its checksum and signature verified and its bytes validated as wasm;
        the compile then starts in the background, so a later ``load`` (the first instance's dry
        run) finds it done or under way.
        """
        if not allowed(url, self.allow_list):
            raise ModuleNotAllowedError(url)
        entry, compiler = await self._checked_entry(url, checksum, insecure=insecure, fresh=False)
        problem = await asyncio.to_thread(self._validation_problem, entry.sha256, compiler)
        if problem:
            raise CompileError(f"failed to compile module: {problem}")
        self._compile_in_background(url, entry, compiler)

    def _validation_problem(self, sha256: str, compiler: str) -> str:
        """Why the stored bytes are not a valid module for the engine, or '' when they are."""
        self._check_bytes(sha256)
        try:
            Module.validate(self.engine.backend(compiler).engine, self._module_path(sha256).read_bytes())
        except WasmtimeError as exc:
            return str(exc).splitlines()[0] if str(exc) else "invalid module"
        return ""

    def _compile_in_background(self, url: str, entry: _Entry, compiler: str) -> None:
        task = asyncio.ensure_future(self._compiled_module(url, entry, compiler))
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Future[LoadedModule]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:  # a later load reports it to its caller
            log.info("background compile failed", extra={"error": str(task.exception())})

    async def _verify_signature(self, entry: _Entry, keys: VerificationKeys) -> None:
        """Raise ``ModuleVerificationError`` unless the module is signed by one of ``keys`` (before compiling)."""
        memo = (entry.sha256, keys.identity)
        if memo in self._verdicts:
            self._verdicts.move_to_end(memo)
        else:
            self._verdicts[memo] = await asyncio.to_thread(self._verdict, entry.sha256, keys)
            while len(self._verdicts) > VERDICTS_KEPT:
                self._verdicts.popitem(last=False)
        reason = self._verdicts[memo]
        if reason is not None:
            raise ModuleVerificationError(reason)

    def _verdict(self, sha256: str, keys: VerificationKeys) -> str | None:
        """Why the stored bytes of ``sha256`` fail verification, or None when they pass."""
        try:
            wasm = self._module_path(sha256).read_bytes()
        except OSError:
            raise _BytesUnusableError(sha256) from None
        if sha256_hex(wasm) != sha256:
            raise _BytesUnusableError(sha256)
        try:
            verify_module(keys, wasm)
        except ModuleVerificationError as exc:
            return exc.reason
        return None

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
                        url,
                        insecure=insecure,
                        docker_config_path=self.docker_config_path,
                        timeout=self.fetch_timeout,
                        policy=self.fetch_policy,
                    )
                except ModuleFetchError as exc:
                    raise ModuleFetchError(f"failed to load remote wasm: failed to load wasm: {exc}") from exc
                if not wasm.startswith(WASM_MAGIC):  # never hand text (WAT) or anything else to wasmtime
                    raise ModuleFetchError(NOT_WASM)
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
    def _artefact_paths(self, sha256: str, compiler: str) -> tuple[Path, Path]:
        directory = self.root / self.engine.cache_dir_name(compiler)
        return directory / f"{sha256}.cwasm", directory / f"{sha256}.json"

    async def _compiled_module(self, url: str, entry: _Entry, compiler: str) -> LoadedModule:
        key = (entry.sha256, compiler)
        if key in self._compiled:
            self._compiled.move_to_end(key)
            self.stats.memory_hits += 1
            return self._with_url(self._compiled[key], url)
        pending = self._compiling.get(key)
        if pending is None:
            # its own task: a caller that stops waiting (an admission that ran out of time) does not
            # cancel the compile for everyone else
            pending = asyncio.ensure_future(self._load_or_compile(url, entry, compiler))
            self._compiling[key] = pending
            pending.add_done_callback(lambda _: self._compiling.pop(key, None))
        loaded = await asyncio.shield(pending)
        return self._with_url(loaded, url)

    @staticmethod
    def _with_url(loaded: LoadedModule, url: str) -> LoadedModule:
        return loaded if loaded.url == url else dataclasses.replace(loaded, url=url)

    async def _load_or_compile(self, url: str, entry: _Entry, compiler: str) -> LoadedModule:
        module = await asyncio.to_thread(self._deserialize_verified, entry.sha256, compiler)
        if module is None:
            await self._compile(entry.sha256, compiler)
            module = await asyncio.to_thread(self._deserialize_verified, entry.sha256, compiler)
            if module is None:
                raise CompileError(f"failed to compile module: artefact for {entry.sha256} did not load")
        else:
            self.stats.disk_loads += 1
        try:
            prepared = await asyncio.to_thread(self.engine.prepare, module, compiler)
        except WasmtimeError as exc:  # e.g. an import yoke does not provide
            raise LinkError(f"failed to link module: {exc}") from None
        loaded = LoadedModule(url, entry.sha256, entry.sha1, entry.size, module, prepared, compiler)
        self._compiled[(entry.sha256, compiler)] = loaded
        while len(self._compiled) > self.memory_entries:
            self._compiled.popitem(last=False)
        return loaded

    def _deserialize_verified(self, sha256: str, compiler: str) -> Module | None:
        """Load the artefact only if its recorded digest matches; anything odd means recompile."""
        artefact, meta_path = self._artefact_paths(sha256, compiler)
        backend = self.engine.backend(compiler)
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("fingerprint") != backend.fingerprint or meta.get("cwasm_sha256") != _file_sha256(artefact):
                raise ValueError("artefact does not match its record")
            return self._map_or_read(backend.engine, artefact)
        except (OSError, ValueError, KeyError, WasmtimeError):
            for path in (artefact, meta_path):
                with contextlib.suppress(OSError):
                    path.unlink()
            return None

    def _map_or_read(self, engine: Engine, artefact: Path) -> Module:
        """Map the artefact; on a ``noexec`` mount (a hardened emptyDir, docker's ``--tmpfs``) the mapping
        cannot be made executable, so load a copy into memory instead (docs/flight-runtime.md)."""
        try:
            return Module.deserialize_file(engine, str(artefact))
        except WasmtimeError:
            module = Module.deserialize(engine, artefact.read_bytes())
            if not self._noexec_reported:
                self._noexec_reported = True
                log.warning("CACHE_FS cannot map compiled modules executable (noexec?); loading them into memory")
            return module

    async def _compile(self, sha256: str, compiler: str) -> None:
        artefact, meta_path = self._artefact_paths(sha256, compiler)
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
                compiler,
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
        fingerprint = self.engine.backend(compiler).fingerprint
        meta = {"wasm_sha256": sha256, "cwasm_sha256": digest, "fingerprint": fingerprint, "compiler": compiler}
        _write_atomically(meta_path, json.dumps(meta).encode())
