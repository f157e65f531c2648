"""Loopback test servers: static files over HTTP and a small in-memory OCI registry.

Used by tests that fetch flight modules (``tests/integration/test_module_fetch.py``
and later the module cache and reconciler tests); import as ``servers``
(``tests`` is on pytest's ``pythonpath``). Both run ``http.server`` in a daemon
thread on 127.0.0.1 with a free port, record every request, and stop when
their ``with`` block ends.

- ``serve_files(directory)`` yields a base URL serving the files below
  ``directory``; ``FileServer`` is the same with handles on the request log,
  forced statuses (``fail(path, 500)``) and redirects.
- ``OciRegistry`` implements the parts of the OCI distribution API v2 that
  pulling and pushing need (``/v2/``, manifests GET/HEAD/PUT by tag or digest,
  blobs GET/HEAD, uploads POST/PATCH/PUT), optionally behind ``basic`` auth
  or ``bearer`` tokens issued by its own ``/token`` endpoint.
- ``mutual_tls_server(handle, serving, ca, directory)`` runs an aiohttp handler
  on the test's event loop over HTTPS that requires a client certificate of
  ``ca`` (an API server stand-in for the kube client tests).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import re
import secrets
import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

from aiohttp import web

from atc.service.certificates import CertificateAuthority, KeyPair

OCI_MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
AuthMode = Literal["none", "basic", "bearer"]


@dataclass(frozen=True)
class RecordedRequest:
    """One request a test server received (header names lowercased)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes = b""


@dataclass
class Reply:
    """What a test server answers."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def _handler_for(respond: Callable[[RecordedRequest], Reply]) -> type[BaseHTTPRequestHandler]:
    """A request handler class that passes every request to ``respond``."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self._dispatch()

        def do_HEAD(self) -> None:
            self._dispatch()

        def do_POST(self) -> None:
            self._dispatch()

        def do_PUT(self) -> None:
            self._dispatch()

        def do_PATCH(self) -> None:
            self._dispatch()

        def log_message(self, format: str, *args: Any) -> None:
            """Silence the per-request log on stderr."""

        def _dispatch(self) -> None:
            reply = respond(self._recorded())
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            if "Content-Length" not in reply.headers and "Connection" not in reply.headers:
                self.send_header("Content-Length", str(len(reply.body)))
            if reply.headers.get("Connection") == "close":
                self.close_connection = True
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(reply.body)

        def _recorded(self) -> RecordedRequest:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
            headers = {name.lower(): value for name, value in self.headers.items()}
            return RecordedRequest(self.command, unquote(parts.path), query, headers, body)

    return Handler


class _LoopbackServer:
    """An HTTP server on 127.0.0.1 in a daemon thread."""

    def __init__(self, respond: Callable[[RecordedRequest], Reply]) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(respond))
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="test-http-server", daemon=True
        )

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


# --- static files ----------------------------------------------------------------------------------


