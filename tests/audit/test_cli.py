"""``servecore audit`` commands, run as a subprocess (``python -m servecore.audit_cli``)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from servecore.audit.keys import KeySet
from servecore.audit.proof import check_consistency, check_proof
from servecore.audit.records import parse_ts

from .conftest import FakeClock, LogFactory, run_cli, write_records


def make_log(open_log: LogFactory, n: int = 30) -> None:
    log = open_log(checkpoint_every=10)
    for start in range(0, n, 10):
        write_records(log, 10, start=start)
    log.close()


def test_keygen(tmp_path: Path) -> None:
    done = run_cli("keygen", str(tmp_path / "keys"))
    assert done.returncode == 0, done.stderr
    assert "signing key" in done.stdout
    assert stat.S_IMODE((tmp_path / "keys" / "hmac.key").stat().st_mode) == 0o600
    again = run_cli("keygen", str(tmp_path / "keys"))
    assert again.returncode == 1 and again.stderr.startswith("error: ")
    rotated = run_cli("keygen", str(tmp_path / "keys"), "--rotate")
    assert rotated.returncode == 0, rotated.stderr
    assert len(KeySet.load(tmp_path / "keys" / "signing-keys.json").keys) == 2
    assert run_cli("keygen", str(tmp_path / "k2"), "--valid-from", "2030-01-01").returncode == 2


def test_verify_exit_codes(open_log: LogFactory, log_dir: Path, key_dir: Path) -> None:
    make_log(open_log)
    ok = run_cli("verify", str(log_dir), "--pubkey", str(key_dir / "signing-keys.json"))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "30 records" in ok.stdout and "intact" in ok.stdout
    report = json.loads(run_cli("verify", str(log_dir), "--json").stdout)
    assert report["exit_code"] == 0 and report["records"] == 30
    segment = next(log_dir.glob("audit-*.jsonl"))
    lines = segment.read_bytes().splitlines()
    del lines[12]
    segment.write_bytes(b"".join(line + b"\n" for line in lines))
    bad = run_cli("verify", str(log_dir))
    assert bad.returncode == 1
    assert "first bad seq: 12" in bad.stderr and "seq 12 is missing" in bad.stderr


def test_verify_warnings_exit_2(open_log: LogFactory, log_dir: Path) -> None:
    clock = FakeClock(parse_ts("2026-05-01T12:00:00Z") * 1000)
    log = open_log(clock_ns=clock)
    write_records(log, 3)
    clock.now -= 60 * 10**9
    write_records(log, 3, start=3)
    log.close()
    done = run_cli("verify", str(log_dir))
    assert done.returncode == 2 and "warning: seq 3: the clock went back" in done.stdout


def test_verify_with_a_wrong_key(open_log: LogFactory, log_dir: Path, tmp_path: Path) -> None:
    make_log(open_log)
    assert run_cli("keygen", str(tmp_path / "other")).returncode == 0
    done = run_cli("verify", str(log_dir), "--pubkey", str(tmp_path / "other" / "signing-keys.json"))
    assert done.returncode == 1 and "unknown key" in done.stderr


def test_prove(open_log: LogFactory, log_dir: Path, key_dir: Path) -> None:
    make_log(open_log)
    done = run_cli("prove", str(log_dir), "--request-id", "r17")
    assert done.returncode == 0, done.stderr
    bundle = json.loads(done.stdout)
    (proof,) = bundle["proofs"]
    assert proof["seq"] == 17 and proof["record"]["request_id"] == "r17"
    keyset = KeySet.load(key_dir / "signing-keys.json")
    assert check_proof(proof, keyset) is None
    proof["record"]["status"] = "error"
    assert check_proof(proof, keyset) == "the inclusion path does not lead to the signed root"
    missing = run_cli("prove", str(log_dir), "--request-id", "nope")
    assert missing.returncode == 1 and "no record with request id" in missing.stderr


def test_erase_with_the_log_closed(open_log: LogFactory, log_dir: Path, key_dir: Path) -> None:
    log = open_log()
    log.encrypt_payload("erin", b"secret")
    log.close()
    done = run_cli("erase", str(log_dir), "--subject", "erin", "--keys", str(key_dir),
                   "--legal-basis", "GDPR Art. 17(1)(a)")
    assert done.returncode == 0, done.stderr
    assert "erasure recorded as seq 0" in done.stdout
    assert "erin" not in done.stdout
    assert run_cli("verify", str(log_dir)).returncode == 0


def test_export_by_time(open_log: LogFactory, log_dir: Path) -> None:
    clock = FakeClock(parse_ts("2026-05-01T10:00:00Z") * 1000)
    log = open_log(clock_ns=clock)
    for hour, start in ((10, 0), (11, 5), (12, 10)):
        clock.now = parse_ts(f"2026-05-01T{hour}:00:00Z") * 1000
        write_records(log, 5, start=start)
    log.close()
    done = run_cli("export", str(log_dir), "--from", "2026-05-01T11:00:00Z",
                   "--to", "2026-05-01T12:00:00+00:00")
    assert done.returncode == 0, done.stderr
    exported = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["request_id"] for r in exported] == [f"r{i}" for i in range(5, 10)]
    assert run_cli("export", str(log_dir), "--from", "yesterday", "--to", "x").returncode == 2


def test_consistency(open_log: LogFactory, log_dir: Path, key_dir: Path) -> None:
    make_log(open_log)
    sizes = [json.loads(line)["tree_size"]
             for line in (log_dir / "checkpoints.jsonl").read_bytes().splitlines()]
    assert len(sizes) >= 2
    done = run_cli("consistency", str(log_dir), "--old", str(sizes[0]))
    assert done.returncode == 0, done.stderr
    bundle = json.loads(done.stdout)
    assert (bundle["old"]["tree_size"], bundle["new"]["tree_size"]) == (sizes[0], sizes[-1])
    keyset = KeySet.load(key_dir / "signing-keys.json")
    assert check_consistency(bundle, keyset) is None
    bundle["consistency_path"][0] = "00" * 32
    assert check_consistency(bundle, keyset) == "the new checkpoint does not extend the old one"
    unsigned = run_cli("consistency", str(log_dir), "--old", str(sizes[0] + 1))
    assert unsigned.returncode == 1 and "no signed checkpoint" in unsigned.stderr
