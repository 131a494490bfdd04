"""``servecore audit``: keys, offline verification, inclusion proofs, erasure and export.

Attached to the main command with ``main.add_command(audit)``; until then (or standalone) run it
as ``python -m servecore.audit_cli ...``. Exit codes: 0 done (``verify``: intact), 1 failure
(``verify``: integrity failure), 2 usage error (``verify``: intact with warnings).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import NoReturn

import click

from servecore.audit.errors import AuditError

OK, FAILURE = 0, 1

_DIR = click.Path(file_okay=False, path_type=Path)
_EXISTING_DIR = click.Path(exists=True, file_okay=False, path_type=Path)


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(FAILURE)


def _time(value: str, option: str) -> int:
    from servecore.audit.records import parse_ts

    try:
        return parse_ts(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def audit() -> None:
    """Tamper-evident audit log: keys, verification, proofs, erasure, export."""


@audit.command()
@click.argument("key_dir", type=_DIR)
@click.option("--rotate", is_flag=True, help="Add a new signing key to an existing directory.")
@click.option("--valid-from", default=None, metavar="TIME",
              help="With --rotate: when the new key takes over (ISO 8601; default now).")
def keygen(key_dir: Path, rotate: bool, valid_from: str | None) -> None:
    """Create KEY_DIR with the log's keys (mode 0600): an Ed25519 signing key, the HMAC key for
    pseudonyms and digests, and signing-keys.json, the public keys verifiers need."""
    from servecore.audit.keys import KEYSET_FILE, rotate_signing_key
    from servecore.audit.keys import keygen as make_keys

    if valid_from is not None and not rotate:
        raise click.UsageError("--valid-from goes with --rotate")
    try:
        if rotate:
            start = _time(valid_from, "--valid-from") if valid_from else None
            key_id = rotate_signing_key(key_dir, valid_from_us=start)
        else:
            key_id = make_keys(key_dir)
    except AuditError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot write {key_dir}: {exc.strerror}")
    click.echo(f"signing key {key_id}; public keys in {key_dir / KEYSET_FILE}")


@audit.command()
@click.argument("directory", type=_EXISTING_DIR)
@click.option("--pubkey", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="The public key set (signing-keys.json or a PEM key) kept "
              "apart from the log (default: the copy in DIRECTORY).")
@click.option("--anchor", "anchors", multiple=True, type=_EXISTING_DIR,
              help="An anchor directory holding copies of the checkpoints (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def verify(directory: Path, pubkey: Path | None, anchors: tuple[Path, ...], as_json: bool) -> None:
    """Verify DIRECTORY: the hash chain, gap-free seqs, signed checkpoints and Merkle roots.

    Exit 0 when intact, 1 on an integrity failure (naming the first bad seq), 2 when intact
    with warnings (audit gaps, the clock going back, a torn last record).
    """
    from servecore.audit.keys import KeySet
    from servecore.audit.verify import verify_log

    try:
        keyset = KeySet.load(pubkey) if pubkey is not None else None
    except AuditError as exc:
        _fail(str(exc))
    result = verify_log(directory, keyset=keyset, anchors=anchors)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        span = "" if result.first_seq is None else f" (seq {result.first_seq}..{result.last_seq})"
        click.echo(f"{result.records} records{span}, {result.checkpoints_verified} checkpoints "
                   "verified")
        for note in result.notes:
            click.echo(f"note: {note}")
        for warning in result.warnings:
            click.echo(f"warning: {warning}")
        for error in result.errors:
            click.echo(f"error: {error}", err=True)
        if result.errors:
            click.echo(f"INTEGRITY FAILURE; first bad seq: {result.first_bad_seq}", err=True)
        else:
            click.echo("intact" + (" with warnings" if result.warnings else ""))
    sys.exit(result.exit_code)


@audit.command()
@click.argument("directory", type=_EXISTING_DIR)
@click.option("--request-id", required=True, help="The request id the server answered with.")
@click.option("--pubkey", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="The public key set (default: the copy in DIRECTORY).")
def prove(directory: Path, request_id: str, pubkey: Path | None) -> None:
    """Print the records of a request and their inclusion proofs against the latest signed
    checkpoint, as JSON (check one with servecore.audit.proof.check_proof)."""
    from servecore.audit.keys import KeySet
    from servecore.audit.proof import prove as make_proof

    try:
        keyset = KeySet.load(pubkey) if pubkey is not None else None
        bundle = make_proof(directory, request_id, keyset=keyset)
    except AuditError as exc:
        _fail(str(exc))
    click.echo(json.dumps(bundle, indent=2, sort_keys=True))


@audit.command()
@click.argument("directory", type=_EXISTING_DIR)
@click.option("--old", "old_size", required=True, type=click.IntRange(min=1),
              help="Tree size of the earlier checkpoint.")
@click.option("--new", "new_size", type=click.IntRange(min=1), default=None,
              help="Tree size of the later checkpoint (default: the latest).")
@click.option("--pubkey", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="The public key set (default: the copy in DIRECTORY).")
def consistency(directory: Path, old_size: int, new_size: int | None, pubkey: Path | None) -> None:
    """Print a consistency proof between two signed checkpoints, as JSON: the later tree extends
    the earlier one (check it with servecore.audit.proof.check_consistency)."""
    from servecore.audit.keys import KeySet
    from servecore.audit.proof import consistency as make_proof

    try:
        keyset = KeySet.load(pubkey) if pubkey is not None else None
        bundle = make_proof(directory, old_size, new_size, keyset=keyset)
    except AuditError as exc:
        _fail(str(exc))
    click.echo(json.dumps(bundle, indent=2, sort_keys=True))


@audit.command()
@click.argument("directory", type=_EXISTING_DIR)
@click.option("--subject", required=True, help="The data subject's id (as the server saw it).")
@click.option("--keys", "key_dir", required=True, type=_EXISTING_DIR, help="The key directory.")
@click.option("--legal-basis", default=None, help="Recorded with the erasure (e.g. 'GDPR 17(1)').")
def erase(directory: Path, subject: str, key_dir: Path, legal_basis: str | None) -> None:
    """Erase a data subject: destroy its payload key (its captured payloads become unreadable,
    the log still verifies) and append an erasure record to the log in DIRECTORY.

    If a server holds the log, the key is destroyed now and the server writes the record within
    a second or so.
    """
    from servecore.audit.config import AuditConfig
    from servecore.audit.errors import AuditLogLockedError
    from servecore.audit.keys import AuditKeys
    from servecore.audit.log import AuditLog
    from servecore.audit.spool import write_spool

    config = AuditConfig(directory=directory, key_dir=key_dir, fsync="always", retention_months=0)
    try:
        log = AuditLog(config)
    except AuditLogLockedError:
        try:  # destroy the key now; the server writes the record (see servecore.audit.spool)
            pid, generation = AuditKeys(key_dir).erase_subject(subject)
            write_spool(directory, pid, generation, legal_basis)
        except (AuditError, OSError) as exc:
            _fail(str(exc))
        state = "key destroyed" if generation else "no key held for this subject"
        click.echo(f"subject {pid[:16]}...: {state}; the running server will record the erasure")
        return
    except (AuditError, OSError) as exc:
        _fail(str(exc))
    try:
        future = log.erase_subject(subject, legal_basis=legal_basis)
        seq = future.result(timeout=60)
    except (AuditError, TimeoutError) as exc:
        _fail(f"the erasure could not be recorded: {exc}")
    finally:
        log.close()
    found = log.keys.subject_pid(subject)
    click.echo(f"subject {found[:16]}...: erasure recorded as seq {seq}")


@audit.command()
@click.argument("directory", type=_EXISTING_DIR)
@click.option("--from", "start", required=True, metavar="TIME", help="Start (ISO 8601, inclusive).")
@click.option("--to", "end", required=True, metavar="TIME", help="End (ISO 8601, exclusive).")
def export(directory: Path, start: str, end: str) -> None:
    """Print the records from --from up to --to as JSON lines (canonical, as stored)."""
    from servecore.audit.proof import export_records

    start_us, end_us = _time(start, "--from"), _time(end, "--to")
    if end_us <= start_us:
        raise click.BadParameter("must be after --from", param_hint="--to")
    out = sys.stdout.buffer
    try:
        for line in export_records(directory, start_us=start_us, end_us=end_us):
            out.write(line + b"\n")
    except OSError as exc:
        _fail(f"cannot read {directory}: {exc.strerror}")
    out.flush()


if __name__ == "__main__":
    audit()
