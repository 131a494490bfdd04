"""tritonclient.http (sync, ``async_infer``) and tritonclient.http.aio against a real server.

Covers protocol.md section 6, items 1-12, 16 and 22. Every client-level check runs with each
client flavour that can make the call; checks of the exact bytes on the wire use httpx with a
body that tritonclient itself generated.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import math
import struct
import zlib
from typing import Any, Callable, Iterator

import httpx
import ml_dtypes  # tritonclient's own BF16 numpy type (a dependency of tritonclient >= 2.73)
import numpy as np
import pytest
import tritonclient.http as triton
import tritonclient.http.aio as triton_aio
from tritonclient.utils import InferenceServerException, triton_to_np_dtype

from server_process import ServerProcess

# -- data -------------------------------------------------------------------------------------

#: Datatypes with a JSON form (BF16 travels only as binary data).
JSON_DATATYPES = (
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BYTES",
)
ALL_DATATYPES = (*JSON_DATATYPES, "BF16")
ITEMSIZE = {dt: np.dtype(triton_to_np_dtype(dt)).itemsize for dt in ALL_DATATYPES if dt != "BYTES"}
TEXT = ("", "a", "h\u00e9llo w\u00f6rld \u2713", "\u65e5\u672c\u8a9e" * 1500, "x" * 8192, "tab\tnew\nline")
STAGES = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output", "cache_hit", "cache_miss")


def bf16_truncated(values: list[float]) -> np.ndarray:
    """float32 *values* truncated to BF16 (the upper two bytes), as a ml_dtypes.bfloat16 array."""
    bits = (np.asarray(values, dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16)
    return bits.view(ml_dtypes.bfloat16)


def sample(datatype: str) -> np.ndarray:
    """A 2x3 tensor of *datatype* including the type's extremes."""
    if datatype == "BOOL":
        return np.array([[True, False, True], [False, False, True]])
    if datatype == "BYTES":
        return np.array([[t.encode() for t in TEXT[:3]], [t.encode() for t in TEXT[3:]]], dtype=object)
    if datatype == "BF16":
        return bf16_truncated([1.0, -2.25, 3.14159, 1e30, -1e-30, 0.1]).reshape(2, 3)
    dtype = np.dtype(triton_to_np_dtype(datatype))
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.array([[info.min, info.max, 0], [1, info.max // 3, 42]], dtype=dtype)
    info = np.finfo(dtype)
    tiny = float(info.smallest_subnormal)
    return np.array([[0.1, -float(info.max), float(info.max)], [tiny, 1.5, -1 / 3]], dtype=dtype)


def as_bytes(array: np.ndarray) -> list[bytes]:
    """BYTES elements as bytes (JSON outputs come back as str, binary ones as bytes)."""
    return [v if isinstance(v, bytes) else str(v).encode() for v in array.ravel()]


def assert_same_tensor(got: np.ndarray, want: np.ndarray, datatype: str) -> None:
    assert got.shape == want.shape
    if datatype == "BYTES":
        assert got.dtype == np.object_
        assert as_bytes(got) == as_bytes(want)
        return
    assert got.dtype == np.dtype(triton_to_np_dtype(datatype))
    if datatype == "BF16":
        np.testing.assert_array_equal(got.view(np.uint16), want.view(np.uint16))
    else:
        np.testing.assert_array_equal(got, want)


def make_input(name: str, array: np.ndarray, datatype: str, *, binary: bool = True) -> triton.InferInput:
    tensor = triton.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def add_sub_inputs(
    rows: int = 2, *, binary: bool = True, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, list[triton.InferInput]]:
    """Random FP32 INPUT0/INPUT1 of shape [rows, 16], as arrays and as tritonclient inputs."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((rows, 16)).astype(np.float32)
    b = rng.standard_normal((rows, 16)).astype(np.float32)
    return a, b, [make_input("INPUT0", a, "FP32", binary=binary), make_input("INPUT1", b, "FP32", binary=binary)]


def output_entry(result: triton.InferResult, name: str) -> dict[str, Any]:
    output = result.get_output(name)
    assert output is not None, f"no output {name!r} in {result.get_response()}"
    return output


# -- the three client flavours ------------------------------------------------------------------


async def _aio_call(address: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    client = triton_aio.InferenceServerClient(address)
    try:
        return await getattr(client, method)(*args, **kwargs)
    finally:
        await client.close()


class Triton:
    """One tritonclient flavour: ``client("method", ...)`` runs the call the way that flavour would."""

    def __init__(self, mode: str, address: str, sync_client: triton.InferenceServerClient) -> None:
        self.mode = mode
        self.address = address
        self.sync = sync_client

    def __call__(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self.mode == "aio":
            return asyncio.run(_aio_call(self.address, method, args, kwargs))
        if self.mode == "async_infer" and method == "infer":
            return self.sync.async_infer(*args, **kwargs).get_result(block=True, timeout=30)
        return getattr(self.sync, method)(*args, **kwargs)

    def infer(self, *args: Any, **kwargs: Any) -> triton.InferResult:
        return self("infer", *args, **kwargs)

    def error(self, method: str, *args: Any, **kwargs: Any) -> InferenceServerException:
        with pytest.raises(InferenceServerException) as info:
            self(method, *args, **kwargs)
        return info.value


@pytest.fixture(scope="module")
def sync_client(server: ServerProcess) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(server.address, concurrency=2, network_timeout=30.0)
    yield client
    client.close()


@pytest.fixture(params=["sync", "aio"])
def client(
    request: pytest.FixtureRequest, server: ServerProcess, sync_client: triton.InferenceServerClient
) -> Triton:
    """tritonclient.http and tritonclient.http.aio, for any call."""
    return Triton(request.param, server.address, sync_client)


@pytest.fixture(params=["sync", "aio", "async_infer"])
def infer_client(
    request: pytest.FixtureRequest, server: ServerProcess, sync_client: triton.InferenceServerClient
) -> Triton:
    """As ``client``, plus the sync client's ``async_infer`` for inference calls."""
    return Triton(request.param, server.address, sync_client)


# -- raw HTTP helpers ---------------------------------------------------------------------------

IDENTITY = {"Accept-Encoding": "identity"}


def raw_infer(
    http: httpx.Client,
    model: str,
    inputs: list[triton.InferInput],
    outputs: list[triton.InferRequestedOutput] | None = None,
    *,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> httpx.Response:
    """POST the exact body tritonclient would send; the response is left unparsed."""
    body, json_size = triton.InferenceServerClient.generate_request_body(inputs, outputs=outputs, **kwargs)
    sent = {**IDENTITY, **(headers or {})}
    if json_size is not None:
        sent["Inference-Header-Content-Length"] = str(json_size)
    return http.post(f"/v2/models/{model}/infer", content=body, headers=sent)


def split_body(response: httpx.Response) -> tuple[dict[str, Any], bytes]:
    """The JSON part and the binary tail of an (uncompressed) infer response."""
    assert response.status_code == 200, response.text
    length = response.headers.get("inference-header-content-length")
    body = response.content
    if length is None:
        return json.loads(body), b""
    return json.loads(body[: int(length)]), body[int(length):]


def blobs(doc: dict[str, Any], tail: bytes) -> dict[str, bytes]:
    """Each binary output's bytes, cut from *tail* in output order."""
    out: dict[str, bytes] = {}
    offset = 0
    for entry in doc["outputs"]:
        size = entry.get("parameters", {}).get("binary_data_size")
        if size is not None:
            out[entry["name"]] = tail[offset : offset + size]
            offset += size
    assert offset == len(tail), "the binary tail is longer than the outputs' binary_data_size"
    return out


def post_json(http: httpx.Client, model: str, doc: dict[str, Any]) -> httpx.Response:
    return http.post(f"/v2/models/{model}/infer", json=doc, headers=IDENTITY)


# == 1. health ==================================================================================


def test_server_live_and_ready(client: Triton) -> None:
    assert client("is_server_live") is True
    assert client("is_server_ready") is True


@pytest.mark.parametrize(("path", "body"), [("/v2/health/live", {"live": True}), ("/v2/health/ready", {"ready": True})])
def test_health_raw(http: httpx.Client, path: str, body: dict[str, bool]) -> None:
    response = http.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == body


# == 2. model ready =============================================================================


def test_model_ready(client: Triton) -> None:
    assert client("is_model_ready", "identity_fp32") is True
    assert client("is_model_ready", "identity_fp32", "1") is True
    assert client("is_model_ready", "add_sub", "1") is True


def test_model_ready_unknown_is_false(client: Triton) -> None:
    assert client("is_model_ready", "missing") is False
    assert client("is_model_ready", "identity_fp32", "999") is False


@pytest.mark.parametrize("path", ["/v2/models/missing/ready", "/v2/models/identity_fp32/versions/999/ready"])
def test_model_ready_unknown_raw(http: httpx.Client, path: str) -> None:
    response = http.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert isinstance(response.json()["error"], str) and response.json()["error"]


def test_model_ready_raw_body(http: httpx.Client) -> None:
    response = http.get("/v2/models/add_sub/ready")
    assert response.status_code == 200
    assert response.json() == {"name": "add_sub", "ready": True}


# == 3. server metadata =========================================================================


def test_server_metadata(client: Triton) -> None:
    meta = client("get_server_metadata")
    assert meta["name"] == "servecore"
    assert isinstance(meta["version"], str) and meta["version"]
    assert isinstance(meta["extensions"], list)
    assert all(isinstance(e, str) for e in meta["extensions"])
    assert {"binary_tensor_data", "classification", "statistics", "model_configuration"} <= set(meta["extensions"])


def test_server_metadata_both_paths_without_redirect(http: httpx.Client) -> None:
    bare = http.get("/v2", follow_redirects=False)
    slash = http.get("/v2/", follow_redirects=False)
    assert bare.status_code == slash.status_code == 200
    assert bare.json() == slash.json()
    assert bare.headers["content-type"] == "application/json"


# == 4. model metadata ==========================================================================


@pytest.mark.parametrize(
    ("model", "datatype", "shape"),
    [("identity_fp32", "FP32", [-1, -1]), ("identity_bytes", "BYTES", [-1, -1]), ("add_sub", "FP32", [-1, 16]),
     ("scalar", "FP32", []), ("fixed", "INT32", [2, 3])],
)
def test_model_metadata(client: Triton, model: str, datatype: str, shape: list[int]) -> None:
    meta = client("get_model_metadata", model)
    assert client("get_model_metadata", model, "1") == meta
    assert meta["name"] == model
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["versions"] == ["1"]
    for tensor in (*meta["inputs"], *meta["outputs"]):
        assert isinstance(tensor["name"], str) and tensor["name"]
        assert tensor["datatype"] == datatype
        assert tensor["shape"] == shape
        assert all(type(d) is int for d in tensor["shape"])


def test_model_metadata_add_sub_tensors(client: Triton) -> None:
    meta = client("get_model_metadata", "add_sub")
    assert [t["name"] for t in meta["inputs"]] == ["INPUT0", "INPUT1"]
    assert [t["name"] for t in meta["outputs"]] == ["OUTPUT0", "OUTPUT1"]


@pytest.mark.parametrize(("model", "version"), [("missing", ""), ("identity_fp32", "999")])
def test_model_metadata_unknown(client: Triton, model: str, version: str) -> None:
    error = client.error("get_model_metadata", model, version)
    assert error.status() == "404"
    assert error.message()


# == 5. model config ============================================================================


@pytest.mark.parametrize("model", ["identity_fp32", "identity_bytes", "identity_bf16", "add_sub", "scalar", "fixed"])
def test_model_config_matches_metadata(client: Triton, model: str) -> None:
    config = client("get_model_config", model)
    meta = client("get_model_metadata", model)
    assert client("get_model_config", model, "1") == config
    assert config["name"] == model
    batch = config["max_batch_size"]
    assert type(batch) is int and batch >= 0
    for key, tensors in (("input", meta["inputs"]), ("output", meta["outputs"])):
        assert [t["name"] for t in config[key]] == [t["name"] for t in tensors]
        for entry, tensor in zip(config[key], tensors):
            want_type = "TYPE_STRING" if tensor["datatype"] == "BYTES" else f"TYPE_{tensor['datatype']}"
            assert entry["data_type"] == want_type
            assert entry["dims"] == (tensor["shape"][1:] if batch > 0 else tensor["shape"])


def test_model_config_unknown(client: Triton) -> None:
    error = client.error("get_model_config", "missing")
    assert error.status() == "404"
    assert error.message()


# == 6. JSON round trip =========================================================================


@pytest.mark.parametrize("datatype", JSON_DATATYPES)
def test_json_round_trip(infer_client: Triton, datatype: str) -> None:
    x = sample(datatype)
    result = infer_client.infer(
        f"identity_{datatype.lower()}",
        [make_input("INPUT0", x, datatype, binary=False)],
        outputs=[triton.InferRequestedOutput("OUTPUT0", binary_data=False)],
    )
    entry = output_entry(result, "OUTPUT0")
    assert entry["datatype"] == datatype
    assert entry["shape"] == [2, 3]
    assert "data" in entry
    assert "binary_data_size" not in entry.get("parameters", {})
    assert_same_tensor(result.as_numpy("OUTPUT0"), x, datatype)


@pytest.mark.parametrize("datatype", JSON_DATATYPES)
def test_json_response_on_the_wire(http: httpx.Client, datatype: str) -> None:
    x = sample(datatype)
    response = raw_infer(
        http, f"identity_{datatype.lower()}",
        [make_input("INPUT0", x, datatype, binary=False)],
        [triton.InferRequestedOutput("OUTPUT0", binary_data=False)],
    )
    assert response.status_code == 200, response.text
    assert "inference-header-content-length" not in response.headers
    assert response.headers["content-type"] == "application/json"
    (entry,) = response.json()["outputs"]
    assert len(entry["data"]) == x.size
    assert "binary_data_size" not in entry.get("parameters", {})


# == 7. binary round trip =======================================================================


@pytest.mark.parametrize("datatype", ALL_DATATYPES)
def test_binary_round_trip(infer_client: Triton, datatype: str) -> None:
    x = sample(datatype)
    result = infer_client.infer(f"identity_{datatype.lower()}", [make_input("INPUT0", x, datatype)])
    entry = output_entry(result, "OUTPUT0")
    assert entry["datatype"] == datatype
    assert entry["shape"] == [2, 3]
    assert "data" not in entry
    assert entry["parameters"]["binary_data_size"] > 0
    assert_same_tensor(result.as_numpy("OUTPUT0"), x, datatype)


def test_bf16_values_are_truncated_float32(infer_client: Triton) -> None:
    values = [1.0, -2.25, 3.14159, 1e30, -1e-30, 0.1]
    x = bf16_truncated(values).reshape(2, 3)
    result = infer_client.infer("identity_bf16", [make_input("INPUT0", x, "BF16")])
    got = result.as_numpy("OUTPUT0").astype(np.float32)
    want = (np.asarray(values, dtype=np.float32).view(np.uint32) & 0xFFFF0000).view(np.float32).reshape(2, 3)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("datatype", [dt for dt in ALL_DATATYPES if dt != "BYTES"])
def test_binary_response_on_the_wire(http: httpx.Client, datatype: str) -> None:
    x = sample(datatype)
    response = raw_infer(http, f"identity_{datatype.lower()}", [make_input("INPUT0", x, datatype)],
                         [triton.InferRequestedOutput("OUTPUT0")])
    assert response.headers["content-type"] == "application/octet-stream"
    header_length = int(response.headers["inference-header-content-length"])
    doc, tail = split_body(response)  # the first header_length bytes are the whole JSON document
    (entry,) = doc["outputs"]
    assert "data" not in entry
    assert entry["parameters"]["binary_data_size"] == math.prod(entry["shape"]) * ITEMSIZE[datatype]
    assert len(response.content) == header_length + entry["parameters"]["binary_data_size"]
    assert tail == x.tobytes()  # identity: little-endian, row-major, the very bytes sent


def test_binary_blobs_in_output_order(http: httpx.Client) -> None:
    a, b, inputs = add_sub_inputs()
    outputs = [triton.InferRequestedOutput("OUTPUT1"), triton.InferRequestedOutput("OUTPUT0")]
    response = raw_infer(http, "add_sub", inputs, outputs)
    doc, tail = split_body(response)
    assert [o["name"] for o in doc["outputs"]] == ["OUTPUT1", "OUTPUT0"]
    sizes = [o["parameters"]["binary_data_size"] for o in doc["outputs"]]
    assert sizes == [a.nbytes, a.nbytes]
    assert len(response.content) == int(response.headers["inference-header-content-length"]) + sum(sizes)
    np.testing.assert_array_equal(np.frombuffer(tail[: a.nbytes], "<f4").reshape(a.shape), a - b)
    np.testing.assert_array_equal(np.frombuffer(tail[a.nbytes :], "<f4").reshape(a.shape), a + b)


@pytest.mark.parametrize("datatype", ["FP32", "INT32", "BYTES"])
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_empty_tensor(infer_client: Triton, datatype: str, binary: bool) -> None:
    x = np.zeros((0, 3), dtype=triton_to_np_dtype(datatype))
    result = infer_client.infer(
        f"identity_{datatype.lower()}", [make_input("INPUT0", x, datatype, binary=binary)],
        outputs=[triton.InferRequestedOutput("OUTPUT0", binary_data=binary)],
    )
    entry = output_entry(result, "OUTPUT0")
    assert entry["shape"] == [0, 3]
    if binary:
        assert entry["parameters"]["binary_data_size"] == 0
    else:
        assert entry["data"] == []
    assert result.as_numpy("OUTPUT0").shape == (0, 3)


# == 8. BYTES ===================================================================================


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_bytes_text_round_trip(infer_client: Triton, binary: bool) -> None:
    x = np.array([t.encode() for t in TEXT], dtype=object).reshape(2, 3)
    result = infer_client.infer(
        "identity_bytes", [make_input("INPUT0", x, "BYTES", binary=binary)],
        outputs=[triton.InferRequestedOutput("OUTPUT0", binary_data=binary)],
    )
    got = result.as_numpy("OUTPUT0")
    assert got.shape == (2, 3)
    assert as_bytes(got) == [t.encode() for t in TEXT]
    if binary:
        assert all(isinstance(v, bytes) for v in got.ravel())
    else:
        assert list(got.ravel()) == list(TEXT)


def test_bytes_str_elements(infer_client: Triton) -> None:
    x = np.array([["", "\u00fc"], ["\x00nul", "z" * 4096]], dtype=object)
    result = infer_client.infer("identity_bytes", [make_input("INPUT0", x, "BYTES")])
    assert as_bytes(result.as_numpy("OUTPUT0")) == [v.encode() for v in x.ravel()]


@pytest.mark.parametrize("element", [b"\x00\xff", b"\xff\xfe", b"\xc3\x28", b"abc\x80"], ids=repr)
def test_bytes_non_utf8_is_400(infer_client: Triton, element: bytes) -> None:
    x = np.array([[b"fine", element]], dtype=object)
    error = infer_client.error("infer", "identity_bytes", [make_input("INPUT0", x, "BYTES")])
    assert error.status() == "400"
    assert "UTF-8" in error.message()
    assert "INPUT0" in error.message()


def test_bytes_non_utf8_is_400_raw(http: httpx.Client) -> None:
    x = np.array([[b"\x00\xff"]], dtype=object)
    response = raw_infer(http, "identity_bytes", [make_input("INPUT0", x, "BYTES")])
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert "not valid UTF-8" in response.json()["error"]


def test_bytes_wire_format(http: httpx.Client) -> None:
    elements = [b"first", b"", "\u00e9t\u00e9".encode(), b"y" * 5000]
    x = np.array([elements], dtype=object)
    response = raw_infer(http, "identity_bytes", [make_input("INPUT0", x, "BYTES")],
                         [triton.InferRequestedOutput("OUTPUT0")])
    doc, tail = split_body(response)
    assert tail.startswith(struct.pack("<I", len(b"first")) + b"first")
    assert tail == b"".join(struct.pack("<I", len(e)) + e for e in elements)
    size = doc["outputs"][0]["parameters"]["binary_data_size"]
    assert size == len(tail) == 4 * len(elements) + sum(map(len, elements))
    assert doc["outputs"][0]["shape"] == [1, 4]


# == 9. output selection ========================================================================


def test_outputs_none_returns_all_binary(infer_client: Triton) -> None:
    a, b, inputs = add_sub_inputs(binary=False)
    result = infer_client.infer("add_sub", inputs)
    response = result.get_response()
    assert [o["name"] for o in response["outputs"]] == ["OUTPUT0", "OUTPUT1"]
    for entry in response["outputs"]:
        assert entry["parameters"]["binary_data_size"] == a.nbytes
        assert "data" not in entry
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)


@pytest.mark.parametrize("binary_first", [True, False], ids=["binary-json", "json-binary"])
def test_mixed_binary_and_json_outputs(infer_client: Triton, binary_first: bool) -> None:
    a, b, inputs = add_sub_inputs()
    outputs = [triton.InferRequestedOutput("OUTPUT0", binary_data=binary_first),
               triton.InferRequestedOutput("OUTPUT1", binary_data=not binary_first)]
    result = infer_client.infer("add_sub", inputs, outputs=outputs)
    binary_entry, json_entry = (output_entry(result, "OUTPUT0"), output_entry(result, "OUTPUT1"))
    if not binary_first:
        binary_entry, json_entry = json_entry, binary_entry
    assert binary_entry["parameters"]["binary_data_size"] == a.nbytes and "data" not in binary_entry
    assert len(json_entry["data"]) == a.size and "binary_data_size" not in json_entry.get("parameters", {})
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)


def test_mixed_outputs_on_the_wire(http: httpx.Client) -> None:
    a, b, inputs = add_sub_inputs()
    outputs = [triton.InferRequestedOutput("OUTPUT1", binary_data=False), triton.InferRequestedOutput("OUTPUT0")]
    response = raw_infer(http, "add_sub", inputs, outputs)
    doc, tail = split_body(response)
    assert [o["name"] for o in doc["outputs"]] == ["OUTPUT1", "OUTPUT0"]
    assert len(tail) == a.nbytes
    assert len(response.content) == int(response.headers["inference-header-content-length"]) + a.nbytes
    np.testing.assert_array_equal(np.frombuffer(blobs(doc, tail)["OUTPUT0"], "<f4").reshape(a.shape), a + b)
    np.testing.assert_array_equal(np.array(doc["outputs"][0]["data"], np.float32).reshape(a.shape), a - b)


def test_output_subset(infer_client: Triton) -> None:
    a, b, inputs = add_sub_inputs()
    result = infer_client.infer("add_sub", inputs, outputs=[triton.InferRequestedOutput("OUTPUT1")])
    assert [o["name"] for o in result.get_response()["outputs"]] == ["OUTPUT1"]
    assert result.as_numpy("OUTPUT0") is None
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)


def test_outputs_in_request_order(infer_client: Triton) -> None:
    a, b, inputs = add_sub_inputs()
    outputs = [triton.InferRequestedOutput("OUTPUT1"), triton.InferRequestedOutput("OUTPUT0")]
    result = infer_client.infer("add_sub", inputs, outputs=outputs)
    assert [o["name"] for o in result.get_response()["outputs"]] == ["OUTPUT1", "OUTPUT0"]
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)


