"""Start-up recovery: torn tails are cut and recorded; SIGKILL under load loses no answered record."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from servecore.audit.errors import AuditCorruptError
from servecore.audit.verify import verify_log

from .conftest import LogFactory, write_records


def all_records(log_dir: Path) -> list[dict[str, object]]:
    out = []
    for path in sorted(log_dir.glob("audit-*.jsonl")):
        out += [json.loads(line) for line in path.read_bytes().splitlines()]
    return out


def only_segment(log_dir: Path) -> Path:
    (path,) = log_dir.glob("audit-*.jsonl")
    return path


@pytest.mark.parametrize("tail", [
    b'{"caller":{"principal":null},"error_co',   # half a record
    b"\x00" * 300,                                 # zeros a crash can leave
    b'{"not":"a record"}\n\x00\x00',              # a complete line that is no record, then junk
])
def test_torn_tail_is_cut_and_recorded(open_log: LogFactory, log_dir: Path, tail: bytes) -> None:
    log = open_log()
    write_records(log, 10)
    log.close()
    with open(only_segment(log_dir), "ab") as f:
        f.write(tail)
    assert verify_log(log_dir).exit_code != 0
    log = open_log()
    write_records(log, 3, start=10)
    log.close()
    records = all_records(log_dir)
    recovery = [r for r in records if r["event"] == "recovery"]
    assert len(recovery) == 1
    assert recovery[0]["truncated_bytes"] == len(tail)
    assert recovery[0]["seq"] == 10 and recovery[0]["last_seq"] == 9
    assert [r["seq"] for r in records] == list(range(14))
    result = verify_log(log_dir)
    assert result.exit_code == 0, result
    assert any("recovery" in n for n in result.notes)


def test_torn_checkpoint_line_is_cut(open_log: LogFactory, log_dir: Path) -> None:
    log = open_log()
    write_records(log, 10)
    log.close()
    with open(log_dir / "checkpoints.jsonl", "ab") as f:
        f.write(b'{"frontier":["ab')
    log = open_log()
    log.close()
    (recovery,) = [r for r in all_records(log_dir) if r["event"] == "recovery"]
    assert recovery["checkpoint_truncated_bytes"] == 16
    assert verify_log(log_dir).exit_code == 0


def test_crash_before_signing_is_recovered(log_dir: Path, key_dir: Path) -> None:
    script = textwrap.dedent("""
        import os, sys
        from pathlib import Path
        from servecore.audit import AuditConfig
        from servecore.audit.log import AuditLog
        log = AuditLog(AuditConfig(directory=Path(sys.argv[1]), key_dir=Path(sys.argv[2]),
                                   checkpoint_every=10**6, checkpoint_interval_s=3600))
        for i in range(20):
            log.submit({"event": "inference", "request_id": f"r{i}"})
        log.submit_durable({"event": "inference", "request_id": "last"}).result()
        os._exit(0)  # no close: nothing signed
    """)
    subprocess.run([sys.executable, "-c", script, str(log_dir), str(key_dir)], check=True, timeout=60)
    assert not (log_dir / "checkpoints.jsonl").read_bytes()
    from servecore.audit import AuditConfig
    from servecore.audit.log import AuditLog

    AuditLog(AuditConfig(directory=log_dir, key_dir=key_dir)).close()
    (recovery,) = [r for r in all_records(log_dir) if r["event"] == "recovery"]
    assert recovery["unsigned_records"] == 21 and recovery["truncated_bytes"] == 0
    assert verify_log(log_dir).exit_code == 0


def test_invalid_record_in_the_middle_is_not_repaired(open_log: LogFactory, log_dir: Path) -> None:
    log = open_log(checkpoint_every=10**6, checkpoint_interval_s=3600)
    write_records(log, 10)
    log.close()
    path = only_segment(log_dir)
    lines = path.read_bytes().splitlines()
    # the last checkpoint (at close) covers all 10; damage a record after a fresh start instead
    lines[5] = b"garbage"
    (log_dir / "checkpoints.jsonl").write_bytes(b"")
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    with pytest.raises(AuditCorruptError, match="followed by valid ones"):
        open_log()
    assert path.read_bytes().count(b"\n") == 10  # nothing was cut


def test_records_missing_under_a_checkpoint_refuse_to_open(open_log: LogFactory, log_dir: Path) -> None:
    log = open_log(checkpoint_every=5)
    write_records(log, 10)
    log.close()
    path = only_segment(log_dir)
    path.write_bytes(b"".join(line + b"\n" for line in path.read_bytes().splitlines()[:4]))
    with pytest.raises(AuditCorruptError, match="shorter than the last checkpoint"):
        open_log()


CHILD = textwrap.dedent("""
    import sys, threading
    from pathlib import Path
    from servecore.audit import AuditConfig, ModelRef, inference_event
    from servecore.audit.log import AuditLog

    log = AuditLog(AuditConfig(directory=Path(sys.argv[1]), key_dir=Path(sys.argv[2]),
                               fsync="always", checkpoint_every=100, segment_max_bytes=50_000))
    model = ModelRef("mlp", "1", "ab" * 32)
    out = threading.Lock()

    def serve(t):
        i = 0
        while True:
            rid = f"t{t}-{i}"
            seq = log.submit_durable(inference_event(request_id=rid, model=model, status="ok")).result()
            with out:  # the answer goes out only once its record is durable
                sys.stdout.write(f"{rid} {seq}\\n")
                sys.stdout.flush()
            i += 1

    for t in range(8):
        threading.Thread(target=serve, args=(t,), daemon=True).start()
    threading.Event().wait()
""")


def test_sigkill_under_load_loses_no_answered_record(log_dir: Path, key_dir: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(log_dir), str(key_dir)],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    answered: dict[str, int] = {}
    deadline = time.monotonic() + 60
    while len(answered) < 2000 and time.monotonic() < deadline:
        line = child.stdout.readline()
        if not line:
            break
        rid, seq = line.split()
        answered[rid] = int(seq)
    os.kill(child.pid, signal.SIGKILL)
    rest, _ = child.communicate(timeout=30)
    for line in rest.splitlines():
        if line.count(" ") == 1:  # a line cut by the kill is not an answer
            rid, seq = line.split()
            answered[rid] = int(seq)
    assert child.returncode == -signal.SIGKILL
    assert len(answered) >= 500

    from servecore.audit import AuditConfig
    from servecore.audit.log import AuditLog

    AuditLog(AuditConfig(directory=log_dir, key_dir=key_dir)).close()  # restart
    result = verify_log(log_dir)
    assert result.exit_code == 0, result
    by_id = {r.get("request_id"): r["seq"] for r in all_records(log_dir)}
    missing = [rid for rid in answered if rid not in by_id]
    assert not missing, f"{len(missing)} answered requests have no record"
    assert all(by_id[rid] == seq for rid, seq in answered.items())
