"""Tumbling windows of per-feature drift state, their reports, and merging across workers.

A :class:`WindowState` holds one histogram per profile feature for one window, plus the rows it
saw and counters of schema problems (a missing or extra column, a column that is not 1-D,
columns of different lengths, a batch stamped earlier than the open window). None of these
raise: they are counted and reported.

Batches come in two shapes:

* columns (:meth:`DriftWindows.observe`, :meth:`WindowState.update`): feature name -> 1-D
  column (array, list or tuple);
* tensors (:meth:`DriftWindows.observe_tensors`, :meth:`WindowState.update_tensors`): tensor
  name -> array, named as :func:`servecore.drift.monitor.tensor_columns` names them: a
  ``[rows]`` tensor is the feature ``name``, each element j of a ``[rows, ...]`` tensor's
  flattened row the feature ``name[j]``; 0-d tensors are skipped. The counts are those of
  ``observe(tensor_columns(tensors))``, but the numeric features of one tensor of two or more
  dimensions are binned by one block update (``NumericHistogram.update_block``: one pass, GIL
  released, float32 read as float32) instead of column by column.

:class:`DriftWindows` feeds batches into the open window and closes it:

* by time (``window_seconds=W``): the window id is ``floor(t / W)``; a batch stamped in a later
  slot closes the open window first (a window that saw no batch is dropped, not reported), so
  workers with synchronised clocks agree on ids. A batch stamped earlier than the open slot
  (clock skew) goes into the open window and is counted as ``late_batch``;
* by rows (``window_rows=N``): a window closes as soon as it holds N rows, a batch being split
  across windows where needed; ids are 0, 1, 2, ...;
* by both: whichever comes first, ids again 0, 1, 2, ...

Each close evaluates the window (:func:`servecore.drift.report.evaluate_feature`) and keeps it
in a ring of the last ``ring`` windows, from which :meth:`DriftWindows.sliding` sums any recent
run of windows exactly. Workers ship :meth:`WindowState.to_bytes` (cumulative, self-checking
snapshots carrying the profile's SHA-256 and the window id); an aggregator loads them with
:meth:`WindowState.from_bytes`, sums them with :func:`merge_states` (counts add exactly, Welford
triples merge by Chan's formula) and evaluates the sum with :meth:`DriftWindows.evaluate`.
"""

from __future__ import annotations

import math
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from servecore.drift import DriftCore, load_drift
from servecore.drift.checks import saturating_add
from servecore.drift.columns import as_column, numeric_values
from servecore.drift.errors import SnapshotError
from servecore.drift.profile import Feature, NumericFeature, ReferenceProfile
from servecore.drift.report import WindowReport, evaluate_feature
from servecore.drift.snapshot import KIND_WINDOW, frame, unframe
from servecore.drift.stats import DEFAULT_POLICY, DriftPolicy, Status
from servecore.drift.types import CategoricalState, HistogramState, NumericState

SCHEMA_COUNTERS = ("missing_column", "extra_column", "bad_shape", "length_mismatch", "late_batch")
_HEAD = struct.Struct("<32sqQ5QI")
_MAX_PLANS = 256


@dataclass(frozen=True, slots=True)
class _Block:
    """The features of one ``[rows, width]`` tensor of a batch (see :class:`_Plan`)."""

    tensor: int
    width: int
    #: (column, feature name) of the numeric features, and of the categorical ones
    numeric: tuple[tuple[int, str], ...]
    categorical: tuple[tuple[int, str], ...]


@dataclass(frozen=True, slots=True)
class _Plan:
    """How a batch of tensors of given names and widths maps onto the profile's features.

    It depends only on the profile and on the batch's ``(name, width)`` list (width -1 for a
    ``[rows]`` tensor), so :class:`DriftWindows` keeps one per such list for all its windows.
    A name given twice (a ``[rows]`` tensor ``x[0]`` and column 0 of a tensor ``x``) is read
    from the later tensor, as ``tensor_columns`` does.
    """

    extra: int
    missing: int
    #: (tensor, feature name) of the [rows] tensors that are features
    columns: tuple[tuple[int, str], ...]
    blocks: tuple[_Block, ...]
    #: the tensors that hold at least one feature (their rows must agree)
    sized: tuple[int, ...]


