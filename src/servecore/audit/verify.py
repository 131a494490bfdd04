"""Offline verification of an audit log directory.

:func:`verify_log` reads every segment and checkpoint and reports, with an exit code:

* **errors** (exit 1), naming the first bad seq where there is one: a record that is not
  canonical JSON or lacks its header; a seq that skips (a deleted record), repeats or goes back
  (a reordered or inserted one); a ``prev`` that does not match the hash of the record before it
  (an edited record); a checkpoint whose signature, key, validity interval or frontier is wrong;
  a checkpoint whose tree size is not larger than the one before it (a replayed checkpoint); a
  checkpoint whose root or last hash differs from the records (records rewritten and re-chained);
  a checkpoint, in the log or in an anchor directory, covering more records than there are (a cut
  tail); two checkpoints of one size with different roots (a fork).
* **warnings** (exit 2, when there is no error): ``audit_gap`` records (lost or refused records),
  the wall clock going back by more than the tolerance, an unterminated last line (a crash or a
  write in progress; the writer cuts it at start-up), no checkpoint at all.
* **notes** (no effect on the exit code): recoveries, erasures, key rotations, retention, records
  after the last checkpoint (not yet signed), which key set was used.

Without ``keyset``, the copy of the public keys stored in the log directory is used; that checks
the log against itself only, so pass the key set kept elsewhere for an independent check.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from servecore.audit.checkpoint import Checkpoint, read_checkpoints
from servecore.audit.errors import AuditKeyError, CanonicalError
from servecore.audit.keys import KeySet
from servecore.audit.merkle import CompactTree, leaf_hash
from servecore.audit.records import (
    CHECKPOINTS,
    KEYSET_COPY,
    ZERO_HASH,
    list_segments,
    parse_record,
    parse_ts,
    split_lines,
)

OK, INTEGRITY_FAILURE, WARNINGS = 0, 1, 2


@dataclass
class VerifyResult:
    """What :func:`verify_log` found."""

    directory: str
    records: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    checkpoints_verified: int = 0
    first_bad_seq: int | None = None
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 intact, 1 integrity failure, 2 intact with warnings."""
        if self.errors:
            return INTEGRITY_FAILURE
        return WARNINGS if self.warnings else OK

    def fail(self, message: str, seq: int | None = None) -> None:
        self.errors.append(message)
        if seq is not None and (self.first_bad_seq is None or seq < self.first_bad_seq):
            self.first_bad_seq = seq

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "exit_code": self.exit_code}


def _load_checkpoints(
    result: VerifyResult, path: Path, keyset: KeySet, label: str
) -> list[Checkpoint]:
    """The valid checkpoints of one file, in file order, checking signatures and growth."""
    cpf = read_checkpoints(path)
    for number, reason in cpf.bad_lines:
        result.fail(f"{label} line {number}: not a checkpoint ({reason})")
    if cpf.torn_bytes:
        result.warnings.append(f"{label} ends with {cpf.torn_bytes} bytes of a torn checkpoint")
    good: list[Checkpoint] = []
    for number, cp in enumerate(cpf.checkpoints, 1):
        problem = cp.check(keyset)
        if problem is not None:
            result.fail(f"{label} checkpoint {number} (tree size {cp.tree_size}): {problem}",
                        max(cp.tree_size - 1, 0))
            continue
        if good and cp.tree_size <= good[-1].tree_size:
            result.fail(
                f"{label} checkpoint {number}: tree size {cp.tree_size} after "
                f"{good[-1].tree_size} (a replayed or rolled-back checkpoint)",
                max(cp.tree_size - 1, 0),
            )
            continue
        if good and cp.ts_us < good[-1].ts_us:
            result.warnings.append(f"{label} checkpoint {number} is dated before the one before it")
        good.append(cp)
    return good


