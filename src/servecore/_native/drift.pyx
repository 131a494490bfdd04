# cython: language_level=3
"""Compiled twin of :mod:`servecore.drift.histogram`: the per-window drift state.

The pure-Python module is the specification (read its docstring for the binning rule, the
counters and saturation). :class:`NumericHistogram`, :class:`CategoricalHistogram` and
:func:`update_block` have the interfaces of
:class:`~servecore.drift.histogram.NumericHistogramPy`,
:class:`~servecore.drift.histogram.CategoricalHistogramPy` and
:func:`~servecore.drift.histogram.update_block`: the same methods, the same counts, the same
snapshot bytes (packed by :mod:`servecore.drift.snapshot`) and the same errors, with the same
messages (the checks are the twin's; :func:`update_block` first tries a fast check of the
usual call and hands anything else to the twin's). ``mean`` and ``m2`` agree with the twin's
to rounding: both fold batches in by the same two-pass-then-Chan rule, the twin over a whole
batch with numpy's pairwise sums, this core over chunks of a few thousand values.

**Search.** Each numeric histogram builds, once, a lookup table over its edges. The bin of a
finite ``x`` is the number of thresholds ``T[k] <= x`` with ``T[k] = e[k]`` for ``k < B`` and
``T[B] = nextafter(e[B], +inf)`` (so ``x == e[B]`` stays in the last bin and ``x > e[B]`` is the
overflow): the twin's ``searchsorted(side="right")`` rule exactly. A uniform grid of ``4*B``
cells covers ``[e[0], e[B]]`` (it doubles, up to ``16*B`` cells, while a cell holds more than 3
thresholds); ``cell(x) = min(trunc((max(x, e[0]) - e[0]) * inv), cells - 1)`` is non-decreasing
in ``x`` (each step is a monotone IEEE double operation and never sees a NaN), and ``lut[c]`` is the
number of thresholds whose own cell is below ``c``. By monotonicity those thresholds are all
``<= x`` and those of later cells all ``> x``, so the bin is ``lut[c]`` plus the number of cell
``c``'s thresholds that are ``<= x``: a branch-free binary search over a window of ``K+1``
candidates, K the most thresholds in one cell (usually 1: one comparison). No rounding detail
matters, since the same ``cell`` function builds and reads the table; a self-check at build time
(each threshold and the double below it) falls back to one cell, a plain branch-free binary
search, if it ever failed (it would take arithmetic that is not IEEE double, such as x87
excess precision). Edges whose span overflows use the same ratio computed from halves; more
than 65534 bins use one cell.

**Updates.** :meth:`NumericHistogram.update` and :func:`update_block` check their arguments with
the GIL, then run one loop with the GIL released: ``update`` over a 1-D float64 array,
``update_block`` over a 2-D float32 or float64 matrix ``[rows, d]``, both read in place whatever
their strides (C order, Fortran order, slices), through fused typed loops that read float32 as
float32 (no float64 copy). The rows go in chunks of about 32 KiB, each read from memory once
and then swept column by column while it is in cache, so each column's search table, counts
and running sums stay in L1 and registers (a row-by-row sweep keeps 64 columns' state in
memory and was three times slower). Per value: an ``isfinite`` test, the table search, one
saturating increment, a shifted sum and min/max; non-finite values only bump their counter. A
second sweep of the chunk (from cache) sums the squared deviations from the chunk's mean, both
sweeps shifted by the chunk's first finite value (the twin's per-batch rule), and the chunk's
``(n, mean, M2)`` joins the running triple by Chan's formula. Nothing is allocated inside
``nogil``. Because the GIL is released, a histogram must not be shared between threads: keep
one per thread (or per worker) and merge.

:class:`CategoricalHistogram` handles Python objects, so it keeps the GIL; its loop looks a
``str`` up in the vocabulary dict directly and only calls
:func:`servecore.drift.keys.category_key` (the shared rule) when that misses.
"""

cimport cython
from cpython.dict cimport PyDict_GetItem
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.object cimport PyObject
from libc.float cimport DBL_MAX
from libc.math cimport INFINITY, isfinite, isnan, nextafter
from libc.stdint cimport UINT64_MAX, uint16_t, uint64_t
from libc.string cimport memset

import numpy as np

