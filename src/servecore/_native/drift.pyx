# cython: language_level=3
"""Compiled twin of :mod:`servecore.drift.histogram`: the per-window drift state.

The pure-Python module is the specification (read its docstring for the binning rule, the
counters and saturation). :class:`NumericHistogram` and :class:`CategoricalHistogram` have the
interfaces of :class:`~servecore.drift.histogram.NumericHistogramPy` and
:class:`~servecore.drift.histogram.CategoricalHistogramPy`: the same methods, the same counts, the
same snapshot bytes (packed by :mod:`servecore.drift.snapshot`) and the same errors, with the same
messages (the checks are the twin's). ``mean`` and ``m2`` agree with the twin's to rounding:
here Welford's update runs value by value, the twin folds whole batches in with Chan's formula.

:meth:`NumericHistogram.update` checks its argument with the GIL, then runs one loop with the GIL
released over a typed memoryview: an ``isfinite`` test, a branch-free binary search over the
edges (``ceil(log2(B+1))`` compare-and-select steps), one saturating increment, Welford's update
and min/max. Non-finite values only bump their counter. Nothing is allocated inside ``nogil``.
Because the GIL is released, a histogram must not be shared between threads: keep one per
thread (or per worker) and merge them.

:class:`CategoricalHistogram` handles Python objects, so it keeps the GIL; its loop looks a
``str`` up in the vocabulary dict directly and only calls
:func:`servecore.drift.keys.category_key` (the shared rule) when that misses.
"""

cimport cython
from cpython.dict cimport PyDict_GetItem
from cpython.object cimport PyObject
from libc.math cimport INFINITY, isfinite, isnan
from libc.stdint cimport UINT64_MAX, uint64_t

import numpy as np

from servecore.drift.checks import (
    as_sequence,
    check_count,
    check_edges,
    check_values,
    check_vocabulary,
    layout_mismatch,
)
from servecore.drift.keys import Special, category_key
from servecore.drift.snapshot import (
    pack_categorical,
    pack_numeric,
    unpack_categorical,
    unpack_numeric,
)

cdef object _NULL_KEY = Special.NULL
cdef object _category_key = category_key


# --------------------------------------------------------------------------------------------
# nogil helpers


cdef inline uint64_t _sat_add(uint64_t a, uint64_t b) noexcept nogil:
    """``a + b`` capped at 2**64-1."""
    cdef uint64_t s = a + b
    return s if s >= a else UINT64_MAX


cdef inline Py_ssize_t _bin(const double* edges, Py_ssize_t n_edges, double x) noexcept nogil:
    """The bin of finite *x*: the number of edges <= x, less one when x is the last edge.

    The search halves a window of fixed size each step and selects the new base without a
    branch; the number of steps depends only on *n_edges*.
    """
    cdef Py_ssize_t base = 0, n = n_edges, half
    while n > 1:
        half = n >> 1
        base = base + half if edges[base + half] <= x else base
        n -= half
    return base + <Py_ssize_t>(edges[base] <= x) - <Py_ssize_t>(x == edges[n_edges - 1])


cdef inline void _chan(uint64_t* n_a, double* mean_a, double* m2_a,
                       uint64_t n_b, double mean_b, double m2_b) noexcept nogil:
    """Chan's merge of ``(n_b, mean_b, m2_b)`` into the first triple (the twin's expressions)."""
    cdef uint64_t n
    cdef double fn, delta
    if n_b == 0:
        return
    if n_a[0] == 0:
        n_a[0], mean_a[0], m2_a[0] = n_b, mean_b, m2_b
        return
    n = _sat_add(n_a[0], n_b)
    fn = <double>n
    delta = mean_b - mean_a[0]
    m2_a[0] = m2_a[0] + m2_b + delta * delta * (<double>n_a[0] * <double>n_b / fn)
    mean_a[0] = mean_a[0] + delta * (<double>n_b / fn)
    n_a[0] = n


# --------------------------------------------------------------------------------------------
# Numeric


