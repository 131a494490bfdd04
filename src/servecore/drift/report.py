"""Evaluating a closed window: per-feature statistics, status and alert, in a report.

Numeric features are compared over their B+2 bins (KS, χ², PSI, JS, W1/σ; KS gives the p-value
the verdict uses). Categorical ones over their K+1 buckets, vocabulary and ``__other__`` (χ²
gives the p-value; PSI and JS the effect sizes); missing values are left to the missing-rate
z-test, and the ``__other__`` share is reported as the unseen share. A feature with fewer valid
values than ``policy.n_min(bins)`` is ``insufficient`` whatever its statistics say (they are
still reported when both sides have values; NaN otherwise).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, cast

import numpy as np

from servecore.drift.profile import CategoricalFeature, Feature, NumericFeature
from servecore.drift.stats import (
    ChiSquareResult,
    DriftPolicy,
    KsResult,
    PsiResult,
    Status,
    WassersteinResult,
    ZTestResult,
    alert_decision,
    is_missing_drift,
    chi_square,
    is_drift,
    js_distance,
    ks_binned,
    psi,
    two_proportion_z,
    wasserstein_binned,
    wilson_interval,
)
from servecore.drift.types import CategoricalState, HistogramState, NumericState


@dataclass(frozen=True, slots=True)
class MissingRate:
    """The share of missing values (null, NaN) among all of a feature's values."""

    reference: float
    current: float
    #: Wilson 95% interval of the current rate
    interval: tuple[float, float]
    #: two-proportion z-test, current against reference
    test: ZTestResult


@dataclass(frozen=True, slots=True)
class FeatureReport:
    """One feature in one window: its verdict, statistics and counters."""

    name: str
    kind: Literal["numeric", "categorical"]
    status: Status
    #: whether the feature's alert is open after this window (k of the last m drifted)
    alert: bool
    #: valid (binned) values in the window, and the least that is evaluated
    n: int
    n_min: int
    #: the current counts (B+2 numeric bins, or the K+2 categorical buckets)
    counts: tuple[int, ...]
    #: n_nan, n_pinf, n_ninf, n_null, n_wrongtype (numeric); n_other, n_null, n_wrongtype
    counters: Mapping[str, int]
    #: the p-value the verdict used (KS for numeric features, χ² for categorical ones)
    p_value: float
    psi: PsiResult
    js: float
    chi_square: ChiSquareResult
    ks: KsResult | None
    wasserstein: WassersteinResult | None
    #: the reference is degenerate (σ below the floor, or a constant profiled as categorical)
    degenerate_reference: bool
    #: missing values (null and NaN) over all values, reference and current, and the z-test
    missing: MissingRate
    #: categorical: the share of valid values outside the vocabulary, reference and current
    unseen_share_ref: float | None
    unseen_share: float | None
    #: numeric: the current window's mean, standard deviation (ddof=1), min and max
    mean: float | None
    std: float | None
    min: float | None
    max: float | None


@dataclass(frozen=True, slots=True)
class WindowReport:
    """A closed window: its identity, every feature's report and the schema counters."""

    window_id: int
    rows: int
    profile_sha256: str
    features: tuple[FeatureReport, ...]
    #: counted schema problems (missing/extra columns, bad shapes, length mismatches, late batches)
    schema: Mapping[str, int]
    #: alpha / number of features: the significance level each feature is held to
    alpha_per_feature: float

    def feature(self, name: str) -> FeatureReport:
        """The report of the feature called *name* (KeyError if there is none)."""
        for report in self.features:
            if report.name == name:
                return report
        raise KeyError(name)

    @property
    def drifted(self) -> tuple[str, ...]:
        """Features whose status is ``drift`` in this window."""
        return tuple(f.name for f in self.features if f.status == "drift")

    @property
    def alerts(self) -> tuple[str, ...]:
        """Features whose alert is open after this window."""
        return tuple(f.name for f in self.features if f.alert)

    @property
    def drifted_share(self) -> float:
        """Drifted features over all features (dataset drift when >= 0.5, as Evidently)."""
        return len(self.drifted) / len(self.features) if self.features else 0.0


def evaluate_feature(
    feature: Feature,
    state: HistogramState,
    *,
    n_features: int,
    policy: DriftPolicy,
    history: Sequence[Status] = (),
) -> FeatureReport:
    """The report of one feature's window *state* against its reference *feature*.

    :param history: the feature's earlier statuses, oldest first, for the alert's hysteresis.
    """
    if isinstance(feature, NumericFeature):
        return _numeric(feature, cast(NumericState, state), n_features, policy, history)
    return _categorical(feature, cast(CategoricalState, state), n_features, policy, history)


