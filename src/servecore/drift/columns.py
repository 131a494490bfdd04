"""Turning an input column into what a histogram takes, counting what does not fit.

Shared by the profile builder and the windows, so reference and serving data are read alike.
"""

from __future__ import annotations

import math

import numpy as np

_NUMBER_TYPES = (int, float, np.integer, np.floating)
_BOOL_TYPES = (bool, np.bool_)


def as_column(values: object) -> np.ndarray | None:
    """*values* as a 1-D array (an ``(n, 1)`` array is flattened), or None for another shape.

    A list or tuple becomes an object array, so its items keep their Python types.
    """
    if isinstance(values, (list, tuple)):
        arr = np.empty(len(values), dtype=object)
        arr[:] = values
        return arr
    if not isinstance(values, np.ndarray):
        return None
    if values.ndim == 2 and values.shape[1] == 1:
        return values[:, 0]
    return values if values.ndim == 1 else None


def is_numeric_column(column: np.ndarray) -> bool:
    """Whether a reference column is numeric: ints/floats, or objects mostly real numbers.

    An object column is numeric when real numbers (not bools) are more than half of its
    non-missing values; the rest then count as wrong types. Bool, string and bytes columns are
    categorical, and so is an object column of only missing values.
    """
    kind = column.dtype.kind
    if kind in "iuf":
        return True
    if kind != "O":
        return False
    numbers = others = 0
    for value in column.tolist():
        if value is None:
            continue
        if isinstance(value, _BOOL_TYPES) or not isinstance(value, _NUMBER_TYPES):
            others += 1
        else:
            numbers += 1
    return numbers > others


def numeric_values(column: np.ndarray) -> tuple[np.ndarray, int, int]:
    """``(values, n_null, n_wrongtype)``: the column's numbers as a 1-D float64 array.

    Ints, uints and floats are converted (numbers beyond float64 become ±inf); in an object
    column, ``None`` is missing, bools and non-numbers are wrong types, and the rest converts.
    A column of bools, strings, bytes, complex numbers or dates is all wrong types.
    """
    kind = column.dtype.kind
    if kind in "iuf":
        with np.errstate(over="ignore"):
            return column.astype(np.float64, copy=False), 0, 0
    if kind != "O":
        return np.empty(0, dtype=np.float64), 0, int(column.size)
    items = column.tolist()
    out = np.empty(len(items), dtype=np.float64)
    k = n_null = n_wrong = 0
    for value in items:
        if value is None:
            n_null += 1
        elif isinstance(value, _BOOL_TYPES) or not isinstance(value, _NUMBER_TYPES):
            n_wrong += 1
        else:
            try:
                out[k] = float(value)
            except OverflowError:  # an int beyond float64
                out[k] = math.inf if value > 0 else -math.inf
            k += 1
    return out[:k], n_null, n_wrong
