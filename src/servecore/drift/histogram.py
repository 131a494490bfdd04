"""Reference per-window drift state: fixed-edge histograms with counters. Pure Python/NumPy.

This module is the specification; :mod:`servecore._native.drift` is the compiled twin with the
same interface, counts, snapshot bytes and errors (the statistics ``mean`` and ``m2`` agree to
rounding: both take a two-pass mean and M2 shifted by the first value and fold it in with
Chan's formula, this twin per batch, the compiled one per chunk of a few thousand values).

:class:`NumericHistogramPy` keeps, for the B+1 reference edges ``e[0] < ... < e[B]``, B+2 counts:
index 0 is the underflow (``x < e[0]``), index i in 1..B is the bin ``e[i-1] <= x < e[i]`` (the
last one closed: ``e[B-1] <= x <= e[B]``), and index B+1 the overflow (``x > e[B]``). ``-0.0``
bins as ``0.0``; subnormals bin by value. NaN, +inf and -inf are counted apart and never binned;
so are missing values and wrong types, which the caller finds while converting a column to
float64 and reports through :meth:`count_null` and :meth:`count_wrong_type`. The finite values
also feed ``n``, ``mean``, ``m2`` (the sum of squared deviations) and ``min``/``max``
(``+inf``/``-inf`` while ``n == 0``; ``-0.0`` is reported as ``0.0``).

:class:`CategoricalHistogramPy` keeps K+2 counts for a vocabulary of K keys: the keys, then
``__other__`` (a value outside the vocabulary), then null (None, NaN, the empty string). Values
become keys through :func:`servecore.drift.keys.category_key`; wrong types are counted apart.

Every counter is a uint64 that saturates at 2**64-1 instead of wrapping. Each state merges with
another of the same layout (:meth:`merge`: counts add, the Welford triples merge by Chan's
formula, min/max combine), so per-worker states sum exactly to one process's counts. A state is
not thread-safe (the compiled one releases the GIL while it counts): keep one per thread and
merge. The argument checks and counter arithmetic live in :mod:`servecore.drift.checks`.

:func:`update_block` counts the columns of one 2-D float32/float64 matrix ``[rows, d]`` into d
numeric histograms (None skips a column): exactly ``histograms[j].update(matrix[:, j]`` as
float64``)`` for each j. The compiled twin does it in one pass over the rows without a copy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from servecore.drift.checks import (
    as_sequence,
    chan_merge,
    check_count,
    check_edges,
    check_values,
    check_vocabulary,
    layout_mismatch,
    saturating_add,
)
from servecore.drift.keys import Special, category_key
from servecore.drift.snapshot import (
    UINT64_MAX,
    pack_categorical,
    pack_numeric,
    unpack_categorical,
    unpack_numeric,
)
from servecore.drift.types import CategoricalState, NumericState

_MAX = np.uint64(UINT64_MAX)


def _add_counts(counts: np.ndarray, add: np.ndarray) -> np.ndarray:
    """``counts + add`` elementwise on uint64, saturating."""
    total: np.ndarray = counts + add
    total[total < counts] = _MAX
    return total


# --------------------------------------------------------------------------------------------
# Numeric


class NumericHistogramPy:
    """Counts over fixed reference edges, missing/non-finite counters, Welford and min/max.

    :param edges: the B+1 bin edges (finite, strictly increasing; B >= 1).
    """

    __slots__ = (
        "_counts",
        "_edges",
        "_m2",
        "_max",
        "_mean",
        "_min",
        "_n",
        "_n_nan",
        "_n_ninf",
        "_n_null",
        "_n_pinf",
        "_n_wrongtype",
    )

    def __init__(self, edges: Sequence[float] | np.ndarray) -> None:
        self._edges = check_edges(edges)
        self._counts = np.zeros(self._edges.size + 1, dtype=np.uint64)
        self.reset()

    def reset(self) -> None:
        """Forget every value: counts, counters and statistics back to zero."""
        self._counts[:] = 0
        self._n_nan = self._n_pinf = self._n_ninf = self._n_null = self._n_wrongtype = 0
        self._n = 0
        self._mean = self._m2 = 0.0
        self._min, self._max = math.inf, -math.inf

    def update(self, values: np.ndarray) -> None:
        """Count *values* (a 1-D float64 array; convert other dtypes before calling)."""
        x = check_values(values)
        if x.size == 0:
            return
        finite_mask = np.isfinite(x)
        finite = x if finite_mask.all() else x[finite_mask]
        bad = x.size - finite.size
        if bad:
            nan = int(np.count_nonzero(np.isnan(x)))
            pinf = int(np.count_nonzero(x == np.inf))
            self._n_nan = saturating_add(self._n_nan, nan)
            self._n_pinf = saturating_add(self._n_pinf, pinf)
            self._n_ninf = saturating_add(self._n_ninf, bad - nan - pinf)
        if finite.size == 0:
            return
        edges = self._edges
        idx = np.searchsorted(edges, finite, side="right")
        idx -= finite == edges[-1]  # the last bin is closed on the right
        add = np.bincount(idx, minlength=self._counts.size).astype(np.uint64)
        self._counts = _add_counts(self._counts, add)
        self._fold(finite)

    def _fold(self, finite: np.ndarray) -> None:
        """Fold the finite values of one batch into the Welford triple and min/max."""
        room = UINT64_MAX - self._n
        welford = finite if finite.size <= room else finite[:room]  # n saturates
        if welford.size:
            # two passes on values shifted by the first one: exact for a constant batch, and
            # free of the rounding of the magnitude (sums of big values round past 2**53)
            shift = float(welford[0])
            with np.errstate(over="ignore", invalid="ignore"):
                deviations = welford - shift
                mean_d = float(deviations.mean())
                m2_b = float(np.square(deviations - mean_d).sum())
                mean_b = shift + mean_d
            self._n, self._mean, self._m2 = chan_merge(
                self._n, self._mean, self._m2, int(welford.size), mean_b, m2_b
            )
        self._min = min(self._min, float(finite.min()) + 0.0)
        self._max = max(self._max, float(finite.max()) + 0.0)

    def count_null(self, n: int) -> None:
        """Count *n* missing values (None/NULL) the caller found in the column."""
        self._n_null = saturating_add(self._n_null, check_count(n))

    def count_wrong_type(self, n: int) -> None:
        """Count *n* values of a wrong type (a string, a bool) the caller found in the column."""
        self._n_wrongtype = saturating_add(self._n_wrongtype, check_count(n))

    def merge(self, other: NumericState) -> None:
        """Add *other*'s state (same edges) into this one; *other* is unchanged."""
        if not isinstance(other, NumericHistogramPy):
            raise TypeError(f"cannot merge {type(other).__name__} into NumericHistogramPy")
        if not np.array_equal(self._edges, other._edges):
            raise layout_mismatch("edges")
        self._counts = _add_counts(self._counts, other._counts)
        self._n_nan = saturating_add(self._n_nan, other._n_nan)
        self._n_pinf = saturating_add(self._n_pinf, other._n_pinf)
        self._n_ninf = saturating_add(self._n_ninf, other._n_ninf)
        self._n_null = saturating_add(self._n_null, other._n_null)
        self._n_wrongtype = saturating_add(self._n_wrongtype, other._n_wrongtype)
        self._n, self._mean, self._m2 = chan_merge(
            self._n, self._mean, self._m2, other._n, other._mean, other._m2
        )
        self._min = min(self._min, other._min)
        self._max = max(self._max, other._max)

    def to_bytes(self) -> bytes:
        """A snapshot of the state (see :mod:`servecore.drift.snapshot`)."""
        return pack_numeric(
            self._edges,
            self._counts,
            (self._n_nan, self._n_pinf, self._n_ninf, self._n_null, self._n_wrongtype, self._n),
            (self._mean, self._m2, self._min, self._max),
        )

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> NumericHistogramPy:
        """The state a snapshot holds; :class:`~servecore.drift.errors.SnapshotError` if bad."""
        snap = unpack_numeric(data)
        hist = cls(snap.edges)
        hist._counts = snap.counts.astype(np.uint64)
        hist._n_nan, hist._n_pinf, hist._n_ninf = snap.n_nan, snap.n_pinf, snap.n_ninf
        hist._n_null, hist._n_wrongtype, hist._n = snap.n_null, snap.n_wrongtype, snap.n
        hist._mean, hist._m2, hist._min, hist._max = snap.mean, snap.m2, snap.min, snap.max
        return hist

    @staticmethod
    def update_block(matrix: np.ndarray, histograms: Sequence[NumericState | None]) -> None:
        """Count each column of *matrix* into its histogram: see :func:`update_block`."""
        update_block(matrix, histograms)

    @property
    def edges(self) -> np.ndarray:
        """The B+1 edges (a copy)."""
        return self._edges.copy()

    @property
    def counts(self) -> np.ndarray:
        """The B+2 counts: underflow, the B bins, overflow (uint64, a copy)."""
        return self._counts.copy()

    @property
    def n_nan(self) -> int:
        """NaN values seen."""
        return self._n_nan

    @property
    def n_pinf(self) -> int:
        """+inf values seen."""
        return self._n_pinf

    @property
    def n_ninf(self) -> int:
        """-inf values seen."""
        return self._n_ninf

    @property
    def n_null(self) -> int:
        """Missing values reported by :meth:`count_null`."""
        return self._n_null

    @property
    def n_wrongtype(self) -> int:
        """Wrong-type values reported by :meth:`count_wrong_type`."""
        return self._n_wrongtype

    @property
    def n(self) -> int:
        """Finite values seen (the binned ones)."""
        return self._n

    @property
    def mean(self) -> float:
        """Mean of the finite values (0.0 when there are none)."""
        return self._mean

    @property
    def m2(self) -> float:
        """Sum of squared deviations from the mean of the finite values."""
        return self._m2

    @property
    def min(self) -> float:
        """Smallest finite value (+inf when there are none)."""
        return self._min

    @property
    def max(self) -> float:
        """Largest finite value (-inf when there are none)."""
        return self._max


