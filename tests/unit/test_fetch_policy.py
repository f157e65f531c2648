"""Hostile module URLs: no file of the service and no internal address is reachable, nothing is echoed.

A tenant who may only create a Flight chooses its ``wasmUrl``. With the services' default policy
(``FetchPolicy.strict()``) local paths and ``file://`` are refused, and a fetch may connect only to
public addresses: loopback, link-local (cloud metadata), private networks are refused where the
socket is made, so a redirect or an IP literal cannot get around it. Local reads, when allowed,
take only regular files that start like a module, and read no more than the limit.
"""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from atc.wasm.errors import ModuleFetchError
from atc.wasm.fetch_policy import DestinationRefusedError, FetchPolicy, parse_networks
from atc.wasm.sources import LOCAL_FILES_REFUSED, fetch_module, read_local_module

WASM = b"\0asm\x01\0\0\0"
SECRET = "hunter2-service-account-token"


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("93.184.216.34", True),
        ("2606:2800:220:1:248:1893:25c8:1946", True),
        ("127.0.0.1", False),
        ("127.0.0.2", False),
        ("169.254.169.254", False),
        ("10.1.2.3", False),
        ("192.168.0.1", False),
        ("100.64.0.1", False),
        ("::1", False),
        ("::ffff:127.0.0.1", False),
        ("fe80::1%eth0", False),
        ("224.0.0.1", False),
    ],
)
def test_only_public_addresses_by_default(address: str, allowed: bool) -> None:
    assert FetchPolicy.strict().permits(address) is allowed


def test_listed_networks_are_allowed_too() -> None:
    policy = FetchPolicy.strict(allowed_networks=["10.0.0.0/8", "127.0.0.1"])
    assert policy.permits("10.200.0.5")
    assert policy.permits("127.0.0.1")
    assert not policy.permits("127.0.0.2")
    assert not policy.permits("169.254.169.254")


def test_a_bad_network_is_named() -> None:
    with pytest.raises(ValueError, match=r"'10\.0\.0\.0/33' is not a network in CIDR notation"):
        parse_networks(["10.0.0.0/8", "10.0.0.0/33"])


def test_the_socket_for_a_refused_address_is_never_made() -> None:
    info = (2, 1, 6, "", ("169.254.169.254", 80))
    with pytest.raises(DestinationRefusedError, match=r"169\.254\.169\.254 is not allowed: not a public address"):
        FetchPolicy.strict().socket_factory(info)


async def test_local_paths_and_file_urls_are_refused_by_default(tmp_path: Path) -> None:
    module = tmp_path / "flight.wasm"
    module.write_bytes(WASM)
    for url in (str(module), f"file://{module}", "/proc/self/environ", "file:///etc/passwd"):
        with pytest.raises(ModuleFetchError) as refused:
            await fetch_module(url, policy=FetchPolicy.strict())
        assert str(refused.value) == LOCAL_FILES_REFUSED


def test_only_regular_files_are_read(tmp_path: Path) -> None:
    with pytest.raises(ModuleFetchError, match="not a regular file"):
        read_local_module(Path("/dev/urandom"))  # would never end if it were read to its (zero) size
    with pytest.raises(ModuleFetchError, match="Is a directory"):
        read_local_module(tmp_path)


def test_a_file_that_is_not_a_module_is_refused_without_its_content(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text(f"(module) ;; {SECRET}\n")
    for path in (secret, Path("/proc/self/environ")):
        with pytest.raises(ModuleFetchError) as refused:
            read_local_module(path)
        assert "not a WebAssembly binary module" in str(refused.value)
        assert SECRET not in str(refused.value)
    zipped = tmp_path / "flight.wasm.gz"
    zipped.write_bytes(WASM)  # named .gz but not gzip
    with pytest.raises(ModuleFetchError, match="not a WebAssembly binary module"):
        read_local_module(zipped)
    zipped.write_bytes(gzip.compress(WASM))
    assert read_local_module(zipped) == WASM


def test_a_local_read_stops_at_the_limit(tmp_path: Path) -> None:
    big = tmp_path / "big.wasm"
    big.write_bytes(WASM + b"\0" * 4096)
    with pytest.raises(ModuleFetchError, match="too large"):
        read_local_module(big, max_bytes=1024)


@pytest.fixture
async def loopback_server() -> AsyncIterator[str]:
    """An HTTP server on 127.0.0.1 that serves a module and redirects to 127.0.0.2."""

    async def module(_: web.Request) -> web.Response:
        return web.Response(body=WASM)

    async def elsewhere(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"http://127.0.0.2:{request.url.port}/module.wasm")

    app = web.Application()
    app.router.add_get("/module.wasm", module)
    app.router.add_get("/redirect.wasm", elsewhere)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_loopback_is_refused_unless_its_network_is_allowed(loopback_server: str) -> None:
    with pytest.raises(ModuleFetchError) as refused:
        await fetch_module(f"{loopback_server}/module.wasm", policy=FetchPolicy.strict())
    assert "127.0.0.1 is not allowed: not a public address" in str(refused.value)
    allowed = FetchPolicy.strict(allowed_networks=["127.0.0.1/32"])
    assert await fetch_module(f"{loopback_server}/module.wasm", policy=allowed) == WASM


async def test_a_redirect_cannot_leave_the_allowed_networks(loopback_server: str) -> None:
    allowed = FetchPolicy.strict(allowed_networks=["127.0.0.1/32"])
    with pytest.raises(ModuleFetchError) as refused:
        await fetch_module(f"{loopback_server}/redirect.wasm", policy=allowed)
    assert "127.0.0.2 is not allowed" in str(refused.value)


async def test_the_metadata_address_is_refused_before_any_connection() -> None:
    with pytest.raises(ModuleFetchError) as refused:
        await fetch_module("http://169.254.169.254/latest/meta-data/", policy=FetchPolicy.strict(), timeout=5)
    assert "169.254.169.254 is not allowed" in str(refused.value)


async def test_an_oci_registry_on_loopback_is_refused() -> None:
    with pytest.raises(ModuleFetchError) as refused:
        await fetch_module("oci://127.0.0.1:9/flights/basic:latest", policy=FetchPolicy.strict(), timeout=5)
    assert "127.0.0.1 is not allowed" in str(refused.value)
