"""Pure-Python twin of :mod:`servecore._native.gather`: assemble a batch's inputs, split its outputs.

This module is the specification; the compiled twin has the same interface, results and errors.

:func:`gather` copies the tensors of one input name, one per request, into consecutive rows of
a preallocated batch tensor, padding each request's trailing dimensions up to the batch's with a
fill value. :func:`scatter` splits a batch output back into per-request views, undoing the
padding when asked.

>>> import numpy as np
>>> out = np.empty((3, 3), dtype=np.int32)
>>> gather([np.array([[1, 2]], np.int32), np.array([[3, 4, 5], [6, 7, 8]], np.int32)], out, -1)
>>> out.tolist()
[[1, 2, -1], [3, 4, 5], [6, 7, 8]]
>>> [piece.tolist() for piece in scatter(out, [1, 2], [(2,), (3,)])]
[[[1, 2]], [[3, 4, 5], [6, 7, 8]]]

Rules shared by both twins:

* ``out`` is a C-contiguous, writeable array of at least one dimension, allocated by the caller;
  the inputs must not overlap it.
* Every check runs before anything is written: on an error ``out`` is untouched. Checks run in
  this order: ``out`` itself, then each array in turn (type, dtype, rank, trailing dimensions,
  padding of object arrays), then the total row count, then the pad value.
* ``pad_value`` is converted to ``out``'s dtype as numpy assigns a scalar into an array, once,
  and only when some array actually needs padding.
* Arrays of a dtype holding Python objects (BYTES tensors are object arrays) are copied element by
  element as references and are never padded: their trailing dimensions must equal ``out``'s.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import numpy as np

__all__ = ["gather", "scatter"]


# --------------------------------------------------------------------------------------------
# Error messages (shared with the compiled twin, which imports them: one wording)


def _out_not_array(out: object) -> TypeError:
    return TypeError(f"out must be a numpy array, not {type(out).__name__}")


def _out_scalar() -> ValueError:
    return ValueError("out must have at least one dimension (the batch rows)")


def _out_layout() -> ValueError:
    return ValueError("out must be C-contiguous")


def _out_read_only() -> ValueError:
    return ValueError("out is read-only")


def _not_array(i: int, value: object) -> TypeError:
    return TypeError(f"arrays[{i}] must be a numpy array, not {type(value).__name__}")


def _dtype_mismatch(i: int, dtype: np.dtype, out_dtype: np.dtype) -> ValueError:
    return ValueError(f"arrays[{i}] has dtype {dtype}, but out has dtype {out_dtype}")


def _rank_mismatch(i: int, shape: tuple[int, ...], out_shape: tuple[int, ...]) -> ValueError:
    return ValueError(
        f"arrays[{i}] has {len(shape)} dimensions (shape {shape}), "
        f"but out has {len(out_shape)} (shape {out_shape})"
    )


def _tail_too_large(i: int, shape: tuple[int, ...], out_shape: tuple[int, ...]) -> ValueError:
    return ValueError(
        f"arrays[{i}] has trailing dimensions {shape[1:]}, larger than out's {out_shape[1:]}"
    )


def _object_padding(i: int, shape: tuple[int, ...], out_shape: tuple[int, ...]) -> ValueError:
    return ValueError(
        f"arrays[{i}] holds Python objects (BYTES) and cannot be padded: its trailing dimensions "
        f"{shape[1:]} must equal out's {out_shape[1:]}"
    )


def _rows_mismatch(total: int, out_rows: int) -> ValueError:
    return ValueError(f"the arrays hold {total} rows in all, but out has {out_rows}")


def _bad_pad(pad_value: object, dtype: np.dtype, error: Exception) -> ValueError:
    return ValueError(f"pad_value {pad_value!r} cannot be stored as {dtype}: {error}")


def _scatter_not_array(array: object) -> TypeError:
    return TypeError(f"array must be a numpy array, not {type(array).__name__}")


def _scatter_scalar() -> ValueError:
    return ValueError("array must have at least one dimension (the batch rows)")


def _negative_rows(i: int, rows: int) -> ValueError:
    return ValueError(f"rows[{i}] is {rows}; row counts must not be negative")


def _scatter_rows_mismatch(total: int, array_rows: int) -> ValueError:
    return ValueError(f"rows add up to {total}, but the array has {array_rows}")


def _tails_count(tails: int, rows: int) -> ValueError:
    return ValueError(f"{tails} tails given for {rows} row counts")


def _bad_tail(i: int, tail: tuple[int, ...], array_tail: tuple[int, ...]) -> ValueError:
    return ValueError(
        f"tails[{i}] is {tail}; it must have {len(array_tail)} dimensions, "
        f"each from 0 to the array's {array_tail}"
    )


# --------------------------------------------------------------------------------------------
# gather / scatter


def _pad_fill(pad_value: float, dtype: np.dtype) -> np.ndarray:
    """*pad_value* as a 0-d array of *dtype*, converted as numpy assigns it into an array."""
    fill = np.empty((), dtype=dtype)
    try:
        fill[()] = pad_value
    except (TypeError, ValueError, OverflowError) as e:
        raise _bad_pad(pad_value, dtype, e) from e
    return fill


def gather(
    arrays: Sequence[np.ndarray], out: np.ndarray, pad_value: float = 0
) -> None:
    """Copy *arrays* into consecutive rows of *out*, padding trailing dimensions with *pad_value*.

    :param arrays: arrays of shape ``[rows_i, *tail_i]``, of ``out``'s dtype and rank, with
        ``tail_i[k] <= out.shape[k + 1]``; any memory layout.
    :param out: the batch, shape ``[sum(rows_i), *tail_out]``, C-contiguous and writeable.
    :param pad_value: fills the positions beyond an array's own trailing dimensions (a
        float, int or bool).
    :raises TypeError: *out* or an element of *arrays* is not a numpy array.
    :raises ValueError: on a dtype or rank mismatch, trailing dimensions larger than ``out``'s,
        padding asked of an object array, a total row count other than ``out``'s, a *pad_value*
        that ``out``'s dtype cannot hold, or an unusable *out* (see the module docstring).

    >>> out = np.empty((2, 2), dtype=np.float32)
    >>> gather([np.ones((1, 2), np.float32), np.ones((1, 1), np.float32)], out, pad_value=0.5)
    >>> out.tolist()
    [[1.0, 1.0], [1.0, 0.5]]
    """
    if not isinstance(out, np.ndarray):
        raise _out_not_array(out)
    if out.ndim == 0:
        raise _out_scalar()
    if not out.flags.c_contiguous:
        raise _out_layout()
    if not out.flags.writeable:
        raise _out_read_only()
    arrays = list(arrays)
    dtype, shape, tail = out.dtype, out.shape, out.shape[1:]
    padded = False
    total = 0
    for i, a in enumerate(arrays):
        if not isinstance(a, np.ndarray):
            raise _not_array(i, a)
        if a.dtype != dtype:
            raise _dtype_mismatch(i, a.dtype, dtype)
        if a.ndim != out.ndim:
            raise _rank_mismatch(i, a.shape, shape)
        a_tail = a.shape[1:]
        if any(t > o for t, o in zip(a_tail, tail)):
            raise _tail_too_large(i, a.shape, shape)
        if a_tail != tail:
            if dtype.hasobject:
                raise _object_padding(i, a.shape, shape)
            padded = True
        total += a.shape[0]
    if total != shape[0]:
        raise _rows_mismatch(total, shape[0])
    fill = _pad_fill(pad_value, dtype) if padded else None

    row = 0
    for a in arrays:
        n = a.shape[0]
        dst = out[row : row + n]
        if a.shape[1:] == tail:
            dst[...] = a
        else:
            dst[...] = fill
            dst[(slice(None), *(slice(0, t) for t in a.shape[1:]))] = a
        row += n


def scatter(
    array: np.ndarray,
    rows: Sequence[int],
    tails: Sequence[tuple[int, ...]] | None = None,
) -> list[np.ndarray]:
    """Split *array* along its first axis into pieces of *rows* rows: views, no copies.

    :param array: a batch output, shape ``[sum(rows), *tail]``.
    :param rows: each request's row count, in batch order (integers, ``operator.index``).
    :param tails: each request's own trailing shape, to cut its piece back to (undoing the padding
        of :func:`gather`); None keeps the batch's trailing shape.
    :raises TypeError: *array* is not a numpy array, or a row count or tail is not integral.
    :raises ValueError: on a negative row count, row counts that do not add up to the array's,
        a number of tails other than of row counts, or a tail of another rank than the array's
        trailing shape or with a dimension outside ``0..`` the array's.

    >>> batch = np.arange(6).reshape(3, 2)
    >>> [p.tolist() for p in scatter(batch, [2, 1], [(2,), (1,)])]
    [[[0, 1], [2, 3]], [[4]]]
    """
    if not isinstance(array, np.ndarray):
        raise _scatter_not_array(array)
    if array.ndim == 0:
        raise _scatter_scalar()
    counts = [operator.index(r) for r in rows]
    total = 0
    for i, n in enumerate(counts):
        if n < 0:
            raise _negative_rows(i, n)
        total += n
    if total != array.shape[0]:
        raise _scatter_rows_mismatch(total, array.shape[0])
    array_tail = array.shape[1:]
    cuts: list[tuple[int, ...] | None] = [None] * len(counts)
    if tails is not None:
        tails = list(tails)
        if len(tails) != len(counts):
            raise _tails_count(len(tails), len(counts))
        for i, t in enumerate(tails):
            cut = tuple(operator.index(d) for d in t)
            if len(cut) != len(array_tail) or any(
                not 0 <= d <= a for d, a in zip(cut, array_tail)
            ):
                raise _bad_tail(i, cut, array_tail)
            if cut != array_tail:
                cuts[i] = cut
    pieces = []
    row = 0
    for n, keep in zip(counts, cuts):
        if keep is None:
            pieces.append(array[row : row + n])
        else:
            pieces.append(array[(slice(row, row + n), *(slice(0, d) for d in keep))])
        row += n
    return pieces
