"""Prometheus metrics of one server, in a registry of its own (no process-global state).

The request path only bumps plain integers and bucket counts (no locks, no label lookups);
a custom collector turns them into Prometheus families when ``/metrics`` is scraped. Everything
is updated on the event-loop thread.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter as Tally
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from prometheus_client import CollectorRegistry

from servecore.batching.policy import CLOSE_REASONS, REFUSALS
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

#: Latency buckets from 50 µs to 10 s: small models answer in well under a millisecond.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)

#: Batch-size buckets (rows), powers of two up to 1024.
BATCH_BUCKETS: tuple[float, ...] = tuple(float(2**i) for i in range(11))

CONTENT_TYPE = CONTENT_TYPE_LATEST

#: Cold-start buckets: a small model loads in milliseconds, a large one (or a TensorRT build) in minutes.
COLD_START_BUCKETS: tuple[float, ...] = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
#: The lifecycle states (servecore.models.STATES), listed here to keep this module free of imports.
MODEL_STATES: tuple[str, ...] = ("loading", "warming", "ready", "draining", "unloaded", "failed")


class LatencyHistogram:
    """Bucket counts and a sum, in seconds; ``observe`` is one binary search and two additions."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last slot is +Inf
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts):
            running += count
            out.append((bound, running))
        return out


class Count:
    """A counter: ``inc`` adds one."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self, amount: int = 1) -> None:
        self.value += amount


@dataclass(slots=True)
class ModelSeries:
    """The series of one model version."""

    success: Count = field(default_factory=Count)
    failure: Count = field(default_factory=Count)
    request: LatencyHistogram = field(default_factory=LatencyHistogram)
    queue: LatencyHistogram = field(default_factory=LatencyHistogram)
    compute: LatencyHistogram = field(default_factory=LatencyHistogram)
    # dynamic batching (empty while the model does not batch)
    batch_rows: LatencyHistogram = field(default_factory=lambda: LatencyHistogram(BATCH_BUCKETS))
    execution_by_size: dict[int, LatencyHistogram] = field(default_factory=dict)
    batches_by_reason: Tally[str] = field(default_factory=Tally)
    rejected_by_reason: Tally[str] = field(default_factory=Tally)
    expired: Count = field(default_factory=Count)
    padding_elements: Count = field(default_factory=Count)
    batching: bool = False

    def observe_batch(self, rows: int, reason: str, execution_s: float) -> None:
        """One executed batch of *rows* rows, closed for *reason*, that ran *execution_s* seconds."""
        self.batch_rows.observe(rows)
        self.batches_by_reason[reason] += 1
        histogram = self.execution_by_size.get(rows)
        if histogram is None:
            histogram = self.execution_by_size[rows] = LatencyHistogram()
        histogram.observe(execution_s)


class Gauge1:
    """An up-down gauge."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self) -> None:
        self.value += 1

    def dec(self) -> None:
        self.value -= 1


class _ByStatus:
    """``http_errors.labels("404").inc()``: counts by status code."""

    def __init__(self) -> None:
        self.counts: Tally[str] = Tally()

    def labels(self, status: str) -> _StatusCounter:
        return _StatusCounter(self.counts, status)


@dataclass(slots=True)
class _StatusCounter:
    counts: Tally[str]
    status: str

    def inc(self) -> None:
        self.counts[self.status] += 1


