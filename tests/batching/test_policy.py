"""The batch policy's rules, on the reference (``py``) and on its compiled twin (``c``).

Every expected value here is worked out by hand from the rules in the docstring of
:mod:`servecore.batching.policy`; ``tests/batching/test_policy_parity.py`` then requires the two
implementations to agree on random operation streams.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from servecore.batching import load_batching
from servecore.batching.policy import (
    CLOSE_REASONS,
    DEFAULT_PRIORITY,
    NO_DEADLINE,
    Batch,
    BatchPolicyPy,
    BatchSettings,
    BatchSettingsError,
    Refusal,
    priority_level,
)

try:
    from servecore._native.batching import BatchPolicy as NativePolicy
except ImportError:  # not built: the "c" cases are skipped
    NativePolicy = None  # type: ignore[assignment,misc]

needs_native = pytest.mark.skipif(
    NativePolicy is None, reason="servecore._native.batching is not built"
)

Policy = Any  # BatchPolicyPy or the compiled BatchPolicy
#: predicted run time (ns) by rows, up to 8 rows
TABLE = [0, 10, 15, 20, 30, 40, 50, 60, 70]
LATER = 10**6  # long after every arrival in these tests


@pytest.fixture(
    params=[
        pytest.param(BatchPolicyPy, id="py"),
        pytest.param(NativePolicy, id="c", marks=needs_native),
    ]
)
def impl(request: pytest.FixtureRequest) -> Callable[[BatchSettings], Policy]:
    """Each implementation of the batch policy in turn (the class)."""
    return request.param  # type: ignore[no-any-return]


def make(
    impl: Callable[[BatchSettings], Policy], max_batch_size: int = 8, **settings: Any
) -> Policy:
    return impl(BatchSettings(max_batch_size=max_batch_size, **settings))


def add(
    policy: Policy,
    request_id: int,
    rows: int = 1,
    *,
    shape: int = 0,
    at: int = 0,
    deadline: int = NO_DEADLINE,
    priority: int = 0,
) -> None:
    policy.add(request_id, rows, shape, at, deadline, priority)


def queued(policy: Policy, count: int, rows: int) -> None:
    """The policy's bookkeeping: *count* requests of *rows* rows in all."""
    assert len(policy) == count
    assert policy.queued_rows == rows
    assert bool(policy) == (count > 0)


def msg(text: str) -> str:
    return "^" + re.escape(text) + "$"


# --------------------------------------------------------------------------------------------
# The queue: add, remove, pop_expired
# --------------------------------------------------------------------------------------------


def test_empty(impl: Callable[[BatchSettings], Policy]) -> None:
    policy = make(impl, max_queue_delay_ns=100)
    queued(policy, 0, 0)
    assert policy.next_batch(0, TABLE) is None
    assert policy.wake_at(0, TABLE) is None
    assert policy.pop_expired(LATER) == []
    assert policy.remove(1) is False
    assert policy.predicted_wait_ns(TABLE) == 0
    queued(policy, 0, 0)


def test_settings_are_kept(impl: Callable[[BatchSettings], Policy]) -> None:
    settings = BatchSettings(max_batch_size=4, preferred_batch_sizes=(2,))
    assert impl(settings).settings is settings


def test_add_counts(impl: Callable[[BatchSettings], Policy]) -> None:
    policy = make(impl, max_queue_delay_ns=100)
    add(policy, 1, 3)
    queued(policy, 1, 3)
    add(policy, 2, 8)
    queued(policy, 2, 11)
    add(policy, 3, 1, shape=7, priority=2, deadline=50)
    queued(policy, 3, 12)


def test_add_duplicate_id(impl: Callable[[BatchSettings], Policy]) -> None:
    policy = make(impl)
    add(policy, 1, 2)
    with pytest.raises(KeyError, match=re.escape("request 1 is already queued")):
        add(policy, 1, 1)
    queued(policy, 1, 2)
    assert policy.next_batch(0, TABLE) == Batch((1,), 2, "delay")
    add(policy, 1, 1)  # an id can come back once its request has left
    queued(policy, 1, 1)