from servecore.drift.checks import (
    as_sequence,
    check_count,
    check_edges,
    check_values,
    check_vocabulary,
    layout_mismatch,
)
from servecore.drift.histogram import check_block
from servecore.drift.keys import Special, category_key
from servecore.drift.snapshot import (
    pack_categorical,
    pack_numeric,
    unpack_categorical,
    unpack_numeric,
)

cdef object _NULL_KEY = Special.NULL
cdef object _category_key = category_key

# Grid cells per bin to start with, and at most: while a cell holds more than _MAX_SPAN
# thresholds the grid doubles, up to _MAX_CELLS_PER_BIN cells per bin.
cdef Py_ssize_t _CELLS_PER_BIN = 4
cdef Py_ssize_t _MAX_CELLS_PER_BIN = 16
cdef Py_ssize_t _MAX_SPAN = 3
# Rows of one chunk: about this many bytes of the matrix (two passes, the second from cache).
cdef Py_ssize_t _CHUNK_BYTES = 32768


# --------------------------------------------------------------------------------------------
# nogil helpers


cdef inline uint64_t _sat_add(uint64_t a, uint64_t b) noexcept nogil:
    """``a + b`` capped at 2**64-1."""
    cdef uint64_t s = a + b
    return s if s >= a else UINT64_MAX


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


cdef struct _Col:
    # the search table (the histogram's) and the counts (the histogram's buffer)
    const double* thr
    const uint16_t* lut
    double lo
    double inv
    double cmax
    Py_ssize_t window
    uint64_t* counts
    # where the column is in a row
    Py_ssize_t offset
    # the running state, loaded from the histogram and stored back
    uint64_t n
    double mean
    double m2
    double vmin
    double vmax
    uint64_t n_nan
    uint64_t n_pinf
    uint64_t n_ninf


cdef inline double _cell_t(double x, double lo, double inv, double cmax) noexcept nogil:
    """The grid cell of finite (or +inf) *x* as a double in [0, cmax]; non-decreasing in x.

    ``max(x, lo) - lo`` is >= 0 (finite, or +inf on overflow) and *inv* is finite and > 0, so
    the product is never NaN; no ``a*b+c`` form, so no compiler can fuse it differently in two
    places.
    """
    cdef double xc = x if x > lo else lo
    cdef double t = (xc - lo) * inv
    return t if t < cmax else cmax


cdef inline Py_ssize_t _find(const _Col* col, double x) noexcept nogil:
    """The count index of finite *x*: the number of thresholds <= x (see the module docstring)."""
    cdef Py_ssize_t base = col.lut[<Py_ssize_t>_cell_t(x, col.lo, col.inv, col.cmax)]
    cdef Py_ssize_t n = col.window, half
    cdef const double* thr = col.thr
    while n > 1:
        half = n >> 1
        base += half * <Py_ssize_t>(thr[base + half - 1] <= x)
        n -= half
    return base


cdef void _fold_prefix(const cython.floating* p, Py_ssize_t stride, Py_ssize_t rows,
                       _Col* col, uint64_t limit) noexcept nogil:
    """Fold only the first *limit* finite values of the chunk into the triple (n saturates)."""
    cdef Py_ssize_t r
    cdef uint64_t m = 0
    cdef double x, shift = 0.0, s1 = 0.0, s2 = 0.0, dmean, d
    for r in range(rows):
        x = <double>p[r * stride]
        if isfinite(x) and m < limit:
            if m == 0:
                shift = x
            s1 += x - shift
            m += 1
    if m == 0:
        return
    dmean = s1 / <double>m
    m = 0
    for r in range(rows):
        x = <double>p[r * stride]
        if isfinite(x) and m < limit:
            d = (x - shift) - dmean
            s2 += d * d
            m += 1
    _chan(&col.n, &col.mean, &col.m2, m, shift + dmean, s2)


