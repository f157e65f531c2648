"""What the webhook's routes and startup code share: settings, API client, caches, Event writer, TLS, flight runtime.

``atc_webhook.server`` builds one ``WebhookContext`` (and its ``FlightServices``) at startup and
stores it on the FastAPI app; routes get it back with ``context_of(request)`` and hand
``FlightServices`` to ``atc_webhook.validation`` and ``atc_webhook.conversion``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.requests import Request

from atc.k8s.client import KubeClient
from atc.release.invocation import FlightDefaults
from atc.release.takeoff import Cluster
from atc.release.targets import RemoteClusters
from atc.wasm.cache import ModuleCache

from .caches import WebhookCaches
from .registration import Registrar
from .settings import WebhookSettings
from .signals import SignalWriter
from .tls import CertificateReloader


@dataclass(frozen=True)
class FlightServices:
    """What dry runs and conversion need: the API, the flight runtime and the module cache."""

    cluster: Cluster
    modules: ModuleCache
    allow_list: tuple[str, ...] = ()
    defaults: FlightDefaults = field(default_factory=FlightDefaults)
    targets: RemoteClusters | None = None  # clusters of kubeconfig Secrets, for dry runs of targeted objects

    @property
    def kube(self) -> KubeClient:
        return self.cluster.kube


@dataclass
class WebhookContext:
    """The service's long-lived parts (``registrar`` only with ``REGISTER_WEBHOOKS``)."""

    settings: WebhookSettings
    kube: KubeClient
    caches: WebhookCaches
    signals: SignalWriter
    tls: CertificateReloader
    registrar: Registrar | None = None
    flights: FlightServices | None = None  # the flight runtime for dry runs and conversion


def context_of(request: Request) -> WebhookContext:
    context = request.app.state.context
    if not isinstance(context, WebhookContext):
        raise RuntimeError("the app has no WebhookContext")
    return context
