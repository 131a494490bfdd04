"""The ``core`` fixture (each implementation of the drift state: ``py``, ``c`` if built)."""

from __future__ import annotations

import numpy as np
import pytest

from servecore.drift import DriftCore, load_drift
from servecore.drift.profile import ReferenceProfile, build_profile

try:
    from servecore._native import drift as native_drift
except ImportError:  # not built: the "c" cases are skipped
    native_drift = None  # type: ignore[assignment]

needs_native = pytest.mark.skipif(
    native_drift is None, reason="servecore._native.drift is not built"
)

PY = load_drift(pure_python=True)
NATIVE = load_drift(pure_python=False) if native_drift is not None else None


@pytest.fixture(
    params=[pytest.param("python", id="py"), pytest.param("native", id="c", marks=needs_native)]
)
def core(request: pytest.FixtureRequest) -> DriftCore:
    """Each implementation of the per-window state in turn."""
    return load_drift(pure_python=request.param == "python")


def reference_columns(n: int = 20_000, seed: int = 0) -> dict[str, np.ndarray]:
    """A small mixed reference: a normal, a lognormal, a 3-way categorical, a 5-valued int."""
    rng = np.random.default_rng(seed)
    return {
        "x": rng.normal(size=n),
        "y": rng.lognormal(size=n),
        "colour": rng.choice(np.array(["red", "green", "blue"]), size=n, p=[0.5, 0.3, 0.2]),
        "level": rng.integers(0, 5, size=n),
    }


@pytest.fixture(scope="session")
def profile() -> ReferenceProfile:
    """The profile of :func:`reference_columns` (64 bins)."""
    return build_profile(reference_columns())