# -- classification ------------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_classification_top_k(infer_client: Triton, binary: bool) -> None:
    a, b, inputs = add_sub_inputs(rows=1, seed=7)
    k = 4
    result = infer_client.infer(
        "add_sub", inputs, outputs=[triton.InferRequestedOutput("OUTPUT0", binary_data=binary, class_count=k)]
    )
    entry = output_entry(result, "OUTPUT0")
    assert entry["datatype"] == "BYTES"
    labels = result.as_numpy("OUTPUT0")
    assert labels.shape == (k,)
    parsed = [item.decode().split(":") for item in as_bytes(labels)]
    assert all(len(parts) == 2 for parts in parsed)
    values = [float(v) for v, _ in parsed]
    indices = [int(i) for _, i in parsed]
    total = (a + b).ravel()
    assert indices == list(np.argsort(-total, kind="stable")[:k])
    assert values == sorted(values, reverse=True)
    np.testing.assert_allclose(values, total[indices], atol=1e-5)


# == 10. nested vs flat JSON, scalars ===========================================================


def test_nested_and_flat_json_agree(http: httpx.Client) -> None:
    def doc(data: list[Any]) -> dict[str, Any]:
        return {"inputs": [{"name": "INPUT0", "shape": [2, 2], "datatype": "INT32", "data": data}]}

    flat = post_json(http, "identity_int32", doc([1, 2, 3, 4]))
    nested = post_json(http, "identity_int32", doc([[1, 2], [3, 4]]))
    assert flat.status_code == nested.status_code == 200, (flat.text, nested.text)
    assert flat.json()["outputs"] == nested.json()["outputs"]
    (entry,) = flat.json()["outputs"]
    assert entry == {"name": "OUTPUT0", "datatype": "INT32", "shape": [2, 2], "data": [1, 2, 3, 4]}


