"""Warmup: run a freshly loaded model before it takes requests.

The first runs of a model allocate memory, pick kernels and (with TensorRT) build engines; a model
reports ready only after they are done. Inputs are generated from the signature, one run per batch
size the scheduler can form (1, each preferred size, the largest), and the model's sample request
files (``[warmup] samples`` in model.toml, V2 JSON bodies) run after them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from servecore.codec import Codec
from servecore.datatypes import NUMPY_DTYPES
from servecore.errors import ModelLoadError, ServecoreError
from servecore.types import InferInput, TensorSpec

#: (label, feeds) of one warmup run
WarmupRun = tuple[str, dict[str, np.ndarray]]


def batch_sizes(max_batch_size: int, preferred: Sequence[int]) -> list[int]:
    """The batch sizes a scheduler with these settings forms at the edges: 1, preferred, largest."""
    if max_batch_size <= 0:
        return [1]
    return sorted({1, max_batch_size, *(p for p in preferred if p <= max_batch_size)})


def generated_feeds(specs: Sequence[TensorSpec], rows: int, batched: bool) -> dict[str, np.ndarray] | None:
    """Zero-filled inputs for *specs* (variable dimensions 1; the first *rows* when batched).

    None when an input is open (datatype and shape unknown): nothing can be generated for it.
    """
    feeds: dict[str, np.ndarray] = {}
    for spec in specs:
        if spec.open:
            return None
        shape = [1 if d < 0 else d for d in spec.shape]
        if batched and shape:
            shape[0] = rows
        dtype = NUMPY_DTYPES[spec.datatype]
        if spec.datatype == "BYTES":
            array = np.full(shape, b"", dtype=object)
        else:
            array = np.zeros(shape, dtype=dtype)
        feeds[spec.name] = array
    return feeds


def sample_inputs(path: Path, codec: Codec, model_name: str) -> list[InferInput]:
    """The inputs of a V2 JSON request body stored at *path*."""
    from servecore.http.v2 import parse_request  # the wire format, not the web server

    try:
        body = path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"model {model_name!r}: cannot read warmup sample {path}: {exc.strerror}") from exc
    try:
        return parse_request(body, None, model_name=model_name, model_version=None, codec=codec).inputs
    except ServecoreError as exc:
        raise ModelLoadError(f"model {model_name!r}: warmup sample {path}: {exc.message}") from exc


@dataclass(frozen=True)
class WarmupReport:
    runs: int
    seconds: float


def run_warmup(
    runs: Sequence[WarmupRun],
    infer: Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]],
    model_name: str,
) -> WarmupReport:
    """Run each warmup input through *infer*; a failure is a ModelLoadError naming the run."""
    start = time.perf_counter()
    for label, feeds in runs:
        try:
            infer(feeds)
        except Exception as exc:
            raise ModelLoadError(f"model {model_name!r}: warmup failed on {label}: {exc}") from exc
    return WarmupReport(len(runs), time.perf_counter() - start)