def _merge(result: VerifyResult, groups: list[list[Checkpoint]]) -> dict[int, Checkpoint]:
    """Checkpoints by tree size across the log and its anchors; a size with two roots is a fork."""
    by_size: dict[int, Checkpoint] = {}
    for group in groups:
        for cp in group:
            seen = by_size.get(cp.tree_size)
            if seen is not None and (seen.root, seen.last_hash) != (cp.root, cp.last_hash):
                result.fail(f"two checkpoints of tree size {cp.tree_size} disagree (a forked log)",
                            cp.tree_size - 1)
            by_size.setdefault(cp.tree_size, cp)
    return by_size


class _Scan:
    """The streaming part: records in order against the chain and the checkpoints."""

    def __init__(self, result: VerifyResult, signed: dict[int, Checkpoint], tolerance_us: int):
        self.result, self.signed, self.tolerance_us = result, signed, tolerance_us
        self.tree = CompactTree()
        self.expected = 0
        self.prev = ZERO_HASH
        self.last_ts: int | None = None
        self.last_match = 0  # tree size of the last checkpoint the records matched
        self.counts = {"recovery": 0, "erasure": 0, "key_rotation": 0, "retention": 0}

    def start_at(self, base: int) -> bool:
        if base == 0:
            return True
        cp = self.signed.get(base)
        if cp is None:
            self.result.fail(f"the log starts at seq {base} and no checkpoint covers the records "
                             "before it", 0)
            return False
        self.tree = CompactTree(size=base, frontier=[bytes.fromhex(h) for h in cp.frontier])
        self.expected = self.last_match = base
        self.prev = cp.last_hash
        self.result.notes.append(f"records 0..{base - 1} were removed by retention; verified "
                                 f"from the signed checkpoint of tree size {base}")
        return True

    def segment(self, name: str, first_seq: int, data: bytes, *, last: bool) -> bool:
        """Check one segment's records; False once the log cannot be followed any further."""
        lines, rest = split_lines(data)
        if lines and first_seq != self.expected:
            self.result.fail(f"{name} should start at seq {self.expected}", self.expected)
            return False
        for offset, line in lines:
            if not self.record(name, offset, line):
                return False
        if rest:
            message = f"{name} ends with {len(rest)} bytes of an unterminated record"
            if not last:
                self.result.fail(message, self.expected)
                return False
            self.result.warnings.append(message + " (a crash or a write in progress)")
        return True

    def record(self, name: str, offset: int, line: bytes) -> bool:
        result, seq = self.result, self.expected
        try:
            record = parse_record(line)
        except CanonicalError as exc:
            result.fail(f"seq {seq} ({name} byte {offset}): invalid record: {exc}", seq)
            return False
        found = record["seq"]
        if found > seq:
            result.fail(f"seq {seq} is missing ({name} byte {offset} holds seq {found})", seq)
            return False
        if found < seq:
            result.fail(f"seq {found} appears again or out of order after seq {seq - 1} "
                        f"({name} byte {offset})", found)
            return False
        if record["prev"] != self.prev:
            result.fail(f"seq {seq - 1} was altered: its hash does not match the prev of seq {seq}",
                        seq - 1)
            return False
        ts = parse_ts(record["ts"])
        if self.last_ts is not None and ts < self.last_ts - self.tolerance_us:
            result.warnings.append(f"seq {seq}: the clock went back "
                                   f"{(self.last_ts - ts) / 1e6:.3f} s")
        self.last_ts = ts if self.last_ts is None else max(ts, self.last_ts)
        self._event(seq, record)
        leaf = leaf_hash(line)
        before = None
        if self.tree.size + 1 in self.signed:  # kept to tell an edited last record apart
            before = CompactTree(size=self.tree.size, frontier=self.tree.frontier)
        self.tree.append(leaf)
        self.prev = leaf.hex()
        self.expected += 1
        result.records += 1
        result.first_seq = seq if result.first_seq is None else result.first_seq
        result.last_seq = seq
        cp = self.signed.get(self.tree.size)
        if cp is not None:
            return self._against(cp, before)
        return True

    def _event(self, seq: int, record: dict[str, Any]) -> None:
        kind = record["event"]
        if kind == "audit_gap":
            self.result.warnings.append(
                f"seq {seq}: audit gap after seq {record.get('after_seq')}: "
                f"{record.get('lost')} records lost, {record.get('refused')} refused "
                f"({record.get('reason')}; {record.get('since')} to {record.get('until')})"
            )
        elif kind in self.counts:
            self.counts[kind] += 1
            if kind == "recovery":
                self.result.notes.append(
                    f"seq {seq}: recovery after a crash, {record.get('truncated_bytes')} torn "
                    f"bytes cut, {record.get('unsigned_records')} records were unsigned"
                )

    def _against(self, cp: Checkpoint, before: CompactTree | None) -> bool:
        size = cp.tree_size
        if cp.root != self.tree.root().hex():
            if before is not None and cp.last_hash != self.prev:
                before.append(bytes.fromhex(cp.last_hash))
                if before.root().hex() == cp.root:  # all but the last record are as signed
                    self.result.fail(f"seq {size - 1} differs from the record the checkpoint of "
                                     f"tree size {size} signed", size - 1)
                    return False
            self.result.fail(f"records {self.last_match}..{size - 1} differ from what the "
                             f"checkpoint of tree size {size} signed", self.last_match)
            return False
        if cp.last_hash != self.prev:
            self.result.fail(f"the checkpoint of tree size {size} names another last record",
                             size - 1)
            return False
        self.result.checkpoints_verified += 1
        self.last_match = size
        return True