@pytest.mark.parametrize("rows", [0, -1, 9, 10**30, -(10**30)])
def test_add_rows_out_of_range(impl: Callable[[BatchSettings], Policy], rows: int) -> None:
    policy = make(impl)
    add(policy, 1, 2)
    error = f"a request of {rows} rows cannot be batched (max_batch_size 8)"
    with pytest.raises(ValueError, match=msg(error)):
        add(policy, 2, rows)
    queued(policy, 1, 2)
    assert policy.remove(2) is False


def test_add_rows_at_the_limits(impl: Callable[[BatchSettings], Policy]) -> None:
    policy = make(impl, max_queue_delay_ns=100)
    add(policy, 1, 1)
    add(policy, 2, 8)
    queued(policy, 2, 9)
    assert policy.next_batch(0, TABLE) == Batch((1,), 1, "size")  # 1 + 8 would pass 8
    assert policy.next_batch(0, TABLE) == Batch((2,), 8, "size")
    queued(policy, 0, 0)


def test_remove(impl: Callable[[BatchSettings], Policy]) -> None:
    policy = make(impl, max_queue_delay_ns=100)
    for request_id, rows in [(1, 1), (2, 2), (3, 3), (4, 1)]:
        add(policy, request_id, rows)
    queued(policy, 4, 7)
    assert policy.remove(2) is True  # from the middle
    queued(policy, 3, 5)
    assert policy.remove(2) is False  # not queued any more
    assert policy.remove(99) is False  # never queued
    queued(policy, 3, 5)
    assert policy.remove(1) is True  # the head
    assert policy.remove(4) is True  # the tail
    queued(policy, 1, 3)
    add(policy, 5, 1)
    add(policy, 6, 1, priority=1)  # to the front
    queued(policy, 3, 5)
    assert policy.next_batch(100, TABLE) == Batch((6, 3, 5), 5, "delay")
    queued(policy, 0, 0)
    assert policy.remove(3) is False


def test_remove_everything_then_reuse(impl: Callable[[BatchSettings], Policy]) -> None:
    policy = make(impl, max_queue_delay_ns=100)
    add(policy, 1)
    add(policy, 2)
    assert policy.remove(2) and policy.remove(1)
    queued(policy, 0, 0)
    assert policy.next_batch(LATER, TABLE) is None
    assert policy.wake_at(0, TABLE) is None
    add(policy, 3, at=5)
    assert policy.wake_at(5, TABLE) == 105
    assert policy.next_batch(105, TABLE) == Batch((3,), 1, "delay")


def test_pop_expired(impl: Callable[[BatchSettings], Policy]) -> None:
    policy = make(impl, max_queue_delay_ns=1000)
    add(policy, 1, 1, deadline=50)
    add(policy, 2, 2)
    add(policy, 3, 3, deadline=30)
    add(policy, 4, 1, deadline=100)
    add(policy, 5, 1, deadline=40, priority=1)  # first in queue order
    queued(policy, 5, 8)
    assert policy.pop_expired(29) == []
    queued(policy, 5, 8)
    # queue order (priority, then arrival), not deadline order; a deadline equal to now has passed
    assert policy.pop_expired(50) == [5, 1, 3]
    queued(policy, 2, 3)
    assert policy.pop_expired(99) == []
    assert policy.pop_expired(100) == [4]
    queued(policy, 1, 2)
    assert policy.pop_expired(LATER) == []  # no deadline: never expires
    queued(policy, 1, 2)
    assert policy.next_batch(1000, TABLE) == Batch((2,), 2, "delay")


