#!/usr/bin/env python
"""Audit log throughput: records per second under ``--audit-fsync always|interval|never``.

Two loads per fsync policy, each on a fresh log (keys made here, in a temporary directory on the
disk given by ``--dir``, default the system temp dir):

* **firehose**: one thread submits ``--records`` inference events without waiting (the server's
  non-durable path), then waits for the last one to be written; records/s is end to end.
* **handlers**: ``--threads`` threads each submit an event and wait for it to be durable before
  the next (the server holding each answer until its record is on disk, as under
  ``fsync=always``); reports records/s and the p50/p99 wait, and the mean group-commit size
  (records per write), which is what makes ``always`` affordable.
* **asyncio**: the same with ``--tasks`` tasks on one event loop awaiting
  ``AuditLog.submit_async`` (the server's path).

Every run ends with ``servecore.audit.verify.verify_log`` on the result (must exit 0).
Reported, not enforced::

    python benchmarks/bench_audit.py
    python benchmarks/bench_audit.py --records 20000 --threads 32 --dir /mnt/ssd --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from servecore.audit import AuditConfig, ModelRef, inference_event
from servecore.audit.keys import keygen
from servecore.audit.log import AuditLog
from servecore.audit.verify import verify_log

POLICIES = ("always", "interval", "never")
MODEL = ModelRef("mlp", "1", "ab" * 32, "cd" * 32)


def make_event(log: AuditLog, i: int) -> dict[str, Any]:
    """A realistic inference record: pseudonym, keyed digests, latencies."""
    return inference_event(
        request_id=f"req-{i:09d}", trace_id=f"{i:032x}", model=MODEL, status="ok",
        principal_pid=log.pseudonym("tenant-7/alice"),
        input_digest=log.digest(b"x" * 256), output_digest=log.digest(b"y" * 40),
        latency_us={"total": 1800, "queue": 200, "model": 1400},
    )


def open_log(root: Path, keys: Path, name: str, fsync: str) -> AuditLog:
    return AuditLog(AuditConfig(directory=root / name, key_dir=keys, fsync=fsync,  # type: ignore[arg-type]
                                queue_size=1 << 20))


def firehose(root: Path, keys: Path, fsync: str, n: int) -> dict[str, Any]:
    log = open_log(root, keys, f"firehose-{fsync}", fsync)
    events = [make_event(log, i) for i in range(n)]
    start = time.perf_counter()
    for e in events[:-1]:
        log.submit(e)
    submitted = time.perf_counter()
    log.submit_durable(events[-1]).result()
    done = time.perf_counter()
    log.close()
    stats = log.stats()
    assert stats["written"] >= n
    return {
        "load": "firehose", "fsync": fsync, "records": n,
        "records_per_s": n / (done - start),
        "submit_us": (submitted - start) / n * 1e6,
        "records_per_commit": stats["written"] / stats["commits"],
        "verify": verify_log(root / f"firehose-{fsync}").exit_code,
    }


def handlers(root: Path, keys: Path, fsync: str, threads: int, seconds: float) -> dict[str, Any]:
    log = open_log(root, keys, f"handlers-{fsync}", fsync)
    waits: list[list[float]] = [[] for _ in range(threads)]
    stop = threading.Event()

    def handler(t: int) -> None:
        i = 0
        while not stop.is_set():
            e = make_event(log, t * 10**7 + i)
            begin = time.perf_counter()
            log.submit_durable(e).result()
            waits[t].append(time.perf_counter() - begin)
            i += 1

    workers = [threading.Thread(target=handler, args=(t,)) for t in range(threads)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    time.sleep(seconds)
    stop.set()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - start
    log.close()
    return waited(log, root / f"handlers-{fsync}", f"handlers x{threads}", fsync,
                  [w for ws in waits for w in ws], elapsed)


def waited(log: Any, log_dir: Path, load: str, fsync: str, waits: list[float], elapsed: float) -> dict[str, Any]:
    """The row of a closed log whose handlers each waited for their record to be durable."""
    waits = sorted(waits)
    stats = log.stats()
    n = len(waits)
    return {
        "load": load, "fsync": fsync, "records": n,
        "records_per_s": n / elapsed,
        "p50_ms": statistics.median(waits) * 1e3,
        "p99_ms": waits[int(0.99 * (n - 1))] * 1e3,
        "records_per_commit": stats["written"] / stats["commits"],
        "write_errors": stats["write_errors"],
        "verify": verify_log(log_dir).exit_code,
    }


def event_loop(root: Path, keys: Path, fsync: str, tasks: int, seconds: float) -> dict[str, Any]:
    """Handlers as asyncio tasks awaiting ``submit_async`` (how the server holds an answer)."""
    name = f"asyncio-{fsync}"
    log = open_log(root, keys, name, fsync)
    waits: list[float] = []

    async def handler(t: int, stop_at: float) -> None:
        i = 0
        while time.perf_counter() < stop_at:
            e = make_event(log, t * 10**7 + i)
            begin = time.perf_counter()
            await log.submit_async(e)
            waits.append(time.perf_counter() - begin)
            i += 1

    async def run() -> float:
        start = time.perf_counter()
        await asyncio.gather(*(handler(t, start + seconds) for t in range(tasks)))
        return time.perf_counter() - start

    elapsed = asyncio.run(run())
    log.close()
    return waited(log, root / name, f"asyncio x{tasks}", fsync, waits, elapsed)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=50_000, help="firehose records (50000)")
    ap.add_argument("--threads", type=int, default=16, help="handler threads (16)")
    ap.add_argument("--tasks", type=int, default=64, help="asyncio handler tasks (64)")
    ap.add_argument("--seconds", type=float, default=5.0, help="handler run per policy (5)")
    ap.add_argument("--dir", type=Path, default=None, help="where the logs go (temp dir)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench-audit-") as tmp:
        root = Path(tmp)
        keygen(root / "keys")
        for fsync in POLICIES:
            rows.append(firehose(root, root / "keys", fsync, args.records))
            rows.append(handlers(root, root / "keys", fsync, args.threads, args.seconds))
            rows.append(event_loop(root, root / "keys", fsync, args.tasks, args.seconds))
    print(f"{'load':<14}{'fsync':<10}{'records':>9}{'rec/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'rec/commit':>12}{'verify':>8}")
    for r in rows:
        p50 = f"{r['p50_ms']:.2f}" if "p50_ms" in r else "-"
        p99 = f"{r['p99_ms']:.2f}" if "p99_ms" in r else "-"
        per = f"{r['records_per_commit']:.1f}" if r.get("records_per_commit") else "-"
        print(f"{r['load']:<14}{r['fsync']:<10}{r['records']:>9}{r['records_per_s']:>10.0f}"
              f"{p50:>9}{p99:>9}{per:>12}{r['verify']:>8}")
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if all(r["verify"] == 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