def _finish(status: Status, history: Sequence[Status], policy: DriftPolicy) -> bool:
    return alert_decision([*history, status], k=policy.k, m=policy.m)


def _with_missing(status: Status, missing: MissingRate, n_features: int, policy: DriftPolicy) -> Status:
    """A feature whose missing share moved drifts too (see :func:`is_missing_drift`). Only a
    window with enough values present is judged: one with (almost) nothing but missing values
    stays insufficient, a broken upstream to look at rather than a verdict."""
    if status != "ok":
        return status
    if is_missing_drift(missing.test.p_value, missing.reference, missing.current, n_features=n_features, policy=policy):
        return "drift"
    return status


def _missing(ref_missing: int, ref_total: int, missing: int, total: int) -> MissingRate:
    return MissingRate(
        ref_missing / ref_total if ref_total else math.nan,
        missing / total if total else math.nan,
        wilson_interval(missing, total),
        two_proportion_z(ref_missing, ref_total, missing, total),
    )


def _numeric(
    feature: NumericFeature,
    state: NumericState,
    n_features: int,
    policy: DriftPolicy,
    history: Sequence[Status],
) -> FeatureReport:
    ref = np.asarray(feature.counts, dtype=np.float64)
    counts = state.counts
    cur = counts.astype(np.float64)
    n = state.n
    n_min = policy.n_min(feature.bins)
    ks = ks_binned(ref, cur)
    w = wasserstein_binned(
        ref, cur, feature.edges, ref_std=feature.std, cur_range=(state.min, state.max),
        ref_range=(feature.min, feature.max), std_floor=policy.std_floor,
    )
    p = psi(ref, cur, smoothing=policy.smoothing)
    js = js_distance(ref, cur)
    if n < n_min:
        status: Status = "insufficient"
    elif is_drift(p_value=ks.p_value, n_features=n_features, psi=p.value, js=js,
                  wasserstein=w.normalised, policy=policy):
        status = "drift"
    else:
        status = "ok"
    counters = {"n_nan": state.n_nan, "n_pinf": state.n_pinf, "n_ninf": state.n_ninf,
                "n_null": state.n_null, "n_wrongtype": state.n_wrongtype}
    missing = state.n_null + state.n_nan
    total = n + sum(counters.values())
    missing_rate = _missing(feature.missing, feature.n_total, missing, total)
    status = _with_missing(status, missing_rate, n_features, policy)
    return FeatureReport(
        name=feature.name, kind="numeric", status=status,
        alert=_finish(status, history, policy), n=n, n_min=n_min,
        counts=tuple(int(c) for c in counts), counters=counters, p_value=ks.p_value, psi=p,
        js=js, chi_square=chi_square(ref, cur), ks=ks, wasserstein=w,
        degenerate_reference=w.degenerate_reference,
        missing=missing_rate,
        unseen_share_ref=None, unseen_share=None,
        mean=state.mean if n else math.nan,
        std=math.sqrt(state.m2 / (n - 1)) if n > 1 and state.m2 >= 0 else math.nan,
        min=state.min if n else math.nan, max=state.max if n else math.nan,
    )


def _categorical(
    feature: CategoricalFeature,
    state: CategoricalState,
    n_features: int,
    policy: DriftPolicy,
    history: Sequence[Status],
) -> FeatureReport:
    counts = state.counts
    ref = np.asarray(feature.counts[:-1], dtype=np.float64)  # without null
    cur = counts[:-1].astype(np.float64)
    n = state.n
    n_min = policy.n_min(len(feature.vocabulary) + 1)
    chi = chi_square(ref, cur)
    p = psi(ref, cur, smoothing=policy.smoothing)
    js = js_distance(ref, cur)
    if n < n_min:
        status: Status = "insufficient"
    elif is_drift(p_value=chi.p_value, n_features=n_features, psi=p.value, js=js, policy=policy):
        status = "drift"
    else:
        status = "ok"
    counters = {"n_other": state.n_other, "n_null": state.n_null,
                "n_wrongtype": state.n_wrongtype}
    total = n + state.n_null + state.n_wrongtype
    missing_rate = _missing(feature.missing, feature.n_total, state.n_null, total)
    status = _with_missing(status, missing_rate, n_features, policy)
    return FeatureReport(
        name=feature.name, kind="categorical", status=status,
        alert=_finish(status, history, policy), n=n, n_min=n_min,
        counts=tuple(int(c) for c in counts), counters=counters, p_value=chi.p_value, psi=p,
        js=js, chi_square=chi, ks=None, wasserstein=None,
        degenerate_reference=feature.source == "constant",
        missing=missing_rate,
        unseen_share_ref=feature.counts[-2] / feature.n if feature.n else math.nan,
        unseen_share=state.n_other / n if n else math.nan,
        mean=None, std=None, min=None, max=None,
    )
