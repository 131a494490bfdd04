"""Bad input over HTTP (protocol.md 1.5, 2, 3.2 and 6 items 13-20), against a real server process.

Every bad request must get ``{"error": "<message>"}`` with ``Content-Type: application/json``
exactly and the right status (never 422, 500, HTML or plain text), and the server must keep
serving afterwards: the fixture ``still_serving`` (tests/conftest.py) runs a good inference
after each test. Requests httpx refuses to send (odd header values, bodies shorter than
``Content-Length``) go through raw sockets.
"""

from __future__ import annotations

import gzip
import json
import math
import socket
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from checks import assert_serving
from rawhttp import raw_exchange, read_response
from server_process import ServerProcess

JSON = "application/json"
IHCL = "Inference-Header-Content-Length"
GOOD_DOC = {
    "inputs": [{"name": "INPUT0", "shape": [1, 3], "datatype": "FP32", "data": [1.0, 2.0, 3.0]}],
    "outputs": [{"name": "OUTPUT0"}],
}
#: Limit of the small-body server (and the size of the overshoot the protocol asks for).
MIB = 1024 * 1024
SMALL_LIMIT = MIB


# -- helpers --------------------------------------------------------------------------------------


def assert_error(response: httpx.Response, status: int, *needles: str) -> str:
    """*response* is a protocol error of *status*; its message contains every needle."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["content-type"] == JSON, response.headers
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    message = body["error"]
    assert isinstance(message, str) and message.strip(), body
    for needle in needles:
        assert needle in message, (needle, message)
    return message


def doc(model_input: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"inputs": [model_input], **extra}


def tensor(name: str = "INPUT0", shape: Any = (1, 3), datatype: str = "FP32", data: Any = None, **params: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name, "shape": list(shape) if isinstance(shape, tuple) else shape, "datatype": datatype}
    if data is not None:
        entry["data"] = data
    if params:
        entry["parameters"] = params
    return entry


def binary_request(document: dict[str, Any], *blobs: bytes, header: str | None = None) -> tuple[bytes, dict[str, str]]:
    """A binary-extension body (JSON then blobs) and its headers; *header* overrides the length header."""
    head = json.dumps(document).encode()
    return head + b"".join(blobs), {IHCL: str(len(head)) if header is None else header}


def raw_head(port: int, path: str, headers: dict[str, str]) -> bytes:
    """The head of a POST to *path* with *headers* after Host, in order; no body."""
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def raw_post(port: int, path: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    return raw_head(port, path, {"Content-Length": str(len(body)), **(headers or {})}) + body


def assert_raw_error(result: tuple[int, dict[str, str], bytes], status: int) -> str:
    code, headers, body = result
    assert code == status, (code, body[:500])
    assert headers["content-type"] == JSON, headers
    parsed = json.loads(body)
    assert set(parsed) == {"error"} and isinstance(parsed["error"], str) and parsed["error"], parsed
    return str(parsed["error"])


#: After every test the shared server still answers health and a good inference.
pytestmark = pytest.mark.usefixtures("still_serving")


@pytest.fixture(scope="module")
def small_server(model_paths: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with ``--max-body-size`` of 1 MiB serving identity_fp32 and identity_bytes."""
    args = ["--max-body-size", str(SMALL_LIMIT), str(model_paths["identity_fp32"]), str(model_paths["identity_bytes"])]
    with ServerProcess(args, log_dir=tmp_path_factory.mktemp("small-logs")) as proc:
        yield proc


@pytest.fixture
def small(small_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=small_server.url, timeout=30.0) as client:
        yield client
        assert_serving(client)


FP32_INFER = "/v2/models/identity_fp32/infer"


# -- 13. wrong datatype and element types -----------------------------------------------------------


def test_int32_data_for_fp32_input(http: httpx.Client) -> None:
    response = http.post(FP32_INFER, json=doc(tensor(datatype="INT32", data=[1, 2, 3])))
    assert_error(response, 400, "INPUT0", "INT32", "FP32")


@pytest.mark.parametrize(
    ("datatype", "model", "data"),
    [
        ("FP32", "identity_fp32", ["a", "b", "c"]),
        ("FP32", "identity_fp32", [1.0, "2", 3.0]),
        ("FP32", "identity_fp32", [True, False, True]),
        ("FP32", "identity_fp32", [1.0, None, 3.0]),
        ("FP32", "identity_fp32", [1.0, {"v": 2}, 3.0]),
        ("FP64", "identity_fp64", ["1.0", "2.0", "3.0"]),
        ("FP16", "identity_fp16", [True, 1.0, 2.0]),
        ("INT32", "identity_int32", [1, 2.5, 3]),
        ("INT32", "identity_int32", ["1", 2, 3]),
        ("INT32", "identity_int32", [True, 2, 3]),
        ("INT64", "identity_int64", [1, 2, 3.0]),
        ("UINT8", "identity_uint8", [1, 2, False]),
        ("BOOL", "identity_bool", [1, 0, 1]),
        ("BOOL", "identity_bool", ["true", False, True]),
        ("BYTES", "identity_bytes", ["a", 1, "c"]),
        ("BYTES", "identity_bytes", ["a", None, "c"]),
        ("BYTES", "identity_bytes", ["a", {"b": "c"}, "c"]),
        ("BYTES", "identity_bytes", ["a", b"b".hex(), 3.5]),
    ],
)
def test_wrong_json_element_types(http: httpx.Client, datatype: str, model: str, data: list[Any]) -> None:
    response = http.post(f"/v2/models/{model}/infer", json=doc(tensor(datatype=datatype, data=data)))
    assert_error(response, 400, "INPUT0")


INT_RANGES = {
    name: (int(np.iinfo(dt).min), int(np.iinfo(dt).max))
    for name, dt in {
        "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
        "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    }.items()
}


@pytest.mark.parametrize("datatype", list(INT_RANGES))
@pytest.mark.parametrize("side", ["below", "above"])
def test_out_of_range_ints(http: httpx.Client, datatype: str, side: str) -> None:
    low, high = INT_RANGES[datatype]
    value = low - 1 if side == "below" else high + 1
    body = json.dumps(doc(tensor(shape=[1, 2], datatype=datatype, data=[0, value])))
    response = http.post(f"/v2/models/identity_{datatype.lower()}/infer", content=body)
    assert_error(response, 400, "INPUT0")


@pytest.mark.parametrize("datatype", list(INT_RANGES))
def test_int_range_limits_are_accepted(http: httpx.Client, datatype: str) -> None:
    low, high = INT_RANGES[datatype]
    body = json.dumps(doc(tensor(shape=[1, 2], datatype=datatype, data=[low, high])))
    response = http.post(f"/v2/models/identity_{datatype.lower()}/infer", content=body)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == [low, high]


def test_bf16_as_json_is_refused(http: httpx.Client) -> None:
    response = http.post("/v2/models/identity_bf16/infer", json=doc(tensor(datatype="BF16", data=[1.0, 2.0, 3.0])))
    assert_error(response, 400, "INPUT0", "BF16")


def test_datatype_not_matching_model_for_every_type(http: httpx.Client) -> None:
    """BOOL data sent to every non-BOOL identity model is refused by datatype."""
    for datatype in ("INT8", "UINT64", "FP16", "FP64", "BYTES"):
        response = http.post(
            f"/v2/models/identity_{datatype.lower()}/infer", json=doc(tensor(datatype="BOOL", data=[True, False, True]))
        )
        assert_error(response, 400, "INPUT0", datatype)


# -- 14. shape / data mismatches --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "data"),
    [
        ([2, 2], [1.0, 2.0, 3.0]),
        ([2, 2], [1.0, 2.0, 3.0, 4.0, 5.0]),
        ([2, 2], [[1.0, 2.0], [3.0]]),
        ([1, 3], []),
        ([1, 3], 1.0),
        ([1, 0], [1.0]),
    ],
)
def test_shape_data_count_mismatch(http: httpx.Client, shape: list[int], data: Any) -> None:
    response = http.post(FP32_INFER, json=doc(tensor(shape=shape, data=data)))
    assert_error(response, 400, "INPUT0")


