"""The fast path for inference on batched models: no task, no ASGI, no coroutine per request.

Measured with py-spy on the batching server (heavy model, 64 connections), a request's Python
cost was spread over some twenty layers: the ASGI scope, ``receive``/``send``, a task per
request, routing, the guard, the endpoint, three data-plane coroutines, the scheduler's future.
None was large; together they cost more than the model's own share of a batch of 32. Here a
request whose body arrived whole goes from the HTTP connection (:class:`FastRoute`) straight into
its model's scheduler, with a :class:`FastRequest` as the scheduler's result sink, and its
response is written from the batch's completion callback.

It answers exactly what the ASGI path answers: it parses and validates with the same functions,
counts the same statistics and metrics and encodes the same bytes. What it does not handle
(an input that fails parsing or validation, a model that does not batch or is not ready,
compressed bodies or responses, the audit log, a failed authentication, raw binary requests) it
declines before anything is counted, and the ASGI path answers it from the start. Once a
request is handed to the scheduler, what the scheduler says (more rows than ``max_batch_size``,
a full queue, a deadline passed in the queue, a failed batch) is answered here, with the error
the ASGI path would send. So every error message
comes from one place; ``tests/http/test_fastpath.py`` checks that both paths answer a corpus of
good and bad requests with the same bytes.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import orjson

from servecore.errors import ServecoreError, TooManyRequestsError
from servecore.http import body as bodies
from servecore.http import v2
from servecore.http.connection import Cycle
from servecore.http.responses import JSON, OCTET_STREAM
from servecore.models import READY
from servecore.types import InferenceResponse

if TYPE_CHECKING:
    import numpy as np

    from servecore.batching.scheduler import BatchTiming
    from servecore.dataplane import DataPlane
    from servecore.models import ModelVersion
    from servecore.types import InferenceRequest

logger = logging.getLogger("servecore.http")

HEADER_LENGTH = b"inference-header-content-length"
_PREFIX, _SUFFIX = "/v2/models/", "/infer"


def header_block(content_type: bytes, length: int, extra: list[tuple[bytes, bytes]] | tuple[()] = ()) -> bytes:
    """The header lines :func:`servecore.http.responses.send_body` sends, as bytes."""
    block = b"content-type: %s\r\ncontent-length: %d\r\n" % (content_type, length)
    for name, value in extra:
        block += name + b": " + value + b"\r\n"
    return block


def error_headers(exc: ServecoreError) -> list[tuple[bytes, bytes]]:
    """The headers an error response carries besides its content type and length."""
    if exc.status_code == 401:
        return [(b"www-authenticate", b"Bearer")]
    if isinstance(exc, TooManyRequestsError):
        return [(b"retry-after", str(exc.retry_after_s).encode())]
    return []


class FastInfer:
    """``POST /v2/models/{m}[/versions/{v}]/infer`` for models with a batch scheduler."""

    def __init__(self, dataplane: DataPlane) -> None:
        self.dp = dataplane
        self.max_body = dataplane.config.max_body_size

    def match(self, path: str) -> tuple[str, str | None] | None:
        if not path.startswith(_PREFIX) or not path.endswith(_SUFFIX):
            return None
        parts = path[len(_PREFIX):-len(_SUFFIX)].split("/")
        if len(parts) == 1:
            return (parts[0], None) if parts[0] else None
        if len(parts) == 3 and parts[1] == "versions" and parts[0] and parts[2]:
            return parts[0], parts[2]
        return None

    def handle(self, cycle: Cycle, token: tuple[str, str | None], body: bytes) -> bool:
        dp = self.dp
        if dp.shutting_down or dp.auditor is not None or len(body) > self.max_body:
            return False
        name, version = token
        try:
            model = dp.models.get(name, version)
        except ServecoreError:
            return False
        scheduler = model.scheduler
        if scheduler is None or model.state != READY:
            return False
        start = time.perf_counter_ns()
        header_length = None
        for key, value in cycle.scope["headers"]:
            if key == HEADER_LENGTH:
                header_length = value.decode("latin-1")
            elif key == b"content-encoding" or key == b"accept-encoding" and bodies.choose_encoding(value.decode("latin-1")):
                return False
        try:
            if dp.requires_auth:
                dp.authenticate({k.decode("latin-1"): v.decode("latin-1") for k, v in cycle.scope["headers"]})
            json_length = v2.parse_header_length(header_length, len(body))
            if json_length == 0:
                return False  # raw binary: the ASGI path checks the model's single input
            request = v2.parse_request(body, json_length, model_name=name, model_version=version, codec=dp.codec)
            feeds = dp._feeds(model, request.inputs)
            wanted = dp._requested_outputs(model, request)
            rows = request.inputs[0].shape[0]
            if rows <= 0 or any(tensor.shape[0] != rows for tensor in request.inputs):
                return False
            timeout_us, priority = dp.queue_parameters(request)
        except ServecoreError:
            return False
        fast = FastRequest(dp, cycle, model, request, wanted, feeds, rows, start)
        model.inflight += 1  # no await since the lookup: a version being swapped out waits for it
        dp.metrics.inflight.inc()
        try:
            fast.queue_id = scheduler.enqueue(feeds, rows, fast, timeout_us=timeout_us, priority=priority)
        except ServecoreError as exc:
            fast.set_exception(exc)
            return True
        if not fast.finished:
            cycle.disconnect_callbacks = [fast.disconnected]
        return True


class FastRequest:
    """One request on the fast path: the scheduler's result sink, and its answer."""

    __slots__ = ("cycle", "dp", "feeds", "finished", "model", "queue_id", "request", "rows", "start", "wanted")

    def __init__(
        self, dp: DataPlane, cycle: Cycle, model: ModelVersion, request: InferenceRequest,
        wanted: list[tuple[str, bool, int]], feeds: dict[str, np.ndarray], rows: int, start: int,
    ) -> None:
        self.dp = dp
        self.cycle = cycle
        self.model = model
        self.request = request
        self.wanted = wanted
        self.feeds = feeds
        self.rows = rows
        self.start = start
        self.finished = False
        self.queue_id = -1

    # -- the scheduler's sink -----------------------------------------------------------------------

    def done(self) -> bool:
        return self.finished

    def _end(self) -> None:
        self.finished = True
        self.cycle.disconnect_callbacks = None
        model = self.model
        model.inflight -= 1
        model.last_used = time.monotonic()
        self.dp.metrics.inflight.dec()

    def set_result(self, result: tuple[dict[str, np.ndarray], BatchTiming]) -> None:
        if self.finished:
            return
        self._end()
        outputs, timing = result
        dp, model, request = self.dp, self.model, self.request
        series = model.series
        try:
            shaped = dp._outputs(model, outputs, self.wanted)
        except ServecoreError as exc:
            dp._failed(model, series, self.start)
            self._error(exc)
            return
        if model.monitor is not None:
            dp._observe(model.monitor, request, self.feeds, outputs, self.rows)
        request_ns = time.perf_counter_ns() - self.start
        model.stats.record_request(self.rows, request_ns, timing.queue_ns, timing.input_ns, timing.infer_ns, timing.output_ns)
        series.success.inc()
        series.request.observe(request_ns / 1e9)
        series.queue.observe(timing.queue_ns / 1e9)
        try:
            payload, json_size = v2.encode_response(
                InferenceResponse(model.name, model.version, shaped, id=request.id), dp.codec
            )
        except ServecoreError as exc:
            self._error(exc)
            return
        if json_size is None:
            self.cycle.answer(200, header_block(JSON, len(payload)), payload)
        else:
            self.cycle.answer(
                200, header_block(OCTET_STREAM, len(payload), [(HEADER_LENGTH, str(json_size).encode())]), payload
            )

    def set_exception(self, exception: BaseException) -> None:
        if self.finished:
            return
        self._end()
        self.dp._failed(self.model, self.model.series, self.start)
        if isinstance(exception, ServecoreError):
            self._error(exception)
        else:  # the scheduler hands on ServecoreErrors only; anything else is a bug, answered 500
            logger.error("fast path: unexpected error for model %r", self.model.name, exc_info=exception)
            self._answer_error(500, "internal server error", [])

    # -- the client ---------------------------------------------------------------------------------

    def disconnected(self) -> None:
        """The client went away before its answer: take the request out of the queue (499)."""
        if self.finished:
            return
        self._end()
        model = self.model
        if model.scheduler is not None and self.queue_id >= 0:
            model.scheduler.cancel(self.queue_id)
        self._answer_error(499, "the client disconnected before the answer was ready", [])

    def _error(self, exc: ServecoreError) -> None:
        self._answer_error(exc.status_code, exc.message, error_headers(exc))

    def _answer_error(self, status: int, message: str, headers: list[tuple[bytes, bytes]]) -> None:
        self.dp.metrics.http_errors.labels(str(status)).inc()
        body = orjson.dumps({"error": message})
        self.cycle.answer(status, header_block(JSON, len(body), headers), body)