def test_pop_expired_far_and_past_deadlines(impl: Callable[[BatchSettings], Policy]) -> None:
    policy = make(impl, max_queue_delay_ns=1000)
    add(policy, 1, deadline=2**64)  # a client can ask for any timeout
    add(policy, 2, deadline=-5)  # long past
    add(policy, 3, deadline=-(2**70))
    assert policy.pop_expired(0) == [2, 3]
    assert policy.pop_expired(2**62) == []
    queued(policy, 1, 1)


# --------------------------------------------------------------------------------------------
# Order: priority levels, then arrival
# --------------------------------------------------------------------------------------------


def test_priority_level() -> None:
    assert priority_level(0) == DEFAULT_PRIORITY
    assert priority_level(-3) == DEFAULT_PRIORITY
    assert priority_level(1) == 1
    assert priority_level(7) == 7
    # explicit priorities always rank ahead of the default level
    assert priority_level(DEFAULT_PRIORITY) == DEFAULT_PRIORITY - 1
    assert priority_level(2**80) == DEFAULT_PRIORITY - 1


def test_priority_levels_then_fifo(impl: Callable[[BatchSettings], Policy]) -> None:
    policy = make(impl)
    priorities = {1: 0, 2: 2, 3: 1, 4: 2, 5: 0, 6: 1, 7: -4, 8: 2**40}
    for request_id, priority in priorities.items():
        add(policy, request_id, priority=priority, at=request_id)
    queued(policy, 8, 8)
    # level 1 (3, 6), level 2 (2, 4), the lowest explicit level (8), the default level (1, 5, 7)
    assert policy.next_batch(100, TABLE) == Batch((3, 6, 2, 4, 8, 1, 5, 7), 8, "size")


def test_priority_splits_batches_by_order(impl: Callable[[BatchSettings], Policy]) -> None:
    policy = make(impl, max_batch_size=2)
    add(policy, 1, priority=0)
    add(policy, 2, priority=0)
    add(policy, 3, priority=1)
    assert policy.next_batch(0, TABLE) == Batch((3, 1), 2, "size")
    assert policy.next_batch(0, TABLE) == Batch((2,), 1, "delay")


def test_delay_counts_from_the_head(impl: Callable[[BatchSettings], Policy]) -> None:
    # A later request of a higher level becomes the head: the batch waits for *its* delay.
    policy = make(impl, max_queue_delay_ns=100)
    add(policy, 1, at=0)
    add(policy, 2, at=90, priority=1)
    assert policy.next_batch(100, TABLE) is None
    assert policy.wake_at(100, TABLE) == 190
    assert policy.next_batch(190, TABLE) == Batch((2, 1), 2, "delay")


# --------------------------------------------------------------------------------------------
# Close reasons
# --------------------------------------------------------------------------------------------


def test_close_reasons_constant() -> None:
    assert CLOSE_REASONS == ("size", "preferred", "delay", "deadline", "shape")


def test_size_at_max_batch_size(impl: Callable[[BatchSettings], Policy]) -> None:
    policy = make(impl, max_batch_size=4, max_queue_delay_ns=1000)
    for request_id in range(1, 4):
        add(policy, request_id, at=request_id)
        assert policy.next_batch(request_id, TABLE) is None
        queued(policy, request_id, request_id)
    add(policy, 4, at=4)
    assert policy.wake_at(4, TABLE) == 4
    assert policy.next_batch(4, TABLE) == Batch((1, 2, 3, 4), 4, "size")
    queued(policy, 0, 0)


def test_size_when_the_next_would_pass(impl: Callable[[BatchSettings], Policy]) -> None:
    policy = make(impl, max_batch_size=4, max_queue_delay_ns=1000)
    add(policy, 1, 2)
    add(policy, 2, 1)
    assert policy.next_batch(0, TABLE) is None
    add(policy, 3, 2)  # 2 + 1 + 2 > 4
    queued(policy, 3, 5)
    assert policy.next_batch(0, TABLE) == Batch((1, 2), 3, "size")
    queued(policy, 1, 2)
    assert policy.next_batch(0, TABLE) is None


