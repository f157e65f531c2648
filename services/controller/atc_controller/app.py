"""The controller process from start to stop: wiring of clients, caches, probes, leader election, reconcilers.

``run(settings)``:
1. loads the credentials of the API server (no request yet) and serves ``/healthz`` and ``/readyz``
   (HEALTH_PORT) and ``/metrics`` (METRICS_PORT) at once: ``/readyz`` fails until the CRDs are
   installed and, on the leader, the caches synced (docs/design.md, "Start-up");
2. with ``DOCKER_CONFIG_SECRET_NAME``, writes and then follows the docker config Secret
   (``atc.service.docker_secret``; failing to read it is fatal), and installs (or upgrades) the
   ``yoke.cd`` CRDs;
3. competes for the leader Lease; while leading, it watches Airways, CRDs (to
   notice a deleted or changed Airway CRD), Flights, ClusterFlights and readiness
   ConfigMaps, and runs the reconcilers (``reconcilers/``) on ``CONCURRENCY``
   workers. Losing the Lease stops reconciling at once;
4. on SIGTERM, finishes the reconciles in progress, releases the Lease and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import signal
import socket
import uuid
from collections.abc import Callable
from pathlib import Path

from atc.k8s.client import KubeClient
from atc.k8s.crds import AIRWAYS_PATH, CLUSTERFLIGHTS_PATH, FLIGHTS_PATH, install_yoke_crds
from atc.k8s.crds import CRD_PATH as CRDS_PATH
from atc.k8s.discovery import RestMapper
from atc.k8s.events import EventRecorder
from atc.k8s.gateway import LoopGateway
from atc.k8s.readiness import CustomReadiness
from atc.k8s.reflector import Reflector, changed_beyond_status
from atc.k8s.refs import parse_ref, split_api_version
from atc.k8s.signals import SIGNAL_SELECTOR, parse_child_changed
from atc.model.constants import API_GROUP, FIELD_MANAGER_ATC
from atc.model.types import Object
from atc.release.history import CachedHistory
from atc.release.takeoff import Cluster
from atc.service.docker_secret import docker_config_watch
from atc.service.heap import freeze_long_lived
from atc.service.runtime import flight_defaults, module_cache
from atc.wasm.engine import FlightEngine

from . import metrics
from .children import ChildChange, ChildWatches
from .context import ControllerContext
from .core.controller import Manager
from .core.leader import LeaderElector
from .core.probes import ProbeServer
from .external import ExternalWatches
from .reconcilers.airway import AirwayReconciler
from .reconcilers.flight import FlightReconciler
from .reconcilers.modes import ModeFollowing
from .settings import ControllerSettings
from .targets import Target, Targets

log = logging.getLogger("atc.controller")
READINESS_CONFIGMAPS = "resource.yoke.cd/readiness in (lua,conditions)"
EVENTS_PATH = "/api/v1/events"
CONFIGMAPS_PATH = "/api/v1/configmaps"
SIGNAL_REPLAY_WINDOW = datetime.timedelta(minutes=2)


def _identity() -> str:
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"


def _enqueuer(manager: Manager, controller: str) -> Callable[[str, Object, Object | None], None]:
    """A reflector handler that enqueues ``namespace/name`` (or ``name``) for ``controller``."""

    def handle(event_type: str, obj: Object, old: Object | None) -> None:
        if event_type == "MODIFIED" and old is not None and not changed_beyond_status(old, obj):
            return  # status-only updates never trigger (docs/controller.md, "The core")
        meta = obj["metadata"]
        key = f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else meta["name"]
        manager.enqueue(controller, key)

    return handle


class Controller:
    """The running controller process."""

    def __init__(self, settings: ControllerSettings) -> None:
        self.settings = settings
        self.identity = _identity()
        self.ca_bundle = Path(settings.tls_ca_cert).read_bytes() if settings.tls_ca_cert else b""
        self.caches_synced = False
        self.crds_installed = False
        self.elector: LeaderElector | None = None
        self.manager: Manager | None = None  # once the context is built, after the probes serve
        self._stop = asyncio.Event()

    async def _build_context(self, kube: KubeClient) -> ControllerContext:
        settings = self.settings
        mapper = RestMapper(kube)
        engine = FlightEngine(workers=settings.concurrency)
        modules = module_cache(settings, engine)
        readiness = None if settings.disable_custom_readiness else CustomReadiness()
        manager = Manager(settings.concurrency)
        local = Target(
            name="",
            cluster=Cluster(kube, mapper, engine, readiness, revisions=CachedHistory(kube)),
            gateway=LoopGateway(kube, mapper, asyncio.get_running_loop()),
            child_watches=ChildWatches(kube),
            external_watches=ExternalWatches(kube, mapper, manager),
        )
        return ControllerContext(
            settings=settings,
            kube=kube,
            mapper=mapper,
            modules=modules,
            cluster=local.cluster,
            events=EventRecorder(kube, "atc-controller", self.identity),
            manager=manager,
            gateway=local.gateway,
            external_watches=local.external_watches,
            child_watches=local.child_watches,
            flight_defaults=flight_defaults(settings),
            targets=Targets(local, manager=manager, allowed_servers=settings.target_server_allow_list),
            ca_bundle=self.ca_bundle,
        )

    async def run(self) -> int:
        async with await KubeClient.connect(self.settings.kube, field_manager=FIELD_MANAGER_ATC) as kube:
            probes = self._probes(kube)
            await probes.start()  # answers from here on; /readyz fails until the CRDs and the caches are there
            try:
                async with docker_config_watch(kube, self.settings):  # DOCKER_CONFIG_SECRET_NAME; failing is fatal
                    context = await self._build_context(kube)
                    self.manager = context.manager
                    metrics.expose_library_counters(context.modules.stats, kube.requests)
                    try:
                        await self._install_and_run(kube, context)
                    finally:
                        context.cluster.engine.close()
                        await context.events.drain()
            finally:
                await probes.stop()
        return 0

    async def _install_and_run(self, kube: KubeClient, context: ControllerContext) -> None:
        log.info("installing yoke.cd CRDs")
        await install_yoke_crds(kube)
        self.crds_installed = True
        elector = LeaderElector(
            kube,
            self.settings.leader_election_namespace or self.settings.svc_namespace,
            self.settings.leader_election_id,
            self.identity,
            lease_duration=self.settings.lease_duration_seconds,
            renew_deadline=self.settings.renew_deadline_seconds,
            retry_period=self.settings.retry_period_seconds,
        )
        self.elector = elector
        await self._run_until_stopped(elector, context)

    async def _run_until_stopped(self, elector: LeaderElector, context: ControllerContext) -> None:

        async def leading() -> None:
            await self._lead(context)

        election: asyncio.Task[None] = asyncio.create_task(
            elector.run(leading) if self.settings.leader_elect else leading()
        )
        stopping = asyncio.create_task(self._stop.wait())
        await asyncio.wait({election, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not election.done():
            log.info("shutting down: finishing reconciles in progress")
            await context.manager.stop()
            elector.stop()
            await election
        stopping.cancel()

    def stop(self) -> None:
        self._stop.set()

    # ------------------------------------------------------------------------------------ leading
    async def _lead(self, context: ControllerContext) -> None:
        """Everything that runs only on the leader; cancelled when the Lease is lost."""
        log.info("leading: starting controllers", extra={"identity": self.identity})
        reflectors = self._reflectors(context)
        airways = AirwayReconciler(context, reflectors["airways"])
        context.manager.register(airways.controller_name, airways)
        flights = {kind: FlightReconciler(context, kind, reflectors[kind]) for kind in ("Flight", "ClusterFlight")}
        for reconciler in flights.values():
            context.manager.register(reconciler.controller_name, reconciler)
        reflectors["signals"] = Reflector(
            context.kube,
            EVENTS_PATH,
            name="signals",
            label_selector=SIGNAL_SELECTOR,
            handler=_signal_router(airways, flights),
        )
        context.targets.route_children_to(_child_router(airways, flights))
        if isinstance(context.cluster.revisions, CachedHistory):
            reflectors["revisions"] = context.cluster.revisions.fresh_reflector()
        tasks = [asyncio.create_task(r.run(), name=f"reflector-{name}") for name, r in reflectors.items()]
        try:
            await asyncio.gather(*(r.synced.wait() for r in reflectors.values()))
            self.caches_synced = True
            freeze_long_lived()  # full collections of the start-up heap and caches would stall reconciles
            await context.manager.run()
        finally:
            self.caches_synced = False
            await context.manager.stop(now=True)
            await airways.stop()
            await context.external_watches.stop()
            await context.child_watches.stop()
            await context.targets.stop()
            for reflector in reflectors.values():
                reflector.stop()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for name in context.manager.controllers:
                context.manager.unregister(name)
            log.info("stopped leading")

    def _reflectors(self, context: ControllerContext) -> dict[str, Reflector]:
        kube, manager = context.kube, context.manager
        resync = self.settings.resync_seconds or None
        airways = Reflector(
            kube,
            AIRWAYS_PATH,
            name="airways",
            handler=_enqueuer(manager, "airway"),
            resync_period=resync,  # a safety net: every Airway (and so its instance controller) is checked again
        )
        reflectors = {
            "airways": airways,
            "crds": Reflector(kube, CRDS_PATH, name="crds", handler=self._crd_forwarder(context, airways)),
            "Flight": Reflector(
                kube,
                FLIGHTS_PATH,
                name="flights",
                handler=_enqueuer(manager, "flight"),
                resync_period=resync,
            ),
            "ClusterFlight": Reflector(
                kube,
                CLUSTERFLIGHTS_PATH,
                name="clusterflights",
                handler=_enqueuer(manager, "clusterflight"),
                resync_period=resync,
            ),
        }
        readiness = context.cluster.readiness
        if readiness is not None:
            reflectors["readiness"] = Reflector(
                kube,
                CONFIGMAPS_PATH,
                name="readiness-configmaps",
                label_selector=READINESS_CONFIGMAPS,
                handler=_readiness_rules(readiness),
                resync_period=60.0,
            )
        return reflectors

    def _crd_forwarder(
        self, context: ControllerContext, airways: Reflector
    ) -> Callable[[str, Object, Object | None], None]:
        """A CRD named like an Airway changed (or went away): reconcile that Airway."""

        def handle(event_type: str, crd: Object, old: Object | None) -> None:
            name = crd["metadata"]["name"]
            if event_type != "RESYNC" and airways.get("", name) is not None:
                context.manager.enqueue("airway", name)

        return handle

    # ------------------------------------------------------------------------------------ probes
    def _probes(self, kube: KubeClient) -> ProbeServer:
        probes = ProbeServer(self.settings.health_port, self.settings.metrics_port)

        async def api_server_reachable() -> bool:
            return (await kube.get_text("/readyz")).strip() == "ok"

        async def caches_synced_or_standby() -> bool:
            return self.caches_synced or not self._leading_now()

        async def crds_installed() -> bool:
            return self.crds_installed

        async def reconciling_when_leading() -> bool:
            """A leader whose caches synced must have its workers running and every controller's queue open."""
            manager = self.manager
            return not self.caches_synced or (manager is not None and manager.running and manager.queues.all_open)

        probes.add_liveness_check("event-loop", _loop_responsive)
        probes.add_liveness_check("workers", reconciling_when_leading)
        probes.add_readiness_check("workers", reconciling_when_leading)
        probes.add_readiness_check("api-server", api_server_reachable)
        probes.add_readiness_check("yoke-crds", crds_installed)
        probes.add_readiness_check("caches-synced", caches_synced_or_standby)
        return probes

    def _leading_now(self) -> bool:
        if not self.settings.leader_elect:
            return True
        return self.elector is not None and self.elector.is_leader


