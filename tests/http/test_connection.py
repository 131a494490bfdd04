"""servecore's HTTP/1.1 server (servecore.http.connection) over raw sockets, against real processes.

Keep-alive and its timeout, HTTP/1.0, ``Connection: close``, pipelining (answers in order, and
requests parsed before a broken one still answered), HEAD, percent-encoded paths and query
strings, ``Expect: 100-continue``, oversized heads (431), bodies the app never reads, clients
that vanish mid-body, and the shutdown of idle connections. The shared server must keep serving
after each test (``still_serving``).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable

import pytest

from rawhttp import http_request, read_response
from server_process import ServerProcess

pytestmark = pytest.mark.usefixtures("still_serving")

LIVE = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"
READY = b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n"
INFER = "/v2/models/identity_fp32/infer"
DOC = {"inputs": [{"name": "INPUT0", "shape": [1, 3], "datatype": "FP32", "data": [1.0, 2.0, 3.0]}]}


def connect(server: ServerProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def post(path: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    return head.encode() + b"\r\n" + body


def closed_by_server(sock: socket.socket, within: float = 10.0) -> bool:
    """Whether the server closes *sock* (EOF or reset) within *within* seconds."""
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_keep_alive_serves_many_requests_on_one_connection(server: ServerProcess) -> None:
    with connect(server) as sock:
        for _ in range(20):
            sock.sendall(post(INFER, json.dumps(DOC).encode()))
            status, headers, body = read_response(sock)
            assert status == 200, body
            assert json.loads(body)["outputs"][0]["data"] == [1.0, 2.0, 3.0]
            assert "connection" not in headers
            assert headers["date"].endswith(" GMT")


def test_pipelined_requests_are_answered_in_order(server: ServerProcess) -> None:
    doc = json.dumps(DOC).encode()
    with connect(server) as sock:
        sock.sendall(LIVE + post(INFER, doc) + READY + b"GET /v2/models/nope HTTP/1.1\r\nHost: x\r\n\r\n" + LIVE)
        answers = [read_response(sock) for _ in range(5)]
    assert [status for status, _, _ in answers] == [200, 200, 200, 404, 200]
    assert json.loads(answers[0][2]) == {"live": True}
    assert json.loads(answers[1][2])["model_name"] == "identity_fp32"
    assert json.loads(answers[2][2]) == {"ready": True}
    assert "nope" in json.loads(answers[3][2])["error"]


def test_requests_before_a_broken_one_are_answered_then_400(server: ServerProcess) -> None:
    with connect(server) as sock:
        sock.sendall(LIVE + READY + b"NOT HTTP AT ALL\r\n\r\n")
        first, second, error = (read_response(sock) for _ in range(3))
        assert (first[0], second[0]) == (200, 200)
        status, headers, body = error
        assert status == 400 and headers["content-type"] == "application/json"
        assert set(json.loads(body)) == {"error"}
        assert headers["connection"] == "close"
        assert closed_by_server(sock)


def test_plain_requests_and_others_mixed_in_one_read(server: ServerProcess) -> None:
    """The compiled core reads a whole plain request in one call (servecore.http.headscan) and
    leaves anything else to httptools: in one read, each kind follows the other."""
    doc = json.dumps(DOC).encode()
    spaced = post(INFER, doc).replace(b"Content-Length: %d" % len(doc), b"Content-Length: %d " % len(doc))
    with connect(server) as sock:
        sock.sendall(LIVE + http_request(INFER, doc, tag=None, chunked=True) + post(INFER, doc) + spaced + http_request(INFER, doc, tag=None, chunked=True) + READY)
        answers = [read_response(sock) for _ in range(6)]
    assert [status for status, _, _ in answers] == [200] * 6, answers
    assert json.loads(answers[0][2]) == {"live": True} and json.loads(answers[5][2]) == {"ready": True}
    for _, _, body in answers[1:5]:
        assert json.loads(body)["outputs"][0]["data"] == [1.0, 2.0, 3.0]


@pytest.mark.parametrize("cut", [5, 30, 60, -10, -1])
def test_a_request_split_across_reads_then_a_whole_one(server: ServerProcess, cut: int) -> None:
    """A request whose head or body comes in two reads is httptools' until it ends; the plain one
    after it, in the second read, is read whole again."""
    request = post(INFER, json.dumps(DOC).encode())
    with connect(server) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(3):
            sock.sendall(request[:cut])
            time.sleep(0.05)
            sock.sendall(request[cut:] + request + LIVE)
            statuses = [read_response(sock)[0] for _ in range(3)]
            assert statuses == [200, 200, 200]


def test_http_1_0_closes_unless_asked_to_keep_alive(server: ServerProcess) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.0\r\n\r\n")
        status, headers, _ = read_response(sock)
        assert status == 200 and headers["connection"] == "close"
        assert closed_by_server(sock)
    with connect(server) as sock:
        for _ in range(2):
            sock.sendall(b"GET /v2/health/live HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            status, headers, _ = read_response(sock)
            assert status == 200 and "connection" not in headers


def test_connection_close_is_honoured(server: ServerProcess) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        status, headers, body = read_response(sock)
        assert status == 200 and json.loads(body) == {"live": True}
        assert headers["connection"] == "close"
        assert closed_by_server(sock)


def test_head_has_the_length_and_no_body(server: ServerProcess) -> None:
    with connect(server) as sock:
        sock.sendall(b"HEAD /v2 HTTP/1.1\r\nHost: x\r\n\r\n" + LIVE)
        data = b""
        while data.count(b"\r\n\r\n") < 2 or not data.endswith(b"}"):
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert int(dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:])["content-length"]) > 0
    assert rest.startswith(b"HTTP/1.1 200 "), "the HEAD response carried a body"
    assert rest.endswith(b'{"live":true}')


def test_percent_encoded_path_and_query_string(server: ServerProcess) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /v2/models/identity%5Ffp32/ready?verbose=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, body = read_response(sock)
    assert status == 200 and json.loads(body) == {"name": "identity_fp32", "ready": True}


def test_expect_100_continue_gets_the_interim_answer_before_the_body(server: ServerProcess) -> None:
    body = json.dumps(DOC).encode()
    head = post(INFER, b"", {"Expect": "100-continue"}).replace(b"Content-Length: 0", f"Content-Length: {len(body)}".encode())
    with connect(server) as sock:
        sock.sendall(head)
        interim = sock.recv(65536)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        status, _, answer = read_response(sock)
        assert status == 200 and json.loads(answer)["outputs"][0]["data"] == [1.0, 2.0, 3.0]
        sock.sendall(LIVE)  # and the connection goes on
        assert read_response(sock)[0] == 200


def test_oversized_head_gets_431(server: ServerProcess) -> None:
    filler = "".join(f"X-Filler-{i}: {'a' * 1000}\r\n" for i in range(80))
    with connect(server) as sock:
        sock.sendall(f"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n{filler}\r\n".encode())
        status, headers, body = read_response(sock)
        assert status == 431 and headers["content-type"] == "application/json"
        assert "headers" in json.loads(body)["error"]
        assert closed_by_server(sock)


def test_a_body_the_app_does_not_read_is_skipped(server: ServerProcess) -> None:
    """An unknown model is a 404 before the body is read; the next request still parses, whether
    the body (over the mark where reading pauses) is still arriving or already all buffered."""
    for _ in range(5):
        with connect(server) as sock:
            sock.sendall(post("/v2/models/nope/infer", b"x" * 3_000_000) + LIVE)
            status, _, body = read_response(sock)
            assert status == 404 and "nope" in json.loads(body)["error"]
            status, _, body = read_response(sock)
            assert status == 200 and json.loads(body) == {"live": True}


def test_a_client_that_vanishes_mid_body_costs_nothing(server: ServerProcess) -> None:
    for _ in range(20):
        with connect(server) as sock:
            sock.sendall(post(INFER, b"")[:-2].replace(b"Content-Length: 0", b"Content-Length: 5000") + b"\r\n" + b"{" * 100)
    with connect(server) as sock:
        sock.sendall(LIVE)
        assert read_response(sock)[0] == 200


def test_upgrade_requests_are_answered_as_plain_http(server: ServerProcess) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        status, _, body = read_response(sock)
    assert status == 200 and json.loads(body) == {"live": True}


def test_idle_connections_close_after_the_keep_alive_timeout(serve: Callable[..., ServerProcess], model_paths: dict) -> None:
    server = serve(str(model_paths["identity_fp32"]), "--keep-alive-timeout", "1")
    with connect(server) as sock:
        sock.sendall(LIVE)
        assert read_response(sock)[0] == 200
        started = time.monotonic()
        assert closed_by_server(sock, within=10)
        assert 0.9 < time.monotonic() - started < 5
    with connect(server) as sock:  # a connection in use is not closed under it
        for _ in range(4):
            sock.sendall(LIVE)
            assert read_response(sock)[0] == 200
            time.sleep(0.4)


def test_shutdown_closes_idle_connections(serve: Callable[..., ServerProcess], model_paths: dict) -> None:
    server = serve(str(model_paths["identity_fp32"]))
    with connect(server) as sock:
        sock.sendall(LIVE)
        assert read_response(sock)[0] == 200
        server.signal()
        assert closed_by_server(sock, within=10)
    assert server.wait(30) == 0, server.stderr()


def test_a_head_dribbled_slower_than_the_keep_alive_timeout_is_closed(
    serve: Callable[..., ServerProcess], model_paths: dict
) -> None:
    """Slowloris: bytes alone do not keep a connection open, a complete request head does."""
    server = serve(str(model_paths["identity_fp32"]), "--keep-alive-timeout", "1")
    with connect(server) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\n")
        started = time.monotonic()
        closed = False
        for number in range(40):
            time.sleep(0.25)
            try:
                sock.sendall(f"X-Slow-{number}: a\r\n".encode())
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
        assert closed or closed_by_server(sock, within=1), "a dribbled head kept the connection open"
        assert time.monotonic() - started < 6
