"""Drift statistics against SciPy (a test-only dependency) and against their definitions.

Tolerances:

* chi-square p and ``gammaincc``: 1e-9 relative (the series / continued fraction converge to
  ~1e-15; the tail at df=1, p=1e-6 is where the Wilson-Hilferty shortcut is 4x off);
* KS p: the Kolmogorov asymptotic with the Stephens correction approximates SciPy's
  ``kstwo.sf(D, round(n_e))`` (what ``ks_2samp(method="asymp")`` uses) within 0.2% at p=0.05 and
  within 5% down to p=1e-7 for n_e >= 100 (measured: at most 4.1%); that is the tolerance;
* Wasserstein: SciPy's exact W1 on the raw samples lies within the binned value plus or minus
  ``sum_i width_i * (r_i + c_i)`` (r, c the bin proportions): within a bin both CDFs and their
  linear interpolations meet at the edges and differ by at most the bin's mass in between, so
  each side's CDF error integrates to at most ``width_i * mass_i``. That bound is the tolerance.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special  # type: ignore[import-untyped]
from scipy import stats as sps
from scipy.spatial.distance import jensenshannon  # type: ignore[import-untyped]

from servecore.drift.stats import (
    DriftPolicy,
    alert_decision,
    chi_square,
    gammaincc,
    is_drift,
    js_distance,
    kolmogorov_sf,
    ks_binned,
    psi,
    two_proportion_z,
    wasserstein_binned,
    wilson_interval,
)


def binned(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """B+2 counts of *values* on *edges* with the histograms' rule."""
    idx = np.searchsorted(edges, values, side="right")
    idx -= values == edges[-1]
    return np.bincount(idx, minlength=edges.size + 1).astype(np.float64)


# --------------------------------------------------------------------------------------------
# chi-square and the incomplete gamma function


@pytest.mark.parametrize("a", [0.5, 1.0, 1.5, 2.0, 5.0, 31.5, 128.0, 1000.0])
@pytest.mark.parametrize("ratio", [0.01, 0.3, 0.9, 1.0, 1.1, 2.0, 5.0, 20.0])
def test_gammaincc_matches_scipy(a: float, ratio: float) -> None:
    x = a * ratio
    expected = special.gammaincc(a, x)
    if expected < 1e-290:
        assert gammaincc(a, x) < 1e-280
    else:
        assert gammaincc(a, x) == pytest.approx(expected, rel=1e-9)


def test_gammaincc_edges() -> None:
    assert gammaincc(2.0, 0.0) == 1.0 and gammaincc(2.0, math.inf) == 0.0
    with pytest.raises(ValueError):
        gammaincc(0.0, 1.0)
    with pytest.raises(ValueError):
        gammaincc(1.0, -1.0)


@pytest.mark.parametrize("df", [1, 2, 3, 10, 63, 257])
@pytest.mark.parametrize("p", [0.5, 0.05, 1e-3, 1e-6, 1e-12, 1e-30])
def test_chi_square_p_deep_tails(df: int, p: float) -> None:
    x = sps.chi2.isf(p, df)
    assert gammaincc(df / 2, x / 2) == pytest.approx(sps.chi2.sf(x, df), rel=1e-9)


def test_chi_square_at_df1_one_in_a_million() -> None:
    x = sps.chi2.isf(1e-6, 1)  # 23.93
    assert gammaincc(0.5, x / 2) == pytest.approx(1e-6, rel=1e-9)
    # Wilson-Hilferty, which this replaces, is about 4x off here
    z = ((x / 1) ** (1 / 3) - (1 - 2 / 9)) / math.sqrt(2 / 9)
    assert sps.norm.sf(z) > 3e-6


