"""The reference profile: per-feature bins, counts and statistics fitted offline on reference data.

:func:`build_profile` fits one from columns of reference data; :meth:`ReferenceProfile.to_json`
writes canonical JSON (sorted keys, no whitespace, ASCII, non-finite statistics as ``null``) and
:attr:`ReferenceProfile.sha256` hashes those bytes, so the same data give the same hash on every
run. :meth:`ReferenceProfile.from_json` validates everything and raises
:class:`~servecore.drift.errors.ProfileError` naming the feature and field at fault.

A numeric column gets B+1 edges: the order statistics at ranks ``i*(n-1)//B`` (i = 0..B) of its
finite values, deduplicated, so ties collapse bins and the first and last edges are the reference
min and max. A numeric column with at most :data:`DISCRETE_MAX_UNIQUE` distinct finite values (a
constant one included) is profiled as categorical instead (``source`` says why), its values keyed
canonically by :func:`~servecore.drift.keys.category_key`. A categorical column keeps its top-K
keys by count (ties by key), then ``__other__`` and null counts.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np

from servecore.drift.columns import as_column, is_numeric_column, numeric_values
from servecore.drift.errors import ProfileError
from servecore.drift.histogram import CategoricalHistogramPy, NumericHistogramPy
from servecore.drift.keys import category_key, normalise_text

FORMAT = "servecore-drift-profile"
FORMAT_VERSION = 1
#: a numeric column with at most this many distinct finite values is profiled as categorical
DISCRETE_MAX_UNIQUE = 20
MAX_BINS = 256
MAX_TOP_K = 256

CategoricalSource = Literal["categorical", "constant", "discrete"]


def _fail(feature: str, message: str) -> ProfileError:
    return ProfileError(f"reference profile, feature {feature!r}: {message}")


def _check_counts(name: str, counts: tuple[int, ...], size: int) -> None:
    if len(counts) != size or any(type(c) is not int or c < 0 for c in counts):
        raise _fail(name, f"counts must be {size} non-negative ints")


@dataclass(frozen=True, slots=True)
class NumericFeature:
    """A numeric feature: edges, B+2 reference counts, missing/non-finite counts, statistics.

    The statistics (of the finite values; ``std`` with ddof=1) are NaN when undefined or not
    finite.
    """

    name: str
    edges: tuple[float, ...]
    counts: tuple[int, ...]
    n_total: int
    n_null: int
    n_nan: int
    n_pinf: int
    n_ninf: int
    n_wrongtype: int
    min: float
    max: float
    mean: float
    std: float
    kind: Literal["numeric"] = field(default="numeric", init=False)

    def __post_init__(self) -> None:
        edges = np.asarray(self.edges, dtype=np.float64)
        if edges.size < 2 or not np.all(np.isfinite(edges)) or not np.all(edges[1:] > edges[:-1]):
            raise _fail(self.name, "edges must be >= 2 finite, strictly increasing floats")
        _check_counts(self.name, self.counts, edges.size + 1)
        others = (self.n_null, self.n_nan, self.n_pinf, self.n_ninf, self.n_wrongtype)
        if any(type(c) is not int or c < 0 for c in (self.n_total, *others)):
            raise _fail(self.name, "counters must be non-negative ints")
        if self.n_total != sum(self.counts) + sum(others):
            raise _fail(self.name, "n_total is not the sum of the counts and counters")

    @property
    def bins(self) -> int:
        """B, the number of bins between the edges."""
        return len(self.edges) - 1

    @property
    def n(self) -> int:
        """Finite (binned) reference values."""
        return sum(self.counts)

    @property
    def proportions(self) -> np.ndarray:
        """The B+2 reference proportions (all zero when n is 0)."""
        counts = np.asarray(self.counts, dtype=np.float64)
        return counts / counts.sum() if self.n else counts

    @property
    def missing(self) -> int:
        """Missing reference values: null and NaN."""
        return self.n_null + self.n_nan

    def rate(self, count: int) -> float:
        """*count* as a share of the rows (NaN when there are none)."""
        return count / self.n_total if self.n_total else math.nan


@dataclass(frozen=True, slots=True)
class CategoricalFeature:
    """A categorical feature: top-K vocabulary and K+2 counts (keys, ``__other__``, null)."""

    name: str
    vocabulary: tuple[str, ...]
    counts: tuple[int, ...]
    n_total: int
    n_wrongtype: int
    source: CategoricalSource = "categorical"
    kind: Literal["categorical"] = field(default="categorical", init=False)

    def __post_init__(self) -> None:
        keys = self.vocabulary
        if len(keys) > MAX_TOP_K or len(set(keys)) != len(keys):
            raise _fail(self.name, f"vocabulary must hold <= {MAX_TOP_K} distinct keys")
        for key in keys:
            if not isinstance(key, str) or not key or normalise_text(key) != key:
                raise _fail(self.name, f"vocabulary key {key!r} is not a normalised key")
        _check_counts(self.name, self.counts, len(keys) + 2)
        if type(self.n_wrongtype) is not int or self.n_wrongtype < 0:
            raise _fail(self.name, "n_wrongtype must be a non-negative int")
        if type(self.n_total) is not int or self.n_total != sum(self.counts) + self.n_wrongtype:
            raise _fail(self.name, "n_total is not the sum of the counts and n_wrongtype")
        if self.source not in ("categorical", "constant", "discrete"):
            raise _fail(self.name, f"unknown source {self.source!r}")

    @property
    def n(self) -> int:
        """Valid reference values (vocabulary and ``__other__``)."""
        return sum(self.counts[:-1])

    @property
    def missing(self) -> int:
        """Missing reference values (the null bucket)."""
        return self.counts[-1]

    def rate(self, count: int) -> float:
        """*count* as a share of the rows (NaN when there are none)."""
        return count / self.n_total if self.n_total else math.nan


Feature = NumericFeature | CategoricalFeature


@dataclass(frozen=True)
class ReferenceProfile:
    """Every monitored feature's reference, sorted by name, with the settings that built it."""

    features: tuple[Feature, ...]
    bins: int = 64
    top_k: int = 256
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        names = [f.name for f in self.features]
        if any(not isinstance(n, str) or not n for n in names) or names != sorted(set(names)):
            raise ProfileError("reference profile: feature names must be distinct, sorted strs")
        if self.format_version != FORMAT_VERSION:
            raise ProfileError(
                f"reference profile has format version {self.format_version!r}; "
                f"this build reads {FORMAT_VERSION}"
            )

    def feature(self, name: str) -> Feature:
        """The feature called *name* (KeyError if there is none)."""
        return self._by_name[name]

    @cached_property
    def _by_name(self) -> dict[str, Feature]:
        return {f.name: f for f in self.features}

    @property
    def names(self) -> tuple[str, ...]:
        """The feature names, sorted."""
        return tuple(f.name for f in self.features)

    def to_json(self) -> bytes:
        """The canonical JSON bytes (what :attr:`sha256` hashes)."""
        doc = {
            "format": FORMAT,
            "format_version": self.format_version,
            "bins": self.bins,
            "top_k": self.top_k,
            "features": [_feature_doc(f) for f in self.features],
        }
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                          allow_nan=False)
        return text.encode("ascii")

    @cached_property
    def sha256(self) -> str:
        """Hex SHA-256 of :meth:`to_json`: the profile's identity in reports and snapshots."""
        return hashlib.sha256(self.to_json()).hexdigest()

    @classmethod
    def from_json(cls, data: bytes | str, *, sha256: str | None = None) -> ReferenceProfile:
        """The profile in *data*, validated; with *sha256*, it must also hash to that."""
        try:
            doc = json.loads(data, parse_constant=_no_constant, object_pairs_hook=_no_duplicates)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ProfileError(f"reference profile is not valid JSON: {exc}") from None
        profile = _from_doc(doc)
        if sha256 is not None and profile.sha256 != sha256.lower():
            raise ProfileError(
                f"reference profile hashes to {profile.sha256}, expected {sha256.lower()}"
            )
        return profile

    def save(self, path: str | Path) -> None:
        """Write the canonical JSON to *path*."""
        Path(path).write_bytes(self.to_json())

    @classmethod
    def load(cls, path: str | Path, *, sha256: str | None = None) -> ReferenceProfile:
        """Read and validate the profile at *path* (see :meth:`from_json`)."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise ProfileError(f"cannot read reference profile {str(path)!r}: {exc}") from None
        return cls.from_json(data, sha256=sha256)


# --------------------------------------------------------------------------------------------
# JSON documents


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc = dict(pairs)
    if len(doc) != len(pairs):
        raise ValueError("duplicate keys")
    return doc


def _float_out(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _feature_doc(feature: Feature) -> dict[str, Any]:
    if isinstance(feature, NumericFeature):
        return {
            "name": feature.name, "kind": "numeric", "edges": list(feature.edges),
            "counts": list(feature.counts), "n_total": feature.n_total,
            "n_null": feature.n_null, "n_nan": feature.n_nan, "n_pinf": feature.n_pinf,
            "n_ninf": feature.n_ninf, "n_wrongtype": feature.n_wrongtype,
            "min": _float_out(feature.min), "max": _float_out(feature.max),
            "mean": _float_out(feature.mean), "std": _float_out(feature.std),
        }
    return {
        "name": feature.name, "kind": "categorical", "source": feature.source,
        "vocabulary": list(feature.vocabulary), "counts": list(feature.counts),
        "n_total": feature.n_total, "n_wrongtype": feature.n_wrongtype,
    }


_NUMERIC_KEYS = {"name", "kind", "edges", "counts", "n_total", "n_null", "n_nan", "n_pinf",
                 "n_ninf", "n_wrongtype", "min", "max", "mean", "std"}
_CATEGORICAL_KEYS = {"name", "kind", "source", "vocabulary", "counts", "n_total", "n_wrongtype"}
_TOP_KEYS = {"format", "format_version", "bins", "top_k", "features"}


def _keys(doc: object, expected: set[str], where: str) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise ProfileError(f"reference profile: {where} must be a JSON object")
    if set(doc) != expected:
        missing, extra = sorted(expected - set(doc)), sorted(set(doc) - expected)
        raise ProfileError(f"reference profile: {where} missing {missing}, unexpected {extra}")
    return doc


def _int(value: object, name: str, key: str) -> int:
    if type(value) is not int or value < 0:
        raise _fail(name, f"{key} must be a non-negative integer, got {value!r}")
    return value


def _float_in(value: object, name: str, key: str) -> float:
    if value is None:
        return math.nan
    if type(value) not in (int, float):
        raise _fail(name, f"{key} must be a number or null, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def _list(value: object, name: str, key: str) -> list[Any]:
    if not isinstance(value, list):
        raise _fail(name, f"{key} must be a list")
    return value


def _from_doc(doc: object) -> ReferenceProfile:
    top = _keys(doc, _TOP_KEYS, "the document")
    if top["format"] != FORMAT:
        raise ProfileError(f"not a reference profile: format {top['format']!r}")
    if top["format_version"] != FORMAT_VERSION:
        raise ProfileError(
            f"reference profile has format version {top['format_version']!r}; "
            f"this build reads {FORMAT_VERSION}"
        )
    bins, top_k = top["bins"], top["top_k"]
    if type(bins) is not int or not 1 <= bins <= MAX_BINS:
        raise ProfileError(f"reference profile: bins must be an int in 1..{MAX_BINS}")
    if type(top_k) is not int or not 1 <= top_k <= MAX_TOP_K:
        raise ProfileError(f"reference profile: top_k must be an int in 1..{MAX_TOP_K}")
    features: list[Feature] = []
    for item in _list(top["features"], "-", "features"):
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str):
            raise ProfileError("reference profile: every feature needs a string name")
        kind = item.get("kind")
        if kind == "numeric":
            f = _keys(item, _NUMERIC_KEYS, f"feature {name!r}")
            edges = [_float_in(e, name, "edges") for e in _list(f["edges"], name, "edges")]
            features.append(NumericFeature(
                name, tuple(edges), tuple(_list(f["counts"], name, "counts")),
                *(_int(f[k], name, k) for k in
                  ("n_total", "n_null", "n_nan", "n_pinf", "n_ninf", "n_wrongtype")),
                *(_float_in(f[k], name, k) for k in ("min", "max", "mean", "std")),
            ))
        elif kind == "categorical":
            f = _keys(item, _CATEGORICAL_KEYS, f"feature {name!r}")
            features.append(CategoricalFeature(
                name, tuple(_list(f["vocabulary"], name, "vocabulary")),
                tuple(_list(f["counts"], name, "counts")),
                _int(f["n_total"], name, "n_total"), _int(f["n_wrongtype"], name, "n_wrongtype"),
                f["source"],
            ))
        else:
            raise _fail(name, f"unknown kind {kind!r}")
    return ReferenceProfile(tuple(features), bins, top_k)


# --------------------------------------------------------------------------------------------
# Building


def build_profile(
    columns: Mapping[str, np.ndarray], *, bins: int = 64, top_k: int = 256
) -> ReferenceProfile:
    """Fit a reference profile on *columns* (name -> 1-D array of reference values).

    :param bins: B, the number of quantile bins of a numeric feature before ties collapse them.
    :param top_k: K, the most frequent keys a categorical feature keeps.
    """
    if type(bins) is not int or not 1 <= bins <= MAX_BINS:
        raise ProfileError(f"bins must be an int in 1..{MAX_BINS}, got {bins!r}")
    if type(top_k) is not int or not 1 <= top_k <= MAX_TOP_K:
        raise ProfileError(f"top_k must be an int in 1..{MAX_TOP_K}, got {top_k!r}")
    features: list[Feature] = []
    for name in sorted(columns):
        if not isinstance(name, str) or not name:
            raise ProfileError(f"feature names must be non-empty strings, got {name!r}")
        column = as_column(columns[name])
        if column is None:
            raise _fail(name, "reference values must be a 1-D array")
        if column.dtype.kind in "cmMV":
            raise _fail(name, f"cannot profile a column of dtype {column.dtype}")
        features.append(_build_feature(name, column, bins, top_k))
    return ReferenceProfile(tuple(features), bins, top_k)


def _build_feature(name: str, column: np.ndarray, bins: int, top_k: int) -> Feature:
    if not is_numeric_column(column):
        return _categorical(name, column, top_k, "categorical")
    values, n_null, n_wrong = numeric_values(column)
    finite = np.sort(values[np.isfinite(values)])
    unique = np.unique(finite).size
    if unique <= DISCRETE_MAX_UNIQUE:
        return _categorical(name, column, top_k, "constant" if unique <= 1 else "discrete")
    n = finite.size
    ranks = [(i * (n - 1)) // bins for i in range(bins + 1)]
    edges = np.unique(finite[ranks]) + 0.0
    hist = NumericHistogramPy(edges)
    hist.update(values)
    with np.errstate(over="ignore", invalid="ignore"):
        mean = float(np.mean(finite))
        std = float(np.std(finite, ddof=1))
    return NumericFeature(
        name, tuple(float(e) for e in edges), tuple(int(c) for c in hist.counts),
        int(column.size), n_null, hist.n_nan, hist.n_pinf, hist.n_ninf, n_wrong,
        float(finite[0]) + 0.0, float(finite[-1]) + 0.0, mean, std,
    )


def _categorical(name: str, column: np.ndarray, top_k: int, source: CategoricalSource) -> Feature:
    keys = Counter(k for k in map(category_key, column.tolist()) if isinstance(k, str))
    vocabulary = tuple(sorted(keys, key=lambda key: (-keys[key], key))[:top_k])
    hist = CategoricalHistogramPy(vocabulary)
    hist.update(column)
    return CategoricalFeature(
        name, vocabulary, tuple(int(c) for c in hist.counts), int(column.size),
        hist.n_wrongtype, source,
    )