def test_binary_size_not_matching_shape(http: httpx.Client) -> None:
    blob = np.arange(3, dtype="<f4").tobytes()
    for size in (8, 16):  # too small and too big for shape [1, 3] of FP32, body holds exactly size
        body, headers = binary_request(doc(tensor(binary_data_size=size)), (blob + blob)[:size])
        assert_error(http.post(FP32_INFER, content=body, headers=headers), 400, "INPUT0")


def test_binary_body_shorter_than_declared(http: httpx.Client) -> None:
    blob = np.arange(3, dtype="<f4").tobytes()
    body, headers = binary_request(doc(tensor(binary_data_size=12)), blob[:10])
    assert_error(http.post(FP32_INFER, content=body, headers=headers), 400, "INPUT0")


def test_binary_extra_trailing_bytes(http: httpx.Client) -> None:
    blob = np.arange(3, dtype="<f4").tobytes()
    body, headers = binary_request(doc(tensor(binary_data_size=12)), blob, b"\x00")
    assert_error(http.post(FP32_INFER, content=body, headers=headers), 400, "additional")
    # trailing bytes after a pure JSON body whose header says where the JSON ends
    body, headers = binary_request(doc(tensor(data=[1.0, 2.0, 3.0])), b"junk")
    assert_error(http.post(FP32_INFER, content=body, headers=headers), 400, "additional")


