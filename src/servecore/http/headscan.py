"""Pure-Python twin of :mod:`servecore._native.headscan`: a whole, plain HTTP/1.1 request in one call.

httptools (llhttp) hands a request to Python piece by piece: a callback for the start of the
message, one for the URL, one per header, one for the headers' end, one for the body and one for
the end, each a Python call into the connection, and the connection's handling of each. On the
batching server that was about a fifth of the event loop's Python work per request. The scanner
reads the usual request, the request line, a few headers and a body with a ``Content-Length``,
all in the bytes of one read, in one call; the connection builds the request from its answer,
and hands everything else to httptools as before. This module is the specification; the
compiled twin returns the same for every input, only faster.

**The contract.** ``scan_request(data, start, max_head)`` returns ``None`` or
``(method, target, version, headers, keep_alive, body, end)``: the request in
``data[start:end]``, exactly what llhttp reports for those bytes (``method`` and ``version`` as
``str``, the raw request target, the header names lowercased with their values as llhttp gives
them, leading whitespace dropped, ``should_keep_alive()``, the body). It returns ``None`` for
anything outside the subset below, including a request that has not arrived whole; the caller
then feeds ``data[start:]`` to httptools, which parses it, or refuses it with its own error. So
the scanner never decides what is an error, and what it accepts, llhttp accepts the same way.
The subset, stricter than the RFC and than llhttp:

* the method is one of :data:`METHODS`, the target is in origin form (``/`` and the bytes
  ``0x21``-``0x7e``), the version is ``HTTP/1.0`` or ``HTTP/1.1``; lines end in CRLF;
* a header is a token name, a colon, optional spaces or tabs, and a value of tabs and the bytes
  ``0x20``-``0x7e`` and ``0x80``-``0xff`` (no obsolete line folding);
* no ``Transfer-Encoding``, ``Upgrade`` or ``Expect`` header; at most one ``Content-Length``, of
  at most 18 digits, and at most one ``Connection``, whose value is ``close`` or ``keep-alive``
  in any case;
* the request line and headers take at most *max_head* bytes, and the body has arrived whole.
"""

from __future__ import annotations

import re
from typing import Callable, Final

from servecore.codec import native_modules

#: The methods the scanner reads (llhttp knows more; the others go to it).
METHODS: Final[tuple[str, ...]] = ("GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH")
#: The longest ``Content-Length`` the scanner reads, in digits.
MAX_LENGTH_DIGITS: Final[int] = 18

#: ``(method, target, version, headers, keep_alive, body, end)``
Scanned = tuple[str, bytes, str, list[tuple[bytes, bytes]], bool, bytes, int]
#: :func:`scan_request` or its compiled twin: ``(data, start, max_head)`` to :data:`Scanned` or None
Scanner = Callable[[bytes, int, int], "Scanned | None"]

_LINE = re.compile(rb"(GET|POST|PUT|DELETE|HEAD|OPTIONS|PATCH) (/[\x21-\x7e]*) HTTP/1\.([01])\r\n")
_FIELD = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([\t\x20-\x7e\x80-\xff]*)\r\n")
#: headers llhttp gives a meaning the scanner does not follow
_DECLINED: Final = frozenset((b"transfer-encoding", b"upgrade", b"expect"))


def load_scanner(*, pure_python: bool | None = None) -> Scanner | None:
    """The compiled :func:`scan_request`, or None when the pure-Python twins are asked for or it
    is not built: in Python, httptools' callbacks cost less than this scanner does."""
    native = native_modules("headscan", pure_python=pure_python)
    return None if native is None else native[0].scan_request


def scan_request(data: bytes, start: int, max_head: int) -> Scanned | None:
    """The plain request in ``data[start:]``, or None (see the module's contract)."""
    limit = min(len(data), start + max_head)
    line = _LINE.match(data, start, limit)
    if line is None:
        return None
    pos = line.end()
    headers: list[tuple[bytes, bytes]] = []
    length = 0
    has_length = close = keep = has_connection = False
    while not data.startswith(b"\r\n", pos):
        field = _FIELD.match(data, pos, limit)
        if field is None:
            return None
        name, value = field.group(1).lower(), field.group(2)
        pos = field.end()
        if name == b"content-length":
            if has_length or not value.isdigit() or len(value) > MAX_LENGTH_DIGITS:
                return None
            has_length, length = True, int(value)
        elif name == b"connection":
            token = value.lower()
            if has_connection or token not in (b"close", b"keep-alive"):
                return None
            has_connection, close, keep = True, token == b"close", token == b"keep-alive"
        elif name in _DECLINED:
            return None
        headers.append((name, value))
    pos += 2
    if pos > limit:
        return None
    end = pos + length
    if end > len(data):
        return None
    version = "1.1" if line.group(3) == b"1" else "1.0"
    keep_alive = not close if version == "1.1" else keep
    return line.group(1).decode("ascii"), line.group(2), version, headers, keep_alive, data[pos:end], end
