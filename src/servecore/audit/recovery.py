"""Start-up scan: where the log stands, and cutting off a torn tail.

:func:`recover` reads the last checkpoint, then every record after it (from the checkpoint's
segment and offset, so the cost is bounded by the checkpoint interval plus nothing before it),
checking canonical form, seq continuity and the ``prev`` chain as it rebuilds the Merkle
frontier. Invalid bytes at the very end of the last segment (an unterminated line, or complete
lines none of which is a valid record, such as the zeros a crash can leave) are a torn tail: they
are cut off and their size reported. Anything else (an invalid record followed by valid ones, a
broken chain, records missing under a checkpoint) raises :class:`AuditCorruptError`: the log is
never repaired past a torn tail, that is for a person to decide after ``servecore audit verify``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from servecore.audit.checkpoint import Checkpoint, read_checkpoints
from servecore.audit.errors import AuditCorruptError, CanonicalError
from servecore.audit.merkle import CompactTree, leaf_hash
from servecore.audit.records import (
    CHECKPOINTS,
    ZERO_HASH,
    list_segments,
    parse_record,
    parse_ts,
    segment_name,
    split_lines,
)


@dataclass
class LogState:
    """Where the log stands after the scan."""

    next_seq: int = 0
    prev_hash: str = ZERO_HASH
    tree: CompactTree = field(default_factory=CompactTree)
    #: the last segment (appended to next), its first seq and the UTC time of its first record
    segment: Path | None = None
    segment_first_seq: int = 0
    segment_first_us: int | None = None
    last_ts_us: int | None = None
    last_checkpoint: Checkpoint | None = None
    checkpoint_sizes: set[int] = field(default_factory=set)
    truncated_bytes: int = 0
    truncated_segment: str | None = None
    checkpoint_truncated_bytes: int = 0

    @property
    def unsigned(self) -> int:
        """Records after the last checkpoint."""
        signed = self.last_checkpoint.tree_size if self.last_checkpoint else 0
        return self.next_seq - signed


def _truncate(path: Path, size: int) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)


def _any_valid(lines: list[tuple[int, bytes]]) -> bool:
    for _, line in lines:
        try:
            parse_record(line)
        except CanonicalError:
            continue
        return True
    return False


def recover(directory: Path) -> LogState:
    """Scan *directory*, cut a torn tail, and return the state to continue from."""
    state = LogState()
    cpf = read_checkpoints(directory / CHECKPOINTS)
    if cpf.bad_lines:
        number, problem = cpf.bad_lines[0]
        raise AuditCorruptError(f"{CHECKPOINTS} line {number} is not a checkpoint: {problem}")
    if cpf.torn_bytes:
        _truncate(directory / CHECKPOINTS, cpf.good_size)
        state.checkpoint_truncated_bytes = cpf.torn_bytes
    state.checkpoint_sizes = {c.tree_size for c in cpf.checkpoints}
    segments = list_segments(directory)
    start_offset = 0
    if cpf.checkpoints:
        cp = state.last_checkpoint = cpf.checkpoints[-1]
        frontier = [bytes.fromhex(h) for h in cp.frontier]
        state.tree = CompactTree(size=cp.tree_size, frontier=frontier)
        state.next_seq, state.prev_hash = cp.tree_size, cp.last_hash
        names = [p.name for _, p in segments]
        if cp.segment in names:
            index = names.index(cp.segment)
            segments = segments[index:]
            start_offset = cp.offset
            if segments[0][1].stat().st_size < cp.offset:
                raise AuditCorruptError(
                    f"{cp.segment} is shorter than the last checkpoint says: records under a "
                    f"signed checkpoint are missing (tree size {cp.tree_size})"
                )
        elif cp.offset == 0 and cp.segment == segment_name(cp.tree_size):
            segments = [(s, p) for s, p in segments if s >= cp.tree_size]
        else:
            raise AuditCorruptError(f"segment {cp.segment} of the last checkpoint is missing")
    elif segments and segments[0][0] != 0:
        raise AuditCorruptError(
            f"the log starts at seq {segments[0][0]} and no checkpoint covers what came before"
        )
    for position, (first_seq, path) in enumerate(segments):
        last = position == len(segments) - 1
        offset = start_offset if position == 0 else 0
        _scan_segment(state, path, first_seq, offset, last=last)
    if segments:
        state.segment = segments[-1][1]
        state.segment_first_seq = segments[-1][0]
        state.segment_first_us = _first_ts(segments[-1][1])
    return state


def _first_ts(path: Path) -> int | None:
    with open(path, "rb") as f:
        line = f.readline()
    if not line.endswith(b"\n"):
        return None
    return parse_ts(parse_record(line[:-1])["ts"])


def _scan_segment(state: LogState, path: Path, first_seq: int, offset: int, *, last: bool) -> None:
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    lines, rest = split_lines(data)
    if offset == 0 and lines and state.next_seq != first_seq:
        raise AuditCorruptError(
            f"{path.name} should start at seq {state.next_seq}: a segment is missing or misnamed"
        )
    for index, (start, line) in enumerate(lines):
        try:
            record = parse_record(line)
        except CanonicalError as exc:
            if last and not _any_valid(lines[index + 1:]):
                _cut(state, path, offset + start)
                return
            raise AuditCorruptError(
                f"{path.name} byte {offset + start}: invalid record ({exc}) followed by valid ones"
            ) from None
        if record["seq"] != state.next_seq or record["prev"] != state.prev_hash:
            raise AuditCorruptError(
                f"{path.name} byte {offset + start}: seq {record['seq']} does not continue the "
                f"log at seq {state.next_seq} (run `servecore audit verify`)"
            )
        leaf = leaf_hash(line)
        state.tree.append(leaf)
        state.prev_hash = leaf.hex()
        state.next_seq += 1
        state.last_ts_us = parse_ts(record["ts"])
    if rest:
        if not last:
            raise AuditCorruptError(f"{path.name} ends with an unterminated record")
        _cut(state, path, offset + len(data) - len(rest))


def _cut(state: LogState, path: Path, size: int) -> None:
    state.truncated_bytes = path.stat().st_size - size
    state.truncated_segment = path.name
    _truncate(path, size)
