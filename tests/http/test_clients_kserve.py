"""The KServe SDK's ``InferenceRESTClient`` (protocol v2, httpx) against a real server.

The client is async; every test runs its calls with ``asyncio.run`` on a fresh client (protocol.md
sections 5.3 and 6, items 1, 2 and 11).
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, TypeVar

import httpx
import numpy as np
import pytest
from kserve import InferenceRESTClient, InferInput, InferRequest, InferResponse, RESTConfig
from kserve.protocol.infer_type import RequestedOutput

from server_process import ServerProcess

T = TypeVar("T")

#: Datatypes the SDK sends as JSON (it refuses FP16 in JSON itself, and has no BF16).
JSON_DATATYPES = (
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP32", "FP64", "BYTES",
)
BINARY_DATATYPES = (*JSON_DATATYPES, "FP16")
NUMPY = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64, "BYTES": np.object_,
}


def run(server: ServerProcess, calls: Callable[[InferenceRESTClient, str], Awaitable[T]]) -> T:
    """``calls(client, base_url)`` on a fresh v2 client, closed afterwards, in its own event loop."""

    async def main() -> T:
        client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
        try:
            return await calls(client, server.url)
        finally:
            await client.close()

    return asyncio.run(main())


def sample(datatype: str) -> np.ndarray:
    """A 2x3 tensor of *datatype* including the type's extremes."""
    if datatype == "BOOL":
        return np.array([[True, False, True], [False, True, False]])
    if datatype == "BYTES":
        return np.array([["", "abc", "h\u00e9llo"], ["\u65e5\u672c" * 1000, "x" * 4096, "z"]], dtype=object)
    dtype = np.dtype(NUMPY[datatype])
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.array([[info.min, info.max, 0], [1, info.max // 3, 7]], dtype=dtype)
    info = np.finfo(dtype)
    tiny = float(info.smallest_subnormal)
    return np.array([[0.1, -float(info.max), float(info.max)], [tiny, 2.5, -1 / 3]], dtype=dtype)


def kserve_input(name: str, array: np.ndarray, datatype: str, *, binary: bool) -> InferInput:
    tensor = InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def identity_request(datatype: str, *, binary: bool, **options: Any) -> tuple[str, np.ndarray, InferRequest]:
    """The identity model of *datatype*, a sample input and a request sending it."""
    x = sample(datatype)
    model = f"identity_{datatype.lower()}"
    return model, x, InferRequest(model, [kserve_input("INPUT0", x, datatype, binary=binary)], **options)


def assert_same(got: np.ndarray, want: np.ndarray, datatype: str) -> None:
    assert got.shape == want.shape
    if datatype == "BYTES":
        to_text = lambda v: v.decode() if isinstance(v, bytes) else str(v)  # noqa: E731
        assert [to_text(v) for v in got.ravel()] == [to_text(v) for v in want.ravel()]
    else:
        assert got.dtype == np.dtype(NUMPY[datatype])
        np.testing.assert_array_equal(got, want)


def add_sub_arrays(rows: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    return rng.standard_normal((rows, 16)).astype(np.float32), rng.standard_normal((rows, 16)).astype(np.float32)


def outputs_by_name(response: InferResponse) -> dict[str, np.ndarray]:
    return {o.name: o.as_numpy() for o in response.outputs}


# -- health ---------------------------------------------------------------------------------------


def test_is_server_live(server: ServerProcess) -> None:
    assert run(server, lambda c, url: c.is_server_live(url)) is True


def test_is_server_ready(server: ServerProcess) -> None:
    assert run(server, lambda c, url: c.is_server_ready(url)) is True


@pytest.mark.parametrize(("model", "ready"), [("add_sub", True), ("identity_bytes", True), ("missing", False)])
def test_is_model_ready(server: ServerProcess, model: str, ready: bool) -> None:
    assert run(server, lambda c, url: c.is_model_ready(url, model)) is ready


# -- inference ------------------------------------------------------------------------------------


@pytest.mark.parametrize("datatype", JSON_DATATYPES)
def test_infer_request_json(server: ServerProcess, datatype: str) -> None:
    model, x, request = identity_request(datatype, binary=False)
    response = run(server, lambda c, url: c.infer(url, request, model_name=model))
    assert isinstance(response, InferResponse)
    assert response.model_name == model
    (output,) = response.outputs
    assert (output.name, output.datatype, list(output.shape)) == ("OUTPUT0", datatype, [2, 3])
    assert_same(output.as_numpy(), x, datatype)


@pytest.mark.parametrize("datatype", BINARY_DATATYPES)
def test_infer_request_binary_inputs(server: ServerProcess, datatype: str) -> None:
    model, x, request = identity_request(datatype, binary=True)
    response = run(server, lambda c, url: c.infer(url, request, model_name=model))
    assert response.model_name == model
    (output,) = response.outputs
    assert output.datatype == datatype
    assert_same(output.as_numpy(), x, datatype)


@pytest.mark.parametrize("datatype", BINARY_DATATYPES)
def test_infer_request_binary_outputs(server: ServerProcess, datatype: str) -> None:
    model, x, request = identity_request(
        datatype, binary=True, request_outputs=[RequestedOutput("OUTPUT0", parameters={"binary_data": True})]
    )
    headers: dict[str, str] = {}
    response = run(server, lambda c, url: c.infer(url, request, model_name=model, response_headers=headers))
    assert int(headers["inference-header-content-length"]) > 0  # a binary tail followed the JSON
    (output,) = response.outputs  # (the SDK drops binary_data_size once it has decoded the tail)
    assert_same(output.as_numpy(), x, datatype)


def test_infer_mixed_json_and_binary_inputs(server: ServerProcess) -> None:
    a, b = add_sub_arrays()
    request = InferRequest(
        "add_sub",
        [kserve_input("INPUT0", a, "FP32", binary=False), kserve_input("INPUT1", b, "FP32", binary=True)],
    )
    response = run(server, lambda c, url: c.infer(url, request, model_name="add_sub"))
    assert response.model_name == "add_sub"
    assert [o.name for o in response.outputs] == ["OUTPUT0", "OUTPUT1"]
    outputs = outputs_by_name(response)
    np.testing.assert_array_equal(outputs["OUTPUT0"], a + b)
    np.testing.assert_array_equal(outputs["OUTPUT1"], a - b)


def test_infer_requested_output_subset(server: ServerProcess) -> None:
    a, b = add_sub_arrays()
    request = InferRequest(
        "add_sub",
        [kserve_input("INPUT0", a, "FP32", binary=True), kserve_input("INPUT1", b, "FP32", binary=True)],
        request_outputs=[RequestedOutput("OUTPUT1")],
    )
    response = run(server, lambda c, url: c.infer(url, request, model_name="add_sub"))
    assert [o.name for o in response.outputs] == ["OUTPUT1"]
    np.testing.assert_array_equal(response.outputs[0].as_numpy(), a - b)


def test_infer_request_id(server: ServerProcess) -> None:
    a, b = add_sub_arrays()
    request = InferRequest(
        "add_sub",
        [kserve_input("INPUT0", a, "FP32", binary=False), kserve_input("INPUT1", b, "FP32", binary=False)],
        request_id="kserve-42",
    )
    response = run(server, lambda c, url: c.infer(url, request, model_name="add_sub"))
    assert response.id == "kserve-42"


def test_infer_generated_request_id_echoed(server: ServerProcess) -> None:
    """Without an id the SDK puts a uuid4 in the body; the server echoes it."""
    a, b = add_sub_arrays()
    request = InferRequest(
        "add_sub", [kserve_input("INPUT0", a, "FP32", binary=False), kserve_input("INPUT1", b, "FP32", binary=False)]
    )
    response = run(server, lambda c, url: c.infer(url, request, model_name="add_sub"))
    assert isinstance(response.id, str) and len(response.id) == 36


def test_infer_dict(server: ServerProcess) -> None:
    a, b = add_sub_arrays(rows=1)
    body: dict[str, Any] = {
        "inputs": [
            {"name": "INPUT0", "shape": [1, 16], "datatype": "FP32", "data": a.ravel().tolist()},
            {"name": "INPUT1", "shape": [1, 16], "datatype": "FP32", "data": b.tolist()},
        ],
        "outputs": [{"name": "OUTPUT0"}],
    }
    response = run(server, lambda c, url: c.infer(url, body, model_name="add_sub"))
    assert isinstance(response, InferResponse)
    assert response.model_name == "add_sub"
    assert response.id is None
    (output,) = response.outputs
    assert (output.name, output.datatype, list(output.shape)) == ("OUTPUT0", "FP32", [1, 16])
    np.testing.assert_array_equal(output.as_numpy(), a + b)


def test_infer_dict_scalar(server: ServerProcess) -> None:
    body = {"inputs": [{"name": "x", "shape": [], "datatype": "FP32", "data": [2.5]}], "id": "s"}
    response = run(server, lambda c, url: c.infer(url, body, model_name="scalar"))
    assert response.model_name == "scalar" and response.id == "s"
    y = response.outputs[0].as_numpy()
    assert y.shape == () and float(y) == 5.0


def test_infer_compressed_response(server: ServerProcess) -> None:
    """httpx offers gzip; the server compresses infer responses and the SDK still parses the split."""
    a, b = add_sub_arrays(rows=32)
    request = InferRequest(
        "add_sub",
        [kserve_input("INPUT0", a, "FP32", binary=True), kserve_input("INPUT1", b, "FP32", binary=True)],
        request_outputs=[RequestedOutput("OUTPUT0", {"binary_data": True}), RequestedOutput("OUTPUT1")],
    )
    headers: dict[str, str] = {}
    response = run(server, lambda c, url: c.infer(url, request, model_name="add_sub", response_headers=headers))
    assert headers.get("content-encoding") in ("gzip", "deflate")
    outputs = outputs_by_name(response)
    np.testing.assert_array_equal(outputs["OUTPUT0"], a + b)
    np.testing.assert_array_equal(outputs["OUTPUT1"], a - b)


# -- errors ---------------------------------------------------------------------------------------


def test_infer_unknown_model_raises_404(server: ServerProcess) -> None:
    request = InferRequest("missing", [kserve_input("INPUT0", np.ones((1, 2), np.float32), "FP32", binary=False)])
    with pytest.raises(httpx.HTTPStatusError) as info:
        run(server, lambda c, url: c.infer(url, request, model_name="missing"))
    assert info.value.response.status_code == 404
    assert "missing" in str(info.value)  # the SDK copies {"error": ...} into the message


def test_infer_bad_input_raises_400(server: ServerProcess) -> None:
    request = InferRequest("add_sub", [kserve_input("INPUT0", np.ones((1, 16), np.float32), "FP32", binary=False)])
    with pytest.raises(httpx.HTTPStatusError) as info:
        run(server, lambda c, url: c.infer(url, request, model_name="add_sub"))
    assert info.value.response.status_code == 400
    assert "INPUT1" in str(info.value)


def test_infer_non_utf8_bytes_raises_400(server: ServerProcess) -> None:
    x = np.array([[b"\x00\xff"]], dtype=object)
    request = InferRequest("identity_bytes", [kserve_input("INPUT0", x, "BYTES", binary=True)])
    with pytest.raises(httpx.HTTPStatusError) as info:
        run(server, lambda c, url: c.infer(url, request, model_name="identity_bytes"))
    assert info.value.response.status_code == 400
    assert "UTF-8" in str(info.value)
