"""Argument checks and counter arithmetic shared by both drift-state implementations.

The compiled twin (:mod:`servecore._native.drift`) imports these, so both raise the same errors
with the same messages and saturate and merge by the same rules.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from servecore.drift.keys import normalise_text
from servecore.drift.snapshot import UINT64_MAX


def check_edges(edges: object) -> np.ndarray:
    """*edges* as a new float64 array: 1-D, at least 2, finite, strictly increasing."""
    try:
        arr = np.array(edges, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"edges must be a sequence of floats: {exc}") from None
    if arr.ndim != 1 or arr.size < 2:
        raise ValueError(f"edges must be 1-D with at least 2 values, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("edges must be finite")
    if not np.all(arr[1:] > arr[:-1]):
        raise ValueError("edges must be strictly increasing (deduplicate ties first)")
    arr += 0.0  # -0.0 -> 0.0
    return arr


def check_values(values: object) -> np.ndarray:
    """*values* if it is a 1-D float64 array, else TypeError (convert other dtypes first)."""
    if not isinstance(values, np.ndarray) or values.dtype != np.float64 or values.ndim != 1:
        what = (
            f"{values.dtype} array of shape {values.shape}"
            if isinstance(values, np.ndarray)
            else type(values).__name__
        )
        raise TypeError(f"values must be a 1-D float64 numpy array, got {what}")
    return values


def check_vocabulary(vocabulary: Sequence[str]) -> tuple[str, ...]:
    """*vocabulary* as a tuple of distinct, non-empty, normalised keys."""
    if isinstance(vocabulary, str):
        raise TypeError("vocabulary must be a sequence of keys, not one string")
    keys = tuple(vocabulary)
    for key in keys:
        if not isinstance(key, str) or not key or normalise_text(key) != key:
            raise ValueError(
                f"vocabulary key {key!r} is not a key (a non-empty, NFC, <= 128 chars str)"
            )
    if len(set(keys)) != len(keys):
        raise ValueError("vocabulary keys must be distinct")
    return keys


def check_count(n: object) -> int:
    """*n* as a count to add: a non-negative int, capped at 2**64-1 (counters saturate)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"a count must be a non-negative int, got {n!r}")
    return min(int(n), UINT64_MAX)


def as_sequence(values: object) -> Sequence[object]:
    """The items of a 1-D array (as Python objects) or of a list/tuple, for categorical updates."""
    if isinstance(values, np.ndarray):
        if values.ndim != 1:
            raise ValueError(f"values must be 1-D, got shape {values.shape}")
        items: list[object] = values.tolist()
        return items
    if isinstance(values, (list, tuple)):
        return values
    raise TypeError(f"values must be a 1-D numpy array, list or tuple, got {type(values).__name__}")


def layout_mismatch(what: str) -> ValueError:
    """The error for merging states of different layouts."""
    return ValueError(f"cannot merge histograms with different {what}")


def saturating_add(a: int, b: int) -> int:
    """``a + b`` capped at 2**64-1."""
    total = a + b
    return min(UINT64_MAX, total)


def chan_merge(
    n_a: int, mean_a: float, m2_a: float, n_b: int, mean_b: float, m2_b: float
) -> tuple[int, float, float]:
    """Chan et al.'s parallel merge of two Welford triples ``(n, mean, M2)``.

    The compiled twin evaluates the same expressions in the same order on C doubles.
    """
    if n_b == 0:
        return n_a, mean_a, m2_a
    if n_a == 0:
        return n_b, mean_b, m2_b
    n = saturating_add(n_a, n_b)
    fn = float(n)
    delta = mean_b - mean_a
    mean = mean_a + delta * (float(n_b) / fn)
    m2 = m2_a + m2_b + delta * delta * (float(n_a) * float(n_b) / fn)
    return n, mean, m2