def test_nested_json_add_sub(http: httpx.Client) -> None:
    a = np.arange(32, dtype=np.float32).reshape(2, 16)
    b = np.full((2, 16), 0.5, dtype=np.float32)
    response = post_json(http, "add_sub", {
        "inputs": [
            {"name": "INPUT0", "shape": [2, 16], "datatype": "FP32", "data": a.tolist()},
            {"name": "INPUT1", "shape": [2, 16], "datatype": "FP32", "data": b.ravel().tolist()},
        ],
    })
    assert response.status_code == 200, response.text
    outputs = {o["name"]: np.array(o["data"], np.float32).reshape(o["shape"]) for o in response.json()["outputs"]}
    np.testing.assert_array_equal(outputs["OUTPUT0"], a + b)
    np.testing.assert_array_equal(outputs["OUTPUT1"], a - b)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_scalar_model(infer_client: Triton, binary: bool) -> None:
    x = np.array(3.25, dtype=np.float32)
    result = infer_client.infer("scalar", [make_input("x", x, "FP32", binary=binary)],
                                outputs=[triton.InferRequestedOutput("y", binary_data=binary)])
    entry = output_entry(result, "y")
    assert entry["shape"] == []
    y = result.as_numpy("y")
    assert y.shape == () and y.dtype == np.float32
    assert float(y) == 6.5


