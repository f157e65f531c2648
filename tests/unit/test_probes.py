"""The probe server: /readyz follows its checks, /healthz its liveness checks, /metrics the registry."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest

from atc_controller.core.probes import ProbeServer
from atc_controller.core.workqueue import WorkQueue


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def fetch(http: aiohttp.ClientSession, port: int, path: str) -> tuple[int, str]:
    async with http.get(f"http://127.0.0.1:{port}{path}") as response:
        return response.status, await response.text()


async def test_readyz_fails_until_every_check_passes(http: aiohttp.ClientSession) -> None:
    synced = False

    async def caches_synced() -> bool:
        return synced

    async def tls_loaded() -> bool:
        return True

    port = free_port()
    server = ProbeServer(port, 0, readiness={"caches-synced": caches_synced, "tls": tls_loaded}, host="127.0.0.1")
    await server.start()
    try:
        status, body = await fetch(http, port, "/readyz")
        assert status == 503
        assert body == "[-]caches-synced failed\n[+]tls ok\nreadyz check failed\n"
        synced = True
        assert await fetch(http, port, "/readyz") == (200, "[+]caches-synced ok\n[+]tls ok\nreadyz check passed\n")
    finally:
        await server.stop()


async def test_healthz_fails_when_a_liveness_check_raises(http: aiohttp.ClientSession) -> None:
    async def broken() -> bool:
        raise RuntimeError("wedged")

    port = free_port()
    server = ProbeServer(port, 0, host="127.0.0.1")
    await server.start()
    try:
        assert await fetch(http, port, "/healthz") == (200, "healthz check passed\n")
        server.add_liveness_check("worker", broken)
        assert await fetch(http, port, "/healthz") == (503, "[-]worker failed\nhealthz check failed\n")
    finally:
        await server.stop()


async def test_metrics_expose_the_controller_registry(http: aiohttp.ClientSession) -> None:
    WorkQueue("probe-test").add("ns/a")
    health, metrics = free_port(), free_port()
    server = ProbeServer(health, metrics, host="127.0.0.1")
    await server.start()
    try:
        assert sorted(server.serving_ports) == sorted([health, metrics])
        async with http.get(f"http://127.0.0.1:{metrics}/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            text = await response.text()
        assert 'workqueue_depth{name="probe-test"} 1.0' in text
        assert "# TYPE controller_runtime_reconcile_total counter" in text
        assert (await fetch(http, health, "/metrics"))[0] == 404
        assert (await fetch(http, metrics, "/readyz"))[0] == 404
    finally:
        await server.stop()


async def test_port_zero_disables_a_server_and_equal_ports_share_one(http: aiohttp.ClientSession) -> None:
    port = free_port()
    server = ProbeServer(port, port, host="127.0.0.1")
    await server.start()
    try:
        assert server.serving_ports == [port]
        assert (await fetch(http, port, "/readyz"))[0] == 200
        assert (await fetch(http, port, "/metrics"))[0] == 200
    finally:
        await server.stop()
    disabled = ProbeServer(0, 0)
    await disabled.start()
    assert disabled.serving_ports == []
    await disabled.stop()
