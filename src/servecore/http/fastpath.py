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
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson

from servecore.errors import ServecoreError
from servecore.http import body as bodies
from servecore.http import v2
from servecore.http.connection import Cycle
from servecore.http.responses import JSON, OCTET_STREAM, error_headers, header_block, request_headers
from servecore.models import READY

if TYPE_CHECKING:
    import numpy as np

    from servecore.batching.scheduler import BatchTiming
    from servecore.dataplane import DataPlane
    from servecore.http.app import ServecoreApp
    from servecore.models import ModelVersion

logger = logging.getLogger("servecore.http")
#: request paths whose route :meth:`FastInfer.match` remembers
MAX_PATHS = 1024
#: binary request headers whose validation against a model :class:`FastInfer` remembers
MAX_CHECKED = 256


@dataclass(frozen=True, slots=True)
class _Checked:
    """What validating one binary request header against one model version found (it depends on
    the header and the model only): the outputs to answer, the rows, ``timeout`` and ``priority``.
    Shared by the requests that repeat the header; nothing in it is changed after."""

    model: ModelVersion
    wanted: list[tuple[str, bool, int]]
    rows: int
    timeout_us: int
    priority: int


class FastInfer:
    """``POST /v2/models/{m}[/versions/{v}]/infer`` for models with a batch scheduler, routed by
    the app's own router."""

    def __init__(self, app: ServecoreApp) -> None:
        self.app = app
        self.dp = app.dataplane
        self.max_body = self.dp.config.max_body_size
        self._infer = app.model_actions["infer"]
        self._plans = app.endpoints.header_plans
        self._tokens: dict[str, tuple[str, str | None] | None] = {}
        self._checked: dict[bytes, _Checked] = {}

    def match(self, path: str) -> tuple[str, str | None] | None:
        # Clients send the same few paths again and again: the router's answer is kept (the
        # routes never change; which models exist is looked up per request in ``handle``).
        try:
            return self._tokens[path]
        except KeyError:
            pass
        endpoints, params = self.app.route(path)
        token = (params["model"], params.get("version")) if endpoints is self._infer else None
        if len(self._tokens) >= MAX_PATHS:  # many distinct paths: start again, stay bounded
            self._tokens.clear()
        self._tokens[path] = token
        return token

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
            if key == v2.HEADER_LENGTH:
                header_length = value.decode("latin-1")
            elif key == b"content-encoding" or key == b"accept-encoding" and bodies.choose_encoding(value.decode("latin-1")):
                return False
        try:
            if dp.requires_auth:
                dp.authenticate(request_headers(cycle.scope))
            json_length = v2.parse_header_length(header_length, len(body))
            if json_length == 0:
                return False  # raw binary: the ASGI path checks the model's single input
            header = body[:json_length] if json_length is not None else None  # None: JSON data
            # what a request repeats but for its tensor data: a binary request's JSON header, a
            # JSON request's document with its data set aside by the compiled scanner
            cut = v2.cut_json(body, len(body), dp.codec) if header is None else None
            key = header if cut is None else cut[0]
            known = self._known(model, body, key, cut) if key is not None else None
            if known is not None:
                # validated before: the tensors are all this request brings, and its id
                feeds, request_id, checked = known
                wanted, rows = checked.wanted, checked.rows
                timeout_us, priority = checked.timeout_us, checked.priority
            else:
                if header is None:
                    request = v2.parse_cut_request(
                        body, len(body), cut, model_name=name, model_version=version, codec=dp.codec, plans=self._plans
                    )
                else:
                    request = v2.parse_request(
                        body, json_length, model_name=name, model_version=version, codec=dp.codec, plans=self._plans
                    )
                feeds = dp._feeds(model, request.inputs)
                request_id = request.id
                wanted = dp._requested_outputs(model, request)
                rows = request.inputs[0].shape[0]
                if rows <= 0:  # an empty request runs unbatched
                    return False
                timeout_us, priority = dp.batch_parameters(request, rows)
                if key is not None:
                    self._remember(key, cut, _Checked(model, wanted, rows, timeout_us, priority))
        except ServecoreError:
            return False
        fast = FastRequest(dp, cycle, model, request_id, wanted, feeds, rows, start)
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

    def _plan(self, key: bytes, cut: v2.Cut | None) -> v2.Plan | None:
        return self._plans.get(key) if cut is None else self._plans.get_cut(key)

    def _known(
        self, model: ModelVersion, body: bytes, key: bytes, cut: v2.Cut | None
    ) -> tuple[dict[str, np.ndarray], str | None, _Checked] | None:
        """A request whose header (*key*: a binary request's JSON header, or a cut JSON request's
        document without its data) was planned (``v2.HeaderPlans``) and validated against this
        very model version before: its tensors by input name, cut out by the plan, its id, and
        what the validation found. The
        validation (``_feeds``, ``_requested_outputs``, ``batch_parameters``) reads the header and
        the model only, so it holds for every body the plan accepts; a reloaded model is another
        version object and is validated afresh. (A binary header and a cut document are never
        the same bytes: one announces ``binary_data_size``, the other holds ``"data":null``.)"""
        checked = self._checked.get(key)
        if checked is None or checked.model is not model:
            return None
        plan = self._plan(key, cut)
        if plan is None:
            return None
        tensors = plan.tensors(memoryview(body), None if cut is None else cut[1])
        if tensors is None:
            return None
        return {name: tensor for (name, *_), tensor in zip(plan.inputs, tensors)}, plan.id, checked

    def _remember(self, key: bytes, cut: v2.Cut | None, checked: _Checked) -> None:
        if self._plan(key, cut) is None:
            return  # not planned (BYTES inputs, JSON data left to orjson): each body is parsed in full anyway
        if len(self._checked) >= MAX_CHECKED:
            self._checked.clear()
        self._checked[key] = checked


class FastRequest:
    """One request on the fast path: the scheduler's result sink, and its answer."""

    __slots__ = ("cycle", "dp", "feeds", "finished", "model", "queue_id", "request_id", "rows", "start", "wanted")

    def __init__(
        self, dp: DataPlane, cycle: Cycle, model: ModelVersion, request_id: str | None,
        wanted: list[tuple[str, bool, int]], feeds: dict[str, np.ndarray], rows: int, start: int,
    ) -> None:
        self.dp = dp
        self.cycle = cycle
        self.model = model
        self.request_id = request_id
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
        model = self.model
        try:
            response = self.dp.batched_response(
                model, self.request_id, self.feeds, self.wanted, self.rows, self.start, outputs, timing
            )
            payload, json_size = v2.encode_response(response, self.dp.codec)
        except ServecoreError as exc:
            self._error(exc)
            return
        if json_size is None:
            self.cycle.answer(200, header_block(JSON, len(payload)), payload)
        else:
            self.cycle.answer(
                200, header_block(OCTET_STREAM, len(payload), [(v2.HEADER_LENGTH, str(json_size).encode())]), payload
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
        scheduler = self.model.scheduler
        if scheduler is not None:
            scheduler.cancel(self.queue_id)
        self._answer_error(499, "the client disconnected before the answer was ready", [])

    def _error(self, exc: ServecoreError) -> None:
        self._answer_error(exc.status_code, exc.message, error_headers(exc))

    def _answer_error(self, status: int, message: str, headers: list[tuple[bytes, bytes]]) -> None:
        self.dp.metrics.http_errors.labels(str(status)).inc()
        body = orjson.dumps({"error": message})
        self.cycle.answer(status, header_block(JSON, len(body), headers), body)
