"""Type stubs for the compiled twin of :mod:`servecore.batching.gather` (``gather.pyx``).

The C types the implementation works with are noted in comments.
"""

from collections.abc import Sequence

import numpy as np

def gather(
    arrays: Sequence[np.ndarray],  # read through PyArray_DATA / PyArray_DIMS (npy_intp*); strided
    # ones are made contiguous first; one _Piece {const char* src; rows; row_bytes} each
    out: np.ndarray,  # C-contiguous, writeable: char* base, written with memcpy under nogil
    pad_value: float = 0,  # converted once to a 0-d array of out's dtype; its bytes
    # fill the padding (memset when they are all zero)
) -> None:
    """Copy *arrays* into consecutive rows of *out*, padding trailing dimensions with *pad_value*."""

def scatter(
    array: np.ndarray,
    rows: Sequence[int],  # exact ints taken as they are, others through operator.index
    tails: Sequence[tuple[int, ...]] | None = None,
) -> list[np.ndarray]:  # views of *array*
    """Split *array* along its first axis into pieces of *rows* rows: views, no copies."""
