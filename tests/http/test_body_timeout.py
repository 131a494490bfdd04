"""--body-timeout: a client that stops sending its body is answered 408 and the server keeps serving."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Callable

import httpx
import pytest

from checks import assert_serving
from server_process import ServerProcess


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", "0")):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body


@pytest.mark.parametrize("sent", [b"", b'{"inputs": ['], ids=["no-body-yet", "part-of-the-body"])
def test_stalled_body_gets_408(model_paths: dict[str, Path], start_server: Callable[..., ServerProcess], sent: bytes) -> None:
    server = start_server([str(model_paths["identity_fp32"]), "--body-timeout", "0.5"])
    head = (
        f"POST /v2/models/identity_fp32/infer HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head + sent)  # ...and then nothing more
        status, headers, body = _read_response(sock)
    assert status == 408, body
    assert headers["content-type"] == "application/json"
    assert "stalled" in json.loads(body)["error"]
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert_serving(client)


@pytest.mark.parametrize("limit", ["3", "0"], ids=["pause-under-the-limit", "no-limit"])
def test_a_paused_but_complete_body_is_served(
    model_paths: dict[str, Path], start_server: Callable[..., ServerProcess], limit: str
) -> None:
    """A client that pauses for a second mid-body and then finishes gets its answer."""
    server = start_server([str(model_paths["identity_fp32"]), "--body-timeout", limit])
    body = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0]}]}).encode()
    head = (
        f"POST /v2/models/identity_fp32/infer HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head + body[:10])
        time.sleep(1.0)
        sock.sendall(body[10:])
        status, _, answer = _read_response(sock)
    assert status == 200, answer
    assert json.loads(answer)["outputs"][0]["data"] == [1.0, 2.0]
