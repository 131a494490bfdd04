"""The compiled drift state (``servecore._native.drift``) against its pure-Python twin, the spec.

Hypothesis feeds both the same edges and value streams, including NaN, ±inf, -0.0, subnormals,
±1e308, values exactly on and next to the edges and empty batches. Counts, counters, n, min and
max must be identical (bit for bit, sign of zero included), and so must the snapshot bytes but
for the two Welford doubles. ``mean`` and ``m2`` are compared where they cannot overflow
(|x| <= 1e150): the twin folds batches in with Chan's formula, the compiled core runs Welford per
value, so they agree to rounding. The bound used, ``1e-9`` relative plus
``1e-12 * n * spread * max|x|`` absolute for m2 (``1e-12 * max|x|`` for the mean), is thousands
of times the rounding error of either method (about ``n * 2.2e-16 * max|x| * spread``).
Categorical histograms get mixed object streams (unicode, long strings, big ints, floats, bools,
bytes, None, lists) and must give identical bytes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from servecore.drift.histogram import CategoricalHistogramPy, NumericHistogramPy
from servecore.drift.keys import category_key, normalise_text
from servecore.drift.snapshot import unpack_numeric

native = pytest.importorskip(
    "servecore._native.drift", reason="servecore._native.drift is not built"
)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SPECIALS = [
    math.nan,
    math.inf,
    -math.inf,
    -0.0,
    0.0,
    5e-324,
    -5e-324,
    2.2250738585072014e-308,
    1e308,
    -1e308,
    1.7976931348623157e308,
]


@st.composite
def edges_strategy(draw: st.DrawFn) -> np.ndarray:
    wide = draw(st.booleans())
    bound = None if wide else 1e6
    finite = st.floats(
        min_value=None if bound is None else -bound,
        max_value=bound,
        allow_nan=False,
        allow_infinity=False,
    )
    values = draw(st.lists(finite, min_size=2, max_size=70, unique=True))
    edges = np.unique(np.array(values) + 0.0)
    if edges.size < 2:
        edges = np.array([0.0, 1.0])
    return edges


@st.composite
def stream_strategy(draw: st.DrawFn, edges: np.ndarray, moderate: bool) -> list[np.ndarray]:
    """A list of batches: random floats, specials, edges and their float neighbours."""
    with np.errstate(over="ignore"):
        near = [
            float(v) for e in edges for v in (e, np.nextafter(e, -np.inf), np.nextafter(e, np.inf))
        ]
    if moderate:
        near = [v for v in near if abs(v) <= 1e150] or [0.0]
    finite = st.floats(min_value=-1e150, max_value=1e150) if moderate else st.floats()
    specials = [s for s in SPECIALS if not moderate or not math.isfinite(s) or abs(s) <= 1e150]
    value = st.one_of(finite, st.sampled_from(specials), st.sampled_from(near))
    batches = draw(st.lists(st.lists(value, max_size=60), min_size=1, max_size=5))
    return [np.array(b, dtype=np.float64) for b in batches]


def feed(cls: type, edges: np.ndarray, batches: Sequence[np.ndarray]) -> object:
    hist = cls(edges)
    for batch in batches:
        hist.update(batch)
    return hist


def exact_fields(hist: object) -> tuple[object, ...]:
    snap = unpack_numeric(hist.to_bytes())  # type: ignore[attr-defined]
    return (
        snap.counts.tolist(),
        snap.n_nan,
        snap.n_pinf,
        snap.n_ninf,
        snap.n_null,
        snap.n_wrongtype,
        snap.n,
        snap.edges.tobytes(),
        np.float64(snap.min).tobytes(),
        np.float64(snap.max).tobytes(),
    )


def assert_welford_close(a: object, b: object, values: np.ndarray) -> None:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        assert (a.mean, a.m2, b.mean, b.m2) == (0.0, 0.0, 0.0, 0.0)  # type: ignore[attr-defined]
        return
    big = float(np.max(np.abs(finite)))
    spread = float(finite.max() - finite.min())
    n = finite.size
    # a floor of a few subnormal units: for values like 5e-324 the relative tolerances underflow
    # to 0, and a merged mean may differ from one stream's by the last representable unit
    # (hypothesis found [5e-324, 0, 5e-324]: 0.0 against 5e-324)
    floor = 4 * math.ulp(0.0)
    assert math.isclose(a.mean, b.mean, rel_tol=1e-9, abs_tol=max(1e-12 * big, floor))  # type: ignore[attr-defined]
    assert math.isclose(a.m2, b.m2, rel_tol=1e-9, abs_tol=max(1e-12 * n * spread * big, floor))  # type: ignore[attr-defined]


@SETTINGS
@given(data=st.data(), moderate=st.booleans())
@example(data=None, moderate=True).via("empty batches")
def test_numeric_parity(data: st.DataObject | None, moderate: bool) -> None:
    if data is None:
        edges, batches = np.array([0.0, 1.0]), [np.empty(0), np.empty(0)]
    else:
        edges = data.draw(edges_strategy())
        batches = data.draw(stream_strategy(edges, moderate))
    py = feed(NumericHistogramPy, edges, batches)
    c = feed(native.NumericHistogram, edges, batches)
    assert exact_fields(c) == exact_fields(py)
    # each loads the other's bytes
    assert exact_fields(NumericHistogramPy.from_bytes(c.to_bytes())) == exact_fields(py)  # type: ignore[attr-defined]
    assert native.NumericHistogram.from_bytes(py.to_bytes()).to_bytes() == py.to_bytes()  # type: ignore[attr-defined]
    if moderate:
        assert_welford_close(c, py, np.concatenate(batches))


@SETTINGS
@given(data=st.data(), cuts=st.lists(st.integers(0, 300), max_size=4))
def test_merge_of_split_stream_equals_one_stream(data: st.DataObject, cuts: list[int]) -> None:
    edges = data.draw(edges_strategy())
    values = np.concatenate(data.draw(stream_strategy(edges, True)))
    pieces = np.split(values, sorted(min(c, values.size) for c in cuts))
    for cls in (NumericHistogramPy, native.NumericHistogram):
        whole = feed(cls, edges, [values])
        merged: Any = cls(edges)
        for piece in pieces:
            merged.merge(feed(cls, edges, [piece]))
        assert exact_fields(merged) == exact_fields(whole)
        assert_welford_close(merged, whole, values)


TEXT = st.text(st.characters(codec="utf-8"), max_size=8) | st.text(min_size=120, max_size=1100)
OBJECTS = st.one_of(
    TEXT,
    st.sampled_from(["e\u0301", "\u00e9", "A", "a", "", "\ufb01", "x" * 200]),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.sampled_from(
        [
            None,
            True,
            False,
            np.bool_(True),
            np.int64(7),
            np.float32(0.5),
            b"A",
            b"\xff",
            [1],
            (2,),
            3j,
            -0.0,
            2**53,
            2.0**53,
            10**400,
        ]
    ),
)


@SETTINGS
@given(values=st.lists(OBJECTS, max_size=80), extra=st.lists(TEXT, max_size=6))
def test_categorical_parity(values: list[object], extra: list[str]) -> None:
    keys = [k for k in map(category_key, values[::2]) if isinstance(k, str)]
    keys += [normalise_text(t) for t in extra if t]
    vocabulary = list(dict.fromkeys(keys))
    py, c = CategoricalHistogramPy(vocabulary), native.CategoricalHistogram(vocabulary)
    as_array = np.empty(len(values), dtype=object)
    as_array[:] = values
    for hist in (py, c):
        hist.update(values)
        hist.update(as_array)
    assert c.to_bytes() == py.to_bytes()
    assert c.counts.tolist() == py.counts.tolist()
    assert (c.n, c.n_other, c.n_null, c.n_wrongtype) == (
        py.n,
        py.n_other,
        py.n_null,
        py.n_wrongtype,
    )
    assert CategoricalHistogramPy.from_bytes(c.to_bytes()).to_bytes() == py.to_bytes()
