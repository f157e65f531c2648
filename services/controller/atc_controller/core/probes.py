"""The controller's plain-HTTP endpoints: ``/healthz`` and ``/readyz`` (probes) and ``/metrics`` (Prometheus).

The service's startup code creates one ``ProbeServer`` with named checks
(async callables returning bool: liveness checks for ``/healthz``, readiness
checks such as "reflector caches synced" for ``/readyz``) and starts it before
leader election, so every replica answers probes and exposes metrics. Answers
follow the Kubernetes apiserver's format (``[+]name ok`` / ``[-]name failed``);
a failing or raising check gives 503. ``/metrics`` serves
``atc_controller.metrics.REGISTRY``. A port of 0 disables that server; equal
ports share one server.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from atc_controller import metrics

log = logging.getLogger("atc.controller.probes")

Check = Callable[[], Awaitable[bool]]
CHECK_TIMEOUT_SECONDS = 5.0


async def _passes(check: Check) -> bool:
    try:
        return bool(await asyncio.wait_for(check(), CHECK_TIMEOUT_SECONDS))
    except Exception:
        log.exception("probe check raised")
        return False


async def run_checks(checks: Mapping[str, Check]) -> tuple[bool, str]:
    """Run every check; returns whether all passed and a body listing each as ``[+]name ok`` or ``[-]name failed``."""
    names = sorted(checks)
    results = await asyncio.gather(*(_passes(checks[name]) for name in names))
    lines = [f"[+]{name} ok" if passed else f"[-]{name} failed" for name, passed in zip(names, results, strict=True)]
    return all(results), "\n".join(lines)


def _check_handler(endpoint: str, checks: Mapping[str, Check]) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(_: web.Request) -> web.Response:
        healthy, body = await run_checks(checks)
        verdict = f"{endpoint} check passed" if healthy else f"{endpoint} check failed"
        text = f"{body}\n{verdict}\n" if body else f"{verdict}\n"
        return web.Response(status=200 if healthy else 503, text=text)

    return handle


async def _metrics(_: web.Request) -> web.Response:
    response = web.Response(body=generate_latest(metrics.REGISTRY))
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


class ProbeServer:
    """``/healthz`` and ``/readyz`` on ``health_port``, ``/metrics`` on ``metrics_port`` (0 disables one)."""

    def __init__(
        self,
        health_port: int,
        metrics_port: int,
        *,
        liveness: Mapping[str, Check] | None = None,
        readiness: Mapping[str, Check] | None = None,
        host: str = "0.0.0.0",
    ) -> None:
        self.health_port = health_port
        self.metrics_port = metrics_port
        self.host = host
        self.liveness: dict[str, Check] = dict(liveness or {})
        self.readiness: dict[str, Check] = dict(readiness or {})
        self._runners: list[web.AppRunner] = []

    def add_readiness_check(self, name: str, check: Check) -> None:
        self.readiness[name] = check

    def add_liveness_check(self, name: str, check: Check) -> None:
        self.liveness[name] = check

    def _routes_by_port(self) -> dict[int, list[web.RouteDef]]:
        routes: dict[int, list[web.RouteDef]] = {}
        if self.health_port:
            routes.setdefault(self.health_port, []).extend(
                [
                    web.get("/healthz", _check_handler("healthz", self.liveness)),
                    web.get("/readyz", _check_handler("readyz", self.readiness)),
                ]
            )
        if self.metrics_port:
            routes.setdefault(self.metrics_port, []).append(web.get("/metrics", _metrics))
        return routes

    @property
    def serving_ports(self) -> list[int]:
        """The ports listened on since ``start``."""
        return [port for runner in self._runners for port in _ports_of(runner)]

    async def start(self) -> None:
        """Listen on the enabled ports."""
        for port, routes in self._routes_by_port().items():
            app = web.Application()
            app.add_routes(routes)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            self._runners.append(runner)
            await web.TCPSite(runner, self.host, port).start()
            log.info("serving probes", extra={"port": port, "paths": [route.path for route in routes]})

    async def stop(self) -> None:
        runners, self._runners = self._runners, []
        for runner in runners:
            await runner.cleanup()


def _ports_of(runner: web.AppRunner) -> list[int]:
    return [int(address[1]) for address in runner.addresses if isinstance(address, tuple)]
