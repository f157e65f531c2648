"""Build the test flights (Go, yoke's SDK) and the hostile WAT modules into a content-hashed cache.

Tests, benchmarks and demos call ``build(name)`` to get the path of a flight's ``.wasm``; ``python
tools/flightbuild.py [names...]`` builds some or all of them ahead of time. Go flights live in
``tests/flights/<name>/`` (module ``atc.test/flights``) and are built with ``GOOS=wasip1 GOARCH=wasm go
build -trimpath``; WAT modules are ``tests/fixtures/wat/<stem>.wat`` and are named ``wat/<stem>``.

A build lands in ``${XDG_CACHE_HOME:-~/.cache}/yoke-atc-py/flights/<key>/<name>.wasm``, where the key
hashes everything that decides the bytes (go.mod, go.sum, the flight's files, the shared ``internal/``
packages, ``go version``, the build flags and, for ``large``, the chart archive it embeds). A present
file is reused without running go; a missing one is built under a file lock and renamed into place,
so concurrent processes never see a partial module. Standard library only, plus ``wasmtime`` for
``wat2wasm``.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "FlightBuildError",
    "build",
    "build_all",
    "cache_key",
    "cache_root",
    "charts_dir",
    "flight_names",
    "main",
    "sha256_of",
]

REPO_DIR = Path(__file__).resolve().parent.parent
FLIGHTS_DIR = REPO_DIR / "tests" / "flights"
WAT_DIR = REPO_DIR / "tests" / "fixtures" / "wat"
SHARED_GO_DIRS = ("internal",)
FALLBACK_CHARTS_DIR = Path("/work/shared/data/charts")
WAT_PREFIX = "wat/"
RECIPE_VERSION = "1"  # bump to invalidate every cached flight

GO_BUILD_FLAGS = ("-trimpath",)
GO_ENV = {
    "GOOS": "wasip1",
    "GOARCH": "wasm",
    "GOTOOLCHAIN": "local",
    "GOFLAGS": "-modcacherw -mod=readonly",
    "CGO_ENABLED": "0",
}
# flight name -> chart archive (from the charts directory) copied next to its main.go for go:embed
CHART_ARCHIVES = {"large": "external-secrets-0.17.0.tgz"}
ERROR_TAIL_LINES = 40


class FlightBuildError(RuntimeError):
    """A flight could not be built; the message carries the tail of the tool's output."""


def cache_root() -> Path:
    """Directory holding one subdirectory per build key."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "yoke-atc-py" / "flights"


def charts_dir() -> Path:
    """Directory of the shared chart archives: ``$ATC_CHARTS_DIR``, else the first existing default place."""
    override = os.environ.get("ATC_CHARTS_DIR")
    candidates = [Path(override)] if override else []
    candidates += [REPO_DIR.parent / "shared" / "data" / "charts", FALLBACK_CHARTS_DIR]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    searched = ", ".join(str(c) for c in candidates)
    raise FlightBuildError(f"chart archives not found; searched (set ATC_CHARTS_DIR to override): {searched}")


def flight_names() -> list[str]:
    """Every buildable name: Go flights (directories with a main.go), then ``wat/<stem>``."""
    go = sorted(p.parent.name for p in FLIGHTS_DIR.glob("*/main.go"))
    wat = sorted(WAT_PREFIX + p.stem for p in WAT_DIR.glob("*.wat"))
    return go + wat


def sha256_of(path: Path) -> str:
    """Lowercase hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _go_env() -> dict[str, str]:
    return {**os.environ, **GO_ENV}


@functools.cache
def _go_version() -> str:
    return _run(["go", "version"], cwd=None).strip()


@functools.cache
def _wasmtime_version() -> str:
    return importlib.metadata.version("wasmtime")


def _run(cmd: list[str], cwd: Path | None) -> str:
    """Run a go command; raise FlightBuildError with the tail of its output if it fails."""
    try:
        done = subprocess.run(cmd, cwd=cwd, env=_go_env(), capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise FlightBuildError(f"`{cmd[0]}` is not on PATH: install Go 1.26 to build the test flights") from exc
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-ERROR_TAIL_LINES:])
        raise FlightBuildError(f"`{' '.join(cmd)}` failed (exit {done.returncode}):\n{tail}")
    return done.stdout


def _source_files(directory: Path) -> Iterator[Path]:
    """Files under directory that go build may read, in a stable order.

    Left out: build outputs (``*.wasm``), the git-ignored chart copies (``*.tgz``, keyed from the charts
    directory instead) and hidden files (temporary copies; go ignores them too).
    """
    for path in sorted(directory.rglob("*")):
        hidden = any(part.startswith(".") for part in path.relative_to(directory).parts)
        if path.is_file() and not hidden and path.suffix not in (".wasm", ".tgz"):
            yield path


def _file_record(label: str, path: Path) -> bytes:
    data = path.read_bytes()
    return f"{label}\0{len(data)}\0".encode() + data


