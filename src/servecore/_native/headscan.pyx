# cython: language_level=3
"""Compiled twin of :mod:`servecore.http.headscan`: a whole, plain HTTP/1.1 request in one call.

The pure-Python module is the specification (its docstring states the contract); this one
returns the same for every input. One pass over the bytes: the request line, then each header
line (its name lowercased as it is copied), then the body's bounds.
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport uint64_t
from libc.string cimport memcmp

METHODS = ("GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH")
MAX_LENGTH_DIGITS = 18
cdef enum:
    _MAX_LENGTH_DIGITS = 18

cdef str _V10 = "1.0"
cdef str _V11 = "1.1"

# byte classes: 1 token (tchar), 2 field value (HTAB, 0x20-0x7e, 0x80-0xff), 4 target (0x21-0x7e)
cdef unsigned char _CLASS[256]
cdef int _c
for _c in range(256):
    _CLASS[_c] = 0
    if _c == 9 or 0x20 <= _c <= 0x7e or _c >= 0x80:
        _CLASS[_c] |= 2
    if 0x21 <= _c <= 0x7e:
        _CLASS[_c] |= 4
for _c in b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz":
    _CLASS[_c] |= 1


cdef inline unsigned char _lower(unsigned char c) noexcept nogil:
    return c + 32 if 65 <= c <= 90 else c


cdef inline bint _is(const unsigned char* p, Py_ssize_t n, const char* lowered, Py_ssize_t m) noexcept nogil:
    """Whether ``p[:n]``, lowercased, is *lowered*."""
    cdef Py_ssize_t i
    if n != m:
        return False
    for i in range(n):
        if _lower(p[i]) != <unsigned char>lowered[i]:
            return False
    return True


cdef object _method(const unsigned char* p, Py_ssize_t n):
    if n == 3:
        if memcmp(p, b"GET", 3) == 0:
            return "GET"
        if memcmp(p, b"PUT", 3) == 0:
            return "PUT"
    elif n == 4:
        if memcmp(p, b"POST", 4) == 0:
            return "POST"
        if memcmp(p, b"HEAD", 4) == 0:
            return "HEAD"
    elif n == 5:
        if memcmp(p, b"PATCH", 5) == 0:
            return "PATCH"
    elif n == 6:
        if memcmp(p, b"DELETE", 6) == 0:
            return "DELETE"
    elif n == 7:
        if memcmp(p, b"OPTIONS", 7) == 0:
            return "OPTIONS"
    return None


@cython.boundscheck(False)
@cython.wraparound(False)
def scan_request(bytes data not None, Py_ssize_t start, Py_ssize_t max_head):
    """The plain request in ``data[start:]``, or None (see the twin's contract)."""
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t size = PyBytes_GET_SIZE(data)
    cdef Py_ssize_t limit, pos, mark, name_end, value_start, value_end, i, end
    cdef uint64_t length = 0
    cdef bint has_length = False, close = False, keep = False, has_connection = False
    cdef unsigned char c
    cdef object method, version, target
    cdef bytes lowered
    cdef char* out
    cdef list headers
    if start < 0 or start > size or max_head < 0:
        return None
    limit = size if max_head > size - start else start + max_head
    # the request line: METHOD SP /target SP HTTP/1.x CRLF
    pos = start
    while pos < limit and 65 <= p[pos] <= 90:
        pos += 1
    method = _method(p + start, pos - start)
    if method is None or pos >= limit or p[pos] != 32:
        return None
    pos += 1
    mark = pos
    if pos >= limit or p[pos] != 47:  # '/'
        return None
    while pos < limit and _CLASS[p[pos]] & 4:
        pos += 1
    end = pos  # the target's end
    if limit - pos < 11 or memcmp(p + pos, b" HTTP/1.", 8) != 0 or p[pos + 9] != 13 or p[pos + 10] != 10:
        return None
    c = p[pos + 8]
    if c == 49:
        version = _V11
    elif c == 48:
        version = _V10
    else:
        return None
    target = data[mark:end]
    pos += 11
    headers = []
    while True:
        if pos + 1 < size and p[pos] == 13 and p[pos + 1] == 10:
            break
        mark = pos
        while pos < limit and _CLASS[p[pos]] & 1:
            pos += 1
        name_end = pos
        if name_end == mark or pos >= limit or p[pos] != 58:  # ':'
            return None
        pos += 1
        while pos < limit and (p[pos] == 32 or p[pos] == 9):
            pos += 1
        value_start = pos
        while pos < limit and _CLASS[p[pos]] & 2:
            pos += 1
        value_end = pos
        if limit - pos < 2 or p[pos] != 13 or p[pos + 1] != 10:
            return None
        pos += 2
        if _is(p + mark, name_end - mark, b"content-length", 14):
            if has_length or value_end == value_start or value_end - value_start > _MAX_LENGTH_DIGITS:
                return None
            for i in range(value_start, value_end):
                c = p[i]
                if not 48 <= c <= 57:
                    return None
                length = length * 10 + (c - 48)
            has_length = True
        elif _is(p + mark, name_end - mark, b"connection", 10):
            if has_connection:
                return None
            has_connection = True
            if _is(p + value_start, value_end - value_start, b"close", 5):
                close = True
            elif _is(p + value_start, value_end - value_start, b"keep-alive", 10):
                keep = True
            else:
                return None
        elif (
            _is(p + mark, name_end - mark, b"transfer-encoding", 17)
            or _is(p + mark, name_end - mark, b"upgrade", 7)
            or _is(p + mark, name_end - mark, b"expect", 6)
        ):
            return None
        lowered = PyBytes_FromStringAndSize(NULL, name_end - mark)
        out = PyBytes_AS_STRING(lowered)
        for i in range(name_end - mark):
            out[i] = <char>_lower(p[mark + i])
        headers.append((lowered, data[value_start:value_end]))
    pos += 2
    if pos > limit or length > <uint64_t>(size - pos):
        return None
    end = pos + <Py_ssize_t>length
    return (
        method, target, version, headers, (not close) if version is _V11 else keep, data[pos:end], end
    )
