"""Reference profiles: building, canonical JSON, hashing, validation on load."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from servecore.drift.errors import ProfileError
from servecore.drift.profile import (
    CategoricalFeature,
    NumericFeature,
    ReferenceProfile,
    build_profile,
)
from servecore.errors import ConfigError

from .conftest import reference_columns


def test_build_kinds_and_counts(profile: ReferenceProfile) -> None:
    assert profile.names == ("colour", "level", "x", "y")
    x = profile.feature("x")
    assert isinstance(x, NumericFeature) and x.kind == "numeric"
    assert x.bins == 64 and len(x.counts) == 66 and x.n == x.n_total == 20_000
    assert x.counts[0] == x.counts[-1] == 0  # min and max are the outer edges
    assert max(x.counts) - min(x.counts[1:-1]) <= 2  # quantile bins: ~n/B each
    assert x.edges[0] == x.min and x.edges[-1] == x.max
    assert x.proportions.sum() == pytest.approx(1.0)
    colour = profile.feature("colour")
    assert isinstance(colour, CategoricalFeature) and colour.source == "categorical"
    assert colour.vocabulary == ("red", "green", "blue")  # by count
    assert colour.counts[-2:] == (0, 0) and sum(colour.counts) == 20_000
    level = profile.feature("level")
    assert isinstance(level, CategoricalFeature) and level.source == "discrete"
    assert sorted(level.vocabulary) == ["0", "1", "2", "3", "4"]


def test_ties_collapse_edges() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate([np.zeros(9000), rng.normal(size=1000)])  # 90% zeros
    feature = build_profile({"v": values}).feature("v")
    assert isinstance(feature, NumericFeature)
    assert feature.bins < 64 and list(feature.edges) == sorted(set(feature.edges))
    assert np.all(np.diff(feature.edges) > 0)
    assert max(feature.counts) >= 9000  # the zeros share one bin
    assert sum(feature.counts) == 10_000


def test_numeric_statistics_and_rates() -> None:
    values = np.concatenate([np.arange(100, dtype=float), [np.nan] * 5, [np.inf, -np.inf]])
    column = np.empty(values.size + 3, dtype=object)
    column[: values.size] = values
    column[values.size :] = [None, "text", True]
    f = build_profile({"v": column}, bins=10).feature("v")
    assert isinstance(f, NumericFeature)
    assert (f.n, f.n_nan, f.n_pinf, f.n_ninf, f.n_null, f.n_wrongtype) == (100, 5, 1, 1, 1, 2)
    assert f.n_total == 110 and f.missing == 6 and f.rate(f.n_nan) == pytest.approx(5 / 110)
    assert (f.min, f.max, f.mean) == (0.0, 99.0, 49.5)
    assert f.std == pytest.approx(np.arange(100).std(ddof=1))
    assert f.edges == tuple(float(i * 99 // 10) for i in range(11))  # ranks i*(n-1)//B


def test_top_k_ties_by_key_and_other() -> None:
    column = np.array(["b", "a", "c", "c", "d", "e", None, ""], dtype=object)
    f = build_profile({"k": column}, top_k=2).feature("k")
    assert isinstance(f, CategoricalFeature)
    assert f.vocabulary == ("c", "a")  # c (2), then a/b/d/e (1) by key
    assert f.counts == (2, 1, 3, 2)  # c, a, __other__ (b, d, e), null (None, "")


def test_unicode_and_long_strings_are_normalised() -> None:
    column = np.array(["e\u0301", "\u00e9", "x" * 500, "x" * 128 + "y"], dtype=object)
    f = build_profile({"s": column}).feature("s")
    assert isinstance(f, CategoricalFeature)
    assert f.vocabulary == ("x" * 128, "\u00e9") and f.counts[:2] == (2, 2)


def test_json_is_canonical_and_finite() -> None:
    big = np.concatenate([np.full(50, 1e308), np.linspace(-1, 1, 50)])
    profile = build_profile({"b": big, "a": np.array(["z", "y"])})
    text = profile.to_json().decode("ascii")
    doc = json.loads(text)
    assert text == json.dumps(doc, sort_keys=True, separators=(",", ":"))
    assert "NaN" not in text and "Infinity" not in text
    feature = doc["features"][1]
    assert feature["name"] == "b" and feature["mean"] is None  # overflowed: null, not inf
    back = ReferenceProfile.from_json(text)
    assert math.isnan(back.feature("b").mean)  # type: ignore[union-attr]
    assert back.to_json() == profile.to_json()


def test_save_load_round_trip(tmp_path: Path, profile: ReferenceProfile) -> None:
    path = tmp_path / "profile.json"
    profile.save(path)
    back = ReferenceProfile.load(path, sha256=profile.sha256)
    assert back == profile and back.sha256 == profile.sha256
    with pytest.raises(ProfileError, match="hashes to"):
        ReferenceProfile.load(path, sha256="0" * 64)
    with pytest.raises(ProfileError, match="cannot read"):
        ReferenceProfile.load(tmp_path / "missing.json")


_HASH_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from drift.conftest import reference_columns
from servecore.drift.profile import build_profile
columns = reference_columns()
print(build_profile(dict(reversed(list(columns.items())))).sha256)
"""