def _go_flight_dir(name: str) -> Path:
    directory = FLIGHTS_DIR / name
    if "/" in name or name in SHARED_GO_DIRS or not (directory / "main.go").is_file():
        raise FlightBuildError(f"unknown flight {name!r}; known: {', '.join(flight_names())}")
    return directory


def _wat_source(name: str) -> Path:
    source = WAT_DIR / f"{name.removeprefix(WAT_PREFIX)}.wat"
    if not source.is_file():
        raise FlightBuildError(f"unknown WAT module {name!r}; known: {', '.join(flight_names())}")
    return source


def cache_key(name: str) -> str:
    """Content hash of everything that decides the bytes of ``name``'s module."""
    digest = hashlib.sha256(f"recipe={RECIPE_VERSION}\0name={name}\0".encode())
    if name.startswith(WAT_PREFIX):
        digest.update(_file_record("wat", _wat_source(name)))
        digest.update(f"wasmtime={_wasmtime_version()}".encode())
        return digest.hexdigest()[:24]
    flight_dir = _go_flight_dir(name)
    for module_file in ("go.mod", "go.sum"):
        digest.update(_file_record(module_file, FLIGHTS_DIR / module_file))
    for directory in (flight_dir, *(FLIGHTS_DIR / shared for shared in SHARED_GO_DIRS)):
        for path in _source_files(directory):
            digest.update(_file_record(path.relative_to(FLIGHTS_DIR).as_posix(), path))
    if name in CHART_ARCHIVES:
        digest.update(_file_record(f"chart/{CHART_ARCHIVES[name]}", charts_dir() / CHART_ARCHIVES[name]))
    digest.update(_go_version().encode())
    digest.update(" ".join(GO_BUILD_FLAGS).encode())
    digest.update(" ".join(f"{k}={v}" for k, v in sorted(GO_ENV.items())).encode())
    return digest.hexdigest()[:24]


@contextmanager
def _locked(name: str) -> Iterator[None]:
    """Serialise builds of one flight across processes (they share the copied chart archive)."""
    lock_dir = cache_root() / ".locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with (lock_dir / f"{name.replace('/', '-')}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _copy_chart(name: str) -> None:
    """Put the chart archive the flight go:embeds next to its main.go (a git-ignored copy)."""
    archive = CHART_ARCHIVES[name]
    source = charts_dir() / archive
    if not source.is_file():
        raise FlightBuildError(f"chart archive {source} is missing (needed by flight {name!r})")
    target = FLIGHTS_DIR / name / archive
    if target.is_file() and sha256_of(target) == sha256_of(source):
        return
    fd, tmp = tempfile.mkstemp(prefix=f".{archive}.", dir=target.parent)
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _compile(name: str, out: Path) -> None:
    """Write ``name``'s module to ``out`` (a temporary path next to its final place)."""
    if name.startswith(WAT_PREFIX):
        import wasmtime  # only here: listing and keying Go flights needs no wasmtime

        try:
            out.write_bytes(wasmtime.wat2wasm(_wat_source(name).read_text()))
        except wasmtime.WasmtimeError as exc:
            raise FlightBuildError(f"wat2wasm of {name} failed:\n{exc}") from exc
        return
    if name in CHART_ARCHIVES:
        _copy_chart(name)
    _run(["go", "build", *GO_BUILD_FLAGS, "-o", str(out), f"./{name}"], cwd=FLIGHTS_DIR)


def build(name: str) -> Path:
    """Return the path of ``name``'s ``.wasm`` (a Go flight, or ``wat/<stem>``), building it if not cached."""
    final = cache_root() / cache_key(name) / f"{name}.wasm"
    if final.is_file():
        return final
    with _locked(name):
        if final.is_file():  # built by a concurrent process while we waited
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        print(f"[flights] building {name} ...", end="", file=sys.stderr, flush=True)
        started = time.monotonic()
        tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        try:
            _compile(name, tmp)
            os.replace(tmp, final)
        except BaseException:
            print(" failed", file=sys.stderr, flush=True)
            tmp.unlink(missing_ok=True)
            raise
        print(f" done in {time.monotonic() - started:.1f}s", file=sys.stderr, flush=True)
    return final


def build_all(names: Iterable[str] | None = None) -> dict[str, Path]:
    """Build several flights (all of them by default); map each name to its ``.wasm``."""
    return {name: build(name) for name in (flight_names() if names is None else names)}


def main(argv: list[str] | None = None) -> int:
    """``python tools/flightbuild.py [names...]``: build the named flights (default all), print name and path."""
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("-h", "--help"):
        print(f"usage: flightbuild.py [NAME...]\nnames: {' '.join(flight_names())}")
        return 0
    try:
        for name, path in build_all(args or None).items():
            print(f"{name}\t{path}")
    except FlightBuildError as exc:
        print(f"[flights] error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
