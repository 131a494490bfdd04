"""Per model-version statistics in the shape of the statistics extension (protocol.md 4.2)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

_STAGES = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output", "cache_hit", "cache_miss")


@dataclass(slots=True)
class Duration:
    """A cumulative count and total nanoseconds."""

    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns

    def as_dict(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass(slots=True)
class BatchStats:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass
class ModelStats:
    """Counters of one model version; updated on the event loop thread only."""

    inference_count: int = 0
    execution_count: int = 0
    last_inference_ms: int = 0
    stages: dict[str, Duration] = field(default_factory=lambda: {s: Duration() for s in _STAGES})
    batches: dict[int, BatchStats] = field(default_factory=dict)

    def __post_init__(self) -> None:
        stages = self.stages
        self._success, self._queue = stages["success"], stages["queue"]
        self._input, self._infer, self._output = stages["compute_input"], stages["compute_infer"], stages["compute_output"]

    def record_success(
        self, batch_size: int, request_ns: int, queue_ns: int, input_ns: int, infer_ns: int, output_ns: int
    ) -> None:
        """One unbatched request of *batch_size* rows that ran as one execution of its own."""
        self.record_request(batch_size, request_ns, queue_ns, input_ns, infer_ns, output_ns)
        self.record_batch(batch_size, input_ns, infer_ns, output_ns)

    def record_request(self, rows: int, request_ns: int, queue_ns: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        """One request of *rows* rows answered from a batch (its execution is counted by :meth:`record_batch`).

        As in Triton, each request is charged the compute times of the batch it ran in.
        """
        self.inference_count += rows
        self.last_inference_ms = time.time_ns() // 1_000_000
        # unrolled: once per request on the batching hot path (a loop over pairs took 1.6 µs, this 0.6)
        success, queue, compute_input, infer, output = self._success, self._queue, self._input, self._infer, self._output
        success.count += 1
        success.ns += request_ns
        queue.count += 1
        queue.ns += queue_ns
        compute_input.count += 1
        compute_input.ns += input_ns
        infer.count += 1
        infer.ns += infer_ns
        output.count += 1
        output.ns += output_ns

    def record_batch(self, batch_size: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        """One execution of a batch of *batch_size* rows."""
        self.execution_count += 1
        batch = self.batches.get(batch_size)
        if batch is None:
            batch = self.batches[batch_size] = BatchStats()
        batch.compute_input.add(input_ns)
        batch.compute_infer.add(infer_ns)
        batch.compute_output.add(output_ns)

    def record_failure(self, request_ns: int) -> None:
        self.stages["fail"].add(request_ns)
        self.last_inference_ms = time.time_ns() // 1_000_000

    def as_dict(self, name: str, version: str) -> dict[str, Any]:
        return {
            "name": name,
            "version": version,
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {stage: d.as_dict() for stage, d in self.stages.items()},
            "response_stats": {},
            "batch_stats": [
                {
                    "batch_size": size,
                    "compute_input": b.compute_input.as_dict(),
                    "compute_infer": b.compute_infer.as_dict(),
                    "compute_output": b.compute_output.as_dict(),
                }
                for size, b in sorted(self.batches.items())
            ],
            "memory_usage": [],
        }
