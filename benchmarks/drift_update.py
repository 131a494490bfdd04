"""Time the per-window drift update: compiled core vs pure-Python twin vs vectorised numpy.

Run after building the extension in place::

    python setup.py build_ext --inplace
    PYTHONPATH=src python benchmarks/drift_update.py [--rows 1000000] [--features 64] [--bins 64]

Two cases, each line the best of ``--repeat`` runs, in nanoseconds per value, on fresh
histograms whose B+1 edges are quantiles of a 100 000-value reference sample (standard
normal, as the data):

**Block** (the issue's case): ``--rows`` x ``--features`` values of ``--dtype`` (float32 by
default) in one C-order matrix, one histogram per column.

* ``native block``: :func:`servecore._native.drift.update_block`: one nogil call, float32 read
  as float32, a lookup-table search, saturating counts, shifted two-pass sums merged by Chan's
  formula, min/max, NaN/inf counters;
* ``twin block``: :func:`servecore.drift.histogram.update_block` (each column converted to
  float64, ``searchsorted`` + ``bincount`` + two-pass statistics);
* ``numpy ...``: ``searchsorted`` + ``bincount(minlength=B+2)`` alone, column by column (no
  NaN handling, no statistics), in three forms: on the strided float32 columns as they are, on
  a transposed C-order copy (the copy timed), and with one ``bincount`` over all columns' bins
  offset by ``j*(B+2)``. The fastest of the three is the baseline the ratio is taken against.

**1-D**: ``--n`` float64 values (``--nan-share`` of them NaN): ``NumericHistogram.update``,
``NumericHistogramPy.update`` and a bare ``searchsorted`` + ``bincount``.

Every implementation is first checked to give the same counts as numpy. The target of the
issue is a native block update at least 4x faster per value than the numpy baseline.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # no BLAS threads spinning on a small box

import argparse
import sys
import timeit
from collections.abc import Callable

import numpy as np

from servecore.drift import histogram as twin

try:
    from servecore._native import drift as native
except ImportError:  # pragma: no cover - the point of the script is the comparison
    sys.exit("servecore._native.drift is not built: run `python setup.py build_ext --inplace`")


def _best_ns(run: Callable[[], object], values: int, repeat: int) -> float:
    return min(timeit.repeat(run, number=1, repeat=repeat)) / values * 1e9


def _expected(edges: np.ndarray, column: np.ndarray) -> list[int]:
    """The histogram rule by numpy: searchsorted right, a value on the last edge in the last
    bin, non-finite values left out."""
    finite = column[np.isfinite(column)].astype(np.float64)
    idx = np.searchsorted(edges, finite, side="right")
    idx -= finite == edges[-1]
    return np.bincount(idx, minlength=edges.size + 1).tolist()  # type: ignore[no-any-return]


def _numpy_columns(edges: list[np.ndarray], matrix: np.ndarray) -> list[np.ndarray]:
    return [
        np.bincount(np.searchsorted(e, matrix[:, j], side="right"), minlength=e.size + 1)
        for j, e in enumerate(edges)
    ]


def _numpy_transposed(edges: list[np.ndarray], matrix: np.ndarray) -> list[np.ndarray]:
    columns = np.ascontiguousarray(matrix.T)
    return [
        np.bincount(np.searchsorted(e, columns[j], side="right"), minlength=e.size + 1)
        for j, e in enumerate(edges)
    ]


def _numpy_one_bincount(edges: list[np.ndarray], matrix: np.ndarray) -> np.ndarray:
    width = edges[0].size + 1  # every column has the same number of bins here
    idx = np.empty(matrix.shape, dtype=np.intp)
    for j, e in enumerate(edges):
        idx[:, j] = np.searchsorted(e, matrix[:, j], side="right") + j * width
    return np.bincount(idx.ravel(), minlength=width * len(edges))


def block_case(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(0)
    rows, d, bins = args.rows, args.features, args.bins
    reference = rng.normal(size=(100_000, d))
    quantiles = np.linspace(0, 1, bins + 1)
    edges = [np.unique(np.quantile(reference[:, j], quantiles)) for j in range(d)]
    matrix = rng.standard_normal(size=(rows, d), dtype=np.float64).astype(args.dtype)
    n = rows * d

    c = [native.NumericHistogram(e) for e in edges]
    native.update_block(matrix, c)
    py = [twin.NumericHistogramPy(e) for e in edges]
    twin.update_block(matrix, py)
    plain = _numpy_columns(edges, matrix)
    for j, e in enumerate(edges):
        expected = _expected(e, matrix[:, j])
        if c[j].counts.tolist() != expected or py[j].counts.tolist() != expected:
            sys.exit(f"column {j}: block counts differ from numpy's")
        # numpy's bare searchsorted puts a value on the last edge in the overflow bin
        if int(plain[j].sum()) != rows:
            sys.exit(f"column {j}: numpy lost values")

    timings = [
        (
            "native block",
            _best_ns(
                lambda: native.update_block(matrix, [native.NumericHistogram(e) for e in edges]),
                n,
                args.repeat,
            ),
        ),
        (
            "twin block",
            _best_ns(
                lambda: twin.update_block(matrix, [twin.NumericHistogramPy(e) for e in edges]),
                n,
                args.twin_repeat,
            ),
        ),
        ("numpy per column", _best_ns(lambda: _numpy_columns(edges, matrix), n, args.repeat)),
        ("numpy transposed", _best_ns(lambda: _numpy_transposed(edges, matrix), n, args.repeat)),
        ("numpy 1 bincount", _best_ns(lambda: _numpy_one_bincount(edges, matrix), n, args.repeat)),
    ]
    baseline = min(ns for label, ns in timings if label.startswith("numpy"))
    print(
        f"block: {rows:,} rows x {d} {np.dtype(args.dtype).name} features, "
        f"B={bins} bins, best of {args.repeat} ({args.twin_repeat} for the twin)"
    )
    print(f"{'implementation':<20}{'ns/value':>10}{'vs numpy best':>16}")
    for label, ns in timings:
        print(f"{label:<20}{ns:>10.2f}{baseline / ns:>15.2f}x")


def one_d_case(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(0)
    edges = np.unique(np.quantile(rng.normal(size=100_000), np.linspace(0, 1, args.bins + 1)))
    values = rng.normal(size=args.n)
    if args.nan_share:
        values[rng.random(args.n) < args.nan_share] = np.nan
    for cls in (native.NumericHistogram, twin.NumericHistogramPy):
        hist = cls(edges)
        hist.update(values)
        if hist.counts.tolist() != _expected(edges, values):
            sys.exit(f"{cls.__name__} counts differ from numpy's")

    def bare() -> np.ndarray:
        return np.bincount(np.searchsorted(edges, values, side="right"), minlength=edges.size + 1)

    timings = [
        (
            "native update",
            _best_ns(lambda: native.NumericHistogram(edges).update(values), args.n, args.repeat),
        ),
        (
            "twin update",
            _best_ns(lambda: twin.NumericHistogramPy(edges).update(values), args.n, args.repeat),
        ),
        ("numpy", _best_ns(bare, args.n, args.repeat)),
    ]
    baseline = timings[-1][1]
    print(
        f"1-D: n={args.n:,} float64 values, B={edges.size - 1} bins, "
        f"NaN share {args.nan_share:g}, best of {args.repeat}"
    )
    print(f"{'implementation':<20}{'ns/value':>10}{'vs numpy':>16}")
    for label, ns in timings:
        print(f"{label:<20}{ns:>10.2f}{baseline / ns:>15.2f}x")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="block: matrix rows")
    parser.add_argument("--features", type=int, default=64, help="block: matrix columns")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--bins", type=int, default=64, help="B, quantile bins")
    parser.add_argument("--n", type=int, default=1_000_000, help="1-D: values per update")
    parser.add_argument("--nan-share", type=float, default=0.0, help="1-D: share of NaN values")
    parser.add_argument("--repeat", type=int, default=5, help="runs; the best is kept")
    parser.add_argument("--twin-repeat", type=int, default=2, help="runs of the twin block")
    parser.add_argument("--case", choices=["block", "1d", "both"], default="both")
    args = parser.parse_args(argv)
    if args.case in ("block", "both"):
        block_case(args)
    if args.case == "both":
        print()
    if args.case in ("1d", "both"):
        one_d_case(args)


if __name__ == "__main__":
    main()
