# cython: language_level=3
"""Compiled twin of :mod:`servecore.codec.reference`: the protocol's hot loops in typed C.

The pure-Python module is the specification. These three functions return the same arrays (same
values, dtypes and shapes) and raise the same errors, with the same messages, for every input:

* :func:`json_to_array` - JSON tensor data (flat or nested lists) to a 1-D numpy array. Lists
  are read through their item arrays (``PyList_GET_ITEM``) with an explicit stack bounded by
  :data:`MAX_JSON_DEPTH` (no recursion); elements are checked with exact type tests and written
  straight into the output array's buffer.
* :func:`decode_bytes` - a BYTES blob (4-byte little-endian length prefix per element) to an
  object array of ``bytes``, parsed from a ``const unsigned char[::1]`` view.
* :func:`encode_bytes` - the inverse: the total size is computed first, then one ``bytes``
  object is allocated and filled with ``memcpy``.

Exactness by construction: some rare inputs have outcomes that depend on numpy's conversion
rules or on Python-level overrides rather than on the codec's own checks. The compiled code
recognises them before any side effect and hands the whole call to the reference twin, which
then decides:

* a ``datatype`` that is not an exact ``str``, or a ``count`` that is not an exact ``int`` (the
  HTTP layer passes ``str`` and ``math.prod(shape)``);
* list subclasses in the data (they may override ``__iter__``/``__len__``);
* a float whose cast to FP16/FP32 could set a floating-point flag (overflow, underflow, NaN:
  numpy reports those as ``np.errstate`` says, a RuntimeWarning by default), and an int too
  large for a double (numpy raises ``OverflowError``);
* a BYTES blob that is not a 1-D contiguous buffer of unsigned bytes;
* an array to encode that is not a plain ndarray, or holds elements other than ``bytes``/``str``
  (``np.bytes_`` and ``np.str_``, the scalars of S and U arrays, count as such).
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.exc cimport PyErr_Clear, PyErr_Occurred
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF, Py_XDECREF
from libc.float cimport FLT_MAX, FLT_MIN
from libc.math cimport fabs
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy

import struct
import sys

import numpy as np

from servecore.codec import reference as _reference
from servecore.codec.messages import bad_element, out_of_range, too_deep
from servecore.datatypes import NUMPY_DTYPES
from servecore.errors import InvalidInputError


cdef extern from "Python.h":
    # Borrowed-pointer views of CPython's macros: no reference counting on the hot path. They are
    # only used while no Python code can run, so the lists they look into cannot change.
    ctypedef struct PyListObject:
        PyObject** ob_item
    Py_ssize_t _list_size "PyList_GET_SIZE" (PyObject* op)
    bint _is_list "PyList_Check" (PyObject* op)
    bint _is_exact_list "PyList_CheckExact" (PyObject* op)
    bint _is_exact_float "PyFloat_CheckExact" (PyObject* op)
    bint _is_exact_int "PyLong_CheckExact" (PyObject* op)
    bint _is_exact_str "PyUnicode_CheckExact" (PyObject* op)
    bint _is_exact_bytes "PyBytes_CheckExact" (PyObject* op)
    double _float_value "PyFloat_AS_DOUBLE" (PyObject* op)
    char* _bytes_data "PyBytes_AS_STRING" (PyObject* op)
    Py_ssize_t _bytes_size "PyBytes_GET_SIZE" (PyObject* op)
    void* _type_of "Py_TYPE" (PyObject* op)
    PyObject* Py_True
    PyObject* Py_False
    # Error-returning C API; every call site checks for the error itself.
    double PyLong_AsDouble(PyObject* op)
    long long PyLong_AsLongLongAndOverflow(PyObject* op, int* overflow)
    unsigned long long PyLong_AsUnsignedLongLong(PyObject* op)
    const char* PyUnicode_AsUTF8AndSize(PyObject* op, Py_ssize_t* size) except NULL
    object PyUnicode_AsUTF8String(PyObject* op)
    object PyBytes_FromStringAndSize(const char* data, Py_ssize_t size)


cdef enum:
    _MAX_DEPTH = 100  # sizes the walker's stack

#: Deepest list nesting accepted in JSON tensor data (Triton's limit).
MAX_JSON_DEPTH = _MAX_DEPTH

# Return codes of the fill loops (an index >= 0 is the first element to complain about).
cdef enum:
    _ALL_GOOD = -1
    _DELEGATE = -2
    _RAISED = -3

# Element kinds of the datatypes.
cdef enum _Kind:
    _K_FP16
    _K_FP32
    _K_FP64
    _K_BOOL
    _K_BYTES
    _K_INT  # INT8..INT64, UINT8..UINT32: checked as C long long
    _K_UINT64


cdef struct _Spec:
    _Kind kind
    int itemsize
    long long low
    long long high


# datatype -> row of _SPECS (C) and _DTYPES (the numpy dtype of the result); BF16 is refused
# before the lookup, as in the reference (13 rows used).
cdef dict _SPEC_IDS = {}
cdef list _DTYPES = []
cdef _Spec _SPECS[16]


cdef void _add_spec(str datatype, _Kind kind) except *:
    cdef Py_ssize_t i = len(_DTYPES)
    if i >= 16:
        raise RuntimeError("servecore._native.codec: _SPECS is full")
    dtype = NUMPY_DTYPES[datatype]
    _SPEC_IDS[datatype] = i
    _DTYPES.append(dtype)
    _SPECS[i].kind = kind
    _SPECS[i].itemsize = dtype.itemsize
    _SPECS[i].low = 0
    _SPECS[i].high = 0
    if kind == _K_INT:
        _SPECS[i].low = int(np.iinfo(dtype).min)
        _SPECS[i].high = int(np.iinfo(dtype).max)


_add_spec("FP16", _K_FP16)
_add_spec("FP32", _K_FP32)
_add_spec("FP64", _K_FP64)
_add_spec("BOOL", _K_BOOL)
_add_spec("BYTES", _K_BYTES)
for _name in ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32"):
    _add_spec(_name, _K_INT)
_add_spec("UINT64", _K_UINT64)
del _name

cdef object _empty = np.empty
cdef object _ndarray = np.ndarray
cdef object _OBJECT = np.dtype(object)
cdef object _FP64 = np.dtype(np.float64)
# numpy's scalar types of S and U arrays: bytes and str subclasses that override nothing used here.
cdef void* _NP_BYTES = <void*>np.bytes_
cdef void* _NP_STR = <void*>np.str_
cdef object _LEN = struct.Struct("<I")
cdef object _SSIZE_MAX = sys.maxsize
# Below the smallest normal or above the largest finite value of FP16/FP32 (FLT_MIN, FLT_MAX), a
# cast can set a floating-point flag; such values go to the reference so that numpy decides
# (np.errstate: a RuntimeWarning by default).
cdef double _FP16_MIN = 6.103515625e-05  # 2**-14
cdef double _FP16_MAX = 65504.0


# --------------------------------------------------------------------------------------------
# Error messages (the reference's texts)
# --------------------------------------------------------------------------------------------


cdef object _bad_element(object name, str datatype, object value):
    return bad_element(name, datatype, value)


cdef object _out_of_range(object name, str datatype, object value):
    return out_of_range(name, datatype, value)


cdef object _too_deep(object name):
    return too_deep(name, _MAX_DEPTH)


# --------------------------------------------------------------------------------------------
# Walking nested lists
# --------------------------------------------------------------------------------------------

cdef enum _Walk:
    _WALK_OK
    _WALK_TOO_DEEP  # a list deeper than _MAX_DEPTH
    _WALK_EXOTIC  # a list subclass (or, when gathering, more leaves than expected)


cdef inline PyObject** _list_items(PyObject* op) noexcept:
    """The item array of list *op*: ``&PyList_GET_ITEM(op, 0)``, hoisted out of the loops."""
    return (<PyListObject*>op).ob_item


cdef bint _is_flat(PyObject* data) noexcept:
    """Whether exact list *data* holds no list at all (the common case: no walk needed)."""
    cdef Py_ssize_t i
    cdef PyObject** items = _list_items(data)
    for i in range(_list_size(data)):
        if _is_list(items[i]):
            return False
    return True


cdef _Walk _walk(PyObject* data, Py_ssize_t* count, PyObject** out, Py_ssize_t capacity) noexcept:
    """Walk exact list *data* depth-first, in the reference's order; count its leaves in *count*.

    With *out*, also store the (borrowed) leaves there, at most *capacity* of them. The stack is
    explicit and bounded: lists[d] is the open list at depth d + 1 (the outermost list is depth 1)
    and pos[d] the index of its next item. Each list's items are scanned in a tight inner loop.
    """
    cdef PyObject* lists[_MAX_DEPTH]
    cdef Py_ssize_t pos[_MAX_DEPTH]
    cdef int level = 0
    cdef PyObject** items
    cdef PyObject* item
    cdef Py_ssize_t i, size, n = 0
    cdef bint descend
    lists[0] = data
    pos[0] = 0
    while level >= 0:
        items = _list_items(lists[level])
        size = _list_size(lists[level])
        i = pos[level]
        descend = False
        while i < size:
            item = items[i]
            i += 1
            if _is_list(item):
                if not _is_exact_list(item):
                    count[0] = n
                    return _WALK_EXOTIC
                if level + 2 > _MAX_DEPTH:  # the new list's depth is level + 2
                    count[0] = n
                    return _WALK_TOO_DEEP
                pos[level] = i
                level += 1
                lists[level] = item
                pos[level] = 0
                descend = True
                break
            if out != NULL:
                if n == capacity:
                    count[0] = n
                    return _WALK_EXOTIC
                out[n] = item
            n += 1
        if not descend:
            level -= 1
    count[0] = n
    return _WALK_OK


cdef _Walk _survey(PyObject* data, PyObject** leaf_list, Py_ssize_t* count) noexcept:
    """Count the leaves of exact list *data* (checking the depth) without touching them.

    *leaf_list* is set to the list whose items are exactly the leaves when there is one: *data*
    itself, or the innermost list of a chain of one-item lists (``[[...]]``, a batch of one);
    otherwise to NULL, and the leaves must be gathered with :func:`_walk`.
    """
    cdef PyObject* inner = data
    cdef int depth = 1
    while _list_size(inner) == 1 and _is_exact_list(_list_items(inner)[0]):
        if depth == _MAX_DEPTH:
            return _WALK_TOO_DEEP
        inner = _list_items(inner)[0]
        depth += 1
    if _is_flat(inner):
        leaf_list[0] = inner
        count[0] = _list_size(inner)
        return _WALK_OK
    leaf_list[0] = NULL
    return _walk(data, count, NULL, 0)


# --------------------------------------------------------------------------------------------
# Fill loops: each writes the n elements of items into a buffer, in order, and returns
# _ALL_GOOD, _DELEGATE, or the index of the first element the caller must complain about.
# --------------------------------------------------------------------------------------------


cdef inline int _as_double(PyObject* v, double* d) noexcept:
    """1: *v* is an exact float or int, converted; 0: it is not; -1: an int too large (cleared)."""
    if _is_exact_float(v):
        d[0] = _float_value(v)
        return 1
    if _is_exact_int(v):
        d[0] = PyLong_AsDouble(v)
        if d[0] == -1.0 and PyErr_Occurred() != NULL:
            PyErr_Clear()
            return -1
        return 1
    return 0


cdef Py_ssize_t _fill_doubles(PyObject** items, Py_ssize_t n, double* out,
                              double smallest, double largest) noexcept:
    """FP64 (no limits: smallest = largest = 0) or FP16 staging (its normal range)."""
    cdef Py_ssize_t i
    cdef double d, a
    cdef int r
    cdef bint limited = largest > 0
    for i in range(n):
        r = _as_double(items[i], &d)
        if r == 0:
            return i
        if r < 0:
            return _DELEGATE
        if limited:
            a = fabs(d)
            if not (a == 0.0 or (smallest <= a <= largest)):
                return _DELEGATE
        out[i] = d
    return _ALL_GOOD


cdef Py_ssize_t _fill_floats(PyObject** items, Py_ssize_t n, float* out) noexcept:
    """FP32: through a double, as numpy does (``(float)PyFloat_AsDouble``)."""
    cdef Py_ssize_t i
    cdef double d, a
    cdef int r
    for i in range(n):
        r = _as_double(items[i], &d)
        if r == 0:
            return i
        if r < 0:
            return _DELEGATE
        a = fabs(d)
        if not (a == 0.0 or (FLT_MIN <= a <= FLT_MAX)):
            return _DELEGATE
        out[i] = <float>d
    return _ALL_GOOD


cdef Py_ssize_t _fill_bools(PyObject** items, Py_ssize_t n, uint8_t* out) noexcept:
    """True and False only (numpy's bool is one byte, 0 or 1)."""
    cdef Py_ssize_t i
    cdef PyObject* v
    for i in range(n):
        v = items[i]
        if v == Py_True:
            out[i] = 1
        elif v == Py_False:
            out[i] = 0
        else:
            return i
    return _ALL_GOOD


ctypedef fused _cint:
    int8_t
    int16_t
    int32_t
    int64_t
    uint8_t
    uint16_t
    uint32_t


cdef Py_ssize_t _fill_ints(PyObject** items, Py_ssize_t n, _cint* out,
                           long long low, long long high) noexcept:
    """Exact ints within [low, high] (which fit *out*'s C type)."""
    cdef Py_ssize_t i
    cdef PyObject* v
    cdef long long x
    cdef int overflow
    for i in range(n):
        v = items[i]
        if not _is_exact_int(v):
            return i
        x = PyLong_AsLongLongAndOverflow(v, &overflow)
        if overflow or x < low or x > high:
            return i
        out[i] = <_cint>x
    return _ALL_GOOD


cdef Py_ssize_t _fill_uint64(PyObject** items, Py_ssize_t n, uint64_t* out) noexcept:
    """Exact ints within [0, 2**64 - 1]."""
    cdef Py_ssize_t i
    cdef PyObject* v
    cdef long long x
    cdef unsigned long long u
    cdef int overflow
    for i in range(n):
        v = items[i]
        if not _is_exact_int(v):
            return i
        x = PyLong_AsLongLongAndOverflow(v, &overflow)
        if overflow == 0:
            if x < 0:
                return i
            out[i] = <uint64_t>x
        elif overflow > 0:
            u = PyLong_AsUnsignedLongLong(v)
            if u == <unsigned long long>-1 and PyErr_Occurred() != NULL:
                PyErr_Clear()
                return i
            out[i] = u
        else:
            return i
    return _ALL_GOOD


cdef Py_ssize_t _fill_strings(PyObject** items, Py_ssize_t n, PyObject** out) except _RAISED:
    """Exact str elements, UTF-8 encoded, into the slots of a fresh object array (all None)."""
    cdef Py_ssize_t i
    cdef PyObject* v
    cdef PyObject* old
    for i in range(n):
        v = items[i]
        if not _is_exact_str(v):
            return i
        encoded = PyUnicode_AsUTF8String(v)
        old = out[i]
        Py_INCREF(encoded)
        out[i] = <PyObject*>encoded
        Py_XDECREF(old)
    return _ALL_GOOD


cdef Py_ssize_t _fill_numeric(_Kind kind, PyObject** items, Py_ssize_t n, object out,
                              const _Spec* spec) except _RAISED:
    """Run the fill loop of *kind* on the buffer of numpy array *out*."""
    cdef Py_buffer view
    cdef Py_ssize_t r
    PyObject_GetBuffer(out, &view, PyBUF_WRITABLE)
    try:
        if kind == _K_FP64 or kind == _K_FP16:
            # FP16 is staged as float64 and cast by numpy (no half type in C).
            if kind == _K_FP64:
                r = _fill_doubles(items, n, <double*>view.buf, 0.0, 0.0)
            else:
                r = _fill_doubles(items, n, <double*>view.buf, _FP16_MIN, _FP16_MAX)
        elif kind == _K_FP32:
            r = _fill_floats(items, n, <float*>view.buf)
        elif kind == _K_BOOL:
            r = _fill_bools(items, n, <uint8_t*>view.buf)
        elif kind == _K_UINT64:
            r = _fill_uint64(items, n, <uint64_t*>view.buf)
        elif spec.itemsize == 1:
            if spec.low < 0:
                r = _fill_ints(items, n, <int8_t*>view.buf, spec.low, spec.high)
            else:
                r = _fill_ints(items, n, <uint8_t*>view.buf, spec.low, spec.high)
        elif spec.itemsize == 2:
            if spec.low < 0:
                r = _fill_ints(items, n, <int16_t*>view.buf, spec.low, spec.high)
            else:
                r = _fill_ints(items, n, <uint16_t*>view.buf, spec.low, spec.high)
        elif spec.itemsize == 4:
            if spec.low < 0:
                r = _fill_ints(items, n, <int32_t*>view.buf, spec.low, spec.high)
            else:
                r = _fill_ints(items, n, <uint32_t*>view.buf, spec.low, spec.high)
        else:
            r = _fill_ints(items, n, <int64_t*>view.buf, spec.low, spec.high)
    finally:
        PyBuffer_Release(&view)
    return r


# --------------------------------------------------------------------------------------------
# The codec functions
# --------------------------------------------------------------------------------------------


def json_to_array(data, datatype, count, name):
    """Convert JSON tensor *data* of V2 *datatype* to a 1-D array of exactly *count* elements.

    :param data: the ``data`` member of a request input: a flat or nested list, or one scalar.
    :param datatype: the input's V2 datatype (BF16 is refused: it has no JSON form).
    :param count: the element count its ``shape`` declares.
    :param name: the input's name, used in error messages.
    :raises InvalidInputError: on a wrong element type, an out-of-range integer, nesting deeper
        than :data:`MAX_JSON_DEPTH`, or an element count other than *count*.
    """
    cdef PyObject* top = <PyObject*>data
    cdef PyObject* leaf_list = NULL
    cdef PyObject** items
    cdef PyObject** gathered = NULL
    cdef Py_ssize_t n, gathered_n, r, spec_id
    cdef const _Spec* spec
    cdef Py_buffer slots
    cdef _Walk walked

    if type(datatype) is not str or type(count) is not int:
        return _reference.json_to_array(data, datatype, count, name)
    if datatype == "BF16":
        raise InvalidInputError(
            f"input {name!r}: BF16 data cannot be sent as JSON; use binary data"
        )

    # 1. Count the leaves (checking the depth) without touching them.
    if _is_exact_list(top):
        walked = _survey(top, &leaf_list, &n)
        if walked == _WALK_TOO_DEEP:
            raise _too_deep(name)
        if walked == _WALK_EXOTIC:
            return _reference.json_to_array(data, datatype, count, name)
        leaf_list_ref = <object>leaf_list if leaf_list != NULL else None  # keeps it alive
    elif _is_list(top):
        return _reference.json_to_array(data, datatype, count, name)
    else:
        n = 1
    if n != count:
        raise InvalidInputError(
            f"input {name!r}: shape needs {count} elements but data has {n}"
        )
    spec_obj = _SPEC_IDS.get(datatype)
    if spec_obj is None:
        raise InvalidInputError(f"input {name!r}: unsupported datatype {datatype!r}")
    spec_id = spec_obj
    spec = &_SPECS[spec_id]
    if spec.kind == _K_BYTES:
        out = _empty(n, _OBJECT)
    elif spec.kind == _K_FP16:
        out = _empty(n, _FP64)  # staged as float64, cast by numpy at the end (no half type in C)
    else:
        out = _empty(n, _DTYPES[spec_id])

    # 2. Line the leaves up (no copy when one list holds them all), then check and convert them in
    #    order. No Python code has run since step 1 (np.empty allocates nothing the garbage
    #    collector tracks) and none runs until the fill loop returns, so the borrowed pointers
    #    stay valid; the checks below only guard that reasoning.
    if leaf_list != NULL:
        if _list_size(leaf_list) != n:
            raise RuntimeError("servecore._native.codec: the data changed while being read")
        items = _list_items(leaf_list)
    elif not _is_list(top):
        items = &top
    else:
        gathered = <PyObject**>PyMem_Malloc(max(n, 1) * sizeof(PyObject*))
        if gathered == NULL:
            raise MemoryError()
        walked = _walk(top, &gathered_n, gathered, n)
        if walked != _WALK_OK or gathered_n != n:
            PyMem_Free(gathered)
            raise RuntimeError("servecore._native.codec: the data changed while being read")
        items = gathered
    try:
        if spec.kind == _K_BYTES:
            PyObject_GetBuffer(out, &slots, PyBUF_WRITABLE)
            try:
                r = _fill_strings(items, n, <PyObject**>slots.buf)
            finally:
                PyBuffer_Release(&slots)
        else:
            r = _fill_numeric(spec.kind, items, n, out, spec)
        if r >= 0:
            value = <object>items[r]
            if (spec.kind == _K_INT or spec.kind == _K_UINT64) and type(value) is int:
                raise _out_of_range(name, datatype, value)
            raise _bad_element(name, datatype, value)
    finally:
        PyMem_Free(gathered)
    if r == _DELEGATE:
        return _reference.json_to_array(data, datatype, count, name)
    if spec.kind == _K_FP16:
        return out.astype(_DTYPES[spec_id])
    return out


cdef inline uint32_t _read_length(const unsigned char* p) noexcept:
    """A BYTES element's 4-byte little-endian length prefix."""
    return (
        <uint32_t>p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)
    )