@cython.final
cdef class NumericHistogram:
    """Counts over fixed reference edges, missing/non-finite counters, Welford and min/max.

    The compiled twin of :class:`servecore.drift.histogram.NumericHistogramPy`.

    :param edges: the B+1 bin edges (finite, strictly increasing; B >= 1).
    """

    cdef object _edges_arr
    cdef object _counts_arr
    cdef const double[::1] _edges
    cdef uint64_t[::1] _counts
    cdef uint64_t _n_nan, _n_pinf, _n_ninf, _n_null, _n_wrongtype, _n
    cdef double _mean, _m2, _min, _max

    def __init__(self, edges):
        self._edges_arr = check_edges(edges)
        self._edges = self._edges_arr
        self._counts_arr = np.zeros(self._edges_arr.size + 1, dtype=np.uint64)
        self._counts = self._counts_arr
        self.reset()

    def reset(self):
        """Forget every value: counts, counters and statistics back to zero."""
        self._counts[:] = 0
        self._n_nan = self._n_pinf = self._n_ninf = self._n_null = self._n_wrongtype = 0
        self._n = 0
        self._mean = self._m2 = 0.0
        self._min = INFINITY
        self._max = -INFINITY

    def update(self, values):
        """Count *values* (a 1-D float64 array; convert other dtypes before calling)."""
        cdef const double[:] v = check_values(values)
        cdef Py_ssize_t m = v.shape[0], i, j, n_edges = self._edges.shape[0]
        cdef const double* edges = &self._edges[0]
        cdef uint64_t* counts = &self._counts[0]
        cdef uint64_t n = self._n, n_nan = 0, n_pinf = 0, n_ninf = 0
        cdef double mean = self._mean, m2 = self._m2, lo = self._min, hi = self._max
        cdef double x, delta
        if m == 0:
            return
        with nogil:
            for i in range(m):
                x = v[i]
                if isfinite(x):
                    j = _bin(edges, n_edges, x)
                    counts[j] += <uint64_t>(counts[j] != UINT64_MAX)
                    if n != UINT64_MAX:
                        n += 1
                        delta = x - mean
                        mean += delta / <double>n
                        m2 += delta * (x - mean)
                    if x < lo:
                        lo = x
                    if x > hi:
                        hi = x
                elif isnan(x):
                    n_nan += 1
                elif x > 0:
                    n_pinf += 1
                else:
                    n_ninf += 1
        self._n, self._mean, self._m2 = n, mean, m2
        self._min = lo + 0.0  # -0.0 -> 0.0
        self._max = hi + 0.0
        self._n_nan = _sat_add(self._n_nan, n_nan)
        self._n_pinf = _sat_add(self._n_pinf, n_pinf)
        self._n_ninf = _sat_add(self._n_ninf, n_ninf)

    def count_null(self, n):
        """Count *n* missing values (None/NULL) the caller found in the column."""
        self._n_null = _sat_add(self._n_null, <uint64_t>check_count(n))

    def count_wrong_type(self, n):
        """Count *n* values of a wrong type (a string, a bool) the caller found in the column."""
        self._n_wrongtype = _sat_add(self._n_wrongtype, <uint64_t>check_count(n))

    def merge(self, other):
        """Add *other*'s state (same edges) into this one; *other* is unchanged."""
        cdef NumericHistogram o
        cdef Py_ssize_t i
        if not isinstance(other, NumericHistogram):
            raise TypeError(f"cannot merge {type(other).__name__} into NumericHistogram")
        o = <NumericHistogram>other
        if not np.array_equal(self._edges_arr, o._edges_arr):
            raise layout_mismatch("edges")
        for i in range(self._counts.shape[0]):
            self._counts[i] = _sat_add(self._counts[i], o._counts[i])
        self._n_nan = _sat_add(self._n_nan, o._n_nan)
        self._n_pinf = _sat_add(self._n_pinf, o._n_pinf)
        self._n_ninf = _sat_add(self._n_ninf, o._n_ninf)
        self._n_null = _sat_add(self._n_null, o._n_null)
        self._n_wrongtype = _sat_add(self._n_wrongtype, o._n_wrongtype)
        _chan(&self._n, &self._mean, &self._m2, o._n, o._mean, o._m2)
        self._min = o._min if o._min < self._min else self._min
        self._max = o._max if o._max > self._max else self._max

    def to_bytes(self):
        """A snapshot of the state (see :mod:`servecore.drift.snapshot`)."""
        return pack_numeric(
            self._edges_arr,
            self._counts_arr,
            (self._n_nan, self._n_pinf, self._n_ninf, self._n_null, self._n_wrongtype, self._n),
            (self._mean, self._m2, self._min, self._max),
        )

    @classmethod
    def from_bytes(cls, data):
        """The state a snapshot holds; :class:`~servecore.drift.errors.SnapshotError` if bad."""
        snap = unpack_numeric(data)
        cdef NumericHistogram hist = cls(snap.edges)
        hist._counts_arr[:] = snap.counts
        hist._n_nan, hist._n_pinf, hist._n_ninf = snap.n_nan, snap.n_pinf, snap.n_ninf
        hist._n_null, hist._n_wrongtype, hist._n = snap.n_null, snap.n_wrongtype, snap.n
        hist._mean, hist._m2, hist._min, hist._max = snap.mean, snap.m2, snap.min, snap.max
        return hist

    @property
    def edges(self):
        """The B+1 edges (a copy)."""
        return self._edges_arr.copy()

    @property
    def counts(self):
        """The B+2 counts: underflow, the B bins, overflow (uint64, a copy)."""
        return self._counts_arr.copy()

    @property
    def n_nan(self):
        """NaN values seen."""
        return self._n_nan

    @property
    def n_pinf(self):
        """+inf values seen."""
        return self._n_pinf

    @property
    def n_ninf(self):
        """-inf values seen."""
        return self._n_ninf

    @property
    def n_null(self):
        """Missing values reported by :meth:`count_null`."""
        return self._n_null

    @property
    def n_wrongtype(self):
        """Wrong-type values reported by :meth:`count_wrong_type`."""
        return self._n_wrongtype

    @property
    def n(self):
        """Finite values seen (the binned ones)."""
        return self._n

    @property
    def mean(self):
        """Mean of the finite values (0.0 when there are none)."""
        return self._mean

    @property
    def m2(self):
        """Sum of squared deviations from the mean of the finite values."""
        return self._m2

    @property
    def min(self):
        """Smallest finite value (+inf when there are none)."""
        return self._min

    @property
    def max(self):
        """Largest finite value (-inf when there are none)."""
        return self._max


