"""Every Prometheus metric of the controller service, on one registry served at ``/metrics``.

Names and labels follow controller-runtime (``workqueue_*``,
``controller_runtime_*``, ``leader_election_master_status``) so existing
dashboards work, plus the ATC's own ``atc_*`` metrics. The work queues, the
manager, the leader elector, the reconcilers and the module cache update these
objects; ``core.probes`` exposes ``REGISTRY``. Counters are declared without
their ``_total`` suffix, which prometheus-client appends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from atc.wasm.cache import CacheStats

REGISTRY = CollectorRegistry(auto_describe=True)

# controller-runtime: pkg/metrics/workqueue.go (buckets 1e-8 s .. 1e3 s)
WORKQUEUE_BUCKETS = tuple(10.0**exponent for exponent in range(-8, 4))
# controller-runtime: pkg/internal/controller/metrics/metrics.go
RECONCILE_TIME_BUCKETS = (
    *(0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
    *(1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5, 6, 7, 8, 9, 10, 15, 20, 25, 30, 40, 50, 60),
)
FLIGHT_RUN_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)

WORKQUEUE_DEPTH = Gauge("workqueue_depth", "Current depth of workqueue", ["name"], registry=REGISTRY)
WORKQUEUE_ADDS = Counter("workqueue_adds", "Total number of adds handled by workqueue", ["name"], registry=REGISTRY)
WORKQUEUE_QUEUE_DURATION = Histogram(
    "workqueue_queue_duration_seconds",
    "How long in seconds an item stays in workqueue before being requested",
    ["name"],
    buckets=WORKQUEUE_BUCKETS,
    registry=REGISTRY,
)
WORKQUEUE_WORK_DURATION = Histogram(
    "workqueue_work_duration_seconds",
    "How long in seconds processing an item from workqueue takes",
    ["name"],
    buckets=WORKQUEUE_BUCKETS,
    registry=REGISTRY,
)
WORKQUEUE_RETRIES = Counter(
    "workqueue_retries", "Total number of retries handled by workqueue", ["name"], registry=REGISTRY
)
WORKQUEUE_UNFINISHED_WORK = Gauge(
    "workqueue_unfinished_work_seconds",
    "How many seconds of work has been done that is in progress and hasn't been observed by work_duration",
    ["name"],
    registry=REGISTRY,
)
WORKQUEUE_LONGEST_RUNNING_PROCESSOR = Gauge(
    "workqueue_longest_running_processor_seconds",
    "How many seconds has the longest running processor for workqueue been running",
    ["name"],
    registry=REGISTRY,
)

RECONCILE_TOTAL = Counter(
    "controller_runtime_reconcile",
    "Total number of reconciliations per controller",
    ["controller", "result"],
    registry=REGISTRY,
)
RECONCILE_ERRORS = Counter(
    "controller_runtime_reconcile_errors",
    "Total number of reconciliation errors per controller",
    ["controller"],
    registry=REGISTRY,
)
TERMINAL_RECONCILE_ERRORS = Counter(
    "controller_runtime_terminal_reconcile_errors",
    "Total number of terminal reconciliation errors per controller",
    ["controller"],
    registry=REGISTRY,
)
RECONCILE_TIME = Histogram(
    "controller_runtime_reconcile_time_seconds",
    "Length of time per reconciliation per controller",
    ["controller"],
    buckets=RECONCILE_TIME_BUCKETS,
    registry=REGISTRY,
)
ACTIVE_WORKERS = Gauge(
    "controller_runtime_active_workers",
    "Number of currently used workers per controller",
    ["controller"],
    registry=REGISTRY,
)
LEADER_ELECTION_MASTER_STATUS = Gauge(
    "leader_election_master_status",
    "Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, 1 indicates master",
    ["name"],
    registry=REGISTRY,
)

FLIGHT_RUN_SECONDS = Histogram(
    "atc_flight_run_seconds",
    "Wall time of one flight execution per Airway",
    ["airway"],
    buckets=FLIGHT_RUN_BUCKETS,
    registry=REGISTRY,
)
FLIGHT_RUNS = Counter(
    "atc_flight_runs",
    "Flight executions per Airway by result (success, error, timeout, ...)",
    ["airway", "result"],
    registry=REGISTRY,
)
APPLY_REQUESTS = Counter(
    "atc_apply_requests",
    "Server-side apply requests for flight output by kind and result",
    ["kind", "result"],
    registry=REGISTRY,
)
REVISIONS = Counter(
    "atc_revisions",
    "Release revisions by result (created, unchanged, error, ...)",
    ["result"],
    registry=REGISTRY,
)


class _ReadOnScrape(Collector):
    """Counters kept by library objects (module cache, API client), read when Prometheus scrapes."""

    def __init__(
        self, name: str, documentation: str, labels: list[str], read: Callable[[], Mapping[tuple[str, ...], float]]
    ) -> None:
        self._name, self._documentation, self._labels, self._read = name, documentation, labels, read

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._documentation, labels=self._labels)
        for values, count in sorted(self._read().items()):
            family.add_metric(list(values), count)
        yield family


def expose_library_counters(module_stats: CacheStats, kube_requests: Mapping[tuple[str, str], int]) -> None:
    """Publish ``atc_module_cache_total{result}`` and ``atc_kube_requests_total{verb,resource}``."""

    def cache_results() -> dict[tuple[str, ...], float]:
        return {
            ("hit_memory",): module_stats.memory_hits,
            ("hit_disk",): module_stats.disk_loads,
            ("compile",): module_stats.compiles,
            ("download",): module_stats.downloads,
        }

    REGISTRY.register(
        _ReadOnScrape("atc_module_cache", "Wasm module loads by how they were served", ["result"], cache_results)
    )
    REGISTRY.register(
        _ReadOnScrape(
            "atc_kube_requests",
            "Requests the controller sent to the API server, by verb and resource",
            ["verb", "resource"],
            lambda: {key: float(count) for key, count in kube_requests.items()},
        )
    )