def test_request_bigger_than_the_rest_of_the_batch(impl: Callable[[BatchSettings], Policy]) -> None:
    policy = make(impl, max_batch_size=4, max_queue_delay_ns=1000)
    add(policy, 1, 1)
    add(policy, 2, 4)  # fits a batch of its own, not what is left of this one
    add(policy, 3, 1)
    assert policy.next_batch(0, TABLE) == Batch((1,), 1, "size")
    assert policy.next_batch(0, TABLE) == Batch((2,), 4, "size")
    assert policy.next_batch(0, TABLE) is None
    queued(policy, 1, 1)


def test_shape(impl: Callable[[BatchSettings], Policy]) -> None:
    policy = make(impl, max_queue_delay_ns=1000)
    add(policy, 1, 1, shape=5)
    add(policy, 2, 2, shape=5)
    add(policy, 3, 1, shape=6)
    add(policy, 4, 1, shape=5)
    # shapes never share a batch, and a shape change closes the batch before its delay
    assert policy.next_batch(0, TABLE) == Batch((1, 2), 3, "shape")
    queued(policy, 2, 2)
    assert policy.next_batch(0, TABLE) == Batch((3,), 1, "shape")
    assert policy.next_batch(0, TABLE) is None
    assert policy.next_batch(1000, TABLE) == Batch((4,), 1, "delay")


def test_shape_keys_are_int64(impl: Callable[[BatchSettings], Policy]) -> None:
    policy = make(impl)
    add(policy, 1, shape=2**63 - 1)
    add(policy, 2, shape=-(2**63))
    add(policy, 3, shape=-(2**63))
    assert policy.next_batch(0, TABLE) == Batch((1,), 1, "shape")
    assert policy.next_batch(0, TABLE) == Batch((2, 3), 2, "delay")


def test_preferred(impl: Callable[[BatchSettings], Policy]) -> None:
    policy = make(impl, preferred_batch_sizes=(2, 4), max_queue_delay_ns=1000)
    add(policy, 1, 1)
    add(policy, 2, 1)
    assert policy.next_batch(0, TABLE) is None  # 2 is preferred, but not the largest
    add(policy, 3, 2)
    assert policy.next_batch(0, TABLE) == Batch((1, 2, 3), 4, "preferred")
    queued(policy, 0, 0)


@pytest.mark.parametrize(
    "behind",
    [[], [(1, 0)], [(1, 9)], [(3, 0), (1, 0)]],
    ids=["nothing", "same-shape", "other-shape", "enough-for-size"],
)
def test_preferred_prefix_whatever_is_behind(
    impl: Callable[[BatchSettings], Policy], behind: list[tuple[int, int]]
) -> None:
    policy = make(impl, preferred_batch_sizes=(4,), max_queue_delay_ns=1000)
    add(policy, 1, 2)
    add(policy, 2, 2)
    for request_id, (rows, shape) in enumerate(behind, start=3):
        add(policy, request_id, rows, shape=shape)
    assert policy.next_batch(0, TABLE) == Batch((1, 2), 4, "preferred")
    queued(policy, len(behind), sum(rows for rows, _ in behind))


def test_preferred_jumped_over(impl: Callable[[BatchSettings], Policy]) -> None:
    policy = make(impl, preferred_batch_sizes=(4,), max_queue_delay_ns=1000)
    add(policy, 1, 3)
    add(policy, 2, 3)  # 3, 6: never exactly 4, the walk goes on
    assert policy.next_batch(0, TABLE) is None
    add(policy, 3, 2)
    assert policy.next_batch(0, TABLE) == Batch((1, 2, 3), 8, "size")


def test_preferred_equal_to_max_is_size(impl: Callable[[BatchSettings], Policy]) -> None:
    policy = make(impl, max_batch_size=4, preferred_batch_sizes=(2, 4), max_queue_delay_ns=1000)
    for request_id in range(1, 5):
        add(policy, request_id)
    assert policy.next_batch(0, TABLE) == Batch((1, 2, 3, 4), 4, "size")


