"""Drift statistics core: reference profiles, per-window histograms, statistics, windows.

:func:`load_drift` picks the per-window state implementation once, like
:func:`servecore.batching.load_batching`: the compiled :mod:`servecore._native.drift` unless
*pure_python* is set (``SERVECORE_PURE_PYTHON=1``) or it was not built, else the twin in
:mod:`servecore.drift.histogram`. Everything else here is shared Python:

* :mod:`~servecore.drift.profile`: :class:`ReferenceProfile`, :func:`build_profile`;
* :mod:`~servecore.drift.stats`: PSI, JS, KS, χ², Wasserstein, z-test, Wilson, the alert rule;
* :mod:`~servecore.drift.windows`: tumbling windows, their reports and cross-worker merging.

Importing this package loads neither implementation; :func:`load_drift` does.
"""

from __future__ import annotations

from dataclasses import dataclass

from servecore.codec import Implementation, native_modules
from servecore.drift.types import CategoricalFactory, NumericFactory


@dataclass(frozen=True, slots=True)
class DriftCore:
    """One implementation of the per-window state."""

    implementation: Implementation
    #: ``NumericHistogram(edges)`` (see :class:`servecore.drift.histogram.NumericHistogramPy`)
    NumericHistogram: NumericFactory
    #: ``CategoricalHistogram(vocabulary)`` (see
    #: :class:`servecore.drift.histogram.CategoricalHistogramPy`)
    CategoricalHistogram: CategoricalFactory


def load_drift(*, pure_python: bool | None = None) -> DriftCore:
    """The compiled drift state, or its pure-Python twin when asked for or not built.

    :param pure_python: force the twin (True) or prefer the compiled core (False); None reads
        ``SERVECORE_PURE_PYTHON`` from the environment.
    """
    found = native_modules("drift", pure_python=pure_python)
    if found is not None:
        (native,) = found
        return DriftCore("native", native.NumericHistogram, native.CategoricalHistogram)
    from servecore.drift import histogram

    return DriftCore(
        "python", histogram.NumericHistogramPy, histogram.CategoricalHistogramPy
    )
