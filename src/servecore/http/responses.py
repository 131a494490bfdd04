"""Sending responses straight over ASGI: the JSON error format and raw byte bodies."""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Sequence

import orjson

from servecore.errors import ServecoreError, TooManyRequestsError

Send = Callable[[dict[str, Any]], Awaitable[None]]
Header = tuple[bytes, bytes]

JSON = b"application/json"
OCTET_STREAM = b"application/octet-stream"


async def send_body(
    send: Send, status: int, body: bytes, *, content_type: bytes = JSON, headers: Sequence[Header] = ()
) -> None:
    """Send a complete response (one start message, one body message)."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def header_block(content_type: bytes, length: int, extra: Sequence[Header] = ()) -> bytes:
    """The header lines :func:`send_body` sends, as bytes (for ``Cycle.answer``)."""
    block = b"content-type: %s\r\ncontent-length: %d\r\n" % (content_type, length)
    for name, value in extra:
        block += name + b": " + value + b"\r\n"
    return block


def error_headers(exc: ServecoreError) -> list[Header]:
    """The headers an error response carries besides its content type and length."""
    if exc.status_code == 401:
        return [(b"www-authenticate", b"Bearer")]
    if isinstance(exc, TooManyRequestsError):
        return [(b"retry-after", str(exc.retry_after_s).encode())]
    return []


def request_headers(scope: dict[str, Any]) -> dict[str, str]:
    """An ASGI scope's headers as text, for authenticators and the audit log."""
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}


async def send_json(send: Send, status: int, value: Any, *, headers: Sequence[Header] = ()) -> None:
    await send_body(send, status, orjson.dumps(value), headers=headers)


async def send_error(send: Send, status: int, message: str, *, headers: Sequence[Header] = ()) -> None:
    """The protocol's error format: ``{"error": message}`` as ``application/json``."""
    await send_body(send, status, orjson.dumps({"error": message}), headers=headers)
