"""``model.toml``: what a repository says about one model, read strictly.

Every key is optional; an unknown key, a value of the wrong type or an entry missing a required
field is an error naming the file and the key, so a typo never silently changes nothing::

    backend = "onnxruntime"          # override the backend chosen by the artefact's suffix
    owner = "fraud-team"
    description = "card fraud scorer"
    labels = "labels.txt"            # relative to the model directory
    reference_profile = "profile.json"
    instances = 2
    providers = ["CPUExecutionProvider"]

    [versions]
    policy = "latest"                # latest | all | specific
    latest = 2                       # how many, with policy = "latest"
    specific = [1, 3]                # which, with policy = "specific"

    [batching]                       # the --max-batch-size ... options, for this model only
    max_batch_size = 32
    max_queue_delay_us = 500
    preferred_batch_sizes = [8, 16]
    max_queue_size = 1024
    default_timeout_us = 0
    pad_inputs = "x=0"

    [monitoring]                     # the --drift-* / --monitor-* / --feedback-* options
    window_seconds = 60
    task = "classification"          # auto | classification | regression
    prediction = "label"             # the output holding the prediction
    positive_class = "1"

    [warmup]
    enabled = true                   # default: as --warmup says
    generate = true                  # zero inputs, one run per batch size the scheduler forms
    samples = ["warmup/request.json"] # V2 JSON request bodies, relative to the model directory

    [sha256]                         # expected artefact digests, by version ("*" for any)
    "1" = "9f86d081..."

    [[inputs]]                       # a signature, for backends that cannot read one
    name = "x"
    datatype = "FP32"
    shape = [-1, 4]
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Mapping

from servecore.datatypes import NUMPY_DTYPES
from servecore.errors import ConfigError
from servecore.types import ModelSettings, TensorSpec, VersionPolicy

FILENAME = "model.toml"

_TOP_KEYS = {
    "backend", "owner", "description", "labels", "reference_profile", "instances", "providers",
    "intra_op_threads", "versions", "batching", "warmup", "sha256", "inputs", "outputs", "monitoring",
}
#: [monitoring] keys and their ServeConfig fields
_MONITORING_KEYS: dict[str, tuple[str, type | tuple[type, ...]]] = {
    "window_seconds": ("drift_window_seconds", (int, float)),
    "window_rows": ("drift_window_rows", int),
    "queue_rows": ("drift_queue_rows", int),
    "task": ("monitor_task", str),
    "prediction": ("monitor_prediction", str),
    "positive_class": ("positive_class", str),
    "feedback_ttl_seconds": ("feedback_ttl_seconds", (int, float)),
    "feedback_max_pending": ("feedback_max_pending", int),
}
#: [batching] keys and the ServeConfig field each sets
_BATCHING_KEYS = {
    "max_batch_size", "max_queue_delay_us", "preferred_batch_sizes", "max_queue_size", "default_timeout_us",
    "pad_inputs",
}
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class _Reader:
    """Typed access to one table, with errors that name the file and the key."""

    def __init__(self, table: Mapping[str, Any], where: str, allowed: set[str]) -> None:
        unknown = sorted(set(table) - allowed)
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r}; known keys: {', '.join(sorted(allowed))}")
        self.table = table
        self.where = where

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        if key not in self.table:
            return default
        value = self.table[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # bool is an int in Python; an integer setting given `true` is still a mistake
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise ConfigError(f"{self.where}: {key!r} must be {names}, not {value!r}")
        return value

    def require(self, key: str, kind: type | tuple[type, ...]) -> Any:
        if key not in self.table:
            raise ConfigError(f"{self.where}: missing required key {key!r}")
        return self.get(key, kind)

    def non_negative(self, key: str) -> int | None:
        value: int | None = self.get(key, int)
        if value is not None and value < 0:
            raise ConfigError(f"{self.where}: {key!r} must be >= 0, not {value}")
        return value

    def table_of(self, key: str, allowed: set[str] | None = None) -> _Reader:
        value = self.get(key, dict, {})
        return _Reader(value, f"{self.where} [{key}]", allowed if allowed is not None else set(value))


def load_model_toml(path: Path) -> ModelSettings:
    """Read the ``model.toml`` at *path*; raises ConfigError naming the file and key."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return parse_model_settings(data, where=str(path), base=path.parent)


