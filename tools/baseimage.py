"""A Python 3.11 base image made from Debian's packages, for machines that cannot pull ``python:3.11-slim``.

``ensure_base_image()`` returns the tag of a local image the Dockerfile accepts as ``PYTHON_IMAGE``: a
Debian bookworm root filesystem made with ``debootstrap --variant=minbase`` with ``python3.11``, its
``venv`` module and CA certificates, plus a virtualenv in ``/opt/python`` whose ``python`` and ``pip``
come first on ``PATH`` (what the Dockerfile's builder stage calls). The host's CA bundle replaces the
image's, so pip inside a build trusts what the host trusts (a proxy's CA included); images built on it
are for local use and tests, not for publishing (docs/deploy.md).

The image is cached by content: its tag is a hash of this file, the package list and the host's CA
bundle; the root filesystem tarball is kept in ``~/.cache/yoke-atc-py/baseimage/`` so a wiped Docker
data directory costs only a ``docker import``. Needs root (debootstrap, chroot) and a Docker daemon.
Used by the image tests (``tests/image/``) and ``python tools/baseimage.py`` (prints the tag).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("python3.11", "python3.11-venv", "python3-distutils", "ca-certificates")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "yoke-atc-py" / "baseimage"
REPOSITORY = "atc-base"
PATH_IN_IMAGE = "/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class BaseImageError(RuntimeError):
    """The base image could not be made; the message says which step failed."""


def content_key() -> str:
    """What the image is made from: this recipe, the package list and the host's CA bundle."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update(" ".join((SUITE, MIRROR, *PACKAGES)).encode())
    if HOST_CA_BUNDLE.is_file():
        digest.update(HOST_CA_BUNDLE.read_bytes())
    return digest.hexdigest()[:16]


def _run(argv: list[str], what: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout)[-2000:]
        raise BaseImageError(f"{what} failed (exit {done.returncode}): {tail}")


def image_exists(tag: str) -> bool:
    done = subprocess.run(["docker", "image", "inspect", tag], capture_output=True, check=False)
    return done.returncode == 0


def _make_rootfs(root: Path) -> None:
    """debootstrap, the /opt/python virtualenv, the host's CA bundle, no package caches."""
    _run(
        ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(root), MIRROR],
        "debootstrap",
    )
    _run(["chroot", str(root), "/usr/bin/python3.11", "-m", "venv", "/opt/python"], "creating /opt/python")
    if HOST_CA_BUNDLE.is_file():
        shutil.copyfile(HOST_CA_BUNDLE, root / "etc/ssl/certs/ca-certificates.crt")
    for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for entry in (root / cache).glob("*"):
            if entry.is_file():
                entry.unlink()


def rootfs_tarball(key: str) -> Path:
    """The cached root filesystem tarball for ``key``, made when missing."""
    tarball = CACHE_DIR / f"{key}.tar"
    if tarball.is_file():
        return tarball
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE_DIR) as work:
        root = Path(work) / "root"
        _make_rootfs(root)
        partial = Path(work) / "rootfs.tar"
        _run(["tar", "-C", str(root), "--numeric-owner", "-cf", str(partial), "."], "packing the root filesystem")
        partial.replace(tarball)
    return tarball


def ensure_base_image() -> str:
    """The tag of the base image, imported into Docker when it is not there yet."""
    key = content_key()
    tag = f"{REPOSITORY}:{key}"
    if image_exists(tag):
        return tag
    tarball = rootfs_tarball(key)
    changes = ["--change", f"ENV PATH={PATH_IN_IMAGE}", "--change", "ENV LANG=C.UTF-8", "--change", 'CMD ["python"]']
    _run(["docker", "import", *changes, str(tarball), tag], "docker import")
    return tag


def main() -> int:
    try:
        print(ensure_base_image())
    except BaseImageError as exc:
        print(f"baseimage: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