def test_binary_two_inputs_sizes_must_add_up(http: httpx.Client) -> None:
    blob = np.ones((1, 16), dtype="<f4").tobytes()
    inputs = [tensor("INPUT0", (1, 16), binary_data_size=64), tensor("INPUT1", (1, 16), binary_data_size=64)]
    body, headers = binary_request({"inputs": inputs}, blob, blob[:-4])
    assert_error(http.post("/v2/models/add_sub/infer", content=body, headers=headers), 400, "INPUT1")
    body, headers = binary_request({"inputs": inputs}, blob, blob)
    response = http.post("/v2/models/add_sub/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text


def _bytes_blob(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


@pytest.mark.parametrize(
    ("shape", "blob"),
    [
        ([1, 2], _bytes_blob(b"ab") + struct.pack("<I", 100) + b"xy"),  # second prefix overruns
        ([1, 1], _bytes_blob(b"ab") + b"\x00\x00"),  # bytes left after the last element
        ([1, 2], _bytes_blob(b"ab")),  # fewer elements than the shape needs
        ([1, 1], _bytes_blob(b"ab", b"cd")),  # more elements than the shape needs
        ([1, 1], b"\x01\x00"),  # a truncated prefix
        ([1, 2], struct.pack("<I", 0xFFFFFFFF) + b"x"),  # a 4 GiB prefix
    ],
)
def test_bytes_prefixes_that_do_not_fit(http: httpx.Client, shape: list[int], blob: bytes) -> None:
    body, headers = binary_request(doc(tensor(shape=shape, datatype="BYTES", binary_data_size=len(blob))), blob)
    assert_error(http.post("/v2/models/identity_bytes/infer", content=body, headers=headers), 400, "INPUT0")


def test_bytes_binary_round_trip_still_works(http: httpx.Client) -> None:
    blob = _bytes_blob(b"", "\u00e9t\u00e9".encode())
    document = doc(tensor(shape=[1, 2], datatype="BYTES", binary_data_size=len(blob)), outputs=[{"name": "OUTPUT0"}])
    body, headers = binary_request(document, blob)
    response = http.post("/v2/models/identity_bytes/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == ["", "\u00e9t\u00e9"]


@pytest.mark.parametrize(
    ("model", "datatype", "shape"),
    [
        ("identity_fp32", "FP32", [3]),
        ("identity_fp32", "FP32", [1, 1, 3]),
        ("identity_fp32", "FP32", []),
        ("fixed", "INT32", [3, 2]),
        ("fixed", "INT32", [6]),
        ("fixed", "INT32", [1, 2, 3]),
        ("fixed", "INT32", [2, 3, 1]),
        ("scalar", "FP32", [1]),
        ("add_sub", "FP32", [3, 2]),
    ],
)
def test_shape_incompatible_with_model(http: httpx.Client, model: str, datatype: str, shape: list[int]) -> None:
    count = math.prod(shape)
    data = [1] * count if datatype == "INT32" else [1.0] * count
    other = [tensor("INPUT1", shape, data=data)] if model == "add_sub" else []
    name = "x" if model == "scalar" else "INPUT0"
    response = http.post(f"/v2/models/{model}/infer", json={"inputs": [tensor(name, shape, datatype, data), *other]})
    assert_error(response, 400, name)


def test_shape_compatible_with_fixed_and_scalar_models(http: httpx.Client) -> None:
    response = http.post("/v2/models/fixed/infer", json=doc(tensor(shape=[2, 3], datatype="INT32", data=[[1, 2, 3], [4, 5, 6]])))
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["shape"] == [2, 3]
    response = http.post("/v2/models/scalar/infer", json=doc(tensor("x", [], data=[2.0])))
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == [4.0]


@pytest.mark.parametrize(
    "shape",
    [
        [-1, 3],
        [1, -3],
        [2**62, 2**62],
        [2**62],
        [1, 2**62],
        [0, 2**62],
        [2**62, 0],
        [0, 2**62, 2**62],
        [2**63, 1],
        [2**64 + 1, 1],
        [1, 10**30],
    ],
)
@pytest.mark.parametrize("mode", ["json", "binary", "bytes"])
def test_negative_and_huge_dims(http: httpx.Client, shape: list[int], mode: str) -> None:
    """400 quickly: no 500, no hang, no attempt to allocate the declared size."""
    started = time.monotonic()
    if mode == "json":
        body = json.dumps(doc(tensor(shape=shape, data=[1.0]))).encode()
        response = http.post(FP32_INFER, content=body, timeout=10.0)
    elif mode == "binary":
        body, headers = binary_request(doc(tensor(shape=shape, binary_data_size=4)), b"\x00" * 4)
        response = http.post(FP32_INFER, content=body, headers=headers, timeout=10.0)
    else:
        blob = _bytes_blob(b"a")
        body, headers = binary_request(doc(tensor(shape=shape, datatype="BYTES", binary_data_size=len(blob))), blob)
        response = http.post("/v2/models/identity_bytes/infer", content=body, headers=headers, timeout=10.0)
    assert_error(response, 400, "INPUT0")
    assert time.monotonic() - started < 5.0


@pytest.mark.parametrize("shape", [[1, 2**40], [2**31, 2**31], [1, 10**9], [1, 2**20]])
def test_bytes_count_far_beyond_the_blob(http: httpx.Client, shape: list[int]) -> None:
    """A BYTES shape with more elements than the blob could hold is refused before allocating."""
    started = time.monotonic()
    body, headers = binary_request(doc(tensor(shape=shape, datatype="BYTES", binary_data_size=0)))
    response = http.post("/v2/models/identity_bytes/infer", content=body, headers=headers, timeout=10.0)
    assert_error(response, 400, "INPUT0")
    assert time.monotonic() - started < 5.0


@pytest.mark.parametrize("shape", [[0, 2**62], [2**62, 0], [0, 2**31, 2**31], [0, 2**64 - 1]])
@pytest.mark.parametrize("model", ["identity_fp32", "identity_bytes"])
def test_empty_tensor_with_huge_dims(http: httpx.Client, shape: list[int], model: str) -> None:
    """Zero elements, but dims numpy cannot describe: 400, not a 500 from reshaping."""
    datatype = model.rsplit("_", 1)[1].upper()
    assert_error(http.post(f"/v2/models/{model}/infer", json=doc(tensor(shape=shape, datatype=datatype, data=[]))), 400, "INPUT0")
    body, headers = binary_request(doc(tensor(shape=shape, datatype=datatype, binary_data_size=0)))
    assert_error(http.post(f"/v2/models/{model}/infer", content=body, headers=headers), 400, "INPUT0")


@pytest.mark.parametrize("rank", [33, 65, 1000])
def test_too_many_dimensions(http: httpx.Client, rank: int) -> None:
    assert_error(http.post(FP32_INFER, json=doc(tensor(shape=[1] * rank, data=[1.0]))), 400, "INPUT0")
    body, headers = binary_request(doc(tensor(shape=[1] * rank, binary_data_size=4)), b"\x00" * 4)
    assert_error(http.post(FP32_INFER, content=body, headers=headers), 400, "INPUT0")


def test_empty_tensors_are_fine(http: httpx.Client) -> None:
    response = http.post(FP32_INFER, json=doc(tensor(shape=[0, 3], data=[])))
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["shape"] == [0, 3]
    body, headers = binary_request(doc(tensor(shape=[2, 0], binary_data_size=0)))
    response = http.post(FP32_INFER, content=body, headers=headers)
    assert response.status_code == 200, response.text


def test_classification_of_an_empty_batch(http: httpx.Client) -> None:
    document = doc(tensor(shape=[0, 3], data=[]), outputs=[{"name": "OUTPUT0", "parameters": {"classification": 2}}])
    response = http.post(FP32_INFER, json=document)
    assert response.status_code == 200, response.text
    out = response.json()["outputs"][0]
    assert out["datatype"] == "BYTES" and out["data"] == []


def test_data_and_binary_data_size_both_or_neither(http: httpx.Client) -> None:
    blob = np.arange(3, dtype="<f4").tobytes()
    body, headers = binary_request(doc(tensor(data=[1.0, 2.0, 3.0], binary_data_size=12)), blob)
    assert_error(http.post(FP32_INFER, content=body, headers=headers), 400, "INPUT0")
    assert_error(http.post(FP32_INFER, json=doc(tensor())), 400, "INPUT0")
    assert_error(http.post(FP32_INFER, json=doc(tensor(binary_data_size=None))), 400, "INPUT0")


@pytest.mark.parametrize("size", [-4, 4.0, "12", True, [12]])
def test_binary_data_size_must_be_a_non_negative_int(http: httpx.Client, size: Any) -> None:
    body, headers = binary_request(doc(tensor(binary_data_size=size)), b"\x00" * 12)
    assert_error(http.post(FP32_INFER, content=body, headers=headers), 400, "INPUT0")


def test_shared_memory_is_refused(http: httpx.Client) -> None:
    response = http.post(FP32_INFER, json=doc(tensor(shared_memory_region="r", shared_memory_byte_size=12)))
    assert_error(response, 400, "INPUT0")


def test_bool_binary_bytes_must_be_0_or_1(http: httpx.Client) -> None:
    body, headers = binary_request(doc(tensor(shape=[1, 3], datatype="BOOL", binary_data_size=3)), b"\x00\x01\x02")
    assert_error(http.post("/v2/models/identity_bool/infer", content=body, headers=headers), 400, "INPUT0")


# -- 15. Inference-Header-Content-Length ------------------------------------------------------------


@pytest.mark.parametrize("value", ["abc", "-1", "+5", "1e3", "12.0", "0x10", "99999999999", str(2**31), "BODY+1"])
def test_bad_header_length(http: httpx.Client, value: str) -> None:
    body = json.dumps(GOOD_DOC).encode()
    header = str(len(body) + 1) if value == "BODY+1" else value
    response = http.post(FP32_INFER, content=body, headers={IHCL: header})
    assert_error(response, 400, IHCL)


@pytest.mark.parametrize("value", ["", " ", "1 2", "\t7", "١٢".encode().decode("latin-1"), "\xb2"])
def test_odd_header_length_over_a_raw_socket(server: ServerProcess, value: str) -> None:
    """Values httpx will not send; whatever the HTTP parser hands over is refused with JSON."""
    body = json.dumps(GOOD_DOC).encode()
    result = raw_exchange(server.port, raw_post(server.port, FP32_INFER, body, {IHCL: value}))
    assert_raw_error(result, 400)


def test_header_length_with_surrounding_whitespace(server: ServerProcess) -> None:
    """A value of " 12" means 12: HTTP strips optional whitespace around field values (RFC 9110 5.5)."""
    body = json.dumps(GOOD_DOC).encode()
    ok = raw_exchange(server.port, raw_post(server.port, FP32_INFER, body, {IHCL: f" {len(body)} "}))
    assert ok[0] == 200, ok
    # the same spelling with a length that does not end the JSON is an ordinary 400
    short = raw_exchange(server.port, raw_post(server.port, FP32_INFER, body, {IHCL: " 12"}))
    assert_raw_error(short, 400)


def test_header_length_equal_to_the_body_is_plain_json(http: httpx.Client) -> None:
    """What the C++ client and perf_analyzer send: the header on a pure JSON body."""
    body = json.dumps(GOOD_DOC).encode()
    response = http.post(FP32_INFER, content=body, headers={IHCL: str(len(body))})
    assert response.status_code == 200, response.text


def test_header_length_cutting_json_short(http: httpx.Client) -> None:
    body = json.dumps(GOOD_DOC).encode()
    response = http.post(FP32_INFER, content=body, headers={IHCL: str(len(body) - 5)})
    assert_error(response, 400)


# -- 16. unknown model / version / tensor -----------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/missing/infer",
        "/v2/models/identity_fp32/versions/999/infer",
        "/v2/models/missing/versions/1/infer",
    ],
)
def test_unknown_model_or_version_infer(http: httpx.Client, path: str) -> None:
    assert_error(http.post(path, json=GOOD_DOC), 404)


@pytest.mark.parametrize("suffix", ["", "/ready", "/config", "/stats"])
@pytest.mark.parametrize("prefix", ["/v2/models/missing", "/v2/models/identity_fp32/versions/999"])
def test_unknown_model_or_version_get(http: httpx.Client, prefix: str, suffix: str) -> None:
    assert_error(http.get(prefix + suffix), 404)


def test_known_version_works(http: httpx.Client) -> None:
    response = http.post("/v2/models/identity_fp32/versions/1/infer", json=GOOD_DOC)
    assert response.status_code == 200, response.text


def test_unknown_input(http: httpx.Client) -> None:
    response = http.post(FP32_INFER, json=doc(tensor("NOPE", data=[1.0, 2.0, 3.0])))
    assert_error(response, 400, "NOPE")


def test_missing_input(http: httpx.Client) -> None:
    response = http.post("/v2/models/add_sub/infer", json=doc(tensor("INPUT0", (1, 16), data=[1.0] * 16)))
    assert_error(response, 400, "INPUT1")


def test_duplicate_input(http: httpx.Client) -> None:
    response = http.post(FP32_INFER, json={"inputs": [tensor(data=[1.0, 2.0, 3.0]), tensor(data=[4.0, 5.0, 6.0])]})
    assert_error(response, 400, "INPUT0")


def test_unknown_output(http: httpx.Client) -> None:
    response = http.post(FP32_INFER, json=doc(tensor(data=[1.0, 2.0, 3.0]), outputs=[{"name": "NOPE"}]))
    assert_error(response, 400, "NOPE")


def test_duplicate_output(http: httpx.Client) -> None:
    outputs = [{"name": "OUTPUT0"}, {"name": "OUTPUT0", "parameters": {"binary_data": True}}]
    response = http.post(FP32_INFER, json=doc(tensor(data=[1.0, 2.0, 3.0]), outputs=outputs))
    assert_error(response, 400, "OUTPUT0")


def test_classification_of_a_bytes_output(http: httpx.Client) -> None:
    document = doc(tensor(datatype="BYTES", data=["a", "b", "c"]), outputs=[{"name": "OUTPUT0", "parameters": {"classification": 1}}])
    assert_error(http.post("/v2/models/identity_bytes/infer", json=document), 400, "OUTPUT0")


def test_non_utf8_bytes_for_onnxruntime(http: httpx.Client) -> None:
    """onnxruntime string tensors hold text: non-UTF-8 BYTES elements are a 400, not a 500."""
    blob = _bytes_blob(b"\xff\xfe")
    document = doc(tensor(shape=[1, 1], datatype="BYTES", binary_data_size=len(blob)), outputs=[{"name": "OUTPUT0", "parameters": {"binary_data": False}}])
    body, headers = binary_request(document, blob)
    assert_error(http.post("/v2/models/identity_bytes/infer", content=body, headers=headers), 400, "INPUT0")


# -- 17. malformed JSON -----------------------------------------------------------------------------


GOOD_INPUT = tensor(data=[1.0, 2.0, 3.0])


@pytest.mark.parametrize(
    "body",
    [
        json.dumps(GOOD_DOC)[:-7].encode(),  # truncated
        b"",
        b" ",
        b"[]",
        b"null",
        b'"inputs"',
        b"42",
        b"{}",
        b"\xff\xfe{}",
        b'{"inputs": [], }',
        b"{'inputs': []}",
        b'{"inputs": NaN}',
        json.dumps(GOOD_DOC).encode() + b"}",
        json.dumps({"inputs": {"name": "INPUT0"}}).encode(),
        json.dumps({"inputs": "INPUT0"}).encode(),
        json.dumps({"inputs": []}).encode(),
        json.dumps({"inputs": None}).encode(),
        json.dumps({"inputs": [1]}).encode(),
        json.dumps({"inputs": [None]}).encode(),
        json.dumps({"inputs": [[GOOD_INPUT]]}).encode(),
        json.dumps({"inputs": [{k: v for k, v in GOOD_INPUT.items() if k != "name"}]}).encode(),
        json.dumps({"inputs": [{k: v for k, v in GOOD_INPUT.items() if k != "shape"}]}).encode(),
        json.dumps({"inputs": [{k: v for k, v in GOOD_INPUT.items() if k != "datatype"}]}).encode(),
        json.dumps({"inputs": [{**GOOD_INPUT, "name": 7}]}).encode(),
        json.dumps({"inputs": [{**GOOD_INPUT, "name": ""}]}).encode(),
        json.dumps({"inputs": [{**GOOD_INPUT, "shape": "1,3"}]}).encode(),
        json.dumps({"inputs": [{**GOOD_INPUT, "shape": 3}]}).encode(),
        json.dumps({"inputs": [{**GOOD_INPUT, "shape": [1.0, 3.0]}]}).encode(),
        json.dumps({"inputs": [{**GOOD_INPUT, "shape": [1, "3"]}]}).encode(),
        json.dumps({"inputs": [{**GOOD_INPUT, "shape": [True, 3]}]}).encode(),
        json.dumps({"inputs": [{**GOOD_INPUT, "shape": [[1, 3]]}]}).encode(),
        json.dumps({"inputs": [{**GOOD_INPUT, "shape": [1, None]}]}).encode(),
        json.dumps({"inputs": [{**GOOD_INPUT, "datatype": "FP128"}]}).encode(),
        json.dumps({"inputs": [{**GOOD_INPUT, "datatype": "fp32"}]}).encode(),
        json.dumps({"inputs": [{**GOOD_INPUT, "datatype": "STRING"}]}).encode(),
        json.dumps({"inputs": [{**GOOD_INPUT, "datatype": 32}]}).encode(),
        json.dumps({"inputs": [{**GOOD_INPUT, "parameters": "x"}]}).encode(),
        json.dumps({"inputs": [{**GOOD_INPUT, "parameters": []}]}).encode(),
        json.dumps({"inputs": [GOOD_INPUT], "id": 42}).encode(),
        json.dumps({"inputs": [GOOD_INPUT], "id": ["a"]}).encode(),
        json.dumps({"inputs": [GOOD_INPUT], "id": {"a": 1}}).encode(),
        json.dumps({"inputs": [GOOD_INPUT], "parameters": []}).encode(),
        json.dumps({"inputs": [GOOD_INPUT], "parameters": "binary"}).encode(),
        json.dumps({"inputs": [GOOD_INPUT], "parameters": {"binary_data_output": 1}}).encode(),
        json.dumps({"inputs": [GOOD_INPUT], "parameters": {"binary_data_output": "true"}}).encode(),
        json.dumps({"inputs": [GOOD_INPUT], "outputs": "OUTPUT0"}).encode(),
        json.dumps({"inputs": [GOOD_INPUT], "outputs": {"name": "OUTPUT0"}}).encode(),
        json.dumps({"inputs": [GOOD_INPUT], "outputs": [1]}).encode(),
        json.dumps({"inputs": [GOOD_INPUT], "outputs": [{}]}).encode(),
        json.dumps({"inputs": [GOOD_INPUT], "outputs": [{"name": 0}]}).encode(),
        json.dumps({"inputs": [GOOD_INPUT], "outputs": [{"name": "OUTPUT0", "parameters": []}]}).encode(),
        json.dumps({"inputs": [GOOD_INPUT], "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": "yes"}}]}).encode(),
        json.dumps({"inputs": [GOOD_INPUT], "outputs": [{"name": "OUTPUT0", "parameters": {"classification": -1}}]}).encode(),
        json.dumps({"inputs": [GOOD_INPUT], "outputs": [{"name": "OUTPUT0", "parameters": {"classification": 1.5}}]}).encode(),
        json.dumps({"inputs": [GOOD_INPUT], "outputs": [{"name": "OUTPUT0", "parameters": {"classification": True}}]}).encode(),
        json.dumps({"inputs": [GOOD_INPUT], "outputs": [{"name": "OUTPUT0", "parameters": {"shared_memory_region": "r"}}]}).encode(),
        b'{"inputs": [{"name": "INPUT0", "shape": [1, 1], "datatype": "FP32", "data": [1e400]}]}',
        b'{"inputs": [{"name": "INPUT0", "shape": [1, 1], "datatype": "FP32", "data": [1' + b"0" * 400 + b"]}]}",
        b'{"inputs": [{"name": "INPUT0", "shape": [1, 1], "datatype": "FP32", "data": [NaN]}]}',
        b'{"inputs": [{"name": "INPUT0", "shape": [1, 1], "datatype": "FP32", "data": [Infinity]}]}',
    ],
    ids=lambda b: b[:60].decode("latin-1"),
)
def test_malformed_request_documents(http: httpx.Client, body: bytes) -> None:
    assert_error(http.post(FP32_INFER, content=body), 400)