cdef inline void _pass1(const cython.floating* p, Py_ssize_t stride, Py_ssize_t rows,
                        const _Col* col, double shift, double* s1_out, double* vmin_out,
                        double* vmax_out, uint64_t* bad_out, uint64_t* nan_out,
                        uint64_t* pinf_out, const bint one_step) noexcept nogil:
    """Pass 1 of :func:`_column`; *one_step* (a constant at each call) drops the search loop."""
    cdef const double* thr = col.thr
    cdef const uint16_t* lut = col.lut
    cdef double lo = col.lo, inv = col.inv, cmax = col.cmax
    cdef Py_ssize_t window = col.window, r, base, n, half
    cdef uint64_t* counts = col.counts
    cdef double x, s1 = 0.0, vmin = vmin_out[0], vmax = vmax_out[0]
    cdef uint64_t bad = 0, n_nan = 0, n_pinf = 0
    for r in range(rows):
        x = <double>p[r * stride]
        if isfinite(x):
            base = lut[<Py_ssize_t>_cell_t(x, lo, inv, cmax)]
            if one_step:
                base += <Py_ssize_t>(thr[base] <= x)
            else:
                n = window
                while n > 1:
                    half = n >> 1
                    base += half * <Py_ssize_t>(thr[base + half - 1] <= x)
                    n -= half
            counts[base] += <uint64_t>(counts[base] != UINT64_MAX)
            s1 += x - shift
            vmin = x if x < vmin else vmin
            vmax = x if x > vmax else vmax
        else:
            bad += 1
            if isnan(x):
                n_nan += 1
            elif x > 0:
                n_pinf += 1
    s1_out[0], vmin_out[0], vmax_out[0] = s1, vmin, vmax
    bad_out[0], nan_out[0], pinf_out[0] = bad, n_nan, n_pinf


cdef void _column(const cython.floating* p, Py_ssize_t stride, Py_ssize_t rows,
                  _Col* col) noexcept nogil:
    """Count *rows* values ``p[0], p[stride], ...`` (one column of a chunk) into *col*.

    Pass 1: bins, non-finite counters, the sum of the values shifted by the first finite one,
    min/max; pass 2 (the chunk is in cache): squared deviations from the chunk's mean; then
    Chan's merge of the chunk's triple into the running one. The state lives in locals.
    """
    cdef Py_ssize_t r
    cdef double x, shift = 0.0, s1 = 0.0, s2 = 0.0, d, vmin = col.vmin, vmax = col.vmax
    cdef uint64_t bad = 0, n_nan = 0, n_pinf = 0, m, room
    for r in range(rows):
        x = <double>p[r * stride]
        if isfinite(x):
            shift = x
            break
    if col.window == 2:  # at most one threshold per cell: one comparison (the usual case)
        _pass1(p, stride, rows, col, shift, &s1, &vmin, &vmax, &bad, &n_nan, &n_pinf, True)
    else:
        _pass1(p, stride, rows, col, shift, &s1, &vmin, &vmax, &bad, &n_nan, &n_pinf, False)
    col.vmin, col.vmax = vmin, vmax
    col.n_nan += n_nan
    col.n_pinf += n_pinf
    col.n_ninf += bad - n_nan - n_pinf
    m = <uint64_t>rows - bad
    if m == 0:
        return
    room = UINT64_MAX - col.n
    if m > room:
        if room:
            _fold_prefix(p, stride, rows, col, room)
        return
    s1 = s1 / <double>m  # now the mean of the deviations
    for r in range(rows):
        x = <double>p[r * stride]
        if isfinite(x):
            d = (x - shift) - s1
            s2 += d * d
    _chan(&col.n, &col.mean, &col.m2, m, shift + s1, s2)


cdef void _run(const cython.floating* data, Py_ssize_t stride, Py_ssize_t rows,
               _Col* cols, Py_ssize_t ncols, Py_ssize_t chunk) noexcept nogil:
    """Count rows ``0..rows-1`` of *data* (row r at ``data + r*stride``) into every column.

    The rows go in chunks that stay in cache; each chunk is swept column by column.
    """
    cdef Py_ssize_t r0 = 0, r1, c
    while r0 < rows:
        r1 = r0 + chunk if r0 + chunk < rows else rows
        for c in range(ncols):
            _column(data + r0 * stride + cols[c].offset, stride, r1 - r0, &cols[c])
        r0 = r1