def test_scalar_with_one_element_list(http: httpx.Client) -> None:
    response = post_json(http, "scalar", {"inputs": [{"name": "x", "shape": [], "datatype": "FP32", "data": [1.5]}]})
    assert response.status_code == 200, response.text
    assert response.json()["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [], "data": [3.0]}]


# == 11. id and model fields ====================================================================


def test_request_id_echoed(infer_client: Triton) -> None:
    a, b, inputs = add_sub_inputs()
    response = infer_client.infer("add_sub", inputs, request_id="abc-123").get_response()
    assert response["id"] == "abc-123"
    assert response["model_name"] == "add_sub"
    assert response["model_version"] == "1"
    assert len(response["outputs"]) == 2


def test_no_request_id_no_id(infer_client: Triton) -> None:
    _, _, inputs = add_sub_inputs()
    response = infer_client.infer("add_sub", inputs).get_response()
    assert "id" not in response
    assert response["model_name"] == "add_sub"
    assert response["model_version"] == "1"
    assert "outputs" in response


def test_versioned_infer(infer_client: Triton) -> None:
    a, b, inputs = add_sub_inputs()
    result = infer_client.infer("add_sub", inputs, model_version="1")
    assert result.get_response()["model_version"] == "1"
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)


def test_many_async_infer_in_flight(sync_client: triton.InferenceServerClient) -> None:
    arrays = [np.full((1, 16), i, dtype=np.float32) for i in range(12)]
    pending = [
        sync_client.async_infer("add_sub", [make_input("INPUT0", x, "FP32"), make_input("INPUT1", x, "FP32")],
                                request_id=str(i))
        for i, x in enumerate(arrays)
    ]
    for i, (request, x) in enumerate(zip(pending, arrays)):
        result = request.get_result(block=True, timeout=30)
        assert result.get_response()["id"] == str(i)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), x + x)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), np.zeros_like(x))


