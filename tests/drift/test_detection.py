"""Detection on synthetic streams: known changes alert exactly, unshifted data does not, and bad
input is counted, never crashing and never alerting. Both cores; fixed seeds; no timing.

The stream: 20 numeric features (one float32 ``[rows, 20]`` tensor ``x``, features ``x[0]`` ..
``x[19]``, twenty different distributions) and 2 categorical ones (``colour``, 5 keys, and
``region``, 8 keys), against a profile of 50 000 reference rows, in windows of 2000 rows, with
:data:`~servecore.drift.stats.DEFAULT_POLICY` (alpha 0.05 over the 22 features, PSI/JS/W1σ
thresholds 0.1, an alert when 2 of the last 3 windows drifted). Batches go in through
:meth:`DriftWindows.observe_tensors` (the block update) or :meth:`DriftWindows.observe`
(``tensor_columns``, column by column).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from servecore.drift import DriftCore
from servecore.drift.monitor import tensor_columns
from servecore.drift.profile import ReferenceProfile, build_profile
from servecore.drift.report import WindowReport
from servecore.drift.stats import DEFAULT_POLICY
from servecore.drift.windows import DriftWindows

WINDOW = 2000
N_NUMERIC = 20
COLOURS = np.array(["red", "green", "blue", "black", "white"])
COLOUR_P = [0.4, 0.25, 0.15, 0.12, 0.08]
REGIONS = np.array(["north", "south", "east", "west", "centre", "islands", "coast", "hills"])

Generator = Callable[[np.random.Generator, int], np.ndarray]

#: the 20 numeric features' distributions (all continuous: profiled as numeric)
NUMERIC: list[Generator] = [
    lambda r, n: r.normal(0.0, 1.0, n),
    lambda r, n: r.normal(10.0, 3.0, n),
    lambda r, n: r.lognormal(0.0, 0.5, n),
    lambda r, n: r.exponential(2.0, n),
    lambda r, n: r.uniform(-1.0, 1.0, n),
    lambda r, n: r.standard_t(5, n),
    lambda r, n: r.gamma(2.0, 1.0, n),
    lambda r, n: r.beta(2.0, 5.0, n) * 10,
    lambda r, n: r.normal(-5.0, 0.1, n),
    lambda r, n: r.laplace(0.0, 1.0, n),
    lambda r, n: r.logistic(0.0, 1.0, n),
    lambda r, n: r.chisquare(3, n),
    lambda r, n: r.weibull(1.5, n),
    lambda r, n: np.where(r.random(n) < 0.3, r.normal(-2, 0.5, n), r.normal(2, 1, n)),
    lambda r, n: r.uniform(0.0, 100.0, n),
    lambda r, n: r.normal(1000.0, 50.0, n),
    lambda r, n: r.lognormal(2.0, 1.0, n),
    lambda r, n: r.rayleigh(1.0, n),
    lambda r, n: r.normal(0.0, 1e-3, n),
    lambda r, n: r.pareto(3.0, n) + 1,
]


def sample(n: int, seed: int) -> dict[str, np.ndarray]:
    """*n* rows from the reference distribution, as tensors."""
    rng = np.random.default_rng(seed)
    x = np.stack([gen(rng, n) for gen in NUMERIC], axis=1).astype(np.float32)
    colour = rng.choice(COLOURS, n, p=COLOUR_P).astype(object)
    region = rng.choice(REGIONS, n).astype(object)
    return {"x": x, "colour": colour, "region": region}


@pytest.fixture(scope="module")
def profile() -> ReferenceProfile:
    profile = build_profile(tensor_columns(sample(50_000, 0)))
    assert [f.kind for f in profile.features].count("numeric") == N_NUMERIC
    assert len(profile.features) == N_NUMERIC + 2
    return profile


@pytest.fixture(scope="module")
def sigma() -> np.ndarray:
    """Each numeric feature's reference standard deviation."""
    std: np.ndarray = sample(50_000, 0)["x"].astype(np.float64).std(axis=0)
    return std


