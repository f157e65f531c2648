"""Fetching flight modules over the network: http(s) file servers and an OCI registry on loopback.

Exercises ``atc.wasm.sources.fetch_module`` and ``atc.wasm.oci.push_module``
against the servers in ``tests/servers.py`` (no Kubernetes involved): gzip
handling, status and size errors, pushing and pulling yoke artefacts by tag,
by ``sha256_<hex>`` tag and by digest, manifest checks, registry auth with a
docker config, and blob corruption.
"""

from __future__ import annotations

import base64
import gzip
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import wasmtime
from servers import FileServer, OciRegistry, RecordedRequest, digest_of, serve_files

from atc.wasm import oci
from atc.wasm.checksum import checksum_from_url, sha256_hex, verify_checksum
from atc.wasm.errors import ModuleFetchError
from atc.wasm.sources import fetch_module

MODULE = bytes(wasmtime.wat2wasm('(module (func (export "_start")))'))
OTHER_MODULE = bytes(wasmtime.wat2wasm("(module)"))


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "flight.wasm").write_bytes(MODULE)
    (tmp_path / "flight.wasm.gz").write_bytes(gzip.compress(MODULE))
    return tmp_path


@pytest.fixture
def registry() -> Iterator[OciRegistry]:
    with OciRegistry() as running:
        yield running


# --- http(s) ---------------------------------------------------------------------------------------


async def test_http_plain(files: Path) -> None:
    requests: list[RecordedRequest] = []
    with serve_files(files, requests=requests) as url:
        assert await fetch_module(f"{url}/flight.wasm") == MODULE
    assert [(request.method, request.path) for request in requests] == [("GET", "/flight.wasm")]


async def test_http_gzip_content_encoding(files: Path) -> None:
    with serve_files(files, gzip_encoding=True) as url:
        assert await fetch_module(f"{url}/flight.wasm") == MODULE


async def test_http_gz_path(files: Path) -> None:
    with serve_files(files) as url:
        assert await fetch_module(f"{url}/flight.wasm.gz") == MODULE


async def test_http_gz_path_with_content_encoding_on_top(files: Path) -> None:
    with serve_files(files, gzip_encoding=True) as url:
        assert await fetch_module(f"{url}/flight.wasm.gz") == MODULE


async def test_http_gz_file_described_by_its_content_encoding(tmp_path: Path) -> None:
    # The .gz file is sent as plain wasm with Content-Encoding: gzip (how S3 serves objects with that metadata).
    (tmp_path / "flight.wasm.gz").write_bytes(MODULE)
    with serve_files(tmp_path, gzip_encoding=True) as url:
        assert await fetch_module(f"{url}/flight.wasm.gz") == MODULE


async def test_http_body_without_content_length(files: Path) -> None:
    with serve_files(files, send_length=False) as url:
        assert await fetch_module(f"{url}/flight.wasm.gz") == MODULE


async def test_http_follows_redirects(files: Path) -> None:
    with FileServer(files) as server:
        server.redirect("/latest.wasm", "/flight.wasm")
        assert await fetch_module(f"{server.url}/latest.wasm") == MODULE


async def test_http_404_wording(files: Path) -> None:
    with serve_files(files) as url, pytest.raises(ModuleFetchError) as caught:
        await fetch_module(f"{url}/missing.wasm")
    assert str(caught.value) == f"unexpected statuscode fetching {url}/missing.wasm: 404"


async def test_http_forced_500(files: Path) -> None:
    with serve_files(files, statuses={"/flight.wasm": 500}) as url, pytest.raises(ModuleFetchError) as caught:
        await fetch_module(f"{url}/flight.wasm")
    assert str(caught.value) == f"unexpected statuscode fetching {url}/flight.wasm: 500"


@pytest.mark.parametrize("send_length", [True, False])
async def test_http_oversize_body_is_refused(files: Path, send_length: bool) -> None:
    limit = len(MODULE) - 1
    with serve_files(files, send_length=send_length) as url, pytest.raises(ModuleFetchError) as caught:
        await fetch_module(f"{url}/flight.wasm", max_bytes=limit)
    assert str(caught.value) == f"module {url}/flight.wasm is too large: size exceeds the limit of {limit} bytes"