def test_aio_gathered_infers(server: ServerProcess) -> None:
    arrays = [np.full((2, 16), i, dtype=np.float32) for i in range(12)]

    async def calls() -> list[triton.InferResult]:
        client = triton_aio.InferenceServerClient(server.address)
        try:
            return await asyncio.gather(*(
                client.infer("add_sub", [make_input("INPUT0", x, "FP32"), make_input("INPUT1", x, "FP32")],
                             request_id=str(i))
                for i, x in enumerate(arrays)
            ))
        finally:
            await client.close()

    for i, (result, x) in enumerate(zip(asyncio.run(calls()), arrays)):
        assert result.get_response()["id"] == str(i)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), x + x)


# == 12. compression ============================================================================


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_request_compression_with_binary_inputs(infer_client: Triton, algorithm: str) -> None:
    a, b, inputs = add_sub_inputs(rows=64)
    result = infer_client.infer("add_sub", inputs, request_compression_algorithm=algorithm)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_response_compression(infer_client: Triton, algorithm: str) -> None:
    a, b, inputs = add_sub_inputs(rows=64)
    outputs = [triton.InferRequestedOutput("OUTPUT0"), triton.InferRequestedOutput("OUTPUT1", binary_data=False)]
    result = infer_client.infer("add_sub", inputs, outputs=outputs, response_compression_algorithm=algorithm)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_both_directions_compressed(infer_client: Triton, algorithm: str) -> None:
    x = np.array([[b"", "\u00e9".encode(), b"q" * 3000]], dtype=object)
    result = infer_client.infer(
        "identity_bytes", [make_input("INPUT0", x, "BYTES")],
        request_compression_algorithm=algorithm, response_compression_algorithm=algorithm,
    )
    assert as_bytes(result.as_numpy("OUTPUT0")) == as_bytes(x)


