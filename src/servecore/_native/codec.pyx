# cython: language_level=3
"""Compiled twin of :mod:`servecore.codec.reference`: the protocol's hot loops in typed C.

The pure-Python module is the specification. These three functions return the same arrays (same
values, dtypes and shapes) and raise the same errors, with the same messages, for every input:

* :func:`json_to_array` - JSON tensor data (flat or nested lists) to a 1-D numpy array. Lists
  are walked with ``PyList_GET_ITEM`` and an explicit stack bounded by :data:`MAX_JSON_DEPTH`
  (no recursion), elements are checked with exact type tests and written straight into the
  output array's buffer.
* :func:`decode_bytes` - a BYTES blob (4-byte little-endian length prefix per element) to an
  object array of ``bytes``, parsed from a ``const unsigned char[::1]`` view.
* :func:`encode_bytes` - the inverse: the total size is computed first, then one ``bytes``
  object is allocated and filled with ``memcpy``.

Exactness by construction: a few rare inputs have outcomes that depend on numpy's conversion
rules or on Python-level overrides rather than on the codec's own checks. The compiled code
recognises them without side effects and hands the whole call to the reference twin, which then
decides. They are: a ``datatype`` that is not an exact ``str``; list subclasses in the data
(which may override ``__iter__``/``__len__``); floats whose cast to FP16/FP32 could set a
floating-point flag (overflow, underflow, NaN: numpy reports those through ``np.errstate``) and
ints too large for a double (numpy raises its own ``OverflowError``); BYTES blobs that are not
1-D contiguous byte buffers; arrays to encode whose elements are not ``bytes``/``str``; and
``count`` objects whose array is not 1-D of that many elements.
"""

from cpython.buffer cimport PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.exc cimport PyErr_Clear, PyErr_Occurred
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF, Py_XDECREF
from libc.float cimport FLT_MAX, FLT_MIN
from libc.math cimport fabs
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy

import struct
from operator import index as _index

import numpy as np

from servecore.codec import reference as _reference
from servecore.datatypes import NUMPY_DTYPES
from servecore.errors import InvalidInputError


cdef extern from "Python.h":
    # Borrowed-pointer views of CPython's macros: no reference counting on the hot path. They are
    # only used while no Python code can run, so the lists they look into cannot change.
    ctypedef struct PyListObject:
        PyObject** ob_item
    Py_ssize_t _list_size "PyList_GET_SIZE" (PyObject* op)
    PyObject* _list_item "PyList_GET_ITEM" (PyObject* op, Py_ssize_t i)
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
    PyObject* Py_None
    # Error-returning C API; every call site checks for the error itself.
    double PyLong_AsDouble(PyObject* op)
    long long PyLong_AsLongLongAndOverflow(PyObject* op, int* overflow)
    unsigned long long PyLong_AsUnsignedLongLong(PyObject* op)
    const char* PyUnicode_AsUTF8AndSize(PyObject* op, Py_ssize_t* size) except NULL
    object PyUnicode_AsUTF8String(PyObject* op)
    object PyBytes_FromStringAndSize(const char* data, Py_ssize_t size)


#: Deepest list nesting accepted in JSON tensor data (Triton's limit).
MAX_JSON_DEPTH = 100

cdef enum:
    _MAX_DEPTH = 100

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


# datatype -> row of _SPECS / _DTYPES; BF16 is refused before the lookup, as in the reference.
cdef dict _SPEC_IDS = {}
cdef list _DTYPES = []
cdef _Spec _SPECS[16]


cdef void _add_spec(str datatype, _Kind kind) except *:
    cdef Py_ssize_t i = len(_DTYPES)
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
# Below the smallest normal or above the largest finite value of FP16/FP32 (FLT_MIN, FLT_MAX), a
# cast can set a floating-point flag; such values go to the reference so that numpy decides
# (np.errstate: a RuntimeWarning by default).
cdef double _FP16_MIN = 6.103515625e-05  # 2**-14
cdef double _FP16_MAX = 65504.0


# --------------------------------------------------------------------------------------------
# Error messages (the reference's texts)
# --------------------------------------------------------------------------------------------


cdef str _json_type(object value):
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "object"
    return "array"