def test_delay(impl: Callable[[BatchSettings], Policy]) -> None:
    policy = make(impl, max_queue_delay_ns=100)
    add(policy, 1, 1, at=10)
    add(policy, 2, 2, at=50)
    assert policy.next_batch(109, TABLE) is None
    assert policy.wake_at(109, TABLE) == 110
    queued(policy, 2, 3)
    assert policy.next_batch(110, TABLE) == Batch((1, 2), 3, "delay")
    queued(policy, 0, 0)


def test_zero_delay_closes_at_once(impl: Callable[[BatchSettings], Policy]) -> None:
    policy = make(impl)  # max_queue_delay_ns=0
    add(policy, 1, 1, at=5)
    assert policy.wake_at(5, TABLE) == 5
    assert policy.next_batch(5, TABLE) == Batch((1,), 1, "delay")
    add(policy, 2, 1, at=6)
    add(policy, 3, 2, at=6)  # queued while no instance was free
    assert policy.next_batch(7, TABLE) == Batch((2, 3), 3, "delay")
    assert policy.next_batch(7, TABLE) is None
    assert policy.wake_at(7, TABLE) is None


@pytest.mark.parametrize(("deadline", "closes"), [(115, False), (114, True)])
def test_deadline(impl: Callable[[BatchSettings], Policy], deadline: int, closes: bool) -> None:
    policy = make(impl, max_queue_delay_ns=100)
    add(policy, 1, 1, at=0)
    add(policy, 2, 1, at=10, deadline=deadline)
    # waiting until the delay runs out (0 + 100) and running 2 rows (15) ends at 115
    if closes:
        assert policy.wake_at(10, TABLE) == 10
        assert policy.next_batch(10, TABLE) == Batch((1, 2), 2, "deadline")
        queued(policy, 0, 0)
    else:
        assert policy.next_batch(10, TABLE) is None
        assert policy.wake_at(10, TABLE) == 100
        assert policy.next_batch(100, TABLE) == Batch((1, 2), 2, "delay")


def test_deadline_follows_the_table(impl: Callable[[BatchSettings], Policy]) -> None:
    policy = make(impl, max_queue_delay_ns=100)
    add(policy, 1, 2, at=0, deadline=120)
    table = np.array(TABLE, dtype=np.int64)  # the scheduler's table: an int64 array it updates
    assert policy.next_batch(0, table) is None  # 100 + 15 <= 120
    table[2] = 21
    assert policy.wake_at(0, table) == 0
    assert policy.next_batch(0, table) == Batch((1,), 2, "deadline")


def test_deadline_earliest_in_the_batch(impl: Callable[[BatchSettings], Policy]) -> None:
    policy = make(impl, max_queue_delay_ns=100)
    add(policy, 1, 1, at=0, deadline=500)
    add(policy, 2, 1, at=0, deadline=114)
    add(policy, 3, 1, at=0, deadline=300)
    assert policy.next_batch(0, TABLE) == Batch((1, 2, 3), 3, "deadline")  # 100 + 20 > 114


def test_delay_before_deadline(impl: Callable[[BatchSettings], Policy]) -> None:
    policy = make(impl, max_queue_delay_ns=100)
    add(policy, 1, 1, at=0, deadline=50)
    assert policy.next_batch(100, TABLE) == Batch((1,), 1, "delay")


def test_cut_to_preferred_on_delay(impl: Callable[[BatchSettings], Policy]) -> None:
    policy = make(impl, preferred_batch_sizes=(2, 6), max_queue_delay_ns=100)
    for request_id in (1, 2, 3):
        add(policy, request_id)
    assert policy.next_batch(99, TABLE) is None
    assert policy.next_batch(100, TABLE) == Batch((1, 2), 2, "delay")  # 3 rows: cut to 2
    queued(policy, 1, 1)
    assert policy.next_batch(100, TABLE) == Batch((3,), 1, "delay")  # no preferred size: all


