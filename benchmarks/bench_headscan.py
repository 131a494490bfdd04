"""Time servecore's HTTP connection per request: httptools' callbacks against the compiled scanner.

Run after building the extension in place::

    python setup.py build_ext --inplace
    PYTHONPATH=src python benchmarks/bench_headscan.py [--repeat 7] [--requests 2000]

Each case feeds the real :class:`servecore.http.connection.Connection` one request per
``data_received`` (a fake transport; a fast route that answers every request at once, so what is
timed is the connection: parsing the request, building its cycle and scope, writing the answer),
first with httptools alone (``scan=None``, what the pure-Python mode does), then with
:func:`servecore._native.headscan.scan_request`. It prints the best time per request (µs) of
each and the ratio; a last column times ``scan_request`` alone on the same bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import numpy as np

from servecore.http.connection import Connection, Cycle, ServerState

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import bench_http  # noqa: E402  (the benchmarks' own request bodies)

try:
    from servecore._native.headscan import scan_request
except ImportError:  # pragma: no cover - the point of the script is the comparison
    sys.exit("servecore._native.headscan is not built: run `python setup.py build_ext --inplace`")


class _Transport:
    def write(self, data: bytes) -> None:
        pass

    def get_extra_info(self, key: str) -> Any:
        return ("127.0.0.1", 40000)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class _Answer:
    """A fast route taking every POST and answering it at once."""

    def match(self, path: str) -> str:
        return path

    def handle(self, cycle: Cycle, token: Any, body: bytes) -> bool:
        cycle.answer(200, b"content-type: application/json\r\ncontent-length: 2\r\n", b"{}")
        return True


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:  # never reached: the route takes all
    raise AssertionError("the fast route takes every request")


def _requests() -> dict[str, bytes]:
    x = np.random.default_rng(0).standard_normal((1, 512)).astype(np.float32)
    binary, header_length = bench_http.make_binary_body(x)
    json_body = bench_http.make_body(x)
    head = b"POST /v2/models/heavy/infer HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nContent-Length: %d\r\n"
    return {
        "binary tensors (tritonclient, perf_analyzer)": head % len(binary)
        + b"Content-Type: application/octet-stream\r\nInference-Header-Content-Length: %d\r\n\r\n" % header_length
        + binary,
        "JSON tensors": head % len(json_body) + b"Content-Type: application/json\r\n\r\n" + json_body,
        "curl-like, 7 headers": head % len(json_body)
        + b"User-Agent: curl/8.5.0\r\nAccept: */*\r\nContent-Type: application/json\r\n"
        b"Accept-Encoding: identity\r\nX-Request-Id: 1234\r\n\r\n" + json_body,
    }


async def _per_request(request: bytes, scan: Any, count: int, repeat: int) -> float:
    state = ServerState(_app, keep_alive_timeout=0, fast=_Answer(), scan=scan)
    connection = Connection(state)
    connection.connection_made(_Transport())  # type: ignore[arg-type]
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(count):
            connection.data_received(request)
        best = min(best, (time.perf_counter() - started) / count)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    print("| request | bytes | httptools µs/request | scanner µs/request | speed-up | scan_request alone µs |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, request in _requests().items():
        plain = asyncio.run(_per_request(request, None, args.requests, args.repeat))
        scanned = asyncio.run(_per_request(request, scan_request, args.requests, args.repeat))
        alone = min(_time_scan(request, args.requests) for _ in range(args.repeat))
        print(f"| {name} | {len(request):,} | {plain:.2f} | {scanned:.2f} | {plain / scanned:.2f}× | {alone:.2f} |")


def _time_scan(request: bytes, count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        scan_request(request, 0, 65536)
    return (time.perf_counter() - started) / count * 1e6


if __name__ == "__main__":
    main()
