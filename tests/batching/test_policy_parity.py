"""The compiled batch policy (``servecore._native.batching``) against its reference, the spec.

Both implementations are fed the same random operation streams (add, remove, pop_expired,
admit, predicted_wait_ns, next_batch and wake_at at increasing times, with random predicted
tables and random settings) and must give the same outcome after every operation: the same
return value, or the same exception type and message, and the same ``queued_rows`` and ``len``.
Values stay in the domain the reference documents; deadlines and priorities, which clients
choose, go beyond int64.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from servecore.batching.policy import NO_DEADLINE, Batch, BatchPolicyPy, BatchSettings, Refusal

try:
    from servecore._native.batching import BatchPolicy as NativePolicy
except ImportError:  # not built: every test here is skipped
    NativePolicy = None  # type: ignore[assignment,misc]

pytestmark = pytest.mark.skipif(
    NativePolicy is None, reason="servecore._native.batching is not built"
)


# --------------------------------------------------------------------------------------------
# Operations and how to compare their outcomes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Op:
    """One call on the policy; *advance* moves the clock forward first."""

    name: str
    args: tuple[Any, ...]
    advance: int = 0


@dataclass(frozen=True)
class At:
    """A time argument: the clock's current reading plus *offset*."""

    offset: int


@dataclass(frozen=True)
class Table:
    """A predicted-time table argument: the stream's table number *index*."""

    index: int


def outcome(policy: Any, op: Op, now: int, tables: Sequence[Any]) -> tuple[Any, ...]:
    """What the call did, comparable across implementations (results are checked for type)."""
    args = tuple(
        now + a.offset if isinstance(a, At) else tables[a.index] if isinstance(a, Table) else a
        for a in op.args
    )
    try:
        result = getattr(policy, op.name)(*args)
    except Exception as exc:  # noqa: BLE001 - the exception is the outcome
        return ("raised", type(exc), str(exc))
    if isinstance(result, Batch):
        assert type(result.ids) is tuple and isinstance(result.rows, int), result
        return ("batch", result.ids, result.rows, result.reason)
    if isinstance(result, Refusal):
        return ("refusal", result.reason, int(result.predicted_wait_ns))
    if isinstance(result, (int, np.integer)):
        return ("int", int(result))
    assert result is None or isinstance(result, list), result
    return ("value", result)


def run_stream(
    batch_settings: BatchSettings, start: int, tables: Sequence[Any], ops: Sequence[Op]
) -> None:
    reference, native = BatchPolicyPy(batch_settings), NativePolicy(batch_settings)
    now = start
    for step, op in enumerate(ops):
        now += op.advance
        expected = outcome(reference, op, now, tables)
        got = outcome(native, op, now, tables)
        where = f"step {step}: {op} at {now}"
        assert got == expected, where
        assert (native.queued_rows, len(native)) == (reference.queued_rows, len(reference)), where
        assert type(native.queued_rows) is int


# --------------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------------

FAR = [2**63 - 1, 2**63, 2**64, 10**30, -(2**63), -(2**63) - 1, -(10**30)]


@st.composite
def batch_settings(draw: st.DrawFn) -> BatchSettings:
    size = draw(st.integers(1, 8))
    preferred = draw(st.lists(st.integers(1, size), unique=True, max_size=3))
    return BatchSettings(
        max_batch_size=size,
        max_queue_delay_ns=draw(st.sampled_from([0, 0, 1, 50, 200]) | st.integers(0, 300)),
        preferred_batch_sizes=tuple(sorted(preferred)),
        max_queue_rows=draw(st.sampled_from([0, 0, 3, 10, 20])),
        instances=draw(st.integers(1, 4)),
    )


#: how a stream's table is held: every form the C twin reads differently
TABLE_FORMS: dict[str, Callable[[list[int]], Any]] = {
    "list": list,
    "tuple": tuple,
    "int64": lambda v: np.array(v, dtype=np.int64),
    "view": lambda v: np.array(v, dtype=np.int64)[::-1][::-1],
    "strided": lambda v: np.repeat(np.array(v, dtype=np.int64), 2)[::2],
    "big-endian": lambda v: np.array(v, dtype=">i8"),  # not the native int64 buffer: indexed
}


@functools.cache  # strategies are built once per size: building them costs more than drawing
def tables(size: int) -> st.SearchStrategy[Any]:
    """Predicted run times by rows: mostly full tables (short ones raise IndexError when read)."""
    values = st.lists(st.integers(0, 400), min_size=size + 1, max_size=size + 1)
    short = st.lists(st.integers(0, 400), max_size=size)
    return st.builds(
        lambda v, form: TABLE_FORMS[form](v),
        st.one_of(values.map(sorted), values, short),
        st.sampled_from(sorted(TABLE_FORMS)),
    )


deadlines = st.one_of(
    st.just(NO_DEADLINE),
    st.integers(-50, 600).map(At),
    st.sampled_from(FAR),
    st.integers(-(2**62), 2**62),
)
advances = st.sampled_from([0, 0, 1, 20, 60, 150])
ids = st.integers(0, 12) | st.sampled_from([2**70, -1])
table_refs = st.integers(0, 2).map(Table)


