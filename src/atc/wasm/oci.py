"""Pulling and pushing flight modules in OCI registries (``oci://host[:port]/repo[:tag|@digest]``).

``pull_module`` is called by ``atc.wasm.sources.fetch_module`` for ``oci://``
URLs; ``push_module`` publishes a module like ``yoke stow`` (used by tests and
demos). Both speak the OCI distribution API v2 over aiohttp. An artefact is an
image manifest whose config has media type ``application/vnd.yoke.config.v1+json``
and whose layer ``application/vnd.yoke.wasm.gzip`` is the gzipped module.

Transport, as go-containerregistry decides it: plain http for registries on
localhost, ``*.localhost``, loopback or RFC 1918 addresses; https otherwise.
``insecure`` skips TLS verification and allows plain http: https is tried
first and http is used when the https connection cannot be made.
Authentication is attempted only when a request gets a 401: a ``Basic``
challenge is answered with the docker-config credentials for the registry, a
``Bearer`` challenge by fetching a token from its realm (with those credentials
when there are any), then the request is retried once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import json
import re
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from atc.wasm.checksum import sha256_hex
from atc.wasm.dockerconfig import RegistryCredentials, registry_credentials
from atc.wasm.errors import ModuleFetchError
from atc.wasm.fetch_policy import FetchPolicy
from atc.wasm.transfer import describe, gunzip, gzip_compress, open_session, read_body

CONFIG_MEDIA_TYPE = "application/vnd.yoke.config.v1+json"
WASM_LAYER_MEDIA_TYPE = "application/vnd.yoke.wasm.gzip"
OCI_MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_ACCEPT = ", ".join(
    [
        OCI_MANIFEST_MEDIA_TYPE,
        DOCKER_MANIFEST_MEDIA_TYPE,
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)
DEFAULT_TAG = "latest"
DOCKER_HUB = "index.docker.io"
MAX_MANIFEST_BYTES = 4 * 2**20
_MAX_ERROR_BODY_BYTES = 64 * 1024
_PROBE_SECONDS = 5.0
_RFC1918_NETWORKS = tuple(ipaddress.ip_network(net) for net in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
_REPOSITORY_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})")
_CHALLENGE_PARAM = re.compile(r'(\w+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)')


@dataclass(frozen=True)
class ImageReference:
    """A parsed ``oci://`` reference: registry host, repository, and a tag or a digest."""

    registry: str
    repository: str
    tag: str = ""
    digest: str = ""

    @property
    def identifier(self) -> str:
        """What goes after ``/manifests/``: the digest when there is one, else the tag."""
        return self.digest or self.tag


def parse_reference(url: str) -> ImageReference:
    """Parse ``oci://host[:port]/repo[:tag|@sha256:...]`` (tag ``latest`` by default)."""
    text = url[len("oci://") :] if url[:6].lower() == "oci://" else url
    name, has_digest, digest = text.partition("@")
    tag = ""
    if has_digest:
        if not _DIGEST.fullmatch(digest):
            raise ModuleFetchError(f"failed to parse oci url: invalid digest {digest!r} in {url!r}")
        name = _split_tag(name)[0]
    else:
        name, tag = _split_tag(name)
        tag = tag or DEFAULT_TAG
        if not _TAG.fullmatch(tag):
            raise ModuleFetchError(f"failed to parse oci url: invalid tag {tag!r} in {url!r}")
    registry, repository = _split_registry(name)
    _check_repository(repository, url)
    return ImageReference(registry=registry, repository=repository, tag=tag, digest=digest)


def uses_plain_http(registry: str) -> bool:
    """Whether go-containerregistry talks plain http to ``registry`` (local and private hosts)."""
    host = _host_of(registry)
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or any(address in network for network in _RFC1918_NETWORKS)


async def pull_module(
    url: str,
    *,
    insecure: bool = False,
    docker_config_path: Path | None = None,
    max_bytes: int,
    policy: FetchPolicy | None = None,
) -> bytes:
    """The uncompressed wasm of the yoke artefact at ``url`` (no deadline of its own)."""
    reference = parse_reference(url)
    registry_client = _open_registry(reference, insecure=insecure, docker_config_path=docker_config_path, policy=policy)
    async with registry_client as registry:
        manifest = await _read_manifest(registry, reference)
        _check_config_media_type(manifest)
        layer_digest = _wasm_layer_digest(manifest)
        compressed = await _pull_blob(registry, reference.repository, layer_digest, max_bytes)
    return await asyncio.to_thread(gunzip, compressed, max_bytes=max_bytes, source=url)


