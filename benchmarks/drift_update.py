"""Time the per-window drift update: compiled core vs pure-Python twin vs bare numpy.

Run after building the extension in place::

    python setup.py build_ext --inplace
    PYTHONPATH=src python benchmarks/drift_update.py [--n 1000000] [--bins 64] [--repeat 7]

Each line is the best of ``--repeat`` runs over ``--n`` float64 values (standard normal, with
``--nan-share`` of them NaN), in nanoseconds per value, on a fresh histogram of B bins whose
edges are reference quantiles:

* ``native``: :class:`servecore._native.drift.NumericHistogram.update` (isfinite, branch-free
  binary search, saturating increment, Welford, min/max; GIL released);
* ``twin``: :class:`servecore.drift.histogram.NumericHistogramPy.update` (numpy);
* ``numpy``: ``np.searchsorted`` + ``np.bincount`` alone, the floor for vectorised numpy (no
  NaN handling, no Welford).

Both implementations are first checked to give the same counts as the numpy floor.
"""

from __future__ import annotations

import argparse
import sys
import timeit
from collections.abc import Callable

import numpy as np

from servecore.drift.histogram import NumericHistogramPy

try:
    from servecore._native.drift import NumericHistogram
except ImportError:  # pragma: no cover - the point of the script is the comparison
    sys.exit("servecore._native.drift is not built: run `python setup.py build_ext --inplace`")


def _numpy_floor(edges: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    def count(values: np.ndarray) -> np.ndarray:
        idx = np.searchsorted(edges, values, side="right")
        return np.bincount(idx, minlength=edges.size + 1)

    return count


def _best_ns(run: Callable[[], object], n: int, repeat: int) -> float:
    return min(timeit.repeat(run, number=1, repeat=repeat)) / n * 1e9


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="values per update")
    parser.add_argument("--bins", type=int, default=64, help="B, quantile bins")
    parser.add_argument("--repeat", type=int, default=7, help="runs; the best is kept")
    parser.add_argument("--nan-share", type=float, default=0.0, help="share of NaN values")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    edges = np.unique(np.quantile(rng.normal(size=100_000), np.linspace(0, 1, args.bins + 1)))
    values = rng.normal(size=args.n)
    if args.nan_share:
        values[rng.random(args.n) < args.nan_share] = np.nan
    finite = values[np.isfinite(values)]

    floor = _numpy_floor(edges)
    expected = floor(finite)
    expected[-2] += expected[-1] - np.count_nonzero(finite > edges[-1])  # == last edge: last bin
    expected[-1] = np.count_nonzero(finite > edges[-1])
    for cls in (NumericHistogram, NumericHistogramPy):
        hist = cls(edges)
        hist.update(values)
        if hist.counts.tolist() != expected.tolist():
            sys.exit(f"{cls.__name__} counts differ from numpy's")

    rows = [
        ("native", lambda: NumericHistogram(edges).update(values)),
        ("twin", lambda: NumericHistogramPy(edges).update(values)),
        ("numpy", lambda: floor(values)),
    ]
    print(f"n={args.n:,} values, B={edges.size - 1} bins, NaN share {args.nan_share:g}")
    print(f"{'implementation':<16}{'ns/value':>10}")
    for label, run in rows:
        print(f"{label:<16}{_best_ns(run, args.n, args.repeat):>10.2f}")


if __name__ == "__main__":
    main()
