"""Raw binary requests (protocol.md 3.4): ``Inference-Header-Content-Length: 0`` and the body is
the bytes of the model's only input, taken as one batch row; every output comes back binary."""

from __future__ import annotations

import gzip
import json
import struct
from typing import Any

import httpx
import numpy as np
import pytest

JSON = "application/json"
IHCL = "inference-header-content-length"
RAW = {"Inference-Header-Content-Length": "0"}

pytestmark = pytest.mark.usefixtures("still_serving")  # the server survives every test


def assert_error(response: httpx.Response, status: int, *needles: str) -> str:
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["content-type"] == JSON, response.headers
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"], body
    for needle in needles:
        assert needle in body["error"], (needle, body["error"])
    return str(body["error"])


def split(response: httpx.Response) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The JSON header of a binary response and each binary output's bytes, by name."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    length = int(response.headers[IHCL])
    header = json.loads(response.content[:length])
    blobs: dict[str, bytes] = {}
    offset = length
    for out in header["outputs"]:
        size = out["parameters"]["binary_data_size"]
        assert "data" not in out
        blobs[out["name"]] = response.content[offset : offset + size]
        offset += size
    assert offset == len(response.content)
    return header, blobs


@pytest.mark.parametrize(
    ("model", "array"),
    [
        ("identity_fp32", np.arange(6, dtype="<f4")),
        ("identity_int64", np.array([-(2**63), -1, 0, 2**63 - 1], dtype="<i8")),
        ("identity_uint8", np.array([0, 255, 7], dtype="u1")),
        ("identity_fp16", np.array([0.5, -2.0], dtype="<f2")),
        ("identity_bool", np.array([True, False, True], dtype="?")),
        ("identity_fp32", np.zeros(0, dtype="<f4")),
    ],
)
def test_raw_binary_identity(http: httpx.Client, model: str, array: np.ndarray) -> None:
    response = http.post(f"/v2/models/{model}/infer", content=array.tobytes(), headers=RAW)
    header, blobs = split(response)
    assert header["model_name"] == model
    (out,) = header["outputs"]
    assert out["name"] == "OUTPUT0"
    assert out["shape"] == [1, array.size]
    assert blobs["OUTPUT0"] == array.tobytes()


@pytest.mark.parametrize("element", [b"hello", b"", "\u00e9t\u00e9".encode()])
def test_raw_binary_bytes(http: httpx.Client, element: bytes) -> None:
    body = struct.pack("<I", len(element)) + element
    header, blobs = split(http.post("/v2/models/identity_bytes/infer", content=body, headers=RAW))
    (out,) = header["outputs"]
    assert out["datatype"] == "BYTES" and out["shape"] == [1, 1]
    assert blobs["OUTPUT0"] == body


def test_raw_binary_fixed_and_scalar_models(http: httpx.Client) -> None:
    array = np.arange(6, dtype="<i4")
    header, blobs = split(http.post("/v2/models/fixed/infer", content=array.tobytes(), headers=RAW))
    assert header["outputs"][0]["shape"] == [2, 3]
    assert blobs["OUTPUT0"] == array.tobytes()
    header, blobs = split(http.post("/v2/models/scalar/infer", content=np.float32(2.5).tobytes(), headers=RAW))
    assert header["outputs"][0]["shape"] == []
    assert np.frombuffer(blobs["y"], dtype="<f4").tolist() == [5.0]


def test_raw_binary_versioned_and_compressed(http: httpx.Client) -> None:
    array = np.arange(4, dtype="<f4")
    response = http.post("/v2/models/identity_fp32/versions/1/infer", content=array.tobytes(), headers=RAW)
    assert split(response)[1]["OUTPUT0"] == array.tobytes()
    response = http.post(
        "/v2/models/identity_fp32/infer",
        content=gzip.compress(array.tobytes()),
        headers={**RAW, "Content-Encoding": "gzip"},
    )
    assert split(response)[1]["OUTPUT0"] == array.tobytes()


def test_raw_binary_on_two_inputs_is_refused(http: httpx.Client) -> None:
    body = np.ones(32, dtype="<f4").tobytes()
    assert_error(http.post("/v2/models/add_sub/infer", content=body, headers=RAW), 400, "add_sub")


@pytest.mark.parametrize(
    ("model", "body"),
    [
        ("identity_fp32", b"\x00" * 7),  # not a whole number of FP32 elements
        ("identity_int64", b"\x00" * 12),
        ("identity_fp16", b"\x00"),
        ("fixed", b"\x00" * 20),  # INT32 [2, 3] needs 24 bytes
        ("fixed", b"\x00" * 28),
        ("fixed", b""),
        ("scalar", b"\x00" * 8),
        ("scalar", b""),
        ("identity_bool", b"\x02"),  # BOOL bytes are 0 or 1
        ("identity_bytes", b""),  # one element needs at least its prefix
        ("identity_bytes", struct.pack("<I", 10) + b"abc"),  # prefix overruns
        ("identity_bytes", struct.pack("<I", 1) + b"ab"),  # bytes left over
        ("identity_bytes", struct.pack("<I", 1) + b"a" + struct.pack("<I", 1) + b"b"),  # two elements
        ("identity_bytes", struct.pack("<I", 1) + b"\xff"),  # not UTF-8 (onnxruntime strings are text)
    ],
)
def test_raw_binary_wrong_byte_count(http: httpx.Client, model: str, body: bytes) -> None:
    assert_error(http.post(f"/v2/models/{model}/infer", content=body, headers=RAW), 400)


def test_raw_binary_on_unknown_model_or_version(http: httpx.Client) -> None:
    body = np.ones(4, dtype="<f4").tobytes()
    assert_error(http.post("/v2/models/missing/infer", content=body, headers=RAW), 404)
    assert_error(http.post("/v2/models/identity_fp32/versions/9/infer", content=body, headers=RAW), 404)


def test_raw_binary_body_that_looks_like_json(http: httpx.Client) -> None:
    """With header 0 the body is data, never parsed as JSON: 24 bytes of JSON text are 6 FP32 values."""
    body = b'{"inputs": [1, 2, 3, 4]}'
    header, blobs = split(http.post("/v2/models/identity_fp32/infer", content=body, headers=RAW))
    assert header["outputs"][0]["shape"] == [1, 6]
    assert blobs["OUTPUT0"] == body


def test_raw_binary_many_requests_on_one_connection(http: httpx.Client) -> None:
    for n in range(20):
        array = np.full(n, n, dtype="<f4")
        assert split(http.post("/v2/models/identity_fp32/infer", content=array.tobytes(), headers=RAW))[1]["OUTPUT0"] == array.tobytes()
        assert_error(http.post("/v2/models/identity_fp32/infer", content=b"\x00" * (4 * n + 1), headers=RAW), 400)
