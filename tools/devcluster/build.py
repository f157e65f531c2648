"""Build the local control-plane binaries from the pinned Go wrapper modules.

Called by ``python -m devcluster build`` (the Makefile, ``.ci/run``) and by the
launcher before it starts a cluster. The binaries land in a cache outside the
repository, in a directory named after a content hash of everything that
decides their bytes (the wrapper modules' go.mod/go.sum, ``go version``, the
build flags). A complete directory is reused as is; a missing one is built in a
temporary directory and renamed into place, so a half-built cache never exists.
Only the standard library is used: this runs before the virtualenv exists.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

KUBE_VERSION = "v1.36.3"
KWOK_MODULE = "sigs.k8s.io/kwok"
KWOK_VERSION = "v0.8.0"
BUILD_RECIPE_VERSION = "2"  # bump to invalidate every cached build
MIN_FREE_BYTES_FOR_COLD_BUILD = 6 * 1024**3

WRAPPERS_DIR = Path(__file__).resolve().parent.parent / "kbin"


@dataclass(frozen=True)
class GoTarget:
    """One ``go build`` run: a wrapper module and the packages it compiles."""

    module_dir: str
    packages: tuple[str, ...]
    binaries: tuple[str, ...]
    ldflags: str


def _kube_ldflags() -> str:
    minor = KUBE_VERSION.split(".")[1]
    stamps = {
        "k8s.io/component-base/version.gitVersion": KUBE_VERSION,
        "k8s.io/component-base/version.gitMajor": "1",
        "k8s.io/component-base/version.gitMinor": minor,
        "k8s.io/component-base/version.gitTreeState": "clean",
        "k8s.io/client-go/pkg/version.gitVersion": KUBE_VERSION,
    }
    return " ".join(["-s", "-w", *(f"-X {key}={value}" for key, value in stamps.items())])


TARGETS: tuple[GoTarget, ...] = (
    GoTarget(
        module_dir="kube",
        packages=tuple(
            f"k8s.io/kubernetes/cmd/{name}"
            for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
        ),
        binaries=("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"),
        ldflags=_kube_ldflags(),
    ),
    GoTarget(
        module_dir="etcd",
        packages=("go.etcd.io/etcd/server/v3",),
        binaries=("etcd",),
        ldflags="-s -w",
    ),
    GoTarget(
        module_dir="kwok",
        packages=(f"{KWOK_MODULE}/cmd/kwok",),
        binaries=("kwok",),
        ldflags="-s -w",
    ),
)

ALL_BINARIES: tuple[str, ...] = tuple(b for t in TARGETS for b in t.binaries)
KWOK_STAGE_FILES = (
    "node/fast/node-initialize.yaml",
    "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "pod/fast/pod-ready.yaml",
    "pod/fast/pod-complete.yaml",
    "pod/fast/pod-delete.yaml",
)
STAGES_FILE = "kwok-stages.yaml"
MANIFEST_FILE = "manifest.json"


class BuildError(RuntimeError):
    """The control plane could not be built; the message says what to do."""


def log(message: str) -> None:
    print(f"[devcluster] {message}", file=sys.stderr, flush=True)


def cache_root() -> Path:
    override = os.environ.get("DEVCLUSTER_CACHE")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "yoke-atc-py" / "kbin"


def go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        GOTOOLCHAIN="local",
        CGO_ENABLED="0",
        GOFLAGS="-modcacherw -mod=readonly -buildvcs=false",
    )
    return env


def _go(*args: str, cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(["go", *args], cwd=cwd, env=go_env(), check=True, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise BuildError("`go` is not on PATH: install Go 1.26 to build the control plane") from exc
    except subprocess.CalledProcessError as exc:
        raise BuildError(f"`go {' '.join(args)}` failed:\n{exc.stderr.strip()}") from exc
    return done.stdout.strip()


def build_key() -> str:
    """Content hash of everything that decides the binaries' bytes."""
    digest = hashlib.sha256()
    digest.update(f"recipe={BUILD_RECIPE_VERSION}\n".encode())
    digest.update(_go("version").encode())
    for target in TARGETS:
        for name in ("go.mod", "go.sum"):
            path = WRAPPERS_DIR / target.module_dir / name
            digest.update(f"{target.module_dir}/{name}\n".encode())
            digest.update(path.read_bytes())
        digest.update(" ".join(target.packages).encode())
        digest.update(target.ldflags.encode())
    return digest.hexdigest()[:24]


