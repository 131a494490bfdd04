"""Model performance from delayed labels: a bounded table of predictions waiting for their label,
and per-window classification (accuracy, sensitivity, specificity, precision, each with a Wilson
interval) or regression (MAE, RMSE) figures.

Nothing is dropped silently: a label for an unknown request, a second label for the same request,
a label that comes after the prediction's time to live, and predictions pushed out of a full
table are each counted.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from servecore.drift.stats import wilson_interval

#: the outcomes of a label, counted by :class:`PendingTable`
LABEL_OUTCOMES = ("joined", "unknown", "duplicate", "late", "mismatch")


@dataclass(slots=True)
class Pending:
    """The predictions of one request (one per row), waiting for their labels."""

    predictions: tuple[Any, ...]
    at: float


class PendingTable:
    """Predictions by request id, at most *max_entries* for at most *ttl_s* seconds.

    A full table evicts its oldest entry (counted as ``evicted``); an entry older than the TTL is
    removed when met (its label, if it comes, is ``late``). Ids already joined or expired are
    remembered (as many as the table holds) so that a second or late label is told apart from an
    unknown one.
    """

    def __init__(self, *, max_entries: int = 100_000, ttl_s: float = 86_400.0, clock: Callable[[], float] = time.monotonic) -> None:
        if max_entries < 1 or ttl_s <= 0:
            raise ValueError("max_entries and ttl_s must be positive")
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._clock = clock
        self._entries: OrderedDict[str, Pending] = OrderedDict()
        self._joined: OrderedDict[str, None] = OrderedDict()
        self._expired: OrderedDict[str, None] = OrderedDict()
        self.counts: dict[str, int] = dict.fromkeys((*LABEL_OUTCOMES, "evicted", "expired", "predictions", "duplicate_ids"), 0)

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, request_id: str, predictions: Sequence[Any]) -> None:
        """Remember the predictions of *request_id* (a repeated id replaces the older entry)."""
        now = self._clock()
        self._expire(now)
        if request_id in self._entries:
            self.counts["duplicate_ids"] += 1
            del self._entries[request_id]
        self._entries[request_id] = Pending(tuple(predictions), now)
        self.counts["predictions"] += 1
        while len(self._entries) > self.max_entries:
            old, _ = self._entries.popitem(last=False)
            self._remember(self._expired, old)
            self.counts["evicted"] += 1

    def take(self, request_id: str) -> tuple[str, Pending | None]:
        """The outcome of a label for *request_id* and, when ``joined``, its predictions."""
        self._expire(self._clock())
        entry = self._entries.pop(request_id, None)
        if entry is not None:
            self._remember(self._joined, request_id)
            return self._count("joined"), entry
        if request_id in self._joined:
            return self._count("duplicate"), None
        if request_id in self._expired:
            return self._count("late"), None
        return self._count("unknown"), None

    def count(self, outcome: str) -> None:
        self._count(outcome)

    def _count(self, outcome: str) -> str:
        self.counts[outcome] += 1
        return outcome

    def _expire(self, now: float) -> None:
        while self._entries:
            request_id, entry = next(iter(self._entries.items()))
            if now - entry.at <= self.ttl_s:
                return
            del self._entries[request_id]
            self._remember(self._expired, request_id)
            self.counts["expired"] += 1

    def _remember(self, seen: OrderedDict[str, None], request_id: str) -> None:
        seen[request_id] = None
        while len(seen) > self.max_entries:
            seen.popitem(last=False)


def _interval(successes: int, n: int) -> dict[str, Any]:
    """A proportion with its Wilson interval; ``value`` is None (undefined) when n is 0."""
    low, high = wilson_interval(successes, n)
    if n == 0:
        return {"value": None, "low": None, "high": None, "n": 0}
    return {"value": successes / n, "low": low, "high": high, "n": n}


@dataclass
class ClassificationWindow:
    """A confusion matrix (true label -> predicted label -> count) for one window."""

    positive: str | None = None
    matrix: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, truth: str, predicted: str) -> None:
        row = self.matrix.setdefault(truth, {})
        row[predicted] = row.get(predicted, 0) + 1

    @property
    def n(self) -> int:
        return sum(sum(row.values()) for row in self.matrix.values())

    def report(self) -> dict[str, Any]:
        """accuracy always; sensitivity (recall), specificity and precision for the positive class."""
        n = self.n
        correct = sum(row.get(truth, 0) for truth, row in self.matrix.items())
        labels = sorted({*self.matrix, *(p for row in self.matrix.values() for p in row)})
        positive = self.positive if self.positive is not None else (labels[-1] if len(labels) == 2 else None)
        out: dict[str, Any] = {"task": "classification", "n": n, "accuracy": _interval(correct, n)}
        if positive is not None:
            tp = self.matrix.get(positive, {}).get(positive, 0)
            fn = sum(self.matrix.get(positive, {}).values()) - tp
            fp = sum(row.get(positive, 0) for truth, row in self.matrix.items() if truth != positive)
            tn = n - tp - fn - fp
            out.update(
                positive_class=positive,
                sensitivity=_interval(tp, tp + fn),
                specificity=_interval(tn, tn + fp),
                precision=_interval(tp, tp + fp),
                confusion={"tp": tp, "fn": fn, "fp": fp, "tn": tn},
            )
        return out


@dataclass
class RegressionWindow:
    """Absolute and squared errors of one window, with a compensated sum."""

    n: int = 0
    abs_sum: float = 0.0
    sq_sum: float = 0.0

    def add(self, truth: float, predicted: float) -> None:
        error = predicted - truth
        self.n += 1
        self.abs_sum = math.fsum((self.abs_sum, abs(error)))
        self.sq_sum = math.fsum((self.sq_sum, error * error))

    def report(self) -> dict[str, Any]:
        if self.n == 0:
            return {"task": "regression", "n": 0, "mae": None, "rmse": None}
        return {"task": "regression", "n": self.n, "mae": self.abs_sum / self.n, "rmse": math.sqrt(self.sq_sum / self.n)}


class PerformanceWindows:
    """Per-window performance of one model version, by time (window id = floor(t / W))."""

    def __init__(
        self, task: str, *, window_seconds: float, ring: int = 24, positive: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if task not in ("classification", "regression"):
            raise ValueError(f"task must be classification or regression, not {task!r}")
        self.task = task
        self.positive = positive
        self.window_seconds = window_seconds
        self._clock = clock
        self._slot: int | None = None
        self._open: ClassificationWindow | RegressionWindow = self._new()
        self._ring: deque[tuple[int, dict[str, Any]]] = deque(maxlen=ring)

    def _new(self) -> ClassificationWindow | RegressionWindow:
        return ClassificationWindow(self.positive) if self.task == "classification" else RegressionWindow()

    def _advance(self) -> None:
        slot = math.floor(self._clock() / self.window_seconds)
        if self._slot is None:
            self._slot = slot
        elif slot > self._slot:
            if self._open.n:
                self._ring.append((self._slot, self._open.report()))
            self._slot, self._open = slot, self._new()

    def add(self, truth: Any, predicted: Any) -> None:
        """One labelled prediction (raises ValueError for a label of the wrong kind)."""
        self._advance()
        if isinstance(self._open, ClassificationWindow):
            self._open.add(label_key(truth), label_key(predicted))
        else:
            if isinstance(truth, bool) or not isinstance(truth, (int, float)) or not math.isfinite(truth):
                raise ValueError(f"a regression label must be a finite number, not {truth!r}")
            self._open.add(float(truth), float(predicted))

    def report(self) -> list[dict[str, Any]]:
        """The closed windows (oldest first) and the open one, each with its window id."""
        self._advance()
        windows = [{"window": slot, "closed": True, **report} for slot, report in self._ring]
        if self._slot is not None:
            windows.append({"window": self._slot, "closed": False, **self._open.report()})
        return windows

    def latest(self) -> dict[str, Any] | None:
        """The open window's figures, or the last closed window's when the open one is empty."""
        self._advance()
        if self._open.n or not self._ring:
            return self._open.report() if self._open.n else None
        return self._ring[-1][1]


def label_key(value: Any) -> str:
    """A class label as text: numbers without a trailing ``.0``, bytes decoded, booleans lower case."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if hasattr(value, "item"):  # numpy scalar
        return label_key(value.item())
    return str(value)
