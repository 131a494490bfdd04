"""Drift statistics over binned counts, and the alert rule. Pure functions, O(bins), no SciPy.

Every function takes the reference and current counts of the same bins (any non-negative numbers;
for numeric features the B+2 bins of a histogram, underflow and overflow included, for
categorical ones the K+2 buckets or the K+1 without null) and runs once per window and feature.
A statistic is NaN only when one of the two distributions is empty; PSI is never NaN or inf.

* :func:`psi`: population stability index, with ``smoothing`` added to every count (+0.5 by
  default; recorded in the result) over the bins where either side has mass.
* :func:`js_distance`: Jensen–Shannon **distance** in base 2, the square root of the divergence:
  in [0, 1] (what ``scipy.spatial.distance.jensenshannon(p, q, base=2)`` returns).
* :func:`ks_binned`: KS statistic D over the bin boundaries (a lower bound of the exact D) and the
  Kolmogorov asymptotic p-value with the effective size ``n_e = nm/(n+m)`` and the Stephens
  correction ``λ = (√n_e + 0.12 + 0.11/√n_e)·D``.
* :func:`chi_square`: Pearson's χ² of the 2×k contingency table (reference vs current, bins
  where both are empty dropped), df = k−1, p from :func:`gammaincc` (series / Lentz continued
  fraction; accurate in the deep tail, unlike Wilson–Hilferty).
* :func:`wasserstein_binned`: Wasserstein-1 between the two binned distributions, taking each
  bin's mass as spread evenly over it (the under/overflow bins span the current window's min/max
  beyond the outer edges), divided by the reference σ floored at ``std_floor``.
* :func:`two_proportion_z`, :func:`wilson_interval`: missing-rate change and interval.
* :func:`is_drift` and :func:`alert_decision`: the per-window verdict (Bonferroni-corrected
  significance AND an effect size over its threshold) and k-of-m hysteresis over verdicts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

Status = Literal["ok", "drift", "insufficient"]

_EPS = 1e-15
_TINY = 1e-300


def _pair(ref: ArrayLike, cur: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(ref, dtype=np.float64)
    c = np.asarray(cur, dtype=np.float64)
    if r.ndim != 1 or r.shape != c.shape:
        raise ValueError(f"counts must be 1-D of one length, got {r.shape} and {c.shape}")
    if not (np.all(r >= 0) and np.all(c >= 0) and np.all(np.isfinite(r + c))):
        raise ValueError("counts must be finite and non-negative")
    return r, c


# --------------------------------------------------------------------------------------------
# Effect sizes


@dataclass(frozen=True, slots=True)
class PsiResult:
    """PSI and the pseudo-count that was added to every bin."""

    value: float
    smoothing: float


def psi(ref: ArrayLike, cur: ArrayLike, *, smoothing: float = 0.5) -> PsiResult:
    """Population stability index Σ (c_i − r_i)·ln(c_i / r_i) over smoothed proportions.

    Bins empty on both sides are left out (they carry no information); *smoothing* (> 0) is
    added to each count of the others, so no proportion is 0 and the result is finite.
    """
    if not smoothing > 0 or not math.isfinite(smoothing):
        raise ValueError(f"smoothing must be a positive number, got {smoothing!r}")
    r, c = _pair(ref, cur)
    keep = (r + c) > 0
    r, c = r[keep] + smoothing, c[keep] + smoothing
    if r.size == 0:
        return PsiResult(0.0, smoothing)
    p, q = r / r.sum(), c / c.sum()
    return PsiResult(float(np.sum((q - p) * np.log(q / p))), smoothing)


def js_distance(ref: ArrayLike, cur: ArrayLike) -> float:
    """Jensen–Shannon distance, base 2, in [0, 1]; NaN if either side is empty."""
    r, c = _pair(ref, cur)
    if r.sum() == 0 or c.sum() == 0:
        return math.nan
    p, q = r / r.sum(), c / c.sum()
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

    divergence = (kl(p) + kl(q)) / 2
    return math.sqrt(min(max(divergence, 0.0), 1.0))


@dataclass(frozen=True, slots=True)
class WassersteinResult:
    """W1 in the feature's units, W1/σ_ref, the σ used, and whether σ_ref was degenerate."""

    distance: float
    normalised: float
    std_used: float
    degenerate_reference: bool


