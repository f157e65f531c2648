"""Build a pinned Go command from a wrapper module into a content-keyed cache, once.

``tools/yokecli.py`` (the yoke CLI for the interop tests) and ``tools/helmcli.py`` (helm for the
chart tests) each describe their tool with a ``GoTool``: the wrapper module under ``tools/kbin/``
(go.mod and go.sum only), the package to build, link flags and extra go environment. ``binary()``
returns ``${XDG_CACHE_HOME:-~/.cache}/yoke-atc-py/<name>/<key>/<name>``, where the key hashes the
wrapper's go.mod and go.sum, ``go version``, the build flags and the go environment: a present
binary is reused without running go; a missing one is built under a file lock into a temporary file
and renamed into place, with a progress line every 30 s. Builds are read-only against the committed
go.sum. ``run`` runs the tool and raises ``ToolError`` on a non-zero exit. Standard library only.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

GO_ENV = {
    "GOTOOLCHAIN": "local",
    "CGO_ENABLED": "0",
    "GOFLAGS": "-modcacherw -mod=readonly -buildvcs=false",
}
RECIPE_VERSION = "1"  # bump to invalidate every cached binary
ERROR_TAIL_LINES = 40
DEFAULT_TIMEOUT = 120.0
HEARTBEAT_SECONDS = 30.0


class BuildError(RuntimeError):
    """The binary could not be built; the message carries the tail of go's output."""


class ToolError(RuntimeError):
    """A command exited non-zero; ``stdout`` and ``stderr`` hold what it printed."""

    def __init__(self, name: str, args: Sequence[str], code: int, stdout: str, stderr: str) -> None:
        super().__init__(f"`{name} {' '.join(args)}` failed (exit {code}):\n{stderr.strip() or stdout.strip()}")
        self.code = code
        self.stdout = stdout
        self.stderr = stderr


@dataclass(frozen=True)
class GoTool:
    """One pinned Go command: where its wrapper module is, what to build, how to link it."""

    name: str  # the binary's name, the cache subdirectory and the log prefix
    package: str  # the Go package to build
    version: str  # for messages
    wrapper_dir: Path
    build_flags: tuple[str, ...] = ("-trimpath",)
    no_sumdb_modules: tuple[str, ...] = ()  # modules missing from sum.golang.org
    run_env: Mapping[str, str] = field(default_factory=dict)

    def cache_root(self) -> Path:
        """Directory holding one subdirectory per build key."""
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(base) / "yoke-atc-py" / self.name

    def _go_env(self) -> dict[str, str]:
        env = {**os.environ, **GO_ENV}
        if self.no_sumdb_modules:
            env["GONOSUMDB"] = ",".join(filter(None, (os.environ.get("GONOSUMDB", ""), *self.no_sumdb_modules)))
        return env

    def go(self, args: list[str]) -> str:
        """Run a go command in the wrapper module; raise BuildError with the tail of its output if it fails."""
        try:
            done = subprocess.run(
                ["go", *args], cwd=self.wrapper_dir, env=self._go_env(), capture_output=True, text=True, check=False
            )
        except FileNotFoundError as exc:
            raise BuildError(f"`go` is not on PATH: install Go 1.26 to build the {self.name} CLI") from exc
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-ERROR_TAIL_LINES:])
            raise BuildError(f"`go {' '.join(args)}` failed (exit {done.returncode}):\n{tail}")
        return done.stdout

    def build_key(self) -> str:
        """Content hash of everything that decides the binary's bytes."""
        digest = hashlib.sha256(f"recipe={RECIPE_VERSION}\0".encode())
        for name in ("go.mod", "go.sum"):
            data = (self.wrapper_dir / name).read_bytes()
            digest.update(f"{name}\0{len(data)}\0".encode() + data)
        digest.update(_go_version(self).encode())
        digest.update(" ".join(self.build_flags).encode())
        digest.update(" ".join(f"{k}={v}" for k, v in sorted(GO_ENV.items())).encode())
        return digest.hexdigest()[:24]

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise builds across processes (parallel sessions)."""
        lock_dir = self.cache_root() / ".locks"
        lock_dir.mkdir(parents=True, exist_ok=True)
        with (lock_dir / f"{self.name}.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _build(self, final: Path) -> None:
        """Compile into a temporary file next to ``final`` and rename it into place."""
        final.parent.mkdir(parents=True, exist_ok=True)
        self._say(f"building {self.package}@{self.version} (minutes on a cold cache)")
        started = time.monotonic()
        tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        done = threading.Event()
        heartbeat = threading.Thread(target=self._heartbeat, args=(done, started), daemon=True)
        heartbeat.start()
        try:
            self.go(["build", *self.build_flags, "-o", str(tmp), self.package])
            os.replace(tmp, final)
        except BaseException:
            self._say("build failed")
            tmp.unlink(missing_ok=True)
            raise
        finally:
            done.set()
            heartbeat.join()
        self._say(f"built in {time.monotonic() - started:.1f}s -> {final}")

    def _heartbeat(self, done: threading.Event, started: float) -> None:
        """A progress line every 30 s while go builds (it prints nothing itself)."""
        while not done.wait(HEARTBEAT_SECONDS):
            elapsed = int(time.monotonic() - started)
            self._say(f"still building, {elapsed // 60}m{elapsed % 60:02d}s")

    def _say(self, text: str) -> None:
        print(f"[{self.name}] {text}", file=sys.stderr, flush=True)

    def binary(self) -> Path:
        """Path of the binary, building it on first use."""
        final = self.cache_root() / self.build_key() / self.name
        if final.is_file():
            return final
        with self._locked():
            if not final.is_file():  # a concurrent process may have built it while we waited
                self._build(final)
        return final

    def run(
        self, argv: Sequence[str], *, stdin: str = "", check: bool = True, timeout: float = DEFAULT_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """Run the binary with ``argv`` (stdin empty unless given, never the caller's terminal)."""
        done = subprocess.run(
            [str(self.binary()), *argv],
            input=stdin,
            capture_output=True,
            text=True,
            env={**os.environ, **self.run_env},
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise ToolError(self.name, argv, done.returncode, done.stdout, done.stderr)
        return done

    def main(self, argv: Sequence[str]) -> int:
        """``python tools/<name>cli.py``: print the binary's path; with arguments, run the tool with them."""
        try:
            binary = self.binary()
        except BuildError as exc:
            self._say(f"error: {exc}")
            return 1
        if not argv:
            print(binary)
            return 0
        return subprocess.run([str(binary), *argv], env={**os.environ, **self.run_env}, check=False).returncode


@functools.cache
def _go_version_in(wrapper_dir: Path) -> str:
    return subprocess.run(
        ["go", "version"], cwd=wrapper_dir, env={**os.environ, **GO_ENV}, capture_output=True, text=True, check=True
    ).stdout.strip()


def _go_version(tool: GoTool) -> str:
    try:
        return _go_version_in(tool.wrapper_dir)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise BuildError(f"`go version` failed: install Go 1.26 to build the {tool.name} CLI ({exc})") from exc
