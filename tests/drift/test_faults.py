"""The drift core's fault list (docs: drift-and-audit.md, section F, items 1-10), on both cores.

Plus the two end-to-end checks every drift monitor must pass: identical distributions never
alert, and a 0.5σ mean shift alerts clearly.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from servecore.drift import DriftCore
from servecore.drift.errors import SnapshotError
from servecore.drift.keys import OTHER, category_key
from servecore.drift.profile import (
    CategoricalFeature,
    NumericFeature,
    ReferenceProfile,
    build_profile,
)
from servecore.drift.snapshot import UINT64_MAX, pack_numeric
from servecore.drift.windows import DriftWindows, WindowState

from .conftest import reference_columns


def windows(profile: ReferenceProfile, core: DriftCore, rows: int = 2000) -> DriftWindows:
    return DriftWindows(profile, window_rows=rows, core=core)


# --------------------------------------------------------------------------------------------
# End to end


def test_identical_distributions_never_drift(profile: ReferenceProfile, core: DriftCore) -> None:
    w = windows(profile, core)
    reports = [r for seed in range(1, 13) for r in w.observe(reference_columns(2000, seed))]
    assert len(reports) == 12
    assert all(r.drifted == () and r.alerts == () for r in reports)
    assert all(f.status == "ok" for r in reports for f in r.features)


def test_half_sigma_shift_drifts_clearly(profile: ReferenceProfile, core: DriftCore) -> None:
    w = windows(profile, core)
    reports = []
    for seed in range(1, 5):
        data = reference_columns(2000, seed)
        data["x"] = data["x"] + 0.5
        reports += w.observe(data)
    x = [r.feature("x") for r in reports]
    assert [f.status for f in x] == ["drift"] * 4
    assert [f.alert for f in x] == [False, True, True, True]  # 2 of the last 3
    assert all(
        f.p_value < 1e-20 and f.psi.value > 0.1 and f.wasserstein.normalised > 0.4  # type: ignore[union-attr]
        for f in x
    )
    assert all(r.drifted == ("x",) for r in reports)  # nothing else moved
    # back to normal: the alert clears once fewer than 2 of the last 3 drifted
    back = [w.observe(reference_columns(2000, s))[0].feature("x") for s in (20, 21)]
    assert [(f.status, f.alert) for f in back] == [("ok", True), ("ok", False)]


# --------------------------------------------------------------------------------------------
# F.1 bad values: counted apart, never binned, never raising


def test_f1_bad_values_are_counted(profile: ReferenceProfile, core: DriftCore) -> None:
    x = np.array(
        [0.1, np.nan, np.inf, -np.inf, None, "7", True, [1], 2, np.float32(3)], dtype=object
    )
    colour = np.array(["red", "", None, float("nan"), 3, [1], {"a": 1}, b"red"], dtype=object)
    state = WindowState(profile, core=core)
    state.update({"x": x, "colour": colour, "y": np.array(["a", "b"]), "level": np.array([True])})
    h = state.states["x"]
    assert (h.n, h.n_nan, h.n_pinf, h.n_ninf, h.n_null, h.n_wrongtype) == (3, 1, 1, 1, 1, 3)  # type: ignore[union-attr]
    assert int(h.counts.sum()) == 3
    c = state.states["colour"]
    assert c.counts.tolist()[-2:] == [1, 3] and c.n_wrongtype == 2 and c.n == 3
    assert state.states["y"].n_wrongtype == 2 and state.states["y"].n == 0
    assert state.states["level"].counts.tolist()[-2] == 1  # True -> "true": not in the vocabulary


# --------------------------------------------------------------------------------------------
# F.2 out of range, subnormals, -0.0


def test_f2_out_of_range_and_special_zeros(core: DriftCore) -> None:
    h = core.NumericHistogram(np.array([-1.0, 0.0, 1.0]))
    h.update(np.array([-5.0, 5.0, 1e308, -1e308, -0.0, 0.0, 5e-324, -5e-324]))
    # [-1, 0) holds -5e-324; [0, 1] holds -0.0, 0.0 and 5e-324
    assert h.counts.tolist() == [2, 1, 3, 2]
    assert (h.min, h.max) == (-1e308, 1e308)


# --------------------------------------------------------------------------------------------
# F.3 constant reference; F.4 few unique values


def test_f3_constant_reference(core: DriftCore) -> None:
    profile = build_profile({"c": np.full(5000, 3.25)})
    feature = profile.feature("c")
    assert isinstance(feature, CategoricalFeature) and feature.source == "constant"
    assert feature.vocabulary == ("3.25",)
    w = windows(profile, core, rows=500)
    same = w.observe({"c": np.full(500, 3.25)})[0].feature("c")
    assert same.status == "ok" and same.degenerate_reference and same.chi_square.df == 0
    moved = w.observe({"c": np.full(500, 3.5)})[0].feature("c")
    assert moved.status == "drift" and moved.unseen_share == 1.0


def test_f3_sigma_floor_for_a_tiny_spread(core: DriftCore) -> None:
    values = np.linspace(0.0, 1e-5, 1000)  # 1000 distinct values, σ ≈ 3e-6
    profile = build_profile({"t": values})
    feature = profile.feature("t")
    assert isinstance(feature, NumericFeature) and feature.std < 1e-3
    report = windows(profile, core, rows=1000).observe({"t": values})[0].feature("t")
    assert report.degenerate_reference and report.wasserstein.std_used == 1e-3  # type: ignore[union-attr]
    assert report.status == "ok"


def test_f4_discrete_numerics_are_categorical() -> None:
    rng = np.random.default_rng(0)
    profile = build_profile(
        {
            "d20": rng.integers(0, 20, 5000),
            "d21": rng.integers(0, 21, 5000),
            "f": rng.choice([0.5, 1.5, 2.0], 5000),
        }
    )
    assert profile.feature("d20").kind == "categorical" and profile.feature("d21").kind == "numeric"
    f = profile.feature("f")
    assert isinstance(f, CategoricalFeature) and f.source == "discrete"
    assert sorted(f.vocabulary) == ["0.5", "1.5", "2"]
    assert category_key(2) == category_key(2.0) == category_key(np.float32(2.0)) == "2"


# --------------------------------------------------------------------------------------------
# F.5 empty windows, single values, n < n_min


def test_f5_insufficient_is_never_no_drift(profile: ReferenceProfile, core: DriftCore) -> None:
    w = windows(profile, core)
    empty = w.close()
    assert all(f.status == "insufficient" and f.n == 0 for f in empty.features)
    x = empty.feature("x")
    assert math.isnan(x.js) and math.isnan(x.p_value) and math.isfinite(x.psi.value)
    assert math.isnan(x.missing.current) and math.isnan(x.mean)  # type: ignore[arg-type]
    w.observe({"x": np.array([0.3])})
    single = w.close().feature("x")
    assert single.status == "insufficient" and single.n == 1 and math.isnan(single.std)  # type: ignore[arg-type]
    shifted = reference_columns(319, 3)
    shifted["x"] = shifted["x"] + 3.0  # obvious drift, but one value short of n_min = 5 * 64
    few = w.observe(shifted) + [w.close()]
    report = few[0].feature("x")
    assert report.n == 319 and report.n_min == 320 and report.status == "insufficient"
    assert report.p_value < 1e-10  # the statistics are still there to read
    # insufficient windows never open an alert, however many
    assert not any(r.alerts for r in [empty, *few])


# --------------------------------------------------------------------------------------------
# F.6 zero bins


def test_f6_psi_finite_with_empty_bins(profile: ReferenceProfile, core: DriftCore) -> None:
    w = windows(profile, core)
    data = reference_columns(2000, 5)
    data["x"] = np.full(2000, 10.0)  # everything in the overflow bin, empty in the reference
    report = w.observe(data)[0].feature("x")
    assert math.isfinite(report.psi.value) and report.psi.value > 5
    assert report.psi.smoothing == 0.5 and report.status == "drift"
    assert report.counts[-1] == 2000


# --------------------------------------------------------------------------------------------
# F.7 unseen values, long and unicode strings


def test_f7_unseen_categories_go_to_other(profile: ReferenceProfile, core: DriftCore) -> None:
    w = windows(profile, core)
    data = reference_columns(2000, 6)
    colours = data["colour"].astype(object)
    colours[:600] = [f"new-{i % 50}" for i in range(600)]
    data["colour"] = colours
    report = w.observe(data)[0].feature("colour")
    assert report.counters["n_other"] == 600 and report.unseen_share == pytest.approx(0.3)
    assert report.unseen_share_ref == 0.0 and report.status == "drift"
    assert OTHER == "__other__"


def test_f7_long_and_unicode_strings(core: DriftCore) -> None:
    c = core.CategoricalHistogram(["caf\u00e9", "x" * 128])
    huge = "x" * 1_000_000
    start = time.perf_counter()
    c.update(["cafe\u0301", "caf\u00e9", huge, "x" * 128 + "tail", "\ufb01", "\ud800"])
    assert time.perf_counter() - start < 0.5  # the 1 MB string is cut before normalising
    assert c.counts.tolist() == [2, 2, 2, 0]


# --------------------------------------------------------------------------------------------
# F.8 schema drift


def test_f8_schema_problems_are_counted(profile: ReferenceProfile, core: DriftCore) -> None:
    w = windows(profile, core, rows=100_000)
    data = reference_columns(100, 7)
    w.observe({"colour": data["colour"], "x": data["x"], "extra": data["x"]})  # 2 missing, 1 extra
    w.observe(
        {
            "y": np.zeros((100, 3)),
            "x": data["x"][:, None],
            "level": data["level"][:50],
            "colour": data["colour"],
        }
    )  # bad shape; (n, 1) accepted; lengths differ
    w.observe({name: np.empty((0,)) for name in profile.names})  # a (0, d) batch
    w.observe({"x": data["x"].astype(np.float32), "level": data["level"].astype(str)})  # dtypes
    w.observe({"x": [1.0, "a", None], "colour": ("red", "blue")})  # sequences, lengths differ
    schema = w.current.schema
    assert schema["missing_column"] == 2 + 0 + 0 + 2 + 2 and schema["extra_column"] == 1
    assert schema["bad_shape"] == 1 and schema["length_mismatch"] == 2
    x = w.current.states["x"]
    assert x.n == 301 and x.n_null == 1 and x.n_wrongtype == 1
    assert w.current.states["level"].n == 150
    report = w.close()
    assert report.schema["bad_shape"] == 1


# --------------------------------------------------------------------------------------------
# F.9 saturation (see also test_histogram.test_saturating_counts_from_snapshot)


def test_f9_counts_saturate_in_windows(profile: ReferenceProfile, core: DriftCore) -> None:
    state = WindowState(profile, core=core)
    edges = np.asarray(profile.feature("x").edges)  # type: ignore[union-attr]
    counts = np.zeros(edges.size + 1, np.uint64)
    counts[1] = UINT64_MAX
    full = pack_numeric(edges, counts, (0, 0, 0, 0, 0, UINT64_MAX), (0.0, 1.0, edges[0], edges[0]))
    state.states["x"] = core.NumericHistogram.from_bytes(full)
    state.update({"x": np.full(10, edges[0])})
    assert state.states["x"].counts[1] == UINT64_MAX and state.states["x"].n == UINT64_MAX
    merged = WindowState.from_bytes(state.to_bytes(), profile, core=core)
    merged.merge(state)
    assert merged.states["x"].counts[1] == UINT64_MAX


# --------------------------------------------------------------------------------------------
# F.10 snapshots (see also test_windows.test_snapshot_rejections)


@pytest.mark.parametrize("cut", [0, 1, 15, 16, 100, -1])
def test_f10_corrupt_snapshots_rejected(core: DriftCore, cut: int) -> None:
    h = core.NumericHistogram(np.array([0.0, 1.0, 2.0]))
    h.update(np.array([0.5, 1.5, np.nan]))
    data = h.to_bytes()
    with pytest.raises(SnapshotError):
        core.NumericHistogram.from_bytes(data[:cut])
    for i in range(len(data)):
        damaged = bytearray(data)
        damaged[i] ^= 0x40
        with pytest.raises(SnapshotError):
            core.NumericHistogram.from_bytes(bytes(damaged))