def decode_bytes(blob, count, name):
    """Split a BYTES blob into exactly *count* elements (an object array of ``bytes``).

    :raises InvalidInputError: when a length prefix runs past the blob, or the blob holds more or
        fewer than *count* elements.
    """
    cdef const unsigned char[::1] buf
    cdef const unsigned char* data
    cdef Py_ssize_t size, offset = 0, i, n
    cdef uint32_t length
    cdef Py_buffer slots
    cdef PyObject** out_items
    cdef PyObject* old

    if type(count) is not int:
        return _reference.decode_bytes(blob, count, name)
    if type(blob) is bytes or type(blob) is bytearray:
        buf = blob
    else:
        view = memoryview(blob)  # the reference's TypeError for what is not a buffer
        if not (view.ndim == 1 and view.format == "B" and view.c_contiguous):
            return _reference.decode_bytes(blob, count, name)
        buf = view
    size = buf.shape[0]
    data = &buf[0] if size > 0 else NULL  # (&buf[0] of an empty view fails a bounds check)
    if count < 0:
        n = 0  # range(count) is empty
    elif count > _SSIZE_MAX:
        n = _SSIZE_MAX  # the blob runs out first
    else:
        n = count

    # 1. Check the length prefixes (nothing allocated: the client picks count, the blob bounds it).
    for i in range(n):
        if size - offset < 4:
            raise InvalidInputError(
                f"input {name!r}: BYTES data holds {i} elements, shape needs {count}"
            )
        length = _read_length(data + offset)
        offset += 4
        if <uint64_t>length > <uint64_t>(size - offset):
            raise InvalidInputError(
                f"input {name!r}: BYTES element {i} of {length} bytes "
                "runs past the end of the data"
            )
        offset += length
    if offset != size:
        raise InvalidInputError(
            f"input {name!r}: BYTES data has {size - offset} bytes left after {count} elements"
        )

    # 2. Build the elements.
    out = _empty(count, _OBJECT)  # the reference's ValueError for a negative count
    PyObject_GetBuffer(out, &slots, PyBUF_WRITABLE)
    try:
        out_items = <PyObject**>slots.buf
        offset = 0
        for i in range(n):
            length = _read_length(data + offset)
            offset += 4
            element = PyBytes_FromStringAndSize(<const char*>data + offset, length)
            old = out_items[i]
            Py_INCREF(element)
            out_items[i] = <PyObject*>element
            Py_XDECREF(old)
            offset += length
    finally:
        PyBuffer_Release(&slots)
    return out


