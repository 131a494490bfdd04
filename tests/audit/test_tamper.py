"""Every tampering the issue lists is detected by verify, naming the first bad seq."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from servecore.audit.canonical import encode
from servecore.audit.checkpoint import sign_checkpoint
from servecore.audit.keys import AuditKeys, KeySet, keygen
from servecore.audit.merkle import CompactTree, leaf_hash
from servecore.audit.records import parse_ts
from servecore.audit.verify import verify_log

from .conftest import FakeClock, LogFactory, write_records

N = 50


@pytest.fixture
def log_dir_50(open_log: LogFactory, log_dir: Path) -> Path:
    """A closed log of 50 records, checkpoints about every 10 and one at 50."""
    log = open_log(checkpoint_every=10)
    for start in range(0, N, 10):
        write_records(log, 10, start=start)
    log.close()
    assert verify_log(log_dir).exit_code == 0
    return log_dir


def segment(log_dir: Path) -> Path:
    (path,) = log_dir.glob("audit-*.jsonl")
    return path


def lines(log_dir: Path) -> list[bytes]:
    return segment(log_dir).read_bytes().splitlines()


def write_lines(log_dir: Path, new: list[bytes]) -> None:
    segment(log_dir).write_bytes(b"".join(line + b"\n" for line in new))


def rechain(records: list[dict[str, Any]], start: int) -> list[bytes]:
    """Re-encode records, recomputing every prev from *start* on (an attacker covering up)."""
    out: list[bytes] = []
    for i, record in enumerate(records):
        if i >= start and i > 0:
            record["prev"] = leaf_hash(out[-1]).hex()
        out.append(encode(record))
    return out


def check(log_dir: Path, bad_seq: int | None, match: str, **kwargs: Any) -> None:
    result = verify_log(log_dir, **kwargs)
    assert result.exit_code == 1, result
    assert result.first_bad_seq == bad_seq, result.errors
    assert any(match in e for e in result.errors), result.errors


def test_edited_record(log_dir_50: Path) -> None:
    old = lines(log_dir_50)
    old[20] = old[20].replace(b'"status":"ok"', b'"status":"no"')
    write_lines(log_dir_50, old)
    check(log_dir_50, 20, "seq 20 was altered")


def test_edited_and_rechained_record_is_caught_by_the_checkpoint(log_dir_50: Path) -> None:
    records = [json.loads(line) for line in lines(log_dir_50)]
    records[20]["status"] = "error"
    write_lines(log_dir_50, rechain(records, 21))
    result = verify_log(log_dir_50)
    assert result.exit_code == 1
    assert result.first_bad_seq is not None and result.first_bad_seq <= 20
    assert any("checkpoint" in e for e in result.errors)


def test_edited_last_record_is_named(log_dir_50: Path) -> None:
    old = lines(log_dir_50)
    old[-1] = old[-1].replace(b'"status":"ok"', b'"status":"no"')
    write_lines(log_dir_50, old)
    check(log_dir_50, N - 1, f"seq {N - 1} differs")


def test_non_canonical_edit(log_dir_50: Path) -> None:
    old = lines(log_dir_50)
    old[7] = old[7].replace(b'"status":"ok"', b'"status": "ok"')
    write_lines(log_dir_50, old)
    check(log_dir_50, 7, "canonical")


def test_deleted_record(log_dir_50: Path) -> None:
    old = lines(log_dir_50)
    del old[20]
    write_lines(log_dir_50, old)
    check(log_dir_50, 20, "seq 20 is missing")


def test_reordered_records(log_dir_50: Path) -> None:
    old = lines(log_dir_50)
    old[20], old[21] = old[21], old[20]
    write_lines(log_dir_50, old)
    check(log_dir_50, 20, "seq 20 is missing")


def test_inserted_record_renumbered(log_dir_50: Path) -> None:
    records = [json.loads(line) for line in lines(log_dir_50)]
    forged = {**records[20], "request_id": "forged", "seq": 21}
    for r in records[21:]:
        r["seq"] += 1
    records.insert(21, forged)
    new = [encode(r) for r in records]
    forged["prev"] = leaf_hash(new[20]).hex()  # the forged record links to 20 ...
    new[21] = encode(forged)  # ... and the records after it keep their prev
    write_lines(log_dir_50, new)
    check(log_dir_50, 21, "seq 21 was altered")


def test_inserted_record_with_a_duplicate_seq(log_dir_50: Path) -> None:
    old = lines(log_dir_50)
    old.insert(21, old[20])
    write_lines(log_dir_50, old)
    check(log_dir_50, 20, "seq 20 appears again")


def test_cut_tail_against_a_checkpoint(log_dir_50: Path) -> None:
    write_lines(log_dir_50, lines(log_dir_50)[:45])
    check(log_dir_50, 45, "cut tail")


def test_cut_tail_and_checkpoints_is_caught_by_the_anchor(
    open_log: LogFactory, log_dir: Path, tmp_path: Path
) -> None:
    anchor = tmp_path / "anchor"
    log = open_log(checkpoint_every=10, anchor_dir=anchor)
    for start in range(0, N, 10):
        write_records(log, 10, start=start)
    log.close()
    cps = (log_dir / "checkpoints.jsonl").read_bytes().splitlines()
    keep = [c for c in cps if json.loads(c)["tree_size"] <= 30]
    (log_dir / "checkpoints.jsonl").write_bytes(b"".join(c + b"\n" for c in keep))
    write_lines(log_dir, lines(log_dir)[:30])
    assert verify_log(log_dir).exit_code == 0  # alone, a consistent prefix looks intact
    result = verify_log(log_dir, anchors=[anchor])
    assert result.exit_code == 1 and result.first_bad_seq is not None
    assert any("missing from checkpoints.jsonl" in e for e in result.errors)
    assert any("cut tail" in e for e in result.errors)


def test_wrong_public_key(log_dir_50: Path, tmp_path: Path) -> None:
    keygen(tmp_path / "other")
    other = KeySet.load(tmp_path / "other" / "signing-keys.json")
    result = verify_log(log_dir_50, keyset=other)
    assert result.exit_code == 1
    assert any("unknown key" in e for e in result.errors)


def test_resigned_forgery_passes_only_against_its_own_keys(
    log_dir_50: Path, key_dir: Path, tmp_path: Path
) -> None:
    """An attacker rewrites the log, re-signs every checkpoint with a key of their own and swaps
    the key copy in the log directory: only the key set kept elsewhere catches it."""
    keygen(tmp_path / "evil", now_us=parse_ts("2000-01-01T00:00:00Z"))
    evil = AuditKeys(tmp_path / "evil")
    records = [json.loads(line) for line in lines(log_dir_50)]
    records[3]["status"] = "error"
    new = rechain(records, 4)
    write_lines(log_dir_50, new)
    tree = CompactTree()
    forged = []
    for old in (log_dir_50 / "checkpoints.jsonl").read_bytes().splitlines():
        cp = json.loads(old)
        while tree.size < cp["tree_size"]:
            tree.append(leaf_hash(new[tree.size]))
        forged.append(sign_checkpoint(
            evil.signing_key(parse_ts(cp["ts"])), origin=cp["origin"], tree_size=tree.size,
            root=tree.root(), last_hash=leaf_hash(new[tree.size - 1]).hex(),
            frontier=tree.frontier, ts_us=parse_ts(cp["ts"]), segment=cp["segment"],
            offset=cp["offset"],
        ).to_line())
    (log_dir_50 / "checkpoints.jsonl").write_bytes(b"".join(forged))
    (log_dir_50 / "signing-keys.json").write_bytes(evil.keyset_path.read_bytes())
    assert verify_log(log_dir_50).exit_code == 0
    genuine = KeySet.load(key_dir / "signing-keys.json")
    assert verify_log(log_dir_50, keyset=genuine).exit_code == 1


def test_bad_signature(log_dir_50: Path) -> None:
    path = log_dir_50 / "checkpoints.jsonl"
    cps = path.read_bytes().splitlines()
    cp = json.loads(cps[0])
    cp["root"] = "00" * 32  # changed after signing
    cps[0] = encode(cp)
    path.write_bytes(b"".join(c + b"\n" for c in cps))
    result = verify_log(log_dir_50)
    assert result.exit_code == 1
    assert any("bad signature" in e for e in result.errors)


def test_replayed_checkpoint(log_dir_50: Path) -> None:
    path = log_dir_50 / "checkpoints.jsonl"
    cps = path.read_bytes().splitlines()
    path.write_bytes(b"".join(c + b"\n" for c in cps + [cps[0]]))
    result = verify_log(log_dir_50)
    assert result.exit_code == 1
    assert any("replayed" in e for e in result.errors)


def test_forked_anchor(log_dir_50: Path, key_dir: Path, tmp_path: Path) -> None:
    """A second checkpoint of the same size with another root (a split view)."""
    anchor = tmp_path / "anchor"
    anchor.mkdir()
    cp = json.loads((log_dir_50 / "checkpoints.jsonl").read_bytes().splitlines()[-1])
    keys = AuditKeys(key_dir)
    tree = CompactTree()
    for i in range(cp["tree_size"]):
        tree.append(leaf_hash(b"other %d" % i))
    other = sign_checkpoint(
        keys.signing_key(parse_ts(cp["ts"])), origin=cp["origin"], tree_size=tree.size,
        root=tree.root(), last_hash=leaf_hash(b"x").hex(), frontier=tree.frontier,
        ts_us=parse_ts(cp["ts"]), segment=cp["segment"], offset=cp["offset"],
    )
    (anchor / "checkpoints.jsonl").write_bytes(other.to_line())
    result = verify_log(log_dir_50, anchors=[anchor])
    assert result.exit_code == 1
    assert any("forked" in e for e in result.errors)


def test_deleted_segment(open_log: LogFactory, log_dir: Path) -> None:
    log = open_log(segment_max_bytes=4000)
    for start in range(0, 100, 10):
        write_records(log, 10, start=start)
    log.close()
    segments = sorted(log_dir.glob("audit-*.jsonl"))
    assert len(segments) >= 3
    segments[1].unlink()
    missing = int(segments[1].name[6:18])
    check(log_dir, missing, "should start at seq")


def test_clock_going_back_is_a_warning(open_log: LogFactory, log_dir: Path) -> None:
    clock = FakeClock(parse_ts("2026-05-01T12:00:00Z") * 1000)
    log = open_log(clock_ns=clock)
    write_records(log, 5)
    clock.now -= 5 * 10**9
    write_records(log, 5, start=5)
    log.close()
    result = verify_log(log_dir)
    assert result.exit_code == 2, result
    assert any("clock went back" in w for w in result.warnings)


def test_unsigned_tail_is_a_note(open_log: LogFactory, log_dir: Path) -> None:
    log = open_log(checkpoint_every=10**6, checkpoint_interval_s=3600)
    write_records(log, 5)
    result = verify_log(log_dir)  # while the log is open: nothing signed yet
    assert result.exit_code == 2 and any("no signed checkpoint" in w for w in result.warnings)
    log.close()
    assert verify_log(log_dir).exit_code == 0
