# cython: language_level=3
"""Compiled twin of :mod:`servecore.batching.gather`: assemble a batch's inputs, split its outputs.

The pure-Python module is the specification. These two functions give the same results and raise
the same errors, with the same messages (imported from the twin: one wording), for every input:

* :func:`gather` checks every array through numpy's C API (shape, rank, dtype pointer), makes
  the non-contiguous ones contiguous, then copies with the GIL released: one ``memcpy`` per
  array when its trailing dimensions equal the batch's, else one ``memcpy`` per contiguous run
  (the trailing dimensions that match are merged into the run) and a fill of the padding with
  the pad value's bytes. Nothing is allocated inside ``nogil``. Object arrays (BYTES) are
  copied as references with the GIL held; other dtypes holding objects go through numpy.
* :func:`scatter` slices the batch into views; it only saves the interpreter overhead of the
  twin's loops.
"""

cimport numpy as cnp
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.object cimport Py_TYPE, PyObject
from cpython.ref cimport Py_XDECREF, Py_XINCREF
from libc.string cimport memcpy, memset

import operator

import numpy as np

from servecore.batching.gather import (
    _bad_pad,
    _bad_tail,
    _dtype_mismatch,
    _negative_rows,
    _not_array,
    _object_padding,
    _out_layout,
    _out_not_array,
    _out_read_only,
    _out_scalar,
    _rank_mismatch,
    _rows_mismatch,
    _scatter_not_array,
    _scatter_rows_mismatch,
    _scatter_scalar,
    _tail_too_large,
    _tails_count,
)

cdef extern from "numpy/arrayobject.h":
    # Steals a reference to descr; the result's flags are recomputed from dims and strides.
    object _new_view "PyArray_NewFromDescr" (
        PyObject* subtype, PyObject* descr, int nd, cnp.npy_intp* dims, cnp.npy_intp* strides,
        void* data, int flags, PyObject* obj)

cdef extern from "Python.h":
    long long PyLong_AsLongLongAndOverflow(object op, int* overflow) except? -1

cnp.import_array()

cdef object _ascontiguousarray = np.ascontiguousarray
cdef object _empty = np.empty
cdef object _index = operator.index

cdef enum:
    _MAX_DIMS = 64  # NPY_MAXDIMS of numpy 2 (32 on numpy 1): sizes the stride tables


cdef struct _Piece:
    const char* src  # the array's data (C-contiguous), NULL until it is made contiguous
    const cnp.npy_intp* tail  # its trailing dimensions (ndim - 1 of them; borrowed)
    Py_ssize_t rows
    Py_ssize_t row_bytes  # bytes of one of its rows
    bint padded


# --------------------------------------------------------------------------------------------
# nogil helpers


cdef inline void _fill(char* dst, Py_ssize_t nbytes, const char* fill, Py_ssize_t itemsize,
                       bint zero) noexcept nogil:
    """Write the element *fill* (*itemsize* bytes) over *nbytes* bytes from *dst*."""
    cdef Py_ssize_t done, n
    if nbytes <= 0:
        return
    if zero:
        memset(dst, 0, nbytes)
        return
    memcpy(dst, fill, itemsize)
    done = itemsize
    while done < nbytes:  # double the filled prefix: log2(n) calls
        n = done if done <= nbytes - done else nbytes - done
        memcpy(dst + done, dst, n)
        done += n


cdef void _copy_block(char* dst, const char* src, int m, int last,
                      const cnp.npy_intp* out_tail, const cnp.npy_intp* tail,
                      const Py_ssize_t* dst_stride, const Py_ssize_t* src_stride,
                      const char* fill, Py_ssize_t itemsize, bint zero) noexcept nogil:
    """Copy the sub-block at trailing dimension *m* of one row, padding what lies beyond it.

    Dimensions after *last* are equal in the array and the batch, so at *last* the runs are
    contiguous: ``tail[last] * dst_stride[last]`` bytes.
    """
    cdef Py_ssize_t i
    if m == last:
        memcpy(dst, src, tail[m] * dst_stride[m])
    else:
        for i in range(tail[m]):
            _copy_block(dst + i * dst_stride[m], src + i * src_stride[m], m + 1, last,
                        out_tail, tail, dst_stride, src_stride, fill, itemsize, zero)
    _fill(dst + tail[m] * dst_stride[m], (out_tail[m] - tail[m]) * dst_stride[m],
          fill, itemsize, zero)