cdef inline int _utf8_of(PyObject* v, const char** data, Py_ssize_t* size) except -1:
    """Point at the bytes of a fast-path element: 1 if it is one, 0 if the reference must decide."""
    if _is_exact_bytes(v):
        data[0] = _bytes_data(v)
        size[0] = _bytes_size(v)
        return 1
    if _is_exact_str(v) or _type_of(v) == _NP_STR:
        data[0] = PyUnicode_AsUTF8AndSize(v, size)  # UTF-8 cached in the str: no copy after
        return 1
    if _type_of(v) == _NP_BYTES:
        data[0] = _bytes_data(v)
        size[0] = _bytes_size(v)
        return 1
    return 0


def encode_bytes(array):
    """Serialise the elements of *array* (``bytes`` or ``str``, any shape) with length prefixes."""
    cdef Py_buffer view
    cdef PyObject** items
    cdef Py_ssize_t n, i, total = 0, size
    cdef const char* data
    cdef char* dest
    cdef bint acquired = False

    flat = array.ravel()
    if type(flat) is not _ndarray:
        return _reference.encode_bytes(array)
    if flat.dtype == _OBJECT:
        PyObject_GetBuffer(flat, &view, PyBUF_SIMPLE)  # read-only arrays too
        acquired = True
        items = <PyObject**>view.buf
        n = view.len // sizeof(PyObject*)
    else:
        scalars = list(flat)  # what iterating gives: np.bytes_/np.str_ for S/U arrays
        items = _list_items(<PyObject*>scalars)
        n = len(scalars)
    try:
        # 1. Sizes (and the reference's errors, in element order).
        for i in range(n):
            if items[i] == NULL or not _utf8_of(items[i], &data, &size):
                return _reference.encode_bytes(array)
            if <uint64_t>size > 0xFFFFFFFF:
                _LEN.pack(size)  # struct.error, as the reference
            total += 4 + size
        # 2. One allocation, then copy.
        result = PyBytes_FromStringAndSize(NULL, total)
        dest = _bytes_data(<PyObject*>result)
        for i in range(n):
            _utf8_of(items[i], &data, &size)
            dest[0] = <char>(size & 0xFF)
            dest[1] = <char>((size >> 8) & 0xFF)
            dest[2] = <char>((size >> 16) & 0xFF)
            dest[3] = <char>((size >> 24) & 0xFF)
            memcpy(dest + 4, data, size)
            dest += 4 + size
    finally:
        if acquired:
            PyBuffer_Release(&view)
    return result