@pytest.mark.parametrize("seed", range(5))
def test_chi_square_matches_contingency(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ref = rng.integers(0, 500, size=12).astype(float)
    cur = rng.integers(0, 200, size=12).astype(float)
    ref[3] = cur[3] = 0  # an empty column is dropped
    cur[5] = 0
    result = chi_square(ref, cur)
    keep = (ref + cur) > 0
    stat, p, dof, _ = sps.chi2_contingency(np.vstack([ref[keep], cur[keep]]), correction=False)
    assert result.statistic == pytest.approx(stat, rel=1e-12)
    assert result.df == dof == 10
    assert result.p_value == pytest.approx(p, rel=1e-9, abs=1e-300)


def test_chi_square_degenerate_inputs() -> None:
    assert chi_square([5, 0], [7, 0]) == chi_square([5], [7])
    assert chi_square([5, 0], [7, 0]).p_value == 1.0
    assert math.isnan(chi_square([0, 0], [1, 2]).p_value)


# --------------------------------------------------------------------------------------------
# Kolmogorov-Smirnov


@pytest.mark.parametrize("n_e", [100, 1000, 10_000, 100_000])
@pytest.mark.parametrize(("p", "tol"), [(0.5, 0.02), (0.05, 0.002), (1e-3, 0.05), (1e-7, 0.05)])
def test_kolmogorov_asymptotic_against_kstwo(n_e: int, p: float, tol: float) -> None:
    d = sps.kstwo.isf(p, n_e)
    root = math.sqrt(n_e)
    assert kolmogorov_sf((root + 0.12 + 0.11 / root) * d) == pytest.approx(p, rel=tol)


def test_kolmogorov_sf_range() -> None:
    assert kolmogorov_sf(0.0) == 1.0 and kolmogorov_sf(1e-3) == 1.0
    assert kolmogorov_sf(1.18 - 1e-12) == pytest.approx(kolmogorov_sf(1.18), rel=1e-9)
    assert sps.kstwobign.sf(1.0) == pytest.approx(kolmogorov_sf(1.0), rel=1e-12)
    assert sps.kstwobign.sf(2.5) == pytest.approx(kolmogorov_sf(2.5), rel=1e-12)
    assert kolmogorov_sf(40.0) == 0.0


@pytest.mark.parametrize("shift", [0, 1])
def test_ks_binned_against_ks_2samp(shift: int) -> None:
    """On integer data with an edge at every value, binned D is the exact D."""
    rng = np.random.default_rng(shift)
    ref = rng.binomial(9, 0.5, size=4000).astype(float)
    cur = np.minimum(rng.binomial(9, 0.5, size=3000) + rng.integers(0, 2, 3000) * shift, 9.0)
    edges = np.arange(0.0, 11.0)
    result = ks_binned(binned(ref, edges), binned(cur, edges))
    exact = sps.ks_2samp(ref, cur, method="asymp")
    assert result.d == pytest.approx(exact.statistic, abs=1e-12)
    assert result.n_effective == pytest.approx(4000 * 3000 / 7000)
    assert result.p_value == pytest.approx(exact.pvalue, rel=0.05, abs=1e-300)


def test_ks_binned_is_a_lower_bound() -> None:
    rng = np.random.default_rng(3)
    ref, cur = rng.normal(size=20_000), rng.normal(0.05, 1.0, size=5000)
    edges = np.quantile(ref, np.linspace(0, 1, 65))
    d = ks_binned(binned(ref, edges), binned(cur, edges)).d
    exact = sps.ks_2samp(ref, cur).statistic
    assert d <= exact + 1e-12 and d == pytest.approx(exact, abs=0.005)


# --------------------------------------------------------------------------------------------
# Jensen-Shannon, PSI, Wasserstein


@pytest.mark.parametrize("seed", range(6))
def test_js_matches_scipy_base2(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ref = rng.integers(0, 50, size=20).astype(float)
    cur = rng.integers(0, 50, size=20).astype(float)
    ref[:3] = 0
    cur[-2:] = 0
    assert js_distance(ref, cur) == pytest.approx(jensenshannon(ref, cur, base=2), rel=1e-12)


def test_js_bounds() -> None:
    assert js_distance([1, 0], [0, 1]) == pytest.approx(1.0)
    assert js_distance([3, 4, 5], [6, 8, 10]) == pytest.approx(0.0, abs=1e-7)
    assert math.isnan(js_distance([0, 0], [1, 1]))


def test_psi_definition_and_smoothing() -> None:
    ref, cur = np.array([250.0, 250, 250, 250]), np.array([400.0, 300, 300, 0])
    p = (ref + 0.5) / (ref + 0.5).sum()
    q = (cur + 0.5) / (cur + 0.5).sum()
    result = psi(ref, cur)
    assert result.smoothing == 0.5
    assert result.value == pytest.approx(float(np.sum((q - p) * np.log(q / p))), rel=1e-12)
    assert psi(ref, cur, smoothing=1e-4).value > result.value  # the smoothing dominates
    with pytest.raises(ValueError, match="smoothing"):
        psi(ref, cur, smoothing=0)


def test_psi_never_inf_or_nan() -> None:
    cases: list[tuple[list[float], list[float]]] = [
        ([0, 0, 0], [0, 0, 0]),
        ([10, 0, 0], [0, 0, 10]),
        ([1e9, 0], [0, 1]),
    ]
    for ref, cur in cases:
        value = psi(ref, cur).value
        assert math.isfinite(value) and value >= 0


def test_psi_ignores_bins_empty_on_both_sides() -> None:
    assert psi([0, 5, 7, 0], [0, 6, 6, 0]).value == psi([5, 7], [6, 6]).value


@pytest.mark.parametrize(
    ("loc", "scale", "near"),
    [
        (0.0, 1.0, 0.01),
        (0.1, 1.0, 0.01),
        (0.0, 1.1, 0.01),
        (0.3, 1.0, 0.02),
        (0.0, 1.5, 0.05),
        (-2.0, 0.5, 0.25),
    ],
)
def test_wasserstein_against_scipy_with_its_bound(loc: float, scale: float, near: float) -> None:
    """Within the bound always; near the 0.1σ threshold within 0.01σ at B=64 (measured 0.008).

    Large shifts pile into the wide outer quantile bins, where "uniform within the bin" is
    coarse: the binned value then overstates W1 (by ~10% at a 2σ shift), far past any threshold.
    """
    rng = np.random.default_rng(4)
    ref = rng.normal(size=20_000)
    cur = rng.normal(loc, scale, size=5000)
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, 65), method="inverted_cdf"))
    r, c = binned(ref, edges), binned(cur, edges)
    result = wasserstein_binned(
        r,
        c,
        edges,
        ref_std=float(ref.std(ddof=1)),
        cur_range=(cur.min(), cur.max()),
        ref_range=(ref.min(), ref.max()),
    )
    exact = sps.wasserstein_distance(ref, cur)
    grid = np.concatenate(([min(cur.min(), edges[0])], edges, [max(cur.max(), edges[-1])]))
    bound = float(np.sum(np.diff(grid) * (r / r.sum() + c / c.sum())))
    assert abs(result.distance - exact) <= bound
    assert result.distance == pytest.approx(exact, abs=near)
    assert result.normalised == pytest.approx(result.distance / ref.std(ddof=1))
    assert not result.degenerate_reference