def test_unknown_top_level_keys_are_ignored(http: httpx.Client) -> None:
    """The KServe SDK adds "model_name" and other keys; they must not matter."""
    response = http.post(FP32_INFER, json={**GOOD_DOC, "model_name": "identity_fp32", "x-extra": {"a": [1]}, "id": "7"})
    assert response.status_code == 200, response.text
    assert response.json()["id"] == "7"


@pytest.mark.parametrize("content_type", ["application/json", "application/octet-stream", "text/plain", "text/html", "multipart/form-data; boundary=x", "application/x-www-form-urlencoded"])
def test_request_content_type_is_never_dispatched_on(http: httpx.Client, content_type: str) -> None:
    response = http.post(FP32_INFER, content=json.dumps(GOOD_DOC), headers={"content-type": content_type})
    assert response.status_code == 200, response.text
    response = http.post(FP32_INFER, content=b"<html>", headers={"content-type": content_type})
    assert_error(response, 400)


def test_form_encoded_body_is_a_400_not_422(http: httpx.Client) -> None:
    assert_error(http.post(FP32_INFER, data={"inputs": "x"}), 400)


# -- 18. nesting ------------------------------------------------------------------------------------


def _nested(value: Any, depth: int) -> Any:
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize("depth", [101, 120, 1000, 100_000])
def test_nesting_bomb(http: httpx.Client, depth: int) -> None:
    data = "[" * depth + "1.0" + "]" * depth
    body = '{"inputs": [{"name": "INPUT0", "shape": [1, 1], "datatype": "FP32", "data": ' + data + "}]}"
    assert_error(http.post(FP32_INFER, content=body), 400)