class Metrics:
    """The server's metrics; :meth:`render` gives the ``/metrics`` body."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.inflight = Gauge1()
        self.http_errors = _ByStatus()
        self.rejected: Tally[tuple[str, str, str]] = Tally()
        self.build: dict[str, str] = {}
        self._series: dict[tuple[str, str], ModelSeries] = {}
        self.cold_starts: dict[tuple[str, str], LatencyHistogram] = {}
        self.model_states: Callable[[], list[tuple[str, str, str]]] = list
        #: the monitors of the served versions (drift.monitor.ModelMonitor), read at scrape time
        self.monitors: Callable[[], list[Any]] = list
        self.registry.register(_Collector(self))

    def set_model_states(self, source: Callable[[], list[tuple[str, str, str]]]) -> None:
        """Where the model-state gauge reads (name, version, state) of every known version."""
        self.model_states = source

    def observe_cold_start(self, model: str, version: str, seconds: float) -> None:
        """A request waited *seconds* for an idle-unloaded model to load again."""
        histogram = self.cold_starts.get((model, version))
        if histogram is None:
            histogram = self.cold_starts[(model, version)] = LatencyHistogram(COLD_START_BUCKETS)
        histogram.observe(seconds)

    def set_build_info(self, version: str, core: str) -> None:
        self.build = {"version": version, "core": core}

    def series(self, model: str, version: str) -> ModelSeries:
        found = self._series.get((model, version))
        if found is None:
            found = self._series[(model, version)] = ModelSeries()
        return found

    def count_rejected(self, model: str, version: str, outcome: str) -> None:
        """A request refused before it reached a model (``invalid``, ``not_found``, ``unavailable``...)."""
        self.rejected[(model, version, outcome)] += 1

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Collector:
    """Reads :class:`Metrics` into Prometheus families at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        requests = CounterMetricFamily(
            "servecore_requests", "Inference requests by model, version and outcome.",
            labels=["model", "version", "outcome"],
        )
        for (model, version), s in sorted(m._series.items()):
            requests.add_metric([model, version, "success"], s.success.value)
            requests.add_metric([model, version, "failure"], s.failure.value)
        for (model, version, outcome), count in sorted(m.rejected.items()):
            requests.add_metric([model, version, outcome], count)
        yield requests
        for attr, name, doc in (
            ("request", "servecore_request_duration_seconds", "Inference request latency inside the server."),
            ("queue", "servecore_queue_duration_seconds", "Time a request waited before its model ran."),
            ("compute", "servecore_compute_duration_seconds", "Model execution time."),
        ):
            family = HistogramMetricFamily(name, doc, labels=["model", "version"])
            for (model, version), s in sorted(m._series.items()):
                h: LatencyHistogram = getattr(s, attr)
                family.add_metric([model, version], h.cumulative(), h.total)
            yield family
        yield from _batching_families(sorted(m._series.items()))
        states = GaugeMetricFamily(
            "servecore_model_state", "1 for the state each model version is in.", labels=["model", "version", "state"]
        )
        for model, version, state in m.model_states():
            for candidate in MODEL_STATES:
                states.add_metric([model, version, candidate], 1.0 if candidate == state else 0.0)
        yield states
        cold = HistogramMetricFamily(
            "servecore_model_cold_start_seconds", "Time requests waited for an idle-unloaded model to load again.",
            labels=["model", "version"],
        )
        for (model, version), h in sorted(m.cold_starts.items()):
            cold.add_metric([model, version], h.cumulative(), h.total)
        yield cold
        yield from _monitoring_families(m.monitors())
        yield GaugeMetricFamily("servecore_inflight_requests", "Inference requests being processed.", value=m.inflight.value)
        errors = CounterMetricFamily(
            "servecore_http_errors", "Requests answered with an error status, by status code.", labels=["status"]
        )
        for status, count in sorted(m.http_errors.counts.items()):
            errors.add_metric([status], count)
        yield errors
        info = InfoMetricFamily("servecore_build", "Version and active core of this server.", labels=[])
        info.add_metric([], m.build)
        yield info


