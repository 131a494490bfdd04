"""``servecore profile build``: run a model over reference data and profile its inputs and outputs.

Reference data formats:

* ``.npz``: one array per model input, by input name (rows along the first axis);
* ``.npy``: one array, for a model with one input;
* ``.csv``: a header row of column names; for a model with one 2-D input, every column is one
  feature of that input in order; otherwise the columns are matched to inputs by name;
* ``.parquet``: as CSV (needs pandas with pyarrow installed).

The model runs in chunks of rows; inputs and outputs become feature columns named as the server
names them at serving time (:func:`servecore.drift.monitor.tensor_columns`).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from servecore.config import ServeConfig
from servecore.datatypes import NUMPY_DTYPES
from servecore.drift.monitor import tensor_columns
from servecore.drift.profile import ReferenceProfile, build_profile
from servecore.errors import InvalidInputError
from servecore.models import BackendRegistry
from servecore.plugins import get_plugin_manager
from servecore.types import Backend, ModelSource, TensorSpec

CHUNK_ROWS = 1024


def read_reference(path: Path, inputs: list[TensorSpec]) -> dict[str, np.ndarray]:
    """The reference data at *path* as arrays by model input name (see the module docstring)."""
    suffix = path.suffix.lower()
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    elif suffix == ".npy":
        if len(inputs) != 1:
            raise InvalidInputError(f"{path.name}: a .npy file holds one array; the model has {len(inputs)} inputs (use .npz)")
        arrays = {inputs[0].name: np.load(path, allow_pickle=False)}
    elif suffix in (".csv", ".parquet"):
        arrays = _table(path, inputs)
    else:
        raise InvalidInputError(f"{path.name}: reference data must be .npy, .npz, .csv or .parquet")
    missing = [spec.name for spec in inputs if spec.name not in arrays]
    if missing:
        raise InvalidInputError(f"{path.name} has no data for input(s) {', '.join(missing)}; it has {', '.join(arrays)}")
    rows = {len(arrays[spec.name]) for spec in inputs}
    if len(rows) != 1:
        raise InvalidInputError(f"{path.name}: the inputs have different numbers of rows ({sorted(rows)})")
    return {spec.name: _as_input(arrays[spec.name], spec) for spec in inputs}


def _table(path: Path, inputs: list[TensorSpec]) -> dict[str, np.ndarray]:
    if path.suffix.lower() == ".parquet":
        try:
            import pandas as pd  # type: ignore[import-untyped]
        except ImportError:
            raise InvalidInputError("reading .parquet needs pandas and pyarrow (pip install pandas pyarrow)") from None
        frame = pd.read_parquet(path)
        names = [str(c) for c in frame.columns]
        columns = [frame[c].to_numpy() for c in frame.columns]
    else:
        with path.open(newline="", encoding="utf-8") as f:
            table = list(csv.reader(f))
        if len(table) < 2:
            raise InvalidInputError(f"{path.name}: needs a header row and at least one data row")
        names = table[0]
        columns = [np.array([row[j] for row in table[1:]], dtype=object) for j in range(len(names))]
    if len(inputs) == 1 and len(inputs[0].shape) == 2 and inputs[0].name not in names:
        return {inputs[0].name: np.stack([_column(c, inputs[0]) for c in columns], axis=1)}
    return {name: column for name, column in zip(names, columns)}


def _column(values: np.ndarray, spec: TensorSpec) -> np.ndarray:
    if spec.datatype == "BYTES":
        return np.asarray(values, dtype=object)
    try:
        return np.asarray(values, dtype=NUMPY_DTYPES.get(spec.datatype, np.float64))
    except ValueError as exc:
        raise InvalidInputError(f"input {spec.name!r}: {exc}") from None


def _as_input(array: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """*array* in the datatype the model takes (as it is for an open input)."""
    return np.asarray(array) if spec.open else _column(np.asarray(array), spec)


def run_model(backend: Backend, data: Mapping[str, np.ndarray], chunk: int = CHUNK_ROWS) -> dict[str, np.ndarray]:
    """Every output of *backend* over *data*, run *chunk* rows at a time and concatenated."""
    rows = len(next(iter(data.values())))
    names = [spec.name for spec in backend.outputs]
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, rows, chunk):
        feeds = {name: array[start:start + chunk] for name, array in data.items()}
        result = backend.infer(feeds, names)
        for name, value in result.items():
            parts.setdefault(name, []).append(np.asarray(value))
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def profile_model(
    model: Path, data: Path, *, bins: int = 64, top_k: int = 256, config: ServeConfig | None = None
) -> tuple[ReferenceProfile, dict[str, Any]]:
    """Load *model* with the backend that claims it, run it over *data*, profile both; with a summary."""
    pm = get_plugin_manager()
    registration = BackendRegistry.from_plugins(pm).for_path(model)
    backend = registration.loader(
        ModelSource(model.name.split(".", 1)[0], "1", model), config or ServeConfig(providers="CPUExecutionProvider")
    )
    try:
        inputs = read_reference(data, list(backend.inputs))
        outputs = run_model(backend, inputs)
    finally:
        backend.close()
    columns = tensor_columns({**inputs, **outputs})
    profile = build_profile(columns, bins=bins, top_k=top_k)
    summary = {
        "rows": len(next(iter(inputs.values()))),
        "features": len(profile.features),
        "numeric": sum(1 for f in profile.features if f.kind == "numeric"),
        "categorical": sum(1 for f in profile.features if f.kind == "categorical"),
        "sha256": profile.sha256,
    }
    return profile, summary