def test_nesting_bomb_in_an_unused_key(http: httpx.Client) -> None:
    body = '{"x": ' + "[" * 100_000 + "]" * 100_000 + ', "inputs": []}'
    assert_error(http.post(FP32_INFER, content=body), 400)


@pytest.mark.parametrize("depth", [50, 100])
def test_deep_nesting_within_the_limit(http: httpx.Client, depth: int) -> None:
    response = http.post(FP32_INFER, json=doc(tensor(shape=[1, 1], data=_nested(1.5, depth))))
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == [1.5]


def test_nested_data_in_natural_shape(http: httpx.Client) -> None:
    response = http.post(FP32_INFER, json=doc(tensor(shape=[2, 2], data=[[1.0, 2.0], [3.0, 4.0]])))
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == [1.0, 2.0, 3.0, 4.0]


# -- 19. oversized and compressed bodies ------------------------------------------------------------


def _padded_doc(size: int) -> bytes:
    """A valid-looking JSON request of exactly *size* bytes."""
    head = json.dumps(GOOD_DOC)[:-1] + ', "pad": "'
    return (head + "x" * (size - len(head) - 2) + '"}').encode()


def test_body_at_the_limit_is_accepted(small: httpx.Client) -> None:
    body = _padded_doc(SMALL_LIMIT)
    assert len(body) == SMALL_LIMIT
    response = small.post(FP32_INFER, content=body)
    assert response.status_code == 200, response.text


def test_oversized_body(small: httpx.Client) -> None:
    assert_error(small.post(FP32_INFER, content=_padded_doc(SMALL_LIMIT + MIB)), 413)
    assert_error(small.post(FP32_INFER, content=_padded_doc(SMALL_LIMIT + 1)), 413)


def test_oversized_chunked_body(small: httpx.Client) -> None:
    """No Content-Length: the limit is enforced while reading."""
    body = _padded_doc(SMALL_LIMIT + MIB)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    assert_error(small.post(FP32_INFER, content=chunks()), 413)


def test_oversized_body_on_the_default_limit(http: httpx.Client) -> None:
    """The default limit is 64 MiB; 65 MiB is refused."""
    assert_error(http.post(FP32_INFER, content=_padded_doc(64 * MIB + MIB)), 413)


