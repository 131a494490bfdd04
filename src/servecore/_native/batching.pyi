"""Type stubs for the compiled twin of :mod:`servecore.batching.policy` (``batching.pyx``).

The C types the implementation works with are noted in comments.
"""

from collections.abc import Sequence

from servecore.batching.policy import Batch, BatchSettings, Refusal

class BatchPolicy:
    """The queue of one model version and the batch decisions over it.

    The compiled twin of :class:`servecore.batching.policy.BatchPolicyPy`.
    """

    # copied into int64_t fields (preferred sizes: an int64_t array) at construction
    settings: BatchSettings  # readonly
    queued_rows: int  # readonly; int64_t
    def __init__(self, settings: BatchSettings) -> None: ...
    def __len__(self) -> int: ...  # len() of the id -> entry dict
    def predicted_wait_ns(
        self,
        predicted_ns: Sequence[int],  # list items / int64 ndarray buffer read directly, else [i]
        rows: int = 0,  # int64_t
    ) -> int:  # int64_t
        """Predicted time until a newly queued request of *rows* rows would finish running."""
    def admit(
        self,
        rows: int,  # int64_t
        deadline_ns: int,  # any int: saturated to int64_t
        now_ns: int,  # int64_t
        predicted_ns: Sequence[int],
    ) -> Refusal | None:
        """None to accept a request of *rows* rows, or why not."""
    def add(
        self,
        request_id: int,  # any hashable: kept as an object (dict key, Batch.ids)
        rows: int,  # saturated to int64_t, then checked against 1..max_batch_size
        shape_key: int,  # int64_t
        arrival_ns: int,  # int64_t
        deadline_ns: int,  # any int: saturated to int64_t
        priority: int,  # any int: saturated, then mapped to an int64_t level
    ) -> None:
        """Queue a request (admission is the caller's business: see :meth:`admit`)."""
    def remove(self, request_id: int) -> bool:
        """Take a request out of the queue (cancelled or disconnected); False if not queued."""
    def pop_expired(self, now_ns: int) -> list[int]:  # now_ns: int64_t
        """Remove and return the ids whose deadline has passed, in queue order."""
    def next_batch(
        self,
        now_ns: int,  # int64_t
        predicted_ns: Sequence[int],  # read only when a deadline may close the batch
    ) -> Batch | None:
        """The batch to run now on a free instance, or None to wait (see :meth:`wake_at`)."""
    def wake_at(self, now_ns: int, predicted_ns: Sequence[int]) -> int | None:  # int64_t
        """When :meth:`next_batch` may first answer differently (None: never)."""
