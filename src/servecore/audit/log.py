"""The audit log writer: one sequencer thread, group commit, and the failure policy.

Callers on any thread hand events to :meth:`AuditLog.submit` (or :meth:`~AuditLog.submit_durable`
to learn when the record is on disk). Submitting validates and encodes the event (canonical JSON,
a known event type, no header fields), stamps it with the UTC time and the monotonic clock under
the queue lock (so time order and queue order agree) and appends it to a bounded queue; it never
waits for the disk. The writer thread drains the whole queue at once, gives each record its
``seq`` and ``prev``, writes the batch with one ``write`` (group commit), fsyncs per policy and
only then resolves the durable futures, in seq order.

Write failures (``ENOSPC``, ``EIO``, a failed fsync) leave no partial record (the batch is cut
back) and start an *outage*. ``fail-closed``: :attr:`AuditLog.writable` turns False, new records
are refused with :class:`AuditUnavailableError` (503) and the records already accepted are kept
and written once a retry succeeds. ``fail-open``: records keep being accepted; those that cannot
be written are counted. Either way, the first successful write after the outage ends with one
``audit_gap`` record stating the records lost and refused, the time range and the seq it
followed. A full queue is handled the same way. Nothing is dropped without being counted.

Between commits the writer fsyncs (``interval``), signs checkpoints (every ``checkpoint_every``
records, ``checkpoint_interval_s`` seconds, at rotation and at close), applies retention, and
writes the ``erasure`` records of erasures made by ``servecore audit erase`` while the server held
the log (:mod:`~servecore.audit.store` does the disk side).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from servecore.audit.config import AuditConfig
from servecore.audit.errors import (
    AuditKeyError,
    AuditRecordLostError,
    AuditUnavailableError,
    CanonicalError,
)
from servecore.audit.events import SERVER_EVENTS, erasure_record
from servecore.audit.keys import AuditKeys
from servecore.audit.lockfile import DirectoryLock
from servecore.audit.outage import Outage
from servecore.audit.payload import encrypt_payload
from servecore.audit.records import Template, make_template
from servecore.audit.recovery import recover
from servecore.audit.spool import read_spool
from servecore.audit.store import LogStore

if TYPE_CHECKING:
    from typing_extensions import Self

logger = logging.getLogger("servecore.audit")

_POLL_S = 1.0
_RETENTION_EVERY_S = 3600.0
_Kind = Literal["server", "log", "gap"]


class _Item:
    """A queued record: submitted by the server, written by the log itself, or the gap record."""

    __slots__ = ("future", "kind", "mono_ns", "on_done", "template", "ts_us")

    def __init__(
        self, template: Template, future: Future[int] | None, kind: _Kind,
        on_done: Callable[[], None] | None = None,
    ) -> None:
        self.template, self.future, self.kind, self.on_done = template, future, kind, on_done
        self.ts_us = self.mono_ns = 0


def _describe(exc: OSError) -> str:
    return f"{type(exc).__name__} [errno {exc.errno}]: {exc.strerror or exc}"


class AuditLog:
    """A tamper-evident audit log in ``config.directory``: open it, submit, close it.

    Opening takes the directory's writer lock, cuts a torn tail (writing a ``recovery`` record)
    and starts the writer thread; it raises :class:`~servecore.audit.errors.AuditLogLockedError`,
    :class:`~servecore.audit.errors.AuditCorruptError` or
    :class:`~servecore.audit.errors.AuditKeyError` when it cannot.
    """

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
            self._store = LogStore(config, self.keys, state, clock_ns)
        except BaseException:
            self._lock.release()
            raise
        self._force_cp = bool(state.unsigned)
        self._next_cp_try = self._next_spool = self._next_retention = 0.0
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
        self._outage: Outage | None = None
        self.counters = dict.fromkeys(
            ("written", "commits", "lost", "refused", "write_errors", "checkpoints",
             "checkpoint_errors", "gaps"), 0,
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
            logger.warning("audit log %s recovered: cut %d torn bytes, %d records were unsigned",
                           self.directory, state.truncated_bytes, state.unsigned)
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
        """Queue one event; never blocks on the disk (see the module docstring for failures).
        Raises :class:`CanonicalError` for an invalid event, :class:`AuditUnavailableError`
        when fail-closed refuses it."""
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
        """*data* sealed under *subject*'s key (:func:`~servecore.audit.payload.encrypt_payload`)."""
        return encrypt_payload(self.keys, subject, data, max_bytes=max_bytes)

    def erase_subject(self, subject: str, *, legal_basis: str | None = None) -> Future[int]:
        """Destroy *subject*'s payload key and record the erasure (an unknown subject is
        recorded too, with ``found: false``). The future gives the erasure record's seq."""
        self.ensure_accepting()
        pid, generation = self.keys.erase_subject(subject)
        return self._enqueue_internal(erasure_record(pid, generation, legal_basis, via="api"))

    def enforce_retention(self, *, now_us: int | None = None) -> list[str]:
        """Remove expired, signed segments now (the writer also does this hourly and after each
        rotation); returns the names removed."""
        now_us = now_us if now_us is not None else self._clock_ns() // 1000
        with self._retention_lock:
            record = self._store.prune(now_us)
        if record is None:
            return []
        self._enqueue_internal(record)
        return list(record["segments"])

    def stats(self) -> dict[str, Any]:
        """Counters and state for metrics and health checks."""
        with self._cond:
            return {
                **self.counters,
                "queue_depth": len(self._buf),
                "retained": len(self._retained),
                "anchor_errors": self._store.anchor_errors,
                "writable": self.writable,
                "last_error": self._last_error,
                "next_seq": self._store.next_seq,
                "signed_tree_size": self._store.last_cp.tree_size if self._store.last_cp else 0,
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
        self._store.close()
        self._lock.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- queueing (callers hold no lock) --------------------------------------------------------

    def _prepare(self, event: Mapping[str, Any]) -> Template:
        if not isinstance(event, Mapping):
            raise CanonicalError(f"an audit event is a mapping, not {type(event).__name__}")
        kind = event.get("event")
        if kind not in SERVER_EVENTS:
            raise CanonicalError(f"unknown or reserved audit event type {kind!r}")
        return make_template(event)

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

    def _put(self, template: Template, future: Future[int] | None) -> None:
        item = _Item(template, future, "server")
        with self._cond:
            self._check_open()
            if len(self._buf) >= self.config.queue_size:  # fail-open
                now = self._clock_ns() // 1000
                self._start_outage(now, "queue full").lose(now)
                self.counters["lost"] += 1
                if future is not None:
                    future.set_exception(AuditRecordLostError("the audit queue is full"))
                return
            self._stamp(item)
            self._buf.append(item)
            if self._waiting:
                self._cond.notify()

    def _stamp(self, item: _Item) -> None:
        """With _cond held: the record's times, in queue order."""
        item.ts_us = self._clock_ns() // 1000
        item.mono_ns = time.monotonic_ns()

    def _enqueue_internal(
        self, record: dict[str, Any], on_done: Callable[[], None] | None = None
    ) -> Future[int]:
        """Queue a record of the log's own, bypassing the queue bound and the policy."""
        future: Future[int] = Future()
        item = _Item(make_template(record), future, "log", on_done)
        with self._cond:
            self._stamp(item)
            self._buf.append(item)
            if self._waiting:
                self._cond.notify()
        return future

    def _start_outage(self, now_us: int, reason: str) -> Outage:
        """With _cond held: the current outage, started now if there is none."""
        if self._outage is None:
            self._outage = Outage(now_us, reason, self._store.next_seq - 1)
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
                gap: Outage | None = None
                if attempt and self._outage is not None:
                    gap, self._outage = self._outage, None
                    record = gap.record(self.config.on_failure, self._clock_ns() // 1000)
                    item = _Item(make_template(record), None, "gap")
                    self._stamp(item)
                    batch.append(item)
            items, self._retained = self._retained + batch, []
            if items:
                if attempt:
                    self._commit(items, gap)
                else:
                    self._hold(items)
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
        store = self._store
        timeout = _POLL_S
        if store.dirty and self.config.fsync == "interval":
            timeout = min(timeout, store.last_fsync + self.config.fsync_interval_s - now)
        if store.unsigned:
            due = store.first_unsigned + self.config.checkpoint_interval_s
            if self._force_cp or store.unsigned >= self.config.checkpoint_every:
                due = now
            timeout = min(timeout, max(due, self._next_cp_try) - now)
        if self._broken:
            timeout = min(timeout, self._next_retry - now)
        elif self._outage is not None:
            timeout = 0.0
        return max(timeout, 0.0)

    def _commit(self, items: list[_Item], gap: Outage | None) -> None:
        try:
            first_seq = self._store.append([(i.template, i.ts_us, i.mono_ns) for i in items])
        except OSError as exc:
            self._failed(items, exc, gap)
            return
        self.counters["written"] += len(items)
        self.counters["commits"] += 1
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
        self._note_rotations()

    def _failed(self, items: list[_Item], exc: OSError, gap: Outage | None) -> None:
        """A write or fsync failed: start or extend the outage and apply the policy."""
        self.counters["write_errors"] += 1
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
        self._hold([i for i in items if i.kind != "gap"])

    def _hold(self, items: list[_Item]) -> None:
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
            outage = self._start_outage(self._clock_ns() // 1000, self._last_error or reason)
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

    # -- periodic work -------------------------------------------------------------------------

    def _housekeeping(self, closing: bool) -> None:
        now = time.monotonic()
        cfg, store = self.config, self._store
        if store.dirty and cfg.fsync == "interval" and (
            closing or now - store.last_fsync >= cfg.fsync_interval_s
        ):
            try:
                store.fsync()
            except OSError as exc:
                self._failed([], exc, None)
                return
        due = store.unsigned and (
            closing or self._force_cp or store.unsigned >= cfg.checkpoint_every
            or now - store.first_unsigned >= cfg.checkpoint_interval_s
        )
        if due and (closing or now >= self._next_cp_try):
            self._checkpoint()
        if cfg.retention_months and now >= self._next_retention and not closing:
            self._next_retention = now + _RETENTION_EVERY_S
            self.enforce_retention()
        if now >= self._next_spool and not closing:
            self._next_spool = now + _POLL_S
            self._poll_spool()

    def _checkpoint(self) -> None:
        try:
            if self._store.checkpoint() is not None:
                self.counters["checkpoints"] += 1
            self._force_cp = False
        except (OSError, AuditKeyError) as exc:
            self.counters["checkpoint_errors"] += 1
            self._next_cp_try = time.monotonic() + self.config.retry_interval_s
            reason = _describe(exc) if isinstance(exc, OSError) else str(exc)
            logger.error("cannot write an audit checkpoint: %s", reason)
        self._note_rotations()

    def _note_rotations(self) -> None:
        while self._store.rotations:
            old, new = self._store.rotations.pop(0)
            self._enqueue_internal({"event": "key_rotation", "old_key_id": old, "new_key_id": new})

    def _poll_spool(self) -> None:
        for path, record in read_spool(self.directory):
            if path in self._spool_inflight:
                continue
            self._spool_inflight.add(path)
            self._enqueue_internal(record, on_done=functools.partial(self._spool_done, path))

    def _spool_done(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        self._spool_inflight.discard(path)

