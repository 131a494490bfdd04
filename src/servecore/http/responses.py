"""Sending responses straight over ASGI: the JSON error format and raw byte bodies."""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Sequence

import orjson

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


async def send_json(send: Send, status: int, value: Any, *, headers: Sequence[Header] = ()) -> None:
    await send_body(send, status, orjson.dumps(value), headers=headers)


async def send_error(send: Send, status: int, message: str, *, headers: Sequence[Header] = ()) -> None:
    """The protocol's error format: ``{"error": message}`` as ``application/json``."""
    await send_body(send, status, orjson.dumps({"error": message}), headers=headers)
