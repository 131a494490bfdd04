"""The HTTP transport: routes of the Open Inference Protocol as plain ASGI endpoints.

Endpoints parse, call the :class:`~servecore.dataplane.DataPlane`, and serialise. This module is
the only place where errors become status codes. Every error, including unknown routes and
methods, is ``{"error": ...}`` as ``application/json``.
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable

from starlette.exceptions import HTTPException
from starlette.routing import Route, Router

from servecore.dataplane import DataPlane
from servecore.errors import InvalidInputError, ServecoreError, UnsupportedEncodingError
from servecore.http import body as bodies
from servecore.http import v2
from servecore.http.responses import OCTET_STREAM, Send, send_body, send_error, send_json
from servecore.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE

logger = logging.getLogger("servecore.http")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Endpoint = Callable[[Scope, Receive, Send], Awaitable[None]]

HEADER_LENGTH = b"inference-header-content-length"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}


def _model_args(scope: Scope) -> tuple[str, str | None]:
    params = scope["path_params"]
    return params["model"], params.get("version")


class Endpoints:
    """The protocol's endpoints over one data plane."""

    def __init__(self, dataplane: DataPlane) -> None:
        self.dp = dataplane
        self.max_body = dataplane.config.max_body_size
        self.not_ready = dataplane.config.not_ready_status

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

    # -- inference --------------------------------------------------------------------------------

    async def infer(self, scope: Scope, receive: Receive, send: Send) -> None:
        name, version = _model_args(scope)
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
        body = await bodies.read_body(receive, content_length=length, limit=self.max_body)
        if encoding is not None:
            body = bodies.decompress(body, encoding, limit=self.max_body)
        json_length = v2.parse_header_length(header_length, len(body))
        codec = self.dp.codec
        if json_length == 0:
            model = self.dp.model(name, version)
            if len(model.backend.inputs) != 1:
                raise InvalidInputError(
                    f"a raw binary request (Inference-Header-Content-Length: 0) needs a model with one input; "
                    f"{name!r} has {len(model.backend.inputs)}"
                )
            request = v2.parse_raw_binary(body, model.backend.inputs[0], model_name=name, model_version=version, codec=codec)
        else:
            request = v2.parse_request(body, json_length, model_name=name, model_version=version, codec=codec)
        request.principal = scope.get("servecore.principal")
        response = await self.dp.infer(request)
        payload, json_size = v2.encode_response(response, codec)
        extra: list[tuple[bytes, bytes]] = []
        content_type = b"application/json"
        if json_size is not None:
            extra.append((HEADER_LENGTH, str(json_size).encode()))
            content_type = OCTET_STREAM
        coding = bodies.choose_encoding(accept) if accept else None
        if coding is not None:
            payload = bodies.compress(payload, coding)
            extra.append((b"content-encoding", coding.encode()))
        await send_body(send, 200, payload, content_type=content_type, headers=extra)


class _Guarded:
    """An endpoint as a plain ASGI app: authentication first, ServecoreErrors become JSON errors.

    A class instance rather than a function, so starlette's Route mounts it as raw ASGI.
    """

    __slots__ = ("dp", "endpoint", "authenticate")

    def __init__(self, dataplane: DataPlane, endpoint: Endpoint, authenticate: bool) -> None:
        self.dp = dataplane
        self.endpoint = endpoint
        self.authenticate = authenticate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        dp = self.dp
        try:
            if self.authenticate and dp.requires_auth:
                scope["servecore.principal"] = dp.authenticate(_headers(scope))
            await self.endpoint(scope, receive, send)
        except UnsupportedEncodingError as exc:
            dp.metrics.http_errors.labels("415").inc()
            await send_error(send, 415, exc.message, headers=[(b"accept-encoding", bodies.ACCEPT_ENCODING.encode())])
        except ServecoreError as exc:
            dp.metrics.http_errors.labels(str(exc.status_code)).inc()
            headers = [(b"www-authenticate", b"Bearer")] if exc.status_code == 401 else []
            await send_error(send, exc.status_code, exc.message, headers=headers)


class ServecoreApp:
    """The ASGI application: authentication, routing, and the one place errors become responses."""

    def __init__(self, dataplane: DataPlane, *, lifespan: Any = None) -> None:
        self.dataplane = dataplane
        e = Endpoints(dataplane)
        public = {e.live, e.ready}
        routes: list[tuple[str, Endpoint, str]] = [
            ("/v2/health/live", e.live, "GET"),
            ("/v2/health/ready", e.ready, "GET"),
            ("/v2", e.server_metadata, "GET"),
            ("/v2/", e.server_metadata, "GET"),
            ("/v2/models/stats", e.all_statistics, "GET"),
            ("/metrics", e.metrics, "GET"),
        ]
        for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
            routes += [
                (prefix, e.model_metadata, "GET"),
                (prefix + "/ready", e.model_ready, "GET"),
                (prefix + "/config", e.model_config, "GET"),
                (prefix + "/stats", e.model_statistics, "GET"),
                (prefix + "/infer", e.infer, "POST"),
            ]
        self.router = Router(
            [
                Route(path, self._guard(endpoint, authenticate=endpoint not in public), methods=[method])
                for path, endpoint, method in routes
            ],
            lifespan=lifespan,
        )

    def _guard(self, endpoint: Endpoint, *, authenticate: bool) -> _Guarded:
        return _Guarded(self.dataplane, endpoint, authenticate)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self  # makes starlette's router raise HTTPException for 404/405
        try:
            await self.router(scope, receive, send)
        except HTTPException as exc:
            self.dataplane.metrics.http_errors.labels(str(exc.status_code)).inc()
            headers = [(k.lower().encode(), v.encode()) for k, v in (exc.headers or {}).items()]
            await send_error(send, exc.status_code, exc.detail, headers=headers)
        except Exception:
            logger.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            self.dataplane.metrics.http_errors.labels("500").inc()
            await send_error(send, 500, "internal server error")