# --------------------------------------------------------------------------------------------
# Blocks


def check_block(matrix: object, histograms: object, cls: type[Any]) -> tuple[np.ndarray, list[Any]]:
    """``(matrix, histograms as a list)`` checked for :func:`update_block` (both twins use it).

    *matrix* must be a 2-D float32 or float64 array in native byte order (TypeError), and
    *histograms* a sequence of one entry per column (ValueError), each an instance of *cls* or
    None (TypeError), no histogram twice (ValueError).
    """
    if (
        not isinstance(matrix, np.ndarray)
        or matrix.ndim != 2
        or matrix.dtype.type not in (np.float32, np.float64)
        or not matrix.dtype.isnative
    ):
        what = (
            f"{matrix.dtype} array of shape {matrix.shape}"
            if isinstance(matrix, np.ndarray)
            else type(matrix).__name__
        )
        raise TypeError(f"matrix must be a 2-D float32 or float64 numpy array, got {what}")
    if isinstance(histograms, (str, bytes)) or not isinstance(histograms, Sequence):
        raise TypeError(
            f"histograms must be a sequence of histograms, got {type(histograms).__name__}"
        )
    hists = list(histograms)
    if len(hists) != matrix.shape[1]:
        raise ValueError(f"{len(hists)} histograms for a matrix of {matrix.shape[1]} columns")
    seen: set[int] = set()
    for j, hist in enumerate(hists):
        if hist is None:
            continue
        if not isinstance(hist, cls):
            raise TypeError(f"histograms[{j}] is a {type(hist).__name__}, not a {cls.__name__}")
        if id(hist) in seen:
            raise ValueError(f"histograms[{j}] is given twice")
        seen.add(id(hist))
    return matrix, hists


