"""Pure-Python twin of :mod:`servecore._native.codec`: the protocol's hot loops, written for clarity.

This module is the specification; the compiled module implements the same three functions with
the same errors. ``SERVECORE_PURE_PYTHON=1`` selects this one (see :mod:`servecore.codec`).

* :func:`json_to_array` - JSON tensor data (flat or nested lists) to a 1-D numpy array, checking
  every element's JSON type against the datatype, integer ranges, nesting depth and the count.
* :func:`decode_bytes` - a BYTES blob (4-byte little-endian length prefix per element) to an
  object array of ``bytes``.
* :func:`encode_bytes` - the inverse.
"""

from __future__ import annotations

import struct
from typing import Final

import numpy as np

from servecore.codec.messages import bad_element, out_of_range, too_deep
from servecore.datatypes import NUMPY_DTYPES
from servecore.errors import BackendError, InvalidInputError

#: Deepest list nesting accepted in JSON tensor data (Triton's limit).
MAX_JSON_DEPTH: Final[int] = 100

_INT_RANGES: Final[dict[str, tuple[int, int]]] = {
    name: (int(np.iinfo(dt).min), int(np.iinfo(dt).max))
    for name, dt in NUMPY_DTYPES.items()
    if dt.kind in "iu"
}
_FLOATS: Final[frozenset[str]] = frozenset({"FP16", "FP32", "FP64"})
_LEN: Final = struct.Struct("<I")


def _flatten(data: object, name: str) -> list[object]:
    """All leaves of a (possibly nested) list, depth-first, refusing nesting past the limit."""
    if not isinstance(data, list):
        return [data]
    if not any(isinstance(item, list) for item in data):
        return data
    flat: list[object] = []
    # Depth-first with explicit stacks keeps element order and cannot hit Python's recursion limit.
    iters = [iter(data)]
    depths = [1]
    while iters:
        try:
            item = next(iters[-1])
        except StopIteration:
            iters.pop()
            depths.pop()
            continue
        if isinstance(item, list):
            depth = depths[-1] + 1
            if depth > MAX_JSON_DEPTH:
                raise too_deep(name, MAX_JSON_DEPTH)
            iters.append(iter(item))
            depths.append(depth)
        else:
            flat.append(item)
    return flat


def json_to_array(data: object, datatype: str, count: int, name: str) -> np.ndarray:
    """Convert JSON tensor *data* of V2 *datatype* to a 1-D array of exactly *count* elements.

    :param data: the ``data`` member of a request input: a flat or nested list, or one scalar.
    :param datatype: the input's V2 datatype (BF16 is refused: it has no JSON form).
    :param count: the element count its ``shape`` declares.
    :param name: the input's name, used in error messages.
    :raises InvalidInputError: on a wrong element type, an out-of-range integer, nesting deeper
        than :data:`MAX_JSON_DEPTH`, or an element count other than *count*.

    >>> json_to_array([[1, 2], [3, 4]], "INT32", 4, "x").tolist()
    [1, 2, 3, 4]
    """
    if datatype == "BF16":
        raise InvalidInputError(f"input {name!r}: BF16 data cannot be sent as JSON; use binary data")
    flat = _flatten(data, name)
    if len(flat) != count:
        raise InvalidInputError(
            f"input {name!r}: shape needs {count} elements but data has {len(flat)}"
        )
    if datatype in _FLOATS:
        for value in flat:
            if type(value) is not float and type(value) is not int:
                raise bad_element(name, datatype, value)
    elif datatype == "BOOL":
        for value in flat:
            if type(value) is not bool:
                raise bad_element(name, datatype, value)
    elif datatype == "BYTES":
        out = np.empty(count, dtype=object)
        for i, value in enumerate(flat):
            if type(value) is not str:
                raise bad_element(name, datatype, value)
            out[i] = value.encode("utf-8")
        return out
    elif datatype in _INT_RANGES:
        low, high = _INT_RANGES[datatype]
        for value in flat:
            if type(value) is not int:
                raise bad_element(name, datatype, value)
            if not low <= value <= high:
                raise out_of_range(name, datatype, value)
    else:
        raise InvalidInputError(f"input {name!r}: unsupported datatype {datatype!r}")
    return np.array(flat, dtype=NUMPY_DTYPES[datatype])


def decode_bytes(blob: bytes | memoryview, count: int, name: str) -> np.ndarray:
    """Split a BYTES blob into exactly *count* elements (an object array of ``bytes``).

    :raises InvalidInputError: when a length prefix runs past the blob, or the blob holds more or
        fewer than *count* elements.

    >>> decode_bytes(b"\\x01\\x00\\x00\\x00a\\x00\\x00\\x00\\x00", 2, "x").tolist()
    [b'a', b'']
    """
    view = memoryview(blob)
    elements: list[bytes] = []
    offset = 0
    size = len(view)
    for i in range(count):
        if offset + 4 > size:
            raise InvalidInputError(
                f"input {name!r}: BYTES data holds {i} elements, shape needs {count}"
            )
        (length,) = _LEN.unpack_from(view, offset)
        offset += 4
        if offset + length > size:
            raise InvalidInputError(
                f"input {name!r}: BYTES element {i} of {length} bytes runs past the end of the data"
            )
        elements.append(bytes(view[offset : offset + length]))
        offset += length
    if offset != size:
        raise InvalidInputError(
            f"input {name!r}: BYTES data has {size - offset} bytes left after {count} elements"
        )
    # Allocated only now: the client picks *count* through the shape, and only the blob bounds it
    # (4 bytes per element at least), so a huge count must be refused before it costs memory.
    out = np.empty(count, dtype=object)
    for i, element in enumerate(elements):
        out[i] = element
    return out


def encode_bytes(array: np.ndarray) -> bytes:
    """Serialise the elements of *array* (``bytes`` or ``str``, any shape) with length prefixes.

    >>> encode_bytes(np.array([b"a", ""], dtype=object))
    b'\\x01\\x00\\x00\\x00a\\x00\\x00\\x00\\x00'
    """
    parts: list[bytes] = []
    for value in array.ravel():
        if isinstance(value, str):
            raw = value.encode("utf-8")
        elif isinstance(value, (bytes, bytearray, memoryview)):
            raw = bytes(value)
        else:
            raise BackendError(f"a BYTES tensor holds a {type(value).__name__} element; elements must be bytes or str")
        parts.append(_LEN.pack(len(raw)))
        parts.append(raw)
    return b"".join(parts)
