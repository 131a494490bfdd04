"""HTTP/1.1 connections: httptools parsing straight into the ASGI app, one write per response.

With the compiled core, a whole plain request in one read (the usual inference request: a few
headers and a ``Content-Length`` body) is read in one call by :mod:`servecore.http.headscan`
instead of httptools' seven callbacks or more; what that scanner does not read (chunked
bodies, ``Expect``, ``Upgrade``, anything unusual or invalid, a request split across reads) goes
to httptools as before, so every refusal is still httptools'.

servecore's own HTTP server rather than uvicorn's, for one reason: the cost per request. Measured
on the 2-core development VM with a trivial ASGI app, uvicorn (httptools, uvloop) answered about
12,000-19,000 requests/s on one core and this connection class about 40,000: uvicorn adds a
proxy-headers middleware, an ``asyncio.Event`` and a keep-alive timer per request, and writes the
response head and body as two ``send`` system calls. Here the head waits for the first body
chunk, so a complete response leaves in one write; idle connections are closed by one sweep per
server (:class:`ServerState`) rather than a timer per request; and an app may register a callback
for a client disconnect (``scope["extensions"]["servecore.disconnect"]``) instead of keeping a
task blocked in ``receive()`` per waiting request.

What it does, per RFC 9112: keep-alive (HTTP/1.1 by default, HTTP/1.0 on request), pipelined
requests answered in order, chunked and Content-Length request bodies (httptools de-chunks),
``Expect: 100-continue`` (the interim answer is sent only when the app reads the body, so an
oversized upload is refused before it is sent), HEAD, responses with or without a length
(chunked), back-pressure both ways (reading pauses while an unread body or the pipeline is
long; the app waits while the transport's write buffer is full), and a 400/431 in the protocol's
JSON error format for anything that does not parse, after which the connection is closed.
"""

from __future__ import annotations

import asyncio
import collections
import email.utils
import http
import logging
import time
import urllib.parse
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import httptools
import orjson

if TYPE_CHECKING:
    from servecore.http.headscan import Scanner

logger = logging.getLogger("servecore.http")
access_logger = logging.getLogger("servecore.access")

App = Callable[[dict[str, Any], Callable[[], Awaitable[dict[str, Any]]], Callable[[dict[str, Any]], Awaitable[None]]], Awaitable[None]]

#: Request line and headers larger than this are refused with 431.
MAX_HEAD_BYTES = 64 * 1024
#: Unread request body buffered before reading from the socket pauses.
BODY_HIGH_WATER = 1024 * 1024
#: Pipelined requests parsed ahead of the one being answered before reading pauses.
MAX_PIPELINE = 32

_ASGI = {"version": "3.0", "spec_version": "2.3"}
_REASONS = {status.value: status.phrase.encode() for status in http.HTTPStatus}
_REASONS[499] = b"Client Closed Request"
_STATUS_LINES: dict[int, bytes] = {}
_INTERNAL_ERROR = orjson.dumps({"error": "internal server error"})
_INTERNAL_ERROR_HEADERS = b"content-type: application/json\r\ncontent-length: %d\r\n" % len(_INTERNAL_ERROR)


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        line = _STATUS_LINES[status] = b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b""))
    return line


def error_response(status: int, message: str) -> bytes:
    """A complete ``{"error": message}`` response that closes the connection."""
    body = orjson.dumps({"error": message})
    return (
        status_line(status)
        + b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body)
        + body
    )


