"""Prometheus metrics of the webhook service, served on ``/metrics`` (``atc_webhook.server``).

- ``atc_webhook_requests_total{path,result}``: admission requests by result ``allowed``, ``denied``
  or ``error`` (an HTTP error answer: undecodable review, caches not synced, a bug);
- ``atc_webhook_request_duration_seconds{path}``: time from the body read to the answer;
- ``atc_webhook_denials_total{path,reason}``: denials by ``status.reason`` (BadRequest, Forbidden, ...);
- ``atc_webhook_signals_total{result}``: child-changed Events ``created``, ``failed`` or ``dropped``;
- ``atc_webhook_tls_reloads_total{result}``, ``atc_webhook_tls_certificate_not_after_seconds``;
- ``atc_webhook_cache_objects{cache}``: objects in the watch-backed caches;
- ``atc_webhook_kube_requests_total{verb,resource}``: every call the webhook made to the API server
  (watches count once, when they start), to show the admission hot path makes none;
- process metrics (``process_resident_memory_bytes`` ...).

Admission routes record through ``atc_webhook.admission``; other modules update their own counters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from atc.k8s.client import KubeClient

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

REQUESTS = Counter(
    "atc_webhook_requests", "Admission requests by path and result", ["path", "result"], registry=REGISTRY
)
REQUEST_SECONDS = Histogram(
    "atc_webhook_request_duration_seconds",
    "Time to answer an admission request",
    ["path"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
DENIALS = Counter("atc_webhook_denials", "Admission denials by path and reason", ["path", "reason"], registry=REGISTRY)
SIGNALS = Counter("atc_webhook_signals", "Child-changed Events by result", ["result"], registry=REGISTRY)
TLS_RELOADS = Counter("atc_webhook_tls_reloads", "Serving certificate reloads by result", ["result"], registry=REGISTRY)
TLS_NOT_AFTER = Gauge(
    "atc_webhook_tls_certificate_not_after_seconds",
    "Expiry of the serving certificate in use (Unix seconds)",
    registry=REGISTRY,
)


class _FunctionCollector(Collector):
    """Metrics read at scrape time from the live objects (a KubeClient's request counter, cache sizes)."""

    def __init__(self) -> None:
        self.kube: KubeClient | None = None
        self.cache_sizes: Callable[[], dict[str, int]] | None = None

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "atc_webhook_kube_requests", "Requests the webhook sent to the API server", labels=["verb", "resource"]
        )
        if self.kube is not None:
            for (verb, resource), count in sorted(self.kube.requests.items()):
                requests.add_metric([verb, resource], count)
        yield requests
        sizes = GaugeMetricFamily("atc_webhook_cache_objects", "Objects in the watch-backed caches", labels=["cache"])
        for name, size in sorted((self.cache_sizes() if self.cache_sizes else {}).items()):
            sizes.add_metric([name], size)
        yield sizes


_LIVE = _FunctionCollector()
REGISTRY.register(_LIVE)


def track(kube: KubeClient, cache_sizes: Callable[[], dict[str, int]]) -> None:
    """Expose ``kube``'s request counts and the cache sizes (called once at startup)."""
    _LIVE.kube = kube
    _LIVE.cache_sizes = cache_sizes


def observe_admission(path: str, result: str, seconds: float, reason: str = "") -> None:
    """Count one admission answer (``result``: allowed, denied or error) and its latency."""
    REQUESTS.labels(path=path, result=result).inc()
    REQUEST_SECONDS.labels(path=path).observe(seconds)
    if result == "denied":
        DENIALS.labels(path=path, reason=reason).inc()