cdef object _bad_element(object name, str datatype, object value):
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    return InvalidInputError(
        f"input {name!r}: element {shown} of JSON type {_json_type(value)} is not valid for datatype {datatype}"
    )


cdef object _out_of_range(object name, str datatype, object value):
    return InvalidInputError(
        f"input {name!r}: value {value} is out of range for datatype {datatype}"
    )


cdef object _too_deep(object name):
    return InvalidInputError(
        f"input {name!r}: JSON nesting depth exceeds maximum allowed limit ({MAX_JSON_DEPTH})"
    )


# --------------------------------------------------------------------------------------------
# Walking nested lists
# --------------------------------------------------------------------------------------------

cdef enum _Step:
    _LEAF
    _DONE
    _TOO_DEEP
    _EXOTIC  # a list subclass


cdef struct _Walker:
    # Depth-first walk over exact lists with an explicit stack: lists[d] is the open list at depth
    # d + 1 and pos[d] the index of its next item; top is the innermost open level (-1: done).
    int top
    PyObject* lists[_MAX_DEPTH]
    Py_ssize_t pos[_MAX_DEPTH]


cdef inline void _walk_start(_Walker* w, PyObject* top_list) noexcept:
    w.top = 0
    w.lists[0] = top_list
    w.pos[0] = 0


cdef inline _Step _walk_next(_Walker* w, PyObject** leaf) noexcept:
    """Advance to the next leaf (stored in *leaf*), in the reference's depth-first order."""
    cdef PyObject* lst
    cdef PyObject* item
    cdef Py_ssize_t i
    while w.top >= 0:
        lst = w.lists[w.top]
        i = w.pos[w.top]
        if i >= _list_size(lst):
            w.top -= 1
            continue
        item = _list_item(lst, i)
        w.pos[w.top] = i + 1
        if _is_exact_list(item):
            # The new list is at depth top + 2 (the outermost list is depth 1).
            if w.top + 2 > _MAX_DEPTH:
                return _TOO_DEEP
            w.top += 1
            w.lists[w.top] = item
            w.pos[w.top] = 0
        elif _is_list(item):
            return _EXOTIC
        else:
            leaf[0] = item
            return _LEAF
    return _DONE


cdef _Step _count_leaves(PyObject* data, Py_ssize_t* count) noexcept:
    """Count the leaves of exact list *data*, or say why not (too deep, a list subclass)."""
    cdef _Walker w
    cdef PyObject* leaf
    cdef _Step step
    cdef Py_ssize_t n = 0
    _walk_start(&w, data)
    while True:
        step = _walk_next(&w, &leaf)
        if step != _LEAF:
            break
        n += 1
    count[0] = n
    return step


cdef bint _is_flat(PyObject* data) noexcept:
    """Whether exact list *data* holds no list at all (the common case: no walk needed)."""
    cdef Py_ssize_t i
    cdef PyObject** items = (<PyListObject*>data).ob_item
    for i in range(_list_size(data)):
        if _is_list(items[i]):
            return False
    return True