async def test_http_oversize_after_decompression_is_refused(tmp_path: Path) -> None:
    (tmp_path / "bomb.wasm.gz").write_bytes(gzip.compress(b"\0" * 100_000))
    with (
        serve_files(tmp_path) as url,
        pytest.raises(ModuleFetchError, match="decompressed size exceeds the limit of 10000 bytes"),
    ):
        await fetch_module(f"{url}/bomb.wasm.gz", max_bytes=10_000)


async def test_http_connection_refused_names_the_url() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/flight.wasm"
    with pytest.raises(ModuleFetchError, match=rf"^failed to get response from {url}: "):
        await fetch_module(url)


async def test_http_timeout_names_the_url() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()  # accepts connections but never answers
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/flight.wasm"
        with pytest.raises(ModuleFetchError, match=rf"^timed out after 0.5s fetching {url}$"):
            await fetch_module(url, timeout=0.5)


async def test_http_checksum_from_url_matches_the_fetched_module(tmp_path: Path) -> None:
    name = f"flight_sha256_{sha256_hex(MODULE)}.wasm.gz"
    (tmp_path / name).write_bytes(gzip.compress(MODULE))
    with serve_files(tmp_path) as url:
        module_url = f"{url}/{name}"
        verify_checksum(await fetch_module(module_url), checksum_from_url(module_url))


# --- OCI -------------------------------------------------------------------------------------------


async def test_oci_push_then_pull_by_tag(registry: OciRegistry) -> None:
    digest = await oci.push_module(registry.host, "flights/deploy", MODULE, ["v1", "latest"])
    assert registry.tags("flights/deploy") == sorted(["v1", "latest", f"sha256_{sha256_hex(MODULE)}"])
    assert await fetch_module(f"oci://{registry.host}/flights/deploy:v1") == MODULE
    assert await fetch_module(f"oci://{registry.host}/flights/deploy") == MODULE
    manifest = registry.manifest("flights/deploy", "v1")
    assert manifest is not None
    assert digest == digest_of(manifest)


async def test_oci_pushed_manifest_is_yokes_artefact(registry: OciRegistry) -> None:
    await oci.push_module(registry.url, "flights/deploy", MODULE, ["v1"])
    raw = registry.manifest("flights/deploy", "v1")
    assert raw is not None
    manifest = json.loads(raw)
    assert manifest["schemaVersion"] == 2
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["config"]["mediaType"] == "application/vnd.yoke.config.v1+json"
    assert registry.blob(manifest["config"]["digest"]) == b"{}"
    [layer] = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.yoke.wasm.gzip"
    layer_blob = registry.blob(layer["digest"])
    assert layer_blob is not None
    assert gzip.decompress(layer_blob) == MODULE


async def test_oci_push_reuses_existing_blobs(registry: OciRegistry) -> None:
    await oci.push_module(registry.host, "flights/deploy", MODULE, ["v1"])
    uploads_before = _count(registry.requests, "POST")
    await oci.push_module(registry.host, "flights/deploy", MODULE, ["v2"])
    assert _count(registry.requests, "POST") == uploads_before
    assert "v2" in registry.tags("flights/deploy")


async def test_oci_pull_by_checksum_tag(registry: OciRegistry) -> None:
    await oci.push_module(registry.host, "flights/deploy", MODULE, ["v1"])
    url = f"oci://{registry.host}/flights/deploy:sha256_{sha256_hex(MODULE)}"
    module = await fetch_module(url)
    assert module == MODULE
    verify_checksum(module, checksum_from_url(url))


async def test_oci_pull_by_digest(registry: OciRegistry) -> None:
    digest = await oci.push_module(registry.host, "flights/deploy", MODULE, ["v1"])
    assert await fetch_module(f"oci://{registry.host}/flights/deploy@{digest}") == MODULE
    assert await fetch_module(f"oci://{registry.host}/flights/deploy:v1@{digest}") == MODULE
    assert ("GET", f"/v2/flights/deploy/manifests/{digest}") in _calls(registry.requests)


