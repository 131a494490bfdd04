"""Inclusion and consistency proofs, and exports by time range.

:func:`prove` finds the records of a request id and proves each against the latest signed
checkpoint that covers it (RFC 6962 inclusion path, leaf side first, hex). The bundle carries the
record, its seq, the checkpoint (with signature) and the path, so :func:`check_proof` can verify
it with nothing but the public keys: re-encode the record canonically, hash it as a leaf, fold the
path up to the signed root. :func:`consistency` proves that a later checkpoint extends an earlier
one (what a witness holding only the earlier checkpoint checks with :func:`check_consistency`).
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
from servecore.audit.merkle import (
    RangeHasher,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
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


class _Loaded:
    """The signed checkpoints and leaf hashes of a log directory."""

    def __init__(self, directory: Path, keyset: KeySet | None, request_id: str | None = None):
        keyset = keyset if keyset is not None else KeySet.load(directory / KEYSET_COPY)
        self.checkpoints = [cp for cp in read_checkpoints(directory / CHECKPOINTS).checkpoints
                            if cp.check(keyset) is None]
        if not self.checkpoints:
            raise ProofError(f"{directory} has no validly signed checkpoint")
        segments = list_segments(directory)
        base = segments[0][0] if segments else 0
        base_cp = next((cp for cp in self.checkpoints if cp.tree_size == base), None)
        if base and base_cp is None:
            raise ProofError(f"no checkpoint at seq {base}, where the remaining log starts")
        needle = None if request_id is None else (
            f'"request_id":{encode(request_id).decode()}'.encode())
        leaves: list[bytes] = []
        self.found: list[tuple[int, dict[str, Any]]] = []
        for seq, line in _records(directory):
            if seq != base + len(leaves):
                raise ProofError(f"the log is not contiguous at seq {seq}; run verify")
            leaves.append(leaf_hash(line))
            if needle is not None and needle in line:
                try:
                    record = parse_record(line)
                except CanonicalError as exc:
                    raise ProofError(f"seq {seq} is not a valid record: {exc}") from None
                if record.get("request_id") == request_id:
                    self.found.append((seq, record))
        frontier = [bytes.fromhex(h) for h in base_cp.frontier] if base_cp else []
        self.hasher = RangeHasher(leaves, base=base, base_frontier=frontier)
        self.latest = max(self.checkpoints, key=lambda cp: cp.tree_size)
        if self.latest.tree_size > self.hasher.size:
            raise ProofError(f"the latest checkpoint signs {self.latest.tree_size} records but "
                             f"the log holds {self.hasher.size}; run verify")

    def signed(self, size: int) -> Checkpoint:
        """The checkpoint of tree size *size*, checked against the records."""
        cp = next((c for c in self.checkpoints if c.tree_size == size), None)
        if cp is None:
            raise ProofError(f"no signed checkpoint of tree size {size}")
        try:
            root = self.hasher(0, size)
        except LookupError:
            raise ProofError(f"the records under tree size {size} were removed") from None
        if root.hex() != cp.root:
            raise ProofError(f"the records differ from the checkpoint of tree size {size}; "
                             "run verify")
        return cp


def prove(directory: Path, request_id: str, *, keyset: KeySet | None = None) -> dict[str, Any]:
    """Inclusion proofs of every record with *request_id* (``{"request_id", "proofs": [...]}``)."""
    log = _Loaded(Path(directory), keyset, request_id)
    if not log.found:
        raise ProofError(f"no record with request id {request_id!r}")
    latest = log.signed(log.latest.tree_size)
    proofs = []
    for seq, record in log.found:
        if seq >= latest.tree_size:
            raise ProofError(f"seq {seq} is not signed yet (latest checkpoint: tree size "
                             f"{latest.tree_size}); try again after the next checkpoint")
        path = inclusion_proof(seq, latest.tree_size, log.hasher)
        proofs.append({
            "seq": seq,
            "record": record,
            "leaf_hash": log.hasher(seq, seq + 1).hex(),
            "tree_size": latest.tree_size,
            "inclusion_path": [h.hex() for h in path],
            "checkpoint": asdict(latest),
        })
    return {"request_id": request_id, "proofs": proofs}


def consistency(
    directory: Path, old_size: int, new_size: int | None = None, *, keyset: KeySet | None = None
) -> dict[str, Any]:
    """A consistency proof between two signed checkpoints (*new_size* defaults to the latest):
    the tree of *old_size* is a prefix of the tree of *new_size*, nothing rewritten or dropped."""
    log = _Loaded(Path(directory), keyset)
    new_size = log.latest.tree_size if new_size is None else new_size
    old, new = log.signed(old_size), log.signed(new_size)
    if old_size > new_size:
        raise ProofError(f"the old tree size {old_size} is larger than the new {new_size}")
    try:
        path = consistency_proof(old_size, new_size, log.hasher)
    except LookupError:
        raise ProofError(f"records needed for the proof from {old_size} were removed") from None
    return {"old": asdict(old), "new": asdict(new), "consistency_path": [h.hex() for h in path]}


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


def check_consistency(bundle: Mapping[str, Any], keyset: KeySet) -> str | None:
    """None if a bundle of :func:`consistency` holds under *keyset*, else what is wrong."""
    try:
        old, new = Checkpoint(**bundle["old"]), Checkpoint(**bundle["new"])
        path = [bytes.fromhex(h) for h in bundle["consistency_path"]]
    except (KeyError, TypeError, ValueError) as exc:
        return f"not a consistency proof: {exc}"
    for label, cp in (("old", old), ("new", new)):
        problem = cp.check(keyset)
        if problem is not None:
            return f"{label} checkpoint: {problem}"
    if not verify_consistency(old.tree_size, new.tree_size, bytes.fromhex(old.root),
                              bytes.fromhex(new.root), path):
        return "the new checkpoint does not extend the old one"
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
