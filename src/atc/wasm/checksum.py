"""Module checksums: sha256/sha1 hex, the checksum a URL implies, and verification.

Called by the module cache and the takeoff pipeline. Checksums are lowercase
sha256 hex of the *uncompressed* wasm; revisions record the sha1 hex instead
(``sha1_hex``). ``checksum_from_url`` follows yoke's ``ChecksumFromPath``
(docs/flight-runtime.md, "From URL to running module"): for ``oci://`` the tag
``sha256_<hex>`` of the last path element; for any other URL or path the last
path element cut at its first ``.``, then a ``sha256_`` prefix or an
``_sha256_`` infix. No match means "no checksum".
"""

from __future__ import annotations

import hashlib
from urllib.parse import urlsplit

from atc.wasm.errors import ChecksumMismatchError

_PREFIX = "sha256_"
_INFIX = "_sha256_"


def sha256_hex(data: bytes) -> str:
    """Lowercase hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha1_hex(data: bytes) -> str:
    """Lowercase hex sha1 of ``data`` (the revision's ``source-checksum``)."""
    return hashlib.sha1(data, usedforsecurity=False).hexdigest()


def checksum_from_url(url: str) -> str:
    """The sha256 hex that ``url`` names by convention, or "" when it names none."""
    if not url:
        return ""
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    base = _go_path_base(parts.path)
    if parts.scheme == "oci":
        _, has_tag, tag = base.partition(":")
        return tag.removeprefix(_PREFIX) if has_tag and tag.startswith(_PREFIX) else ""
    stem = base.partition(".")[0]
    if stem.startswith(_PREFIX):
        return stem.removeprefix(_PREFIX)
    _, has_infix, after = stem.partition(_INFIX)
    return after if has_infix else ""


def verify_checksum(data: bytes, expected: str) -> None:
    """Raise ``ChecksumMismatchError`` unless ``expected`` is empty or equals sha256(data)."""
    if not expected:
        return
    actual = sha256_hex(data)
    if expected.lower() != actual:
        raise ChecksumMismatchError(expected, actual)


def _go_path_base(path: str) -> str:
    """Go's ``path.Base``: last element after dropping trailing slashes; "." for "", "/" for all slashes."""
    if not path:
        return "."
    trimmed = path.rstrip("/")
    if not trimmed:
        return "/"
    return trimmed.rpartition("/")[2]
