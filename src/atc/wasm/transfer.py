"""Plumbing shared by module downloads: the HTTP session, size-bounded bodies, gzip.

Used by ``atc.wasm.sources`` (local files, http(s) bodies) and ``atc.wasm.oci``
(registry blobs). Every byte string that may become a module passes a limit
before and after decompression, so a huge body or a gzip bomb fails with a
clear ``ModuleFetchError`` instead of exhausting memory. Sessions never
decompress on their own unless asked (``open_session(decompress=True)``, for
registries): callers see the bytes the server sent and the ``Content-Encoding``
header, and decide. Every connection goes through the fetch policy's socket
factory (``atc.wasm.fetch_policy``), so redirects cannot leave it. Like Go's default
client they follow redirects, verify TLS and honour ``HTTPS_PROXY``/``NO_PROXY``.
``gunzip`` accepts multi-member streams like Go's ``compress/gzip``.
"""

from __future__ import annotations

import gzip
import zlib

import aiohttp

from atc.wasm.errors import ModuleFetchError
from atc.wasm.fetch_policy import FetchPolicy

GZIP_MAGIC = b"\x1f\x8b"
_CHUNK_BYTES = 64 * 1024
_GZIP_WBITS = 16 + zlib.MAX_WBITS


def open_session(*, decompress: bool = False, policy: FetchPolicy | None = None) -> aiohttp.ClientSession:
    """A client session (the caller owns the deadline) that connects only where ``policy`` allows.

    By default bodies come back exactly as sent; ``decompress=True`` undoes any
    ``Content-Encoding`` first, as Go's transport does for registry traffic.
    """
    connector = aiohttp.TCPConnector(socket_factory=(policy or FetchPolicy()).socket_factory)
    return aiohttp.ClientSession(
        connector=connector, auto_decompress=decompress, trust_env=True, timeout=aiohttp.ClientTimeout(total=None)
    )


def describe(err: BaseException) -> str:
    """An exception as text, never empty (some aiohttp errors have no message)."""
    return str(err) or type(err).__name__


def too_large(source: str, max_bytes: int, *, decompressed: bool = False) -> ModuleFetchError:
    """The error for a payload over the limit."""
    state = "decompressed " if decompressed else ""
    return ModuleFetchError(f"module {source} is too large: {state}size exceeds the limit of {max_bytes} bytes")


async def read_body(response: aiohttp.ClientResponse, *, max_bytes: int, source: str) -> bytes:
    """Read a response body, refusing it as soon as it is known to exceed ``max_bytes``."""
    if response.content_length is not None and response.content_length > max_bytes:
        raise too_large(source, max_bytes)
    body = bytearray()
    async for chunk in response.content.iter_chunked(_CHUNK_BYTES):
        body += chunk
        if len(body) > max_bytes:
            raise too_large(source, max_bytes)
    return bytes(body)


def is_gzip(data: bytes) -> bool:
    """Whether ``data`` starts like a gzip stream (a wasm module starts with ``\\0asm``)."""
    return data.startswith(GZIP_MAGIC)


def gzip_compress(data: bytes) -> bytes:
    """Deterministic gzip (no timestamp), as used for layers and cache files."""
    return gzip.compress(data, mtime=0)


def gunzip(data: bytes, *, max_bytes: int, source: str) -> bytes:
    """Decompress a (possibly multi-member) gzip stream of at most ``max_bytes`` output bytes."""
    output = bytearray()
    remaining = data
    while True:
        decompressor = zlib.decompressobj(wbits=_GZIP_WBITS)
        try:
            output += decompressor.decompress(remaining, max_bytes + 1 - len(output))
        except zlib.error as err:
            raise ModuleFetchError(f"failed to gunzip module {source}: {err}") from err
        if len(output) > max_bytes:
            raise too_large(source, max_bytes, decompressed=True)
        if not decompressor.eof:
            raise ModuleFetchError(f"failed to gunzip module {source}: unexpected end of gzip stream")
        remaining = decompressor.unused_data
        if not remaining:
            return bytes(output)