def parse_model_settings(data: Mapping[str, Any], *, where: str, base: Path) -> ModelSettings:
    """:class:`ModelSettings` from the parsed TOML *data*; relative paths are taken from *base*."""
    top = _Reader(data, where, _TOP_KEYS)
    overrides: dict[str, Any] = {}
    instances = top.get("instances", int)
    if instances is not None:
        if instances < 1:
            raise ConfigError(f"{where}: 'instances' must be >= 1, not {instances}")
        overrides["instances"] = instances
    providers = top.get("providers", list)
    if providers is not None:
        if not providers or not all(isinstance(p, str) and p for p in providers):
            raise ConfigError(f"{where}: 'providers' must be a non-empty list of provider names")
        overrides["providers"] = ",".join(providers)
    threads = top.non_negative("intra_op_threads")
    if threads is not None:
        overrides["intra_op_threads"] = threads
    overrides.update(_batching(top.table_of("batching", _BATCHING_KEYS)))
    monitoring = top.table_of("monitoring", set(_MONITORING_KEYS))
    for key, (field_name, kind) in _MONITORING_KEYS.items():
        value = monitoring.get(key, kind)
        if value is not None:
            overrides[field_name] = value
    warmup = top.table_of("warmup", {"enabled", "generate", "samples"})
    samples = warmup.get("samples", list, [])
    if not all(isinstance(s, str) for s in samples):
        raise ConfigError(f"{warmup.where}: 'samples' must be a list of file names")
    labels = top.get("labels", str)
    profile = top.get("reference_profile", str)
    return ModelSettings(
        backend=top.get("backend", str),
        overrides=overrides,
        warmup=warmup.get("enabled", bool),
        warmup_generate=warmup.get("generate", bool, True),
        warmup_samples=tuple(base / s for s in samples),
        version_policy=_version_policy(top.table_of("versions", {"policy", "latest", "specific"})),
        reference_profile=base / profile if profile else None,
        owner=top.get("owner", str, ""),
        description=top.get("description", str, ""),
        labels_file=base / labels if labels else None,
        sha256=_digests(top.table_of("sha256")),
        inputs=_specs(top.get("inputs", list, []), f"{where} [[inputs]]"),
        outputs=_specs(top.get("outputs", list, []), f"{where} [[outputs]]"),
    )


def _batching(table: _Reader) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("max_batch_size", "max_queue_delay_us", "max_queue_size", "default_timeout_us"):
        value = table.non_negative(key)
        if value is not None:
            out[key] = value
    preferred = table.get("preferred_batch_sizes", list)
    if preferred is not None:
        if not all(isinstance(p, int) and not isinstance(p, bool) and p > 0 for p in preferred):
            raise ConfigError(f"{table.where}: 'preferred_batch_sizes' must be a list of positive integers")
        out["preferred_batch_sizes"] = ",".join(str(p) for p in preferred)
    pad = table.get("pad_inputs", str)
    if pad is not None:
        out["pad_inputs"] = pad
    return out


def _version_policy(table: _Reader) -> VersionPolicy:
    policy = table.get("policy", str, "latest")
    if policy == "latest":
        count = table.get("latest", int, 1)
        if count < 1:
            raise ConfigError(f"{table.where}: 'latest' must be >= 1, not {count}")
        return VersionPolicy("latest", count)
    if policy == "all":
        return VersionPolicy("all")
    if policy == "specific":
        versions = table.require("specific", list)
        if not versions or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in versions):
            raise ConfigError(f"{table.where}: 'specific' must be a non-empty list of version numbers")
        return VersionPolicy("specific", versions=tuple(str(v) for v in versions))
    raise ConfigError(f"{table.where}: 'policy' must be 'latest', 'all' or 'specific', not {policy!r}")


def _digests(table: _Reader) -> dict[str, str]:
    digests: dict[str, str] = {}
    for version in table.table:
        digest = table.get(version, str).lower()
        if not _SHA256.match(digest):
            raise ConfigError(f"{table.where}: {version!r} must be a sha256 digest (64 hex digits)")
        digests[version] = digest
    return digests


def _specs(entries: list[Any], where: str) -> tuple[TensorSpec, ...]:
    specs = []
    for number, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} #{number}: must be a table with name, datatype and shape")
        table = _Reader(entry, f"{where} #{number}", {"name", "datatype", "shape"})
        name = table.require("name", str)
        datatype = table.require("datatype", str)
        if datatype not in NUMPY_DTYPES:
            raise ConfigError(f"{table.where}: unknown datatype {datatype!r}; one of {', '.join(NUMPY_DTYPES)}")
        shape = table.require("shape", list)
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= -1 for d in shape):
            raise ConfigError(f"{table.where}: 'shape' must be a list of sizes (-1 for any size)")
        specs.append(TensorSpec(name, datatype, tuple(shape)))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: a name appears twice")
    return tuple(specs)