@pytest.mark.parametrize(("algorithm", "inflate"), [("gzip", gzip.decompress), ("deflate", zlib.decompress)])
def test_compressed_response_on_the_wire(
    http: httpx.Client, algorithm: str, inflate: Callable[[bytes], bytes]
) -> None:
    a, b, inputs = add_sub_inputs(rows=8)
    body, json_size = triton.InferenceServerClient.generate_request_body(inputs)
    headers = {"Inference-Header-Content-Length": str(json_size), "Accept-Encoding": algorithm}
    with http.stream("POST", "/v2/models/add_sub/infer", content=body, headers=headers) as response:
        raw = b"".join(response.iter_raw())
    assert response.status_code == 200
    assert response.headers["content-encoding"] == algorithm
    plain = inflate(raw)
    length = int(response.headers["inference-header-content-length"])
    doc = json.loads(plain[:length])
    assert len(plain) == length + 2 * a.nbytes
    np.testing.assert_array_equal(np.frombuffer(blobs(doc, plain[length:])["OUTPUT1"], "<f4").reshape(a.shape), a - b)


def test_accept_encoding_br_only_is_not_compressed(http: httpx.Client) -> None:
    a, b, inputs = add_sub_inputs()
    response = raw_infer(http, "add_sub", inputs, headers={"Accept-Encoding": "br"})
    assert response.status_code == 200
    assert "content-encoding" not in response.headers
    doc, tail = split_body(response)
    np.testing.assert_array_equal(np.frombuffer(blobs(doc, tail)["OUTPUT0"], "<f4").reshape(a.shape), a + b)


