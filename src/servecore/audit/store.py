"""The log on disk: the open segment, the chain head and Merkle tree, checkpoints, retention.

Only the writer thread uses a :class:`LogStore`. Each writing method either completes or raises
:class:`OSError` with the files as they were (see :class:`~servecore.audit.appendfile.AppendFile`),
and the in-memory state (next seq, chain head, tree) advances only on success, so a failed group
commit can simply be tried again.

Segments rotate before a commit when the open one has reached ``segment_max_bytes`` or the commit
starts a new UTC day; a new segment is only opened once a checkpoint ends exactly where it starts,
which is what lets retention remove older segments and still leave a log that verifies.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from servecore.audit.appendfile import AppendFile
from servecore.audit.checkpoint import Checkpoint, sign_checkpoint
from servecore.audit.config import AuditConfig
from servecore.audit.errors import AuditError, AuditKeyError
from servecore.audit.keys import AuditKeys
from servecore.audit.merkle import leaf_hash
from servecore.audit.records import (
    CHECKPOINTS,
    KEYSET_COPY,
    Template,
    fill,
    list_segments,
    segment_name,
    utc_day,
)
from servecore.audit.recovery import LogState
from servecore.audit.retention import expired_prefix, remove

logger = logging.getLogger("servecore.audit")

#: a record to write: (template, ts in µs, monotonic ns)
Pending = tuple[Template, int, int]


class LogStore:
    """Segments, checkpoints and the tree of one log directory (writer thread only)."""

    def __init__(
        self, config: AuditConfig, keys: AuditKeys, state: LogState, clock_ns: Callable[[], int]
    ) -> None:
        self.config, self.keys, self._clock_ns = config, keys, clock_ns
        self.directory = Path(config.directory)
        self.next_seq, self.prev, self.tree = state.next_seq, state.prev_hash, state.tree
        self.last_cp: Checkpoint | None = state.last_checkpoint
        self.cp_sizes = state.checkpoint_sizes
        self.unsigned = state.unsigned
        self.first_unsigned = time.monotonic()
        self.dirty = False
        self.last_fsync = time.monotonic()
        #: (old key id, new key id) for each change of signing key, for key_rotation records
        self.rotations: list[tuple[str, str]] = []
        self.anchor_errors = 0
        self._segment_first_us = state.segment_first_us
        self.checkpoints = AppendFile(self.directory / CHECKPOINTS)
        self.anchor: AppendFile | None = None
        self.segment: AppendFile | None = None
        try:
            if config.anchor_dir is not None:
                Path(config.anchor_dir).mkdir(parents=True, exist_ok=True)
                self.anchor = AppendFile(Path(config.anchor_dir) / CHECKPOINTS)
            if state.segment is not None:
                self.segment = AppendFile(state.segment)
        except BaseException:
            self.close()
            raise
        self.copy_keyset()

    # -- records -------------------------------------------------------------------------------

    def append(self, items: Sequence[Pending]) -> int:
        """Write *items* as one group commit (fsynced under ``fsync=always``); returns the first
        seq. Raises OSError, having written nothing, if the segment cannot take them."""
        first = seq = self.next_seq
        prev = self.prev
        lines, leaves = [], []
        for template, ts_us, mono_ns in items:
            line = fill(template, seq=seq, prev=prev, ts_us=ts_us, mono_ns=mono_ns)
            leaf = leaf_hash(line)
            lines.append(line)
            leaves.append(leaf)
            prev, seq = leaf.hex(), seq + 1
        lines.append(b"")
        segment = self._segment_for(items[0][1])
        segment.append(b"\n".join(lines), fsync=self.config.fsync == "always")
        self.next_seq, self.prev = seq, prev
        for leaf in leaves:
            self.tree.append(leaf)
        if not self.unsigned:
            self.first_unsigned = time.monotonic()
        self.unsigned += len(items)
        self.dirty = self.config.fsync != "always"
        return first

    def fsync(self) -> None:
        """Make what was written durable (no-op when nothing is pending)."""
        if self.dirty and self.segment is not None:
            self.segment.fsync()
        self.dirty = False
        self.last_fsync = time.monotonic()

    def _segment_for(self, ts_us: int) -> AppendFile:
        """The segment the next commit goes to, rotating first where due."""
        seg = self.segment
        if seg is not None and seg.size > 0:
            new_day = self.config.rotate_daily and self._segment_first_us is not None and (
                utc_day(ts_us) != utc_day(self._segment_first_us)
            )
            if new_day or seg.size >= self.config.segment_max_bytes:
                if self.config.fsync != "never":
                    self.fsync()
                seg.close()
                self.segment = None
        if self.segment is None:
            if self.next_seq and (self.last_cp is None or self.last_cp.tree_size != self.next_seq):
                try:  # sign the boundary first: retention relies on it
                    self.checkpoint()
                except AuditKeyError as exc:
                    logger.error("cannot sign the segment boundary at seq %d: %s", self.next_seq, exc)
            path = self.directory / segment_name(self.next_seq)
            self.segment = AppendFile(path, durable_create=self.config.fsync != "never")
            self._segment_first_us = None
        if self._segment_first_us is None:
            self._segment_first_us = ts_us
        return self.segment

    # -- checkpoints ---------------------------------------------------------------------------

    def checkpoint(self) -> Checkpoint | None:
        """Sign the tree as it stands (None if nothing new). Raises OSError if the checkpoint
        file cannot take it, AuditKeyError without a valid signing key."""
        if not self.next_seq or (self.last_cp and self.last_cp.tree_size == self.next_seq):
            return None
        if self.config.fsync != "never":
            self.fsync()  # never sign what might not survive
        now_us = self._clock_ns() // 1000
        if self.keys.reload():
            self.copy_keyset()
        key = self.keys.signing_key(now_us)
        if self.segment is not None:
            where = (self.segment.path.name, self.segment.size)
        else:
            where = (segment_name(self.next_seq), 0)
        cp = sign_checkpoint(
            key, origin=self.config.origin, tree_size=self.next_seq, root=self.tree.root(),
            last_hash=self.prev, frontier=self.tree.frontier, ts_us=now_us,
            segment=where[0], offset=where[1],
        )
        line = cp.to_line()
        self.checkpoints.append(line, fsync=self.config.fsync != "never")
        if self.anchor is not None:
            try:
                self.anchor.append(line, fsync=self.config.fsync != "never")
            except OSError as exc:
                self.anchor_errors += 1
                logger.warning("cannot copy a checkpoint to the anchor %s: %s",
                               self.config.anchor_dir, exc)
        if self.last_cp is not None and self.last_cp.key_id != key.key_id:
            self.rotations.append((self.last_cp.key_id, key.key_id))
        self.last_cp = cp
        self.cp_sizes.add(cp.tree_size)
        self.unsigned = 0
        return cp

    def copy_keyset(self) -> None:
        """Keep a copy of the public key set next to the log (and the anchor) for verifiers."""
        targets = [self.directory]
        if self.config.anchor_dir is not None:
            targets.append(Path(self.config.anchor_dir))
        for target in targets:
            try:
                shutil.copyfile(self.keys.keyset_path, target / KEYSET_COPY)
            except OSError as exc:
                logger.warning("cannot copy the audit public keys to %s: %s", target, exc)

    # -- retention -----------------------------------------------------------------------------

    def prune(self, now_us: int) -> dict[str, Any] | None:
        """Remove expired, signed segments; the ``retention`` record to write, or None."""
        try:
            expired = expired_prefix(list_segments(self.directory), self.cp_sizes,
                                     now_us=now_us, months=self.config.retention_months)
        except (OSError, AuditError) as exc:
            logger.warning("audit retention skipped: %s", exc)
            return None
        if not expired:
            return None
        remove([path for _, path, _ in expired])
        names = [path.name for _, path, _ in expired]
        logger.info("audit retention removed %s", ", ".join(names))
        return {
            "event": "retention",
            "segments": names,
            "from_seq": expired[0][0],
            "to_seq": expired[-1][2] - 1,
            "checkpoint_tree_size": expired[-1][2],
            "retention_months": self.config.retention_months,
        }

    def close(self) -> None:
        for f in (self.segment, self.checkpoints, self.anchor):
            if f is not None:
                f.close()
