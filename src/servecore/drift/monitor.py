"""Drift and performance monitoring of one served model version, off the request path.

The data plane hands every answered request's tensors to :meth:`ModelMonitor.observe`, which only
appends references to a bounded queue (the arrays are not copied: request inputs are the
request's own, outputs fresh from the backend). A worker thread turns them into feature columns
and bins them in the compiled core; when the queue is full, requests are skipped and their rows
counted, so monitoring never slows or blocks serving. Windows close by time (a timer wakes the
worker even without traffic) or by rows; each closed window is evaluated against the reference
profile, the Prometheus gauges follow, and an alert that opens or clears is reported through
the ``on_alert`` callback.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from servecore.drift import DriftCore
from servecore.drift.performance import PendingTable, PerformanceWindows, label_key
from servecore.drift.profile import ReferenceProfile
from servecore.drift.report import WindowReport
from servecore.drift.windows import DriftWindows

logger = logging.getLogger("servecore.drift")

#: most rows binned in one go (the queued requests concatenated)
DRAIN_ROWS = 8192
#: how long the worker lets requests gather before binning them together
GATHER_S = 0.05


def tensor_columns(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Feature columns of batched tensors: ``name`` for a [rows] tensor, ``name[j]`` for the j-th
    element of each row of a [rows, ...] one (flattened). The names a profile is built with."""
    columns: dict[str, np.ndarray] = {}
    for name, array in tensors.items():
        array = np.asarray(array)
        if array.ndim == 0:
            continue
        if array.ndim == 1:
            columns[name] = array
            continue
        flat = array.reshape(array.shape[0], int(np.prod(array.shape[1:])))
        for j in range(flat.shape[1]):
            columns[f"{name}[{j}]"] = flat[:, j]
    return columns


def feature_tensor(feature: str) -> str:
    """The tensor a feature comes from: ``x`` for ``x[3]`` and for ``x``."""
    return feature.rsplit("[", 1)[0] if feature.endswith("]") else feature


def unmatched_features(features: Sequence[str], tensors: Sequence[str]) -> list[str]:
    """The profile features that no tensor of the model can produce (a profile built for
    another model, or for another version's signature)."""
    names = set(tensors)
    return [f for f in features if feature_tensor(f) not in names]


def predictions_of(array: np.ndarray, task: str) -> list[Any]:
    """One prediction per row: the argmax of several float scores, else the row's single value."""
    array = np.asarray(array)
    rows = array.reshape(array.shape[0], -1) if array.ndim > 1 else array.reshape(-1, 1)
    if task == "classification" and rows.dtype.kind == "f" and rows.shape[1] > 1:
        return [int(i) for i in np.argmax(rows, axis=1)]
    values = rows[:, 0]
    if values.dtype.kind == "f" and task == "regression":
        return [float(v) for v in values]
    return [label_key(v) for v in values]


def infer_task(array_kind: str, width: int) -> str:
    """``auto``: integer, bool and string predictions and float scores of several columns are a
    classifier's; one float per row is a regressor's."""
    return "regression" if array_kind == "f" and width == 1 else "classification"


def plain(value: Any) -> Any:
    """*value* (dataclasses, tuples, numpy scalars) as JSON-ready data; NaN and inf become None."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def report_dict(report: WindowReport) -> dict[str, Any]:
    """A closed window's report as JSON-ready data, with the drifted features and open alerts."""
    return {**plain(report), "drifted": list(report.drifted), "alerts": list(report.alerts)}


@dataclass(frozen=True)
class Alert:
    """A drift alert that opened or cleared."""

    model: str
    version: str
    feature: str
    open: bool
    window: int
    statistics: Mapping[str, Any]