def test_wasserstein_exact_for_uniform_bins() -> None:
    """Mass spread evenly within bins is the model: two shifted uniforms are exact."""
    edges = np.array([0.0, 1.0, 2.0])
    result = wasserstein_binned([0, 1, 0, 0], [0, 0, 1, 0], edges, ref_std=1.0)
    assert result.distance == pytest.approx(1.0)
    half = wasserstein_binned([0, 2, 0, 0], [0, 1, 1, 0], edges, ref_std=1.0)
    assert half.distance == pytest.approx(0.5)


def test_wasserstein_sigma_floor() -> None:
    result = wasserstein_binned([0, 1, 0], [0, 1, 0], [0.0, 1e-6], ref_std=0.0)
    assert result.degenerate_reference and result.std_used == 1e-3 and result.normalised == 0.0
    assert wasserstein_binned(
        [0, 1, 0], [0, 1, 0], [0.0, 1.0], ref_std=math.nan
    ).degenerate_reference


def test_wasserstein_out_of_range_mass() -> None:
    """Mass beyond the edges spreads to the current window's min/max."""
    result = wasserstein_binned(
        [0, 10, 0], [0, 0, 10], [0.0, 1.0], ref_std=1.0, cur_range=(1.0, 3.0)
    )
    assert result.distance == pytest.approx(1.5)  # U[0,1] vs U[1,3]: |0.5 - 2|