def feed(w: DriftWindows, batch: dict[str, np.ndarray], via: str) -> list[WindowReport]:
    if via == "tensors":
        return w.observe_tensors(batch)
    return w.observe(tensor_columns(batch))


# --------------------------------------------------------------------------------------------
# Known changes alert on exactly the changed features


def mean_shift(j: int, sigma: np.ndarray, size: float = 0.5) -> Callable[[dict[str, Any]], None]:
    def apply(batch: dict[str, Any]) -> None:
        batch["x"][:, j] += np.float32(size * sigma[j])

    return apply


def scale_change(j: int, factor: float = 2.0) -> Callable[[dict[str, Any]], None]:
    def apply(batch: dict[str, Any]) -> None:
        column = batch["x"][:, j]
        centre = np.float32(np.median(column))
        batch["x"][:, j] = centre + (column - centre) * np.float32(factor)

    return apply


def new_category(share: float = 0.2) -> Callable[[dict[str, Any]], None]:
    def apply(batch: dict[str, Any]) -> None:
        colour = batch["colour"]
        colour[: int(share * colour.size)] = "purple"

    return apply


def more_missing(j: int, share: float = 0.3) -> Callable[[dict[str, Any]], None]:
    def apply(batch: dict[str, Any]) -> None:
        rows = np.random.default_rng(j).random(batch["x"].shape[0]) < share
        batch["x"][rows, j] = np.nan  # missing completely at random

    return apply


def run_changed(
    profile: ReferenceProfile,
    core: DriftCore,
    via: str,
    changes: list[Callable[[dict[str, Any]], None]],
    windows: int = 4,
    seed: int = 100,
) -> list[WindowReport]:
    w = DriftWindows(profile, window_rows=WINDOW, core=core)
    reports = []
    for i in range(windows):
        batch = sample(WINDOW, seed + i)
        for change in changes:
            change(batch)
        reports += feed(w, batch, via)
    assert len(reports) == windows
    return reports


Changes = Callable[[np.ndarray], list[Callable[[dict[str, Any]], None]]]
CASES: dict[str, tuple[Changes, set[str]]] = {
    "mean-shift": (lambda s: [mean_shift(5, s)], {"x[5]"}),
    "scale-change": (lambda s: [scale_change(2)], {"x[2]"}),
    "new-category": (lambda s: [new_category()], {"colour"}),
    "mean-and-scale": (lambda s: [mean_shift(15, s), scale_change(9)], {"x[15]", "x[9]"}),
    "small-shift-on-tiny-sigma": (lambda s: [mean_shift(18, s, 0.3)], {"x[18]"}),
}


@pytest.mark.parametrize("via", ["tensors", "columns"])
@pytest.mark.parametrize("case", list(CASES))
def test_change_alerts_exactly_the_changed_features(
    profile: ReferenceProfile, core: DriftCore, sigma: np.ndarray, via: str, case: str
) -> None:
    make, changed = CASES[case]
    reports = run_changed(profile, core, via, make(sigma))
    for report in reports:
        assert set(report.drifted) == changed, report.window_id
        assert report.schema == dict.fromkeys(report.schema, 0)
    # 2 of the last 3: the alert opens with the second window and stays open
    assert [set(r.alerts) for r in reports] == [set(), changed, changed, changed]
    for name in changed:
        f = reports[-1].feature(name)
        assert f.p_value < DEFAULT_POLICY.alpha / len(profile.features)


@pytest.mark.parametrize("via", ["tensors", "columns"])
def test_more_missing_values_are_measured(
    profile: ReferenceProfile, core: DriftCore, via: str
) -> None:
    """30% NaN (at random) in x[11]: its missing-rate z-test, and only its, is far beyond the
    Bonferroni level; the binned distribution of the remaining values does not move."""
    reports = run_changed(profile, core, via, [more_missing(11)])
    bound = DEFAULT_POLICY.alpha / len(profile.features)
    for report in reports:
        flagged = {f.name for f in report.features if f.missing.test.p_value < bound}
        assert flagged == {"x[11]"}
        x11 = report.feature("x[11]")
        assert x11.missing.current == pytest.approx(0.3, abs=0.03)
        assert x11.missing.interval[0] > 0.25 and x11.counters["n_nan"] > 500
        # the values present still look like the reference; the missing share makes it drift
        assert x11.ks is not None and x11.ks.p_value > bound
        assert x11.status == "drift" and report.drifted == ("x[11]",)