def test_cut_to_the_largest_preferred_sum(impl: Callable[[BatchSettings], Policy]) -> None:
    policy = make(impl, preferred_batch_sizes=(1, 3, 4, 7), max_queue_delay_ns=100)
    for request_id, rows in [(1, 1), (2, 2), (3, 2), (4, 1)]:
        add(policy, request_id, rows)
    # prefix sums 1, 3, 5, 6: the longest prefix adding up to a preferred size is 3 rows
    assert policy.next_batch(100, TABLE) == Batch((1, 2), 3, "delay")
    queued(policy, 2, 3)


def test_cut_after_jumping_over(impl: Callable[[BatchSettings], Policy]) -> None:
    policy = make(impl, preferred_batch_sizes=(3, 4), max_queue_delay_ns=100)
    add(policy, 1, 3)
    add(policy, 2, 3)  # 3, then 6: past the largest preferred size without reaching it
    assert policy.next_batch(0, TABLE) is None
    assert policy.next_batch(100, TABLE) == Batch((1,), 3, "delay")
    queued(policy, 1, 3)


def test_deadline_batches_are_not_cut(impl: Callable[[BatchSettings], Policy]) -> None:
    policy = make(impl, preferred_batch_sizes=(2, 6), max_queue_delay_ns=100)
    add(policy, 1)
    add(policy, 2)
    add(policy, 3, deadline=105)  # 100 + 30 > 105
    # sent whole: cutting to the preferred 2 rows would leave behind the request that forced it
    assert policy.next_batch(0, TABLE) == Batch((1, 2, 3), 3, "deadline")
    queued(policy, 0, 0)


def test_shape_and_size_are_not_cut(impl: Callable[[BatchSettings], Policy]) -> None:
    policy = make(impl, preferred_batch_sizes=(2, 6), max_queue_delay_ns=100)
    for request_id in (1, 2, 3):
        add(policy, request_id)
    add(policy, 4, shape=1)
    assert policy.next_batch(0, TABLE) == Batch((1, 2, 3), 3, "shape")


def test_a_table_is_read_only_when_needed(impl: Callable[[BatchSettings], Policy]) -> None:
    policy = make(impl, max_queue_delay_ns=100)
    add(policy, 1)
    assert policy.next_batch(0, []) is None  # no deadline: nothing to predict
    assert policy.wake_at(0, []) == 100
    add(policy, 2, deadline=500)
    with pytest.raises(IndexError):
        policy.next_batch(0, [0, 1])
    with pytest.raises(IndexError):
        policy.wake_at(0, [0, 1])
    queued(policy, 2, 2)
    assert policy.next_batch(100, []) == Batch((1, 2), 2, "delay")  # the delay is checked first


# --------------------------------------------------------------------------------------------
# wake_at
# --------------------------------------------------------------------------------------------


def test_wake_at(impl: Callable[[BatchSettings], Policy]) -> None:
    policy = make(impl, max_batch_size=4, preferred_batch_sizes=(3,), max_queue_delay_ns=100)
    assert policy.wake_at(0, TABLE) is None
    add(policy, 1, at=10)
    assert policy.wake_at(20, TABLE) == 110  # the head's delay
    add(policy, 2, at=30, deadline=10**4)  # far: no effect
    assert policy.wake_at(40, TABLE) == 110
    add(policy, 3, shape=1, at=50)  # closes the batch for shape: now
    assert policy.wake_at(60, TABLE) == 60
    assert policy.remove(3)
    assert policy.wake_at(60, TABLE) == 110
    add(policy, 4, at=70)  # 3 rows: preferred, now
    assert policy.wake_at(80, TABLE) == 80
    assert policy.next_batch(80, TABLE) == Batch((1, 2, 4), 3, "preferred")
    assert policy.wake_at(80, TABLE) is None
    add(policy, 5, at=90)
    assert policy.wake_at(200, TABLE) == 200  # the delay has run out: now
    add(policy, 6, at=95, deadline=150)  # 90 + 100 + 15 > 150: the deadline closes it, now
    assert policy.wake_at(95, TABLE) == 95
    queued(policy, 2, 2)


