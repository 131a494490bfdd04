# cython: language_level=3
"""Compiled twin of :mod:`servecore.codec.jsondata`: JSON tensor data cut out of a request.

The pure-Python module is the specification (its docstring states the contract); this one
returns the same for every input. The scanner is the same recursive descent over the bytes, in
C, bounded by ``MAX_DEPTH``; numbers are read straight into the output array:

* integers: the digits accumulated into a ``uint64_t`` (at most 18, or 15 for a float array, so
  they are exact);
* FP32: ``float32(double nearest the number)`` without the double. With at most 19 digits and
  the exponent within +-22, ``x = mantissa * 10**e`` in doubles (``10**e`` from a table, rounded
  for e < 0; no division) is within 3 * 2**-53 of the number (relative: three roundings), and the
  nearest double within 4 * 2**-53; both lie in ``x * (1 +- 2**-50)``, itself rounded. When
  both ends of that interval round to the same float, so does the nearest double (the cast is
  monotonic), and that float is the answer; otherwise (about one number in 2**25, and numbers
  of more digits or larger exponents) the double comes from ``PyOS_string_to_double``, CPython's
  correctly rounded ``float()``, and is cast.
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from libc.float cimport FLT_MIN
from libc.math cimport fabs, isinf
from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.string cimport memcpy

import sys

import numpy as np

cimport numpy as cnp

cnp.import_array()

cdef extern from "Python.h":
    ctypedef struct PyObject
    double PyOS_string_to_double(const char* s, char** endptr, PyObject* overflow_exception) except? -1.0

MAX_DEPTH = 64
MAX_NUMBER_BYTES = 64
MAX_CUTS = 64
cdef enum:
    _MAX_DEPTH = 64
    _MAX_INT_DIGITS_FLOAT = 15
    _MAX_INT_DIGITS = 18
    _MAX_NUMBER_BYTES = 64
    _MAX_CUTS = 64  # inputs with data in a request that is cut

cdef enum _Type:
    _NONE = 0
    _FP32 = 1
    _INT32 = 2
    _INT64 = 3

cdef double _P10[23]  # 10**k, exact: 5**22 < 2**53
cdef double _N10[23]  # 10**-k, correctly rounded (one division of exact operands)
cdef int _i
for _i in range(23):
    _P10[_i] = 10.0 ** _i
    _N10[_i] = 1.0 / _P10[_i]

#: eight digits are read at once (SWAR) from little-endian loads
cdef bint _LITTLE = sys.byteorder == "little"


cdef inline bint _eight_digits(const unsigned char* p, uint64_t* value) noexcept:
    """Whether p[0:8] are all ASCII digits, and their value (fast_float's trick)."""
    cdef uint64_t v
    memcpy(&v, p, 8)
    if ((v & 0xF0F0F0F0F0F0F0F0ULL) | (((v + 0x0606060606060606ULL) & 0xF0F0F0F0F0F0F0F0ULL) >> 4)) != 0x3333333333333333ULL:
        return False
    v = ((v & 0x0F0F0F0F0F0F0F0FULL) * 2561) >> 8
    v = ((v & 0x00FF00FF00FF00FFULL) * 6553601) >> 16
    value[0] = ((v & 0x0000FFFF0000FFFFULL) * 42949672960001ULL) >> 32
    return True


cdef object _DTYPES = {_FP32: np.dtype(np.float32), _INT32: np.dtype(np.int32), _INT64: np.dtype(np.int64)}
cdef object _NAMES = {_FP32: "FP32", _INT32: "INT32", _INT64: "INT64"}


cdef struct _Number:
    uint64_t mantissa
    int digits  # of the integer and fraction parts together
    int exponent  # decimal: value = mantissa * 10**exponent
    bint negative
    bint is_int
    Py_ssize_t start, end  # the token


cdef struct _Buffer:
    char* data
    Py_ssize_t used, capacity  # bytes


cdef struct _Cut:
    Py_ssize_t start, end  # the data array's bytes, "[" to "]"
    Py_ssize_t index  # the input's
    _Type kind
    _Buffer values


@cython.final
cdef class _Scan:
    cdef const unsigned char* raw
    cdef Py_ssize_t n, pos
    cdef _Cut cuts[_MAX_CUTS]
    cdef int count

    def __cinit__(self):
        self.count = 0

    def __dealloc__(self):
        cdef int i
        for i in range(self.count):
            PyMem_Free(self.cuts[i].values.data)

    # -- tokens ---------------------------------------------------------------------------------

    cdef inline void ws(self) noexcept:
        cdef unsigned char c
        while self.pos < self.n:
            c = self.raw[self.pos]
            if c == 32 or c == 9 or c == 10 or c == 13:
                self.pos += 1
            else:
                return

    cdef inline int peek(self) noexcept:
        """The next byte after whitespace, or -1 at the end."""
        self.ws()
        if self.pos >= self.n:
            return -1
        return self.raw[self.pos]

    cdef inline bint expect(self, unsigned char c) noexcept:
        if self.peek() != c:
            return False
        self.pos += 1
        return True

    cdef bint string(self, Py_ssize_t* start, Py_ssize_t* end) noexcept:
        """A string without escapes or control characters, in valid UTF-8; its contents' bytes."""
        cdef unsigned char c
        if self.peek() != 34:  # "
            return False
        self.pos += 1
        start[0] = self.pos
        while self.pos < self.n:
            c = self.raw[self.pos]
            if c == 34:
                end[0] = self.pos
                self.pos += 1
                return True
            if c == 92 or c < 32:  # a backslash or a control character
                return False
            if c >= 0x80:
                if not self.utf8():
                    return False
            else:
                self.pos += 1
        return False

    cdef bint utf8(self) noexcept:
        """One UTF-8 sequence at pos, as strictly as CPython's decoder (no overlong forms, no
        surrogates, nothing past U+10FFFF)."""
        cdef const unsigned char* p = self.raw + self.pos
        cdef Py_ssize_t left = self.n - self.pos, length, i
        cdef unsigned char c = p[0], low = 0x80, high = 0xBF
        if 0xC2 <= c <= 0xDF:
            length = 2
        elif 0xE0 <= c <= 0xEF:
            length = 3
            if c == 0xE0:
                low = 0xA0
            elif c == 0xED:
                high = 0x9F
        elif 0xF0 <= c <= 0xF4:
            length = 4
            if c == 0xF0:
                low = 0x90
            elif c == 0xF4:
                high = 0x8F
        else:
            return False
        if left < length or not (low <= p[1] <= high):
            return False
        for i in range(2, length):
            if not (0x80 <= p[i] <= 0xBF):
                return False
        self.pos += length
        return True

    cdef inline bint number(self, _Number* num) noexcept:
        """A strict JSON number at pos (no whitespace skipped), read into *num*."""
        cdef const unsigned char* raw = self.raw
        cdef Py_ssize_t n = self.n, p = self.pos
        cdef uint64_t mantissa = 0, chunk
        cdef int digits = 0, exponent = 0, frac = 0, exp_sign = 1
        cdef bint negative = False, is_int = True
        cdef unsigned char c
        num.start = p
        if p < n and raw[p] == 45:  # -
            negative = True
            p += 1
        if p >= n or not (48 <= raw[p] <= 57):
            return False
        if raw[p] == 48:  # a leading 0 stands alone
            digits = 1
            p += 1
        else:
            while _LITTLE and digits <= 11 and p + 8 <= n and _eight_digits(raw + p, &chunk):
                mantissa = mantissa * 100000000 + chunk
                digits += 8
                p += 8
            while p < n and 48 <= raw[p] <= 57:
                if digits < 19:
                    mantissa = mantissa * 10 + (raw[p] - 48)
                digits += 1
                p += 1
        if p < n and raw[p] == 46:  # .
            is_int = False
            p += 1
            if p >= n or not (48 <= raw[p] <= 57):
                return False
            while _LITTLE and digits <= 11 and p + 8 <= n and _eight_digits(raw + p, &chunk):
                mantissa = mantissa * 100000000 + chunk
                frac += 8
                digits += 8
                p += 8
            while p < n and 48 <= raw[p] <= 57:
                if digits < 19:
                    mantissa = mantissa * 10 + (raw[p] - 48)
                    frac += 1
                digits += 1
                p += 1
        if p < n and (raw[p] == 101 or raw[p] == 69):  # e E
            is_int = False
            p += 1
            if p < n and (raw[p] == 43 or raw[p] == 45):
                if raw[p] == 45:
                    exp_sign = -1
                p += 1
            if p >= n or not (48 <= raw[p] <= 57):
                return False
            while p < n and 48 <= raw[p] <= 57:
                if exponent < 100000:
                    exponent = exponent * 10 + (raw[p] - 48)
                p += 1
        num.mantissa = mantissa
        num.digits = digits
        num.exponent = exp_sign * exponent - frac
        num.negative = negative
        num.is_int = is_int
        num.end = p
        self.pos = p
        return True

    # -- values ---------------------------------------------------------------------------------

    cdef bint value(self, int depth) noexcept:
        """Skip one JSON value, checking it."""
        cdef int c = self.peek()
        cdef Py_ssize_t a, b
        cdef _Number num
        if c == 123:  # {
            return self.object(depth + 1)
        if c == 91:  # [
            return self.array(depth + 1)
        if c == 34:
            return self.string(&a, &b)
        if c == 45 or 48 <= c <= 57:
            return self.number(&num)
        if self._literal(b"true", 4) or self._literal(b"false", 5) or self._literal(b"null", 4):
            return True
        return False

    cdef inline bint _literal(self, const char* word, Py_ssize_t length) noexcept:
        cdef Py_ssize_t i
        if self.pos + length > self.n:
            return False
        for i in range(length):
            if self.raw[self.pos + i] != <unsigned char>word[i]:
                return False
        self.pos += length
        return True

    cdef bint object(self, int depth) noexcept:
        cdef Py_ssize_t a, b
        if depth > _MAX_DEPTH or not self.expect(123):
            return False
        if self.peek() == 125:  # }
            self.pos += 1
            return True
        while True:
            if not self.string(&a, &b) or not self.expect(58) or not self.value(depth):
                return False
            if self.peek() == 44:  # ,
                self.pos += 1
                continue
            return self.expect(125)

    cdef bint array(self, int depth) noexcept:
        if depth > _MAX_DEPTH or not self.expect(91):
            return False
        if self.peek() == 93:  # ]
            self.pos += 1
            return True
        while True:
            if not self.value(depth):
                return False
            if self.peek() == 44:
                self.pos += 1
                continue
            return self.expect(93)

    cdef inline bint _key(self, Py_ssize_t a, Py_ssize_t b, const char* word, Py_ssize_t length) noexcept:
        cdef Py_ssize_t i
        if b - a != length:
            return False
        for i in range(length):
            if self.raw[a + i] != <unsigned char>word[i]:
                return False
        return True

    # -- the request ----------------------------------------------------------------------------

    cdef bint document(self) noexcept:
        cdef Py_ssize_t a, b
        cdef bint seen_inputs = False
        if not self.expect(123):
            return False
        if self.peek() == 125:
            self.pos += 1
        else:
            while True:
                if not self.string(&a, &b) or not self.expect(58):
                    return False
                if self._key(a, b, b"inputs", 6):
                    if seen_inputs:
                        return False
                    seen_inputs = True
                    if self.peek() == 91:
                        if not self.inputs():
                            return False
                    elif not self.value(1):
                        return False
                elif not self.value(1):
                    return False
                if self.peek() == 44:
                    self.pos += 1
                    continue
                if not self.expect(125):
                    return False
                break
        self.ws()
        return self.pos == self.n

    cdef bint inputs(self) noexcept:
        cdef Py_ssize_t index = 0
        self.pos += 1  # [
        if self.peek() == 93:
            self.pos += 1
            return True
        while True:
            if self.peek() == 123:
                if not self.an_input(index):
                    return False
            elif not self.value(2):
                return False
            index += 1
            if self.peek() == 44:
                self.pos += 1
                continue
            return self.expect(93)

    cdef bint an_input(self, Py_ssize_t index) noexcept:
        cdef Py_ssize_t a, b
        cdef bint seen_datatype = False, seen_data = False
        cdef _Type kind = _NONE
        self.pos += 1  # {
        if self.peek() == 125:
            self.pos += 1
            return True
        while True:
            if not self.string(&a, &b) or not self.expect(58):
                return False
            if self._key(a, b, b"datatype", 8):
                if seen_datatype:
                    return False
                seen_datatype = True
                if self.peek() == 34:
                    if not self.string(&a, &b):
                        return False
                    kind = self._type(a, b)
                elif not self.value(3):
                    return False
            elif self._key(a, b, b"data", 4):
                if seen_data:
                    return False
                seen_data = True
                if kind == _NONE or self.peek() != 91 or self.count >= _MAX_CUTS:
                    return False  # data that is not cut: all of the document is orjson's
                if not self.data(index, kind):
                    return False
            elif not self.value(3):
                return False
            if self.peek() == 44:
                self.pos += 1
                continue
            return self.expect(125)

    cdef _Type _type(self, Py_ssize_t a, Py_ssize_t b) noexcept:
        if self._key(a, b, b"FP32", 4):
            return _FP32
        if self._key(a, b, b"INT32", 5):
            return _INT32
        if self._key(a, b, b"INT64", 5):
            return _INT64
        return _NONE

    cdef bint data(self, Py_ssize_t index, _Type kind) noexcept:
        """A data array, cut: flat, all numbers, all converted (else the document is not cut)."""
        cdef Py_ssize_t itemsize = 8 if kind == _INT64 else 4
        cdef _Cut* cut = &self.cuts[self.count]
        cdef _Number num
        cdef int c
        cut.start = self.pos
        cut.index = index
        cut.kind = kind
        cut.values.data = NULL
        cut.values.used = 0
        cut.values.capacity = 0
        self.count += 1  # from here on __dealloc__ frees the buffer
        self.pos += 1  # [
        while True:
            c = self.peek()
            if not (c == 45 or 48 <= c <= 57):
                if c == 93 and cut.values.used == 0:
                    self.pos += 1
                    break
                return False
            if not self.number(&num) or not self.store(&cut.values, &num, kind, itemsize):
                return False
            c = self.peek()
            self.pos += 1
            if c == 93:
                break
            if c != 44:
                return False
        cut.end = self.pos
        return True

    cdef inline bint store(self, _Buffer* buf, _Number* num, _Type kind, Py_ssize_t itemsize) noexcept:
        """Append *num* converted to *kind*; False when it is not cut (see the twin's ``convert``)."""
        cdef char* grown
        cdef double d
        cdef int64_t i
        if num.end - num.start > _MAX_NUMBER_BYTES:
            return False
        if buf.used + itemsize > buf.capacity:
            grown = <char*>PyMem_Realloc(buf.data, 2 * buf.capacity + 256 * itemsize)
            if grown == NULL:
                return False
            buf.data = grown
            buf.capacity = 2 * buf.capacity + 256 * itemsize
        if kind == _INT32 or kind == _INT64:
            if not num.is_int or num.digits > _MAX_INT_DIGITS:
                return False
            i = <int64_t>num.mantissa
            if num.negative:
                i = -i
            if kind == _INT32:
                if i < -2147483648 or i > 2147483647:
                    return False
                (<int32_t*>(buf.data + buf.used))[0] = <int32_t>i
            else:
                (<int64_t*>(buf.data + buf.used))[0] = i
            buf.used += itemsize
            return True
        if num.is_int:
            if num.digits > _MAX_INT_DIGITS_FLOAT:
                return False
            d = <double>num.mantissa
            if num.negative and num.mantissa != 0:
                d = -d
            (<float*>(buf.data + buf.used))[0] = <float>d
        elif not self.float32(num, <float*>(buf.data + buf.used)):
            return False
        buf.used += itemsize
        return True

    cdef inline bint float32(self, _Number* num, float* out) noexcept:
        cdef double x, d
        cdef float low, high
        if num.digits <= 19 and -22 <= num.exponent <= 22:
            # a signed conversion is one instruction; only 19 digits can pass 2**63
            x = <double><int64_t>num.mantissa if num.mantissa < 0x8000000000000000ULL else <double>num.mantissa
            if num.exponent >= 0:
                x = x * _P10[num.exponent]
            else:
                x = x * _N10[-num.exponent]  # three roundings in all: within 2**-51.4
            low = <float>(x * (1.0 - 8.881784197001252e-16))  # 2**-50
            high = <float>(x * (1.0 + 8.881784197001252e-16))
            if low == high:
                if isinf(low):
                    return False  # the cast overflows
                out[0] = -low if num.negative else low
                return True
        if not self.exact(num, &d) or isinf(d):
            return False
        if d != 0.0 and fabs(d) < FLT_MIN:
            return False  # the cast underflows
        low = <float>d
        if isinf(low):
            return False
        out[0] = low
        return True

    cdef bint exact(self, _Number* num, double* out) noexcept:
        """The double nearest the number, by CPython's correctly rounded conversion."""
        cdef char text[_MAX_NUMBER_BYTES + 1]
        cdef Py_ssize_t length = num.end - num.start
        cdef char* end
        memcpy(text, self.raw + num.start, length)
        text[length] = 0
        try:
            out[0] = PyOS_string_to_double(text, &end, NULL)  # NULL: +-HUGE_VAL past the range
        except Exception:
            return False
        return end == text + length


def cut_json_data(const unsigned char[::1] raw not None):
    """*raw* with its inputs' numeric ``data`` arrays set aside, or None (see the twin)."""
    cdef _Scan scan = _Scan()
    cdef Py_ssize_t total, last, i, offset
    cdef bytes text
    cdef char* out
    cdef _Cut* cut
    if raw.shape[0] == 0:
        return None
    scan.raw = &raw[0]
    scan.n = raw.shape[0]
    scan.pos = 0
    if not scan.document() or scan.count == 0:
        return None
    total = scan.n
    for i in range(scan.count):
        total -= scan.cuts[i].end - scan.cuts[i].start - 4
    text = PyBytes_FromStringAndSize(NULL, total)
    out = PyBytes_AS_STRING(text)
    last = 0
    offset = 0
    arrays = {}
    for i in range(scan.count):
        cut = &scan.cuts[i]
        memcpy(out + offset, scan.raw + last, cut.start - last)
        offset += cut.start - last
        memcpy(out + offset, b"null", 4)
        offset += 4
        last = cut.end
        array = np.empty(cut.values.used // (8 if cut.kind == _INT64 else 4), dtype=_DTYPES[cut.kind])
        if cut.values.used:
            memcpy(cnp.PyArray_DATA(<cnp.ndarray>array), cut.values.data, cut.values.used)
        arrays[cut.index] = (_NAMES[cut.kind], array)
    memcpy(out + offset, scan.raw + last, scan.n - last)
    return text, arrays
