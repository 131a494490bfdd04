"""Where the threads run: model threads on their own CPUs, the event loop on the others.

``--model-cpus 0`` pins every thread of servecore's that runs a model (the batch schedulers' and
the unbatched models' worker threads, and the loader thread, where warmup runs and threads a
backend starts while loading inherit its CPUs) to CPU 0, and the event loop's thread, with every
thread started after it, to the CPUs left. onnxruntime may place the threads of its own
intra-op pool itself (``--intra-op-threads`` above 1). Without it the kernel places the threads; measured on the 2-core development VM it
often put the event loop and the model thread on one core, where they took turns, and a model
thread handed a batch waited for the loop's every queued callback first (see
``benchmarks/README.md``). Linux only (``os.sched_setaffinity``).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from servecore.errors import ServecoreError


class AffinityError(ServecoreError):
    """A CPU list that cannot be used here."""


def parse_cpus(text: str) -> frozenset[int]:
    """``"0,2-3"`` -> ``{0, 2, 3}``; the empty string is the empty set. ValueError when malformed."""
    cpus: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        low, dash, high = part.partition("-")
        if not low.strip().isdigit() or (dash and not high.strip().isdigit()):
            raise ValueError(f"{part!r} is not a CPU number or range")
        first, last = int(low), int(high) if dash else int(low)
        if last < first:
            raise ValueError(f"CPU range {part!r} runs backwards")
        cpus.update(range(first, last + 1))
    if text.strip() and not cpus:
        raise ValueError(f"{text!r} names no CPU")
    return frozenset(cpus)


def placement(model_cpus: str) -> tuple[frozenset[int], frozenset[int]] | None:
    """(model CPUs, event-loop CPUs) for ``--model-cpus``; None when it is empty.

    Raises AffinityError when the CPUs are not all usable by this process, or leave none for
    the event loop.
    """
    model = parse_cpus(model_cpus)
    if not model:
        return None
    if not hasattr(os, "sched_setaffinity"):
        raise AffinityError("--model-cpus needs a system with os.sched_setaffinity (Linux)")
    allowed = frozenset(os.sched_getaffinity(0))
    if not model <= allowed:
        raise AffinityError(
            f"--model-cpus {model_cpus}: CPU(s) {_format(model - allowed)} are not available to this process "
            f"(it may use {_format(allowed)})"
        )
    loop = allowed - model
    if not loop:
        raise AffinityError(
            f"--model-cpus {model_cpus} leaves no CPU for the event loop (this process may use {_format(allowed)})"
        )
    return model, loop


def model_thread_initializer(model_cpus: str) -> Callable[[], None] | None:
    """A ThreadPoolExecutor initializer that pins its thread to the model CPUs (None: no pinning).

    Not checked here: :func:`pin_event_loop` checks the list once, when the server starts (after
    it the process's own affinity no longer includes the model CPUs).
    """
    cpus = parse_cpus(model_cpus)
    if not cpus:
        return None

    def pin() -> None:
        os.sched_setaffinity(0, cpus)  # 0: the calling thread

    return pin


def pin_event_loop(model_cpus: str) -> None:
    """Pin the calling thread (the event loop's) to the CPUs the model threads leave free."""
    placed = placement(model_cpus)
    if placed is not None:
        os.sched_setaffinity(0, placed[1])


def restricted_cpu_count(model_cpus: str) -> int | None:
    """How many CPUs the model threads may use, when that is fewer than the machine has: the
    ``--model-cpus`` list, or a process confined by ``taskset`` or a cpuset. None when they may
    use every CPU (or the system cannot say).

    onnxruntime's default intra-op pool has one thread per physical core of the machine, each
    pinned by onnxruntime itself to a core of its choosing: a server confined to CPU 0 found a
    spinning pool thread pinned to CPU 1, the CPU it had left to others. An explicit thread count
    stops both.
    """
    cpus = parse_cpus(model_cpus)
    if cpus:
        return len(cpus)
    if not hasattr(os, "sched_getaffinity"):
        return None
    allowed = len(os.sched_getaffinity(0))
    return allowed if allowed < (os.cpu_count() or allowed) else None


def _format(cpus: frozenset[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))
