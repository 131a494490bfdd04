"""Checks the HTTP tests share."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

JSON = "application/json"
#: a valid request to identity_fp32 and the data it must echo
GOOD_DATA = [1.0, 2.0]
GOOD_DOC = {"inputs": [{"name": "INPUT0", "shape": [1, 2], "datatype": "FP32", "data": GOOD_DATA}]}


def assert_serving(client: httpx.Client, *, headers: dict[str, str] | None = None) -> None:
    """The server behind *client* is still live and answers a good inference on identity_fp32."""
    assert client.get("/v2/health/live").status_code == 200
    response = client.post("/v2/models/identity_fp32/infer", json=GOOD_DOC, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == JSON, response.headers
    assert response.json()["outputs"][0]["data"] == GOOD_DATA


def eventually(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll *check* every 50 ms until it holds; fail naming *what* after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
