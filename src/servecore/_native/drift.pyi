"""Type stubs for the compiled twin of :mod:`servecore.drift.histogram` (``drift.pyx``).

The C types the implementation works with are noted in comments.
"""

from collections.abc import Sequence

import numpy as np

from servecore.drift.types import CategoricalState, NumericState

class NumericHistogram:
    """Counts over fixed reference edges, missing/non-finite counters, Welford and min/max.

    The compiled twin of :class:`servecore.drift.histogram.NumericHistogramPy`.
    """

    def __init__(
        self,
        edges: Sequence[float] | np.ndarray,  # checked by the twin's check_edges; kept as a
        # float64 array read through a const double[::1] memoryview
    ) -> None: ...
    def reset(self) -> None: ...
    def update(
        self,
        values: np.ndarray,  # 1-D float64 (checked by check_values), read as const double[:]
        # (any stride) in a nogil loop
    ) -> None:
        """Count *values* (a 1-D float64 array; convert other dtypes before calling)."""
    @staticmethod
    def update_block(
        matrix: np.ndarray, histograms: Sequence[NumericState | None]
    ) -> None:  # the module's update_block
        """Count each column of *matrix* into its histogram: see :func:`update_block`."""
    def count_null(self, n: int) -> None: ...  # uint64_t, saturating
    def count_wrong_type(self, n: int) -> None: ...  # uint64_t, saturating
    def merge(self, other: NumericState) -> None: ...  # must be a NumericHistogram
    def to_bytes(self) -> bytes: ...  # packed by servecore.drift.snapshot.pack_numeric
    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> NumericHistogram: ...
    @property
    def edges(self) -> np.ndarray: ...  # float64 copy
    @property
    def counts(self) -> np.ndarray: ...  # uint64 copy of the uint64_t[::1] counts
    @property
    def n_nan(self) -> int: ...  # uint64_t
    @property
    def n_pinf(self) -> int: ...  # uint64_t
    @property
    def n_ninf(self) -> int: ...  # uint64_t
    @property
    def n_null(self) -> int: ...  # uint64_t
    @property
    def n_wrongtype(self) -> int: ...  # uint64_t
    @property
    def n(self) -> int: ...  # uint64_t
    @property
    def mean(self) -> float: ...  # double
    @property
    def m2(self) -> float: ...  # double
    @property
    def min(self) -> float: ...  # double
    @property
    def max(self) -> float: ...  # double

def update_block(
    matrix: np.ndarray,  # 2-D float32 or float64 [rows, d] (checked by histogram.check_block),
    # read in place as const float[:, :] / const double[:, :] (any whole-item strides)
    histograms: Sequence[NumericState | None],  # d entries: NumericHistogram or None
) -> None:
    """Count column j of *matrix* into ``histograms[j]``, every column in one nogil call."""

class CategoricalHistogram:
    """Counts of vocabulary keys, ``__other__`` and null, plus a wrong-type counter.

    The compiled twin of :class:`servecore.drift.histogram.CategoricalHistogramPy`.
    """

    def __init__(self, vocabulary: Sequence[str]) -> None: ...  # key -> index dict
    def reset(self) -> None: ...
    def update(self, values: np.ndarray | Sequence[object]) -> None:
        """Count *values*: a 1-D array of any dtype (str, object, ints, ...), a list or tuple."""
    def count_null(self, n: int) -> None: ...  # uint64_t, saturating
    def count_wrong_type(self, n: int) -> None: ...  # uint64_t, saturating
    def merge(self, other: CategoricalState) -> None: ...  # must be a CategoricalHistogram
    def to_bytes(self) -> bytes: ...  # packed by servecore.drift.snapshot.pack_categorical
    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> CategoricalHistogram: ...
    @property
    def vocabulary(self) -> tuple[str, ...]: ...
    @property
    def counts(self) -> np.ndarray: ...  # uint64 copy of the uint64_t[::1] counts
    @property
    def n_other(self) -> int: ...  # uint64_t
    @property
    def n_null(self) -> int: ...  # uint64_t
    @property
    def n_wrongtype(self) -> int: ...  # uint64_t
    @property
    def n(self) -> int: ...  # uint64_t, saturating sum