cdef void _copy_padded(char* dst, const _Piece* piece, int k, const cnp.npy_intp* out_tail,
                       Py_ssize_t out_row_bytes, const char* fill, Py_ssize_t itemsize,
                       bint zero) noexcept nogil:
    """Copy the *k* trailing dimensions of each row of *piece*, padded to *out_tail*."""
    cdef Py_ssize_t dst_stride[_MAX_DIMS]
    cdef Py_ssize_t src_stride[_MAX_DIMS]
    cdef Py_ssize_t r, d = itemsize, s = itemsize
    cdef int m, last = k - 1
    while last > 0 and piece.tail[last] == out_tail[last]:
        last -= 1  # merge the matching innermost dimensions into the runs
    for m in range(k - 1, -1, -1):
        dst_stride[m] = d
        src_stride[m] = s
        d *= out_tail[m]
        s *= piece.tail[m]
    for r in range(piece.rows):
        _copy_block(dst + r * out_row_bytes, piece.src + r * piece.row_bytes, 0, last,
                    out_tail, piece.tail, dst_stride, src_stride, fill, itemsize, zero)


cdef void _copy_all(char* base, const _Piece* pieces, Py_ssize_t n, int k,
                    const cnp.npy_intp* out_tail, Py_ssize_t out_row_bytes, const char* fill,
                    Py_ssize_t itemsize, bint zero) noexcept nogil:
    cdef Py_ssize_t i
    cdef char* dst = base
    for i in range(n):
        if pieces[i].padded:
            _copy_padded(dst, &pieces[i], k, out_tail, out_row_bytes, fill, itemsize, zero)
        else:
            memcpy(dst, pieces[i].src, pieces[i].rows * out_row_bytes)
        dst += pieces[i].rows * out_row_bytes


cdef void _copy_references(PyObject** dst, PyObject** src, Py_ssize_t n) noexcept:
    """Copy *n* object references (new one taken before the old one is dropped)."""
    cdef Py_ssize_t i
    cdef PyObject* old
    for i in range(n):
        Py_XINCREF(src[i])
        old = dst[i]
        dst[i] = src[i]
        Py_XDECREF(old)


# --------------------------------------------------------------------------------------------
# gather / scatter


