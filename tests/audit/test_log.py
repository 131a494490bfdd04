"""The writer: records, durability futures, validation, concurrency, rotation, checkpoints."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from servecore.audit import AuditConfig, AuditUnavailableError, CanonicalError
from servecore.audit.errors import AuditLogLockedError
from servecore.audit.log import AuditLog
from servecore.audit.records import ZERO_HASH, parse_ts
from servecore.audit.verify import verify_log
from servecore.errors import ConfigError, UnavailableError

from .conftest import MODEL, FakeClock, LogFactory, event, write_records


def records(log_dir: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(log_dir.glob("audit-*.jsonl")):
        out += [json.loads(line) for line in path.read_bytes().splitlines()]
    return out


def checkpoints(log_dir: Path, name: str = "checkpoints.jsonl") -> list[dict[str, Any]]:
    return [json.loads(line) for line in (log_dir / name).read_bytes().splitlines()]


def test_records_have_the_header_and_chain(open_log: LogFactory, log_dir: Path) -> None:
    log = open_log()
    write_records(log, 3)
    log.close()
    got = records(log_dir)
    assert [r["seq"] for r in got] == [0, 1, 2]
    assert got[0]["prev"] == ZERO_HASH and got[1]["prev"] != ZERO_HASH
    assert {"v", "seq", "ts", "mono_ns", "prev", "event", "request_id", "model"} <= set(got[0])
    assert got[0]["model"] == MODEL.as_dict()
    assert got[0]["ts"].endswith("Z") and len(got[0]["ts"]) == 27
    assert verify_log(log_dir).exit_code == 0


@pytest.mark.parametrize("fsync", ["always", "interval", "never"])
def test_durable_submit_gives_the_seq(open_log: LogFactory, log_dir: Path, fsync: str) -> None:
    log = open_log(fsync=fsync)
    futures = [log.submit_durable(event(i)) for i in range(50)]
    assert [f.result(timeout=10) for f in futures] == list(range(50))
    assert asyncio.run(log.submit_async(event(50))) == 50
    log.close()
    assert verify_log(log_dir).exit_code == 0


def test_submit_validates_before_queueing(open_log: LogFactory) -> None:
    log = open_log()
    with pytest.raises(CanonicalError, match="finite"):
        log.submit(event(0, latency_us={"total": float("nan")}))
    with pytest.raises(CanonicalError, match="may not set"):
        log.submit(event(0, seq=7))
    with pytest.raises(CanonicalError, match="event type"):
        log.submit({"event": "audit_gap", "lost": 0})  # the log's own events cannot be forged
    with pytest.raises(CanonicalError, match="event type"):
        log.submit({"event": "inferense"})
    with pytest.raises(CanonicalError, match="mapping"):
        log.submit(["event"])  # type: ignore[arg-type]
    assert log.stats()["queue_depth"] == 0


def test_caller_mutation_after_submit_changes_nothing(open_log: LogFactory, log_dir: Path) -> None:
    log = open_log()
    e = event(0)
    log.submit(e)
    e["status"] = "tampered"
    e["model"]["name"] = "tampered"
    log.close()
    (got,) = records(log_dir)
    assert got["status"] == "ok" and got["model"]["name"] == "mlp"


def test_many_threads_gap_free_and_in_order(open_log: LogFactory, log_dir: Path) -> None:
    log = open_log(checkpoint_every=500)
    threads, per_thread = 8, 1500

    def work(t: int) -> None:
        for i in range(per_thread):
            log.submit(event(i, thread=t))

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    log.close()
    got = records(log_dir)
    assert [r["seq"] for r in got] == list(range(threads * per_thread))
    for t in range(threads):  # each thread's records in its own submission order
        mine = [int(r["request_id"][1:]) for r in got if r["thread"] == t]
        assert mine == list(range(per_thread))
    stamps = [parse_ts(r["ts"]) for r in got]
    assert stamps == sorted(stamps)  # stamped in queue order
    result = verify_log(log_dir)
    assert result.exit_code == 0 and result.records == threads * per_thread
    assert result.checkpoints_verified >= 1  # one per group commit reaching 500 unsigned


def test_reopen_continues_the_log(open_log: LogFactory, log_dir: Path) -> None:
    log = open_log()
    write_records(log, 10)
    log.close()
    log = open_log()
    assert log.submit_durable(event(99)).result(timeout=10) == 10
    log.close()
    got = records(log_dir)
    assert [r["seq"] for r in got] == list(range(11))
    assert not any(r["event"] == "recovery" for r in got)  # a clean close needs no recovery
    assert verify_log(log_dir).exit_code == 0


def test_one_writer_per_directory(open_log: LogFactory) -> None:
    open_log()
    with pytest.raises(AuditLogLockedError, match="open for writing by process"):
        open_log()


def test_closed_log_refuses(open_log: LogFactory) -> None:
    log = open_log()
    log.close()
    log.close()  # idempotent
    assert not log.writable
    with pytest.raises(AuditUnavailableError, match="closed") as info:
        log.submit(event(0))
    assert isinstance(info.value, UnavailableError) and info.value.status_code == 503


def test_checkpoints_every_n_and_at_close(open_log: LogFactory, log_dir: Path) -> None:
    log = open_log(checkpoint_every=100, checkpoint_interval_s=3600)
    for i in range(0, 1000, 50):
        write_records(log, 50, start=i)
    log.close()
    sizes = [c["tree_size"] for c in checkpoints(log_dir)]
    assert sizes == sorted(set(sizes)) and sizes[-1] == 1000
    assert len(sizes) >= 9
    assert all(set(c) >= {"root", "sig", "key_id", "frontier", "last_hash"} for c in checkpoints(log_dir))


def test_checkpoint_by_time(open_log: LogFactory, log_dir: Path) -> None:
    log = open_log(checkpoint_every=10**6, checkpoint_interval_s=0.2)
    write_records(log, 5)
    deadline = 50
    while not (log_dir / "checkpoints.jsonl").stat().st_size and deadline:
        threading.Event().wait(0.1)
        deadline -= 1
    assert checkpoints(log_dir)[-1]["tree_size"] == 5


def test_anchor_gets_every_checkpoint(open_log: LogFactory, log_dir: Path, tmp_path: Path) -> None:
    anchor = tmp_path / "anchor"
    log = open_log(checkpoint_every=20, anchor_dir=anchor)
    write_records(log, 100)
    log.close()
    assert checkpoints(anchor) == checkpoints(log_dir)
    assert (anchor / "signing-keys.json").exists()
    assert verify_log(log_dir, anchors=[anchor]).exit_code == 0


def test_rotation_by_size_signs_each_boundary(open_log: LogFactory, log_dir: Path) -> None:
    log = open_log(segment_max_bytes=8_000, checkpoint_every=10**6)
    for i in range(0, 300, 10):
        write_records(log, 10, start=i)
    log.close()
    segments = sorted(log_dir.glob("audit-*.jsonl"))
    assert len(segments) > 5
    sizes = {c["tree_size"] for c in checkpoints(log_dir)}
    for path in segments[1:]:
        assert int(path.name[6:18]) in sizes, f"no checkpoint at the start of {path.name}"
    assert verify_log(log_dir).exit_code == 0


def test_rotation_by_utc_day(open_log: LogFactory, log_dir: Path) -> None:
    clock = FakeClock(parse_ts("2026-03-01T23:59:59Z") * 1000)
    log = open_log(clock_ns=clock)
    write_records(log, 5)
    clock.now = parse_ts("2026-03-02T00:00:01Z") * 1000
    write_records(log, 5, start=5)
    log.close()
    segments = sorted(log_dir.glob("audit-*.jsonl"))
    assert [p.name for p in segments] == ["audit-000000000000.jsonl", "audit-000000000005.jsonl"]
    days = [{r["ts"][:10] for r in map(json.loads, p.read_bytes().splitlines())} for p in segments]
    assert days == [{"2026-03-01"}, {"2026-03-02"}]
    assert verify_log(log_dir).exit_code == 0


def test_config_is_validated(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="fsync"):
        AuditConfig(directory=tmp_path, key_dir=tmp_path, fsync="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="fail-closed or fail-open"):
        AuditConfig(directory=tmp_path, key_dir=tmp_path, on_failure="ignore")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="queue_size"):
        AuditConfig(directory=tmp_path, key_dir=tmp_path, queue_size=0)


def test_helpers_pseudonymise_and_digest(open_log: LogFactory) -> None:
    log = open_log()
    assert log.pseudonym("alice") == log.keys.pseudonym("alice") != "alice"
    assert log.digest(b"x") != log.digest(b"x", subject="s1")
    stats = log.stats()
    assert stats["writable"] and stats["lost"] == 0


def test_log_is_an_audit_sink(open_log: LogFactory) -> None:
    from servecore.audit import AuditSink

    sink: AuditSink = open_log()
    sink.ensure_accepting()
    assert isinstance(sink, AuditLog)


def test_header_like_content_inside_events_is_left_alone(open_log: LogFactory, log_dir: Path) -> None:
    tricky = {
        "event": "config_change",
        "changes": {"prev": "x", "seq": 5, "ts": None, "mono_ns": [1], "v": "@@"},
        "note": '"seq":"@0123456789abcdef@" "prev":',
    }
    log = open_log()
    log.submit_durable(tricky).result(timeout=10)
    log.close()
    (got,) = records(log_dir)
    assert {k: got[k] for k in tricky} == tricky
    assert got["seq"] == 0 and got["v"] == 1 and got["prev"] == ZERO_HASH
    assert verify_log(log_dir).exit_code == 0
