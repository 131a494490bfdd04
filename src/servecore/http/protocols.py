"""uvicorn's HTTP/1.1 protocol, answering requests it cannot even parse in the protocol's error format.

uvicorn replies to unparseable HTTP (a bad ``Content-Length``, broken chunked framing, garbage
request lines) itself, before the app sees anything, with ``text/plain``. Clients read every
failure as ``{"error": ...}`` with ``Content-Type: application/json`` (protocol.md 1.5), so this
subclass sends that instead; the connection is closed afterwards, as uvicorn does.
"""

from __future__ import annotations

import asyncio
import importlib.util
from typing import Any

import orjson


def _bad_request(message: str) -> bytes:
    body = orjson.dumps({"error": message})
    head = (
        b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n"
    )
    return head + body


def json_error_protocol() -> type[asyncio.Protocol]:
    """The uvicorn protocol class to serve with: httptools' when installed, else h11's."""
    base: type[Any]
    if importlib.util.find_spec("httptools") is not None:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        base = HttpToolsProtocol
    else:
        from uvicorn.protocols.http.h11_impl import H11Protocol

        base = H11Protocol

    class JsonErrorProtocol(base):  # type: ignore[misc]
        def send_400_response(self, msg: str) -> None:
            self.transport.write(_bad_request(msg))
            self.transport.close()

    JsonErrorProtocol.__qualname__ = JsonErrorProtocol.__name__ = f"JsonError{base.__name__}"
    return JsonErrorProtocol