def wasserstein_binned(
    ref: ArrayLike,
    cur: ArrayLike,
    edges: ArrayLike,
    *,
    ref_std: float,
    cur_range: tuple[float, float] | None = None,
    ref_range: tuple[float, float] | None = None,
    std_floor: float = 1e-3,
) -> WassersteinResult:
    """Wasserstein-1 between two histograms on *edges* (B+2 counts each), over σ_ref.

    Within each bin the mass is taken as uniform, so the CDFs are piecewise linear and the
    integral of their gap is exact for that model. The underflow bin spans from the smaller of
    the two ranges' minima to ``edges[0]``, the overflow bin from ``edges[-1]`` to the larger
    maximum (*cur_range* / *ref_range*: ``(min, max)`` of each side's finite values; a bin with
    mass but no range collapses onto its edge). The reference σ is floored at *std_floor*,
    and ``degenerate_reference`` says so when it was below it (or not finite).
    """
    r, c = _pair(ref, cur)
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 1 or r.size != e.size + 1:
        raise ValueError(f"{e.size} edges need {e.size + 1} counts, got {r.size}")
    degenerate = not (math.isfinite(ref_std) and ref_std >= std_floor)
    std = ref_std if not degenerate else std_floor
    if r.sum() == 0 or c.sum() == 0:
        return WassersteinResult(math.nan, math.nan, std, degenerate)
    ranges = [pair for pair in (cur_range, ref_range) if pair is not None]
    lows = [e[0]] + [lo for lo, _ in ranges if not math.isnan(lo)]
    highs = [e[-1]] + [hi for _, hi in ranges if not math.isnan(hi)]
    grid = np.concatenate(([min(lows)], e, [max(highs)]))
    gap = np.concatenate(([0.0], np.cumsum(r / r.sum() - c / c.sum())))
    gap[-1] = 0.0  # both CDFs end at 1
    distance = 0.0
    for i in range(r.size):
        width, a, b = grid[i + 1] - grid[i], gap[i], gap[i + 1]
        if width <= 0:
            continue
        if a * b >= 0:
            distance += width * (abs(a) + abs(b)) / 2
        else:  # the gap crosses zero inside the bin
            distance += width * (a * a + b * b) / (2 * (abs(a) + abs(b)))
    return WassersteinResult(distance, distance / std, std, degenerate)


# --------------------------------------------------------------------------------------------
# Tests with p-values


@dataclass(frozen=True, slots=True)
class KsResult:
    """Binned KS statistic, its asymptotic p-value and the effective sample size."""

    d: float
    p_value: float
    n_effective: float


def kolmogorov_sf(lam: float) -> float:
    """Q(λ) = 2 Σ_{j≥1} (−1)^{j−1} exp(−2 j² λ²), the Kolmogorov distribution's upper tail.

    For λ < 1.18 the equivalent theta-function form 1 − (√(2π)/λ) Σ exp(−(2j−1)² π² / (8λ²))
    is summed instead: both converge in a few terms where each is used.
    """
    if lam <= 0:
        return 1.0
    if lam < 1.18:
        total = 0.0
        for j in range(1, 20):
            term = math.exp(-((2 * j - 1) ** 2) * math.pi**2 / (8 * lam * lam))
            total += term
            if term < _EPS * total:
                break
        return min(1.0, max(0.0, 1.0 - math.sqrt(2 * math.pi) / lam * total))
    total, sign = 0.0, 1.0
    for j in range(1, 100):
        term = math.exp(-2.0 * j * j * lam * lam)
        total += sign * term
        if term < 1e-16 * max(total, _TINY):
            break
        sign = -sign
    return min(1.0, max(0.0, 2.0 * total))


def ks_binned(ref: ArrayLike, cur: ArrayLike) -> KsResult:
    """Two-sample KS over ordered bins: D = max |F_ref − F_cur| at the boundaries, and p."""
    r, c = _pair(ref, cur)
    n, m = r.sum(), c.sum()
    if n == 0 or m == 0:
        return KsResult(math.nan, math.nan, 0.0)
    d = float(np.max(np.abs(np.cumsum(r) / n - np.cumsum(c) / m)))
    n_e = n * m / (n + m)
    root = math.sqrt(n_e)
    return KsResult(d, kolmogorov_sf((root + 0.12 + 0.11 / root) * d), n_e)