def test_413_arrives_while_the_client_is_still_sending(small_server: ServerProcess) -> None:
    """Content-Length says too much: the 413 comes back before the body is sent, as JSON."""
    port = small_server.port
    head = raw_head(port, FP32_INFER, {"Content-Length": str(SMALL_LIMIT + MIB), "Content-Type": JSON})
    with socket.create_connection(("127.0.0.1", port), timeout=10.0) as sock:
        sock.sendall(head + b'{"inputs": [' + b" " * 65536)
        result = read_response(sock)  # only part of the body was sent
        assert_raw_error(result, 413)
    # chunked, the server learns of the size only while reading
    head = raw_head(port, FP32_INFER, {"Transfer-Encoding": "chunked"})
    with socket.create_connection(("127.0.0.1", port), timeout=10.0) as sock:
        sock.sendall(head)
        chunk = b"%x\r\n" % 65536 + b" " * 65536 + b"\r\n"
        sent = 0
        sock.settimeout(0.05)
        response = b""
        while sent <= SMALL_LIMIT + 4 * 65536:
            sock.sendall(chunk)
            sent += 65536
            try:
                response = sock.recv(65536)
            except TimeoutError:
                continue
            break
        sock.settimeout(10.0)
        assert response, "no response while still sending"

        class _Prefixed:
            def __init__(self, data: bytes) -> None:
                self.data = data

            def recv(self, n: int) -> bytes:
                if self.data:
                    data, self.data = self.data, b""
                    return data
                return sock.recv(n)

        assert_raw_error(read_response(_Prefixed(response)), 413)  # type: ignore[arg-type]


def test_413_instead_of_100_continue(small_server: ServerProcess) -> None:
    """A client that waits for "100 Continue" before sending a too-large body gets the 413 instead."""
    port = small_server.port
    head = raw_head(port, FP32_INFER, {"Content-Length": str(SMALL_LIMIT + MIB), "Expect": "100-continue"})
    with socket.create_connection(("127.0.0.1", port), timeout=10.0) as sock:
        sock.sendall(head)
        assert_raw_error(read_response(sock), 413)


def test_413_then_the_same_connection_still_works(small_server: ServerProcess) -> None:
    """After a 413 and the rest of the body, the kept-alive connection serves the next request."""
    port = small_server.port
    body = _padded_doc(SMALL_LIMIT + 1)
    good = json.dumps(GOOD_DOC).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10.0) as sock:
        sock.sendall(raw_post(port, FP32_INFER, body))
        code, headers, _ = read_response(sock)
        assert code == 413
        if headers.get("connection", "").lower() == "close":
            return  # closing is a fine answer too
        sock.sendall(raw_post(port, FP32_INFER, good))
        code, _, payload = read_response(sock)
        assert code == 200, payload


def test_gzip_bomb(small: httpx.Client) -> None:
    bomb = gzip.compress(_padded_doc(SMALL_LIMIT + MIB))
    assert len(bomb) < SMALL_LIMIT
    assert_error(small.post(FP32_INFER, content=bomb, headers={"content-encoding": "gzip"}), 413)
    much_bigger = gzip.compress(b" " * (64 * MIB))
    assert_error(small.post(FP32_INFER, content=much_bigger, headers={"content-encoding": "gzip"}), 413)
    deflated = zlib.compress(_padded_doc(SMALL_LIMIT + MIB))
    assert_error(small.post(FP32_INFER, content=deflated, headers={"content-encoding": "deflate"}), 413)


def test_gzip_within_the_limit(small: httpx.Client) -> None:
    body = gzip.compress(_padded_doc(SMALL_LIMIT))
    response = small.post(FP32_INFER, content=body, headers={"content-encoding": "gzip"})
    assert response.status_code == 200, response.text


def test_gzip_bomb_on_the_default_limit(http: httpx.Client) -> None:
    bomb = gzip.compress(b" " * (65 * MIB))
    assert_error(http.post(FP32_INFER, content=bomb, headers={"content-encoding": "gzip"}), 413)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_corrupt_and_truncated_compressed_bodies(http: httpx.Client, encoding: str) -> None:
    good = json.dumps(GOOD_DOC).encode()
    packed = gzip.compress(good) if encoding == "gzip" else zlib.compress(good)
    headers = {"content-encoding": encoding}
    corrupt = packed[:10] + bytes(b ^ 0x5A for b in packed[10:])
    for body in (
        b"not compressed at all",
        json.dumps(GOOD_DOC).encode() if encoding == "gzip" else b"\xff" * 40,
        corrupt,
        packed[: len(packed) // 2],
        packed[:-4],
        packed[:3],
        b"",
    ):
        assert_error(http.post(FP32_INFER, content=body, headers=headers), 400)
    response = http.post(FP32_INFER, content=packed, headers=headers)
    assert response.status_code == 200, response.text


def test_binary_body_compressed_splits_after_decompression(http: httpx.Client) -> None:
    blob = np.arange(3, dtype="<f4").tobytes()
    body, headers = binary_request(doc(tensor(binary_data_size=12)), blob)
    response = http.post(FP32_INFER, content=gzip.compress(body), headers={**headers, "content-encoding": "gzip"})
    assert response.status_code == 200, response.text


# -- 20. encodings and routing ----------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["br", "zstd", "compress", "x-gzip-but-not", "gzip, br"])
def test_unsupported_content_encoding(http: httpx.Client, encoding: str) -> None:
    response = http.post(FP32_INFER, content=json.dumps(GOOD_DOC), headers={"content-encoding": encoding})
    assert_error(response, 415)
    assert response.headers["accept-encoding"] == "gzip, deflate"


@pytest.mark.parametrize("encoding", ["identity", "GZIP"])
def test_other_accepted_content_encoding_spellings(http: httpx.Client, encoding: str) -> None:
    body = json.dumps(GOOD_DOC).encode()
    if encoding.lower() == "gzip":
        body = gzip.compress(body)
    response = http.post(FP32_INFER, content=body, headers={"content-encoding": encoding})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/v1",
        "/v2/nothing",
        "/v2/models",
        "/v2/models/identity_fp32/nothing",
        "/v2/models/identity_fp32/versions",
        "/v2/models/identity_fp32/versions/1/infer/more",
        "/v2/health",
        "/V2/health/live",
        "/v2/repository/models/identity_fp32/nothing",
        "/v2/repository/models/identity_fp32",
        "/v2/systemsharedmemory/status",
        "/docs",
        "/openapi.json",
    ],
)
def test_unknown_path(http: httpx.Client, path: str) -> None:
    assert_error(http.get(path), 404)
    assert_error(http.post(path, content=b"{}"), 404)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", FP32_INFER),
        ("PUT", FP32_INFER),
        ("DELETE", FP32_INFER),
        ("POST", "/v2/health/live"),
        ("POST", "/v2/health/ready"),
        ("POST", "/v2"),
        ("POST", "/v2/"),
        ("POST", "/v2/models/identity_fp32"),
        ("POST", "/v2/models/identity_fp32/ready"),
        ("PATCH", "/v2/models/stats"),
        ("DELETE", "/metrics"),
    ],
)
def test_wrong_method(http: httpx.Client, method: str, path: str) -> None:
    assert_error(http.request(method, path, content=b"{}"), 405)


