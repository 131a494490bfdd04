"""In-process test backends."""

from __future__ import annotations

import threading
from typing import Any

from servecore.types import TensorSpec


class GatedBackend:
    """Echoes its input once :attr:`release` is set; :attr:`started` is set when a call begins."""

    name = "gated"
    platform = "test"
    max_batch_size = 0
    inputs = [TensorSpec("x", "FP32", (-1,))]
    outputs = [TensorSpec("x", "FP32", (-1,))]
    properties: dict[str, str] = {}

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Event()
        self.closed = False

    def infer(self, inputs: Any, outputs: Any) -> dict[str, Any]:
        self.started.set()
        assert self.release.wait(30)
        return dict(inputs)

    def close(self) -> None:
        self.closed = True