async def test_oci_tags_pick_their_own_module(registry: OciRegistry) -> None:
    await oci.push_module(registry.host, "flights/deploy", MODULE, ["v1"])
    await oci.push_module(registry.host, "flights/deploy", OTHER_MODULE, ["v2"])
    assert await fetch_module(f"oci://{registry.host}/flights/deploy:v1") == MODULE
    assert await fetch_module(f"oci://{registry.host}/flights/deploy:v2") == OTHER_MODULE


async def test_oci_unknown_tag(registry: OciRegistry) -> None:
    url = f"oci://{registry.host}/flights/deploy:v9"
    with pytest.raises(ModuleFetchError) as caught:
        await fetch_module(url)
    assert str(caught.value) == (
        f"failed to read manifest: GET http://{registry.host}/v2/flights/deploy/manifests/v9: "
        "unexpected status code 404 Not Found: MANIFEST_UNKNOWN: manifest unknown"
    )


async def test_oci_wrong_config_media_type_wording(registry: OciRegistry) -> None:
    layer = registry.put_blob(gzip.compress(MODULE))
    config = registry.put_blob(b"{}")
    registry.put_manifest(
        "flights/image",
        "v1",
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
            "layers": [{"mediaType": "application/vnd.yoke.wasm.gzip", "digest": layer, "size": 1}],
        },
    )
    with pytest.raises(ModuleFetchError) as caught:
        await fetch_module(f"oci://{registry.host}/flights/image:v1")
    # yoke names the manifest's own mediaType, not the offending config mediaType.
    assert str(caught.value) == "unexpected manifest media type got: application/vnd.oci.image.manifest.v1+json"


async def test_oci_missing_wasm_layer_wording(registry: OciRegistry) -> None:
    layer = registry.put_blob(b"not wasm")
    config = registry.put_blob(b"{}")
    registry.put_manifest(
        "flights/nolayer",
        "v1",
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.yoke.config.v1+json", "digest": config, "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": 8}],
        },
    )
    with pytest.raises(ModuleFetchError) as caught:
        await fetch_module(f"oci://{registry.host}/flights/nolayer:v1")
    assert str(caught.value) == "could not find wasm layer"


async def test_oci_blob_digest_mismatch_is_detected(registry: OciRegistry) -> None:
    await oci.push_module(registry.host, "flights/deploy", MODULE, ["v1"])
    raw = registry.manifest("flights/deploy", "v1")
    assert raw is not None
    layer_digest = json.loads(raw)["layers"][0]["digest"]
    registry.put_blob(gzip.compress(OTHER_MODULE), digest=layer_digest)
    with pytest.raises(ModuleFetchError) as caught:
        await fetch_module(f"oci://{registry.host}/flights/deploy:v1")
    message = str(caught.value)
    assert message.startswith(f"failed to pull wasm layer: blob digest mismatch: wanted {layer_digest} but got sha256:")


async def test_oci_blob_over_the_limit(registry: OciRegistry) -> None:
    await oci.push_module(registry.host, "flights/deploy", MODULE, ["v1"])
    with pytest.raises(ModuleFetchError, match="too large"):
        await fetch_module(f"oci://{registry.host}/flights/deploy:v1", max_bytes=10)


async def test_oci_unreachable_registry_names_the_request() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        host = f"127.0.0.1:{probe.getsockname()[1]}"
    with pytest.raises(ModuleFetchError, match=rf"^failed to read manifest: GET http://{host}/v2/a/manifests/v1: "):
        await fetch_module(f"oci://{host}/a:v1")


# --- OCI auth --------------------------------------------------------------------------------------


def _docker_config(path: Path, registry: OciRegistry, *, password: str | None = None) -> Path:
    secret = registry.password if password is None else password
    auth = base64.b64encode(f"{registry.username}:{secret}".encode()).decode()
    path.write_text(json.dumps({"auths": {registry.host: {"auth": auth}}}))
    return path


