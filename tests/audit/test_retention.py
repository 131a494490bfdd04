"""Retention by calendar months removes whole, signed segments only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from servecore.audit.keys import KeySet
from servecore.audit.proof import check_proof, prove
from servecore.audit.records import format_ts, parse_ts
from servecore.audit.retention import add_months, expired_prefix
from servecore.audit.verify import verify_log

from .conftest import FakeClock, LogFactory, write_records


@pytest.mark.parametrize(("start", "months", "end"), [
    ("2026-01-15T10:00:00.000001Z", 6, "2026-07-15T10:00:00.000001Z"),
    ("2025-08-31T12:00:00.000000Z", 6, "2026-02-28T12:00:00.000000Z"),
    ("2023-08-31T12:00:00.000000Z", 6, "2024-02-29T12:00:00.000000Z"),
    ("2026-01-31T00:00:00.000000Z", 1, "2026-02-28T00:00:00.000000Z"),
    ("2026-10-31T23:59:59.999999Z", 3, "2027-01-31T23:59:59.999999Z"),
])
def test_months_are_calendar_months(start: str, months: int, end: str) -> None:
    assert format_ts(add_months(parse_ts(start), months)) == end


def day(text: str) -> int:
    return parse_ts(text + "T12:00:00Z") * 1000


def test_retention_removes_only_expired_signed_segments(open_log: LogFactory, log_dir: Path) -> None:
    clock = FakeClock(day("2026-01-10"))
    log = open_log(clock_ns=clock)
    for month, start in (("01", 0), ("02", 10), ("03", 20), ("04", 30)):
        clock.now = day(f"2026-{month}-10")
        write_records(log, 10, start=start)
    names = sorted(p.name for p in log_dir.glob("audit-*.jsonl"))
    assert len(names) == 4
    clock.now = day("2026-08-20")  # January and February are over six months old
    removed = log.enforce_retention()
    assert removed == names[:2]
    write_records(log, 1, start=40)
    log.close()
    # the retention record (seq 40) and r40 open August's segment
    assert sorted(p.name for p in log_dir.glob("audit-*.jsonl")) == names[2:] + [
        "audit-000000000040.jsonl"]
    lines = [json.loads(line) for p in sorted(log_dir.glob("audit-*.jsonl"))
             for line in p.read_bytes().splitlines()]
    (retention,) = [r for r in lines if r["event"] == "retention"]
    assert retention["segments"] == names[:2]
    assert (retention["from_seq"], retention["to_seq"], retention["checkpoint_tree_size"]) == (0, 19, 20)
    result = verify_log(log_dir)
    assert result.exit_code == 0, result
    assert any("removed by retention" in n for n in result.notes)
    # a record after the pruned prefix can still be proved against the latest checkpoint
    keyset = KeySet.load(log_dir / "signing-keys.json")
    bundle = prove(log_dir, "r25")
    assert check_proof(bundle["proofs"][0], keyset) is None


def test_nothing_young_or_current_is_removed(open_log: LogFactory, log_dir: Path) -> None:
    clock = FakeClock(day("2026-01-10"))
    log = open_log(clock_ns=clock)
    write_records(log, 5)
    clock.now = day("2030-01-01")
    assert log.enforce_retention() == []  # the only segment is the one being written
    clock.now = day("2026-01-11")
    write_records(log, 5, start=5)
    assert log.enforce_retention() == []  # too young
    log.close()


def test_a_segment_without_a_signed_boundary_stays(tmp_path: Path, open_log: LogFactory,
                                                   log_dir: Path) -> None:
    clock = FakeClock(day("2026-01-10"))
    log = open_log(clock_ns=clock)
    write_records(log, 5)
    clock.now = day("2026-02-10")
    write_records(log, 5, start=5)
    log.close()
    segments = [(int(p.name[6:18]), p) for p in sorted(log_dir.glob("audit-*.jsonl"))]
    now = parse_ts("2027-01-01T00:00:00Z")
    assert [s for s, _, _ in expired_prefix(segments, {5, 10}, now_us=now, months=6)] == [0]
    assert expired_prefix(segments, {10}, now_us=now, months=6) == []