def test_more_missing_values_alert(profile: ReferenceProfile, core: DriftCore) -> None:
    reports = run_changed(profile, core, "tensors", [more_missing(11)])
    assert [set(r.alerts) for r in reports][1:] == [{"x[11]"}] * 3


# --------------------------------------------------------------------------------------------
# Unshifted data: false verdicts at most alpha, no alert


def test_unshifted_windows_stay_quiet(profile: ReferenceProfile, core: DriftCore) -> None:
    """100 windows of 2000 fresh reference rows.

    The verdict of a feature needs its p-value below alpha/d (d = 22) and an effect size over
    0.1. Under no change P(p < alpha/d) <= alpha/d for each feature (the binned KS statistic
    is at most the exact one, so its p-value is conservative; chi-square is asymptotically
    exact), so by Bonferroni P(any of the 22 drifts in a window) <= alpha = 0.05: at most 5 of
    100 windows, in expectation. An alert needs 2 of 3 consecutive windows to drift for the
    same feature: at most 3 * (alpha/d)^2 per feature and window, 22 * 98 * 3 * (0.05/22)^2
    ~ 0.033 alerts expected over the whole run even if every window were at the bound, so
    none may open. Observed (these seeds, both cores): 0 windows with a drift verdict, 0 alerts;
    the significance test alone (p < alpha/d, effect sizes ignored) fires in 2 of the 100
    windows, within alpha.
    """
    w = DriftWindows(profile, window_rows=WINDOW, core=core)
    reports = []
    for seed in range(1000, 1100):
        reports += w.observe_tensors(sample(WINDOW, seed))
    assert len(reports) == 100
    bound = DEFAULT_POLICY.alpha / len(profile.features)
    drifted = sum(1 for r in reports if r.drifted)
    significant = sum(1 for r in reports if any(f.p_value < bound for f in r.features))
    assert drifted / len(reports) <= DEFAULT_POLICY.alpha
    assert significant / len(reports) <= DEFAULT_POLICY.alpha
    assert not any(r.alerts for r in reports)
    assert all(f.status != "insufficient" for r in reports for f in r.features)
    assert all(r.rows == WINDOW and not any(r.schema.values()) for r in reports)


# --------------------------------------------------------------------------------------------
# Bad input: counted, never a crash, never a false alert


def assert_quiet(reports: list[WindowReport]) -> None:
    assert reports and not any(r.alerts for r in reports)


@pytest.mark.parametrize("via", ["tensors", "columns"])
def test_constant_reference_feature(core: DriftCore, via: str) -> None:
    reference = sample(20_000, 0)
    reference["x"][:, 3] = 7.5  # a constant reference feature
    reference["x"][:, 4] = np.linspace(0, 1e-9, 20_000, dtype=np.float32)  # tiny spread
    profile = build_profile(tensor_columns(reference))
    assert profile.feature("x[3]").kind == "categorical"  # profiled as a constant
    assert profile.feature("x[4]").kind == "numeric"
    w = DriftWindows(profile, window_rows=WINDOW, core=core)
    reports = []
    for seed in range(3):
        batch = sample(WINDOW, 10 + seed)
        batch["x"][:, 3] = 7.5
        batch["x"][:, 4] = reference["x"][seed::10, 4][:WINDOW]
        reports += feed(w, batch, via)
    assert_quiet(reports)
    for report in reports:
        const = report.feature("x[3]")
        assert const.degenerate_reference and const.status == "ok" and const.n == WINDOW
        assert report.feature("x[4]").degenerate_reference
        assert report.drifted == ()


