"""A full disk (a real, small tmpfs) and a full queue follow the failure policy in both modes."""

from __future__ import annotations

import errno
import json
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from servecore.audit import AuditConfig, AuditRecordLostError, AuditUnavailableError
from servecore.audit.log import AuditLog
from servecore.audit.verify import verify_log

from .conftest import LogFactory, event, write_records


def fill(mount: Path) -> Path:
    """Fill the file system with one file until it refuses (ENOSPC)."""
    filler = mount / "filler"
    with open(filler, "wb", buffering=0) as f:
        chunk = b"\xff" * 4096
        while True:
            try:
                f.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
    return filler


def records(log_dir: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(log_dir.glob("audit-*.jsonl")):
        out += [json.loads(line) for line in path.read_bytes().splitlines()]
    return out


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def first_failure(log: AuditLog, start: int) -> tuple[int, list[Future[int]]]:
    """Submit durable records one by one until one cannot be written; (next i, futures)."""
    futures = []
    for i in range(start, start + 5000):
        future = log.submit_durable(event(i))
        futures.append(future)
        if future.exception(timeout=10) is not None:
            return i + 1, futures
    raise AssertionError("the full disk never refused a write")


def open_on(mount: Path, key_dir: Path, policy: str) -> AuditLog:
    return AuditLog(AuditConfig(
        directory=mount / "log", key_dir=key_dir, fsync="always", on_failure=policy,  # type: ignore[arg-type]
        retry_interval_s=0.05, checkpoint_every=10**6, checkpoint_interval_s=3600,
    ))


def test_full_disk_fail_closed(tmpfs: Callable[[int], Path], key_dir: Path) -> None:
    mount = tmpfs(256 * 1024)
    log = open_on(mount, key_dir, "fail-closed")
    write_records(log, 20)
    filler = fill(mount)
    i, futures = first_failure(log, 20)
    assert isinstance(futures[-1].exception(), AuditUnavailableError)
    assert not log.writable
    refused = 0
    for _ in range(5):  # new inferences are refused (503) while the disk is full
        with pytest.raises(AuditUnavailableError, match="cannot be written") as info:
            log.ensure_accepting()
        assert info.value.status_code == 503
        refused += 1
    with pytest.raises(AuditUnavailableError):
        log.submit(event(i))
    refused += 1
    time.sleep(0.2)
    assert not log.writable  # retries keep failing while the disk is full
    filler.unlink()
    wait_for(lambda: log.writable)
    assert log.submit_durable(event(i + 1)).result(timeout=10) > 0
    log.close()
    got = records(mount / "log")
    ids = {r.get("request_id") for r in got}
    # every record accepted before the failure is written, including the one whose write failed
    assert all(f"r{k}" in ids for k in range(i))
    gaps = [r for r in got if r["event"] == "audit_gap"]
    assert len(gaps) == 1
    assert gaps[0]["policy"] == "fail-closed" and gaps[0]["lost"] == 0
    assert gaps[0]["refused"] == refused == log.stats()["refused"]
    assert "ENOSPC" in gaps[0]["reason"] or "No space" in gaps[0]["reason"]
    result = verify_log(mount / "log")
    assert result.exit_code == 2, result
    assert any("audit gap" in w for w in result.warnings)


def test_full_disk_fail_open(tmpfs: Callable[[int], Path], key_dir: Path) -> None:
    mount = tmpfs(256 * 1024)
    log = open_on(mount, key_dir, "fail-open")
    write_records(log, 20)
    filler = fill(mount)
    i, futures = first_failure(log, 20)
    assert isinstance(futures[-1].exception(), AuditRecordLostError)
    submitted = i
    for k in range(i, i + 30):  # serving goes on: no refusal
        log.ensure_accepting()
        log.submit(event(k))
    submitted += 30
    wait_for(lambda: log.stats()["queue_depth"] == 0)
    time.sleep(0.1)
    filler.unlink()
    wait_for(lambda: log.writable)
    log.submit_durable(event(submitted)).result(timeout=10)
    submitted += 1
    log.close()
    got = records(mount / "log")
    written = {r["request_id"] for r in got if r["event"] == "inference"}
    gaps = [r for r in got if r["event"] == "audit_gap"]
    lost = log.stats()["lost"]
    assert lost >= 30 and gaps
    assert sum(g["lost"] for g in gaps) == lost  # every loss is on record ...
    assert len(written) + lost == submitted  # ... and nothing else went missing
    assert all(g["policy"] == "fail-open" and g["first_lost"] and g["after_seq"] is not None
               for g in gaps)
    result = verify_log(mount / "log")
    assert result.exit_code == 2, result


@pytest.mark.parametrize("policy", ["fail-open", "fail-closed"])
def test_full_queue_follows_the_policy(open_log: LogFactory, log_dir: Path, policy: str) -> None:
    log = open_log(queue_size=10, on_failure=policy)
    accepted = refused = 0
    with log._cond:  # hold the writer off the queue (the lock is re-entrant for this thread)
        for i in range(25):
            try:
                log.submit(event(i))
                accepted += 1
            except AuditUnavailableError:
                refused += 1
    log.close()
    got = records(log_dir)
    (gap,) = [r for r in got if r["event"] == "audit_gap"]
    assert gap["reason"] == "queue full"
    assert len([r for r in got if r["event"] == "inference"]) == 10
    if policy == "fail-closed":
        assert (accepted, refused) == (10, 15) and (gap["refused"], gap["lost"]) == (15, 0)
    else:
        assert (accepted, refused) == (25, 0) and (gap["refused"], gap["lost"]) == (0, 15)
    assert verify_log(log_dir).exit_code == 2
