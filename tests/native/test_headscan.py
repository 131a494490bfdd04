"""A whole plain HTTP/1.1 request in one call: ``scan_request``, compiled and pure-Python.

The contract (``servecore.http.headscan``'s docstring): either ``None``, or the request in
``data[start:end]`` exactly as llhttp reads it. So every accepted request here is also parsed by
httptools, alone, and must give the same method, target, version, headers, keep-alive and body,
ending exactly at ``end``. Unit tests state what is read and what is left to httptools, on both
implementations (``impl``: ``py``, ``c``); hypothesis feeds both the same generated, corrupted
and random requests and requires identical answers that keep the contract.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import httptools
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from servecore.http import headscan as twin
from servecore.http.headscan import load_scanner

try:
    from servecore._native import headscan as compiled
except ImportError:  # not built: the "c" cases are skipped
    compiled = None  # type: ignore[assignment]

needs_native = pytest.mark.skipif(compiled is None, reason="servecore._native.headscan is not built")
IMPLS = [pytest.param(twin, id="py"), pytest.param(compiled, id="c", marks=needs_native)]
MAX_HEAD = 64 * 1024
INFER = (
    b"POST /v2/models/heavy/infer HTTP/1.1\r\nHost: 127.0.0.1:8111\r\nContent-Length: 10\r\n"
    b"Content-Type: application/octet-stream\r\nInference-Header-Content-Length: 5\r\n\r\n0123456789"
)


@pytest.fixture(params=IMPLS)
def impl(request: pytest.FixtureRequest) -> ModuleType:
    return request.param


class _Messages:
    """httptools' callbacks, collected: one tuple per complete request, like ``scan_request``'s."""

    def __init__(self) -> None:
        self.done: list[tuple[Any, ...]] = []
        self.parser = httptools.HttpRequestParser(self)

    def on_message_begin(self) -> None:
        self.url, self.headers, self.body = b"", [], b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        self.head = (parser.get_method().decode("ascii"), parser.get_http_version(), parser.should_keep_alive())

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        method, version, keep_alive = self.head
        self.done.append((method, self.url, version, self.headers, keep_alive, self.body))


def llhttp(raw: bytes) -> list[tuple[Any, ...]]:
    """The requests httptools reads from *raw*, in full, or an AssertionError naming its error."""
    messages = _Messages()
    try:
        messages.parser.feed_data(raw)
    except httptools.HttpParserError as exc:
        raise AssertionError(f"httptools refuses {raw!r}: {exc}") from exc
    return messages.done


def check(impl: ModuleType, data: bytes, start: int = 0, max_head: int = MAX_HEAD) -> tuple[Any, ...] | None:
    """``scan_request`` on *data*, with the contract checked: an accepted request is what httptools
    reads from ``data[start:end]``, one request, nothing left over."""
    found = impl.scan_request(data, start, max_head)
    if found is not None:
        *request, end = found
        assert start < end <= len(data)
        assert llhttp(data[start:end]) == [tuple(request)]
    return found


# -- what is read -------------------------------------------------------------------------------


def test_an_inference_request(impl: ModuleType) -> None:
    found = check(impl, INFER)
    assert found == (
        "POST",
        b"/v2/models/heavy/infer",
        "1.1",
        [
            (b"host", b"127.0.0.1:8111"),
            (b"content-length", b"10"),
            (b"content-type", b"application/octet-stream"),
            (b"inference-header-content-length", b"5"),
        ],
        True,
        b"0123456789",
        len(INFER),
    )


@pytest.mark.parametrize("method", twin.METHODS)
def test_every_method_it_knows(impl: ModuleType, method: str) -> None:
    found = check(impl, f"{method} /x HTTP/1.1\r\n\r\n".encode())
    assert found is not None and found[0] == method and found[5] == b""


@pytest.mark.parametrize(
    ("version", "connection", "keep_alive"),
    [
        ("1.1", None, True),
        ("1.1", "close", False),
        ("1.1", "CLOSE", False),
        ("1.1", "keep-alive", True),
        ("1.0", None, False),
        ("1.0", "Keep-Alive", True),
        ("1.0", "close", False),
    ],
)
def test_keep_alive_as_llhttp_has_it(impl: ModuleType, version: str, connection: str | None, keep_alive: bool) -> None:
    head = f"GET / HTTP/{version}\r\n" + (f"Connection: {connection}\r\n" if connection else "") + "\r\n"
    found = check(impl, head.encode())
    assert found is not None and found[2] == version and found[4] is keep_alive


@pytest.mark.parametrize(
    ("line", "value"),
    [
        (b"A: b  ", b"b  "),  # trailing whitespace is kept, as llhttp keeps it
        (b"A:  \t b\tc", b"b\tc"),  # leading whitespace is not
        (b"A:", b""),
        (b"A:   ", b""),
        (b"A: \xff\xfe caf\xc3\xa9", b"\xff\xfe caf\xc3\xa9"),  # obs-text
        (b"X-Odd!#$%&'*+-.^_`|~: {}", b"{}"),  # every token character in the name
    ],
)
def test_header_values_as_llhttp_gives_them(impl: ModuleType, line: bytes, value: bytes) -> None:
    found = check(impl, b"GET / HTTP/1.1\r\n" + line + b"\r\n\r\n")
    assert found is not None and found[3] == [(line.split(b":")[0].lower(), value)]


@pytest.mark.parametrize("target", [b"/", b"//x", b"/a?b=c&d", b"/a%20b", b"/a#b", b'/"|{}\\^`~'])
def test_targets_in_origin_form(impl: ModuleType, target: bytes) -> None:
    found = check(impl, b"GET " + target + b" HTTP/1.1\r\n\r\n")
    assert found is not None and found[1] == target


def test_a_body_is_bytes_not_parsed(impl: ModuleType) -> None:
    body = b"\r\n\r\nGET / HTTP/1.1\r\n\r\n\x00\xff"
    found = check(impl, b"PUT / HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    assert found is not None and found[5] == body


def test_a_length_with_leading_zeros(impl: ModuleType) -> None:
    found = check(impl, b"POST / HTTP/1.1\r\nContent-Length: 0003\r\n\r\nabc")
    assert found is not None and found[5] == b"abc"


def test_pipelined_requests_one_at_a_time(impl: ModuleType) -> None:
    data = INFER + b"GET /v2/health/live HTTP/1.1\r\n\r\n" + INFER + b"GET / HTTP/1.1\r\n"
    found, ends = 0, []
    start = 0
    while (request := check(impl, data, start)) is not None:
        found += 1
        start = request[-1]
        ends.append(start)
    assert found == 3 and ends[-1] == len(data) - len(b"GET / HTTP/1.1\r\n")
    assert impl.scan_request(data, len(data), MAX_HEAD) is None


def test_the_head_limit_counts_the_blank_line(impl: ModuleType) -> None:
    head = b"GET / HTTP/1.1\r\nA: " + b"b" * 50 + b"\r\n\r\n"
    assert check(impl, head, max_head=len(head)) is not None
    assert impl.scan_request(head, 0, len(head) - 1) is None
    assert check(impl, head + b"rest", max_head=len(head)) is not None  # the body does not count


# -- what is left to httptools -----------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"get / HTTP/1.1\r\n\r\n",  # a method llhttp refuses
        b"CONNECT a:1 HTTP/1.1\r\n\r\n",
        b"PROPFIND / HTTP/1.1\r\n\r\n",  # one llhttp knows and the scanner does not
        b"GET * HTTP/1.1\r\n\r\n",  # not origin form
        b"GET http://x/ HTTP/1.1\r\n\r\n",
        b"GET /a\x7fb HTTP/1.1\r\n\r\n",
        b"GET /\xc3\xa9 HTTP/1.1\r\n\r\n",
        b"GET  / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.2\r\n\r\n",
        b"GET / HTTP/2.0\r\n\r\n",
        b"GET / http/1.1\r\n\r\n",
        b"GET / HTTP/1.1\n\n",  # bare LF
        b"GET / HTTP/1.1\r\nA: b\n\r\n",
        b"GET / HTTP/1.1\r\nA: b\rc\r\n\r\n",
        b"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n",  # obsolete line folding
        b"GET / HTTP/1.1\r\n\tA: b\r\n\r\n",
        b"GET / HTTP/1.1\r\nA : b\r\n\r\n",
        b"GET / HTTP/1.1\r\nA b: c\r\n\r\n",
        b"GET / HTTP/1.1\r\n: b\r\n\r\n",
        b"GET / HTTP/1.1\r\nA: b\x01c\r\n\r\n",
        b"GET / HTTP/1.1\r\nA: b\x7fc\r\n\r\n",
        b"GET / HTTP/1.1\r\nA\x00: b\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        b"GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n",
        b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        b"POST / HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
        b"POST / HTTP/1.1\r\ncontent-length: 1\r\nCONTENT-LENGTH: 2\r\n\r\n" + b"x" * 12,
        b"POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\nabc",
        b"POST / HTTP/1.1\r\nContent-Length: 3 \r\n\r\nabc",  # llhttp reads 3; the scanner does not
        b"POST / HTTP/1.1\r\nContent-Length: \r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 0x3\r\n\r\nabc",
        b"POST / HTTP/1.1\r\nContent-Length: 1234567890123456789\r\n\r\n",
        b"GET / HTTP/1.1\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n",
        b"GET / HTTP/1.1\r\nConnection: close, te\r\n\r\n",
        b"GET / HTTP/1.1\r\nConnection: close \r\n\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",
        b"",
        b"\r\nGET / HTTP/1.1\r\n\r\n",  # llhttp skips a leading empty line; the scanner leaves it
    ],
)
def test_left_to_httptools(impl: ModuleType, raw: bytes) -> None:
    assert impl.scan_request(raw, 0, MAX_HEAD) is None


def test_a_request_not_yet_arrived_whole_is_left_to_httptools(impl: ModuleType) -> None:
    for cut in range(len(INFER)):
        assert impl.scan_request(INFER[:cut], 0, MAX_HEAD) is None, cut
    assert check(impl, INFER) is not None


def test_a_start_outside_the_data(impl: ModuleType) -> None:
    assert impl.scan_request(INFER, len(INFER) + 1, MAX_HEAD) is None
    assert impl.scan_request(INFER, 0, -1) is None


# -- the two implementations agree, and keep the contract ----------------------------------------

_TOKEN = st.text("!#$%&'*+-.^_`|~0123456789AZaz", min_size=1, max_size=12)
_VALUE = st.binary(max_size=20).map(lambda b: bytes(c for c in b if c == 9 or 32 <= c != 127))
_NAMES = st.sampled_from(
    ["Host", "Content-Type", "content-length", "Connection", "CONNECTION", "Expect", "Upgrade",
     "Transfer-Encoding", "Accept-Encoding", "Inference-Header-Content-Length"]
)
_SPECIAL_VALUES = st.sampled_from([b"close", b"Keep-Alive", b"keep-alive", b"0", b"3", b"007", b"chunked", b"100-continue"])


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    """Requests near the edge of the subset: mostly plain, some with what the scanner declines."""
    method = draw(st.sampled_from([*twin.METHODS, "PROPFIND", "get", "CONNECT"]))
    target = b"/" + draw(st.binary(max_size=12).map(lambda b: bytes(c for c in b if 0x21 <= c <= 0x7E)))
    if draw(st.integers(0, 20)) == 0:
        target = draw(st.sampled_from([b"*", b"http://x/", b"/\x7f", b"/\xc3\xa9", b""]))
    version = draw(st.sampled_from([b"1.1", b"1.1", b"1.0", b"1.2"]))
    lines = [method.encode() + b" " + target + b" HTTP/" + version]
    body = draw(st.binary(max_size=30))
    for _ in range(draw(st.integers(0, 5))):
        name = draw(st.one_of(_NAMES, _TOKEN)).encode()
        value = draw(st.one_of(_VALUE, _SPECIAL_VALUES))
        space = draw(st.sampled_from([b"", b" ", b" ", b"\t", b"  "]))
        lines.append(name + b":" + space + value)
    if draw(st.booleans()):
        lines.append(b"Content-Length: %d" % draw(st.sampled_from([len(body), len(body), len(body) + 1, 0])))
    raw = b"\r\n".join(lines) + b"\r\n\r\n" + body
    if draw(st.booleans()):
        raw += raw  # pipelined: the second starts where the first ends
    return raw


def _agree(data: bytes, start: int = 0, max_head: int = MAX_HEAD) -> None:
    expected = check(twin, data, start, max_head)
    assert compiled.scan_request(data, start, max_head) == expected


@needs_native
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests(), st.integers(0, 200))
@example(INFER, MAX_HEAD)
def test_generated_requests(raw: bytes, max_head: int) -> None:
    _agree(raw)
    _agree(raw, 0, max_head)
    found = twin.scan_request(raw, 0, MAX_HEAD)
    if found is not None and found[-1] < len(raw):
        _agree(raw, found[-1])


@needs_native
@settings(max_examples=600, deadline=None)
@given(requests(), st.lists(st.tuples(st.integers(0, 400), st.binary(min_size=0, max_size=2)), min_size=1, max_size=3))
def test_corrupted_requests(raw: bytes, edits: list[tuple[int, bytes]]) -> None:
    data = bytearray(raw)
    for position, replacement in edits:
        position %= len(data) + 1
        data[position : position + 1] = replacement
    _agree(bytes(data))


@needs_native
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 10))
def test_random_bytes(data: bytes, start: int) -> None:
    _agree(data, min(start, len(data)))
    _agree(b"GET / HTTP/1.1\r\n" + data)


def test_the_server_loads_the_compiled_scanner_unless_asked_for_the_twins() -> None:
    assert load_scanner(pure_python=True) is None
    scanner = load_scanner(pure_python=False)
    assert scanner is (None if compiled is None else compiled.scan_request)