def is_complete(bin_dir: Path) -> bool:
    """A cached build counts only if every binary, the stages and the manifest are there."""
    names = (*ALL_BINARIES, STAGES_FILE, MANIFEST_FILE)
    if not all((bin_dir / name).is_file() for name in names):
        return False
    try:
        out = subprocess.run([str(bin_dir / "kube-apiserver"), "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return KUBE_VERSION in out.stdout


def _stream_build(target: GoTarget, out_dir: Path, log_path: Path) -> None:
    """Run one `go build -v`, printing a progress line every 15 s."""
    cmd = [
        "go",
        "build",
        "-v",
        "-trimpath",
        "-tags=selinux,notest",
        "-ldflags",
        target.ldflags,
        "-o",
        # one package: name the binary (etcd's main package would be called "server")
        str(out_dir / target.binaries[0]) if len(target.packages) == 1 else f"{out_dir}/",
        *target.packages,
    ]
    started = time.monotonic()
    compiled = 0
    last_package = ""
    stop = threading.Event()

    def report() -> None:
        while not stop.wait(15):
            elapsed = int(time.monotonic() - started)
            log(
                f"  {target.module_dir}: {compiled} packages compiled, {elapsed // 60}m{elapsed % 60:02d}s"
                f" (last: {last_package})"
            )

    ticker = threading.Thread(target=report, daemon=True)
    with log_path.open("a") as build_log:
        proc = subprocess.Popen(
            cmd,
            cwd=WRAPPERS_DIR / target.module_dir,
            env=go_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        ticker.start()
        assert proc.stdout is not None
        for line in proc.stdout:
            build_log.write(line)
            compiled += 1
            last_package = line.strip()
        code = proc.wait()
    stop.set()
    elapsed = int(time.monotonic() - started)
    if code != 0:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-30:])
        raise BuildError(f"go build of {target.module_dir} failed (exit {code}); log {log_path}:\n{tail}")
    log(f"  {target.module_dir}: built {', '.join(target.binaries)} in {elapsed // 60}m{elapsed % 60:02d}s")


def _write_kwok_stages(out_dir: Path) -> None:
    module_cache = Path(_go("env", "GOMODCACHE"))
    stage_root = module_cache / f"{KWOK_MODULE}@{KWOK_VERSION}" / "kustomize" / "stage"
    if not stage_root.is_dir():
        _go("mod", "download", f"{KWOK_MODULE}@{KWOK_VERSION}", cwd=WRAPPERS_DIR / "kwok")
    documents = [(stage_root / rel).read_text().strip() for rel in KWOK_STAGE_FILES]
    (out_dir / STAGES_FILE).write_text("\n---\n".join(documents) + "\n")


def _check_disk(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(root).free
    if free < MIN_FREE_BYTES_FOR_COLD_BUILD:
        raise BuildError(
            f"only {free / 1024**3:.1f} GiB free under {root}; a cold control-plane build needs about "
            f"{MIN_FREE_BYTES_FOR_COLD_BUILD / 1024**3:.0f} GiB (Go module and build caches + binaries)"
        )


def _build_into(tmp_dir: Path, key: str) -> None:
    log_path = tmp_dir / "build.log"
    started = time.monotonic()
    for target in TARGETS:
        log(f"  building {target.module_dir}: {', '.join(target.binaries)} (go build -v, log {log_path})")
        _stream_build(target, tmp_dir, log_path)
    _write_kwok_stages(tmp_dir)
    manifest = {
        "key": key,
        "kubernetes": KUBE_VERSION,
        "kwok": KWOK_VERSION,
        "go": _go("version"),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "build_seconds": round(time.monotonic() - started, 1),
        "binaries": list(ALL_BINARIES),
    }
    (tmp_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")


def ensure_binaries() -> Path:
    """Return the directory holding all control-plane binaries, building it if needed."""
    key = build_key()
    root = cache_root()
    bin_dir = root / key
    if is_complete(bin_dir):
        log(f"control plane binaries: reused from cache {bin_dir}")
        return bin_dir
    _check_disk(root)
    with (root / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another build of the same key may be running
        if is_complete(bin_dir):
            log(f"control plane binaries: built by a concurrent run, reused from {bin_dir}")
            return bin_dir
        log(
            f"control plane binaries: cold build of Kubernetes {KUBE_VERSION}, etcd, KWOK {KWOK_VERSION}"
            f" into {bin_dir} (about 15-30 min on 2 cores)"
        )
        started = time.monotonic()
        tmp_dir = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
        try:
            _build_into(tmp_dir, key)
            if bin_dir.exists():
                shutil.rmtree(bin_dir)  # an incomplete leftover from an older layout
            os.rename(tmp_dir, bin_dir)
        except BaseException:
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise
        elapsed = int(time.monotonic() - started)
        log(f"control plane binaries: built in {elapsed // 60}m{elapsed % 60:02d}s -> {bin_dir}")
    return bin_dir


def main() -> int:
    try:
        print(ensure_binaries())
    except BuildError as exc:
        log(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
