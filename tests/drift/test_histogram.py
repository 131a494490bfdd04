"""The per-window histograms on both implementations: binning, counters, merge, snapshots."""

from __future__ import annotations

import math

import numpy as np
import pytest

from servecore.drift import DriftCore
from servecore.drift.errors import SnapshotError
from servecore.drift.snapshot import UINT64_MAX, pack_numeric

EDGES = np.array([0.0, 1.0, 2.0, 3.0])


def test_binning_rule(core: DriftCore) -> None:
    """Underflow, bins [e[i-1], e[i]), the last closed at e[B], overflow; -0.0, subnormals."""
    h = core.NumericHistogram(EDGES)
    h.update(
        np.array([-1.0, -0.0, 0.0, 5e-324, 0.999, 1.0, 2.0, 2.5, 3.0, np.nextafter(3, 4), 1e308])
    )
    assert h.counts.tolist() == [1, 4, 1, 3, 2]
    assert h.counts.dtype == np.uint64 and h.n == 11
    assert math.copysign(1.0, h.min) == -1.0 and h.min == -1.0 and h.max == 1e308


def test_negative_zero_min_is_positive_zero(core: DriftCore) -> None:
    h = core.NumericHistogram(EDGES)
    h.update(np.array([-0.0, 0.5]))
    assert h.min == 0.0 and math.copysign(1.0, h.min) == 1.0


def test_non_finite_counted_never_binned(core: DriftCore) -> None:
    h = core.NumericHistogram(EDGES)
    h.update(np.array([np.nan, np.inf, -np.inf, np.nan, 1.5, -np.nan]))
    assert (h.n_nan, h.n_pinf, h.n_ninf, h.n) == (3, 1, 1, 1)
    assert h.counts.tolist() == [0, 0, 1, 0, 0]
    assert h.mean == 1.5 and h.m2 == 0.0


def test_welford(core: DriftCore) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(3.0, 2.0, size=10_001)
    h = core.NumericHistogram(EDGES)
    for part in np.array_split(x, 7):
        h.update(part)
    assert h.n == x.size
    assert h.mean == pytest.approx(x.mean(), rel=1e-12)
    assert h.m2 / (h.n - 1) == pytest.approx(x.var(ddof=1), rel=1e-12)
    assert (h.min, h.max) == (x.min(), x.max())


def test_empty_state_and_updates(core: DriftCore) -> None:
    h = core.NumericHistogram(EDGES)
    h.update(np.empty(0))
    assert (h.n, h.mean, h.m2, h.min, h.max) == (0, 0.0, 0.0, math.inf, -math.inf)
    assert h.counts.tolist() == [0] * 5


def test_strided_and_read_only_input(core: DriftCore) -> None:
    x = np.arange(10, dtype=np.float64) / 3
    x.flags.writeable = False
    h = core.NumericHistogram(EDGES)
    h.update(x[::2])
    assert h.n == 5 and h.counts.sum() == 5


@pytest.mark.parametrize(
    "values", [[1.0, 2.0], np.array([1, 2]), np.ones((2, 2)), np.ones(3, dtype=np.float32), None]
)
def test_update_takes_only_1d_float64(core: DriftCore, values: object) -> None:
    h = core.NumericHistogram(EDGES)
    with pytest.raises(TypeError, match="values must be a 1-D float64 numpy array"):
        h.update(values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("edges", "message"),
    [
        ([1.0], "at least 2"),
        ([0.0, 0.0, 1.0], "strictly increasing"),
        ([0.0, np.inf], "finite"),
        ([[0.0, 1.0]], "1-D"),
        ([2.0, 1.0], "strictly increasing"),
        (["a", "b"], "sequence of floats"),
    ],
)
def test_bad_edges(core: DriftCore, edges: object, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        core.NumericHistogram(edges)  # type: ignore[arg-type]


def test_counters_from_the_caller(core: DriftCore) -> None:
    h = core.NumericHistogram(EDGES)
    h.count_null(3)
    h.count_wrong_type(2)
    h.count_null(np.int64(1))  # type: ignore[arg-type]
    assert (h.n_null, h.n_wrongtype) == (4, 2)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="non-negative int"):
            h.count_null(bad)  # type: ignore[arg-type]


def test_reset(core: DriftCore) -> None:
    h = core.NumericHistogram(EDGES)
    h.update(np.array([1.0, np.nan]))
    h.count_null(1)
    h.reset()
    assert h.to_bytes() == core.NumericHistogram(EDGES).to_bytes()


def test_merge_equals_one_stream(core: DriftCore) -> None:
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.normal(1.5, 1, 5000), [np.nan, np.inf, -np.inf, 7.0]])
    whole = core.NumericHistogram(EDGES)
    whole.update(x)
    parts = [core.NumericHistogram(EDGES) for _ in range(3)]
    for h, chunk in zip(parts, np.array_split(x, 3)):
        h.update(chunk)
    parts[0].merge(parts[1])
    parts[0].merge(parts[2])
    merged = parts[0]
    assert merged.counts.tolist() == whole.counts.tolist()
    assert (merged.n, merged.n_nan, merged.n_pinf, merged.n_ninf) == (whole.n, 1, 1, 1)
    assert merged.mean == pytest.approx(whole.mean, rel=1e-12)
    assert merged.m2 == pytest.approx(whole.m2, rel=1e-12)
    assert (merged.min, merged.max) == (whole.min, whole.max)


