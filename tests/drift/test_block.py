"""Block updates (``update_block``) and the search table, compiled against the twin; tensors.

Hypothesis feeds the compiled :func:`servecore._native.drift.update_block` and the twin's
:func:`servecore.drift.histogram.update_block` the same float32 or float64 matrices (C order,
Fortran order, column slices; some columns skipped) drawn from the values of ``test_parity``
(NaN, ±inf, -0.0, subnormals, ±1e308, edges and their float64 and float32 neighbours). Counts,
counters, n, min and max must be identical, and equal to the twin's 1-D ``update`` of each
column converted to float64; mean and M2 agree to rounding (the bound of ``test_parity``).
Edge sets chosen to stress the lookup table (clustered edges, a span that overflows,
subnormal edges, the largest double, 70 000 edges) must bin exactly like the twin, through
``update`` and ``update_block``. Last, :meth:`DriftWindows.observe_tensors` must count exactly
what :meth:`DriftWindows.observe` counts on ``tensor_columns`` of the same tensors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from servecore.drift import DriftCore
from servecore.drift.histogram import NumericHistogramPy, update_block
from servecore.drift.monitor import tensor_columns
from servecore.drift.profile import ReferenceProfile, build_profile
from servecore.drift.snapshot import UINT64_MAX, pack_numeric
from servecore.drift.types import NumericState
from servecore.drift.windows import DriftWindows, WindowState

native_drift: Any
try:
    from servecore._native import drift as native_drift
except ImportError:  # not built: the tests that use it are skipped
    native_drift = None

from .conftest import needs_native
from .test_windows import state_fields

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SPECIALS = [math.nan, math.inf, -math.inf, -0.0, 0.0, 5e-324, -5e-324, 1e308, -1e308, 3.4e38]


def exact_fields(hist: Any) -> tuple[object, ...]:
    return (
        hist.counts.tolist(),
        hist.n_nan,
        hist.n_pinf,
        hist.n_ninf,
        hist.n_null,
        hist.n_wrongtype,
        hist.n,
        np.float64(hist.min).tobytes(),
        np.float64(hist.max).tobytes(),
    )


def assert_welford_close(a: Any, b: Any, values: np.ndarray) -> None:
    """Mean and M2 to rounding, where they cannot overflow (every finite |x| <= 1e150).

    The bound is ``test_parity``'s, plus 1e-300 absolute: squares of values near 1e-160 are
    subnormal, where rounding is no longer relative.
    """
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        assert (a.mean, a.m2, b.mean, b.m2) == (0.0, 0.0, 0.0, 0.0)
        return
    big = float(np.max(np.abs(finite)))
    if big > 1e150:
        return
    spread = float(finite.max() - finite.min())
    n = finite.size
    assert math.isclose(a.mean, b.mean, rel_tol=1e-9, abs_tol=1e-12 * big + 1e-300)
    assert math.isclose(a.m2, b.m2, rel_tol=1e-9, abs_tol=1e-12 * n * spread * big + 1e-300)


@st.composite
def edges_strategy(draw: st.DrawFn) -> np.ndarray:
    kind = draw(st.sampled_from(["moderate", "wide", "clustered", "float32"]))
    if kind == "clustered":  # many edges in a sliver plus far ones: several per grid cell
        base = draw(st.floats(-1e3, 1e3))
        step = draw(st.sampled_from([1e-9, 1e-6, 1e-3]))
        n = draw(st.integers(2, 60))
        far = draw(st.lists(st.floats(-1e6, 1e6), max_size=4))
        values = [base + i * step for i in range(n)] + far
    else:
        bound = {"moderate": 1e6, "wide": None, "float32": 1e4}[kind]
        finite = st.floats(
            min_value=None if bound is None else -bound,
            max_value=bound,
            allow_nan=False,
            allow_infinity=False,
            width=32 if kind == "float32" else 64,
        )
        values = draw(st.lists(finite, min_size=2, max_size=70, unique=True))
    edges = np.unique(np.array(values, dtype=np.float64) + 0.0)
    return edges if edges.size >= 2 else np.array([0.0, 1.0])


def neighbours(edges: np.ndarray) -> list[float]:
    """Each edge, its float64 neighbours and the float32 values around it."""
    out = []
    with np.errstate(over="ignore"):
        for e in edges:
            out += [float(e), float(np.nextafter(e, -np.inf)), float(np.nextafter(e, np.inf))]
            e32 = np.float32(e)
            if np.isfinite(e32):
                out += [
                    float(e32),
                    float(np.nextafter(e32, np.float32(-np.inf))),
                    float(np.nextafter(e32, np.float32(np.inf))),
                ]
    return out


@st.composite
def column_values(draw: st.DrawFn, edges: np.ndarray, rows: int) -> list[float]:
    value = st.one_of(
        st.floats(-1e150, 1e150),
        st.floats(width=32),
        st.sampled_from(SPECIALS),
        st.sampled_from(neighbours(edges)),
    )
    return draw(st.lists(value, min_size=rows, max_size=rows))


def as_layout(matrix: np.ndarray, layout: str) -> np.ndarray:
    """*matrix* as a C-order array, a Fortran-order one, or every other column of a wider one."""
    if layout == "F":
        return np.asfortranarray(matrix)
    if layout == "slice":
        wide = np.zeros((matrix.shape[0], 2 * matrix.shape[1]), dtype=matrix.dtype)
        wide[:, ::2] = matrix
        return wide[:, ::2]
    return np.ascontiguousarray(matrix)


def feed_block(
    cls: type,
    edges: Sequence[np.ndarray],
    batches: list[np.ndarray],
    skip: Sequence[bool],
    block: Any,
) -> list[Any]:
    hists = [cls(e) for e in edges]
    for batch in batches:
        block(batch, [None if s else h for h, s in zip(hists, skip)])
    return hists


@needs_native
@SETTINGS
@given(
    data=st.data(),
    d=st.integers(1, 5),
    dtype=st.sampled_from([np.float32, np.float64]),
    layout=st.sampled_from(["C", "F", "slice"]),
)
def test_block_parity(data: st.DataObject, d: int, dtype: type, layout: str) -> None:
    edges = [data.draw(edges_strategy()) for _ in range(d)]
    skip = data.draw(st.lists(st.booleans(), min_size=d, max_size=d))
    batches = []
    for rows in data.draw(st.lists(st.integers(0, 40), min_size=1, max_size=3)):
        columns = [data.draw(column_values(e, rows)) for e in edges]
        with np.errstate(over="ignore"):
            matrix: np.ndarray = np.array(columns, np.float64).T.astype(dtype).reshape(rows, d)
        batches.append(as_layout(matrix, layout))
    c = feed_block(native_drift.NumericHistogram, edges, batches, skip, native_drift.update_block)
    py = feed_block(NumericHistogramPy, edges, batches, skip, update_block)
    for j in range(d):
        column = (
            np.concatenate([b[:, j].astype(np.float64) for b in batches])
            if not skip[j]
            else np.empty(0)
        )
        one = NumericHistogramPy(edges[j])
        one.update(column)
        assert exact_fields(c[j]) == exact_fields(py[j]) == exact_fields(one)
        assert_welford_close(c[j], py[j], column)
        assert_welford_close(c[j], one, column)


def stress_edges() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    return {
        "clustered": np.unique(np.concatenate([1.0 + np.arange(50) * 1e-12, [-1e6, 5e6]])),
        "overflowing-span": np.array([-1.7976931348623157e308, -1.0, 0.0, 1e300, 1.7e308]),
        "largest-double": np.array([0.0, 1.0, 1.7976931348623157e308]),
        "subnormal": np.array([-5e-324, 0.0, 5e-324, 1e-323, 2.5e-323, 2.2250738585072014e-308]),
        "one-bin": np.array([-1.0, 1.0]),
        "lognormal-quantiles": np.unique(
            np.quantile(rng.lognormal(sigma=2.0, size=50_000), np.linspace(0, 1, 257))
        ),
        "many": np.unique(rng.normal(size=70_000)),  # > 65534 bins: one cell, binary search
    }


@needs_native
@pytest.mark.parametrize("name", list(stress_edges()))
def test_search_table_stress(name: str) -> None:
    edges = stress_edges()[name]
    rng = np.random.default_rng(1)
    lo, hi = float(edges[0]), float(edges[-1])
    values = np.concatenate(
        [
            np.array(neighbours(edges) + SPECIALS),
            rng.choice(edges, 2000),
            np.clip(rng.uniform(max(lo, -1e307), min(hi, 1e307), 5000), lo, hi),
            rng.normal(size=2000) * rng.choice([1e-300, 1.0, 1e6, 1e300], 2000),
        ]
    )
    py = NumericHistogramPy(edges)
    py.update(values)
    c = native_drift.NumericHistogram(edges)
    c.update(values)
    assert exact_fields(c) == exact_fields(py)
    blocks = native_drift.NumericHistogram(edges), native_drift.NumericHistogram(edges)
    with np.errstate(over="ignore"):
        matrix = np.stack([values, values.astype(np.float32).astype(np.float64)], axis=1)
    native_drift.update_block(matrix, list(blocks))
    py32 = NumericHistogramPy(edges)
    py32.update(matrix[:, 1].copy())
    assert exact_fields(blocks[0]) == exact_fields(py)
    assert exact_fields(blocks[1]) == exact_fields(py32)


@pytest.mark.parametrize(
    ("matrix", "hists", "error", "message"),
    [
        (np.zeros(3), 1, TypeError, "2-D float32 or float64 numpy array, got float64 array"),
        (np.zeros((3, 1), np.int64), 1, TypeError, "got int64 array of shape"),
        (np.zeros((3, 1), ">f8"), 1, TypeError, "2-D float32 or float64"),
        ([[1.0]], 1, TypeError, "got list"),
        (np.zeros((3, 2)), 1, ValueError, "1 histograms for a matrix of 2 columns"),
        (np.zeros((3, 1)), "x", TypeError, "histograms must be a sequence"),
        (np.zeros((3, 2)), "twice", ValueError, r"histograms\[1\] is given twice"),
        (np.zeros((3, 1)), "wrong", TypeError, r"histograms\[0\] is a"),
    ],
)
def test_block_errors(
    core: DriftCore, matrix: object, hists: object, error: type, message: str
) -> None:
    cls = core.NumericHistogram
    h = cls(np.array([0.0, 1.0]))
    histograms: object = {
        1: [h],
        "x": "x",
        "twice": [h, h],
        "wrong": [core.CategoricalHistogram(["a"])],
    }[cast(Any, hists)]
    with pytest.raises(error, match=message):
        cast(Any, cls).update_block(matrix, histograms)
    assert h.n == 0


def test_block_equals_columns(core: DriftCore) -> None:
    """On each core, a block update is the column-by-column update (twin per column too)."""
    rng = np.random.default_rng(3)
    edges = [
        np.unique(np.quantile(rng.normal(size=5000) * (j + 1), np.linspace(0, 1, 33)))
        for j in range(6)
    ]
    matrix = rng.normal(size=(3000, 6)).astype(np.float32) * np.arange(1, 7, dtype=np.float32)
    matrix[::7, 2] = np.nan
    matrix[5, 4] = np.inf
    block = [core.NumericHistogram(e) for e in edges]
    cast(Any, core.NumericHistogram).update_block(matrix, block)
    cast(Any, core.NumericHistogram).update_block(matrix[:0], block)  # no rows: nothing
    for j, e in enumerate(edges):
        one = NumericHistogramPy(e)
        one.update(matrix[:, j].astype(np.float64))
        assert exact_fields(block[j]) == exact_fields(one)
        assert_welford_close(block[j], one, matrix[:, j].astype(np.float64))


def test_block_odd_strides(core: DriftCore) -> None:
    """Reversed rows and columns, and strides that are not whole items (copied), count alike."""
    rng = np.random.default_rng(4)
    edges = [np.unique(np.quantile(rng.normal(size=2000), np.linspace(0, 1, 17)))] * 3
    base = rng.normal(size=(500, 3))
    raw = np.zeros(500 * 27 + 16, np.uint8)  # float64 items 9 bytes apart: not whole items
    odd = np.ndarray((500, 3), np.float64, raw, 1, (27, 9))
    odd[:] = base
    for matrix in (base[::-1, ::-1], odd, base.astype(np.float32)[::-3, ::2]):
        block = [core.NumericHistogram(e) for e in edges[: matrix.shape[1]]]
        cast(Any, core.NumericHistogram).update_block(matrix, block)
        for j, hist in enumerate(block):
            one = NumericHistogramPy(edges[j])
            one.update(matrix[:, j].astype(np.float64))
            assert exact_fields(hist) == exact_fields(one)


def test_block_saturates(core: DriftCore) -> None:
    """Near 2**64-1 the block update folds only the values n has room for (as ``update``)."""
    edges = np.array([0.0, 1.0, 2.0, 3.0])
    near = UINT64_MAX - 2
    data = pack_numeric(
        edges,
        np.array([0, near, 0, 0, 0], np.uint64),
        (near, 0, 0, 0, 0, near),
        (0.5, 0.0, 0.5, 0.5),
    )
    matrix = np.array([[np.nan], [0.5], [2.5], [1.5], [2.5], [np.nan]])
    block = core.NumericHistogram.from_bytes(data)
    cast(Any, core.NumericHistogram).update_block(matrix, [block])
    one = NumericHistogramPy.from_bytes(data)
    one.update(matrix[:, 0].copy())
    assert exact_fields(block) == exact_fields(one)
    assert block.n == UINT64_MAX and block.n_nan == UINT64_MAX
    assert block.counts.tolist() == [0, UINT64_MAX - 1, 1, 2, 0]
    assert block.mean == pytest.approx(one.mean) and block.m2 == pytest.approx(one.m2)


# --------------------------------------------------------------------------------------------
# Tensors through the windows


def tensors(rows: int, seed: int, width: int = 6) -> dict[str, Any]:
    """A float32 [rows, width] tensor (column 5 discrete), a 3-D float64 one, ints, strings."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, width)).astype(np.float32)
    if width > 5:
        x[:, 5] = rng.integers(0, 4, rows)
    return {
        "x": x,
        "img": rng.lognormal(size=(rows, 2, 2)),
        "k": rng.integers(-1000, 1000, size=(rows, 2)),
        "colour": rng.choice(np.array(["red", "green", "blue"]), rows),
        "flag": rng.random((rows, 1)) < 0.3,
        "scale": np.float32(2.0),  # 0-d: skipped
    }


