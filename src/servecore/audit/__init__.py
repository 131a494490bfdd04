"""Tamper-evident, privacy-preserving audit log (issue 6): the library behind ``--audit-dir``
and ``servecore audit``.

* :mod:`~servecore.audit.log`: :class:`AuditLog`, the writer (queue, group commit, checkpoints,
  failure policy, recovery, rotation, retention, erasure);
* :mod:`~servecore.audit.config`: :class:`AuditConfig`, its options;
* :mod:`~servecore.audit.events`: event types and record builders;
* :mod:`~servecore.audit.keys`: key directory, pseudonyms, keyed digests, per-subject keys;
* :mod:`~servecore.audit.payload`: payload capture sealed per subject (crypto-shredding);
* :mod:`~servecore.audit.verify`, :mod:`~servecore.audit.proof`: offline verification,
  inclusion proofs, export;
* :mod:`~servecore.audit.canonical`, :mod:`~servecore.audit.merkle`,
  :mod:`~servecore.audit.checkpoint`, :mod:`~servecore.audit.records`: the formats.

Importing this package starts nothing and imports no cryptography; :class:`AuditLog` and
:func:`keygen` are loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from servecore.audit.config import AuditConfig, FailurePolicy, FsyncPolicy
from servecore.audit.errors import (
    AuditCorruptError,
    AuditError,
    AuditKeyError,
    AuditLogLockedError,
    AuditRecordLostError,
    AuditUnavailableError,
    CanonicalError,
)
from servecore.audit.events import AuditSink, ModelRef, inference_event, model_event, simple_event

if TYPE_CHECKING:
    from servecore.audit.keys import AuditKeys, keygen
    from servecore.audit.log import AuditLog

__all__ = [
    "AuditConfig",
    "AuditCorruptError",
    "AuditError",
    "AuditKeyError",
    "AuditKeys",
    "AuditLog",
    "AuditLogLockedError",
    "AuditRecordLostError",
    "AuditSink",
    "AuditUnavailableError",
    "CanonicalError",
    "FailurePolicy",
    "FsyncPolicy",
    "ModelRef",
    "inference_event",
    "keygen",
    "model_event",
    "simple_event",
]

_LAZY = {"AuditLog": "servecore.audit.log", "AuditKeys": "servecore.audit.keys",
         "keygen": "servecore.audit.keys"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
