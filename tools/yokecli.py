"""Build and run the real ``yoke`` CLI (v0.20.12) for the interop tests.

The interop tests (``tests/integration/test_yoke_cli_interop.py``) call ``yoke_binary()`` for the path
of a ``yoke`` built from the wrapper module ``tools/kbin/yoke`` (go.mod and go.sum only, a ``tool
github.com/yokecd/yoke/cmd/yoke`` line), and ``run_yoke(...)`` to run it against a kubeconfig. The
binary lands in ``${XDG_CACHE_HOME:-~/.cache}/yoke-atc-py/yoke/<key>/yoke``, where the key hashes the
wrapper's go.mod and go.sum and ``go version``; a present binary is reused without running go, a
missing one is built under a file lock into a temporary file and renamed into place. The build is
read-only against the committed go.sum, so it needs no checksum database (yoke v0.20.12 and
github.com/davidmdm/x are missing from sum.golang.org). ``python tools/yokecli.py`` prints the path;
``python tools/yokecli.py ARGS...`` runs yoke with ARGS. Standard library only.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "YOKE_PACKAGE",
    "YOKE_VERSION",
    "YokeBuildError",
    "YokeError",
    "build_key",
    "cache_root",
    "main",
    "run_yoke",
    "strip_ansi",
    "yoke_binary",
]

YOKE_VERSION = "v0.20.12"
YOKE_PACKAGE = "github.com/yokecd/yoke/cmd/yoke"
WRAPPER_DIR = Path(__file__).resolve().parent / "kbin" / "yoke"
RECIPE_VERSION = "1"  # bump to invalidate every cached binary
GO_BUILD_FLAGS = ("-trimpath",)
GO_ENV = {
    "GOTOOLCHAIN": "local",
    "CGO_ENABLED": "0",
    "GOFLAGS": "-modcacherw -mod=readonly -buildvcs=false",
}
NO_SUMDB_MODULES = ("github.com/yokecd", "github.com/davidmdm")
ERROR_TAIL_LINES = 40
DEFAULT_TIMEOUT = 120.0
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class YokeBuildError(RuntimeError):
    """The yoke binary could not be built; the message carries the tail of go's output."""


class YokeError(RuntimeError):
    """A yoke command exited non-zero; ``stdout`` and ``stderr`` hold what it printed."""

    def __init__(self, args: Sequence[str], code: int, stdout: str, stderr: str) -> None:
        super().__init__(f"`yoke {' '.join(args)}` failed (exit {code}):\n{stderr.strip() or stdout.strip()}")
        self.code = code
        self.stdout = stdout
        self.stderr = stderr


def cache_root() -> Path:
    """Directory holding one subdirectory per build key."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "yoke-atc-py" / "yoke"


def _go_env() -> dict[str, str]:
    env = {**os.environ, **GO_ENV}
    env["GONOSUMDB"] = ",".join(filter(None, (os.environ.get("GONOSUMDB", ""), *NO_SUMDB_MODULES)))
    return env


def _go(args: list[str], cwd: Path) -> str:
    """Run a go command in ``cwd``; raise YokeBuildError with the tail of its output if it fails."""
    try:
        done = subprocess.run(["go", *args], cwd=cwd, env=_go_env(), capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise YokeBuildError("`go` is not on PATH: install Go 1.26 to build the yoke CLI") from exc
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-ERROR_TAIL_LINES:])
        raise YokeBuildError(f"`go {' '.join(args)}` failed (exit {done.returncode}):\n{tail}")
    return done.stdout


@functools.cache
def _go_version() -> str:
    return _go(["version"], WRAPPER_DIR).strip()


def build_key() -> str:
    """Content hash of everything that decides the binary's bytes."""
    digest = hashlib.sha256(f"recipe={RECIPE_VERSION}\0".encode())
    for name in ("go.mod", "go.sum"):
        data = (WRAPPER_DIR / name).read_bytes()
        digest.update(f"{name}\0{len(data)}\0".encode() + data)
    digest.update(_go_version().encode())
    digest.update(" ".join(GO_BUILD_FLAGS).encode())
    digest.update(" ".join(f"{k}={v}" for k, v in sorted(GO_ENV.items())).encode())
    return digest.hexdigest()[:24]


@contextmanager
def _locked() -> Iterator[None]:
    """Serialise builds across processes (pytest-xdist workers, parallel sessions)."""
    lock_dir = cache_root() / ".locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with (lock_dir / "yoke.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _build(final: Path) -> None:
    """Compile yoke into a temporary file next to ``final`` and rename it into place."""
    final.parent.mkdir(parents=True, exist_ok=True)
    print(f"[yoke] building {YOKE_PACKAGE}@{YOKE_VERSION} ...", end="", file=sys.stderr, flush=True)
    started = time.monotonic()
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    try:
        _go(["build", *GO_BUILD_FLAGS, "-o", str(tmp), YOKE_PACKAGE], WRAPPER_DIR)
        os.replace(tmp, final)
    except BaseException:
        print(" failed", file=sys.stderr, flush=True)
        tmp.unlink(missing_ok=True)
        raise
    print(f" done in {time.monotonic() - started:.1f}s -> {final}", file=sys.stderr, flush=True)


def yoke_binary() -> Path:
    """Path of the yoke CLI binary, building it on first use."""
    final = cache_root() / build_key() / "yoke"
    if final.is_file():
        return final
    with _locked():
        if not final.is_file():  # a concurrent process may have built it while we waited
            _build(final)
    return final


def strip_ansi(text: str) -> str:
    """``text`` without terminal colour codes (yoke colours diffs and help even when not on a tty)."""
    return _ANSI.sub("", text)


def run_yoke(
    args: Sequence[str],
    *,
    kubeconfig: Path | str | None = None,
    stdin: str | None = None,
    check: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """Run ``yoke <command> [--kubeconfig K] <args...>``; raise YokeError on a non-zero exit if ``check``.

    ``args[0]`` is the sub-command; ``--kubeconfig`` goes right after it (yoke's sub-commands parse
    their own flags, and Go's flag package stops at the first positional argument). Without ``stdin``
    yoke reads an empty stdin, never the caller's terminal.
    """
    command, *rest = args
    argv = [str(yoke_binary()), command]
    if kubeconfig is not None:
        argv += ["--kubeconfig", str(kubeconfig)]
    argv += rest
    env = {**os.environ, "NO_COLOR": "1"}
    done = subprocess.run(
        argv,
        input=stdin or "",
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    if check and done.returncode != 0:
        raise YokeError(args, done.returncode, done.stdout, done.stderr)
    return done


def main(argv: list[str] | None = None) -> int:
    """``python tools/yokecli.py``: print the binary's path; with arguments, run yoke with them."""
    args = sys.argv[1:] if argv is None else argv
    try:
        binary = yoke_binary()
    except YokeBuildError as exc:
        print(f"[yoke] error: {exc}", file=sys.stderr)
        return 1
    if not args:
        print(binary)
        return 0
    return subprocess.run([str(binary), *args], check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