cdef inline Py_ssize_t _chunk_rows(Py_ssize_t row_bytes) noexcept nogil:
    cdef Py_ssize_t rows = _CHUNK_BYTES // (row_bytes if row_bytes > 0 else 1)
    return rows if rows >= 16 else 16


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
    # update_block's duplicate check: the stamp of the last call that saw this histogram
    cdef uint64_t _mark
    # the search table (see the module docstring): thresholds, then the cell -> bin lookup
    cdef double* _thr
    cdef uint16_t* _lut
    cdef double _lo, _inv, _cmax
    cdef Py_ssize_t _cells, _window

    def __cinit__(self):
        self._thr = NULL
        self._lut = NULL
        self._mark = 0

    def __dealloc__(self):
        PyMem_Free(self._thr)
        PyMem_Free(self._lut)

    def __init__(self, edges):
        self._edges_arr = check_edges(edges)
        self._edges = self._edges_arr
        self._counts_arr = np.zeros(self._edges_arr.size + 1, dtype=np.uint64)
        self._counts = self._counts_arr
        self._build_table()
        self.reset()

    cdef int _build_table(self) except -1:
        """The thresholds and the lookup table of the module docstring."""
        cdef Py_ssize_t n_edges = self._edges.shape[0], bins = n_edges - 1, k, cells
        cdef double lo = self._edges[0], hi = self._edges[n_edges - 1], inv
        # B+1 thresholds padded with B+1 times +inf, so any window from any cell stays inside
        self._thr = <double*>PyMem_Malloc(2 * n_edges * sizeof(double))
        if self._thr == NULL:
            raise MemoryError()
        for k in range(n_edges - 1):
            self._thr[k] = self._edges[k]
        self._thr[n_edges - 1] = nextafter(hi, INFINITY)
        for k in range(n_edges, 2 * n_edges):
            self._thr[k] = INFINITY
        self._lo = lo
        inv = 1.0 / (hi - lo) if isfinite(hi - lo) else 0.5 / (hi * 0.5 - lo * 0.5)
        cells = _CELLS_PER_BIN * bins if n_edges <= 65535 else 1
        while True:
            self._fill_lut(cells, inv)
            if self._window - 1 <= _MAX_SPAN or 2 * cells > _MAX_CELLS_PER_BIN * bins:
                break
            cells *= 2
        if not self._self_check():  # cannot happen with IEEE doubles; stay exact regardless
            self._fill_lut(1, inv)
        return 0

    cdef int _fill_lut(self, Py_ssize_t cells, double inv) except -1:
        """Grid of *cells* cells: ``lut[c]`` = thresholds whose cell is below c; the window."""
        cdef Py_ssize_t n_edges = self._edges.shape[0], k, c, span = 0
        cdef Py_ssize_t* per_cell
        cdef double scale = <double>cells * inv
        cells = cells if cells <= 65535 else 1
        self._inv = scale if scale <= DBL_MAX else DBL_MAX  # finite and > 0
        self._cmax = <double>(cells - 1)
        PyMem_Free(self._lut)
        self._lut = <uint16_t*>PyMem_Malloc(cells * sizeof(uint16_t))
        per_cell = <Py_ssize_t*>PyMem_Malloc(cells * sizeof(Py_ssize_t))
        if self._lut == NULL or per_cell == NULL:
            PyMem_Free(per_cell)
            raise MemoryError()
        memset(per_cell, 0, cells * sizeof(Py_ssize_t))
        for k in range(n_edges):
            per_cell[<Py_ssize_t>_cell_t(self._thr[k], self._lo, self._inv, self._cmax)] += 1
        k = 0
        for c in range(cells):
            self._lut[c] = <uint16_t>k  # n_edges <= 65535 whenever cells > 1
            k += per_cell[c]
            span = per_cell[c] if per_cell[c] > span else span
        PyMem_Free(per_cell)
        self._cells = cells
        self._window = span + 1
        return 0

    cdef bint _self_check(self) noexcept:
        """Whether the table bins each threshold and the double just below it as the rule says."""
        cdef _Col col
        cdef Py_ssize_t k
        cdef double x
        self._load(&col, 0)
        for k in range(self._edges.shape[0]):
            x = self._thr[k]
            if isfinite(x) and _find(&col, x) != k + 1:
                return False
            x = nextafter(x, -INFINITY)
            if isfinite(x) and _find(&col, x) != k:
                return False
        return True

    cdef void _load(self, _Col* col, Py_ssize_t offset) noexcept:
        col.thr = self._thr
        col.lut = self._lut
        col.lo, col.inv, col.cmax, col.window = self._lo, self._inv, self._cmax, self._window
        col.counts = &self._counts[0]
        col.offset = offset
        col.n, col.mean, col.m2 = self._n, self._mean, self._m2
        col.vmin, col.vmax = self._min, self._max
        col.n_nan = col.n_pinf = col.n_ninf = 0

    cdef void _store(self, const _Col* col) noexcept:
        self._n, self._mean, self._m2 = col.n, col.mean, col.m2
        self._min = col.vmin + 0.0  # -0.0 -> 0.0
        self._max = col.vmax + 0.0
        self._n_nan = _sat_add(self._n_nan, col.n_nan)
        self._n_pinf = _sat_add(self._n_pinf, col.n_pinf)
        self._n_ninf = _sat_add(self._n_ninf, col.n_ninf)

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
        cdef Py_ssize_t m = v.shape[0], stride
        cdef _Col col
        if m == 0:
            return
        if v.strides[0] % <Py_ssize_t>sizeof(double):
            v = np.ascontiguousarray(values)
        stride = v.strides[0] // <Py_ssize_t>sizeof(double)
        self._load(&col, 0)
        with nogil:
            _run(&v[0], stride, m, &col, 1, _chunk_rows(sizeof(double)))
        self._store(&col)

    @staticmethod
    def update_block(matrix, histograms):
        """Count each column of *matrix* into its histogram: see :func:`update_block`."""
        update_block(matrix, histograms)

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
# Blocks: several numeric columns of one matrix in one nogil call