def _block_matrix(flat: np.ndarray) -> np.ndarray | None:
    """*flat* as the float32/float64 matrix a block update reads, or None (bool, object, ...).

    Float32 and float64 stay as they are (read in place); float16 becomes float32, other
    floats, ints and uints float64: the values :func:`~servecore.drift.columns.numeric_values`
    gives (float16 -> float32 -> float64 is exact).
    """
    dtype = flat.dtype
    if dtype.kind == "f":
        if dtype.type in (np.float32, np.float64) and dtype.isnative:
            return flat
        target = np.float32 if dtype.itemsize <= 4 else np.float64
    elif dtype.kind in "iu":
        target = np.float64
    else:
        return None
    with np.errstate(over="ignore"):
        return flat.astype(target)


def _new_state(feature: Feature, core: DriftCore) -> HistogramState:
    if isinstance(feature, NumericFeature):
        return core.NumericHistogram(np.asarray(feature.edges, dtype=np.float64))
    return core.CategoricalHistogram(feature.vocabulary)


class WindowState:
    """One window: a histogram per feature of *profile*, the rows seen and schema counters."""

    def __init__(
        self, profile: ReferenceProfile, *, core: DriftCore | None = None, window_id: int = 0
    ) -> None:
        self.profile = profile
        self.core = core if core is not None else load_drift()
        self.window_id = window_id
        self.rows = 0
        self.schema = dict.fromkeys(SCHEMA_COUNTERS, 0)
        self.states = {f.name: _new_state(f, self.core) for f in profile.features}
        # batch signature -> _Plan (update_tensors); DriftWindows shares one across its windows
        self._plans: dict[tuple[tuple[str, int], ...], _Plan] = {}

    def _count(self, event: str, n: int = 1) -> None:
        self.schema[event] = saturating_add(self.schema[event], n)

    def update(self, columns: Mapping[str, object]) -> None:
        """Count one batch: feature name -> 1-D column (array, list or tuple) of values."""
        extra = sum(1 for name in columns if name not in self.states)
        if extra:
            self._count("extra_column", extra)
        lengths = set()
        for feature in self.profile.features:
            if feature.name not in columns:
                self._count("missing_column")
                continue
            column = as_column(columns[feature.name])
            if column is None:
                self._count("bad_shape")
                continue
            lengths.add(column.size)
            self._feed(feature, column)
        if len(lengths) > 1:
            self._count("length_mismatch")
        self.rows = saturating_add(self.rows, max(lengths, default=0))

    def _feed(self, feature: Feature, column: np.ndarray) -> None:
        """Count one feature's 1-D *column* into its histogram."""
        state = self.states[feature.name]
        if isinstance(feature, NumericFeature):
            numeric = cast(NumericState, state)
            values, n_null, n_wrong = numeric_values(column)
            numeric.update(values)
            if n_null:
                numeric.count_null(n_null)
            if n_wrong:
                numeric.count_wrong_type(n_wrong)
        else:
            cast(CategoricalState, state).update(column)

    def _plan(self, signature: tuple[tuple[str, int], ...]) -> _Plan:
        plan = self._plans.get(signature)
        if plan is not None:
            return plan
        sources: dict[str, tuple[int, int]] = {}  # name -> (tensor, column; -1 for [rows])
        for t, (name, width) in enumerate(signature):
            if width < 0:
                sources[name] = (t, -1)
            else:
                sources.update({f"{name}[{j}]": (t, j) for j in range(width)})
        features = {f.name: f for f in self.profile.features}
        columns = []
        numeric: dict[int, list[tuple[int, str]]] = {}
        categorical: dict[int, list[tuple[int, str]]] = {}
        for name, (t, j) in sources.items():
            feature = features.get(name)
            if feature is None:
                continue
            if j < 0:
                columns.append((t, name))
            elif isinstance(feature, NumericFeature):
                numeric.setdefault(t, []).append((j, name))
            else:
                categorical.setdefault(t, []).append((j, name))
        blocks = tuple(
            _Block(t, signature[t][1], tuple(numeric.get(t, ())), tuple(categorical.get(t, ())))
            for t in sorted({*numeric, *categorical})
        )
        sized = sorted({t for t, _ in columns} | {b.tensor for b in blocks})
        given = sum(1 for name in sources if name in features)
        plan = _Plan(
            extra=len(sources) - given,
            missing=len(features) - given,
            columns=tuple(columns),
            blocks=blocks,
            sized=tuple(sized),
        )
        if len(self._plans) >= _MAX_PLANS:  # e.g. a tensor whose width varies per request
            self._plans.clear()
        self._plans[signature] = plan
        return plan

    def update_tensors(self, tensors: Mapping[str, object]) -> None:
        """Count one batch of tensors (see the module docstring for the names).

        Exactly the counts and counters of ``update(tensor_columns(tensors))``; the numeric
        features of each tensor of two or more dimensions go through one block update.
        """
        arrays = []
        signature = []
        for name, value in tensors.items():
            array = np.asarray(value)
            if array.ndim == 0:
                continue
            if array.ndim > 1:
                array = array.reshape(array.shape[0], math.prod(array.shape[1:]))
            arrays.append(array)
            signature.append((name, array.shape[1] if array.ndim > 1 else -1))
        plan = self._plan(tuple(signature))
        if plan.extra:
            self._count("extra_column", plan.extra)
        if plan.missing:
            self._count("missing_column", plan.missing)
        for t, feature_name in plan.columns:
            self._feed(self.profile.feature(feature_name), arrays[t])
        block_update = getattr(self.core.NumericHistogram, "update_block", None)
        for block in plan.blocks:
            flat = arrays[block.tensor]
            matrix = _block_matrix(flat) if block.numeric and block_update is not None else None
            if matrix is not None and block_update is not None:
                hists: list[Any] = [None] * block.width
                for j, feature_name in block.numeric:
                    hists[j] = self.states[feature_name]
                block_update(matrix, hists)
            else:
                for j, feature_name in block.numeric:
                    self._feed(self.profile.feature(feature_name), flat[:, j])
            for j, feature_name in block.categorical:
                self._feed(self.profile.feature(feature_name), flat[:, j])
        lengths = {arrays[t].shape[0] for t in plan.sized}
        if len(lengths) > 1:
            self._count("length_mismatch")
        self.rows = saturating_add(self.rows, max(lengths, default=0))

    def merge(self, other: WindowState) -> None:
        """Add *other* (same profile and window id) into this window; *other* is unchanged."""
        if other.profile.sha256 != self.profile.sha256:
            raise ValueError("cannot merge windows of different reference profiles")
        if other.window_id != self.window_id:
            raise ValueError(f"cannot merge window {other.window_id} into {self.window_id}")
        self._add(other)

    def _add(self, other: WindowState) -> None:
        """Add *other*'s counts and states, whatever its window id."""
        for name, state in self.states.items():
            cast(Any, state).merge(other.states[name])
        for event in SCHEMA_COUNTERS:
            self._count(event, other.schema[event])
        self.rows = saturating_add(self.rows, other.rows)

    def to_bytes(self) -> bytes:
        """A cumulative snapshot of the window (profile hash, id, counters, every histogram)."""
        parts = [_HEAD.pack(bytes.fromhex(self.profile.sha256), self.window_id, self.rows,
                            *(self.schema[e] for e in SCHEMA_COUNTERS), len(self.states))]
        for name, state in self.states.items():
            raw_name, snap = name.encode("utf-8", "surrogatepass"), state.to_bytes()
            parts.append(struct.pack("<I", len(raw_name)) + raw_name)
            parts.append(struct.pack("<I", len(snap)) + snap)
        return frame(KIND_WINDOW, b"".join(parts))

    @classmethod
    def from_bytes(
        cls, data: bytes | bytearray | memoryview, profile: ReferenceProfile, *,
        core: DriftCore | None = None,
    ) -> WindowState:
        """The window a snapshot holds, checked against *profile*.

        :raises SnapshotError: a torn or corrupt snapshot, another format version, another
            profile, or histograms whose layout is not the profile's.
        """
        body = unframe(data, KIND_WINDOW)
        if len(body) < _HEAD.size:
            raise SnapshotError("window snapshot body is too short")
        sha, window_id, rows, *counters, n = _HEAD.unpack_from(body)
        if sha.hex() != profile.sha256:
            raise SnapshotError(
                f"window snapshot is of reference profile {sha.hex()}, not {profile.sha256}"
            )
        window = cls(profile, core=core, window_id=window_id)
        window.rows = rows
        window.schema = dict(zip(SCHEMA_COUNTERS, counters))
        pos, names = _HEAD.size, []
        for _ in range(n):
            raw_name, pos = _chunk(body, pos)
            snap, pos = _chunk(body, pos)
            name = raw_name.decode("utf-8", "surrogatepass")
            names.append(name)
            if name in window.states:
                window.states[name] = _load_state(profile.feature(name), snap, window.core)
        if pos != len(body) or names != list(profile.names):
            raise SnapshotError("window snapshot does not hold exactly the profile's features")
        return window