@pytest.mark.parametrize("model", ["add_sub", "identity_bytes"])
def test_aio_metadata_config_stats_not_compressed(server: ServerProcess, model: str) -> None:
    """The aio client parses these bodies raw although aiohttp offers gzip on every request."""

    async def calls() -> tuple[Any, ...]:
        client = triton_aio.InferenceServerClient(server.address)
        try:
            return (
                await client.get_server_metadata(),
                await client.get_model_metadata(model),
                await client.get_model_config(model),
                await client.get_inference_statistics(model),
                await client.get_inference_statistics(),
            )
        finally:
            await client.close()

    server_meta, meta, config, stats, all_stats = asyncio.run(calls())
    assert server_meta["name"] == "servecore"
    assert meta["name"] == model
    assert config["name"] == model
    assert [s["name"] for s in stats["model_stats"]] == [model]
    assert model in {s["name"] for s in all_stats["model_stats"]}


@pytest.mark.parametrize(
    "path",
    ["/v2", "/v2/health/ready", "/v2/models/add_sub", "/v2/models/add_sub/config", "/v2/models/add_sub/stats",
     "/v2/models/stats", "/v2/models/add_sub/ready"],
)
def test_non_infer_responses_never_compressed(http: httpx.Client, path: str) -> None:
    response = http.get(path, headers={"Accept-Encoding": "gzip, deflate, br, zstd"})
    assert response.status_code == 200
    assert "content-encoding" not in response.headers
    json.loads(response.content)


# == 16. unknown model, version, tensor =========================================================


def test_infer_unknown_model(infer_client: Triton) -> None:
    _, _, inputs = add_sub_inputs()
    error = infer_client.error("infer", "missing", inputs)
    assert error.status() == "404"
    assert "missing" in error.message()


def test_infer_unknown_version(infer_client: Triton) -> None:
    _, _, inputs = add_sub_inputs()
    error = infer_client.error("infer", "add_sub", inputs, model_version="999")
    assert error.status() == "404"
    assert "999" in error.message()


def _fp32(name: str, rows: int = 1) -> triton.InferInput:
    return make_input(name, np.ones((rows, 16), np.float32), "FP32")


