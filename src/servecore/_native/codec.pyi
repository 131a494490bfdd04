"""Type stubs for the compiled twin of :mod:`servecore.codec.reference` (``codec.pyx``).

The C types the implementation works with are noted in comments.
"""

from typing import Final

import numpy as np

#: Deepest list nesting accepted in JSON tensor data (Triton's limit).
MAX_JSON_DEPTH: Final[int]  # = 100; C: enum _MAX_DEPTH sizes the walker's stack

def json_to_array(
    data: object,  # walked as PyObject* leaves of exact lists (PyList_GET_ITEM)
    datatype: str,  # exact str, else the reference decides
    count: int,  # exact int, else the reference decides; Py_ssize_t leaf count compared to it
    name: str,  # only formatted into error messages
) -> np.ndarray:  # 1-D; filled through its buffer as double / float / uint8_t / intN_t / uint64_t
    """Convert JSON tensor *data* of V2 *datatype* to a 1-D array of exactly *count* elements."""

def decode_bytes(
    blob: bytes | bytearray | memoryview,  # const unsigned char[::1]
    count: int,  # exact int, else the reference decides; Py_ssize_t (clamped) loop bound
    name: str,
) -> np.ndarray:  # 1-D object array of bytes (PyObject** slots)
    """Split a BYTES blob into exactly *count* elements (an object array of ``bytes``)."""

def encode_bytes(
    array: np.ndarray,  # elements bytes or str (PyObject** of the raveled array)
) -> bytes:  # one PyBytes_FromStringAndSize(NULL, total), filled with memcpy
    """Serialise the elements of *array* (``bytes`` or ``str``, any shape) with length prefixes."""