class ModelMonitor:
    """Monitoring state of one model version (see the module docstring)."""

    def __init__(
        self,
        *,
        model: str,
        version: str,
        profile: ReferenceProfile,
        core: DriftCore,
        window_seconds: float,
        window_rows: int = 0,
        queue_rows: int = 65536,
        task: str = "auto",
        prediction: str = "",
        positive_class: str = "",
        feedback_ttl_s: float = 86400.0,
        feedback_max_pending: int = 100_000,
        on_alert: Callable[[Alert], None] = lambda alert: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.model, self.version, self.profile = model, version, profile
        self.windows = DriftWindows(
            profile, window_seconds=window_seconds, window_rows=window_rows or None, core=core, clock=clock
        )
        self.window_seconds = window_seconds
        self.queue_rows = queue_rows
        self.task = task
        self.prediction = prediction
        self.positive_class = positive_class or None
        self.pending = PendingTable(max_entries=max(1, feedback_max_pending), ttl_s=feedback_ttl_s)
        self.performance: PerformanceWindows | None = None
        self._perf_args = {"window_seconds": window_seconds, "positive": self.positive_class, "clock": clock}
        self.on_alert = on_alert
        #: rows queued in all (written by the serving thread) and taken off (by the worker)
        self.rows_in = 0
        self.rows_out = 0
        self.rows_seen = 0
        self.rows_skipped = 0
        self.alerts: dict[str, bool] = {}
        self.latest: WindowReport | None = None
        self._reference_detail = json.loads(profile.to_json())["features"]
        self._queue: deque[tuple[Mapping[str, np.ndarray], int]] = deque()
        self._lock = threading.Lock()  # guards the queue (held for a moment only)
        self._wake = threading.Condition(self._lock)
        self._windows_lock = threading.Lock()  # guards the windows (held while binning)
        self._busy = False  # a drained batch is being binned
        self._waiting = False  # the worker waits for work
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=f"servecore-drift-{model}", daemon=True)
        self._thread.start()

    # -- the request path (event-loop thread): cheap --------------------------------------------

    def observe(self, tensors: Mapping[str, np.ndarray], rows: int) -> None:
        """Queue one request's inputs and outputs (by tensor name); skipped when the queue is full.

        No lock on this path: ``deque.append`` is atomic, and the queued-row count is the
        difference of two counters each written by one thread only.
        """
        if self.rows_in - self.rows_out + rows > self.queue_rows:
            self.rows_skipped += rows
            return
        self._queue.append((tensors, rows))
        self.rows_in += rows
        if self._waiting:
            with self._lock:
                self._wake.notify()

    def record_prediction(self, request_id: str, outputs: Mapping[str, np.ndarray]) -> None:
        """Keep *request_id*'s predictions (one per row) until its label comes."""
        name = self.prediction or next(iter(outputs), "")
        array = outputs.get(name)
        if array is None:
            return
        array = np.asarray(array)
        if self.performance is None:
            width = int(np.prod(array.shape[1:])) if array.ndim > 1 else 1
            task = self.task if self.task != "auto" else infer_task(array.dtype.kind, width)
            self.task = task
            self.performance = PerformanceWindows(task, **self._perf_args)  # type: ignore[arg-type]
        self.pending.add(request_id, predictions_of(array, self.performance.task))

    def feedback(self, items: Sequence[tuple[str, Any]]) -> dict[str, int]:
        """Join labels to predictions by request id; the outcome counts of this call."""
        outcomes: dict[str, int] = {}
        for request_id, label in items:
            outcome, entry = self.pending.take(request_id)
            if entry is not None and self.performance is not None:
                labels = label if isinstance(label, list) else [label]
                if len(labels) != len(entry.predictions):
                    self.pending.count("mismatch")
                    outcome = "mismatch"
                else:
                    try:
                        for truth, predicted in zip(labels, entry.predictions):
                            self.performance.add(truth, predicted)
                    except ValueError:
                        self.pending.count("mismatch")
                        outcome = "mismatch"
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
        return outcomes

    # -- the worker thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._queue and not self._stopped:
                    self._waiting = True
                    # bounded: a request queued just before this wait began is not notified
                    self._wake.wait(timeout=min(self._next_close(), 0.5))
                    self._waiting = False
                if self._stopped and not self._queue:
                    return
                gather = bool(self._queue) and self.rows_queued < DRAIN_ROWS and not self._stopped
            if gather:
                # let requests gather for a moment: the per-feature work is then paid once for
                # many of them, and this thread takes less of the GIL from the server
                time.sleep(GATHER_S)
            with self._lock:
                batch = self._drain()
            try:
                with self._windows_lock:
                    if batch is None:
                        report = self.windows.poll()
                        reports = [report] if report is not None else []
                    else:
                        tensors, rows = batch
                        reports = self.windows.observe_tensors(tensors)
                        self.rows_seen += rows
                for report in reports:  # before the batch counts as done (see flush)
                    self._closed(report)
            except Exception:  # a monitoring bug must never reach serving
                logger.exception("drift monitoring of %s version %s failed on a batch", self.model, self.version)
            finally:
                with self._lock:
                    self._busy = False

    def _drain(self) -> tuple[dict[str, np.ndarray], int] | None:
        """Take the queued requests (called with the queue lock held) as one batch: each tensor
        concatenated along its rows, so the per-feature work is paid once per wake-up, not once
        per request. Requests whose tensors do not line up stay queued for the next batch."""
        if not self._queue:
            return None
        first, rows = self._queue.popleft()
        parts: dict[str, list[np.ndarray]] = {name: [np.asarray(a)] for name, a in first.items()}
        while self._queue and rows < DRAIN_ROWS:
            tensors, n = self._queue[0]
            if tensors.keys() != parts.keys() or any(
                np.asarray(tensors[name]).shape[1:] != parts[name][0].shape[1:] for name in parts
            ):
                break
            self._queue.popleft()
            for name, array in tensors.items():
                parts[name].append(np.asarray(array))
            rows += n
        self.rows_out += rows
        self._busy = True
        return {name: arrays[0] if len(arrays) == 1 else np.concatenate(arrays) for name, arrays in parts.items()}, rows

    @property
    def rows_queued(self) -> int:
        return self.rows_in - self.rows_out

    def _next_close(self) -> float:
        now = time.time()
        return max(0.01, (int(now / self.window_seconds) + 1) * self.window_seconds - now + 0.001)

    def _closed(self, report: WindowReport) -> None:
        self.latest = report
        changed: dict[bool, list[str]] = {True: [], False: []}
        for feature in report.features:
            was = self.alerts.get(feature.name, False)
            self.alerts[feature.name] = feature.alert
            if feature.alert != was:
                changed[feature.alert].append(feature.name)
                self.on_alert(Alert(self.model, self.version, feature.name, feature.alert, report.window_id, plain(feature)))
        for opened, names in changed.items():
            if names:
                logger.warning(
                    "drift alert %s: model %s version %s window %d: %s", "opened" if opened else "cleared",
                    self.model, self.version, report.window_id, ", ".join(names),
                )

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until everything queued has been binned (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._queue and not self._busy:
                    return
            time.sleep(0.005)

    def close(self) -> None:
        with self._lock:
            self._stopped = True
            self._wake.notify()
        self._thread.join(5)

    # -- reading (event-loop thread) ------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        """The JSON drift report: the reference, recent windows (newest last), open alerts, counters."""
        with self._windows_lock:
            closed = [report_dict(report) for _, report in self.windows.closed]
            current = {"window_id": self.windows.current.window_id, "rows": self.windows.current.rows}
        return {
            "model_name": self.model,
            "model_version": self.version,
            "reference_profile": {
                "sha256": self.profile.sha256,
                "features": list(self.profile.names),
                "features_detail": self._reference_detail,
            },
            "window_seconds": self.window_seconds,
            "windows": closed,
            "current": current,
            "alerts": sorted(name for name, on in self.alerts.items() if on),
            "rows": {"seen": self.rows_seen, "skipped": self.rows_skipped, "queued": self.rows_queued},
            "performance": self.performance.report() if self.performance is not None else [],
            "feedback": dict(self.pending.counts),
        }
