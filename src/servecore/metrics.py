"""Prometheus metrics of one server, in a registry of its own (no process-global state)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

# Latency buckets from 50 µs to 10 s: small models answer in well under a millisecond.
LATENCY_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)

CONTENT_TYPE = CONTENT_TYPE_LATEST


@dataclass(slots=True)
class _ModelSeries:
    """Label-bound children of one model version, looked up once instead of on every request."""

    success: Any
    failure: Any
    request: Any
    queue: Any
    compute: Any


@dataclass
class Metrics:
    """The server's metrics; :meth:`render` gives the ``/metrics`` body."""

    registry: CollectorRegistry = field(default_factory=lambda: CollectorRegistry(auto_describe=True))

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "servecore_requests", "Inference requests by model, version and outcome.",
            ["model", "version", "outcome"], registry=r,
        )
        self.request_seconds = Histogram(
            "servecore_request_duration_seconds", "Inference request latency inside the server.",
            ["model", "version"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.queue_seconds = Histogram(
            "servecore_queue_duration_seconds", "Time a request waited before its model ran.",
            ["model", "version"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.compute_seconds = Histogram(
            "servecore_compute_duration_seconds", "Model execution time.",
            ["model", "version"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.inflight = Gauge("servecore_inflight_requests", "Inference requests being processed.", registry=r)
        self.http_errors = Counter(
            "servecore_http_errors", "Requests answered with an error status, by status code.", ["status"], registry=r,
        )
        self.build = Info("servecore_build", "Version and active core of this server.", registry=r)
        self._series: dict[tuple[str, str], _ModelSeries] = {}

    def set_build_info(self, version: str, core: str) -> None:
        self.build.info({"version": version, "core": core})

    def series(self, model: str, version: str) -> _ModelSeries:
        key = (model, version)
        found = self._series.get(key)
        if found is None:
            found = self._series[key] = _ModelSeries(
                success=self.requests.labels(model, version, "success"),
                failure=self.requests.labels(model, version, "failure"),
                request=self.request_seconds.labels(model, version),
                queue=self.queue_seconds.labels(model, version),
                compute=self.compute_seconds.labels(model, version),
            )
        return found

    def count_rejected(self, model: str, version: str, outcome: str) -> None:
        """A request refused before it reached a model (``invalid``, ``not_found``, ``unavailable``...)."""
        self.requests.labels(model, version, outcome).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