@functools.cache
def operations(size: int) -> st.SearchStrategy[list[Op]]:
    rows = st.integers(1, size) | st.integers(-1, size + 2) | st.sampled_from([10**30, -(10**30)])
    shapes = st.integers(0, 2) | st.sampled_from([2**63 - 1, -(2**63)])
    priorities = st.integers(-2, 3) | st.sampled_from([2**31 - 1, 2**31, 2**80, -(2**80)])
    add = st.builds(
        lambda i, r, s, back, d, p, adv: Op("add", (i, r, s, At(-back), d, p), adv),
        ids,
        rows,
        shapes,
        st.sampled_from([0, 0, 0, 5]),
        deadlines,
        priorities,
        advances,
    )
    return st.lists(
        st.one_of(
            add,
            add,
            add,
            st.builds(lambda i, adv: Op("remove", (i,), adv), ids, advances),
            st.builds(lambda adv: Op("pop_expired", (At(0),), adv), advances),
            st.builds(
                lambda r, d, t, adv: Op("admit", (r, d, At(0), t), adv),
                st.integers(0, size + 2),
                deadlines,
                table_refs,
                advances,
            ),
            st.builds(
                lambda t, r: Op("predicted_wait_ns", (t, r)), table_refs, st.integers(0, 2 * size)
            ),
            st.builds(lambda t, adv: Op("next_batch", (At(0), t), adv), table_refs, advances),
            st.builds(lambda t, adv: Op("next_batch", (At(0), t), adv), table_refs, advances),
            st.builds(lambda t, adv: Op("wake_at", (At(0), t), adv), table_refs, advances),
        ),
        max_size=30,
    )


@st.composite
def streams(draw: st.DrawFn) -> tuple[BatchSettings, int, list[Any], list[Op]]:
    chosen = draw(batch_settings())
    start = draw(st.sampled_from([0, 1000, 2**40]))
    size = chosen.max_batch_size
    stream_tables = [draw(tables(size)) for _ in range(3)]
    ops = draw(operations(size))
    return chosen, start, stream_tables, ops


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------

parity = settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@parity
@given(stream=streams())
@example(
    stream=(
        BatchSettings(max_batch_size=4, max_queue_delay_ns=100, preferred_batch_sizes=(2, 3)),
        0,
        [[0, 10, 20, 30, 40], np.array([0, 10, 20, 30, 40]), [0, 10]],
        [
            Op("add", (1, 1, 0, At(0), NO_DEADLINE, 0)),
            Op("add", (2, 1, 0, At(0), At(50), 1), 10),
            Op("add", (3, 2, 1, At(0), NO_DEADLINE, 0)),
            Op("wake_at", (At(0), Table(0))),
            Op("next_batch", (At(0), Table(0))),
            Op("admit", (2, At(5), At(0), Table(1))),
            Op("admit", (2, At(5), At(0), Table(2))),
            Op("pop_expired", (At(0),), 100),
        ],
    )
)
def test_random_streams(stream: tuple[BatchSettings, int, list[Any], list[Op]]) -> None:
    run_stream(*stream)


def _busy_stream(rng: random.Random) -> tuple[BatchSettings, int, list[Any], list[Op]]:
    """A long, scheduler-like stream: many requests, batches closing by size, delay and deadline."""
    size = rng.choice([1, 2, 4, 8, 16, 64])
    preferred = sorted(rng.sample(range(1, size + 1), k=min(size, rng.randint(0, 3))))
    chosen = BatchSettings(
        max_batch_size=size,
        max_queue_delay_ns=rng.choice([0, 100, 1000]),
        preferred_batch_sizes=tuple(preferred),
        max_queue_rows=rng.choice([0, 4 * size]),
        instances=rng.randint(1, 3),
    )
    table = np.cumsum([0] + [rng.randint(1, 50) for _ in range(size)]).astype(np.int64)
    stream_tables = [table, table.tolist()]
    ops: list[Op] = []
    for request_id in range(rng.randint(50, 400)):
        rows = rng.randint(1, max(1, size // 2))
        deadline: Any = NO_DEADLINE if rng.random() < 0.6 else At(rng.randint(0, 3000))
        t = Table(rng.randrange(2))
        ops.append(Op("admit", (rows, deadline, At(0), t), rng.choice([0, 0, 1, 10, 60])))
        ops.append(
            Op(
                "add",
                (
                    request_id,
                    rows,
                    rng.choice([0, 0, 0, 1]),
                    At(0),
                    deadline,
                    rng.choice([0, 0, 1, 2]),
                ),
            )
        )
        if rng.random() < 0.05:
            ops.append(Op("remove", (rng.randrange(request_id + 1),)))
        ops.append(Op("pop_expired", (At(0),)))
        ops.append(Op("next_batch", (At(0), t)))
        ops.append(Op("wake_at", (At(0), t)))
    return chosen, rng.randint(0, 2**40), stream_tables, ops


@pytest.mark.parametrize("seed", range(20))
def test_busy_streams(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(5):
        run_stream(*_busy_stream(rng))


@pytest.mark.parametrize("start", [0, 2**40])
def test_drain_after_stream(start: int) -> None:
    """A queue built by a random stream is then drained by next_batch alone: same batches."""
    rng = random.Random(start)
    chosen = BatchSettings(max_batch_size=8, max_queue_delay_ns=50, preferred_batch_sizes=(2, 4, 6))
    ops = [
        Op(
            "add",
            (
                i,
                rng.randint(1, 8),
                rng.randint(0, 1),
                At(0),
                rng.choice([NO_DEADLINE, At(400)]),
                rng.randint(-1, 3),
            ),
            1,
        )
        for i in range(300)
    ]
    ops += [Op("next_batch", (At(0), Table(0)), 7) for _ in range(400)]
    run_stream(chosen, start, [list(range(0, 90, 10))], ops)