def test_sha256_stable_across_runs(profile: ReferenceProfile) -> None:
    """A fresh interpreter (another str hash seed, another column order) gets the same hash."""
    tests = str(Path(__file__).parents[1])
    script = _HASH_SCRIPT.format(tests=tests)
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", script],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        assert out.stdout.strip() == profile.sha256
    assert build_profile(reference_columns()).sha256 == profile.sha256


def _doc(profile: ReferenceProfile) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(profile.to_json())
    return doc


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(format_version=2), "format version 2"),
        (lambda d: d.update(format="other"), "not a reference profile"),
        (lambda d: d.pop("bins"), "missing \\['bins'\\]"),
        (lambda d: d.update(extra=1), "unexpected \\['extra'\\]"),
        (lambda d: d["features"][2]["edges"].reverse(), "strictly increasing"),
        (lambda d: d["features"][2]["edges"].__setitem__(0, None), "strictly increasing"),
        (lambda d: d["features"][2]["counts"].pop(), "counts must be 66"),
        (lambda d: d["features"][2].update(n_nan=True), "n_nan must be a non-negative integer"),
        (lambda d: d["features"][2].update(n_total=5), "n_total is not the sum"),
        (lambda d: d["features"][2].update(mean="1"), "mean must be a number"),
        (lambda d: d["features"][0]["vocabulary"].__setitem__(0, "e\u0301"), "not a normalised"),
        (lambda d: d["features"][0]["vocabulary"].__setitem__(0, "green"), "distinct"),
        (lambda d: d["features"][0].update(kind="ordinal"), "unknown kind"),
        (lambda d: d["features"][0].update(source="made-up"), "unknown source"),
        (lambda d: d["features"].reverse(), "sorted"),
        (lambda d: d["features"].append(d["features"][0]), "distinct"),
    ],
)
def test_load_rejects(profile: ReferenceProfile, edit: object, message: str) -> None:
    doc = _doc(profile)
    edit(doc)  # type: ignore[operator]
    with pytest.raises(ProfileError, match=message):
        ReferenceProfile.from_json(json.dumps(doc))


def test_load_rejects_non_json_and_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not valid JSON"):
        ReferenceProfile.from_json(b"{not json")
    with pytest.raises(ProfileError, match="NaN"):
        ReferenceProfile.from_json('{"format": NaN}')


@pytest.mark.parametrize(
    ("columns", "kwargs", "message"),
    [
        ({"a": np.zeros((3, 3))}, {}, "1-D"),
        ({"a": np.zeros(3, dtype=complex)}, {}, "cannot profile"),
        ({"": np.zeros(3)}, {}, "non-empty"),
        ({"a": np.zeros(3)}, {"bins": 0}, "bins"),
        ({"a": np.zeros(3)}, {"top_k": 257}, "top_k"),
    ],
)
def test_build_rejects(columns: dict, kwargs: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ProfileError, match=message):
        build_profile(columns, **kwargs)


def test_load_rejects_duplicate_keys() -> None:
    with pytest.raises(ProfileError, match="duplicate keys"):
        ReferenceProfile.from_json('{"format": 1, "format": 2}')