def _chunk(body: memoryview, pos: int) -> tuple[bytes, int]:
    if pos + 4 > len(body):
        raise SnapshotError("window snapshot body is too short")
    (size,) = struct.unpack_from("<I", body, pos)
    end = pos + 4 + size
    if end > len(body):
        raise SnapshotError("window snapshot body is too short")
    return bytes(body[pos + 4 : end]), end


def _load_state(feature: Feature, snap: bytes, core: DriftCore) -> HistogramState:
    try:
        if isinstance(feature, NumericFeature):
            numeric = core.NumericHistogram.from_bytes(snap)
            if numeric.edges.tolist() != list(feature.edges):
                raise SnapshotError("edges differ from the profile's")
            return numeric
        categorical = core.CategoricalHistogram.from_bytes(snap)
        if categorical.vocabulary != feature.vocabulary:
            raise SnapshotError("vocabulary differs from the profile's")
        return categorical
    except SnapshotError as exc:
        raise SnapshotError(f"window snapshot, feature {feature.name!r}: {exc}") from None


def merge_states(states: Iterable[WindowState]) -> WindowState:
    """The sum of *states* (same profile, same window id) as a new window; they are unchanged."""
    items = list(states)
    if not items:
        raise ValueError("merge_states needs at least one window")
    first = items[0]
    total = WindowState(first.profile, core=first.core, window_id=first.window_id)
    for item in items:
        total.merge(item)
    return total