@pytest.mark.parametrize("via", ["tensors", "columns"])
def test_all_nan_window(profile: ReferenceProfile, core: DriftCore, via: str) -> None:
    w = DriftWindows(profile, window_rows=WINDOW, core=core)
    reports = []
    for seed in range(3):
        batch = sample(WINDOW, 20 + seed)
        batch["x"][:, :] = np.nan  # every numeric value missing
        batch["colour"][:] = None
        reports += feed(w, batch, via)
    assert_quiet(reports)
    for report in reports:
        for i in range(N_NUMERIC):
            f = report.feature(f"x[{i}]")
            assert f.status == "insufficient" and f.n == 0 and f.counters["n_nan"] == WINDOW
            assert f.missing.current == 1.0 and math.isnan(f.p_value)
        colour = report.feature("colour")
        assert colour.status == "insufficient" and colour.counters["n_null"] == WINDOW
        assert report.feature("region").status == "ok"  # the rest is still evaluated
        assert report.drifted == () and report.rows == WINDOW


def test_wrong_column_count(profile: ReferenceProfile, core: DriftCore) -> None:
    """Tensors too narrow or too wide, columns dropped or added: schema counters only."""
    w = DriftWindows(profile, window_rows=WINDOW, core=core)
    reports = []
    narrow = sample(WINDOW, 30)
    narrow["x"] = narrow["x"][:, :15]  # x[15..19] missing
    reports += w.observe_tensors(narrow)
    wide = sample(WINDOW, 31)
    wide["x"] = np.concatenate([wide["x"], np.zeros((WINDOW, 3), np.float32)], axis=1)
    wide["extra"] = np.zeros(WINDOW)  # x[20..22] and extra: 4 extra
    reports += w.observe_tensors(wide)
    columns = tensor_columns(sample(WINDOW, 32))
    del columns["x[0]"], columns["region"]
    columns["surplus"] = np.ones(WINDOW)
    reports += w.observe(columns)
    assert_quiet(reports)
    first, second, third = reports
    assert first.schema["missing_column"] == 5 and first.schema["extra_column"] == 0
    assert {f.name for f in first.features if f.status == "insufficient"} == {
        f"x[{i}]" for i in range(15, 20)
    }
    assert second.schema["extra_column"] == 4 and second.schema["missing_column"] == 0
    assert third.schema["missing_column"] == 2 and third.schema["extra_column"] == 1
    assert all(r.drifted == () and r.rows == WINDOW for r in reports)


def test_empty_windows(profile: ReferenceProfile, core: DriftCore) -> None:
    w = DriftWindows(profile, window_rows=WINDOW, core=core)
    empty = {name: value[:0] for name, value in sample(10, 40).items()}
    assert w.observe_tensors(empty) == [] and w.observe(tensor_columns(sample(1, 40))) == []
    reports = [w.close(), w.close(), w.close()]  # a 1-row window, then two empty ones
    assert_quiet(reports)
    assert [r.rows for r in reports] == [1, 0, 0]
    assert all(f.status == "insufficient" for r in reports for f in r.features)
    timed = DriftWindows(profile, window_seconds=60, core=core)
    assert timed.observe_tensors(empty, now=30.0) == []
    closed = timed.poll(now=61.0)  # a window that saw one empty batch
    assert closed is not None and closed.rows == 0 and not closed.alerts
    assert timed.poll(now=200.0) is None  # one that saw nothing is dropped


@pytest.mark.parametrize("via", ["tensors", "columns"])
def test_profile_that_does_not_match(profile: ReferenceProfile, core: DriftCore, via: str) -> None:
    """A batch whose names share nothing with the profile: every feature missing, every column
    extra, every window insufficient, no alert."""
    w = DriftWindows(profile, window_rows=WINDOW, core=core)
    reports = []
    for seed in range(3):
        batch = sample(WINDOW, 50 + seed)
        other = {"features": batch["x"], "colour_name": batch["colour"], "zone": batch["region"]}
        reports += feed(w, other, via)
        reports.append(w.close())  # no feature column means no rows: close by hand
    assert_quiet(reports)
    for report in reports:
        assert report.schema["missing_column"] == len(profile.features)
        assert report.schema["extra_column"] == N_NUMERIC + 2
        assert report.rows == 0
        assert all(f.status == "insufficient" for f in report.features)
