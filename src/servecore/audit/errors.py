"""Errors of the audit log.

:class:`AuditUnavailableError` derives from :class:`servecore.errors.UnavailableError`, so the
transport answers 503 for it without knowing about the audit log: the fail-closed policy is
"no record, no answer".
"""

from __future__ import annotations

from servecore.errors import ServecoreError, UnavailableError


class AuditError(ServecoreError):
    """Root of the audit log's errors (500 if one ever reaches a request)."""


class CanonicalError(AuditError, ValueError):
    """A value cannot be written as canonical JSON (NaN, ±inf, a non-str key, a duplicate key,
    invalid UTF-8, a type JSON does not have), or a line is not canonical."""


class AuditKeyError(AuditError):
    """Key material is missing, malformed, or would be overwritten."""


class AuditCorruptError(AuditError):
    """The log on disk cannot be continued: a record in the middle is invalid, the chain is
    broken, or a checkpoint covers records that are no longer there. Run
    ``servecore audit verify`` and decide; the log is never repaired past a torn tail."""


class AuditUnavailableError(AuditError, UnavailableError):
    """Fail-closed: the log cannot take records now (a write failed, the queue is full, or the log
    is closed), so the request is refused (503)."""


class AuditRecordLostError(AuditError):
    """Fail-open: this record could not be written; it is counted in the next ``audit_gap``."""


class AuditLogLockedError(AuditError):
    """Another process (a running server) has the log open for writing."""