cdef int _gather(PyObject* data, Py_ssize_t n, PyObject** out) noexcept:
    """Store the *n* leaves of nested exact list *data* in *out*; 0 if it still has exactly *n*."""
    cdef _Walker w
    cdef PyObject* leaf
    cdef Py_ssize_t k = 0
    _walk_start(&w, data)
    while _walk_next(&w, &leaf) == _LEAF:
        if k == n:
            return -1
        out[k] = leaf
        k += 1
    return 0 if (w.top < 0 and k == n) else -1


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
    """Exact str elements, UTF-8 encoded, into the slots of an object array (owning None)."""
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
    cdef PyObject** items
    cdef PyObject** gathered = NULL
    cdef Py_ssize_t n
    cdef Py_ssize_t r
    cdef Py_ssize_t spec_id
    cdef const _Spec* spec
    cdef Py_buffer slots
    cdef _Step step
    cdef bint flat = True

    if type(datatype) is not str:
        return _reference.json_to_array(data, datatype, count, name)
    if datatype == "BF16":
        raise InvalidInputError(
            f"input {name!r}: BF16 data cannot be sent as JSON; use binary data"
        )

    # 1. Count the leaves (checking the depth) without touching them.
    if _is_exact_list(top):
        n = _list_size(top)
        if not _is_flat(top):
            flat = False
            step = _count_leaves(top, &n)
            if step == _TOO_DEEP:
                raise _too_deep(name)
            if step == _EXOTIC:
                return _reference.json_to_array(data, datatype, count, name)
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
        out = _empty(count, _OBJECT)  # as the reference: before looking at the elements
        if type(count) is not int and not (type(out) is _ndarray and out.shape == (n,)):
            return _reference.json_to_array(data, datatype, count, name)
    else:
        out = _empty(n, _FP64 if spec.kind == _K_FP16 else _DTYPES[spec_id])

    # 2. Line the leaves up (no copy for a flat list), then check and convert them in order.
    #    No Python code runs from here on until the fill loop returns (bar an encoding error).
    if not _is_list(top):
        items = &top
    elif flat:
        items = (<PyListObject*>top).ob_item
    else:
        gathered = <PyObject**>PyMem_Malloc(max(n, 1) * sizeof(PyObject*))
        if gathered == NULL:
            raise MemoryError()
        if _gather(top, n, gathered) != 0:  # count's __eq__/__index__ changed the data
            PyMem_Free(gathered)
            return _reference.json_to_array(data, datatype, count, name)
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
            if spec.kind == _K_INT or spec.kind == _K_UINT64:
                if type(value) is int:
                    raise _out_of_range(name, datatype, value)
            raise _bad_element(name, datatype, value)
    finally:
        PyMem_Free(gathered)
    if r == _DELEGATE:
        return _reference.json_to_array(data, datatype, count, name)
    if spec.kind == _K_FP16:
        return out.astype(_DTYPES[spec_id])
    return out



def decode_bytes(blob, count, name):
    """Split a BYTES blob into exactly *count* elements (an object array of ``bytes``).

    :raises InvalidInputError: when a length prefix runs past the blob, or the blob holds more or
        fewer than *count* elements.
    """
    cdef const unsigned char[::1] buf
    cdef Py_ssize_t size, offset = 0, i, n
    cdef uint32_t length
    cdef Py_buffer slots
    cdef PyObject** out_items
    cdef PyObject* old

    if type(blob) is bytes or type(blob) is bytearray:
        buf = blob
    else:
        view = memoryview(blob)  # the reference's TypeError for what is not a buffer
        if not (view.ndim == 1 and view.format == "B" and view.c_contiguous):
            return _reference.decode_bytes(blob, count, name)
        buf = view
    out = _empty(count, _OBJECT)
    n = count if type(count) is int else _index(count)  # as range(count)
    if type(count) is not int and not (type(out) is _ndarray and out.shape == (n,)):
        return _reference.decode_bytes(blob, count, name)
    size = buf.shape[0]

    PyObject_GetBuffer(out, &slots, PyBUF_WRITABLE)
    try:
        out_items = <PyObject**>slots.buf
        for i in range(n):
            if size - offset < 4:
                raise InvalidInputError(
                    f"input {name!r}: BYTES data holds {i} elements, shape needs {count}"
                )
            length = (
                <uint32_t>buf[offset]
                | (<uint32_t>buf[offset + 1] << 8)
                | (<uint32_t>buf[offset + 2] << 16)
                | (<uint32_t>buf[offset + 3] << 24)
            )
            offset += 4
            if <uint64_t>length > <uint64_t>(size - offset):
                raise InvalidInputError(
                    f"input {name!r}: BYTES element {i} of {length} bytes runs past the end of the data"
                )
            element = PyBytes_FromStringAndSize(<const char*>&buf[0] + offset, length)
            old = out_items[i]
            Py_INCREF(element)
            out_items[i] = <PyObject*>element
            Py_XDECREF(old)
            offset += length
    finally:
        PyBuffer_Release(&slots)
    if offset != size:
        raise InvalidInputError(
            f"input {name!r}: BYTES data has {size - offset} bytes left after {count} elements"
        )
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
        PyObject_GetBuffer(flat, &view, PyBUF_WRITABLE)
        acquired = True
        holder = flat
        items = <PyObject**>view.buf
        n = view.len // sizeof(PyObject*)
    else:
        holder = list(flat)  # numpy scalars (np.bytes_/np.str_ for S/U arrays), as iteration
        items = (<PyListObject*><PyObject*>holder).ob_item
        n = len(holder)
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