class FileServer:
    """Serves the files below ``directory``; ``with FileServer(d) as server: server.url``.

    ``gzip_encoding`` gzips every body and says so with ``Content-Encoding: gzip``;
    ``send_length=False`` omits ``Content-Length`` and ends bodies by closing the
    connection. ``statuses`` (path -> status) and ``redirects`` (path -> location)
    are read on every request, so a test may change them while the server runs.
    """

    def __init__(
        self,
        directory: Path,
        *,
        gzip_encoding: bool = False,
        send_length: bool = True,
        statuses: dict[str, int] | None = None,
        requests: list[RecordedRequest] | None = None,
    ) -> None:
        self.directory = directory.resolve()
        self.gzip_encoding = gzip_encoding
        self.send_length = send_length
        self.statuses: dict[str, int] = statuses if statuses is not None else {}
        self.redirects: dict[str, str] = {}
        self.requests: list[RecordedRequest] = requests if requests is not None else []
        self._server = _LoopbackServer(self._respond)

    @property
    def url(self) -> str:
        return f"http://{self._server.host}"

    def fail(self, path: str, status: int) -> None:
        """Answer ``status`` (e.g. 404, 500) for ``path`` from now on."""
        self.statuses[path] = status

    def redirect(self, path: str, location: str) -> None:
        """Answer ``302 Found`` to ``location`` for ``path``."""
        self.redirects[path] = location

    def __enter__(self) -> FileServer:
        self._server.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.stop()

    def _respond(self, request: RecordedRequest) -> Reply:
        self.requests.append(request)
        if request.path in self.statuses:
            status = self.statuses[request.path]
            return Reply(status, f"forced status {status}\n".encode())
        if request.path in self.redirects:
            return Reply(302, headers={"Location": self.redirects[request.path]})
        file = (self.directory / request.path.lstrip("/")).resolve()
        if not file.is_file() or not file.is_relative_to(self.directory):
            return Reply(404, b"404 page not found\n")
        return self._file_reply(file.read_bytes())

    def _file_reply(self, content: bytes) -> Reply:
        headers = {"Content-Type": "application/octet-stream"}
        if self.gzip_encoding:
            content = gzip.compress(content)
            headers["Content-Encoding"] = "gzip"
        headers.update({"Content-Length": str(len(content))} if self.send_length else {"Connection": "close"})
        return Reply(200, content, headers)


@contextmanager
def serve_files(
    directory: Path,
    *,
    gzip_encoding: bool = False,
    send_length: bool = True,
    statuses: dict[str, int] | None = None,
    requests: list[RecordedRequest] | None = None,
) -> Iterator[str]:
    """Serve ``directory`` on loopback and yield the base URL (``http://127.0.0.1:PORT``).

    Pass ``statuses`` to force answers per path (mutable while serving) and
    ``requests`` to collect the request log.
    """
    server = FileServer(
        directory, gzip_encoding=gzip_encoding, send_length=send_length, statuses=statuses, requests=requests
    )
    with server:
        yield server.url


# --- OCI registry ----------------------------------------------------------------------------------

_UPLOAD_PATH = re.compile(r"/v2/(?P<repo>.+)/blobs/uploads/(?P<upload>[^/]*)")
_BLOB_PATH = re.compile(r"/v2/(?P<repo>.+)/blobs/(?P<digest>sha256:[a-f0-9]{64})")
_MANIFEST_PATH = re.compile(r"/v2/(?P<repo>.+)/manifests/(?P<reference>[^/]+)")
_REPO_OF_PATH = re.compile(r"/v2/(?P<repo>.+)/(?:manifests|blobs)/.*")


def digest_of(data: bytes) -> str:
    """The OCI digest (``sha256:<hex>``) of ``data``."""
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Reply:
    body = json.dumps({"errors": [{"code": code, "message": message, "detail": None}]}).encode()
    return Reply(status, body, {"Content-Type": "application/json", **(headers or {})})


