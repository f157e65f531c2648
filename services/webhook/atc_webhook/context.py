"""What the webhook's routes and startup code share: settings, API client, caches, Event writer, TLS.

``atc_webhook.server`` builds one ``WebhookContext`` at startup and stores it
on the FastAPI app; routes get it back with ``context_of(request)``.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from atc.k8s.client import KubeClient

from .caches import WebhookCaches
from .registration import Registrar
from .settings import WebhookSettings
from .signals import SignalWriter
from .tls import CertificateReloader
from .validation import FlightServices


@dataclass
class WebhookContext:
    """The service's long-lived parts (``registrar`` only with ``REGISTER_WEBHOOKS``)."""

    settings: WebhookSettings
    kube: KubeClient
    caches: WebhookCaches
    signals: SignalWriter
    tls: CertificateReloader
    registrar: Registrar | None = None
    flights: FlightServices | None = None  # the flight runtime for dry-runs and conversion


def context_of(request: Request) -> WebhookContext:
    context = request.app.state.context
    if not isinstance(context, WebhookContext):
        raise RuntimeError("the app has no WebhookContext")
    return context
