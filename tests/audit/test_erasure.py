"""Payload capture sealed per subject, and erasure by crypto-shredding."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from servecore.audit import ModelRef, inference_event
from servecore.audit.errors import AuditKeyError
from servecore.audit.keys import AuditKeys
from servecore.audit.payload import ERASED, encrypt_payload, read_payload
from servecore.audit.verify import verify_log

from .conftest import LogFactory, run_cli


def records(log_dir: Path) -> list[dict[str, object]]:
    out = []
    for path in sorted(log_dir.glob("audit-*.jsonl")):
        out += [json.loads(line) for line in path.read_bytes().splitlines()]
    return out


def test_payload_round_trip_and_tamper(key_dir: Path) -> None:
    keys = AuditKeys(key_dir)
    sealed = encrypt_payload(keys, "subject-1", b'{"inputs": [1, 2, 3]}')
    assert sealed["kid"] == keys.subject_pid("subject-1") and "subject-1" not in json.dumps(sealed)
    assert read_payload(keys, sealed) == b'{"inputs": [1, 2, 3]}'
    other = encrypt_payload(keys, "subject-2", b"x")
    with pytest.raises(AuditKeyError, match="altered"):
        read_payload(keys, {**sealed, "ct": other["ct"]})
    with pytest.raises(AuditKeyError, match="altered"):
        read_payload(keys, {**sealed, "nonce": other["nonce"]})
    with pytest.raises(AuditKeyError, match="not a payload"):
        read_payload(keys, {"alg": "A256GCM"})


def test_huge_payload_is_capped_on_record(key_dir: Path) -> None:
    keys = AuditKeys(key_dir)
    sealed = encrypt_payload(keys, "s", b"x" * 10_000, max_bytes=100)
    assert sealed["truncated_from"] == 10_000
    assert read_payload(keys, sealed) == b"x" * 100


def test_erasure_makes_payloads_unreadable_and_the_log_still_verifies(
    open_log: LogFactory, log_dir: Path
) -> None:
    log = open_log()
    model = ModelRef("mlp", "1")
    for n, subject in enumerate(("alice", "bob")):
        log.submit(inference_event(
            request_id=f"req-{n}", model=model, status="ok",
            subject_pid=log.keys.subject_pid(subject),
            input_digest=log.digest(b"row", subject=subject),
            input_payload=log.encrypt_payload(subject, f"payload of {subject}".encode()),
        ))
    seq = log.erase_subject("alice", legal_basis="GDPR Art. 17(1)").result(timeout=10)
    again = log.erase_subject("alice").result(timeout=10)  # double erasure: recorded, no error
    unknown = log.erase_subject("nobody").result(timeout=10)
    log.close()
    got = records(log_dir)
    by_request = {r.get("request_id"): r for r in got}
    alice = by_request["req-0"]["input"]["payload"]  # type: ignore[index]
    bob = by_request["req-1"]["input"]["payload"]  # type: ignore[index]
    assert read_payload(log.keys, alice) == ERASED
    assert read_payload(log.keys, bob) == b"payload of bob"
    erasures = {r["seq"]: r for r in got if r["event"] == "erasure"}
    assert erasures[seq]["found"] is True and erasures[seq]["legal_basis"] == "GDPR Art. 17(1)"
    assert erasures[seq]["subject"] == {"pid": log.keys.subject_pid("alice")}
    assert erasures[again]["found"] is False and erasures[unknown]["found"] is False
    assert "alice" not in (log_dir / "audit-000000000000.jsonl").read_text()
    result = verify_log(log_dir)
    assert result.exit_code == 0 and any("3 erasure records" in n for n in result.notes)


def test_new_payloads_after_erasure_use_a_new_key(key_dir: Path) -> None:
    keys = AuditKeys(key_dir)
    old = encrypt_payload(keys, "carol", b"before")
    keys.erase_subject("carol")
    new = encrypt_payload(keys, "carol", b"after")
    assert new["gen"] != old["gen"]
    assert read_payload(keys, old) == ERASED and read_payload(keys, new) == b"after"


def test_cli_erase_while_a_server_holds_the_log(
    open_log: LogFactory, log_dir: Path, key_dir: Path
) -> None:
    log = open_log()
    sealed = log.encrypt_payload("dave", b"secret")
    log.submit(inference_event(request_id="r-dave", model=ModelRef("m"), status="ok",
                               input_payload=sealed))
    done = run_cli("erase", str(log_dir), "--subject", "dave", "--keys", str(key_dir))
    assert done.returncode == 0, done.stderr
    assert "running server will record" in done.stdout
    assert read_payload(log.keys, sealed) == ERASED  # the key is gone at once
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(
        r["event"] == "erasure" for r in records(log_dir)
    ):
        time.sleep(0.1)
    (erasure,) = [r for r in records(log_dir) if r["event"] == "erasure"]
    assert erasure["via"] == "cli" and erasure["found"] is True
    time.sleep(0.2)
    assert not list((log_dir / "erasures.pending").iterdir())
    log.close()
    assert verify_log(log_dir).exit_code == 0
