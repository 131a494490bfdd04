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


# -- dynamic batching ---------------------------------------------------------------------------


def rowwise(x: Any) -> Any:
    """What :class:`RowwiseBackend` answers for *x*: each output row depends on its input row only."""
    import numpy as np

    x = np.asarray(x, dtype=np.float32)
    return x * 2 + x.sum(axis=1, keepdims=True, dtype=np.float32)


class RowwiseBackend:
    """FP32 ``x[batch, n]`` -> ``y`` (see :func:`rowwise`) and ``first`` (each row's first element).

    Any mix-up between the rows of a batch shows in ``y``. Every call's ``x`` is recorded (a copy)
    in :attr:`calls`, in execution order. A batch holding a row whose first element is
    :attr:`MARKER` raises (the whole batch fails). With :attr:`gate` cleared, a call waits for it;
    :meth:`wait_started` waits until that many calls have begun.
    """

    name = "rowwise"
    platform = "test"
    max_batch_size = 0
    inputs = [TensorSpec("x", "FP32", (-1, -1))]
    outputs = [TensorSpec("y", "FP32", (-1, -1)), TensorSpec("first", "FP32", (-1,))]
    properties: dict[str, str] = {}
    MARKER = -7777.0
    #: what a batch holding a marker row raises (called with a message)
    error: Any = RuntimeError

    def __init__(self) -> None:
        self.calls: list[Any] = []
        #: the name of the thread each call ran on
        self.threads: list[str] = []
        self.gate = threading.Event()
        self.gate.set()
        self._started = threading.Condition()
        self.closed = False

    def infer(self, inputs: Any, outputs: Any) -> dict[str, Any]:
        import numpy as np

        x = np.array(inputs["x"], dtype=np.float32, copy=True)
        with self._started:
            self.calls.append(x)
            self.threads.append(threading.current_thread().name)
            self._started.notify_all()
        assert self.gate.wait(60), "the test never opened the gate"
        if (x[:, 0] == self.MARKER).any():
            raise self.error(f"marker row in a batch of {len(x)} rows")
        return {"y": rowwise(x), "first": x[:, 0].copy()}

    def wait_started(self, calls: int, timeout: float = 30.0) -> bool:
        """Until at least *calls* calls have begun (False after *timeout* seconds)."""
        with self._started:
            return self._started.wait_for(lambda: len(self.calls) >= calls, timeout)

    def seen_firsts(self) -> list[float]:
        """The first element of every row the backend was given, in execution order."""
        return [float(v) for x in list(self.calls) for v in x[:, 0]]

    def close(self) -> None:
        self.closed = True
        self.gate.set()
