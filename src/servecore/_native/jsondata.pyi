"""Type stubs for the compiled twin of :mod:`servecore.codec.jsondata` (``jsondata.pyx``)."""

from typing import Final

import numpy as np

MAX_DEPTH: Final[int]  # = 64; C: enum _MAX_DEPTH bounds the recursive descent
MAX_NUMBER_BYTES: Final[int]  # = 64; the stack buffer of the exact conversion
MAX_CUTS: Final[int]  # = 64; the scanner's fixed array of cuts

def cut_json_data(
    raw: bytes | bytearray | memoryview,  # const unsigned char[::1]
) -> tuple[bytes, dict[int, tuple[str, np.ndarray]]] | None:
    """*raw* with its inputs' numeric ``data`` arrays set aside, or None (see the twin)."""