class DriftWindows:
    """The windows of one (model version, reference profile): the open one and a ring of closed.

    :param window_seconds: W, close windows at multiples of W seconds (ids ``floor(t / W)``).
    :param window_rows: N, close a window once it holds N rows.
    :param ring: how many closed windows (states and reports) to keep.
    :param clock: the time source when :meth:`observe` / :meth:`poll` are given no ``now``.
    """

    def __init__(
        self,
        profile: ReferenceProfile,
        *,
        window_seconds: float | None = None,
        window_rows: int | None = None,
        ring: int = 24,
        policy: DriftPolicy = DEFAULT_POLICY,
        core: DriftCore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if window_seconds is None and window_rows is None:
            raise ValueError("give window_seconds, window_rows or both")
        if window_seconds is not None and not (0 < window_seconds < math.inf):
            raise ValueError(f"window_seconds must be positive, got {window_seconds!r}")
        if window_rows is not None and (type(window_rows) is not int or window_rows < 1):
            raise ValueError(f"window_rows must be a positive int, got {window_rows!r}")
        if type(ring) is not int or ring < 1:
            raise ValueError(f"ring must be a positive int, got {ring!r}")
        self.profile = profile
        self.policy = policy
        self.core = core if core is not None else load_drift()
        self._seconds, self._rows, self._clock = window_seconds, window_rows, clock
        self._slot: int | None = None
        self._current = WindowState(profile, core=self.core)
        self._plans = self._current._plans  # shared by every window this one opens
        self._fresh = True  # no batch in the open window yet
        self._ring: deque[tuple[WindowState, WindowReport]] = deque(maxlen=ring)
        self._history = {name: deque[Status](maxlen=policy.m) for name in profile.names}

    @property
    def current(self) -> WindowState:
        """The open window."""
        return self._current

    @property
    def closed(self) -> tuple[tuple[WindowState, WindowReport], ...]:
        """The closed windows kept, oldest first, with their reports."""
        return tuple(self._ring)

    def observe(
        self, columns: Mapping[str, object], *, now: float | None = None
    ) -> list[WindowReport]:
        """Count one batch (name -> 1-D column); the reports of the windows it closed."""
        reports = self._advance(self._seconds, now) if self._seconds is not None else []
        if self._rows is None:
            self._current.update(columns)
            self._fresh = False
            return reports
        converted = {name: as_column(value) for name, value in columns.items()}
        total = max((c.size for c in converted.values() if c is not None), default=0)

        def chunk(start: int, take: int) -> None:
            part: dict[str, object] = {}
            for name, value in columns.items():
                column = converted[name]
                if column is not None:
                    part[name] = column[start : start + take]
                elif start == 0:
                    part[name] = value  # not 1-D: counted once, in the first chunk
            self._current.update(part)

        return reports + self._split(total, chunk)

    def observe_tensors(
        self, tensors: Mapping[str, object], *, now: float | None = None
    ) -> list[WindowReport]:
        """Count one batch of tensors; the reports of the windows it closed.

        *tensors* maps a tensor name to an array (``np.asarray`` is applied): a ``[rows]``
        tensor is the feature ``name``, a ``[rows, ...]`` tensor the features ``name[j]`` of
        its flattened rows (:func:`servecore.drift.monitor.tensor_columns`' names), a 0-d one
        is skipped. The windows, counts and reports are those of
        ``observe(tensor_columns(tensors))``; the numeric features of each tensor of two or
        more dimensions are binned by one block update (float32 read in place).
        """
        reports = self._advance(self._seconds, now) if self._seconds is not None else []
        arrays = {name: np.asarray(value) for name, value in tensors.items()}
        arrays = {name: array for name, array in arrays.items() if array.ndim > 0}
        if self._rows is None:
            self._current.update_tensors(arrays)
            self._fresh = False
            return reports
        total = max((array.shape[0] for array in arrays.values()), default=0)

        def chunk(start: int, take: int) -> None:
            self._current.update_tensors(
                {name: array[start : start + take] for name, array in arrays.items()}
            )

        return reports + self._split(total, chunk)

    def _split(self, total: int, feed: Callable[[int, int], None]) -> list[WindowReport]:
        """Feed rows ``0..total-1`` as ``feed(start, take)`` chunks, closing full windows."""
        rows = cast(int, self._rows)
        reports = []
        start = 0
        while True:
            take = min(rows - self._current.rows, total - start)
            feed(start, take)
            self._fresh = False
            start += take
            if self._current.rows >= rows:
                reports.append(self.close())
            if start >= total:
                return reports

    def poll(self, *, now: float | None = None) -> WindowReport | None:
        """Close the open window if its time slot is over (a timer's call); its report."""
        if self._seconds is None:
            return None
        reports = self._advance(self._seconds, now)
        return reports[0] if reports else None

    def _advance(self, seconds: float, now: float | None) -> list[WindowReport]:
        """Move to the time slot of *now*, closing the open window when the slot changed."""
        slot = math.floor((self._clock() if now is None else now) / seconds)
        if self._slot is None or slot > self._slot:
            report = None if self._fresh or self._slot is None else self.close()
            self._slot = slot
            if self._rows is None:
                self._current.window_id = slot
            return [] if report is None else [report]
        if slot < self._slot:
            self._current._count("late_batch")
        return []

    def close(self) -> WindowReport:
        """Close the open window now: evaluate it, keep it in the ring, open the next one."""
        closed = self._current
        report = self.evaluate(closed)
        self._current = WindowState(self.profile, core=self.core, window_id=closed.window_id + 1)
        self._current._plans = self._plans
        self._fresh = True
        return report

    def evaluate(self, state: WindowState) -> WindowReport:
        """Report on *state* (e.g. the merge of every worker's window) and keep it in the ring."""
        n_features = len(self.profile.features)
        features = []
        for feature in self.profile.features:
            history = self._history[feature.name]
            report = evaluate_feature(feature, state.states[feature.name], n_features=n_features,
                                      policy=self.policy, history=tuple(history))
            if report.status != "insufficient":
                history.append(report.status)
            features.append(report)
        window = WindowReport(
            window_id=state.window_id, rows=state.rows, profile_sha256=self.profile.sha256,
            features=tuple(features), schema=dict(state.schema),
            alpha_per_feature=self.policy.alpha / max(n_features, 1),
        )
        self._ring.append((state, window))
        return window

    def sliding(self, k: int) -> WindowState:
        """The exact sum of the last *k* closed windows (at most the ring), as one state."""
        recent = [state for state, _ in list(self._ring)[-k:]] if k > 0 else []
        if not recent:
            raise ValueError("no closed window to sum")
        total = WindowState(self.profile, core=self.core, window_id=recent[-1].window_id)
        for state in recent:
            total._add(state)
        return total