def update_block(matrix: np.ndarray, histograms: Sequence[NumericState | None]) -> None:
    """Count column j of *matrix* into ``histograms[j]`` (None: the column is skipped).

    :param matrix: a 2-D float32 or float64 array ``[rows, d]`` (native byte order, any
        strides).
    :param histograms: d entries, each a :class:`NumericHistogramPy` or None; no histogram twice.

    Each column is counted as ``histograms[j].update(matrix[:, j].astype(np.float64))`` (the
    float32 -> float64 conversion is exact, so float32 values bin by their own value).
    """
    arr, hists = check_block(matrix, histograms, NumericHistogramPy)
    if arr.shape[0] == 0:
        return
    for j, hist in enumerate(hists):
        if hist is not None:
            hist.update(arr[:, j].astype(np.float64))


# --------------------------------------------------------------------------------------------
# Categorical


class CategoricalHistogramPy:
    """Counts of vocabulary keys, ``__other__`` and null, plus a wrong-type counter.

    :param vocabulary: the K reference keys (distinct, non-empty, normalised).
    """

    __slots__ = ("_counts", "_index", "_n_wrongtype", "_vocabulary")

    def __init__(self, vocabulary: Sequence[str]) -> None:
        self._vocabulary = check_vocabulary(vocabulary)
        self._index = {key: i for i, key in enumerate(self._vocabulary)}
        self._counts = np.zeros(len(self._vocabulary) + 2, dtype=np.uint64)
        self._n_wrongtype = 0

    def reset(self) -> None:
        """Forget every value."""
        self._counts[:] = 0
        self._n_wrongtype = 0

    def update(self, values: np.ndarray | Sequence[object]) -> None:
        """Count *values*: a 1-D array of any dtype (str, object, ints, ...), a list or tuple."""
        k = len(self._vocabulary)
        index = self._index
        add = [0] * (k + 2)
        wrong = 0
        for value in as_sequence(values):
            if type(value) is str:
                hit = index.get(value)
                if hit is not None:
                    add[hit] += 1
                    continue
            key = category_key(value)
            if type(key) is str:
                add[index.get(key, k)] += 1
            elif key is Special.NULL:
                add[k + 1] += 1
            else:
                wrong += 1
        counts = self._counts
        for i, extra in enumerate(add):
            if extra:
                counts[i] = saturating_add(int(counts[i]), extra)
        self._n_wrongtype = saturating_add(self._n_wrongtype, wrong)

    def count_null(self, n: int) -> None:
        """Count *n* missing values found by the caller."""
        i = len(self._vocabulary) + 1
        self._counts[i] = saturating_add(int(self._counts[i]), check_count(n))

    def count_wrong_type(self, n: int) -> None:
        """Count *n* values of a wrong type found by the caller."""
        self._n_wrongtype = saturating_add(self._n_wrongtype, check_count(n))

    def merge(self, other: CategoricalState) -> None:
        """Add *other*'s state (same vocabulary) into this one; *other* is unchanged."""
        if not isinstance(other, CategoricalHistogramPy):
            raise TypeError(f"cannot merge {type(other).__name__} into CategoricalHistogramPy")
        if self._vocabulary != other._vocabulary:
            raise layout_mismatch("vocabularies")
        self._counts = _add_counts(self._counts, other._counts)
        self._n_wrongtype = saturating_add(self._n_wrongtype, other._n_wrongtype)

    def to_bytes(self) -> bytes:
        """A snapshot of the state (see :mod:`servecore.drift.snapshot`)."""
        return pack_categorical(self._vocabulary, self._counts, self._n_wrongtype)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> CategoricalHistogramPy:
        """The state a snapshot holds; :class:`~servecore.drift.errors.SnapshotError` if bad."""
        snap = unpack_categorical(data)
        hist = cls(snap.vocabulary)
        hist._counts = snap.counts.astype(np.uint64)
        hist._n_wrongtype = snap.n_wrongtype
        return hist

    @property
    def vocabulary(self) -> tuple[str, ...]:
        """The K keys."""
        return self._vocabulary

    @property
    def counts(self) -> np.ndarray:
        """The K+2 counts: the keys, ``__other__``, null (uint64, a copy)."""
        return self._counts.copy()

    @property
    def n_other(self) -> int:
        """Values outside the vocabulary."""
        return int(self._counts[-2])

    @property
    def n_null(self) -> int:
        """Missing values (None, NaN, empty strings, and those from :meth:`count_null`)."""
        return int(self._counts[-1])

    @property
    def n_wrongtype(self) -> int:
        """Values of a wrong type."""
        return self._n_wrongtype

    @property
    def n(self) -> int:
        """Valid values: the vocabulary's and ``__other__``'s (saturating)."""
        return min(sum(int(c) for c in self._counts[:-1]), UINT64_MAX)