BAD_TENSORS: dict[str, tuple[Callable[[], list[triton.InferInput]], list[str] | None, str]] = {
    "unknown-input": (lambda: [_fp32("INPUT0"), _fp32("INPUT1"), _fp32("INPUT9")], None, "INPUT9"),
    "missing-input": (lambda: [_fp32("INPUT0")], None, "INPUT1"),
    "duplicate-input": (lambda: [_fp32("INPUT0"), _fp32("INPUT0"), _fp32("INPUT1")], None, "INPUT0"),
    "unknown-output": (lambda: [_fp32("INPUT0"), _fp32("INPUT1")], ["OUTPUT0", "OUTPUT7"], "OUTPUT7"),
    "duplicate-output": (lambda: [_fp32("INPUT0"), _fp32("INPUT1")], ["OUTPUT1", "OUTPUT1"], "OUTPUT1"),
}


@pytest.mark.parametrize("case", list(BAD_TENSORS))
def test_infer_bad_tensor_names(infer_client: Triton, case: str) -> None:
    make_inputs, output_names, named = BAD_TENSORS[case]
    outputs = None if output_names is None else [triton.InferRequestedOutput(n) for n in output_names]
    error = infer_client.error("infer", "add_sub", make_inputs(), outputs=outputs)
    assert error.status() == "400"
    assert named in error.message()


@pytest.mark.parametrize("case", list(BAD_TENSORS))
def test_infer_bad_tensor_names_raw(http: httpx.Client, case: str) -> None:
    make_inputs, output_names, named = BAD_TENSORS[case]
    outputs = None if output_names is None else [triton.InferRequestedOutput(n) for n in output_names]
    response = raw_infer(http, "add_sub", make_inputs(), outputs)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert named in response.json()["error"]


def test_infer_unknown_model_raw(http: httpx.Client) -> None:
    for path in ("/v2/models/missing/infer", "/v2/models/add_sub/versions/999/infer"):
        response = http.post(path, json={"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]})
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/json"
        assert response.json()["error"]


# == 22. statistics =============================================================================


def _stats(client: Triton, model: str) -> dict[str, Any]:
    (entry,) = client("get_inference_statistics", model)["model_stats"]
    return entry


def test_statistics_count_infers(infer_client: Triton) -> None:
    model, n = "identity_int16", 5
    before = _stats(infer_client, model)
    for i in range(n):
        x = np.array([[i, i + 1, i + 2]], dtype=np.int16)
        result = infer_client.infer(model, [make_input("INPUT0", x, "INT16")])
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), x)
    after = _stats(infer_client, model)
    assert after["name"] == model
    assert after["version"] == "1" and isinstance(after["version"], str)
    assert after["inference_count"] - before["inference_count"] == n
    assert 1 <= after["execution_count"] - before["execution_count"] <= n
    assert after["inference_stats"]["success"]["count"] - before["inference_stats"]["success"]["count"] == n
    assert after["last_inference"] >= before["last_inference"] and after["last_inference"] > 0
    assert set(after["inference_stats"]) >= set(STAGES)
    for stage in STAGES:
        duration = after["inference_stats"][stage]
        assert type(duration["count"]) is int and duration["count"] >= 0
        assert type(duration["ns"]) is int and duration["ns"] >= 0
    assert after["inference_stats"]["success"]["ns"] > before["inference_stats"]["success"]["ns"]


def test_statistics_count_failures(client: Triton) -> None:
    model = "identity_bytes"
    before = _stats(client, model)["inference_stats"]["fail"]["count"]
    x = np.array([[b"\xff"]], dtype=object)
    assert client.error("infer", model, [make_input("INPUT0", x, "BYTES")]).status() == "400"
    assert _stats(client, model)["inference_stats"]["fail"]["count"] == before + 1


def test_statistics_batch_rows(client: Triton) -> None:
    """inference_count counts samples: one request of 3 rows adds 3, one execution."""
    model = "identity_uint32"
    before = _stats(client, model)
    x = np.arange(12, dtype=np.uint32).reshape(3, 4)
    client.infer(model, [make_input("INPUT0", x, "UINT32")])
    after = _stats(client, model)
    assert after["inference_count"] - before["inference_count"] == 3
    assert after["execution_count"] - before["execution_count"] == 1


def test_statistics_all_models(client: Triton, model_paths: dict[str, Any]) -> None:
    stats = client("get_inference_statistics")["model_stats"]
    assert {s["name"] for s in stats} == set(model_paths)
    for entry in stats:
        assert isinstance(entry["version"], str)
        assert type(entry["inference_count"]) is int and type(entry["execution_count"]) is int


def test_statistics_versioned(client: Triton) -> None:
    versioned = client("get_inference_statistics", "scalar", "1")["model_stats"]
    assert [(s["name"], s["version"]) for s in versioned] == [("scalar", "1")]
    assert set(versioned[0]["inference_stats"]) >= set(STAGES)


@pytest.mark.parametrize(("model", "version"), [("missing", ""), ("scalar", "999")])
def test_statistics_unknown_model(client: Triton, model: str, version: str) -> None:
    error = client.error("get_inference_statistics", model, version)
    assert error.status() == "404"
    assert error.message()
