"""Time the batch policy on scheduler-like streams: compiled core vs pure-Python twin.

Run after building the extension in place::

    python setup.py build_ext --inplace
    PYTHONPATH=src python benchmarks/bench_policy.py [--repeat 7] [--min-time 0.2]

Each case pushes requests through one policy the way ``servecore.batching.scheduler`` does (an
``add`` then a ``next_batch`` per request, on the int64 numpy table the scheduler keeps) until
every request has left in a batch, and prints the best time per request (µs) of each
implementation and ``speed-up`` = python / native. Both implementations are first checked to
form the same batches.
"""

from __future__ import annotations

import argparse
import sys
import timeit
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from servecore.batching.policy import NO_DEADLINE, Batch, BatchPolicyPy, BatchSettings

try:
    from servecore._native.batching import BatchPolicy as NativePolicy
except ImportError:  # pragma: no cover - the point of the script is the comparison
    sys.exit("servecore._native.batching is not built: run `python setup.py build_ext --inplace`")

US = 1_000  # ns


@dataclass(frozen=True)
class Case:
    """One row of the table: a stream of *requests* requests, run by *stream* on a policy."""

    label: str
    settings: BatchSettings
    requests: int
    stream: Callable[[Any, np.ndarray], list[Batch]]


def _table(size: int) -> np.ndarray:
    """A learned table as the scheduler holds it: ~20 µs + 2 µs per row."""
    rows = np.arange(size + 1, dtype=np.int64)
    table = 20 * US + 2 * US * rows
    table[0] = 0
    return table


def _concurrent(
    clients: int, rounds: int, *, deadline_every: int = 0
) -> Callable[[Any, np.ndarray], list[Batch]]:
    """*clients* single-row requests arrive 1 µs apart, *rounds* times; next_batch after each add.

    The batch closes when the settings say (size, preferred or, after the last arrival of a
    round, delay); a round starts when the previous one has left.
    """

    def stream(policy: Any, table: np.ndarray) -> list[Batch]:
        batches: list[Batch] = []
        now = 0
        request_id = 0
        delay = policy.settings.max_queue_delay_ns
        for _ in range(rounds):
            for _ in range(clients):
                now += US
                deadline = (
                    now + 5000 * US  # met by closing at the delay
                    if deadline_every and request_id % deadline_every == 0
                    else NO_DEADLINE
                )
                policy.add(request_id, 1, 0, now, deadline, 0)
                request_id += 1
                batch = policy.next_batch(now, table)
                if batch is not None:
                    batches.append(batch)
            now += delay
            while (batch := policy.next_batch(now, table)) is not None:
                batches.append(batch)
        assert not len(policy)
        return batches

    return stream


def _scheduler_calls(clients: int, rounds: int) -> Callable[[Any, np.ndarray], list[Batch]]:
    """Every call the scheduler makes per request: admit, add, pop_expired, next_batch, wake_at."""

    def stream(policy: Any, table: np.ndarray) -> list[Batch]:
        batches: list[Batch] = []
        now = 0
        request_id = 0
        delay = policy.settings.max_queue_delay_ns
        for _ in range(rounds):
            for _ in range(clients):
                now += US
                deadline = now + 800 * US if request_id % 2 else NO_DEADLINE
                if policy.admit(1, deadline, now, table) is None:
                    policy.add(request_id, 1, request_id % 2, now, deadline, request_id % 3)
                request_id += 1
                policy.pop_expired(now)
                batch = policy.next_batch(now, table)
                if batch is not None:
                    batches.append(batch)
                policy.wake_at(now, table)
            now += delay
            while (batch := policy.next_batch(now, table)) is not None:
                batches.append(batch)
        assert not len(policy)
        return batches

    return stream


def _cases() -> list[Case]:
    return [
        Case(
            "64 clients, size 64",
            BatchSettings(max_batch_size=64, max_queue_delay_ns=2000 * US),
            64 * 10,
            _concurrent(64, 10),
        ),
        Case(
            "64 clients, size 16",
            BatchSettings(max_batch_size=16, max_queue_delay_ns=2000 * US),
            64 * 10,
            _concurrent(64, 10),
        ),
        Case(
            "24 clients, delay (size 64)",
            BatchSettings(max_batch_size=64, max_queue_delay_ns=500 * US),
            24 * 20,
            _concurrent(24, 20),
        ),
        Case(
            "64 clients, preferred 16/32",
            BatchSettings(
                max_batch_size=64, max_queue_delay_ns=500 * US, preferred_batch_sizes=(16, 32)
            ),
            64 * 10,
            _concurrent(64, 10, deadline_every=4),
        ),
        Case(
            "lone requests, delay 0",
            BatchSettings(max_batch_size=64),
            200,
            _concurrent(1, 200),
        ),
        Case(
            "64 clients, all 5 calls",
            BatchSettings(
                max_batch_size=64,
                max_queue_delay_ns=500 * US,
                preferred_batch_sizes=(32,),
                instances=2,
            ),
            64 * 10,
            _scheduler_calls(64, 10),
        ),
    ]


def _best_us(fn: Callable[[], object], repeat: int, min_time: float) -> float:
    """Best of *repeat* timings of a loop of at least *min_time* seconds, in µs per call."""
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()
    per_loop = max(1, int(number * min_time / 0.2))
    return min(timer.repeat(repeat=repeat, number=per_loop)) / per_loop * 1e6


def _run(
    case: Case, policy: Callable[[BatchSettings], Any], table: np.ndarray
) -> Callable[[], object]:
    """One run of *case* on a new policy of class *policy*."""
    return lambda: case.stream(policy(case.settings), table)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="timings per cell (best is kept)")
    parser.add_argument("--min-time", type=float, default=0.2, help="seconds per timing")
    args = parser.parse_args(argv)

    header = f"{'case':<30}{'batches':>8}{'python µs':>12}{'native µs':>12}{'speed-up':>10}"
    print(header)
    print("-" * len(header))
    for case in _cases():
        table = _table(case.settings.max_batch_size)
        expected = case.stream(BatchPolicyPy(case.settings), table)
        assert case.stream(NativePolicy(case.settings), table) == expected, case.label
        py = _best_us(_run(case, BatchPolicyPy, table), args.repeat, args.min_time)
        c = _best_us(_run(case, NativePolicy, table), args.repeat, args.min_time)
        per_py, per_c = py / case.requests, c / case.requests
        print(
            f"{case.label:<30}{len(expected):>8}{per_py:>12.3f}{per_c:>12.3f}{per_py / per_c:>9.1f}x"
        )
    print(
        "\nµs per request: one add and one next_batch (the last row: admit, add, pop_expired,"
        "\nnext_batch and wake_at), batches closing included. Best of --repeat timings;"
        "\nspeed-up = python / native."
    )


if __name__ == "__main__":
    main()