async def push_module(
    registry_url: str,
    repo: str,
    wasm: bytes,
    tags: Sequence[str],
    *,
    insecure: bool = True,
    docker_config_path: Path | None = None,
    timeout: float = 60.0,
) -> str:
    """Publish ``wasm`` like ``yoke stow`` under each tag and ``sha256_<hex>``; the manifest digest.

    ``registry_url`` is ``host[:port]``, optionally prefixed with ``oci://``,
    ``http://`` or ``https://`` (the last two force the scheme).
    """
    try:
        async with asyncio.timeout(timeout):
            return await _push(registry_url, repo, wasm, tags, insecure=insecure, docker_config_path=docker_config_path)
    except TimeoutError as err:
        raise ModuleFetchError(f"timed out after {timeout:g}s pushing module to {registry_url}/{repo}") from err


async def _push(
    registry_url: str, repo: str, wasm: bytes, tags: Sequence[str], *, insecure: bool, docker_config_path: Path | None
) -> str:
    scheme, registry = _scheme_and_host(registry_url)
    _check_repository(repo, registry_url)
    reference = ImageReference(registry=registry, repository=repo)
    all_tags = list(dict.fromkeys([*tags, f"sha256_{sha256_hex(wasm)}"]))
    config, layer = b"{}", gzip_compress(wasm)
    manifest = _artefact_manifest(config, layer)
    async with _open_registry(
        reference, insecure=insecure, docker_config_path=docker_config_path, actions="pull,push", scheme=scheme
    ) as registry_client:
        with _failing_as(f"failed to push module to {registry}/{repo}"):
            for blob in (config, layer):
                await _upload_blob(registry_client, repo, blob)
            for tag in all_tags:
                await _put_manifest(registry_client, repo, tag, manifest)
    return _digest_of(manifest)


# --- the registry client -------------------------------------------------------------------------


@dataclass
class _Response:
    status: int
    reason: str
    headers: CIMultiDictProxy[str]
    body: bytes
    url: str


@dataclass
class _Challenge:
    scheme: str
    params: dict[str, str] = field(default_factory=dict)