def gammaincc(a: float, x: float) -> float:
    """Q(a, x) = Γ(a, x)/Γ(a), the regularised upper incomplete gamma function (a > 0, x ≥ 0)."""
    if not a > 0 or not x >= 0:
        raise ValueError(f"gammaincc needs a > 0 and x >= 0, got a={a!r}, x={x!r}")
    if x == 0:
        return 1.0
    if math.isinf(x):
        return 0.0
    log_front = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1:  # series for P(a, x), then Q = 1 - P
        term = total = 1.0 / a
        ap = a
        for _ in range(100_000):
            ap += 1
            term *= x / ap
            total += term
            if abs(term) < abs(total) * _EPS:
                break
        return min(1.0, max(0.0, 1.0 - total * math.exp(log_front)))
    # continued fraction for Q(a, x), modified Lentz
    b = x + 1 - a
    c = 1.0 / _TINY
    d = 1.0 / b
    h = d
    for i in range(1, 100_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = _TINY if abs(d) < _TINY else d
        c = b + an / c
        c = _TINY if abs(c) < _TINY else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < _EPS:
            break
    return min(1.0, max(0.0, math.exp(log_front) * h))


@dataclass(frozen=True, slots=True)
class ChiSquareResult:
    """Pearson χ² of the 2×k table, its degrees of freedom and p-value."""

    statistic: float
    df: int
    p_value: float


def chi_square(ref: ArrayLike, cur: ArrayLike) -> ChiSquareResult:
    """χ² test of homogeneity of the reference and current counts (no continuity correction)."""
    r, c = _pair(ref, cur)
    keep = (r + c) > 0
    r, c = r[keep], c[keep]
    n, m = r.sum(), c.sum()
    if n == 0 or m == 0:
        return ChiSquareResult(math.nan, 0, math.nan)
    df = r.size - 1
    if df == 0:
        return ChiSquareResult(0.0, 0, 1.0)
    total = r + c
    exp_r, exp_c = total * (n / (n + m)), total * (m / (n + m))
    stat = float(np.sum((r - exp_r) ** 2 / exp_r) + np.sum((c - exp_c) ** 2 / exp_c))
    return ChiSquareResult(stat, df, gammaincc(df / 2, stat / 2))


@dataclass(frozen=True, slots=True)
class ZTestResult:
    """Two-proportion z statistic (current minus reference) and its two-sided p-value."""

    z: float
    p_value: float


def two_proportion_z(x_ref: int, n_ref: int, x_cur: int, n_cur: int) -> ZTestResult:
    """Pooled two-proportion z-test (e.g. of the missing rate); NaN when a side is empty."""
    if n_ref <= 0 or n_cur <= 0:
        return ZTestResult(math.nan, math.nan)
    p1, p2 = x_ref / n_ref, x_cur / n_cur
    pooled = (x_ref + x_cur) / (n_ref + n_cur)
    var = pooled * (1 - pooled) * (1 / n_ref + 1 / n_cur)
    if var <= 0:
        return ZTestResult(0.0, 1.0)
    z = (p2 - p1) / math.sqrt(var)
    return ZTestResult(z, math.erfc(abs(z) / math.sqrt(2)))


def wilson_interval(successes: int, n: int, *, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval of a proportion (95% by default); (NaN, NaN) when n is 0."""
    if n <= 0:
        return (math.nan, math.nan)
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    low = 0.0 if successes <= 0 else max(0.0, centre - half)  # exact ends at 0/n and n/n
    high = 1.0 if successes >= n else min(1.0, centre + half)
    return (low, high)


# --------------------------------------------------------------------------------------------
# Decisions


@dataclass(frozen=True, slots=True)
class DriftPolicy:
    """When a window drifts and when an alert opens. None disables an effect-size threshold."""

    #: family-wise significance level, split over the features (Bonferroni: alpha / d)
    alpha: float = 0.05
    psi_threshold: float | None = 0.1
    js_threshold: float | None = 0.1
    wasserstein_threshold: float | None = 0.1
    #: the missing-value share may move this much (absolute) before a significant change in it
    #: (two-proportion z-test, also at alpha / d) makes the feature drift; None: never
    missing_threshold: float | None = 0.05
    #: pseudo-count added to each bin for PSI
    smoothing: float = 0.5
    #: floor of the reference σ in W1/σ
    std_floor: float = 1e-3
    #: a window with fewer valid values than max(min_count, min_per_bin * bins) is insufficient
    min_count: int = 100
    min_per_bin: int = 5
    #: an alert is open while at least k of the last m evaluated windows drifted
    k: int = 2
    m: int = 3

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha!r}")
        if not 1 <= self.k <= self.m:
            raise ValueError(f"need 1 <= k <= m, got k={self.k!r}, m={self.m!r}")

    def n_min(self, bins: int) -> int:
        """The smallest window that is evaluated, for a feature of *bins* bins."""
        return max(self.min_count, self.min_per_bin * bins)


#: the defaults: alpha 0.05, PSI/JS/W1-over-sigma thresholds 0.1, +0.5 smoothing, 2 of 3 windows
DEFAULT_POLICY = DriftPolicy()


def is_drift(
    *,
    p_value: float,
    n_features: int,
    psi: float | None = None,
    js: float | None = None,
    wasserstein: float | None = None,
    policy: DriftPolicy = DEFAULT_POLICY,
) -> bool:
    """Whether one feature drifted: ``p < alpha / n_features`` AND an effect size over threshold.

    An effect size that is None or NaN, or whose threshold is None, does not count.
    """
    if not p_value < policy.alpha / max(n_features, 1):  # NaN is never significant
        return False
    effects = (
        (psi, policy.psi_threshold),
        (js, policy.js_threshold),
        (wasserstein, policy.wasserstein_threshold),
    )
    return any(v is not None and t is not None and v >= t for v, t in effects)


def is_missing_drift(missing_p: float, reference: float, current: float, *, n_features: int, policy: DriftPolicy) -> bool:
    """Whether the share of missing values moved: significant at ``alpha / n_features`` AND by at
    least ``policy.missing_threshold`` (absolute). NaN never counts."""
    threshold = policy.missing_threshold
    if threshold is None or not missing_p < policy.alpha / max(n_features, 1):
        return False
    return abs(current - reference) >= threshold


def alert_decision(history: Sequence[Status], *, k: int = 2, m: int = 3) -> bool:
    """Whether the alert is open after *history* (oldest first): k of the last m drifted.

    Insufficient windows are skipped: they neither open nor clear an alert. The alert clears
    as soon as fewer than k of the last m evaluated windows drifted.
    """
    evaluated = [s for s in history if s != "insufficient"][-m:]
    return sum(s == "drift" for s in evaluated) >= k