# --------------------------------------------------------------------------------------------
# Admission
# --------------------------------------------------------------------------------------------

#: predicted run time by rows for max_batch_size 4
TABLE4 = [0, 10, 18, 25, 30]


def fill(policy: Policy, *rows: int) -> None:
    for request_id, n in enumerate(rows, start=100):
        add(policy, request_id, n)


@pytest.mark.parametrize(
    "table",
    [TABLE4, np.array(TABLE4, dtype=np.int64), tuple(TABLE4)],
    ids=["list", "int64", "tuple"],
)
def test_predicted_wait(impl: Callable[[BatchSettings], Policy], table: Any) -> None:
    policy = make(impl, max_batch_size=4, instances=2, max_queue_delay_ns=1000)
    assert policy.predicted_wait_ns(table) == 0
    assert policy.predicted_wait_ns(table, 1) == 10  # its own run, on one instance
    assert policy.predicted_wait_ns(table, 4) == 30
    fill(policy, 4, 1)
    assert (
        policy.predicted_wait_ns(table) == 30 // 2 + 10
    )  # 5 rows: one full batch ahead, then 1 row
    assert policy.predicted_wait_ns(table, 2) == 30 // 2 + 25  # 7 rows: 4 ahead, its batch of 3
    assert (
        policy.predicted_wait_ns(table, 3) == 30 // 2 + 30
    )  # 8 rows: its batch is the 2nd full one
    assert policy.predicted_wait_ns(table, 4) == 60 // 2 + 10  # 9 rows


def test_predicted_wait_instances(impl: Callable[[BatchSettings], Policy]) -> None:
    policy = make(impl, max_batch_size=4, instances=3)
    fill(policy, 4, 4, 1)
    assert policy.predicted_wait_ns(TABLE4, 1) == 60 // 3 + 18  # 10 rows: 2 full ahead, then 2
    policy = make(impl, max_batch_size=4, instances=7)
    fill(policy, 4)
    assert policy.predicted_wait_ns(TABLE4, 1) == 30 // 7 + 10  # floor division


def test_admit_deadline(impl: Callable[[BatchSettings], Policy]) -> None:
    policy = make(impl, max_batch_size=4, instances=2)
    assert policy.admit(1, NO_DEADLINE, 100, TABLE4) is None
    assert policy.admit(1, 110, 100, TABLE4) is None  # 100 + 10 == 110: just in time
    assert policy.admit(1, 109, 100, TABLE4) == Refusal("deadline", 10)
    fill(policy, 4, 1)
    assert policy.admit(2, 139, 100, TABLE4) == Refusal("deadline", 40)  # 15 + 25
    assert policy.admit(2, 140, 100, TABLE4) is None
    assert policy.admit(2, 2**64, 100, TABLE4) is None
    assert policy.admit(1, -(2**64), 100, TABLE4) == Refusal("deadline", 15 + 18)  # 6 rows
    queued(policy, 2, 5)  # admission queues nothing