def test_stats_is_not_a_model(http: httpx.Client) -> None:
    response = http.get("/v2/models/stats")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == JSON
    names = {entry["name"] for entry in response.json()["model_stats"]}
    assert {"identity_fp32", "fixed", "add_sub"} <= names


@pytest.mark.parametrize("path", ["/v2", "/v2/"])
def test_server_metadata_without_redirect(http: httpx.Client, path: str) -> None:
    response = http.get(path, follow_redirects=False)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == JSON
    assert response.json()["name"] == "servecore"


def test_infer_with_no_body_at_all(http: httpx.Client) -> None:
    assert_error(http.post(FP32_INFER), 400)


def test_body_shorter_than_content_length(server: ServerProcess) -> None:
    """The client announces more than it sends, then gives up: the server copes and lives on."""
    port = server.port
    with socket.create_connection(("127.0.0.1", port), timeout=10.0) as sock:
        head = f"POST {FP32_INFER} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n".encode()
        sock.sendall(head + b'{"inputs": [')
        sock.shutdown(socket.SHUT_WR)
        try:
            sock.recv(65536)
        except OSError:
            pass


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /v2/models/identity_fp32/infer HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}",
        b"POST /v2/models/identity_fp32/infer HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n{}",
        b"POST /v2/models/identity_fp32/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        b"POST /v2/models/identity_fp32/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        b"GARBAGE\r\n\r\n",
        b"GET /v2 HTTP/1.1\r\nBad Header Name: x\r\n\r\n",
        b"GET /v2 HTTP/9.9\r\nHost: x\r\n\r\n",
    ],
    ids=["content-length-abc", "content-length-negative", "two-content-lengths", "bad-chunk", "garbage", "bad-header-name", "http-9.9"],
)
def test_unparseable_http_gets_a_json_400(server: ServerProcess, request_bytes: bytes) -> None:
    """Requests the HTTP parser itself refuses still get the protocol's error format."""
    assert_raw_error(raw_exchange(server.port, request_bytes), 400)


def test_bad_and_good_requests_concurrently(server: ServerProcess) -> None:
    """Errors on some connections never disturb good requests on others."""
    from concurrent.futures import ThreadPoolExecutor

    bad_bodies = [b"[]", b"{", json.dumps(doc(tensor(data=["a", "b", "c"]))).encode(), b"\x00" * 1000]

    def worker(seed: int) -> None:
        with httpx.Client(base_url=server.url, timeout=30.0) as client:
            for i in range(15):
                if (seed + i) % 2:
                    assert_error(client.post(FP32_INFER, content=bad_bodies[(seed + i) % len(bad_bodies)]), 400)
                else:
                    data = [float(seed), float(i), 0.5]
                    response = client.post(FP32_INFER, json=doc(tensor(data=data)))
                    assert response.status_code == 200, response.text
                    assert response.json()["outputs"][0]["data"] == data

    with ThreadPoolExecutor(8) as pool:
        for future in [pool.submit(worker, seed) for seed in range(8)]:
            future.result()


def test_many_bad_requests_on_one_connection(http: httpx.Client) -> None:
    """Errors never poison a kept-alive connection."""
    for _ in range(20):
        assert_error(http.post(FP32_INFER, content=b"[]"), 400)
        assert_error(http.post("/v2/models/missing/infer", content=b"{}"), 404)
        assert_serving(http)


# -- property-based: random request documents -------------------------------------------------------

#: model -> its inputs as (name, datatype, shape with -1 for "any"), outputs
MODEL_SPECS: dict[str, tuple[list[tuple[str, str, list[int]]], list[str]]] = {
    **{
        f"identity_{dt.lower()}": ([("INPUT0", dt, [-1, -1])], ["OUTPUT0"])
        for dt in ("BOOL", "UINT8", "UINT64", "INT8", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES", "BF16")
    },
    "add_sub": ([("INPUT0", "FP32", [-1, 16]), ("INPUT1", "FP32", [-1, 16])], ["OUTPUT0", "OUTPUT1"]),
    "scalar": ([("x", "FP32", [])], ["y"]),
    "fixed": ([("INPUT0", "INT32", [2, 3])], ["OUTPUT0"]),
}
MODELS = sorted(MODEL_SPECS)
DATATYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES", "BF16"]
#: the autouse fixture is function-scoped but only checks the server after the whole run
SUPPRESS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture]

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20,
)
dims = st.one_of(
    st.integers(min_value=0, max_value=4),
    st.integers(min_value=-3, max_value=2**64 + 3),
    st.sampled_from([2**31, 2**62, 2**63 - 1, 2**63, 2**64]),
)
shapes = st.one_of(st.lists(dims, max_size=4), json_values)
tensor_data = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=6), max_leaves=24)
parameters = st.one_of(
    st.dictionaries(
        st.sampled_from(["binary_data_size", "binary_data", "binary_data_output", "classification", "shared_memory_region", "x"]),
        json_values,
        max_size=3,
    ),
    json_values,
)


@st.composite
def request_inputs(draw: st.DrawFn) -> Any:
    entry: dict[str, Any] = {}
    if draw(st.integers(0, 9)):
        entry["name"] = draw(st.one_of(st.sampled_from(["INPUT0", "INPUT1", "x"]), json_values))
    if draw(st.integers(0, 9)):
        entry["shape"] = draw(shapes)
    if draw(st.integers(0, 9)):
        entry["datatype"] = draw(st.one_of(st.sampled_from(DATATYPES), json_values))
    if draw(st.integers(0, 3)):
        entry["data"] = draw(tensor_data)
    if draw(st.booleans()):
        entry["parameters"] = draw(parameters)
    extra = draw(st.dictionaries(st.text(max_size=6), json_values, max_size=2))
    return {**extra, **entry} if draw(st.integers(0, 9)) else draw(json_values)


@st.composite
def random_documents(draw: st.DrawFn) -> Any:
    """Anything JSON, loosely shaped like a request."""
    document: dict[str, Any] = draw(st.dictionaries(st.text(max_size=6), json_values, max_size=2))
    if draw(st.integers(0, 9)):
        document["inputs"] = draw(st.one_of(st.lists(request_inputs(), max_size=3), json_values))
    if draw(st.booleans()):
        document["outputs"] = draw(
            st.one_of(
                st.lists(
                    st.fixed_dictionaries(
                        {"name": st.one_of(st.sampled_from(["OUTPUT0", "OUTPUT1", "y"]), json_values)},
                        optional={"parameters": parameters},
                    ),
                    max_size=3,
                ),
                json_values,
            )
        )
    for key in ("id", "parameters"):
        if draw(st.booleans()):
            document[key] = draw(parameters if key == "parameters" else json_values)
    return document if draw(st.integers(0, 19)) else draw(json_values)