# --------------------------------------------------------------------------------------------
# Categorical


@cython.final
cdef class CategoricalHistogram:
    """Counts of vocabulary keys, ``__other__`` and null, plus a wrong-type counter.

    The compiled twin of :class:`servecore.drift.histogram.CategoricalHistogramPy`.

    :param vocabulary: the K reference keys (distinct, non-empty, normalised).
    """

    cdef tuple _vocabulary
    cdef dict _index
    cdef object _counts_arr
    cdef uint64_t[::1] _counts
    cdef Py_ssize_t _k
    cdef uint64_t _n_wrongtype

    def __init__(self, vocabulary):
        self._vocabulary = check_vocabulary(vocabulary)
        self._k = len(self._vocabulary)
        self._index = {key: i for i, key in enumerate(self._vocabulary)}
        self._counts_arr = np.zeros(self._k + 2, dtype=np.uint64)
        self._counts = self._counts_arr
        self._n_wrongtype = 0

    def reset(self):
        """Forget every value."""
        self._counts[:] = 0
        self._n_wrongtype = 0

    def update(self, values):
        """Count *values*: a 1-D array of any dtype (str, object, ints, ...), a list or tuple."""
        cdef Py_ssize_t k = self._k, j
        cdef uint64_t* counts = &self._counts[0]
        cdef uint64_t wrong = 0
        cdef PyObject* hit
        cdef dict index = self._index
        for value in as_sequence(values):
            if type(value) is str:
                hit = PyDict_GetItem(index, value)
                if hit != NULL:
                    j = <Py_ssize_t><object>hit
                    counts[j] += <uint64_t>(counts[j] != UINT64_MAX)
                    continue
            key = _category_key(value)
            if type(key) is str:
                hit = PyDict_GetItem(index, key)
                j = <Py_ssize_t><object>hit if hit != NULL else k
            elif key is _NULL_KEY:
                j = k + 1
            else:
                wrong += 1
                continue
            counts[j] += <uint64_t>(counts[j] != UINT64_MAX)
        self._n_wrongtype = _sat_add(self._n_wrongtype, wrong)

    def count_null(self, n):
        """Count *n* missing values found by the caller."""
        self._counts[self._k + 1] = _sat_add(self._counts[self._k + 1], <uint64_t>check_count(n))

    def count_wrong_type(self, n):
        """Count *n* values of a wrong type found by the caller."""
        self._n_wrongtype = _sat_add(self._n_wrongtype, <uint64_t>check_count(n))

    def merge(self, other):
        """Add *other*'s state (same vocabulary) into this one; *other* is unchanged."""
        cdef CategoricalHistogram o
        cdef Py_ssize_t i
        if not isinstance(other, CategoricalHistogram):
            raise TypeError(f"cannot merge {type(other).__name__} into CategoricalHistogram")
        o = <CategoricalHistogram>other
        if self._vocabulary != o._vocabulary:
            raise layout_mismatch("vocabularies")
        for i in range(self._k + 2):
            self._counts[i] = _sat_add(self._counts[i], o._counts[i])
        self._n_wrongtype = _sat_add(self._n_wrongtype, o._n_wrongtype)

    def to_bytes(self):
        """A snapshot of the state (see :mod:`servecore.drift.snapshot`)."""
        return pack_categorical(self._vocabulary, self._counts_arr, self._n_wrongtype)

    @classmethod
    def from_bytes(cls, data):
        """The state a snapshot holds; :class:`~servecore.drift.errors.SnapshotError` if bad."""
        snap = unpack_categorical(data)
        cdef CategoricalHistogram hist = cls(snap.vocabulary)
        hist._counts_arr[:] = snap.counts
        hist._n_wrongtype = snap.n_wrongtype
        return hist

    @property
    def vocabulary(self):
        """The K keys."""
        return self._vocabulary

    @property
    def counts(self):
        """The K+2 counts: the keys, ``__other__``, null (uint64, a copy)."""
        return self._counts_arr.copy()

    @property
    def n_other(self):
        """Values outside the vocabulary."""
        return self._counts[self._k]

    @property
    def n_null(self):
        """Missing values (None, NaN, empty strings, and those from :meth:`count_null`)."""
        return self._counts[self._k + 1]

    @property
    def n_wrongtype(self):
        """Values of a wrong type."""
        return self._n_wrongtype

    @property
    def n(self):
        """Valid values: the vocabulary's and ``__other__``'s (saturating)."""
        cdef uint64_t total = 0
        cdef Py_ssize_t i
        for i in range(self._k + 1):
            total = _sat_add(total, self._counts[i])
        return total
