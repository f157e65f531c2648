"""The webhook's HTTPS server: FastAPI on uvicorn, probes, metrics, start-up and graceful shutdown.

``serve(settings)`` (called by ``atc_webhook.__main__``):
1. finds or generates the TLS files (``atc_webhook.tls``) and loads them, failing fast when unusable;
2. connects to the API server, writes and then follows the docker config Secret when
   ``DOCKER_CONFIG_SECRET_NAME`` is set (``atc.service.docker_secret``; failing to read it is fatal), and
   builds the ``WebhookContext`` (caches, Event writer, TLS reloader, and with ``REGISTER_WEBHOOKS``
   the registrar);
3. serves ``build_app(context)`` with uvicorn over the reloadable ``SSLContext``. The app's lifespan
   runs the caches, the Event writer, the TLS watcher, the registrar and a one-time freeze of the
   long-lived heap (``atc.service.heap``, once the caches are synced) in the background, so the
   port answers (``/readyz`` 503) before the caches are synced;
4. on SIGTERM or SIGINT stops accepting, lets in-flight requests finish, writes the queued Events
   (both bounded by ``SHUTDOWN_TIMEOUT_SECONDS``) and returns 0. Webhook configurations stay.

Endpoints besides the admission routes: ``/healthz`` (200 while serving), ``/readyz`` (200 once TLS
is loaded and the caches are synced, else 503 listing the failed checks), yoke's ``/live`` and
``/ready`` (the same two checks), ``/metrics`` (``atc_webhook.metrics``); any other path is 404
``route not found: <path>``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import FrameType

import uvicorn
from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from atc.k8s.client import KubeClient
from atc.k8s.discovery import RestMapper
from atc.model.constants import FIELD_MANAGER_ATC
from atc.release.takeoff import Cluster
from atc.release.targets import RemoteClusters
from atc.service.docker_secret import docker_config_watch
from atc.service.heap import freeze_long_lived
from atc.service.runtime import flight_defaults, module_cache
from atc.wasm.engine import FlightEngine

from . import metrics
from .caches import WebhookCaches
from .context import FlightServices, WebhookContext
from .limits import BodyLimit
from .registration import Registrar
from .routers import flights, resources
from .settings import WebhookSettings
from .signals import SignalWriter
from .tls import CertificateReloader, TlsFiles, ensure_tls_files

log = logging.getLogger("atc.webhook")

KEEP_ALIVE_SECONDS = 30
# order matters: the generic /validations/{airway} route of ``flights`` comes after /validations/resources
ADMISSION_ROUTERS: tuple[APIRouter, ...] = (resources.router, flights.router)
Checks = Mapping[str, Callable[[], bool]]


# ----------------------------------------------------------------------------------------------- probes
def _checks(context: WebhookContext) -> Checks:
    checks: dict[str, Callable[[], bool]] = {"tls": lambda: context.tls.loaded, "caches": context.caches.synced}
    registrar = context.registrar
    if registrar is not None:  # REGISTER_WEBHOOKS: ready once the API server calls this process
        checks["registration"] = registrar.applied.is_set
    return checks


def check_report(endpoint: str, checks: Checks) -> tuple[bool, str]:
    """Whether every check passes, and the API server-style body (``[+]tls ok``, ``[-]caches failed``)."""
    results = {name: checks[name]() for name in sorted(checks)}
    lines = [f"[+]{name} ok" if passed else f"[-]{name} failed" for name, passed in results.items()]
    healthy = all(results.values())
    lines.append(f"{endpoint} check {'passed' if healthy else 'failed'}")
    return healthy, "\n".join(lines) + "\n"


def _probe(endpoint: str, checks: Checks) -> Callable[[], Awaitable[Response]]:
    async def handle() -> Response:
        healthy, body = check_report(endpoint, checks)
        return PlainTextResponse(body, status_code=200 if healthy else 503)

    return handle


async def _metrics() -> Response:
    return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)


async def _not_found(request: Request, exc: Exception) -> Response:
    if isinstance(exc, HTTPException) and exc.status_code != 404:
        return PlainTextResponse(f"{exc.detail}\n", status_code=exc.status_code)
    return PlainTextResponse(f"route not found: {request.url.path}\n", status_code=404)


# ----------------------------------------------------------------------------------------------- app
def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background task failed", extra={"task": task.get_name()}, exc_info=task.exception())


async def _freeze_heap_once_synced(context: WebhookContext) -> None:
    """Freeze the start-up heap and the synced caches, so full collections do not stall requests."""
    while not await context.caches.wait_synced(timeout=60):
        pass
    freeze_long_lived()


def _background(context: WebhookContext) -> list[asyncio.Task[None]]:
    jobs = {
        "caches": context.caches.run(),
        "signals": context.signals.run(),
        "tls": context.tls.run(),
        "heap": _freeze_heap_once_synced(context),
    }
    if context.registrar is not None:
        jobs["registration"] = context.registrar.run()
    tasks = [asyncio.create_task(job, name=name) for name, job in jobs.items()]
    for task in tasks:
        task.add_done_callback(_log_failure)
    return tasks


def _lifespan(context: WebhookContext) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        tasks = _background(context)
        try:
            yield
        finally:
            await context.signals.close(context.settings.shutdown_timeout_seconds)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if context.flights is not None:
                context.flights.cluster.engine.close()
                if context.flights.targets is not None:
                    await context.flights.targets.close()

    return lifespan


def build_app(context: WebhookContext) -> FastAPI:
    """The ASGI app: admission routes, probes, metrics; background work runs in its lifespan."""
    app = FastAPI(title="atc-webhook", docs_url=None, redoc_url=None, openapi_url=None, lifespan=_lifespan(context))
    app.state.context = context
    for router in ADMISSION_ROUTERS:
        app.include_router(router)
    checks = _checks(context)
    app.add_api_route("/healthz", _probe("healthz", {}), methods=["GET"])
    app.add_api_route("/readyz", _probe("readyz", checks), methods=["GET"])
    app.add_api_route("/live", _probe("live", {}), methods=["GET", "POST"])
    app.add_api_route("/ready", _probe("ready", checks), methods=["GET", "POST"])
    app.add_api_route("/metrics", _metrics, methods=["GET"])
    app.add_exception_handler(HTTPException, _not_found)
    app.add_middleware(BodyLimit, max_bytes=context.settings.max_request_mib << 20)
    return app


def served_paths(routers: Sequence[APIRouter] = ADMISSION_ROUTERS) -> set[str]:
    """The paths the admission routers accept reviews on (POST routes; the routers have no prefix)."""
    return {
        route.path
        for router in routers
        for route in router.routes
        if isinstance(route, APIRoute) and "POST" in (route.methods or set())
    }


# ----------------------------------------------------------------------------------------------- serving
def _with_tls_files(settings: WebhookSettings, files: TlsFiles) -> WebhookSettings:
    update = {
        "tls_ca_cert": str(files.ca_cert or ""),
        "tls_server_cert": str(files.server_cert),
        "tls_server_key": str(files.server_key),
    }
    return settings.model_copy(update=update)


def build_context(settings: WebhookSettings, kube: KubeClient, files: TlsFiles) -> WebhookContext:
    """Everything but the registrar, which needs the app's routes (``serve`` adds it)."""
    context: WebhookContext

    async def ca_changed() -> None:
        if context.registrar is not None:
            context.registrar.refresh()

    tls = CertificateReloader(
        files.server_cert,
        files.server_key,
        ca_file=files.ca_cert,
        interval=settings.tls_reload_seconds,
        on_ca_change=ca_changed,
    )
    tls.load()
    caches = WebhookCaches(kube)
    signals = SignalWriter(kube, reporting_instance=socket.gethostname(), queue_size=settings.signal_queue_size)
    context = WebhookContext(settings, kube, caches, signals, tls, flights=_flight_services(settings, kube))
    metrics.track(kube, caches.sizes)
    return context


