"""Request bodies: reading with a size limit, decompression, and response compression choice."""

from __future__ import annotations

import asyncio
import time
import zlib
from typing import Any, Awaitable, Callable

from servecore.errors import InvalidInputError, PayloadTooLargeError, RequestTimeoutError, UnsupportedEncodingError

Receive = Callable[[], Awaitable[dict[str, Any]]]

#: Content codings accepted on requests and offered on infer responses.
ENCODINGS = ("gzip", "deflate")
ACCEPT_ENCODING = "gzip, deflate"


class StallWatch:
    """Cancels body reads that made no progress for *timeout* seconds (one timer per server).

    A per-request timer (``asyncio.timeout``) cost ~9 µs on every request, even though almost
    every body has arrived before the app runs; this costs a dictionary write per read instead,
    and a scan every quarter of the timeout.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.reading: dict[asyncio.Task[Any], float] = {}
        self.stalled: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.timeout / 4, self._scan)

    def _scan(self) -> None:
        self._timer = None
        now = time.monotonic()
        for task, since in list(self.reading.items()):
            if now - since >= self.timeout:
                self.stalled.add(task)
                task.cancel()
        if self.reading:
            self._arm()

    async def receive(self, receive: Receive, size: int) -> dict[str, Any]:
        """``await receive()``, answered 408 when the client sends nothing for the timeout."""
        task = asyncio.current_task()
        assert task is not None
        self.reading[task] = time.monotonic()
        self._arm()
        try:
            return await receive()
        except asyncio.CancelledError:
            if task not in self.stalled:
                raise
            self.stalled.discard(task)
            task.uncancel()
            raise RequestTimeoutError(
                f"the request body stalled: nothing arrived for {self.timeout:g} s after {size} bytes"
            ) from None
        finally:
            self.reading.pop(task, None)


async def read_body(
    receive: Receive, *, content_length: int | None, limit: int, watch: StallWatch | None = None
) -> bytes:
    """The whole request body, refusing anything over *limit* bytes (413) before reading it all.

    With a *watch*, a client that stops sending before the body is complete is answered 408, so
    a stalled upload cannot hold a connection and its memory forever.
    """
    if content_length is not None and content_length > limit:
        raise PayloadTooLargeError(f"request body of {content_length} bytes is over the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await (receive() if watch is None else watch.receive(receive, size))
        if message["type"] == "http.disconnect":
            raise InvalidInputError("the client disconnected before sending the whole body")
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise PayloadTooLargeError(f"request body is over the limit of {limit} bytes")
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def decompress(body: bytes, encoding: str, *, limit: int) -> bytes:
    """Undo ``Content-Encoding`` *encoding*, never producing more than *limit* bytes."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding == "gzip":
        wbits_options: tuple[int, ...] = (16 + zlib.MAX_WBITS,)
    elif encoding == "deflate":
        # RFC 9110 deflate is zlib-wrapped (what tritonclient sends); some clients send it raw.
        wbits_options = (zlib.MAX_WBITS, -zlib.MAX_WBITS)
    else:
        raise UnsupportedEncodingError(
            f"Content-Encoding {encoding!r} is not supported; use one of: {ACCEPT_ENCODING}"
        )
    error: zlib.error | None = None
    for wbits in wbits_options:
        try:
            return _inflate(body, wbits, encoding, limit, members=encoding == "gzip")
        except zlib.error as exc:
            error = exc
    raise InvalidInputError(f"{encoding} request body cannot be decompressed: {error}")


def _inflate(body: bytes, wbits: int, encoding: str, limit: int, *, members: bool) -> bytes:
    """Inflate *body*; with *members*, gzip members one after another (RFC 1952 allows several)."""
    parts: list[bytes] = []
    size = 0
    rest = body
    while True:
        inflater = zlib.decompressobj(wbits)
        out = inflater.decompress(rest, limit - size + 1)
        size += len(out)
        if size > limit or inflater.unconsumed_tail:
            raise PayloadTooLargeError(f"decompressed request body is over the limit of {limit} bytes")
        if not inflater.eof:
            raise InvalidInputError(f"{encoding} request body is truncated")
        parts.append(out)
        rest = inflater.unused_data
        if not rest:
            return parts[0] if len(parts) == 1 else b"".join(parts)
        if not members:
            raise InvalidInputError(f"{encoding} request body has {len(rest)} bytes after the compressed data")


def choose_encoding(accept_encoding: str | None) -> str | None:
    """gzip or deflate when *accept_encoding* ranks one of them above identity, else None.

    q-values are honoured; on ties the first listed wins; ``*`` counts for codings not listed.
    """
    if not accept_encoding:
        return None
    best: str | None = None
    best_q = 0.0
    identity_q = 1e-9  # identity is acceptable unless refused, but any listed coding beats it
    star_q: float | None = None
    listed: set[str] = set()
    for part in accept_encoding.split(","):
        token, _, params = part.strip().partition(";")
        token = token.strip().lower()
        q = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                q = float(params[2:])
            except ValueError:
                q = 0.0
        listed.add(token)
        if token == "*":
            star_q = q
        elif token == "identity":
            identity_q = q
        elif token in ENCODINGS and q > best_q:
            best, best_q = token, q
    if star_q is not None and star_q > best_q:
        for coding in ENCODINGS:
            if coding not in listed:
                best, best_q = coding, star_q
                break
    return best if best is not None and best_q > 0 and best_q >= identity_q else None


def compress(body: bytes, encoding: str) -> bytes:
    """Compress a response *body* with gzip or (zlib-wrapped) deflate."""
    wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
    packer = zlib.compressobj(6, zlib.DEFLATED, wbits)
    return packer.compress(body) + packer.flush()
