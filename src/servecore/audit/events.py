"""Event types and the shapes of their records.

The server submits mappings with an ``event`` field naming one of :data:`SERVER_EVENTS`; the log
itself writes :data:`LOG_EVENTS` (nobody else may, so a gap or an erasure cannot be forged
through :meth:`~servecore.audit.log.AuditLog.submit`). The header fields (``v``, ``seq``, ``ts``,
``mono_ns``, ``prev``) are the log's and may not be submitted.

The builders below fix the field names the verifier and exports rely on; every value must be
JSON (no NaN, no bytes). Times inside events are integers in microseconds (``latency_us``).
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol

SERVER_EVENTS = frozenset({
    "inference",
    "model_load",
    "model_swap",
    "model_unload",
    "model_failure",
    "config_change",
    "drift_alert",
    "label_feedback",
    "human_override",
    "startup",
    "shutdown",
})
LOG_EVENTS = frozenset({"audit_gap", "recovery", "erasure", "key_rotation", "retention"})
EVENT_TYPES = SERVER_EVENTS | LOG_EVENTS
#: ``status`` of an inference record
STATUSES = frozenset({"ok", "error", "refused", "timeout"})


@dataclass(frozen=True)
class ModelRef:
    """Which model answered: name, version, and the hashes that pin it down."""

    name: str
    version: str | None = None
    artifact_sha256: str | None = None
    reference_profile_sha256: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "artifact_sha256": self.artifact_sha256,
            "reference_profile_sha256": self.reference_profile_sha256,
        }


def inference_event(
    *,
    request_id: str,
    model: ModelRef,
    status: str,
    trace_id: str | None = None,
    principal_pid: str | None = None,
    subject_pid: str | None = None,
    input_digest: str | None = None,
    output_digest: str | None = None,
    error_code: str | None = None,
    latency_us: Mapping[str, int] | None = None,
    input_payload: Mapping[str, Any] | None = None,
    output_payload: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One inference request, answered, failed or refused.

    :param request_id: the id echoed to the caller (``servecore audit prove --request-id``).
    :param model: the model and version that ran (or was asked for, if it never ran).
    :param status: one of :data:`STATUSES`.
    :param principal_pid: ``AuditLog.pseudonym(principal)``, never the principal itself.
    :param subject_pid: ``AuditKeys.subject_pid(subject)`` when a data subject is concerned.
    :param input_digest: ``AuditLog.digest(canonical input bytes, subject=...)``.
    :param error_code: the error's class or HTTP status, for status other than ``ok``.
    :param latency_us: e.g. ``{"total": 1200, "queue": 150, "model": 900}``.
    :param input_payload: ``AuditLog.encrypt_payload(subject, body)`` when capture is on.
    """
    if status not in STATUSES:
        raise ValueError(f"status {status!r} is not one of {sorted(STATUSES)}")
    event: dict[str, Any] = {
        "event": "inference",
        "request_id": request_id,
        "trace_id": trace_id,
        "model": model.as_dict(),
        "caller": {"principal": principal_pid},
        "input": {"digest": input_digest},
        "output": {"digest": output_digest},
        "status": status,
        "error_code": error_code,
        "latency_us": dict(latency_us or {}),
    }
    if subject_pid is not None:
        event["subject"] = {"pid": subject_pid}
    if input_payload is not None:
        event["input"]["payload"] = dict(input_payload)
    if output_payload is not None:
        event["output"]["payload"] = dict(output_payload)
    return event


def model_event(
    event: str, model: ModelRef, *, previous: ModelRef | None = None, error: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``model_load``, ``model_swap`` (with *previous*), ``model_unload`` or ``model_failure``
    (with *error*)."""
    if event not in {"model_load", "model_swap", "model_unload", "model_failure"}:
        raise ValueError(f"{event!r} is not a model event")
    out: dict[str, Any] = {"event": event, "model": model.as_dict()}
    if previous is not None:
        out["previous"] = previous.as_dict()
    if error is not None:
        out["error"] = error
    if detail:
        out["detail"] = dict(detail)
    return out


def simple_event(event: str, **fields: Any) -> dict[str, Any]:
    """Any other server event: ``startup`` (``version``, ``config_sha256``, ``pid``),
    ``shutdown`` (``reason``), ``config_change`` (``changes``), ``drift_alert`` (``model``,
    ``window_id``, ``features``), ``label_feedback`` (``request_id``, ``label_digest``),
    ``human_override`` (``request_id``, ``reviewer``, ``action``)."""
    if event not in SERVER_EVENTS:
        raise ValueError(f"{event!r} is not a server event")
    return {"event": event, **fields}


class AuditSink(Protocol):
    """What the server needs from an audit sink (:class:`~servecore.audit.log.AuditLog` is the
    built-in one; a plugin may provide another)."""

    @property
    def writable(self) -> bool: ...

    def ensure_accepting(self) -> None: ...

    def submit(self, event: Mapping[str, Any]) -> None: ...

    def submit_durable(self, event: Mapping[str, Any]) -> Future[int]: ...

    def close(self, timeout: float | None = None) -> None: ...


def erasure_record(
    pid: str, generation: str | None, legal_basis: str | None, *,
    via: str, requested: str | None = None,
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