def _flight_services(settings: WebhookSettings, kube: KubeClient) -> FlightServices:
    """The flight runtime: engine, module cache under CACHE_FS, discovery, and the clusters of kubeconfig Secrets."""
    mapper = RestMapper(kube)
    engine = FlightEngine()
    modules = module_cache(settings, engine)
    targets = RemoteClusters(
        kube,
        engine,
        allowed_servers=settings.target_server_allow_list,
        field_manager=FIELD_MANAGER_ATC,
        user_agent="atc-webhook",
    )
    return FlightServices(
        Cluster(kube, mapper, engine),
        modules,
        allow_list=tuple(settings.module_allow_list),
        defaults=flight_defaults(settings),
        targets=targets,
    )


def uvicorn_config(app: FastAPI, context: WebhookContext) -> uvicorn.Config:
    settings = context.settings
    return uvicorn.Config(
        app,
        host=settings.address,
        port=settings.port,
        ssl_context_factory=lambda _config, _default: context.tls.context,
        log_config=None,
        access_log=False,
        lifespan="on",
        http="httptools",
        timeout_graceful_shutdown=int(settings.shutdown_timeout_seconds),
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        server_header=False,
    )


class _PlainUvicornRecords(logging.Filter):
    """uvicorn attaches an ANSI-coloured copy of its messages; JSON logs do not need it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.__dict__.pop("color_message", None)
        return True


def _after_shutdown(signum: int, _: FrameType | None) -> None:
    """uvicorn re-raises the signal that stopped it once it is done; by then there is nothing left to do."""
    log.info("stopped", extra={"signal": signal.Signals(signum).name})


async def serve(settings: WebhookSettings) -> int:
    """Run the webhook until SIGTERM or SIGINT; returns the exit code."""
    logging.getLogger("uvicorn.error").addFilter(_PlainUvicornRecords())
    files = ensure_tls_files(settings)
    settings = _with_tls_files(settings, files)
    kube = await KubeClient.connect(settings.kube, field_manager=FIELD_MANAGER_ATC)
    try:
        async with docker_config_watch(kube, settings):  # DOCKER_CONFIG_SECRET_NAME; a start failure is fatal
            context = build_context(settings, kube, files)
            if settings.register_webhooks:
                context.registrar = Registrar(kube, settings, served_paths())
            app = build_app(context)
            server = uvicorn.Server(uvicorn_config(app, context))
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, _after_shutdown)
            await server.serve()
    finally:
        await kube.close()
    return 0
