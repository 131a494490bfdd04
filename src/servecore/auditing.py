"""The server's side of the audit log: which events it records, built once for every sink.

Records are built with :mod:`servecore.audit.events`: the caller's principal pseudonymised and
the request and response bodies as keyed digests under the keys of ``--audit-keys`` (under the
data subject's own key when the request names one), so every sink gets the same
privacy-preserving record. With ``--audit-payloads`` the bodies of a request that names a data
subject are also kept, encrypted under that subject's key.

Under ``--audit-fsync always`` an inference is answered only once its record is durable; under
``fail-closed`` an inference is refused (503) while a sink cannot take records.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pluggy

    from servecore.audit.events import AuditSink
    from servecore.audit.keys import AuditKeys
    from servecore.config import ServeConfig
    from servecore.drift.monitor import Alert
    from servecore.models import ModelVersion
    from servecore.types import ModelEvent

logger = logging.getLogger("servecore.audit")

#: largest body kept as a payload; a longer one is cut and its record says from what size
PAYLOAD_CAP = 1 << 20
#: model lifecycle states -> audit event types
_MODEL_EVENTS = {"ready": "model_load", "unloaded": "model_unload", "failed": "model_failure"}


def new_request_id() -> str:
    return uuid.uuid4().hex


def trace_id(traceparent: str | None) -> str | None:
    """The trace id of a W3C ``traceparent`` header (``00-<trace id>-<span id>-<flags>``)."""
    if not traceparent:
        return None
    parts = traceparent.strip().split("-")
    return parts[1] if len(parts) >= 4 and len(parts[1]) == 32 else None


class Auditor:
    """Builds audit records and hands them to every registered sink."""

    def __init__(self, config: ServeConfig, keys: AuditKeys, sinks: list[AuditSink]) -> None:
        self.config = config
        self.keys = keys
        self.sinks = sinks
        self.durable = config.audit_fsync == "always"

    @classmethod
    def from_plugins(cls, pm: pluggy.PluginManager, config: ServeConfig) -> Auditor | None:
        sinks: list[AuditSink] = []
        pm.hook.servecore_register_audit_sinks(register=sinks.append, config=config)
        if not sinks:
            return None
        from servecore.audit.keys import AuditKeys
        from servecore.errors import ConfigError

        if not config.audit_keys:
            for sink in sinks:
                sink.close(5)
            raise ConfigError("an audit sink is registered but --audit-keys is not given")
        return cls(config, AuditKeys(Path(config.audit_keys)), sinks)

    # -- the request path ----------------------------------------------------------------------

    def ensure_accepting(self) -> None:
        """Raise AuditUnavailableError (503) when a sink cannot take a record now (fail-closed)."""
        for sink in self.sinks:
            sink.ensure_accepting()

    async def inference(
        self,
        *,
        request_id: str,
        model: ModelVersion | None,
        model_name: str,
        model_version: str | None,
        status: str,
        started_ns: int,
        principal: str | None,
        headers: Mapping[str, str],
        body: bytes | None,
        response: bytes | None,
        error_code: str | None = None,
    ) -> None:
        """Record one inference (answered, failed or refused); waits for durability when asked."""
        from servecore.audit.events import ModelRef, inference_event

        subject = headers.get(self.config.audit_subject_header.lower()) or None
        ref = ModelRef(
            name=model.name if model is not None else model_name,
            version=model.version if model is not None else model_version,
            artifact_sha256=(model.source.sha256 or None) if model is not None else None,
            reference_profile_sha256=(
                model.monitor.profile.sha256 if model is not None and model.monitor is not None else None
            ),
        )
        capture = self.config.audit_payloads and subject is not None
        event = inference_event(
            request_id=request_id,
            model=ref,
            status=status,
            trace_id=trace_id(headers.get("traceparent")),
            principal_pid=self.keys.pseudonym(principal) if principal else None,
            subject_pid=self.keys.subject_pid(subject) if subject else None,
            input_digest=self.keys.digest(body, subject=subject) if body is not None else None,
            output_digest=self.keys.digest(response, subject=subject) if response is not None else None,
            error_code=error_code,
            latency_us={"total": (time.perf_counter_ns() - started_ns) // 1000},
            input_payload=self._seal(subject, body) if capture and body is not None else None,
            output_payload=self._seal(subject, response) if capture and response is not None else None,
        )
        await self._submit(event, wait=self.durable)

    def _seal(self, subject: str | None, data: bytes) -> dict[str, Any]:
        from servecore.audit.payload import encrypt_payload

        assert subject is not None
        return encrypt_payload(self.keys, subject, data, max_bytes=PAYLOAD_CAP)

    async def _submit(self, event: Mapping[str, Any], *, wait: bool) -> None:
        from servecore.audit.errors import AuditRecordLostError

        if not wait:
            for sink in self.sinks:
                self._submit_now(sink, event)
            return
        futures = [asyncio.wrap_future(sink.submit_durable(event)) for sink in self.sinks]
        for future in futures:
            try:
                await future
            except AuditRecordLostError:
                pass  # fail-open: counted, and reported by the next audit_gap record

    @staticmethod
    def _submit_now(sink: AuditSink, event: Mapping[str, Any]) -> None:
        from servecore.audit.errors import AuditError

        try:
            sink.submit(event)
        except AuditError as exc:  # fail-closed and not writable: the sink has counted it
            logger.warning("audit record not taken: %s", exc.message)

    # -- everything else (any thread): queued, never waited for --------------------------------

    def record(self, event: Mapping[str, Any]) -> None:
        for sink in self.sinks:
            self._submit_now(sink, event)

    def model_event(self, event: ModelEvent) -> None:
        from servecore.audit.events import ModelRef, model_event

        from servecore.lifecycle import SWAP_REASON

        kind = _MODEL_EVENTS.get(event.state)
        if kind is None or not event.version:
            return
        ref = ModelRef(event.model, event.version)
        detail = {"backend": event.backend, "reason": event.reason} if event.reason else {"backend": event.backend}
        self.record(model_event(kind, ref, error=event.reason if kind == "model_failure" else None, detail=detail))
        if kind == "model_load" and event.reason.startswith(SWAP_REASON):
            previous = ModelRef(event.model, event.reason[len(SWAP_REASON):])
            self.record(model_event("model_swap", ref, previous=previous, detail={"backend": event.backend}))

    def drift_alert(self, alert: Alert) -> None:
        from servecore.audit.events import simple_event

        self.record(simple_event(
            "drift_alert", model={"name": alert.model, "version": alert.version}, window_id=alert.window,
            features=[alert.feature], open=alert.open,
        ))

    def feedback(self, model: str, version: str, request_ids: list[str], outcomes: Mapping[str, int]) -> None:
        from servecore.audit.events import simple_event

        self.record(simple_event(
            "label_feedback", model={"name": model, "version": version}, request_ids=request_ids[:1000],
            outcomes=dict(outcomes),
        ))

    def startup(self, version: str) -> None:
        from servecore.audit.events import simple_event

        import os

        self.record(simple_event("startup", version=version, pid=os.getpid()))

    def close(self, reason: str = "shutdown") -> None:
        from servecore.audit.events import simple_event

        self.record(simple_event("shutdown", reason=reason))
        for sink in self.sinks:
            try:
                sink.close(30)
            except Exception:
                logger.exception("closing an audit sink failed")