def _elements(datatype: str) -> st.SearchStrategy[Any]:
    if datatype == "BOOL":
        return st.booleans()
    if datatype == "BYTES":
        return st.text(max_size=6)
    if datatype in INT_RANGES:
        low, high = INT_RANGES[datatype]
        return st.integers(low, high)
    width = 16 if datatype in ("FP16", "BF16") else 32 if datatype == "FP32" else 64
    return st.floats(width=width, allow_nan=False, allow_infinity=False)


_MUTATIONS = ["none", "datatype", "shape", "element", "count", "drop", "duplicate", "binary", "outputs", "nest", "params"]


@st.composite
def near_valid_documents(draw: st.DrawFn, model: str) -> tuple[dict[str, Any], bytes, str]:
    """A valid request for *model* (JSON or binary inputs), then at most one random mutation."""
    specs, output_names = MODEL_SPECS[model]
    rows = draw(st.integers(0, 3))
    inputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, datatype, spec_shape in specs:
        shape = [rows if i == 0 and d < 0 else (draw(st.integers(0, 3)) if d < 0 else d) for i, d in enumerate(spec_shape)]
        if len(specs) > 1 and inputs:
            shape = list(inputs[0]["shape"])
        values = draw(st.lists(_elements(datatype), min_size=math.prod(shape), max_size=math.prod(shape)))
        entry: dict[str, Any] = {"name": name, "shape": shape, "datatype": datatype}
        if datatype == "BF16" or draw(st.booleans()):
            if datatype == "BYTES":
                blob = _bytes_blob(*(v.encode() for v in values))
            elif datatype == "BF16":
                blob = np.array(values, dtype=np.float32).view(np.uint32).__rshift__(16).astype("<u2").tobytes()
            else:
                blob = np.array(values, dtype=NUMPY[datatype]).astype(NUMPY[datatype].newbyteorder("<")).tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = values
        inputs.append(entry)
    document: dict[str, Any] = {"inputs": inputs}
    if draw(st.booleans()):
        document["outputs"] = [
            {"name": n, "parameters": {"binary_data": draw(st.booleans())}} for n in draw(st.permutations(output_names))
        ]
    mutation = draw(st.sampled_from(_MUTATIONS))
    target = draw(st.sampled_from(inputs))
    if mutation == "datatype":
        target["datatype"] = draw(st.sampled_from(DATATYPES))
    elif mutation == "shape":
        target["shape"] = draw(st.lists(dims, max_size=4))
    elif mutation == "element" and target.get("data"):
        target["data"][draw(st.integers(0, len(target["data"]) - 1))] = draw(json_values)
    elif mutation == "count":
        if "data" in target:
            target["data"] = target["data"] + draw(st.lists(_elements(target["datatype"]), min_size=1, max_size=2))
        else:
            target["parameters"]["binary_data_size"] += draw(st.integers(-4, 4))
    elif mutation == "drop":
        target.pop(draw(st.sampled_from(sorted(target))))
    elif mutation == "duplicate":
        inputs.append(dict(target))
    elif mutation == "binary" and blobs:
        blobs[draw(st.integers(0, len(blobs) - 1))] = draw(st.binary(max_size=24))
    elif mutation == "outputs":
        document["outputs"] = draw(st.lists(st.fixed_dictionaries({"name": st.sampled_from([*output_names, "nope"])}, optional={"parameters": parameters}), max_size=3))
    elif mutation == "nest" and "data" in target:
        target["data"] = draw(st.recursive(st.just(target["data"]), lambda inner: st.lists(inner, min_size=1, max_size=2), max_leaves=4))
    elif mutation == "params":
        document["parameters"] = draw(parameters)
    return document, b"".join(blobs), mutation


NUMPY = {name: np.dtype(name.lower().replace("fp", "float").replace("bool", "bool_")) for name in DATATYPES if name not in ("BYTES", "BF16")}


def _check_answer(response: httpx.Response) -> int:
    assert response.status_code < 500, (response.status_code, response.text[:500])
    assert response.status_code != 422
    if response.status_code == 200:
        assert response.headers["content-type"] in (JSON, "application/octet-stream")
        length = response.headers.get(IHCL)
        head = response.content if length is None else response.content[: int(length)]
        assert "outputs" in json.loads(head)
        return 200
    assert response.status_code in (400, 404, 413, 415), response.status_code
    assert_error(response, response.status_code)
    return response.status_code


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    """One kept-alive client for the property-based tests (a module fixture: hypothesis-safe)."""
    with httpx.Client(base_url=server.url, timeout=10.0) as c:
        yield c


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=SUPPRESS)
@given(model=st.sampled_from(MODELS), document=random_documents())
def test_random_request_documents(client: httpx.Client, model: str, document: Any) -> None:
    _check_answer(client.post(f"/v2/models/{model}/infer", content=json.dumps(document)))


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=SUPPRESS)
@given(data=st.data(), model=st.sampled_from(MODELS))
def test_near_valid_request_documents(client: httpx.Client, data: st.DataObject, model: str) -> None:
    """Valid requests with one random defect (or none): never a 5xx; undamaged ones succeed."""
    document, blob, mutation = data.draw(near_valid_documents(model))
    head = json.dumps(document).encode()
    headers = {IHCL: str(len(head))} if blob or data.draw(st.booleans()) else {}
    status = _check_answer(client.post(f"/v2/models/{model}/infer", content=head + blob, headers=headers))
    event(f"{mutation}: HTTP {status}")
    if mutation == "none":
        assert status == 200


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=SUPPRESS)
@given(
    model=st.sampled_from(MODELS),
    document=random_documents(),
    tail=st.binary(max_size=64),
    header=st.one_of(st.none(), st.just("json"), st.integers(min_value=-2, max_value=400).map(str)),
    encoding=st.sampled_from([None, "gzip", "deflate"]),
)
def test_random_binary_bodies(client: httpx.Client, model: str, document: Any, tail: bytes, header: str | None, encoding: str | None) -> None:
    head = json.dumps(document).encode()
    headers = {}
    if header is not None:
        headers[IHCL] = str(len(head)) if header == "json" else header
    body = head + tail
    if encoding == "gzip":
        body = gzip.compress(body)
    elif encoding == "deflate":
        body = zlib.compress(body)
    if encoding:
        headers["content-encoding"] = encoding
    _check_answer(client.post(f"/v2/models/{model}/infer", content=body, headers=headers))


@settings(max_examples=100, deadline=None, database=None, suppress_health_check=SUPPRESS)
@given(body=st.binary(max_size=256), header=st.one_of(st.none(), st.integers(0, 300)))
def test_random_bytes_bodies(client: httpx.Client, body: bytes, header: int | None) -> None:
    headers = {} if header is None else {IHCL: str(header)}
    _check_answer(client.post(FP32_INFER, content=body, headers=headers))
