"""Reference batch policy: which queued requests run together, and when. Pure decisions.

This module is the specification of the batch policy; :mod:`servecore._native.batching` is its
compiled twin with the same interface, results and errors. Nothing here knows about asyncio,
clocks or tensors: every time is an integer of nanoseconds handed in by the caller (a monotonic
clock), a request is an integer id with a row count, a shape key, a deadline and a priority, and
the run time of a batch is looked up in a table the caller keeps learning (``predicted_ns[rows]``).

Order. Requests are served by priority level (1 is the highest; 0 means the default level, which
ranks below every explicit level), then in arrival order.

A batch is formed from the head of the queue: walking in order, requests are taken while their
shape key equals the head's and the rows fit ``max_batch_size``. The walk stops, and the batch
closes, at the first of these (checked in this order for each request):

* ``shape``: the next request in order has another shape (shapes never share a batch);
* ``size``: the next request would pass ``max_batch_size``, or the rows taken reach it;
* ``preferred``: the rows taken reach the largest preferred batch size (that prefix is sent at
  once, whatever is queued behind it; a walk that jumps over that size goes on; when that size is
  ``max_batch_size`` the reason is ``size``);

and, when the walk ends without any of those (the queue ran out first),

* ``delay``: when the head has waited ``max_queue_delay_ns``;
* ``deadline``: earlier than that, when waiting until the delay would make the earliest deadline
  in the batch unreachable given the predicted run time: ``head arrival + max_queue_delay_ns +
  predicted_ns[rows] > earliest deadline``. This does not depend on the time: it changes only
  when the queue or the table does, and then holds at once.

A batch closed for ``delay`` is cut to the largest preferred size its requests add up to, if any
(as Triton does: engines built for those sizes run them best); the rest stays queued. A batch
closed for ``deadline``, ``shape`` or ``size`` is sent whole (cutting a deadline-forced batch could
leave behind the very request whose deadline forced it).

Otherwise the policy says to wait, and :meth:`BatchPolicy.wake_at` says until when: the head's
delay running out (and the current time whenever :meth:`BatchPolicy.next_batch` would return a
batch now). Deadlines need no wake-up of their own: a batch the walk leaves open holds the whole
queue, and either a deadline in it closes it at once, or it closes for delay early enough to meet
them all (by the predicted run time). A request outlives its deadline in the queue only while no
instance is free, and :meth:`BatchPolicy.pop_expired` reports it when one is. With
``max_queue_delay_ns == 0`` a batch closes as soon as an instance is free: an empty queue adds no
waiting beyond what the configuration asks for.

Admission (:meth:`BatchPolicy.admit`) refuses a request when its rows would pass
``max_queue_rows``, or when the predicted wait already passes its deadline; the refusal carries the
predicted wait. The queued rows and the new request's are packed into batches of
``max_batch_size`` in order, the new request running in the last one: the predicted wait is the
run time of the batches before it spread over the instances (``//``), plus that last batch's run.

Domain. Every argument is an ``int`` (or a numpy integer), and the table a sequence of ints or an
``int64`` numpy array (numpy does the reference's arithmetic with its items, with numpy's
overflow rules for narrower dtypes). Request ids are any hashable. Times,
shape keys and predicted run times (``>= 0``) fit a signed 64-bit integer, and so do the sums the
policy forms (arrival + delay + predicted run; now + predicted wait): any monotonic clock reading
and any real run time do. Deadlines and priorities may be any int (a client picks them): a
priority above ``DEFAULT_PRIORITY - 1`` ranks as the lowest explicit level. The compiled twin keeps
these values in C ``int64`` fields and raises ``OverflowError`` for a time, shape key or predicted
run time out of that range.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Sequence

#: Priority level of requests that name none (0): after every explicit level.
DEFAULT_PRIORITY: Final[int] = 2**31 - 1
NO_DEADLINE: Final[int] = 0

SIZE, SHAPE, PREFERRED, DELAY, DEADLINE = "size", "shape", "preferred", "delay", "deadline"
#: Every reason a batch can close for, in the order metrics list them.
CLOSE_REASONS: Final[tuple[str, ...]] = (SIZE, PREFERRED, DELAY, DEADLINE, SHAPE)
#: Every reason admission can refuse a request for.
REFUSALS: Final[tuple[str, ...]] = ("queue_full", "deadline")


class BatchSettingsError(ValueError):
    """Inconsistent batch settings."""


@dataclass(frozen=True, slots=True)
class BatchSettings:
    """How one model version batches (rows are counted along the first dimension)."""

    max_batch_size: int
    max_queue_delay_ns: int = 0
    preferred_batch_sizes: tuple[int, ...] = ()
    #: most rows waiting at once; 0 for no limit
    max_queue_rows: int = 0
    #: concurrent executions of the model
    instances: int = 1

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise BatchSettingsError(f"max_batch_size must be at least 1, not {self.max_batch_size}")
        if self.max_queue_delay_ns < 0:
            raise BatchSettingsError("max_queue_delay must not be negative")
        if self.max_queue_rows < 0:
            raise BatchSettingsError("max_queue_size must not be negative")
        if self.instances < 1:
            raise BatchSettingsError(f"instances must be at least 1, not {self.instances}")
        for size in self.preferred_batch_sizes:
            if not 1 <= size <= self.max_batch_size:
                raise BatchSettingsError(
                    f"preferred batch size {size} is outside 1..max_batch_size ({self.max_batch_size})"
                )
        if list(self.preferred_batch_sizes) != sorted(set(self.preferred_batch_sizes)):
            raise BatchSettingsError("preferred batch sizes must be ascending and distinct")


@dataclass(frozen=True, slots=True)
class Batch:
    """A closed batch: request ids in execution order, their total rows, and why it closed."""

    ids: tuple[int, ...]
    rows: int
    reason: str


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why admission refused a request, and how long the queue is predicted to take (for Retry-After)."""

    reason: str  # "queue_full" or "deadline"
    predicted_wait_ns: int