def _mode_follower(
    airways: AirwayReconciler, flights: dict[str, FlightReconciler], group: str, kind: str
) -> ModeFollowing | None:
    """The reconciler of the objects of ``kind`` (an Airway's instances, Flights or ClusterFlights)."""
    if group == API_GROUP and kind in flights:
        return flights[kind]
    return airways.instances_for(group, kind)


def _signal_router(
    airways: AirwayReconciler, flights: dict[str, FlightReconciler]
) -> Callable[[str, Object, Object | None], None]:
    """Route the webhook's child-changed Events to their instances (docs/design.md, "The Events channel")."""
    started = datetime.datetime.now(datetime.UTC)

    def handle(event_type: str, event: Object, old: Object | None) -> None:
        change = parse_child_changed(event)
        if event_type != "ADDED" or change is None or _event_time(event) < started - SIGNAL_REPLAY_WINDOW:
            return  # old signals: everything is reconciled after a start anyway
        group, _ = split_api_version(change.instance_api_version)
        reconciler = _mode_follower(airways, flights, group, change.instance_kind)
        if reconciler is not None:
            key = reconciler.key_for(change.instance_namespace, change.instance_name)
            reconciler.child_changed(key, change.child_ref, change.child_resource_version)

    return handle


def _child_router(airways: AirwayReconciler, flights: dict[str, FlightReconciler]) -> Callable[[ChildChange], None]:
    """Route a change the child watches saw (in any target) to the object its ``instanceRef`` names."""

    def handle(change: ChildChange) -> None:
        instance = parse_ref(change.instance_ref)
        reconciler = _mode_follower(airways, flights, instance.group, instance.kind)
        if reconciler is not None:
            reconciler.child_drifted(reconciler.key_for(instance.namespace, instance.name), change)

    return handle


def _event_time(event: Object) -> datetime.datetime:
    stamp = event.get("lastTimestamp") or (event.get("metadata") or {}).get("creationTimestamp")
    try:
        return datetime.datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return datetime.datetime.now(datetime.UTC)


async def _loop_responsive() -> bool:
    await asyncio.sleep(0)
    return True


def _readiness_rules(readiness: CustomReadiness) -> Callable[[str, Object, Object | None], None]:
    def handle(event_type: str, configmap: Object, old: Object | None) -> None:
        if event_type == "DELETED":
            readiness.remove_configmap(configmap)
        else:
            if old is not None:
                readiness.remove_configmap(old)
            readiness.apply_configmap(configmap)

    return handle


async def run(settings: ControllerSettings) -> int:
    """Run the controller until SIGTERM or SIGINT."""
    controller = Controller(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, controller.stop)
    return await controller.run()