def test_merge_checks_layout(core: DriftCore) -> None:
    h = core.NumericHistogram(EDGES)
    with pytest.raises(ValueError, match="different edges"):
        h.merge(core.NumericHistogram(EDGES + 1))
    with pytest.raises(TypeError, match="cannot merge"):
        h.merge(core.CategoricalHistogram(["a"]))  # type: ignore[arg-type]
    c = core.CategoricalHistogram(["a", "b"])
    with pytest.raises(ValueError, match="different vocabularies"):
        c.merge(core.CategoricalHistogram(["b", "a"]))


def test_snapshot_round_trip(core: DriftCore) -> None:
    h = core.NumericHistogram(EDGES)
    h.update(np.array([0.5, 1.5, 9.0, np.nan, -np.inf]))
    h.count_wrong_type(2)
    data = h.to_bytes()
    back = core.NumericHistogram.from_bytes(data)
    assert back.to_bytes() == data
    assert back.counts.tolist() == h.counts.tolist() and back.n_wrongtype == 2
    c = core.CategoricalHistogram(["a", "é"])
    c.update(["a", "é", "zz", None, 3])
    assert core.CategoricalHistogram.from_bytes(c.to_bytes()).to_bytes() == c.to_bytes()


def test_snapshot_kind_is_checked(core: DriftCore) -> None:
    numeric = core.NumericHistogram(EDGES).to_bytes()
    with pytest.raises(SnapshotError, match="expected a categorical snapshot"):
        core.CategoricalHistogram.from_bytes(numeric)


def test_snapshot_semantic_checks(core: DriftCore) -> None:
    """A well-framed snapshot whose content is inconsistent is rejected (CRC is not enough)."""
    counters = (0, 0, 0, 0, 0, 5)  # n = 5 but the counts hold 1
    data = pack_numeric(EDGES, np.array([0, 1, 0, 0, 0], np.uint64), counters, (1.0, 0.0, 1.0, 1.0))
    with pytest.raises(SnapshotError, match="add up to 1, not n = 5"):
        core.NumericHistogram.from_bytes(data)
    data = pack_numeric(EDGES, np.zeros(5, np.uint64), (0,) * 6, (1.0, 0.0, math.inf, -math.inf))
    with pytest.raises(SnapshotError, match="no values has statistics"):
        core.NumericHistogram.from_bytes(data)
    data = pack_numeric(
        np.array([1.0, 0.0]), np.zeros(3, np.uint64), (0,) * 6, (0.0, 0.0, math.inf, -math.inf)
    )
    with pytest.raises(SnapshotError, match="invalid edges"):
        core.NumericHistogram.from_bytes(data)


def test_categorical_counts(core: DriftCore) -> None:
    c = core.CategoricalHistogram(["a", "b", "1", "true"])
    c.update(np.array(["a", "b", "b", "c", ""], dtype=object))
    c.update([1, 1.0, np.int8(1), True, np.bool_(False), None, float("nan"), [1], 2 + 3j, b"a"])
    assert c.counts.tolist() == [2, 2, 3, 1, 2, 3]
    assert (c.n_other, c.n_null, c.n_wrongtype, c.n) == (2, 3, 2, 10)
    c.count_null(2)
    c.count_wrong_type(1)
    assert (c.n_null, c.n_wrongtype) == (5, 3)


def test_categorical_takes_any_1d_array(core: DriftCore) -> None:
    c = core.CategoricalHistogram(["0", "1", "x"])
    c.update(np.array([0, 1, 1, 2]))
    c.update(np.array([0.0, np.nan, -0.0]))
    c.update(np.array(["x", "y"]))
    c.update(np.array([b"x"]))
    assert c.counts.tolist() == [3, 2, 2, 2, 1]
    with pytest.raises(ValueError, match="1-D"):
        c.update(np.array([["a"]]))
    with pytest.raises(TypeError, match="1-D numpy array, list or tuple"):
        c.update("abc")


@pytest.mark.parametrize("vocabulary", [["a", "a"], [""], ["e\u0301"], ["x" * 129], [1], "ab"])
def test_bad_vocabulary(core: DriftCore, vocabulary: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        core.CategoricalHistogram(vocabulary)  # type: ignore[arg-type]


def test_counts_are_copies(core: DriftCore) -> None:
    h = core.NumericHistogram(EDGES)
    h.counts[:] = 7
    h.edges[:] = 7
    assert h.counts.tolist() == [0] * 5 and h.edges.tolist() == EDGES.tolist()


def test_saturating_counts_from_snapshot(core: DriftCore) -> None:
    """Counts restored near 2**64 - 1 saturate at it instead of wrapping (fault F.9)."""
    near = UINT64_MAX - 1
    counts = np.array([0, near, 0, 0, 0], np.uint64)
    data = pack_numeric(EDGES, counts, (near, 0, 0, 0, near, near), (0.5, 0.0, 0.5, 0.5))
    h = core.NumericHistogram.from_bytes(data)
    h.update(np.array([0.5, 0.5, 0.5, np.nan, np.nan]))
    h.count_wrong_type(10)
    assert h.counts.tolist() == [0, UINT64_MAX, 0, 0, 0]
    assert (h.n, h.n_nan, h.n_wrongtype) == (UINT64_MAX,) * 3
    other = core.NumericHistogram.from_bytes(data)
    h.merge(other)
    assert h.counts.tolist() == [0, UINT64_MAX, 0, 0, 0] and h.n == UINT64_MAX
    c = core.CategoricalHistogram.from_bytes(core.CategoricalHistogram(["a"]).to_bytes())
    c.count_null(UINT64_MAX - 1)
    c.update(["a", None, None])
    assert c.counts.tolist() == [1, 0, UINT64_MAX]
