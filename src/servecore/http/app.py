"""The HTTP transport: routes of the Open Inference Protocol as plain ASGI endpoints.

Endpoints parse, call the :class:`~servecore.dataplane.DataPlane`, and serialise. This module is
the only place where errors become status codes. Every error, including unknown routes and
methods, is ``{"error": ...}`` as ``application/json``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable

import orjson

from servecore.audit.errors import AuditUnavailableError
from servecore.auditing import new_request_id
from servecore.dataplane import DataPlane
from servecore.types import InferenceRequest, InferenceResponse
from servecore.errors import InvalidInputError, ServecoreError, UnsupportedEncodingError
from servecore.http import body as bodies
from servecore.http import v2
from servecore.http.responses import OCTET_STREAM, Send, error_headers, request_headers, send_body, send_error, send_json
from servecore.http.v2 import HEADER_LENGTH
from servecore.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE

logger = logging.getLogger("servecore.http")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Endpoint = Callable[[Scope, Receive, Send], Awaitable[None]]

def _model_args(scope: Scope) -> tuple[str, str | None]:
    params = scope["path_params"]
    return params["model"], params.get("version")


class Endpoints:
    """The protocol's endpoints over one data plane."""

    def __init__(self, dataplane: DataPlane) -> None:
        self.dp = dataplane
        self.max_body = dataplane.config.max_body_size
        timeout = dataplane.config.body_timeout
        self.stall_watch = bodies.StallWatch(timeout) if timeout > 0 else None
        self.not_ready = dataplane.config.not_ready_status
        #: binary request headers already parsed (shared with the fast path: both parse alike)
        self.header_plans = v2.HeaderPlans()

    # -- health (never authenticated) ------------------------------------------------------------

    async def live(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_json(send, 200, {"live": True})

    async def ready(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.dp.ready:
            await send_json(send, 200, {"ready": True})
        else:
            await send_json(send, self.not_ready, {"ready": False, "error": "the server is not ready"})

    async def model_ready(self, scope: Scope, receive: Receive, send: Send) -> None:
        name, version = _model_args(scope)
        if self.dp.model_ready(name, version):  # 404 for an unknown model or version
            await send_json(send, 200, {"name": name, "ready": True})
        else:
            await send_json(send, self.not_ready, {"name": name, "ready": False, "error": f"model {name!r} is not ready"})

    # -- metadata ---------------------------------------------------------------------------------

    async def server_metadata(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_json(send, 200, self.dp.server_metadata())

    async def model_metadata(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_json(send, 200, self.dp.model_metadata(*_model_args(scope)))

    async def model_config(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_json(send, 200, self.dp.model_config(*_model_args(scope)))

    async def all_statistics(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_json(send, 200, self.dp.statistics())

    async def model_statistics(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_json(send, 200, self.dp.statistics(*_model_args(scope)))

    async def metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_body(send, 200, self.dp.metrics.render(), content_type=METRICS_CONTENT_TYPE.encode())

    # -- the repository extension ----------------------------------------------------------------

    async def _json(self, receive: Receive) -> Any:
        """A JSON request body (None when empty)."""
        body = await bodies.read_body(receive, content_length=None, limit=self.max_body, watch=self.stall_watch)
        if not body.strip():
            return None
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InvalidInputError(f"the request body is not valid JSON: {exc}") from None

    async def _json_body(self, receive: Receive, scope: Scope) -> dict[str, Any]:
        """A small optional JSON object body (empty means ``{}``)."""
        doc = await self._json(receive)
        if doc is None:
            return {}
        if not isinstance(doc, dict):
            raise InvalidInputError("the request body must be a JSON object")
        return doc

    # -- monitoring -------------------------------------------------------------------------------

    async def drift(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_json(send, 200, self.dp.drift_report(*_model_args(scope)))

    async def feedback(self, scope: Scope, receive: Receive, send: Send) -> None:
        name, version = _model_args(scope)
        self.dp.model(name, version)  # 404 before reading the body
        doc = await self._json(receive)
        entries = doc if isinstance(doc, list) else [doc]
        if not entries or doc is None:
            raise InvalidInputError('send {"id": <request id>, "label": <label>} or a non-empty list of them')
        items: list[tuple[str, Any]] = []
        for number, entry in enumerate(entries):
            where = f"entry {number}" if isinstance(doc, list) else "the body"
            if not isinstance(entry, dict) or "id" not in entry or "label" not in entry:
                raise InvalidInputError(f'{where} must be an object with "id" and "label"')
            request_id = entry["id"]
            if isinstance(request_id, bool) or not isinstance(request_id, (str, int)) or request_id == "":
                raise InvalidInputError(f"{where}: 'id' must be the request's id (a non-empty string)")
            label = entry["label"]
            if label is None or isinstance(label, dict):
                raise InvalidInputError(f"{where}: 'label' must be a class, a number or a list of them (one per row)")
            items.append((str(request_id), label))
        await send_json(send, 200, self.dp.feedback(name, version, items))

    async def repository_index(self, scope: Scope, receive: Receive, send: Send) -> None:
        doc = await self._json_body(receive, scope)
        ready = doc.get("ready", False)
        if not isinstance(ready, bool):
            raise InvalidInputError(f"'ready' must be true or false, not {ready!r}")
        await send_json(send, 200, self.dp.repository_index(ready_only=ready))

    async def _repository_action(self, scope: Scope, receive: Receive) -> str:
        doc = await self._json_body(receive, scope)
        parameters = doc.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise InvalidInputError("'parameters' must be a JSON object")
        unsupported = sorted(set(parameters) - {"unload_dependents"})
        if unsupported:
            raise InvalidInputError(f"parameter {unsupported[0]!r} is not supported by this server")
        return str(scope["path_params"]["model"])

    async def repository_load(self, scope: Scope, receive: Receive, send: Send) -> None:
        name = await self._repository_action(scope, receive)
        await self.dp.load_model(name, scope.get("servecore.principal"))
        await send_json(send, 200, {})

    async def repository_unload(self, scope: Scope, receive: Receive, send: Send) -> None:
        name = await self._repository_action(scope, receive)
        await self.dp.unload_model(name, scope.get("servecore.principal"))
        await send_json(send, 200, {})

    # -- inference --------------------------------------------------------------------------------

    async def infer(self, scope: Scope, receive: Receive, send: Send) -> None:
        name, version = _model_args(scope)
        model = self.dp.model(name, version)  # an unknown model is a 404 whatever the body holds
        audit: AuditContext | None = scope.get("servecore.audit")
        if audit is not None:
            audit.model = model
        headers = scope["headers"]
        content_length = header_length = encoding = accept = None
        for key, value in headers:
            if key == b"content-length":
                content_length = value
            elif key == HEADER_LENGTH:
                header_length = value.decode("latin-1")
            elif key == b"content-encoding":
                encoding = value.decode("latin-1")
            elif key == b"accept-encoding":
                accept = value.decode("latin-1")
        length = int(content_length) if content_length is not None and content_length.isdigit() else None
        body = await bodies.read_body(receive, content_length=length, limit=self.max_body, watch=self.stall_watch)
        if encoding is not None:
            body = bodies.decompress(body, encoding, limit=self.max_body)
        if audit is not None:
            audit.body = body
        json_length = v2.parse_header_length(header_length, len(body))
        codec = self.dp.codec
        if json_length == 0:
            if len(model.backend.inputs) != 1:
                raise InvalidInputError(
                    f"a raw binary request (Inference-Header-Content-Length: 0) needs a model with one input; "
                    f"{name!r} has {len(model.backend.inputs)}"
                )
            if model.backend.inputs[0].open:
                raise InvalidInputError(
                    f"a raw binary request needs an input of known datatype and shape; {name!r} declares none "
                    "(send a JSON header, or declare the input in model.toml)"
                )
            request = v2.parse_raw_binary(body, model.backend.inputs[0], model_name=name, model_version=version, codec=codec)
        else:
            request = v2.parse_request(
                body, json_length, model_name=name, model_version=version, codec=codec, plans=self.header_plans
            )
        request.principal = scope.get("servecore.principal")
        if audit is not None:
            if request.id is None:
                request.id = audit.request_id  # echoed in the response: `servecore audit prove` finds it
            else:
                audit.request_id = request.id
        if model.scheduler is not None:
            response = await _unless_disconnected(self.dp, request, receive, scope)
        else:
            response = await self.dp.infer(request)
        payload, json_size = v2.encode_response(response, codec)
        extra: list[tuple[bytes, bytes]] = []
        content_type = b"application/json"
        if json_size is not None:
            extra.append((HEADER_LENGTH, str(json_size).encode()))
            content_type = OCTET_STREAM
        if audit is not None:
            await audit.record(self.dp, "ok", response=payload)  # durable first under --audit-fsync always
            extra.append((b"x-request-id", audit.request_id.encode()))
        coding = bodies.choose_encoding(accept) if accept else None
        if coding is not None:
            payload = bodies.compress(payload, coding)
            extra.append((b"content-encoding", coding.encode()))
        await send_body(send, 200, payload, content_type=content_type, headers=extra)


class ClientDisconnectedError(ServecoreError):
    """The client went away while its request waited; nobody reads the answer (499, nginx's code)."""

    status_code = 499


async def _unless_disconnected(
    dp: DataPlane, request: InferenceRequest, receive: Receive, scope: Scope
) -> InferenceResponse:
    """Infer, but give up the request if its client disconnects while it waits in a queue.

    The watch starts only when the request actually waits (``request.on_wait``), so a request
    that runs at once pays nothing for it. servecore's HTTP server calls back on a disconnect
    (the ``servecore.disconnect`` extension); under another ASGI server a task waits in
    ``receive()`` for ``http.disconnect`` instead.
    """
    task = asyncio.current_task()
    assert task is not None
    disconnected = False

    def cancel() -> None:
        nonlocal disconnected
        disconnected = True
        task.cancel()

    register: Callable[[Callable[[], None]], Callable[[], None]] | None = scope.get("extensions", {}).get(
        "servecore.disconnect"
    )
    if register is not None:
        request.on_wait = lambda: register(cancel)
    else:

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            cancel()

        def on_wait() -> Callable[[], None]:
            watcher = asyncio.ensure_future(watch())

            def stop() -> None:
                watcher.cancel()

            return stop

        request.on_wait = on_wait
    try:
        return await dp.infer(request)
    except asyncio.CancelledError:
        if not disconnected:
            raise
        task.uncancel()
        raise ClientDisconnectedError("the client disconnected before the answer was ready") from None


class AuditContext:
    """What the audit record of one inference request needs, gathered as the request is handled."""

    __slots__ = ("body", "done", "model", "request_id", "scope", "started")

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.started = time.perf_counter_ns()
        self.request_id = new_request_id()
        self.model: Any = None
        self.body: bytes | None = None
        self.done = False

    async def record(self, dp: DataPlane, status: str, *, response: bytes | None = None, error_code: str | None = None) -> None:
        if self.done or dp.auditor is None:
            return
        self.done = True
        principal = self.scope.get("servecore.principal")
        name, version = _model_args(self.scope)
        await dp.auditor.inference(
            request_id=self.request_id, model=self.model, model_name=name, model_version=version, status=status,
            started_ns=self.started, principal=principal.name if principal is not None else None,
            headers=request_headers(self.scope), body=self.body, response=response, error_code=error_code,
        )


def _audit_status(status: int) -> str:
    """The audit record status of an HTTP error status."""
    if status in (401, 403, 429, 503):
        return "refused"
    if status in (408, 499, 504):
        return "timeout"
    return "error"


class _Guarded:
    """An endpoint as a plain ASGI app: authentication first, ServecoreErrors become JSON errors.

    An *audited* endpoint (inference) records every request in the audit log, answered, failed or
    refused, before its answer is sent.
    """

    __slots__ = ("audited", "authenticate", "dp", "endpoint")

    def __init__(self, dataplane: DataPlane, endpoint: Endpoint, authenticate: bool, audited: bool = False) -> None:
        self.dp = dataplane
        self.endpoint = endpoint
        self.authenticate = authenticate
        self.audited = audited and dataplane.auditor is not None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        dp = self.dp
        audit = None
        try:
            if self.audited:
                audit = scope["servecore.audit"] = AuditContext(scope)
                dp.auditor.ensure_accepting()  # type: ignore[union-attr]  # fail-closed: 503 while it cannot
            if self.authenticate and dp.requires_auth:
                scope["servecore.principal"] = dp.authenticate(request_headers(scope))
            await self.endpoint(scope, receive, send)
        except UnsupportedEncodingError as exc:
            dp.metrics.http_errors.labels("415").inc()
            if audit is not None:
                await audit.record(dp, "error", error_code="415")
            await send_error(send, 415, exc.message, headers=[(b"accept-encoding", bodies.ACCEPT_ENCODING.encode())])
        except ServecoreError as exc:
            dp.metrics.http_errors.labels(str(exc.status_code)).inc()
            headers = error_headers(exc)
            if audit is not None and not isinstance(exc, AuditUnavailableError):
                await audit.record(dp, _audit_status(exc.status_code), error_code=str(exc.status_code))
                headers.append((b"x-request-id", audit.request_id.encode()))
            await send_error(send, exc.status_code, exc.message, headers=headers)


class ServecoreApp:
    """The ASGI application: routing, authentication, and the one place errors become responses.

    Routing is a dictionary lookup on the path's segments rather than a list of regular
    expressions tried in turn: the inference route is found in one step whatever the number
    of routes (profiling showed starlette's route scan at ~10 µs per request).
    """

    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane
        e = self.endpoints = Endpoints(dataplane)
        public = {e.live, e.ready}

        def guard(endpoint: Endpoint) -> _Guarded:
            return _Guarded(dataplane, endpoint, endpoint not in public, audited=endpoint == e.infer)

        #: exact paths -> {method: endpoint}
        self.static: dict[str, dict[str, _Guarded]] = {
            path: {method: guard(endpoint)}
            for path, method, endpoint in (
                ("/v2/health/live", "GET", e.live),
                ("/v2/health/ready", "GET", e.ready),
                ("/v2", "GET", e.server_metadata),
                ("/v2/", "GET", e.server_metadata),
                ("/v2/models/stats", "GET", e.all_statistics),
                ("/metrics", "GET", e.metrics),
                ("/v2/repository/index", "POST", e.repository_index),
            )
        }
        #: /v2/repository/models/{model}/{action} -> {method: endpoint}
        self.repository_actions: dict[str, dict[str, _Guarded]] = {
            "load": {"POST": guard(e.repository_load)},
            "unload": {"POST": guard(e.repository_unload)},
        }
        #: the action after /v2/models/{model}[/versions/{version}] -> {method: endpoint}
        self.model_actions: dict[str, dict[str, _Guarded]] = {
            action: {method: guard(endpoint)}
            for action, method, endpoint in (
                ("", "GET", e.model_metadata),
                ("ready", "GET", e.model_ready),
                ("config", "GET", e.model_config),
                ("stats", "GET", e.model_statistics),
                ("infer", "POST", e.infer),
                ("drift", "GET", e.drift),
                ("feedback", "POST", e.feedback),
            )
        }

    def route(self, path: str) -> tuple[dict[str, _Guarded] | None, dict[str, str]]:
        """The endpoints by method for *path*, and its path parameters."""
        found = self.static.get(path)
        if found is not None:
            return found, {}
        if path.startswith("/v2/repository/models/"):
            parts = path[len("/v2/repository/models/"):].split("/")
            if len(parts) == 2 and parts[0]:
                return self.repository_actions.get(parts[1]), {"model": parts[0]}
            return None, {}
        if not path.startswith("/v2/models/"):
            return None, {}
        parts = path[len("/v2/models/"):].split("/")
        if len(parts) in (3, 4) and parts[1] == "versions":
            model, version, action = parts[0], parts[2], parts[3] if len(parts) == 4 else ""
            params = {"model": model, "version": version}
        elif len(parts) in (1, 2):
            model, action = parts[0], parts[1] if len(parts) == 2 else ""
            params = {"model": model}
        else:
            return None, {}
        if not model or (len(params) == 2 and not params["version"]):
            return None, {}
        return self.model_actions.get(action), params

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http":
            if kind == "lifespan":  # servecore does its start-up work before serving
                message = await receive()
                while message["type"] != "lifespan.shutdown":
                    await send({"type": "lifespan.startup.complete"})
                    message = await receive()
                await send({"type": "lifespan.shutdown.complete"})
            return
        endpoints, params = self.route(scope["path"])
        if endpoints is None:
            return await self._http_error(send, 404, "Not Found")
        method = scope["method"]
        endpoint = endpoints.get(method) or (endpoints.get("GET") if method == "HEAD" else None)
        if endpoint is None:
            allow = ", ".join(sorted(endpoints))
            return await self._http_error(send, 405, "Method Not Allowed", [(b"allow", allow.encode())])
        scope["path_params"] = params
        try:
            await endpoint(scope, receive, send)
        except Exception:
            logger.exception("unhandled error on %s %s", method, scope["path"])
            await self._http_error(send, 500, "internal server error")

    async def _http_error(self, send: Send, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.dataplane.metrics.http_errors.labels(str(status)).inc()
        await send_error(send, status, message, headers=headers or [])
