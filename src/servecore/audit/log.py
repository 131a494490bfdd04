"""The audit log writer: one sequencer thread, group commit, checkpoints, failure policy.

Callers on any thread hand events to :meth:`AuditLog.submit` (or :meth:`~AuditLog.submit_durable`
to learn when the record is on disk). Submitting validates the event (canonical JSON, a known
event type, no header fields), stamps it with the UTC time and the monotonic clock under the queue
lock (so time order and queue order agree) and appends it to a bounded queue; it never waits for
the disk. The writer thread drains the whole queue at once, gives each record its ``seq`` and
``prev``, writes the batch with one ``write`` (group commit), fsyncs per policy and only then
resolves the durable futures, in seq order.

Write failures (``ENOSPC``, ``EIO``, a failed fsync) leave no partial record (the batch is cut
back) and start an *outage*. ``fail-closed``: :attr:`AuditLog.writable` turns False, new records
are refused with :class:`AuditUnavailableError` (503) and the records already accepted are kept
and written once a retry succeeds. ``fail-open``: records keep being accepted; those that cannot
be written are counted. Either way, the first successful write after the outage ends with one
``audit_gap`` record stating the records lost and refused, the time range and the seq it
followed. A full queue is handled the same way. Nothing is dropped without being counted.

The writer also signs checkpoints (every ``checkpoint_every`` records, ``checkpoint_interval_s``
seconds, at each segment rotation and at close), rotates segments by size and UTC day, applies
retention, and writes the ``erasure`` records of erasures made by ``servecore audit erase`` while
the server held the log.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from servecore.audit.appendfile import AppendFile
from servecore.audit.canonical import dumps, normalise
from servecore.audit.checkpoint import Checkpoint, sign_checkpoint
from servecore.audit.config import AuditConfig
from servecore.audit.errors import (
    AuditError,
    AuditKeyError,
    AuditRecordLostError,
    AuditUnavailableError,
    CanonicalError,
)
from servecore.audit.events import SERVER_EVENTS
from servecore.audit.keys import AuditKeys
from servecore.audit.lockfile import DirectoryLock
from servecore.audit.merkle import leaf_hash
from servecore.audit.payload import encrypt_payload
from servecore.audit.records import (
    CHECKPOINTS,
    ERASURE_SPOOL,
    HEADER_FIELDS,
    KEYSET_COPY,
    SCHEMA_VERSION,
    format_ts,
    list_segments,
    segment_name,
    utc_day,
)
from servecore.audit.recovery import recover
from servecore.audit.retention import expired_prefix, remove

if TYPE_CHECKING:
    from typing_extensions import Self

logger = logging.getLogger("servecore.audit")

_POLL_S = 1.0
_RETENTION_EVERY_S = 3600.0


_Kind = Literal["server", "log", "gap"]


class _Item:
    """A queued record: submitted by the server, written by the log itself, or the gap record."""

    __slots__ = ("future", "kind", "on_done", "record", "ts_us")

    def __init__(
        self, record: dict[str, Any], future: Future[int] | None, ts_us: int, kind: _Kind,
        on_done: Callable[[], None] | None = None,
    ) -> None:
        self.record, self.future, self.ts_us = record, future, ts_us
        self.kind, self.on_done = kind, on_done


class _Outage:
    """Records lost or refused since the log last wrote successfully."""

    def __init__(self, since_us: int, reason: str, after_seq: int) -> None:
        self.since_us, self.reason, self.after_seq = since_us, reason, after_seq
        self.lost = self.refused = 0
        self.first_lost_us: int | None = None
        self.last_lost_us: int | None = None

    def lose(self, ts_us: int, n: int = 1) -> None:
        self.lost += n
        self.first_lost_us = ts_us if self.first_lost_us is None else self.first_lost_us
        self.last_lost_us = ts_us

    def absorb(self, later: _Outage) -> None:
        self.lost += later.lost
        self.refused += later.refused
        if later.first_lost_us is not None:
            if self.first_lost_us is None:
                self.first_lost_us = later.first_lost_us
            self.last_lost_us = later.last_lost_us

    def record(self, policy: str, until_us: int) -> dict[str, Any]:
        def ts(us: int | None) -> str | None:
            return None if us is None else format_ts(us)

        return {
            "event": "audit_gap",
            "policy": policy,
            "reason": self.reason,
            "lost": self.lost,
            "refused": self.refused,
            "after_seq": self.after_seq if self.after_seq >= 0 else None,
            "since": ts(self.since_us),
            "until": ts(until_us),
            "first_lost": ts(self.first_lost_us),
            "last_lost": ts(self.last_lost_us),
        }


def _describe(exc: OSError) -> str:
    return f"{type(exc).__name__} [errno {exc.errno}]: {exc.strerror or exc}"


class AuditLog:
    """A tamper-evident audit log in ``config.directory``; open it, submit, close it."""

    def __init__(
        self,
        config: AuditConfig,
        *,
        keys: AuditKeys | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.config = config
        self.directory = Path(config.directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._clock_ns = clock_ns
        self._lock = DirectoryLock(self.directory)
        try:
            self.keys = keys if keys is not None else AuditKeys(config.key_dir)
            state = recover(self.directory)
            self._checkpoints = AppendFile(self.directory / CHECKPOINTS)
            self._anchor: AppendFile | None = None
            if config.anchor_dir is not None:
                Path(config.anchor_dir).mkdir(parents=True, exist_ok=True)
                self._anchor = AppendFile(Path(config.anchor_dir) / CHECKPOINTS)
            self._segment = AppendFile(state.segment) if state.segment is not None else None
        except BaseException:
            self._lock.release()
            raise
        self._copy_keyset()
        self._next_seq, self._prev, self._tree = state.next_seq, state.prev_hash, state.tree
        self._segment_first_us = state.segment_first_us
        self._last_cp: Checkpoint | None = state.last_checkpoint
        self._cp_sizes = state.checkpoint_sizes
        self._since_cp = state.unsigned
        self._first_unsigned_mono = time.monotonic()
        self._force_cp = False
        self._dirty = False
        self._last_fsync = time.monotonic()
        self._next_cp_try = self._next_spool = 0.0
        self._next_retention = 0.0
        self._retention_lock = threading.Lock()
        self._spool_inflight: set[Path] = set()
        # shared with submitters, guarded by _cond
        self._cond = threading.Condition()
        self._buf: list[_Item] = []
        self._retained: list[_Item] = []
        self._waiting = False
        self._closing = self._closed = False
        self._broken = False
        self._next_retry = 0.0
        self._last_error: str | None = None
        self._outage: _Outage | None = None
        self.counters = dict.fromkeys(
            ("written", "lost", "refused", "write_errors", "checkpoints", "checkpoint_errors",
             "anchor_errors", "gaps"), 0,
        )
        if state.truncated_bytes or state.checkpoint_truncated_bytes or state.unsigned:
            self._force_cp = True
            self._enqueue_internal({
                "event": "recovery",
                "truncated_bytes": state.truncated_bytes,
                "segment": state.truncated_segment,
                "checkpoint_truncated_bytes": state.checkpoint_truncated_bytes,
                "unsigned_records": state.unsigned,
                "last_seq": state.next_seq - 1 if state.next_seq else None,
            })
            logger.warning(
                "audit log %s recovered: cut %d torn bytes, %d records were not yet signed",
                self.directory, state.truncated_bytes, state.unsigned,
            )
        self._thread = threading.Thread(target=self._run, name="servecore-audit", daemon=True)
        self._thread.start()

    # -- the request path ----------------------------------------------------------------------

    @property
    def writable(self) -> bool:
        """False while writing fails (and after close); fail-closed refuses records then."""
        return not self._broken and not self._closed

    def ensure_accepting(self) -> None:
        """Raise :class:`AuditUnavailableError` (counted as a refusal) if a record submitted now
        would be refused; call it before running an inference under fail-closed."""
        with self._cond:
            self._check_open()

    def submit(self, event: Mapping[str, Any]) -> None:
        """Queue one event; never blocks on the disk (see the module docstring for failures)."""
        self._put(self._prepare(event), None)

    def submit_durable(self, event: Mapping[str, Any]) -> Future[int]:
        """Queue one event; the future gives its seq once written (and fsynced under
        ``fsync=always``), or raises :class:`AuditUnavailableError` (fail-closed: the write
        failed; the record is kept and written later) or :class:`AuditRecordLostError`
        (fail-open: it was lost and is counted in the next ``audit_gap``)."""
        future: Future[int] = Future()
        self._put(self._prepare(event), future)
        return future

    async def submit_async(self, event: Mapping[str, Any]) -> int:
        """:meth:`submit_durable` for asyncio code: the seq, once the record is durable."""
        return await asyncio.wrap_future(self.submit_durable(event))

    def pseudonym(self, principal: str) -> str:
        """The caller's pseudonym (HMAC-SHA256 under the log's HMAC key)."""
        return self.keys.pseudonym(principal)

    def digest(self, data: bytes, *, subject: str | None = None) -> str:
        """A keyed digest of input or output bytes (see :meth:`AuditKeys.digest`)."""
        return self.keys.digest(data, subject=subject)

    def encrypt_payload(
        self, subject: str, data: bytes, *, max_bytes: int | None = None
    ) -> dict[str, Any]:
        """A payload sealed under *subject*'s key (see :func:`servecore.audit.payload.encrypt_payload`)."""
        return encrypt_payload(self.keys, subject, data, max_bytes=max_bytes)

    def erase_subject(self, subject: str, *, legal_basis: str | None = None) -> Future[int]:
        """Destroy *subject*'s payload key and record the erasure (an unknown subject is
        recorded too, with ``found: false``). The future gives the erasure record's seq."""
        self.ensure_accepting()
        pid, generation = self.keys.erase_subject(subject)
        return self._enqueue_internal(erasure_record(pid, generation, legal_basis, via="api"))

    def stats(self) -> dict[str, Any]:
        """Counters and state for metrics and health checks."""
        with self._cond:
            return {
                **self.counters,
                "queue_depth": len(self._buf),
                "retained": len(self._retained),
                "writable": self.writable,
                "last_error": self._last_error,
                "next_seq": self._next_seq,
                "signed_tree_size": self._last_cp.tree_size if self._last_cp else 0,
            }

    def close(self, timeout: float | None = 60.0) -> None:
        """Write what is queued, sign a last checkpoint, release the directory."""
        with self._cond:
            if self._closed:
                return
            self._closed = self._closing = True
            self._cond.notify()
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.error("the audit writer did not finish within %ss; leaving it", timeout)
            return
        for f in (self._segment, self._checkpoints, self._anchor):
            if f is not None:
                f.close()
        self._lock.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- queueing (callers hold no lock) --------------------------------------------------------

    def _prepare(self, event: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(event, Mapping):
            raise CanonicalError(f"an audit event is a mapping, not {type(event).__name__}")
        kind = event.get("event")
        if kind not in SERVER_EVENTS:
            raise CanonicalError(f"unknown or reserved audit event type {kind!r}")
        reserved = HEADER_FIELDS.intersection(event)
        if reserved:
            raise CanonicalError(f"audit events may not set {sorted(reserved)}")
        record: dict[str, Any] = normalise(event)
        return record

    def _check_open(self) -> None:
        """With _cond held: raise if fail-closed (or closed) refuses records now."""
        if self._closed:
            raise AuditUnavailableError("the audit log is closed")
        if self.config.on_failure != "fail-closed":
            return
        if self._broken:
            self._refuse("write failure")
            raise AuditUnavailableError(f"the audit log cannot be written: {self._last_error}")
        if len(self._buf) >= self.config.queue_size:
            self._refuse("queue full")
            raise AuditUnavailableError(
                f"the audit queue is full ({self.config.queue_size} records waiting)"
            )

    def _put(self, record: dict[str, Any], future: Future[int] | None) -> None:
        with self._cond:
            self._check_open()
            if len(self._buf) >= self.config.queue_size:  # fail-open
                now = self._clock_ns() // 1000
                self._start_outage(now, "queue full").lose(now)
                self.counters["lost"] += 1
                if future is not None:
                    future.set_exception(AuditRecordLostError("the audit queue is full"))
                return
            self._buf.append(_Item(record, future, self._stamp(record), "server"))
            if self._waiting:
                self._cond.notify()

    def _stamp(self, record: dict[str, Any]) -> int:
        """With _cond held: the record's time, in queue order."""
        now_ns = self._clock_ns()
        record["ts"] = format_ts(now_ns // 1000)
        record["mono_ns"] = time.monotonic_ns()
        return now_ns // 1000

    def _enqueue_internal(
        self, record: dict[str, Any], on_done: Callable[[], None] | None = None
    ) -> Future[int]:
        """Queue a record of the log's own, bypassing the queue bound and the policy."""
        future: Future[int] = Future()
        record = normalise(record)
        with self._cond:
            self._buf.append(_Item(record, future, self._stamp(record), "log", on_done))
            if self._waiting:
                self._cond.notify()
        return future

    def _start_outage(self, now_us: int, reason: str) -> _Outage:
        """With _cond held: the current outage, started now if there is none."""
        if self._outage is None:
            self._outage = _Outage(now_us, reason, self._next_seq - 1)
        return self._outage

    def _refuse(self, reason: str) -> None:
        self._start_outage(self._clock_ns() // 1000, reason).refused += 1
        self.counters["refused"] += 1

    # -- the writer thread ---------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # the writer must never vanish silently
            logger.exception("the audit writer failed")
            with self._cond:
                self._broken = True
                self._last_error = f"the audit writer failed: {exc!r}"
                pending, self._buf, self._retained = self._retained + self._buf, [], []
            self._drop(pending, "the audit writer failed")

    def _loop(self) -> None:
        while True:
            with self._cond:
                if not self._buf and not self._closing:
                    self._waiting = True
                    self._cond.wait(self._wait_timeout())
                    self._waiting = False
                batch, self._buf = self._buf, []
                closing = self._closing
                attempt = closing or not self._broken or time.monotonic() >= self._next_retry
                gap: _Outage | None = None
                if attempt and self._outage is not None:
                    gap, self._outage = self._outage, None
                    now_us = self._clock_ns() // 1000
                    record = normalise(gap.record(self.config.on_failure, now_us))
                    batch.append(_Item(record, None, self._stamp(record), "gap"))
            items, self._retained = self._retained + batch, []
            if items:
                if attempt:
                    self._commit(items, gap)
                else:
                    self._hold(items, None)
            if not self._broken:
                self._housekeeping(closing)
            if closing:
                with self._cond:
                    more = bool(self._buf) and not self._broken
                if not more:
                    break
        if self._retained:
            self._drop(self._retained, "the audit log closed while it could not be written")
            self._retained = []

    def _wait_timeout(self) -> float:
        now = time.monotonic()
        timeout = _POLL_S
        if self._dirty and self.config.fsync == "interval":
            timeout = min(timeout, self._last_fsync + self.config.fsync_interval_s - now)
        if self._since_cp:
            due = self._first_unsigned_mono + self.config.checkpoint_interval_s
            if self._force_cp or self._since_cp >= self.config.checkpoint_every:
                due = now
            timeout = min(timeout, max(due, self._next_cp_try) - now)
        if self._broken:
            timeout = min(timeout, self._next_retry - now)
        elif self._outage is not None:
            timeout = 0.0
        return max(timeout, 0.0)

    def _commit(self, items: list[_Item], gap: _Outage | None) -> None:
        first_seq = seq = self._next_seq
        prev = self._prev
        lines, leaves = [], []
        for item in items:
            record = item.record
            record["v"], record["seq"], record["prev"] = SCHEMA_VERSION, seq, prev
            line = dumps(record)
            leaf = leaf_hash(line)
            lines.append(line)
            leaves.append(leaf)
            prev, seq = leaf.hex(), seq + 1
        try:
            self._prepare_segment(items[0].ts_us)
            assert self._segment is not None
            self._segment.append(b"\n".join(lines) + b"\n", fsync=self.config.fsync == "always")
        except OSError as exc:
            self._failed(items, exc, gap)
            return
        self._next_seq, self._prev = seq, prev
        for leaf in leaves:
            self._tree.append(leaf)
        if not self._since_cp:
            self._first_unsigned_mono = time.monotonic()
        self._since_cp += len(items)
        self._dirty = self.config.fsync != "always"
        self.counters["written"] += len(items)
        if gap is not None:
            self.counters["gaps"] += 1
        if self._broken:
            with self._cond:
                self._broken = False
            logger.warning("the audit log %s is writable again", self.directory)
        for offset, item in enumerate(items):
            if item.future is not None and not item.future.done():
                item.future.set_result(first_seq + offset)
            if item.on_done is not None:
                item.on_done()

    def _failed(self, items: list[_Item], exc: OSError, gap: _Outage | None) -> None:
        """A write or fsync failed: start or extend the outage and apply the policy."""
        self.counters["write_errors"] += 1
        items = [i for i in items if i.kind != "gap"]
        now_us = self._clock_ns() // 1000
        with self._cond:
            if not self._broken:
                logger.error("audit log write failed (%s); policy %s", _describe(exc),
                             self.config.on_failure)
            self._broken = True
            self._last_error = _describe(exc)
            self._next_retry = time.monotonic() + self.config.retry_interval_s
            if gap is not None:  # the gap record was not written: carry its counts on
                later, self._outage = self._outage, gap
                if later is not None:
                    gap.absorb(later)
            self._start_outage(now_us, _describe(exc))
        self._hold(items, exc)

    def _hold(self, items: list[_Item], exc: OSError | None) -> None:
        """Records that cannot be written now: kept (fail-closed) or lost and counted."""
        reason = f"the audit log cannot be written: {self._last_error}"
        if self.config.on_failure == "fail-closed":
            for item in items:
                if item.future is not None and not item.future.done():
                    item.future.set_exception(AuditUnavailableError(reason))
            self._retained.extend(items)
            return
        self._retained.extend(i for i in items if i.kind == "log")  # never given up
        lost = [i for i in items if i.kind == "server"]
        with self._cond:
            outage = self._start_outage(self._clock_ns() // 1000, self._last_error or "write failure")
            for item in lost:
                outage.lose(item.ts_us)
            self.counters["lost"] += len(lost)
        for item in lost:
            if item.future is not None and not item.future.done():
                item.future.set_exception(AuditRecordLostError(reason))

    def _drop(self, items: list[_Item], reason: str) -> None:
        if not items:
            return
        logger.error("%s: %d audit records are lost", reason, len(items))
        with self._cond:
            self.counters["lost"] += len(items)
        for item in items:
            if item.future is not None and not item.future.done():
                item.future.set_exception(AuditRecordLostError(reason))

    # -- segments and checkpoints --------------------------------------------------------------

    def _prepare_segment(self, ts_us: int) -> None:
        seg = self._segment
        if seg is not None and seg.size > 0:
            new_day = self.config.rotate_daily and self._segment_first_us is not None and (
                utc_day(ts_us) != utc_day(self._segment_first_us)
            )
            if new_day or seg.size >= self.config.segment_max_bytes:
                if self._dirty and self.config.fsync != "never":
                    seg.fsync()
                    self._dirty = False
                seg.close()
                self._segment = None
                self._next_retention = 0.0
        if self._segment is None:
            if self._next_seq and (self._last_cp is None or self._last_cp.tree_size != self._next_seq):
                try:  # every segment boundary is signed (retention relies on it)
                    self._checkpoint()
                except AuditKeyError as exc:
                    self._checkpoint_failed(str(exc))
            path = self.directory / segment_name(self._next_seq)
            self._segment = AppendFile(path, durable_create=self.config.fsync != "never")
            self._segment_first_us = None
        if self._segment_first_us is None:
            self._segment_first_us = ts_us

    def _checkpoint(self) -> None:
        """Sign the tree as it stands (raises OSError if the checkpoint cannot be written)."""
        if not self._next_seq or (self._last_cp and self._last_cp.tree_size == self._next_seq):
            self._force_cp = False
            return
        if self._segment is not None and self._dirty and self.config.fsync != "never":
            self._segment.fsync()  # never sign what might not survive
            self._dirty = False
            self._last_fsync = time.monotonic()
        now_us = self._clock_ns() // 1000
        if self.keys.reload():
            self._copy_keyset()
        key = self.keys.signing_key(now_us)
        if self._segment is not None:
            where = (self._segment.path.name, self._segment.size)
        else:
            where = (segment_name(self._next_seq), 0)
        cp = sign_checkpoint(
            key, origin=self.config.origin, tree_size=self._next_seq, root=self._tree.root(),
            last_hash=self._prev, frontier=self._tree.frontier, ts_us=now_us,
            segment=where[0], offset=where[1],
        )
        self._checkpoints.append(cp.to_line(), fsync=self.config.fsync != "never")
        if self._anchor is not None:
            try:
                self._anchor.append(cp.to_line(), fsync=self.config.fsync != "never")
            except OSError as exc:
                self.counters["anchor_errors"] += 1
                logger.warning("cannot copy a checkpoint to the anchor: %s", _describe(exc))
        if self._last_cp is not None and self._last_cp.key_id != key.key_id:
            self._enqueue_internal(
                {"event": "key_rotation", "old_key_id": self._last_cp.key_id, "new_key_id": key.key_id}
            )
        self._last_cp = cp
        self._cp_sizes.add(cp.tree_size)
        self._since_cp = 0
        self._force_cp = False
        self.counters["checkpoints"] += 1

    def _checkpoint_failed(self, reason: str) -> None:
        self.counters["checkpoint_errors"] += 1
        self._next_cp_try = time.monotonic() + self.config.retry_interval_s
        logger.error("cannot write an audit checkpoint: %s", reason)

    def _copy_keyset(self) -> None:
        """Keep a copy of the public key set next to the log (and the anchor) for verifiers."""
        targets = [self.directory] + ([Path(self.config.anchor_dir)] if self.config.anchor_dir else [])
        for target in targets:
            try:
                shutil.copyfile(self.keys.keyset_path, target / KEYSET_COPY)
            except OSError as exc:
                logger.warning("cannot copy the audit public keys to %s: %s", target, exc)

    # -- periodic work -------------------------------------------------------------------------

    def _housekeeping(self, closing: bool) -> None:
        now = time.monotonic()
        cfg = self.config
        try:
            if self._dirty and cfg.fsync == "interval" and (
                closing or now - self._last_fsync >= cfg.fsync_interval_s
            ):
                assert self._segment is not None
                self._segment.fsync()
                self._dirty, self._last_fsync = False, now
        except OSError as exc:
            self._failed([], exc, None)
            return
        due = self._since_cp and (
            closing or self._force_cp or self._since_cp >= cfg.checkpoint_every
            or now - self._first_unsigned_mono >= cfg.checkpoint_interval_s
        )
        if due and (closing or now >= self._next_cp_try):
            try:
                self._checkpoint()
            except OSError as exc:
                self._checkpoint_failed(_describe(exc))
            except AuditKeyError as exc:
                self._checkpoint_failed(str(exc))
        if cfg.retention_months and now >= self._next_retention and not closing:
            self._next_retention = now + _RETENTION_EVERY_S
            self.enforce_retention()
        if now >= self._next_spool and not closing:
            self._next_spool = now + _POLL_S
            self._poll_spool()

    def enforce_retention(self, *, now_us: int | None = None) -> list[str]:
        """Remove the expired, checkpointed oldest segments; returns their names. The writer
        calls this hourly and after each rotation; call it yourself only on a closed log's
        writer thread or in tests."""
        now_us = now_us if now_us is not None else self._clock_ns() // 1000
        with self._retention_lock:
            return self._enforce_retention(now_us)

    def _enforce_retention(self, now_us: int) -> list[str]:
        try:
            expired = expired_prefix(
                list_segments(self.directory), self._cp_sizes, now_us=now_us,
                months=self.config.retention_months,
            )
        except (OSError, AuditError) as exc:
            logger.warning("audit retention skipped: %s", exc)
            return []
        if not expired:
            return []
        remove([path for _, path, _ in expired])
        names = [path.name for _, path, _ in expired]
        self._enqueue_internal({
            "event": "retention",
            "segments": names,
            "from_seq": expired[0][0],
            "to_seq": expired[-1][2] - 1,
            "checkpoint_tree_size": expired[-1][2],
            "retention_months": self.config.retention_months,
        })
        logger.info("audit retention removed %s", ", ".join(names))
        return names

    def _poll_spool(self) -> None:
        spool = self.directory / ERASURE_SPOOL
        if not spool.is_dir():
            return
        for path in sorted(spool.glob("*.json")):
            if path in self._spool_inflight:
                continue
            try:
                entry = json.loads(path.read_bytes())
                record = erasure_record(
                    str(entry["pid"]), entry.get("key_generation"), entry.get("legal_basis"),
                    via="cli", requested=entry.get("requested"),
                )
            except (OSError, ValueError, KeyError, TypeError) as exc:
                logger.warning("ignoring erasure spool file %s: %s", path.name, exc)
                continue
            self._spool_inflight.add(path)
            self._enqueue_internal(record, on_done=functools.partial(self._spool_done, path))

    def _spool_done(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        self._spool_inflight.discard(path)


def erasure_record(
    pid: str, generation: str | None, legal_basis: str | None, *,
    via: Literal["api", "cli"], requested: str | None = None,
) -> dict[str, Any]:
    """The ``erasure`` record: the subject's pseudonym and the key generation destroyed."""
    record: dict[str, Any] = {
        "event": "erasure",
        "subject": {"pid": pid},
        "key_generation": generation,
        "found": generation is not None,
        "legal_basis": legal_basis,
        "via": via,
    }
    if requested is not None:
        record["requested"] = requested
    return record
