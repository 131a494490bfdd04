"""HTTP/1.1 over raw sockets, for requests and connection behaviour no client library shows."""

from __future__ import annotations

import socket
import weakref

#: request headers in order, as (name, value)
Headers = tuple[tuple[str, str], ...]

#: bytes read past the end of a response (pipelined answers), by socket
_leftover: weakref.WeakKeyDictionary[socket.socket, bytes] = weakref.WeakKeyDictionary()


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response from *sock* (Content-Length or chunked): status, headers, body.

    Bytes after the response are kept for the next call on the same socket.
    """
    data = _leftover.pop(sock, b"")
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed before the response head: {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    if "content-length" in headers:
        length = int(headers["content-length"])
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        _leftover[sock] = rest[length:]
        return status, headers, rest[:length]
    assert headers.get("transfer-encoding") == "chunked", headers
    body = b""
    while True:
        while b"\r\n" not in rest:
            rest += sock.recv(65536)
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        while len(rest) < size + 2:
            rest += sock.recv(65536)
        body += rest[:size]
        rest = rest[size + 2 :]
        if size == 0:
            _leftover[sock] = rest
            return status, headers, body


def raw_exchange(port: int, request: bytes, *, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        return read_response(sock)


def http_request(
    path: str, body: bytes | None, *, tag: str | None, headers: Headers = (), method: str = "POST",
    version: str = "1.1", chunked: bool = False,
) -> bytes:
    """One request as bytes: the request line, Host, X-Case (*tag*), *headers* in order, the body's
    framing (Content-Length, or two chunks with *chunked*) and the body."""
    lines = [f"{method} {path} HTTP/{version}", "Host: 127.0.0.1"]
    if tag is not None:
        lines.append(f"X-Case: {tag}")
    lines += [f"{name}: {value}" for name, value in headers]
    payload = b""
    if body is not None:
        if chunked:
            lines.append("Transfer-Encoding: chunked")
            half = len(body) // 2
            payload = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:half], body[half:]) if part)
            payload += b"0\r\n\r\n"
        else:
            lines.append(f"Content-Length: {len(body)}")
            payload = body
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload
