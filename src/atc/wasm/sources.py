"""Fetching a flight module's bytes from its URL: local paths, ``file://``, ``http(s)://``, ``oci://``.

``fetch_module`` is what the module cache calls on a miss (docs/flight-runtime.md,
"From URL to running module"); it always
returns the *uncompressed* wasm. Local paths and ``file://`` URLs are read from
this process's filesystem (gunzipped when the name ends in ``.gz``) when the
fetch policy allows files (``atc.wasm.fetch_policy``; it also says which
addresses http(s) and oci may connect to); http(s)
is a GET that follows redirects and verifies TLS (``insecure`` applies to
``oci://`` only, as in yoke); ``oci://`` is delegated to ``atc.wasm.oci``.
Every failure is a ``ModuleFetchError`` naming the URL or the request that
failed; the whole fetch has one deadline (``timeout``) and every body, before
and after decompression, is refused beyond ``max_bytes``.

http(s) bodies and ``Content-Encoding``: the session does not decompress, so
the body is gunzipped here when the response says ``Content-Encoding: gzip``,
and (again, if it is still gzip) when the URL path ends in ``.gz``. A ``.gz``
file served with ``Content-Encoding: gzip`` thus works whether the header
describes the file itself or an extra layer of compression on top of it.
"""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path
from urllib.parse import SplitResult, unquote, urlsplit

import aiohttp

from atc.wasm import oci
from atc.wasm.errors import ModuleFetchError
from atc.wasm.fetch_policy import FetchPolicy
from atc.wasm.transfer import GZIP_MAGIC, describe, gunzip, is_gzip, open_session, read_body, too_large

DEFAULT_MAX_MODULE_BYTES = 256 * 2**20
WASM_MAGIC = b"\0asm"
NOT_A_MODULE = "not a WebAssembly binary module"
LOCAL_FILES_REFUSED = (
    "reading modules from local files is not allowed (MODULE_ALLOW_LOCAL_FILES): use an http(s):// or oci:// URL"
)
DEFAULT_FETCH_SECONDS = 60.0
_REMOTE_SCHEMES = ("http", "https", "oci")
_GZIP_ENCODINGS = frozenset({"gzip", "x-gzip"})


async def fetch_module(
    url: str,
    *,
    insecure: bool = False,
    docker_config_path: Path | None = None,
    timeout: float = DEFAULT_FETCH_SECONDS,
    max_bytes: int = DEFAULT_MAX_MODULE_BYTES,
    policy: FetchPolicy | None = None,
) -> bytes:
    """The uncompressed wasm at ``url``; ``ModuleFetchError`` when it cannot be had or ``policy`` forbids it."""
    parts = _split(url)
    if parts.scheme and parts.scheme not in (*_REMOTE_SCHEMES, "file"):
        raise ModuleFetchError(f"unsupported protocol: {parts.scheme} - http(s) and oci supported only")
    policy = policy or FetchPolicy()
    if parts.scheme in ("", "file") and not policy.allow_local_files:
        raise ModuleFetchError(LOCAL_FILES_REFUSED)
    try:
        async with asyncio.timeout(timeout):
            return await _fetch_by_scheme(url, parts, insecure, docker_config_path, max_bytes, policy)
    except TimeoutError as err:
        raise ModuleFetchError(f"timed out after {timeout:g}s fetching {url}") from err


async def _fetch_by_scheme(
    url: str, parts: SplitResult, insecure: bool, docker_config_path: Path | None, max_bytes: int, policy: FetchPolicy
) -> bytes:
    if parts.scheme in ("", "file"):
        return await asyncio.to_thread(read_local_module, _local_path(url, parts), max_bytes)
    if parts.scheme == "oci":
        return await oci.pull_module(
            url, insecure=insecure, docker_config_path=docker_config_path, max_bytes=max_bytes, policy=policy
        )
    return await _fetch_http(url, parts, max_bytes, policy)


def read_local_module(path: Path, max_bytes: int = DEFAULT_MAX_MODULE_BYTES) -> bytes:
    """A module file from this filesystem, gunzipped when its name ends in ``.gz``.

    Only a regular file is read, at most ``max_bytes`` + 1 of it whatever its size claims (files in
    /proc say 0), and only if it starts like a module (wasm, or gzip for ``.gz``): anything else is
    refused without a byte of it in the error.
    """
    zipped = path.name.endswith(".gz")
    try:
        with path.open("rb") as module:
            if not stat.S_ISREG(os.fstat(module.fileno()).st_mode):
                raise ModuleFetchError(f"failed to read module file {path}: not a regular file")
            head = module.read(len(WASM_MAGIC))
            if not head.startswith(GZIP_MAGIC if zipped else WASM_MAGIC):
                raise ModuleFetchError(f"failed to read module file {path}: {NOT_A_MODULE}")
            data = head + module.read(max_bytes + 1 - len(head))
    except OSError as err:
        raise ModuleFetchError(f"failed to read module file {path}: {err.strerror or describe(err)}") from err
    if len(data) > max_bytes:
        raise too_large(str(path), max_bytes)
    return gunzip(data, max_bytes=max_bytes, source=str(path)) if zipped else data


async def _fetch_http(url: str, parts: SplitResult, max_bytes: int, policy: FetchPolicy) -> bytes:
    try:
        session = open_session(policy=policy)
        async with session, session.get(url, headers={"Accept-Encoding": "gzip"}) as response:
            if response.status >= 400:
                raise ModuleFetchError(f"unexpected statuscode fetching {url}: {response.status}")
            body = await read_body(response, max_bytes=max_bytes, source=url)
            encoding = response.headers.get("Content-Encoding", "").strip().lower()
    except (aiohttp.ClientError, ValueError) as err:
        raise ModuleFetchError(f"failed to get response from {url}: {describe(err)}") from err
    gzip_encoded, gz_path = encoding in _GZIP_ENCODINGS, parts.path.endswith(".gz")
    return await asyncio.to_thread(
        _decode_http_body, body, url, gzip_encoded=gzip_encoded, gz_path=gz_path, max_bytes=max_bytes
    )


def _decode_http_body(body: bytes, url: str, *, gzip_encoded: bool, gz_path: bool, max_bytes: int) -> bytes:
    """Undo ``Content-Encoding: gzip``, then the ``.gz`` of the path unless that already gave raw bytes."""
    if gzip_encoded:
        body = gunzip(body, max_bytes=max_bytes, source=url)
        if not (gz_path and is_gzip(body)):
            return body
    elif not gz_path:
        return body
    return gunzip(body, max_bytes=max_bytes, source=url)


def _local_path(url: str, parts: SplitResult) -> Path:
    """The filesystem path of a plain path or a ``file://`` URL.

    ``file:///x`` and ``file://localhost/x`` are ``/x``; ``file://dir/x`` is the relative path ``dir/x``.
    """
    if parts.scheme != "file":
        return Path(url)
    host = "" if parts.netloc in ("", "localhost") else parts.netloc
    return Path(unquote(host + parts.path))


def _split(url: str) -> SplitResult:
    try:
        return urlsplit(url)
    except ValueError as err:
        raise ModuleFetchError(f"invalid path url: {err}") from err