@pytest.fixture(scope="module")
def tensor_profile() -> ReferenceProfile:
    return build_profile(tensor_columns(tensors(20_000, 0)), bins=32)


def columns_of(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``tensor_columns(batch)``; for a batch of no rows, the same names by hand (its reshape
    to ``(0, -1)`` raises)."""
    if any(np.ndim(v) and np.shape(v)[0] for v in batch.values()):
        return tensor_columns(batch)
    columns = {}
    for name, value in batch.items():
        array = np.asarray(value)
        if array.ndim == 1:
            columns[name] = array
        elif array.ndim > 1:
            flat = array.reshape(0, math.prod(array.shape[1:]))
            columns.update({f"{name}[{j}]": flat[:, j] for j in range(flat.shape[1])})
    return columns


def close_stats(a: WindowState, b: WindowState) -> None:
    for name, hist in a.states.items():
        if hasattr(hist, "edges"):
            other = cast(NumericState, b.states[name])
            h = cast(NumericState, hist)
            assert h.mean == pytest.approx(other.mean, rel=1e-9, abs=1e-12)
            assert h.m2 == pytest.approx(other.m2, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("window_rows", [None, 700])
def test_observe_tensors_equals_observe(
    tensor_profile: ReferenceProfile, core: DriftCore, window_rows: int | None
) -> None:
    assert tensor_profile.feature("x[0]").kind == "numeric"
    assert tensor_profile.feature("x[5]").kind == "categorical"  # discrete: per column
    kwargs: dict[str, Any] = {"window_rows": window_rows, "window_seconds": 60, "core": core}
    a, b = DriftWindows(tensor_profile, **kwargs), DriftWindows(tensor_profile, **kwargs)
    batches = [tensors(500, 1), tensors(900, 2), tensors(0, 3), tensors(300, 4, width=8)]
    shifted = tensors(400, 5)
    shifted["x"][:, 1] += 1.0
    shifted["x"][::3, 2] = np.nan
    shifted["img"] = shifted["img"][:200]  # lengths differ
    del shifted["colour"]  # a missing feature
    batches.append(shifted)
    batches.append({**tensors(100, 6), "x": np.asfortranarray(tensors(100, 6)["x"])})
    batches.append({**tensors(50, 7), "x": tensors(50, 7)["x"].astype(np.float16)})
    batches.append({**tensors(50, 8), "x": tensors(50, 8)["x"].astype(">f4")})
    reports_a: list[Any] = []
    reports_b: list[Any] = []
    for i, batch in enumerate(batches):
        now = 60.0 * (i // 3)
        reports_a += a.observe_tensors(batch, now=now)
        reports_b += b.observe(columns_of(batch), now=now)
    reports_a.append(a.close())
    reports_b.append(b.close())
    assert len(reports_a) == len(reports_b) > 2
    for (sa, ra), (sb, rb) in zip(a.closed, b.closed):
        assert state_fields(sa) == state_fields(sb)
        close_stats(sa, sb)
        assert ra.schema == rb.schema and ra.rows == rb.rows
        assert [(f.name, f.status, f.counts) for f in ra.features] == [
            (f.name, f.status, f.counts) for f in rb.features
        ]
    schema = {k: sum(r.schema[k] for _, r in a.closed) for k in a.closed[0][1].schema}
    assert schema["extra_column"] >= 2 and schema["missing_column"] >= 1
    assert schema["length_mismatch"] >= 1


def test_update_tensors_counts_schema(tensor_profile: ReferenceProfile, core: DriftCore) -> None:
    state = WindowState(tensor_profile, core=core)
    batch = tensors(10, 1, width=4)  # x[4], x[5] missing
    batch["z"] = np.zeros((10, 3))  # z[0..2] extra
    batch["w"] = np.zeros(10)  # extra
    state.update_tensors(batch)
    assert state.schema["missing_column"] == 2 and state.schema["extra_column"] == 4
    assert state.rows == 10 and state.states["x[0]"].n == 10