def _batching_families(series: list[tuple[tuple[str, str], ModelSeries]]) -> Iterator[Metric]:
    """The dynamic-batching families, for the model versions that batch."""
    batching = [(key, s) for key, s in series if s.batching]
    labels = ["model", "version"]
    sizes = HistogramMetricFamily("servecore_batch_size_rows", "Rows per executed batch.", labels=labels)
    execution = HistogramMetricFamily(
        "servecore_batch_execution_seconds", "Model execution time by batch size (rows).", labels=[*labels, "batch_size"]
    )
    reasons = CounterMetricFamily(
        "servecore_batches", "Executed batches by the reason they closed.", labels=[*labels, "reason"]
    )
    rejected = CounterMetricFamily(
        "servecore_batch_rejected_requests", "Requests refused at admission (429) by reason.", labels=[*labels, "reason"]
    )
    expired = CounterMetricFamily(
        "servecore_batch_expired_requests", "Requests whose timeout passed while queued (never run).", labels=labels
    )
    padding = CounterMetricFamily(
        "servecore_batch_padding_elements", "Tensor elements added as padding to batch inputs.", labels=labels
    )
    for (model, version), s in batching:
        sizes.add_metric([model, version], s.batch_rows.cumulative(), s.batch_rows.total)
        for rows, histogram in sorted(s.execution_by_size.items()):
            execution.add_metric([model, version, str(rows)], histogram.cumulative(), histogram.total)
        for reason in CLOSE_REASONS:
            reasons.add_metric([model, version, reason], s.batches_by_reason[reason])
        for reason in REFUSALS:
            rejected.add_metric([model, version, reason], s.rejected_by_reason[reason])
        expired.add_metric([model, version], s.expired.value)
        padding.add_metric([model, version], s.padding_elements.value)
    yield from (sizes, execution, reasons, rejected, expired, padding)


def _monitoring_families(monitors: list[Any]) -> Iterator[Metric]:
    """Drift per feature (last closed window) and performance per model version (latest window)."""
    labels = ["model", "version", "feature"]
    gauges = {
        "psi": GaugeMetricFamily("servecore_drift_psi", "Population stability index, last closed window.", labels=labels),
        "js": GaugeMetricFamily("servecore_drift_js", "Jensen-Shannon distance (base 2), last closed window.", labels=labels),
        "ks": GaugeMetricFamily("servecore_drift_ks_p_value", "KS test p-value of a numeric feature, last closed window.", labels=labels),
        "p": GaugeMetricFamily("servecore_drift_p_value", "p-value of the feature's test (KS or chi-square), last closed window.", labels=labels),
        "missing": GaugeMetricFamily("servecore_drift_missing_rate", "Share of missing values, last closed window.", labels=labels),
        "alert": GaugeMetricFamily("servecore_drift_alert", "1 while the feature's drift alert is open.", labels=labels),
    }
    rows = CounterMetricFamily("servecore_drift_rows", "Rows binned by drift monitoring.", labels=["model", "version"])
    skipped = CounterMetricFamily(
        "servecore_drift_skipped_rows", "Rows not binned because the monitoring queue was full.", labels=["model", "version"]
    )
    feedback = CounterMetricFamily(
        "servecore_feedback_labels", "Labels received, by outcome (joined, unknown, duplicate, late, mismatch).",
        labels=["model", "version", "outcome"],
    )
    performance = {
        name: GaugeMetricFamily(f"servecore_model_{name}", f"Model {name} from label feedback, latest window.", labels=["model", "version"])
        for name in ("accuracy", "sensitivity", "specificity", "precision", "mae", "rmse")
    }
    for monitor in monitors:
        key = [monitor.model, monitor.version]
        rows.add_metric(key, monitor.rows_seen)
        skipped.add_metric(key, monitor.rows_skipped)
        for outcome in ("joined", "unknown", "duplicate", "late", "mismatch"):
            feedback.add_metric([*key, outcome], monitor.pending.counts[outcome])
        report = monitor.latest
        for name, on in sorted(monitor.alerts.items()):
            gauges["alert"].add_metric([*key, name], 1.0 if on else 0.0)
        if report is not None:
            for feature in report.features:
                series = [*key, feature.name]
                gauges["psi"].add_metric(series, feature.psi.value)
                gauges["js"].add_metric(series, feature.js)
                gauges["p"].add_metric(series, feature.p_value)
                if feature.ks is not None:
                    gauges["ks"].add_metric(series, feature.ks.p_value)
                gauges["missing"].add_metric(series, feature.missing.current)
        latest = monitor.performance.latest() if monitor.performance is not None else None
        for name, family in performance.items():
            value = (latest or {}).get(name)
            if isinstance(value, dict):
                value = value.get("value")
            if value is not None:
                family.add_metric(key, float(value))
    yield from gauges.values()
    yield from (rows, skipped, feedback)
    yield from performance.values()
