"""Key directory: permissions, pseudonyms, keyed digests, per-subject keys, rotation."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from servecore.audit.errors import AuditKeyError
from servecore.audit.keys import AuditKeys, KeySet, keygen, rotate_signing_key
from servecore.audit.records import parse_ts
from servecore.audit.verify import verify_log

from .conftest import LogFactory, write_records


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_keygen_writes_secrets_0600(tmp_path: Path) -> None:
    key_id = keygen(tmp_path / "k")
    assert mode(tmp_path / "k") == 0o700
    assert mode(tmp_path / "k" / "hmac.key") == 0o600
    assert mode(tmp_path / "k" / "signing" / f"{key_id}.pem") == 0o600
    keyset = KeySet.load(tmp_path / "k" / "signing-keys.json")
    assert list(keyset.keys) == [key_id]


def test_keygen_refuses_to_overwrite(key_dir: Path) -> None:
    with pytest.raises(AuditKeyError, match="already"):
        keygen(key_dir)


def test_missing_keys_are_reported(tmp_path: Path) -> None:
    with pytest.raises(AuditKeyError, match="keygen"):
        AuditKeys(tmp_path)


def test_pseudonyms_stable_per_key_different_across_keys(tmp_path: Path) -> None:
    keygen(tmp_path / "a")
    keygen(tmp_path / "b")
    a, a_again, b = AuditKeys(tmp_path / "a"), AuditKeys(tmp_path / "a"), AuditKeys(tmp_path / "b")
    assert a.pseudonym("alice") == a_again.pseudonym("alice")
    assert a.pseudonym("alice") != b.pseudonym("alice")
    assert a.pseudonym("alice") != a.pseudonym("bob")
    assert a.pseudonym("alice") != a.pseudonym("alice", purpose="subject")
    assert len(a.pseudonym("alice")) == 64 and "alice" not in a.pseudonym("alice")
    assert a.digest(b"x") == a_again.digest(b"x") != b.digest(b"x")


def test_subject_keys_do_not_name_the_subject(key_dir: Path) -> None:
    keys = AuditKeys(key_dir)
    generation, key = keys.subject_key("jane.doe@example.org", create=True)
    assert keys.subject_key("jane.doe@example.org", create=False) == (generation, key)
    files = list((key_dir / "subjects").iterdir())
    assert [f.name for f in files] == [f"{keys.subject_pid('jane.doe@example.org')}.key"]
    assert mode(files[0]) == 0o600
    assert b"jane" not in files[0].read_bytes()
    # a digest under a subject's key changes once the subject is erased (unlinked)
    before = keys.digest(b"row", subject="jane.doe@example.org")
    assert before != keys.digest(b"row")
    _, erased = keys.erase_subject("jane.doe@example.org")
    assert erased == generation.hex() and not files[0].exists()
    assert keys.digest(b"row", subject="jane.doe@example.org") != before
    assert keys.erase_subject("nobody")[1] is None


def test_rotation_validity_and_selection(key_dir: Path) -> None:
    keys = AuditKeys(key_dir)
    first = keys.signing_key(parse_ts("2030-01-01T00:00:00Z")).key_id
    switch = parse_ts("2031-01-01T00:00:00Z")
    second = rotate_signing_key(key_dir, valid_from_us=switch)
    assert keys.reload()
    assert keys.signing_key(switch - 1).key_id == first
    assert keys.signing_key(switch).key_id == second
    old = keys.keyset.get(first)
    assert old is not None and old.not_after == switch and not old.valid_at(switch)


def test_verify_accepts_a_key_set_across_rotation(open_log: LogFactory, key_dir: Path,
                                                   log_dir: Path) -> None:
    log = open_log(checkpoint_every=10)
    write_records(log, 25)
    rotate_signing_key(key_dir)
    write_records(log, 25, start=25)
    log.close()
    result = verify_log(log_dir, keyset=KeySet.load(key_dir / "signing-keys.json"))
    assert result.exit_code == 0, result.errors
    lines = [line for p in sorted(log_dir.glob("audit-*.jsonl")) for line in p.read_bytes().splitlines()]
    assert sum(b'"event":"key_rotation"' in line for line in lines) == 1
    ids = {line.split(b'"key_id":"')[1][:8] for line in (log_dir / "checkpoints.jsonl").read_bytes().splitlines()}
    assert len(ids) == 2
    # the verifier holding only the first key set rejects the checkpoints of the new key
    only_first = KeySet([k for k in KeySet.load(key_dir / "signing-keys.json").keys.values()
                         if k.not_after is not None])
    assert verify_log(log_dir, keyset=only_first).exit_code == 1


def test_pem_public_key_file(open_log: LogFactory, key_dir: Path, log_dir: Path, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    log = open_log()
    write_records(log, 5)
    log.close()
    keyset = KeySet.load(key_dir / "signing-keys.json")
    (key,) = keyset.keys.values()
    pem = key.public.public_bytes(serialization.Encoding.PEM,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "pub.pem").write_bytes(pem)
    assert verify_log(log_dir, keyset=KeySet.load(tmp_path / "pub.pem")).exit_code == 0


def test_keyset_file_is_checked(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text('{"keys": [{"public_key": "!!"}]}')
    with pytest.raises(AuditKeyError, match="not a valid key set"):
        KeySet.load(tmp_path / "bad.json")
    os.chmod(tmp_path, 0o700)