async def test_oci_bearer_auth_with_docker_config(tmp_path: Path) -> None:
    with OciRegistry(auth="bearer") as registry:
        config = _docker_config(tmp_path / "config.json", registry)
        await oci.push_module(registry.host, "flights/private", MODULE, ["v1"], docker_config_path=config)
        registry.requests.clear()
        assert await fetch_module(f"oci://{registry.host}/flights/private:v1", docker_config_path=config) == MODULE
    manifest_path = "/v2/flights/private/manifests/v1"
    assert _calls(registry.requests)[:3] == [("GET", manifest_path), ("GET", "/token"), ("GET", manifest_path)]
    anonymous, token_request, authorized = registry.requests[:3]
    assert "authorization" not in anonymous.headers
    assert token_request.headers["authorization"].startswith("Basic ")
    assert token_request.query == {"scope": "repository:flights/private:pull", "service": "oci-registry"}
    assert authorized.headers["authorization"].startswith("Bearer ")
    assert all(request.headers["authorization"].startswith("Bearer ") for request in registry.requests[3:])


async def test_oci_bearer_auth_fails_without_credentials(tmp_path: Path) -> None:
    with OciRegistry(auth="bearer") as registry:
        config = _docker_config(tmp_path / "config.json", registry)
        await oci.push_module(registry.host, "flights/private", MODULE, ["v1"], docker_config_path=config)
        url = f"oci://{registry.host}/flights/private:v1"
        with pytest.raises(ModuleFetchError) as caught:
            await fetch_module(url, docker_config_path=tmp_path / "absent.json")
    message = str(caught.value)
    assert message.startswith("failed to read manifest: failed to get a token for repository:flights/private:pull")
    assert f"http://{registry.host}/token" in message
    assert "401" in message


async def test_oci_bearer_auth_fails_with_wrong_password(tmp_path: Path) -> None:
    with OciRegistry(auth="bearer") as registry:
        good = _docker_config(tmp_path / "good.json", registry)
        bad = _docker_config(tmp_path / "bad.json", registry, password="wrong")
        await oci.push_module(registry.host, "flights/private", MODULE, ["v1"], docker_config_path=good)
        with pytest.raises(ModuleFetchError, match="401 Unauthorized"):
            await fetch_module(f"oci://{registry.host}/flights/private:v1", docker_config_path=bad)


async def test_oci_basic_auth_with_docker_config(tmp_path: Path) -> None:
    with OciRegistry(auth="basic") as registry:
        config = _docker_config(tmp_path / "config.json", registry)
        await oci.push_module(registry.host, "flights/basic", MODULE, ["v1"], docker_config_path=config)
        url = f"oci://{registry.host}/flights/basic:v1"
        assert await fetch_module(url, docker_config_path=config) == MODULE
        with pytest.raises(ModuleFetchError) as caught:
            await fetch_module(url, docker_config_path=tmp_path / "absent.json")
    assert str(caught.value) == (
        f"failed to read manifest: GET http://{registry.host}/v2/flights/basic/manifests/v1: "
        "unexpected status code 401 Unauthorized: UNAUTHORIZED: authentication required"
    )


async def test_oci_default_docker_config_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with OciRegistry(auth="bearer") as registry:
        docker_dir = tmp_path / "docker"
        docker_dir.mkdir()
        config = _docker_config(docker_dir / "config.json", registry)
        await oci.push_module(registry.host, "flights/private", MODULE, ["v1"], docker_config_path=config)
        monkeypatch.setenv("DOCKER_CONFIG", str(docker_dir))
        assert await fetch_module(f"oci://{registry.host}/flights/private:v1") == MODULE


def _count(requests: list[RecordedRequest], method: str) -> int:
    return sum(1 for request in requests if request.method == method)


def _calls(requests: list[RecordedRequest]) -> list[tuple[str, str]]:
    return [(request.method, request.path) for request in requests]