def test_admit_queue_full(impl: Callable[[BatchSettings], Policy]) -> None:
    policy = make(impl, max_batch_size=4, instances=2, max_queue_rows=10)
    fill(policy, 4, 4, 1)
    assert policy.admit(1, NO_DEADLINE, 0, TABLE4) is None  # 10 rows: at the limit
    assert policy.admit(2, NO_DEADLINE, 0, TABLE4) == Refusal("queue_full", 60 // 2 + 25)  # 11 rows
    # a full queue is reported before a deadline that cannot be met
    assert policy.admit(2, 1, 0, TABLE4) == Refusal("queue_full", 55)
    assert policy.admit(1, 1, 0, TABLE4) == Refusal("deadline", 60 // 2 + 18)
    queued(policy, 3, 9)


def test_admit_without_a_queue_limit(impl: Callable[[BatchSettings], Policy]) -> None:
    policy = make(impl, max_batch_size=4)  # max_queue_rows=0, instances=1
    fill(policy, *[4] * 100)
    assert policy.admit(4, NO_DEADLINE, 0, TABLE4) is None
    assert policy.admit(4, 10**9, 0, TABLE4) is None
    assert policy.admit(4, 100 * 30, 0, TABLE4) == Refusal("deadline", 100 * 30 + 30)


def test_admit_short_table(impl: Callable[[BatchSettings], Policy]) -> None:
    policy = make(impl, max_batch_size=4)
    with pytest.raises(IndexError):
        policy.admit(1, NO_DEADLINE, 0, [0, 10])


# --------------------------------------------------------------------------------------------
# Settings and selection
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "error"),
    [
        ({"max_batch_size": 0}, "max_batch_size must be at least 1, not 0"),
        ({"max_batch_size": 4, "max_queue_delay_ns": -1}, "max_queue_delay must not be negative"),
        ({"max_batch_size": 4, "max_queue_rows": -1}, "max_queue_size must not be negative"),
        ({"max_batch_size": 4, "instances": 0}, "instances must be at least 1, not 0"),
        (
            {"max_batch_size": 4, "preferred_batch_sizes": (2, 5)},
            "preferred batch size 5 is outside 1..max_batch_size (4)",
        ),
        (
            {"max_batch_size": 4, "preferred_batch_sizes": (0,)},
            "preferred batch size 0 is outside 1..max_batch_size (4)",
        ),
        (
            {"max_batch_size": 4, "preferred_batch_sizes": (3, 2)},
            "preferred batch sizes must be ascending and distinct",
        ),
        (
            {"max_batch_size": 4, "preferred_batch_sizes": (2, 2)},
            "preferred batch sizes must be ascending and distinct",
        ),
    ],
)
def test_settings_errors(
    impl: Callable[[BatchSettings], Policy], settings: dict[str, Any], error: str
) -> None:
    with pytest.raises(BatchSettingsError, match=msg(error)):
        impl(BatchSettings(**settings))
    assert issubclass(BatchSettingsError, ValueError)


def test_load_batching_picks_the_policy() -> None:
    core = load_batching(pure_python=True)
    assert core.implementation == "python" and core.BatchPolicy is BatchPolicyPy
    native = load_batching(pure_python=False)
    if NativePolicy is not None and native.implementation == "native":
        assert native.BatchPolicy is NativePolicy


@needs_native
def test_native_module_is_the_compiled_one() -> None:
    from servecore._native import batching

    assert batching.__file__ is not None and not batching.__file__.endswith(".py")
    assert batching.__doc__ is not None and "servecore.batching.policy" in batching.__doc__
    assert NativePolicy.__doc__ is not None and "BatchPolicyPy" in NativePolicy.__doc__


@needs_native
def test_native_out_of_domain_times() -> None:
    # Times, shape keys and predicted run times are int64 in the compiled twin (see "Domain").
    policy = NativePolicy(BatchSettings(max_batch_size=4))
    with pytest.raises(OverflowError):
        policy.add(1, 1, 0, 2**63, NO_DEADLINE, 0)
    with pytest.raises(OverflowError):
        policy.add(1, 1, 2**63, 0, NO_DEADLINE, 0)
    queued(policy, 0, 0)
    with pytest.raises(OverflowError):
        policy.admit(1, NO_DEADLINE, 0, [0, 2**63, 0, 0, 0])


@needs_native
def test_native_long_queue_is_freed() -> None:
    # Dropping a policy holding a long queue must not recurse through the links.
    policy = NativePolicy(BatchSettings(max_batch_size=1, max_queue_delay_ns=10))
    for request_id in range(200_000):
        policy.add(request_id, 1, 0, 0, NO_DEADLINE, -request_id)
    del policy