class _RegistryClient:
    """Requests to one registry on behalf of one repository, authenticating on demand."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        reference: ImageReference,
        *,
        verify_tls: bool,
        credentials: Callable[[], RegistryCredentials | None],
        actions: str,
    ) -> None:
        self.base_url = ""
        self._session = session
        self._reference = reference
        self._verify_tls = verify_tls
        self._credentials = credentials
        self._actions = actions
        self._authorization: str | None = None

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    async def probe_https(self) -> bool:
        """Whether an https connection to the registry can be made at all (any HTTP answer will do)."""
        try:
            async with self._session.get(
                f"https://{self._reference.registry}/v2/",
                ssl=self._verify_tls,
                timeout=aiohttp.ClientTimeout(total=_PROBE_SECONDS),
            ):
                return True
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
        max_bytes: int = _MAX_ERROR_BODY_BYTES,
    ) -> _Response:
        """Send a request; on a 401 authenticate as challenged and send it once more."""
        response = await self._send_once(method, url, headers, data, max_bytes)
        if response.status != 401:
            return response
        authorization = await self._authorize(_parse_challenge(response.headers.get("WWW-Authenticate", "")))
        if authorization is None:
            return response
        self._authorization = authorization
        return await self._send_once(method, url, headers, data, max_bytes)

    async def _send_once(
        self, method: str, url: str, headers: Mapping[str, str] | None, data: bytes | None, max_bytes: int
    ) -> _Response:
        request_headers = dict(headers or {})
        if self._authorization:
            request_headers["Authorization"] = self._authorization
        try:
            async with self._session.request(
                method, url, headers=request_headers, data=data, ssl=self._verify_tls
            ) as response:
                body = await _response_body(method, response, max_bytes, url)
                return _Response(response.status, response.reason or "", response.headers, body, url)
        except aiohttp.ClientError as err:
            raise ModuleFetchError(f"{method} {url}: {describe(err)}") from err

    async def _authorize(self, challenge: _Challenge) -> str | None:
        credentials = self._credentials()
        if challenge.scheme == "basic":
            return credentials.basic_authorization() if credentials else None
        if challenge.scheme == "bearer":
            return await self._bearer_token(challenge, credentials)
        return None

    async def _bearer_token(self, challenge: _Challenge, credentials: RegistryCredentials | None) -> str:
        realm = challenge.params.get("realm", "")
        scope = challenge.params.get("scope") or f"repository:{self._reference.repository}:{self._actions}"
        if not realm:
            raise ModuleFetchError(f"registry {self._reference.registry} sent a bearer challenge without a realm")
        query = {"scope": scope, **({"service": challenge.params["service"]} if "service" in challenge.params else {})}
        headers = {"Authorization": credentials.basic_authorization()} if credentials else {}
        token_url = str(URL(realm).update_query(query))
        response = await self._token_response(token_url, headers)
        if response.status != 200:
            raise ModuleFetchError(
                f"failed to get a token for {scope} from {realm}: {_status_error('GET', response)}"
                + ("" if credentials else " (no credentials for this registry)")
            )
        return f"Bearer {_token_from(response.body, realm)}"

    async def _token_response(self, token_url: str, headers: Mapping[str, str]) -> _Response:
        try:
            async with self._session.get(token_url, headers=headers, ssl=self._verify_tls) as response:
                body = await _response_body("GET", response, MAX_MANIFEST_BYTES, token_url)
                return _Response(response.status, response.reason or "", response.headers, body, token_url)
        except aiohttp.ClientError as err:
            raise ModuleFetchError(f"GET {token_url}: {describe(err)}") from err


@contextlib.asynccontextmanager
async def _open_registry(
    reference: ImageReference,
    *,
    insecure: bool,
    docker_config_path: Path | None,
    actions: str = "pull",
    scheme: str = "",
    policy: FetchPolicy | None = None,
) -> AsyncIterator[_RegistryClient]:
    async with open_session(decompress=True, policy=policy) as session:
        client = _RegistryClient(
            session,
            reference,
            verify_tls=not insecure,
            credentials=lambda: registry_credentials(reference.registry, docker_config_path),
            actions=actions,
        )
        scheme = scheme or await _choose_scheme(client, reference.registry, insecure=insecure)
        client.base_url = f"{scheme}://{reference.registry}"
        yield client


async def _choose_scheme(client: _RegistryClient, registry: str, *, insecure: bool) -> str:
    if uses_plain_http(registry):
        return "http"
    if insecure:
        return "https" if await client.probe_https() else "http"
    return "https"


async def _response_body(method: str, response: aiohttp.ClientResponse, max_bytes: int, url: str) -> bytes:
    if method == "HEAD":
        return b""
    if response.status >= 400:
        return await response.content.read(_MAX_ERROR_BODY_BYTES)
    return await read_body(response, max_bytes=max_bytes, source=url)


# --- pulling ---------------------------------------------------------------------------------------


async def _read_manifest(registry: _RegistryClient, reference: ImageReference) -> dict[str, Any]:
    path = f"/v2/{reference.repository}/manifests/{reference.identifier}"
    with _failing_as("failed to read manifest"):
        response = await registry.send(
            "GET", registry.url(path), headers={"Accept": MANIFEST_ACCEPT}, max_bytes=MAX_MANIFEST_BYTES
        )
        if response.status != 200:
            raise ModuleFetchError(_status_error("GET", response))
        if reference.digest:
            _verify_digest(response.body, reference.digest, what="manifest")
    try:
        manifest = json.loads(response.body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModuleFetchError(f"failed to parse manifest: {err}") from err
    if not isinstance(manifest, dict):
        raise ModuleFetchError("failed to parse manifest: not a JSON object")
    return manifest


def _check_config_media_type(manifest: Mapping[str, Any]) -> None:
    config = manifest.get("config")
    config_media_type = config.get("mediaType") if isinstance(config, dict) else None
    if config_media_type != CONFIG_MEDIA_TYPE:
        # yoke prints the manifest's own mediaType here, not the config's.
        raise ModuleFetchError(f"unexpected manifest media type got: {manifest.get('mediaType') or ''}")


def _wasm_layer_digest(manifest: Mapping[str, Any]) -> str:
    layers = manifest.get("layers")
    for layer in layers if isinstance(layers, list) else []:
        if isinstance(layer, dict) and layer.get("mediaType") == WASM_LAYER_MEDIA_TYPE:
            digest = layer.get("digest")
            if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
                raise ModuleFetchError(f"failed to pull wasm layer: invalid layer digest {digest!r}")
            return digest
    raise ModuleFetchError("could not find wasm layer")


async def _pull_blob(registry: _RegistryClient, repository: str, digest: str, max_bytes: int) -> bytes:
    with _failing_as("failed to pull wasm layer"):
        response = await registry.send("GET", registry.url(f"/v2/{repository}/blobs/{digest}"), max_bytes=max_bytes)
        if response.status != 200:
            raise ModuleFetchError(_status_error("GET", response))
        await asyncio.to_thread(_verify_digest, response.body, digest, what="blob")
    return response.body


# --- pushing ---------------------------------------------------------------------------------------


async def _upload_blob(registry: _RegistryClient, repository: str, blob: bytes) -> None:
    """Monolithic upload (POST then PUT ?digest=), skipped when the registry has the blob."""
    digest = _digest_of(blob)
    blob_url = registry.url(f"/v2/{repository}/blobs/{digest}")
    if (await registry.send("HEAD", blob_url)).status == 200:
        return
    started = await registry.send("POST", registry.url(f"/v2/{repository}/blobs/uploads/"), data=b"")
    location = started.headers.get("Location", "")
    if started.status != 202 or not location:
        raise ModuleFetchError(_status_error("POST", started))
    upload_url = URL(registry.base_url).join(URL(location)).update_query(digest=digest)
    finished = await registry.send(
        "PUT", str(upload_url), headers={"Content-Type": "application/octet-stream"}, data=blob
    )
    if finished.status != 201:
        raise ModuleFetchError(_status_error("PUT", finished))


async def _put_manifest(registry: _RegistryClient, repository: str, tag: str, manifest: bytes) -> None:
    response = await registry.send(
        "PUT",
        registry.url(f"/v2/{repository}/manifests/{tag}"),
        headers={"Content-Type": OCI_MANIFEST_MEDIA_TYPE},
        data=manifest,
    )
    if response.status != 201:
        raise ModuleFetchError(_status_error("PUT", response))


def _artefact_manifest(config: bytes, layer: bytes) -> bytes:
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "size": len(config), "digest": _digest_of(config)},
        "layers": [{"mediaType": WASM_LAYER_MEDIA_TYPE, "size": len(layer), "digest": _digest_of(layer)}],
    }
    return json.dumps(manifest, separators=(",", ":")).encode()


# --- small helpers ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _failing_as(prefix: str) -> Iterator[None]:
    """Prefix the message of any ``ModuleFetchError`` raised in the block with ``prefix: ``."""
    try:
        yield
    except ModuleFetchError as err:
        raise ModuleFetchError(f"{prefix}: {err}") from err


def _digest_of(data: bytes) -> str:
    return f"sha256:{sha256_hex(data)}"


def _verify_digest(data: bytes, digest: str, *, what: str) -> None:
    algorithm, _, expected = digest.partition(":")
    actual = hashlib.new(algorithm, data).hexdigest()
    if actual != expected:
        raise ModuleFetchError(f"{what} digest mismatch: wanted {digest} but got {algorithm}:{actual}")


def _status_error(method: str, response: _Response) -> str:
    text = f"{method} {response.url}: unexpected status code {response.status} {response.reason}".rstrip()
    detail = _registry_error_detail(response.body)
    return f"{text}: {detail}" if detail else text


def _registry_error_detail(body: bytes) -> str:
    """``CODE: message`` of each error in a distribution-API error body; "" when there are none."""
    try:
        document = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return ""
    errors = document.get("errors") if isinstance(document, dict) else None
    if not isinstance(errors, list):
        return ""
    parts = [f"{error.get('code', '')}: {error.get('message', '')}" for error in errors if isinstance(error, dict)]
    return "; ".join(parts)


def _parse_challenge(header: str) -> _Challenge:
    scheme, _, rest = header.strip().partition(" ")
    params = {key.lower(): _unquote(value) for key, value in _CHALLENGE_PARAM.findall(rest)}
    return _Challenge(scheme=scheme.lower(), params=params)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def _token_from(body: bytes, realm: str) -> str:
    try:
        document = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModuleFetchError(f"invalid token response from {realm}: {err}") from err
    token = (document.get("token") or document.get("access_token")) if isinstance(document, dict) else None
    if not isinstance(token, str) or not token:
        raise ModuleFetchError(f"invalid token response from {realm}: no token")
    return token


def _split_tag(name: str) -> tuple[str, str]:
    """``host:5000/repo:v1`` -> (``host:5000/repo``, ``v1``); a port is not a tag."""
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon + 1 :]
    return name, ""


def _split_registry(name: str) -> tuple[str, str]:
    first, has_slash, rest = name.partition("/")
    if has_slash and ("." in first or ":" in first or first == "localhost"):
        return first, rest
    return DOCKER_HUB, name if has_slash else f"library/{name}"


def _check_repository(repository: str, url: str) -> None:
    components = repository.split("/")
    if not repository or not all(_REPOSITORY_COMPONENT.fullmatch(part) for part in components):
        raise ModuleFetchError(
            f"failed to parse oci url: invalid repository {repository!r} in {url!r} "
            "(lowercase letters, digits and separators . _ __ - between path components)"
        )


def _host_of(registry: str) -> str:
    """The host part of ``host[:port]`` (``[::1]:5000`` -> ``::1``)."""
    if registry.startswith("["):
        return registry[1:].partition("]")[0]
    return registry.rpartition(":")[0] if registry.count(":") == 1 else registry


def _scheme_and_host(registry_url: str) -> tuple[str, str]:
    for prefix, scheme in (("http://", "http"), ("https://", "https"), ("oci://", "")):
        if registry_url.startswith(prefix):
            return scheme, registry_url.removeprefix(prefix).rstrip("/")
    return "", registry_url.rstrip("/")