# --------------------------------------------------------------------------------------------
# Proportions


def test_two_proportion_z() -> None:
    result = two_proportion_z(50, 1000, 80, 1000)
    pooled = 130 / 2000
    z = (0.08 - 0.05) / math.sqrt(pooled * (1 - pooled) * (2 / 1000))
    assert result.z == pytest.approx(z) and result.p_value == pytest.approx(2 * sps.norm.sf(z))
    assert two_proportion_z(0, 100, 0, 100).p_value == 1.0
    assert math.isnan(two_proportion_z(0, 0, 1, 10).z)


@pytest.mark.parametrize(("k", "n"), [(0, 10), (5, 10), (10, 10), (3, 1000), (999, 1000)])
def test_wilson_interval(k: int, n: int) -> None:
    low, high = wilson_interval(k, n)
    z = sps.norm.isf(0.025)
    # the interval's ends are where the score test just rejects: |p_hat - p| = z * sqrt(p(1-p)/n)
    for end in (low, high):
        if 1e-9 < end < 1 - 1e-9:
            assert abs(k / n - end) == pytest.approx(z * math.sqrt(end * (1 - end) / n), rel=1e-9)
    assert low <= k / n <= high
    assert wilson_interval(0, 10)[1] == pytest.approx(0.2775, abs=1e-4)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


# --------------------------------------------------------------------------------------------
# Decisions


def test_is_drift_needs_significance_and_effect() -> None:
    policy = DriftPolicy()
    assert is_drift(p_value=1e-5, n_features=10, psi=0.2, policy=policy)
    assert not is_drift(p_value=0.004, n_features=20, psi=0.2, policy=policy)  # 0.05/20
    assert not is_drift(p_value=1e-12, n_features=1, psi=0.05, js=0.05, wasserstein=0.05)
    assert is_drift(p_value=1e-12, n_features=1, wasserstein=0.1)
    assert not is_drift(p_value=math.nan, n_features=1, psi=1.0)
    assert not is_drift(p_value=1e-12, n_features=1, psi=math.nan)
    off = DriftPolicy(psi_threshold=None, js_threshold=None)
    assert not is_drift(p_value=1e-12, n_features=1, psi=5.0, js=1.0, policy=off)


def test_alert_hysteresis() -> None:
    assert not alert_decision(["drift"])
    assert alert_decision(["drift", "ok", "drift"])
    assert alert_decision(["drift", "drift"])
    assert not alert_decision(["drift", "drift", "ok", "ok"])  # fewer than 2 of the last 3
    assert alert_decision(["drift", "drift", "ok"])
    # insufficient windows neither open nor clear an alert
    assert alert_decision(["drift", "drift", "insufficient", "insufficient", "insufficient"])
    assert not alert_decision(["drift", "insufficient", "ok", "insufficient", "ok"])
    assert alert_decision(["ok", "drift", "drift", "drift"], k=3, m=3)


def test_policy_validation_and_n_min() -> None:
    assert DriftPolicy().n_min(64) == 320 and DriftPolicy().n_min(3) == 100
    with pytest.raises(ValueError):
        DriftPolicy(k=4, m=3)
    with pytest.raises(ValueError):
        DriftPolicy(alpha=0)