class ServerState:
    """What the connections of one server share: the open connections, the Date header, and the
    keep-alive sweep that closes connections idle for longer than *keep_alive_timeout* seconds."""

    def __init__(
        self,
        app: App,
        *,
        keep_alive_timeout: float,
        access_log: bool = False,
        fast: FastRoute | None = None,
        scan: Scanner | None = None,
    ) -> None:
        self.app = app
        #: requests this may answer without a task and the ASGI round trip (see :class:`FastRoute`)
        self.fast = fast
        #: reads a whole plain request in one call (:mod:`servecore.http.headscan`); None: httptools only
        self.scan = scan
        self.keep_alive_timeout = keep_alive_timeout
        self.access_log = access_log
        self.connections: set[Connection] = set()
        #: request tasks, held here: the loop keeps only weak references to tasks
        self.tasks: set[asyncio.Task[None]] = set()
        self.shutting_down = False
        self.date_header = b""
        self._sweep: asyncio.TimerHandle | None = None
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._refresh_date()

    def _refresh_date(self) -> None:
        self.date_header = b"date: " + email.utils.formatdate(usegmt=True).encode() + b"\r\n"

    def add(self, connection: Connection) -> None:
        self.connections.add(connection)
        if self._sweep is None:
            self._sweep = asyncio.get_running_loop().call_later(1.0, self._tick)

    def remove(self, connection: Connection) -> None:
        self.connections.discard(connection)
        self.notify_idle()

    def _tick(self) -> None:
        """Once a second while connections are open: the Date header, and idle connections closed."""
        self._sweep = None
        self._refresh_date()
        if self.keep_alive_timeout > 0:
            cutoff = time.monotonic() - self.keep_alive_timeout
            for connection in list(self.connections):
                if connection.idle_since is not None and connection.idle_since < cutoff:
                    connection.close()
        if self.connections:
            self._sweep = asyncio.get_running_loop().call_later(1.0, self._tick)

    @property
    def busy(self) -> int:
        """Connections with a request being answered."""
        return sum(1 for connection in self.connections if connection.active is not None)

    def notify_idle(self) -> None:
        if self._idle_waiters and not self.busy:
            for waiter in self._idle_waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self._idle_waiters.clear()

    async def drain(self) -> None:
        """Stop accepting more requests; return once no connection is answering one.

        Idle connections are closed now; busy ones close after their current response.
        """
        self.shutting_down = True
        for connection in list(self.connections):
            connection.shutdown()
        if not self.busy:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._idle_waiters.append(waiter)
        await waiter

    def abort_all(self) -> None:
        for connection in list(self.connections):
            connection.abort()
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None


class FastRoute(Protocol):
    """A shortcut past the ASGI app for requests an app can answer from their complete body.

    ``match`` sees the path of every POST request (without ``Expect: 100-continue``) and returns
    a token for those it may take, else None. When such a request's body has arrived whole in
    the read that completed its head (the usual case for a small body), the connection calls
    ``handle(cycle, token, body)`` instead of starting the app: it returns True when it takes the
    request, which it then answers, at once or later, with :meth:`Cycle.answer`; False sends the
    request, body unread, to the ASGI app as usual. A body still arriving always goes to the app,
    so the app's body timeout and back-pressure apply.
    """

    def match(self, path: str) -> Any | None: ...
    def handle(self, cycle: Cycle, token: Any, body: bytes) -> bool: ...


def _nothing() -> None:
    pass


class _DisconnectHook:
    """The ``servecore.disconnect`` extension: :meth:`Cycle.on_disconnect`, holding its cycle weakly.

    The scope belongs to the cycle; a bound method in it would close a reference loop, and every
    request's cycle, scope and body would wait for the garbage collector instead of going the
    moment the response is complete. Measured on the batching server: gen-0 collections of
    ~0.6 ms each, every ~100 requests, freeing the requests' objects in bulk.
    """

    __slots__ = ("_cycle",)

    def __init__(self, cycle: Cycle) -> None:
        self._cycle = weakref.ref(cycle)

    def __call__(self, callback: Callable[[], None]) -> Callable[[], None]:
        cycle = self._cycle()
        if cycle is None:  # the request is over: nothing left to watch
            return _nothing
        return cycle.on_disconnect(callback)


