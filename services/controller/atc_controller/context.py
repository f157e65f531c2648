"""The services every reconciler shares, built once at startup by ``atc_controller.app``."""

from __future__ import annotations

from dataclasses import dataclass

from atc.k8s.client import KubeClient
from atc.k8s.discovery import RestMapper
from atc.k8s.events import EventRecorder
from atc.k8s.gateway import LoopGateway
from atc.release.invocation import FlightDefaults
from atc.release.takeoff import Cluster, TakeoffResult
from atc.wasm.cache import ModuleCache

from . import metrics
from .children import ChildWatches
from .core.controller import Manager
from .external import ExternalWatches
from .settings import ControllerSettings
from .targets import Targets


@dataclass
class ControllerContext:
    """Clients, caches and the work queue manager the reconcilers use."""

    settings: ControllerSettings
    kube: KubeClient
    mapper: RestMapper
    modules: ModuleCache
    cluster: Cluster
    events: EventRecorder
    manager: Manager
    gateway: LoopGateway
    external_watches: ExternalWatches
    child_watches: ChildWatches
    flight_defaults: FlightDefaults
    targets: Targets
    ca_bundle: bytes = b""

    def observe_takeoff(self, result: TakeoffResult) -> None:
        """Count what a takeoff sent and whether it wrote a revision."""
        for kind in result.applied_kinds:
            metrics.APPLY_REQUESTS.labels(kind, "applied").inc()
        metrics.REVISIONS.labels("created" if result.revision else result.outcome).inc()

    def observe_flight(self, airway: str, seconds: float, result: str) -> None:
        metrics.FLIGHT_RUNS.labels(airway, result).inc()
        if result == "success":
            metrics.FLIGHT_RUN_SECONDS.labels(airway).observe(seconds)