class OciRegistry:
    """A small OCI distribution registry in memory; ``with OciRegistry() as registry: registry.host``.

    ``auth="basic"`` wants ``Authorization: Basic`` with ``username``/``password``
    on every ``/v2`` call; ``auth="bearer"`` challenges with its own ``/token``
    realm, which issues a token only for those basic credentials.
    """

    def __init__(self, *, auth: AuthMode = "none", username: str = "robot", password: str = "s3cret") -> None:
        self.auth = auth
        self.username = username
        self.password = password
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._blobs: dict[str, bytes] = {}
        self._manifests: dict[str, tuple[str, bytes]] = {}
        self._tags: dict[tuple[str, str], str] = {}
        self._uploads: dict[str, bytearray] = {}
        self._tokens: set[str] = set()
        self._server = _LoopbackServer(self._respond)

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, the registry part of ``oci://`` URLs."""
        return self._server.host

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def __enter__(self) -> OciRegistry:
        self._server.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.stop()

    # in-process access for tests ---------------------------------------------------------------

    def put_blob(self, data: bytes, digest: str | None = None) -> str:
        """Store a blob, under ``digest`` even when it is not the data's (to fake corruption)."""
        digest = digest or digest_of(data)
        with self._lock:
            self._blobs[digest] = data
        return digest

    def put_manifest(
        self, repo: str, reference: str, manifest: bytes | Mapping[str, Any], media_type: str = OCI_MANIFEST_MEDIA_TYPE
    ) -> str:
        """Store a manifest as given (no checks) under a tag or its digest; returns its digest."""
        body = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
        digest = digest_of(body)
        with self._lock:
            self._manifests[digest] = (media_type, body)
            if not reference.startswith("sha256:"):
                self._tags[(repo, reference)] = digest
        return digest

    def blob(self, digest: str) -> bytes | None:
        with self._lock:
            return self._blobs.get(digest)

    def manifest(self, repo: str, reference: str) -> bytes | None:
        with self._lock:
            digest = self._resolve(repo, reference)
            return self._manifests[digest][1] if digest else None

    def tags(self, repo: str) -> list[str]:
        with self._lock:
            return sorted(tag for (name, tag) in self._tags if name == repo)

    # HTTP --------------------------------------------------------------------------------------

    def _respond(self, request: RecordedRequest) -> Reply:
        self.requests.append(request)
        if request.path == "/token":
            return self._issue_token(request)
        if request.path != "/v2/" and not request.path.startswith("/v2/"):
            return _error(404, "NOT_FOUND", "not found")
        denied = self._deny_unauthorized(request)
        if denied is not None:
            return denied
        with self._lock:
            return self._route(request)

    def _route(self, request: RecordedRequest) -> Reply:
        if request.path == "/v2/":
            return Reply(200, b"{}", {"Content-Type": "application/json"})
        if match := _UPLOAD_PATH.fullmatch(request.path):
            return self._upload(request, match["repo"], match["upload"])
        if match := _BLOB_PATH.fullmatch(request.path):
            return self._get_blob(match["digest"])
        if match := _MANIFEST_PATH.fullmatch(request.path):
            if request.method == "PUT":
                return self._put_manifest(request, match["repo"], match["reference"])
            return self._get_manifest(match["repo"], match["reference"])
        return _error(404, "NOT_FOUND", f"no route for {request.method} {request.path}")

    def _get_blob(self, digest: str) -> Reply:
        data = self._blobs.get(digest)
        if data is None:
            return _error(404, "BLOB_UNKNOWN", "blob unknown to registry")
        return Reply(200, data, {"Content-Type": "application/octet-stream", "Docker-Content-Digest": digest})

    def _get_manifest(self, repo: str, reference: str) -> Reply:
        digest = self._resolve(repo, reference)
        if digest is None:
            return _error(404, "MANIFEST_UNKNOWN", "manifest unknown")
        media_type, body = self._manifests[digest]
        return Reply(200, body, {"Content-Type": media_type, "Docker-Content-Digest": digest})

    def _put_manifest(self, request: RecordedRequest, repo: str, reference: str) -> Reply:
        try:
            document = json.loads(request.body)
            referenced = [document["config"]["digest"], *(layer["digest"] for layer in document.get("layers", []))]
        except (json.JSONDecodeError, TypeError, KeyError):
            return _error(400, "MANIFEST_INVALID", "manifest invalid")
        if missing := [digest for digest in referenced if digest not in self._blobs]:
            return _error(400, "MANIFEST_BLOB_UNKNOWN", f"blob unknown to registry: {missing[0]}")
        digest = digest_of(request.body)
        if reference.startswith("sha256:") and reference != digest:
            return _error(400, "DIGEST_INVALID", "provided digest did not match uploaded content")
        media_type = request.headers.get("content-type") or document.get("mediaType") or OCI_MANIFEST_MEDIA_TYPE
        self._manifests[digest] = (media_type, request.body)
        if not reference.startswith("sha256:"):
            self._tags[(repo, reference)] = digest
        location = f"/v2/{repo}/manifests/{digest}"
        return Reply(201, headers={"Location": location, "Docker-Content-Digest": digest})

    def _upload(self, request: RecordedRequest, repo: str, upload: str) -> Reply:
        if request.method == "POST" and not upload:
            if "digest" in request.query:
                return self._finish_upload(repo, bytearray(request.body), request.query["digest"])
            upload = secrets.token_hex(8)
            self._uploads[upload] = bytearray(request.body)
            return self._upload_progress(repo, upload)
        if upload not in self._uploads:
            return _error(404, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry")
        self._uploads[upload] += request.body
        if request.method == "PATCH":
            return self._upload_progress(repo, upload)
        if request.method == "PUT" and "digest" in request.query:
            return self._finish_upload(repo, self._uploads.pop(upload), request.query["digest"])
        return _error(400, "UNSUPPORTED", "unsupported upload request")

    def _upload_progress(self, repo: str, upload: str) -> Reply:
        size = len(self._uploads[upload])
        headers = {
            "Location": f"/v2/{repo}/blobs/uploads/{upload}",
            "Range": f"0-{max(size - 1, 0)}",
            "Docker-Upload-UUID": upload,
        }
        return Reply(202, headers=headers)

    def _finish_upload(self, repo: str, data: bytearray, digest: str) -> Reply:
        if digest_of(bytes(data)) != digest:
            return _error(400, "DIGEST_INVALID", "provided digest did not match uploaded content")
        self._blobs[digest] = bytes(data)
        return Reply(201, headers={"Location": f"/v2/{repo}/blobs/{digest}", "Docker-Content-Digest": digest})

    def _resolve(self, repo: str, reference: str) -> str | None:
        digest = reference if reference.startswith("sha256:") else self._tags.get((repo, reference))
        return digest if digest in self._manifests else None

    # auth --------------------------------------------------------------------------------------

    def _basic_credentials_ok(self, authorization: str) -> bool:
        expected = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return secrets.compare_digest(authorization, f"Basic {expected}")

    def _deny_unauthorized(self, request: RecordedRequest) -> Reply | None:
        authorization = request.headers.get("authorization", "")
        if self.auth == "none":
            return None
        if self.auth == "basic":
            if self._basic_credentials_ok(authorization):
                return None
            return _error(401, "UNAUTHORIZED", "authentication required", {"WWW-Authenticate": 'Basic realm="oci"'})
        token = authorization.removeprefix("Bearer ") if authorization.startswith("Bearer ") else ""
        with self._lock:
            if token in self._tokens:
                return None
        return _error(
            401, "UNAUTHORIZED", "authentication required", {"WWW-Authenticate": self._bearer_challenge(request)}
        )

    def _bearer_challenge(self, request: RecordedRequest) -> str:
        challenge = f'Bearer realm="{self.url}/token",service="oci-registry"'
        if match := _REPO_OF_PATH.fullmatch(request.path):
            actions = "pull" if request.method in ("GET", "HEAD") else "pull,push"
            challenge += f',scope="repository:{match["repo"]}:{actions}"'
        return challenge

    def _issue_token(self, request: RecordedRequest) -> Reply:
        if self.auth != "bearer" or not self._basic_credentials_ok(request.headers.get("authorization", "")):
            return _error(401, "UNAUTHORIZED", "invalid credentials for token")
        token = secrets.token_urlsafe(16)
        with self._lock:
            self._tokens.add(token)
        body = json.dumps({"token": token, "access_token": token, "expires_in": 300}).encode()
        return Reply(200, body, {"Content-Type": "application/json"})


@asynccontextmanager
async def mutual_tls_server(
    handle: Callable[[web.Request], Awaitable[web.StreamResponse]],
    serving: KeyPair,
    ca: CertificateAuthority,
    directory: Path,
) -> AsyncIterator[str]:
    """``handle`` on every path over HTTPS on 127.0.0.1, client certificates of ``ca`` required; yields the URL."""
    cert_file, key_file = serving.write(directory, "serving")
    server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ssl.load_cert_chain(cert_file, key_file)
    server_ssl.load_verify_locations(cadata=ca.cert_pem.decode())
    server_ssl.verify_mode = ssl.CERT_REQUIRED
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ssl).start()
    try:
        yield f"https://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