class Cycle:
    """One request and its response: the ASGI ``receive`` and ``send`` of that request."""

    __slots__ = (
        "__weakref__",
        "body_done",
        "buffered",
        "chunked",
        "chunks",
        "complete",
        "conn",
        "disconnect_callbacks",
        "disconnected",
        "expect_continue",
        "fast",
        "head",
        "keep_alive",
        "response_complete",
        "scope",
        "status",
        "waiter",
    )

    def __init__(self, conn: Connection, scope: dict[str, Any], keep_alive: bool, expect_continue: bool) -> None:
        self.conn = conn
        self.scope = scope
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.complete = False  # the whole request body has been parsed
        self.body_done = False  # ... and handed to the app
        self.disconnected = False
        self.waiter: asyncio.Future[None] | None = None
        self.head: bytes | None = None  # the response head, held until the first body chunk
        self.chunked = False
        self.status = 0
        self.response_complete = False
        self.disconnect_callbacks: list[Callable[[], None]] | None = None
        self.fast: Any = None  # the FastRoute token, while the fast path may take the request

    # -- fed by the connection --------------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def add_body(self, chunk: bytes) -> None:
        self.chunks.append(chunk)
        self.buffered += len(chunk)
        if self.buffered > BODY_HIGH_WATER:
            self.conn.pause_reading()
        self._wake()

    def finish_body(self) -> None:
        self.complete = True
        self._wake()

    def lost(self) -> None:
        """The client disconnected."""
        if self.disconnected:
            return
        self.disconnected = True
        self._wake()
        callbacks, self.disconnect_callbacks = self.disconnect_callbacks, None
        for callback in callbacks or ():
            try:
                callback()
            except Exception:  # a failing callback must not keep the others from running
                logger.exception("disconnect callback failed")

    def on_disconnect(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call *callback* if the client disconnects before the response is complete; returns a
        function that removes it."""
        if self.disconnect_callbacks is None:
            self.disconnect_callbacks = []
        self.disconnect_callbacks.append(callback)

        def remove() -> None:
            if self.disconnect_callbacks is not None and callback in self.disconnect_callbacks:
                self.disconnect_callbacks.remove(callback)

        return remove

    def answer(self, status: int, headers: bytes, body: bytes) -> None:
        """The whole response at once, outside ASGI: *headers* are complete ``name: value\\r\\n``
        lines (with the content length); the bytes are those :meth:`send` would write."""
        if self.status:
            raise RuntimeError("the response has already started")
        self.status = status
        conn = self.conn
        if not self.keep_alive or conn.state.shutting_down:
            self.keep_alive = False
            end = b"connection: close\r\n\r\n"
        else:
            end = b"\r\n"
        if not self.disconnected:
            conn.write(b"".join((status_line(status), conn.state.date_header, headers, end, body)))
        self.response_complete = True
        self._wake()
        conn.response_complete(self)

    # -- ASGI -------------------------------------------------------------------------------------

    async def receive(self) -> dict[str, Any]:
        if self.body_done or self.disconnected:
            # After the whole body, receive() waits for the client to go (ASGI).
            while not self.disconnected and not self.response_complete:
                self.waiter = self.conn.loop.create_future()
                await self.waiter
            return {"type": "http.disconnect"}
        if not self.chunks and not self.complete:
            if self.expect_continue:
                self.expect_continue = False
                self.conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.conn.resume_reading()
            while not self.chunks and not self.complete and not self.disconnected:
                self.waiter = self.conn.loop.create_future()
                await self.waiter
            if self.disconnected:
                return {"type": "http.disconnect"}
        chunks = self.chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.chunks = []
        if self.buffered > BODY_HIGH_WATER:
            self.conn.resume_reading()
        self.buffered = 0
        self.body_done = self.complete
        return {"type": "http.request", "body": body, "more_body": not self.complete}

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if self.status:
                raise RuntimeError("the response has already started")
            self.status = status = message["status"]
            parts = [status_line(status), self.conn.state.date_header]
            has_length = False
            for name, value in message.get("headers", ()):
                if name == b"content-length":
                    has_length = True
                elif name == b"connection" and value.lower() == b"close":
                    self.keep_alive = False
                    continue
                parts += (name, b": ", value, b"\r\n")
            if not has_length and self.scope["method"] != "HEAD" and status not in (204, 304):
                self.chunked = True
                parts.append(b"transfer-encoding: chunked\r\n")
            if not self.keep_alive or self.conn.state.shutting_down:
                self.keep_alive = False
                parts.append(b"connection: close\r\n")
            parts.append(b"\r\n")
            self.head = b"".join(parts)
            return
        if kind != "http.response.body":
            raise RuntimeError(f"unexpected ASGI message {kind!r}")
        if self.response_complete:
            raise RuntimeError("the response is already complete")
        if not self.status:
            raise RuntimeError("http.response.body before http.response.start")
        body: bytes = message.get("body", b"")
        more = message.get("more_body", False)
        if self.scope["method"] == "HEAD":
            body = b""
        elif self.chunked:
            body = (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + (b"" if more else b"0\r\n\r\n")
        head, self.head = self.head, None
        if not self.disconnected:
            self.conn.write(head + body if head is not None else body)
        if not more:
            self.response_complete = True
            self._wake()
            self.conn.response_complete(self)
        elif self.conn.write_paused is not None:
            await self.conn.write_paused


class Connection(asyncio.Protocol):
    """One client connection (HTTP/1.1)."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        #: None once the connection is lost: the parser's callbacks are bound methods of this
        #: connection, a reference loop that would leave every closed connection to the collector
        self.parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self.active: Cycle | None = None  # being answered
        self.parsing: Cycle | None = None  # whose body is being parsed
        self.pipeline: collections.deque[Cycle] = collections.deque()
        #: since when no request has been answered or read (None while one is); the keep-alive
        #: sweep closes the connection after ``keep_alive_timeout`` of it
        self.idle_since: float | None = time.monotonic()
        self.closed = False
        self.paused = False
        self.write_paused: asyncio.Future[None] | None = None
        self.pending_error: bytes | None = None
        self.client: tuple[str, int] | None = None
        self.server: tuple[str, int] | None = None
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_size = 0
        self._fast = state.fast
        self._scan = state.scan
        self._in_message = False  # httptools has begun a request it has not finished
        self._feeding = False  # inside data_received
        #: the active request, for the fast path once its body is complete within this read
        self._fast_waiting: Cycle | None = None

    # -- asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are not asyncio.Transport subclasses
        peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("sockname")
        self.client = (peer[0], peer[1]) if isinstance(peer, tuple) else None
        self.server = (sock[0], sock[1]) if isinstance(sock, tuple) else None
        self.state.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fast_waiting = None
        for cycle in (self.active, self.parsing, *self.pipeline):
            if cycle is not None and not cycle.response_complete:
                cycle.lost()
        self.pipeline.clear()
        self.parsing = None
        if self.write_paused is not None and not self.write_paused.done():
            self.write_paused.set_result(None)
        self.state.remove(self)
        self.parser = None
        self.transport = None  # it holds this protocol until it is freed: the same loop

    def data_received(self, data: bytes) -> None:
        # Bytes alone do not make a connection busy: a request head must be complete within the
        # keep-alive timeout (a client dribbling one header line at a time is closed). Only the
        # rest of a body answered before it arrived counts as progress.
        if self.idle_since is not None and self.parsing is not None:
            self.idle_since = time.monotonic()
        scan = self._scan
        if scan is not None and not self._in_message and self.pending_error is None:
            offset = self._scan_requests(scan, data)
            if offset == len(data) or self.closed:
                return
            if offset:
                data = data[offset:]
        parser = self.parser
        assert parser is not None  # asyncio delivers nothing after connection_lost
        self._feeding = True
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # An Upgrade request (websocket, h2c) is answered as plain HTTP/1.1; httptools reads
            # nothing after it, and neither does the scanner.
            self._scan = None
        except httptools.HttpParserError as exc:
            cause = exc.__context__  # what a callback raised
            if isinstance(cause, _HeadTooLarge):
                self._refuse(431, f"the request line and headers are over {MAX_HEAD_BYTES} bytes")
            elif cause is not None:
                logger.error("HTTP parser callback failed", exc_info=cause)
                self._refuse(500, "internal server error")
            else:
                self._refuse(400, f"invalid HTTP request: {exc}")
        finally:
            self._feeding = False
        waiting = self._fast_waiting
        if waiting is not None:  # its body is still on its way: the app reads it (with its timeout)
            self._fast_waiting = None
            waiting.fast = None
            self._spawn(waiting)

    def pause_writing(self) -> None:
        if self.write_paused is None:
            self.write_paused = self.loop.create_future()

    def resume_writing(self) -> None:
        waiter, self.write_paused = self.write_paused, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- httptools callbacks ----------------------------------------------------------------------

    def _scan_requests(self, scan: Scanner, data: bytes) -> int:
        """Take the whole plain requests at the start of *data* in one call each
        (:mod:`servecore.http.headscan`); where the next one starts, for httptools."""
        offset, size = 0, len(data)
        while offset < size and not self.closed:
            found = scan(data, offset, MAX_HEAD_BYTES)
            if found is None:
                break
            method, target, version, headers, keep_alive, body, offset = found
            cycle = self._cycle(target, headers, method, version, keep_alive)
            if body:
                cycle.add_body(body)
            cycle.finish_body()
            self._queue(cycle)
        return offset

    def on_message_begin(self) -> None:
        self._in_message = True
        self._url = b""
        self._headers = []
        self._head_size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))
        self._count_head(len(name) + len(value) + 4)

    def _count_head(self, size: int) -> None:
        self._head_size += size
        if self._head_size > MAX_HEAD_BYTES:
            raise _HeadTooLarge

    def on_headers_complete(self) -> None:
        parser = self.parser
        assert parser is not None  # called from feed_data
        cycle = self._cycle(
            self._url, self._headers, parser.get_method().decode("ascii"), parser.get_http_version(), parser.should_keep_alive()
        )
        self.parsing = cycle
        self._queue(cycle)

    def _cycle(
        self, url: bytes, headers: list[tuple[bytes, bytes]], method: str, version: str, keep_alive: bool
    ) -> Cycle:
        """The request whose head is *url* and *headers*, with its ASGI scope."""
        path, _, query = url.partition(b"?")
        raw_path = path
        text_path = path.decode("latin-1")
        if "%" in text_path:
            text_path = urllib.parse.unquote(text_path)
        expect_continue = False
        for name, value in headers:
            if name == b"expect" and value.lower() == b"100-continue":
                expect_continue = True
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": _ASGI,
            "http_version": version,
            "method": method,
            "scheme": "http",
            "path": text_path,
            "raw_path": raw_path,
            "query_string": query,
            "root_path": "",
            "headers": headers,
            "client": self.client,
            "server": self.server,
        }
        cycle = Cycle(self, scope, keep_alive, expect_continue and version == "1.1")
        scope["extensions"] = {"servecore.disconnect": _DisconnectHook(cycle)}
        if self._fast is not None and not expect_continue and method == "POST":
            cycle.fast = self._fast.match(text_path)
        return cycle

    def _queue(self, cycle: Cycle) -> None:
        """Answer *cycle* now, or after the requests before it on this connection."""
        if self.active is None:
            self._start(cycle)
        else:
            self.pipeline.append(cycle)
            if len(self.pipeline) >= MAX_PIPELINE:
                self.pause_reading()

    def on_body(self, body: bytes) -> None:
        cycle = self.parsing
        if cycle is not None and not cycle.response_complete:
            cycle.add_body(body)

    def on_message_complete(self) -> None:
        self._in_message = False
        cycle = self.parsing
        self.parsing = None
        if cycle is not None:
            cycle.finish_body()
            if cycle is self._fast_waiting:
                self._fast_waiting = None
                if not self._run_fast(cycle):
                    self._spawn(cycle)
        if self.active is None and not self.pipeline:  # the end of a body answered before it came
            self.idle_since = time.monotonic()

    # -- requests ---------------------------------------------------------------------------------

    def _start(self, cycle: Cycle) -> None:
        self.active = cycle
        self.idle_since = None
        if cycle.fast is not None:
            if cycle.complete:
                if self._run_fast(cycle):
                    return
            elif self._feeding:  # the rest of the body may be in this read: on_message_complete
                self._fast_waiting = cycle
                return
            cycle.fast = None
        self._spawn(cycle)

    def _run_fast(self, cycle: Cycle) -> bool:
        """Offer the complete request to the fast path; False when it is the app's to answer."""
        token, cycle.fast = cycle.fast, None
        chunks = cycle.chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        try:
            return self._fast.handle(cycle, token, body)  # type: ignore[union-attr]  # set with the token
        except Exception:
            logger.exception("unhandled error on %s %s", cycle.scope["method"], cycle.scope["path"])
            if cycle.status:
                self.abort()
            else:
                cycle.keep_alive = False
                cycle.answer(500, _INTERNAL_ERROR_HEADERS, _INTERNAL_ERROR)
            return True

    def _spawn(self, cycle: Cycle) -> None:
        """Answer *cycle* with the ASGI app, in a task of its own."""
        task = self.loop.create_task(self._run(cycle))
        self.state.tasks.add(task)
        task.add_done_callback(self.state.tasks.discard)

    async def _run(self, cycle: Cycle) -> None:
        try:
            await self.state.app(cycle.scope, cycle.receive, cycle.send)
        except BaseException as exc:
            if not isinstance(exc, Exception):
                self.abort()
                raise
            logger.exception("unhandled error on %s %s", cycle.scope["method"], cycle.scope["path"])
            if not cycle.status:
                await _send_internal_error(cycle)
            else:
                self.abort()  # half a response cannot be completed; the client sees the cut
                return
        if not cycle.response_complete and not self.closed:
            if cycle.status:
                logger.error("the app did not complete the response to %s %s", cycle.scope["method"], cycle.scope["path"])
                self.abort()
            else:
                logger.error("the app returned no response to %s %s", cycle.scope["method"], cycle.scope["path"])
                await _send_internal_error(cycle)

    def response_complete(self, cycle: Cycle) -> None:
        if self.state.access_log:
            client = f"{self.client[0]}:{self.client[1]}" if self.client else "-"
            scope = cycle.scope
            access_logger.info('%s - "%s %s HTTP/%s" %d', client, scope["method"], scope["path"], scope["http_version"], cycle.status)
        self.active = None
        if self.closed:
            self.state.notify_idle()
            return
        if not cycle.keep_alive:
            self.close()
            return
        if not cycle.complete and self.pending_error is None:
            if cycle.expect_continue:  # the client was never told to send its body: it may not
                self.close()
                return
            # The app answered without reading the whole body (a 404, a 413): the rest of the
            # body is still parsed and thrown away, and the next request follows it.
            cycle.chunks = []
        if self.paused and len(self.pipeline) <= MAX_PIPELINE and self.pending_error is None:
            # paused for this request's unread body or a long pipeline: neither holds any more
            self.resume_reading()
        if self.pipeline:
            self._start(self.pipeline.popleft())
        elif self.pending_error is not None:
            self.write(self.pending_error)
            self.close()
        else:
            self.idle_since = time.monotonic()
            self.state.notify_idle()

    # -- the transport ----------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def pause_reading(self) -> None:
        if not self.paused and not self.closed and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.paused and not self.closed and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()

    def _refuse(self, status: int, message: str) -> None:
        """Answer unparseable input; the connection cannot be read any further.

        Requests parsed before the broken one are still answered, in order, and the error follows.
        """
        parsing, self.parsing = self.parsing, None
        if parsing is self._fast_waiting:
            self._fast_waiting = None  # the error below is its answer
        self.pause_reading()
        response = error_response(status, message)
        if self.active is None or parsing is self.active:
            # Nothing to answer first, or the broken part is the body the app is reading: the
            # error is the answer, and the app sees the client go.
            self.write(response)
            self.close()
            return
        if parsing is not None:  # a pipelined request whose body broke is not answered
            if parsing in self.pipeline:
                self.pipeline.remove(parsing)
            parsing.lost()
        self.pending_error = response

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()
        self.closed = True

    def shutdown(self) -> None:
        """The server is stopping: close now when idle, else after the current response."""
        self.pipeline.clear()
        if self.active is None:
            self.close()
        else:
            self.active.keep_alive = False


class _HeadTooLarge(Exception):
    pass


async def _send_internal_error(cycle: Cycle) -> None:
    """Answer 500 for an app that failed before it started its response, and close."""
    cycle.keep_alive = False
    await cycle.send(
        {
            "type": "http.response.start",
            "status": 500,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(_INTERNAL_ERROR)).encode())],
        }
    )
    await cycle.send({"type": "http.response.body", "body": _INTERNAL_ERROR})