@dataclass(slots=True)
class _Entry:
    id: int
    rows: int
    shape_key: int
    arrival_ns: int
    deadline_ns: int
    level: int
    seq: int


def priority_level(priority: int) -> int:
    """The level a V2 ``priority`` parameter maps to (0, the default, ranks last).

    Explicit priorities above ``DEFAULT_PRIORITY - 1`` share the lowest explicit level, still
    ahead of the default one.
    """
    return DEFAULT_PRIORITY if priority <= 0 else min(priority, DEFAULT_PRIORITY - 1)


class BatchPolicyPy:
    """The queue of one model version and the batch decisions over it."""

    def __init__(self, settings: BatchSettings) -> None:
        self.settings = settings
        self._entries: dict[int, _Entry] = {}
        self._order: list[_Entry] = []  # kept sorted by (level, seq)
        self._seq = 0
        self.queued_rows = 0

    def __len__(self) -> int:
        return len(self._entries)

    # -- admission --------------------------------------------------------------------------------

    def predicted_wait_ns(self, predicted_ns: Sequence[int], rows: int = 0) -> int:
        """Predicted time until a newly queued request of *rows* rows would finish running.

        The batches ahead of the one it would run in are spread over the instances; its own batch
        (the last, possibly full one) runs on one instance.
        """
        s = self.settings
        full, rest = divmod(self.queued_rows + rows, s.max_batch_size)
        if rest == 0 and full > 0:  # the request's batch is the last full one
            full, rest = full - 1, s.max_batch_size
        ahead = full * predicted_ns[s.max_batch_size]
        own = predicted_ns[rest] if rest else 0
        return ahead // s.instances + own

    def admit(self, rows: int, deadline_ns: int, now_ns: int, predicted_ns: Sequence[int]) -> Refusal | None:
        """None to accept a request of *rows* rows, or why not."""
        s = self.settings
        wait = self.predicted_wait_ns(predicted_ns, rows)
        if s.max_queue_rows and self.queued_rows + rows > s.max_queue_rows:
            return Refusal("queue_full", wait)
        if deadline_ns != NO_DEADLINE and now_ns + wait > deadline_ns:
            return Refusal("deadline", wait)
        return None

    # -- the queue --------------------------------------------------------------------------------

    def add(self, request_id: int, rows: int, shape_key: int, arrival_ns: int, deadline_ns: int, priority: int) -> None:
        """Queue a request (admission is the caller's business: see :meth:`admit`)."""
        if request_id in self._entries:
            raise KeyError(f"request {request_id} is already queued")
        if not 1 <= rows <= self.settings.max_batch_size:
            raise ValueError(f"a request of {rows} rows cannot be batched (max_batch_size {self.settings.max_batch_size})")
        entry = _Entry(request_id, rows, shape_key, arrival_ns, deadline_ns, priority_level(priority), self._seq)
        self._seq += 1
        self._entries[request_id] = entry
        # insertion keeps (level, seq) order; new entries have the highest seq of their level
        index = len(self._order)
        while index > 0 and self._order[index - 1].level > entry.level:
            index -= 1
        self._order.insert(index, entry)
        self.queued_rows += rows

    def remove(self, request_id: int) -> bool:
        """Take a request out of the queue (cancelled or disconnected); False if it was not queued."""
        entry = self._entries.pop(request_id, None)
        if entry is None:
            return False
        self._order.remove(entry)
        self.queued_rows -= entry.rows
        return True

    def pop_expired(self, now_ns: int) -> list[int]:
        """Remove and return the ids whose deadline has passed, in queue order."""
        expired = [e for e in self._order if e.deadline_ns != NO_DEADLINE and e.deadline_ns <= now_ns]
        for entry in expired:
            self.remove(entry.id)
        return [e.id for e in expired]

    # -- decisions --------------------------------------------------------------------------------

    def _walk(self) -> tuple[list[_Entry], str | None]:
        """The batch the head would form now, and the reason it is already closed (or None)."""
        s = self.settings
        largest = s.preferred_batch_sizes[-1] if s.preferred_batch_sizes else 0
        head = self._order[0]
        taken: list[_Entry] = []
        rows = 0
        for entry in self._order:
            if entry.shape_key != head.shape_key:
                return taken, SHAPE
            if rows + entry.rows > s.max_batch_size:
                return taken, SIZE
            taken.append(entry)
            rows += entry.rows
            if rows == s.max_batch_size:
                return taken, SIZE
            if rows == largest:
                return taken, PREFERRED
        return taken, None

    def next_batch(self, now_ns: int, predicted_ns: Sequence[int]) -> Batch | None:
        """The batch to run now on a free instance, or None to wait (see :meth:`wake_at`)."""
        if not self._order:
            return None
        taken, reason = self._walk()
        if reason is None:
            reason = self._open_reason(taken, now_ns, predicted_ns)
            if reason is None:
                return None
            if reason == DELAY:
                taken = taken[: self._cut(taken)]
        for entry in taken:
            del self._entries[entry.id]
            self.queued_rows -= entry.rows
        del self._order[: len(taken)]
        return Batch(tuple(e.id for e in taken), sum(e.rows for e in taken), reason)

    def _open_reason(self, taken: list[_Entry], now_ns: int, predicted_ns: Sequence[int]) -> str | None:
        """Why a batch the walk left open closes now (``delay`` or ``deadline``), or None."""
        if now_ns - taken[0].arrival_ns >= self.settings.max_queue_delay_ns:
            return DELAY
        if self._deadline_forces(taken, predicted_ns):
            return DEADLINE
        return None

    def _cut(self, taken: list[_Entry]) -> int:
        """How many of *taken* to send: the longest prefix adding up to a preferred size, else all."""
        preferred = self.settings.preferred_batch_sizes
        keep = len(taken)
        if preferred:
            rows = 0
            for count, entry in enumerate(taken, start=1):
                rows += entry.rows
                if rows in preferred:
                    keep = count
        return keep

    def _deadline_forces(self, taken: list[_Entry], predicted_ns: Sequence[int]) -> bool:
        earliest = min((e.deadline_ns for e in taken if e.deadline_ns != NO_DEADLINE), default=NO_DEADLINE)
        if earliest == NO_DEADLINE:
            return False
        rows = sum(e.rows for e in taken)
        close_at = taken[0].arrival_ns + self.settings.max_queue_delay_ns
        return close_at + predicted_ns[rows] > earliest

    def wake_at(self, now_ns: int, predicted_ns: Sequence[int]) -> int | None:
        """When :meth:`next_batch` may first answer differently if nothing else happens (None: never).

        *now_ns* if it would return a batch now, else when the head's delay runs out (see the
        module docstring: deadlines need no wake-up of their own).
        """
        if not self._order:
            return None
        taken, reason = self._walk()
        if reason is not None or self._open_reason(taken, now_ns, predicted_ns) is not None:
            return now_ns
        return taken[0].arrival_ns + self.settings.max_queue_delay_ns