def gather(arrays, out, pad_value=0):
    """Copy *arrays* into consecutive rows of *out*, padding trailing dimensions with *pad_value*.

    See :func:`servecore.batching.gather.gather`, the specification.
    """
    cdef cnp.ndarray o, a
    cdef tuple seq
    cdef int nd, k, j
    cdef Py_ssize_t n, i, total = 0, itemsize, out_row_bytes, b
    cdef const cnp.npy_intp* odims
    cdef const cnp.npy_intp* adims
    cdef bint larger, differs, any_padded = False, any_strided = False, zero = True
    cdef _Piece* pieces
    cdef const char* fill_bytes = NULL
    cdef char* base

    if not cnp.PyArray_Check(out):
        raise _out_not_array(out)
    o = <cnp.ndarray>out
    nd = cnp.PyArray_NDIM(o)
    if nd == 0:
        raise _out_scalar()
    if not cnp.PyArray_IS_C_CONTIGUOUS(o):
        raise _out_layout()
    if not cnp.PyArray_ISWRITEABLE(o):
        raise _out_read_only()
    seq = arrays if type(arrays) is tuple else tuple(arrays)
    n = len(seq)
    k = nd - 1
    odims = cnp.PyArray_DIMS(o)
    itemsize = cnp.PyArray_ITEMSIZE(o)
    out_row_bytes = itemsize
    for j in range(1, nd):
        out_row_bytes *= odims[j]
    hasobject = o.dtype.hasobject

    pieces = <_Piece*>PyMem_Malloc((n if n > 0 else 1) * sizeof(_Piece))
    if pieces == NULL:
        raise MemoryError()
    try:
        # 1. Check everything, in the twin's order, before writing anything.
        for i in range(n):
            item = seq[i]
            if not cnp.PyArray_Check(item):
                raise _not_array(i, item)
            a = <cnp.ndarray>item
            if cnp.PyArray_DESCR(a) != cnp.PyArray_DESCR(o) and a.dtype != o.dtype:
                raise _dtype_mismatch(i, a.dtype, o.dtype)
            if cnp.PyArray_NDIM(a) != nd:
                raise _rank_mismatch(i, item.shape, out.shape)
            adims = cnp.PyArray_DIMS(a)
            larger = differs = False
            b = itemsize
            for j in range(1, nd):
                if adims[j] > odims[j]:
                    larger = True
                elif adims[j] != odims[j]:
                    differs = True
                b *= adims[j]
            if larger:
                raise _tail_too_large(i, item.shape, out.shape)
            if differs:
                if hasobject:
                    raise _object_padding(i, item.shape, out.shape)
                any_padded = True
            pieces[i].tail = adims + 1
            pieces[i].rows = adims[0]
            pieces[i].row_bytes = b
            pieces[i].padded = differs
            if cnp.PyArray_IS_C_CONTIGUOUS(a):
                pieces[i].src = <const char*>cnp.PyArray_DATA(a)
            else:
                pieces[i].src = NULL
                any_strided = True
            total += adims[0]
        if total != odims[0]:
            raise _rows_mismatch(total, odims[0])
        if any_padded:
            fill = _empty((), o.dtype)
            try:
                fill[()] = pad_value
            except (TypeError, ValueError, OverflowError) as e:
                raise _bad_pad(pad_value, o.dtype, e) from e
            fill_bytes = <const char*>cnp.PyArray_DATA(<cnp.ndarray>fill)
            for j in range(itemsize):
                if fill_bytes[j] != 0:
                    zero = False
                    break

        # 2. Make the strided arrays contiguous (kept alive by `keep`).
        if any_strided:
            keep = []
            for i in range(n):
                if pieces[i].src == NULL:
                    a = <cnp.ndarray>_ascontiguousarray(seq[i])
                    keep.append(a)
                    pieces[i].src = <const char*>cnp.PyArray_DATA(a)

        # 3. Copy.
        base = <char*>cnp.PyArray_DATA(o)
        if not hasobject:
            with nogil:
                _copy_all(base, pieces, n, k, odims + 1, out_row_bytes, fill_bytes, itemsize,
                          zero)
        elif cnp.PyArray_TYPE(o) == cnp.NPY_OBJECT:
            for i in range(n):  # never padded: rows have out's shape
                _copy_references(<PyObject**>base, <PyObject**>pieces[i].src,
                                 pieces[i].rows * (out_row_bytes // itemsize))
                base += pieces[i].rows * out_row_bytes
        else:  # a structured dtype with object fields: numpy copies those
            total = 0
            for i in range(n):
                out[total:total + pieces[i].rows] = seq[i]
                total += pieces[i].rows
    finally:
        PyMem_Free(pieces)


cdef int _check_tail(tuple cut, const cnp.npy_intp* dims, int nd) except -2:
    """1: *cut* (exact ints) equals the trailing *dims*; 0: it fits inside them; -1: it does not."""
    cdef Py_ssize_t j
    cdef long long d
    cdef int overflow
    cdef int same = 1
    if len(cut) != nd - 1:
        return -1
    for j in range(nd - 1):
        d = PyLong_AsLongLongAndOverflow(cut[j], &overflow)
        if overflow or d < 0 or d > dims[j + 1]:
            return -1
        if d != dims[j + 1]:
            same = 0
    return same


cdef inline tuple _as_cut(object tail):
    """*tail* as a tuple of exact ints (itself when it already is one), as the twin converts it."""
    if type(tail) is tuple:
        for d in <tuple>tail:
            if type(d) is not int:
                break
        else:
            return <tuple>tail
    return tuple([d if type(d) is int else _index(d) for d in tail])


cdef object _view(cnp.ndarray arr, Py_ssize_t start, Py_ssize_t rows, tuple cut):
    """``arr[start:start + rows, :cut[0], :cut[1], ...]`` of an exact ndarray, built directly.

    The same view numpy's slicing builds: same dtype object, strides and data offset, base
    collapsed to the owner of the memory, writeable when *arr* is.
    """
    cdef cnp.npy_intp dims[_MAX_DIMS]
    cdef int nd = cnp.PyArray_NDIM(arr), j
    cdef cnp.npy_intp* strides = cnp.PyArray_STRIDES(arr)
    cdef PyObject* descr = <PyObject*>cnp.PyArray_DESCR(arr)
    dims[0] = rows
    if cut is None:
        for j in range(1, nd):
            dims[j] = cnp.PyArray_DIMS(arr)[j]
    else:
        for j in range(1, nd):
            dims[j] = cut[j - 1]
    if rows == 0:
        start = 0  # numpy does not move the data pointer for an empty slice
    Py_XINCREF(descr)
    view = _new_view(<PyObject*>Py_TYPE(arr), descr, nd, dims, strides,
                     <char*>cnp.PyArray_DATA(arr) + start * strides[0],
                     cnp.PyArray_FLAGS(arr) & cnp.NPY_ARRAY_WRITEABLE, NULL)
    cnp.set_array_base(<cnp.ndarray>view, arr)
    return view


def scatter(array, rows, tails=None):
    """Split *array* along its first axis into pieces of *rows* rows: views, no copies.

    See :func:`servecore.batching.gather.scatter`, the specification. Pieces of an exact
    ``ndarray`` are built with ``PyArray_NewFromDescr``; subclasses, which may override
    ``__getitem__``, are sliced.
    """
    cdef cnp.ndarray arr
    cdef Py_ssize_t i, n, r, start
    cdef const cnp.npy_intp* dims
    cdef list counts, cuts, pieces
    cdef tuple cut
    cdef bint exact

    if not cnp.PyArray_Check(array):
        raise _scatter_not_array(array)
    arr = <cnp.ndarray>array
    if cnp.PyArray_NDIM(arr) == 0:
        raise _scatter_scalar()
    exact = cnp.PyArray_CheckExact(array)
    dims = cnp.PyArray_DIMS(arr)
    counts = [v if type(v) is int else _index(v) for v in rows]
    n = len(counts)
    total = 0
    for i in range(n):
        v = counts[i]
        if v < 0:
            raise _negative_rows(i, v)
        total += v
    if total != dims[0]:
        raise _scatter_rows_mismatch(total, dims[0])
    cuts = [None] * n
    if tails is not None:
        tail_list = tails if type(tails) is list else list(tails)
        if len(tail_list) != n:
            raise _tails_count(len(tail_list), n)
        for i in range(n):
            cut = _as_cut(tail_list[i])
            fits = _check_tail(cut, dims, cnp.PyArray_NDIM(arr))
            if fits < 0:
                raise _bad_tail(i, cut, array.shape[1:])
            if fits == 0:
                cuts[i] = cut
    pieces = [None] * n
    start = 0
    for i in range(n):
        r = counts[i]
        cut = <tuple>cuts[i]
        if exact:
            pieces[i] = _view(arr, start, r, cut)
        elif cut is None:
            pieces[i] = array[start:start + r]
        else:
            pieces[i] = array[(slice(start, start + r), *[slice(0, d) for d in cut])]
        start += r
    return pieces
