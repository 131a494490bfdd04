"""Inclusion proofs for single records, and exports by time range.

:func:`prove` finds the records of a request id and proves each against the latest signed
checkpoint that covers it (RFC 6962 inclusion path, leaf side first, hex). The bundle carries the
record, its seq, the checkpoint (with signature) and the path, so :func:`check_proof` can verify
it with nothing but the public keys: re-encode the record canonically, hash it as a leaf, fold the
path up to the signed root.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from servecore.audit.canonical import encode
from servecore.audit.checkpoint import Checkpoint, read_checkpoints
from servecore.audit.errors import AuditError, CanonicalError
from servecore.audit.keys import KeySet
from servecore.audit.merkle import RangeHasher, inclusion_proof, leaf_hash, verify_inclusion
from servecore.audit.records import (
    CHECKPOINTS,
    KEYSET_COPY,
    list_segments,
    parse_record,
    parse_ts,
    split_lines,
)


class ProofError(AuditError):
    """No proof can be given (no such request, nothing signed yet, a damaged log)."""


def _records(directory: Path) -> Iterator[tuple[int, bytes]]:
    """(seq, line) of every complete record, in order (seq taken from the position)."""
    segments = list_segments(directory)
    for first_seq, path in segments:
        lines, _ = split_lines(path.read_bytes())
        for index, (_, line) in enumerate(lines):
            yield first_seq + index, line


def prove(directory: Path, request_id: str, *, keyset: KeySet | None = None) -> dict[str, Any]:
    """Inclusion proofs of every record with *request_id* (``{"request_id", "proofs": [...]}``)."""
    directory = Path(directory)
    keyset = keyset if keyset is not None else KeySet.load(directory / KEYSET_COPY)
    checkpoints = [cp for cp in read_checkpoints(directory / CHECKPOINTS).checkpoints
                   if cp.check(keyset) is None]
    if not checkpoints:
        raise ProofError(f"{directory} has no validly signed checkpoint")
    segments = list_segments(directory)
    base = segments[0][0] if segments else 0
    base_cp = next((cp for cp in checkpoints if cp.tree_size == base), None)
    if base and base_cp is None:
        raise ProofError(f"no checkpoint at seq {base}, where the remaining log starts")
    needle = f'"request_id":{encode(request_id).decode()}'.encode()
    leaves: list[bytes] = []
    found: list[tuple[int, dict[str, Any]]] = []
    for seq, line in _records(directory):
        if seq != base + len(leaves):
            raise ProofError(f"the log is not contiguous at seq {seq}; run verify")
        leaves.append(leaf_hash(line))
        if needle in line:
            try:
                record = parse_record(line)
            except CanonicalError as exc:
                raise ProofError(f"seq {seq} is not a valid record: {exc}") from None
            if record.get("request_id") == request_id:
                found.append((seq, record))
    if not found:
        raise ProofError(f"no record with request id {request_id!r}")
    hasher = RangeHasher(leaves, base=base,
                         base_frontier=[bytes.fromhex(h) for h in base_cp.frontier] if base_cp else [])
    latest = max(checkpoints, key=lambda cp: cp.tree_size)
    if latest.tree_size > hasher.size:
        raise ProofError(f"the latest checkpoint signs {latest.tree_size} records but the log "
                         f"holds {hasher.size}; run verify")
    if hasher(0, latest.tree_size).hex() != latest.root:
        raise ProofError(f"the records differ from the checkpoint of tree size "
                         f"{latest.tree_size}; run verify")
    proofs = []
    for seq, record in found:
        if seq >= latest.tree_size:
            raise ProofError(f"seq {seq} is not signed yet (latest checkpoint: tree size "
                             f"{latest.tree_size}); try again after the next checkpoint")
        path = inclusion_proof(seq, latest.tree_size, hasher)
        proofs.append({
            "seq": seq,
            "record": record,
            "leaf_hash": leaves[seq - base].hex(),
            "tree_size": latest.tree_size,
            "inclusion_path": [h.hex() for h in path],
            "checkpoint": asdict(latest),
        })
    return {"request_id": request_id, "proofs": proofs}


def check_proof(proof: Mapping[str, Any], keyset: KeySet) -> str | None:
    """None if one proof of :func:`prove` holds under *keyset*, else what is wrong."""
    try:
        cp = Checkpoint(**proof["checkpoint"])
        problem = cp.check(keyset)
        if problem is not None:
            return f"checkpoint: {problem}"
        leaf = leaf_hash(encode(proof["record"]))
        path = [bytes.fromhex(h) for h in proof["inclusion_path"]]
        seq = proof["record"]["seq"]
        if proof["seq"] != seq or proof["tree_size"] != cp.tree_size:
            return "the proof's seq or tree size does not match"
    except (KeyError, TypeError, ValueError) as exc:
        return f"not a proof: {exc}"
    if not verify_inclusion(seq, cp.tree_size, leaf, path, bytes.fromhex(cp.root)):
        return "the inclusion path does not lead to the signed root"
    return None


def export_records(directory: Path, *, start_us: int, end_us: int) -> Iterator[bytes]:
    """The canonical lines of the records with ``start_us <= ts < end_us``, in seq order."""
    for _, line in _records(Path(directory)):
        try:
            ts = parse_ts(parse_record(line)["ts"])
        except (CanonicalError, ValueError):
            continue  # verify reports these; an export carries only well-formed records
        if start_us <= ts < end_us:
            yield line