cdef object _F32 = np.dtype(np.float32)
cdef object _F64 = np.dtype(np.float64)
cdef uint64_t _stamp = 0


cdef bint _plainly_valid(object matrix, object histograms):
    """The usual call, checked fast: a 2-D native float32/float64 array and a list or tuple of
    one NumericHistogram or None per column, none twice. Anything else goes to check_block."""
    global _stamp
    cdef NumericHistogram hist
    if type(matrix) is not np.ndarray or matrix.ndim != 2:
        return False
    if matrix.dtype is not _F32 and matrix.dtype is not _F64:
        return False
    if (type(histograms) is not list and type(histograms) is not tuple) or (
        len(histograms) != matrix.shape[1]
    ):
        return False
    _stamp += 1
    for item in histograms:
        if item is None:
            continue
        if type(item) is not NumericHistogram:
            return False
        hist = <NumericHistogram>item
        if hist._mark == _stamp:
            return False
        hist._mark = _stamp
    return True


def update_block(matrix, histograms):
    """Count column j of *matrix* into ``histograms[j]``, every column in one pass over the rows.

    The same as ``histograms[j].update(matrix[:, j].astype(np.float64))`` for each j whose entry
    is not None (counts, counters, n, min and max identical; mean and M2 to rounding), without
    the copies: the matrix is read in place, float32 as float32.

    :param matrix: a 2-D float32 or float64 array ``[rows, d]`` (native byte order), any
        strides that are whole items (C order, Fortran order, slices; others are copied once,
        in the same dtype).
    :param histograms: d entries, each a :class:`NumericHistogram` or None (column skipped); no
        histogram twice.
    """
    cdef list owners
    cdef Py_ssize_t rows, width, ncols, k, j, item, rstride, cstride
    cdef _Col* cols
    cdef NumericHistogram hist
    cdef const float[:, :] m32
    cdef const double[:, :] m64
    if _plainly_valid(matrix, histograms):
        arr, hists = matrix, histograms
    else:
        arr, hists = check_block(matrix, histograms, NumericHistogram)
    rows, width = arr.shape[0], arr.shape[1]
    owners = [h for h in hists if h is not None]
    ncols = len(owners)
    if rows == 0 or ncols == 0:
        return
    item = arr.itemsize
    if arr.strides[0] % item or arr.strides[1] % item:
        arr = np.ascontiguousarray(arr)
    rstride, cstride = arr.strides[0] // item, arr.strides[1] // item
    cols = <_Col*>PyMem_Malloc(ncols * sizeof(_Col))
    if cols == NULL:
        raise MemoryError()
    try:
        k = 0
        for j in range(width):
            if hists[j] is not None:
                hist = <NumericHistogram>hists[j]
                hist._load(&cols[k], j * cstride)
                k += 1
        if item == sizeof(float):
            m32 = arr
            with nogil:
                _run(&m32[0, 0], rstride, rows, cols, ncols, _chunk_rows(width * item))
        else:
            m64 = arr
            with nogil:
                _run(&m64[0, 0], rstride, rows, cols, ncols, _chunk_rows(width * item))
        for k in range(ncols):
            (<NumericHistogram>owners[k])._store(&cols[k])
    finally:
        PyMem_Free(cols)


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
