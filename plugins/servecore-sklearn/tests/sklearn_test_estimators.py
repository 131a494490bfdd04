"""Estimator classes the tests pickle. The server processes import this module to unpickle them
(the tests put this directory on their PYTHONPATH)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression


class PredictProbaOnly(LogisticRegression):
    """A classifier whose predict() fails: shows that only the requested outputs are computed."""

    def predict(self, X: Any) -> np.ndarray:
        raise RuntimeError("predict was called")


class ProbaPropertyFails(LogisticRegression):
    """Looking predict_proba up raises something else than AttributeError (hasattr() would raise)."""

    @property
    def predict_proba(self) -> Any:  # type: ignore[override]
        raise RuntimeError("no probabilities here")


class MakesDirectory:
    """Unpickling it creates the directory *marker* and yields None: tells whether a pickle was loaded."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.mkdir, (self.marker,))
