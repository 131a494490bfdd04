#!/usr/bin/env python
"""A model thread beside a busy event-loop thread: what the GIL switch interval costs the model.

servecore runs models on worker threads; onnxruntime releases the GIL while it computes, but the
thread needs it back for a moment before and after every call. While the event loop thread is
busy (parsing requests, writing answers) it keeps the GIL until the waiting thread asks it to
drop it, which Python does only after ``sys.getswitchinterval()`` (5 ms by default). A model
call of 3.5 ms can so wait up to 10 ms for the GIL: the model's core, or its GPU, stands idle.

Measured in one run, in one process, for each switch interval: the heavy benchmark model
(``models.py``) at batch 32 in a loop on one thread, one intra-op thread, while another thread
runs pure Python (``sum(range(100))`` in a loop, standing in for the event loop); each thread
pinned to its own core (unless ``--no-pin``) so the kernel cannot put both on one core. Reported:
model calls per second against the model alone, both threads' CPU share, and the busy thread's
work against that thread alone (what the forced GIL hand-overs cost the event loop).

    python benchmarks/bench_gil.py                     # 5000 and 200 µs, 3 s each, 3 rounds
    python benchmarks/bench_gil.py --intervals 5000,1000,200,50 --seconds 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from models import HEAVY_FEATURES, build_heavy  # noqa: E402


def _pin(core: int | None) -> None:
    if core is not None:
        os.sched_setaffinity(0, {core})  # 0: the calling thread


def busy_loop(seconds: float) -> dict[str, float]:
    """Pure Python for *seconds*: iterations per second and the thread's CPU share."""
    n, cpu0, end = 0, time.thread_time(), time.perf_counter() + seconds
    while time.perf_counter() < end:
        sum(range(100))
        n += 1
    return {"loop_rate": n / seconds, "loop_cpu": (time.thread_time() - cpu0) / seconds}


def measure(session: object, feed: dict[str, np.ndarray], seconds: float, *, busy: bool,
            model_core: int | None, loop_core: int | None) -> dict[str, float]:
    """Model calls/s (and CPU shares) for *seconds*, with or without a busy Python thread."""
    stop = threading.Event()
    out: dict[str, float] = {}

    def model() -> None:
        _pin(model_core)
        calls, cpu0, wall0 = 0, time.thread_time(), time.perf_counter()
        while not stop.is_set():
            session.run(None, feed)  # type: ignore[attr-defined]
            calls += 1
        wall = time.perf_counter() - wall0
        out["calls_per_s"] = calls / wall
        out["model_cpu"] = (time.thread_time() - cpu0) / wall

    thread = threading.Thread(target=model)
    thread.start()
    if busy:
        _pin(loop_core)
        out.update(busy_loop(seconds))
        _pin(None)
    else:
        time.sleep(seconds)
    stop.set()
    thread.join()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--intervals", default="5000,200", help="switch intervals in µs (5000,200)")
    ap.add_argument("--seconds", type=float, default=3.0, help="per measurement (3)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (3); the median is reported")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--no-pin", action="store_true", help="let the kernel place both threads")
    args = ap.parse_args()
    import onnxruntime as ort

    allowed = sorted(os.sched_getaffinity(0))
    pin = not args.no_pin and len(allowed) >= 2
    model_core, loop_core = (allowed[0], allowed[1]) if pin else (None, None)
    with tempfile.TemporaryDirectory() as tmp:
        path = build_heavy(Path(tmp) / "heavy.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    feed = {"input": np.random.default_rng(0).standard_normal((args.batch, HEAVY_FEATURES)).astype(np.float32)}
    session.run(None, feed)
    intervals = [int(v) for v in args.intervals.split(",")]
    rows: dict[str, list[dict[str, float]]] = {"alone": [], "busy alone": []}
    rows.update({f"{us}": [] for us in intervals})
    default = sys.getswitchinterval()
    try:
        for _ in range(args.rounds):
            sys.setswitchinterval(default)
            rows["alone"].append(measure(session, feed, args.seconds, busy=False, model_core=model_core, loop_core=loop_core))
            _pin(loop_core)
            rows["busy alone"].append(busy_loop(args.seconds))
            _pin(None)
            for us in intervals:
                sys.setswitchinterval(us / 1e6)
                rows[f"{us}"].append(measure(session, feed, args.seconds, busy=True, model_core=model_core, loop_core=loop_core))
    finally:
        sys.setswitchinterval(default)
    alone = statistics.median(r["calls_per_s"] for r in rows["alone"])
    where = f"model on core {model_core}, busy thread on core {loop_core}" if pin else "threads unpinned"
    print(f"heavy model, batch {args.batch}, 1 intra-op thread, {where}; median of {args.rounds} rounds of {args.seconds:g} s\n")
    busy_alone = statistics.median(r["loop_rate"] for r in rows["busy alone"])
    print("| switch interval | model calls/s | vs model alone | model thread CPU | busy thread CPU | busy thread work vs alone |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| each thread alone | {alone:,.1f} | 1.00 | {statistics.median(r['model_cpu'] for r in rows['alone']):.2f} | — | 1.00 |")
    for us in intervals:
        rs = rows[f"{us}"]
        calls = statistics.median(r["calls_per_s"] for r in rs)
        print(
            f"| {us} µs | {calls:,.1f} | {calls / alone:.2f} | {statistics.median(r['model_cpu'] for r in rs):.2f} "
            f"| {statistics.median(r['loop_cpu'] for r in rs):.2f} "
            f"| {statistics.median(r['loop_rate'] for r in rs) / busy_alone:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
