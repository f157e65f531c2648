"""Fetching a flight module's bytes from its URL: local paths, ``file://``, ``http(s)://``, ``oci://``.

``fetch_module`` is what the module cache calls on a miss (spec 5.2); it always
returns the *uncompressed* wasm. Local paths and ``file://`` URLs are read from
this process's filesystem (gunzipped when the name ends in ``.gz``); http(s)
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
from pathlib import Path
from urllib.parse import SplitResult, unquote, urlsplit

import aiohttp

from atc.wasm import oci
from atc.wasm.errors import ModuleFetchError
from atc.wasm.transfer import describe, gunzip, is_gzip, open_session, read_body, too_large

DEFAULT_MAX_MODULE_BYTES = 256 * 2**20
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
) -> bytes:
    """The uncompressed wasm at ``url``; ``ModuleFetchError`` when it cannot be had."""
    parts = _split(url)
    if parts.scheme and parts.scheme not in (*_REMOTE_SCHEMES, "file"):
        raise ModuleFetchError(f"unsupported protocol: {parts.scheme} - http(s) and oci supported only")
    try:
        async with asyncio.timeout(timeout):
            return await _fetch_by_scheme(url, parts, insecure, docker_config_path, max_bytes)
    except TimeoutError as err:
        raise ModuleFetchError(f"timed out after {timeout:g}s fetching {url}") from err


async def _fetch_by_scheme(
    url: str, parts: SplitResult, insecure: bool, docker_config_path: Path | None, max_bytes: int
) -> bytes:
    if parts.scheme in ("", "file"):
        return await asyncio.to_thread(read_local_module, _local_path(url, parts), max_bytes)
    if parts.scheme == "oci":
        return await oci.pull_module(url, insecure=insecure, docker_config_path=docker_config_path, max_bytes=max_bytes)
    return await _fetch_http(url, parts, max_bytes)


def read_local_module(path: Path, max_bytes: int = DEFAULT_MAX_MODULE_BYTES) -> bytes:
    """A module file from this filesystem, gunzipped when its name ends in ``.gz``."""
    try:
        if path.stat().st_size > max_bytes:
            raise too_large(str(path), max_bytes)
        data = path.read_bytes()
    except OSError as err:
        raise ModuleFetchError(f"failed to read module file {path}: {err.strerror or describe(err)}") from err
    if len(data) > max_bytes:
        raise too_large(str(path), max_bytes)
    return gunzip(data, max_bytes=max_bytes, source=str(path)) if path.name.endswith(".gz") else data


async def _fetch_http(url: str, parts: SplitResult, max_bytes: int) -> bytes:
    try:
        async with open_session() as session, session.get(url, headers={"Accept-Encoding": "gzip"}) as response:
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