def verify_log(
    directory: Path,
    *,
    keyset: KeySet | None = None,
    anchors: Sequence[Path] = (),
    clock_tolerance_s: float = 1.0,
) -> VerifyResult:
    """Verify the log in *directory* (see the module docstring)."""
    directory = Path(directory)
    result = VerifyResult(str(directory))
    if keyset is None:
        try:
            keyset = KeySet.load(directory / KEYSET_COPY)
        except AuditKeyError as exc:
            result.fail(f"no public keys to check signatures with: {exc}")
            return result
        result.notes.append("signatures checked against the key set stored in the log "
                            "directory; pass the key set kept elsewhere for an independent check")
    groups = [_load_checkpoints(result, directory / CHECKPOINTS, keyset, CHECKPOINTS)]
    for anchor in anchors:
        groups.append(_load_checkpoints(result, Path(anchor) / CHECKPOINTS, keyset, str(anchor)))
    signed = _merge(result, groups)
    log_sizes = {cp.tree_size for cp in groups[0]}
    for size in sorted(set(signed) - log_sizes):
        result.fail(f"the anchor's checkpoint of tree size {size} is missing from {CHECKPOINTS}",
                    size - 1)
    scan = _Scan(result, signed, int(clock_tolerance_s * 1e6))
    segments = list_segments(directory)
    complete = scan.start_at(segments[0][0] if segments else 0)
    for index, (first_seq, path) in enumerate(segments):
        if not complete:
            break
        complete = scan.segment(path.name, first_seq, path.read_bytes(),
                                last=index == len(segments) - 1)
    if not complete:
        return result
    total = scan.expected
    for size in sorted(signed):
        if size > total:
            result.fail(f"the checkpoint of tree size {size} signs {size - total} records that "
                        f"are not in the log (a cut tail)", total)
            break
    pruned = sum(1 for size in signed if size < (segments[0][0] if segments else 0))
    if pruned:
        result.notes.append(f"{pruned} checkpoints cover removed segments (signatures checked)")
    covered = max((s for s in signed if s <= total), default=0)
    if total and not signed:
        result.warnings.append("no signed checkpoint: only the hash chain protects the log")
    elif total > covered:
        result.notes.append(f"{total - covered} records after the last checkpoint are chained "
                            "but not yet signed")
    for kind, n in scan.counts.items():
        if n and kind != "recovery":
            result.notes.append(f"{n} {kind} records")
    return result
