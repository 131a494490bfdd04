"""Torch models behind a real ``servecore serve`` process, driven by tritonclient.http and httpx.

TorchScript (``.pt``) models have open inputs and undeclared outputs (the file names its inputs
only); torch.export (``.pt2``) programs carry their whole signature.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import ml_dtypes
import numpy as np
import pytest
import torch_models as tm
import tritonclient.http as triton
from prometheus_client.parser import text_string_to_metric_families

import torch
from servecore.builtins.torch_backend import OPEN_SIGNATURE
from server_process import ServerProcess

JSON = "application/json"
#: V2 datatype -> torch dtype of the exported copy models
COPY_DTYPES = {"FP16": torch.float16, "INT64": torch.int64, "BOOL": torch.bool, "BF16": torch.bfloat16}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every model the tests serve, as files named after the model."""
    root = tmp_path_factory.mktemp("torch_models")
    tm.script(tm.Mlp(), root / "mlp.pt")
    tm.script(tm.Mlp(), root / "counted.pt")
    tm.script(tm.Pair(), root / "pair.pt")
    tm.script(tm.Named(), root / "named.pt")
    tm.script(tm.Identity(), root / "identity.pt")
    tm.script(tm.Raising(), root / "raising.pt")
    tm.export(tm.Mlp(), (torch.randn(2, tm.WIDTH_IN),), root / "mlp_export.pt2")
    for datatype, dtype in COPY_DTYPES.items():
        tm.export(tm.Copy(), (tm.example(dtype),), root / f"copy_{datatype.lower()}.pt2")
    return root


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server process serving every model of model_dir (not batching)."""
    paths = sorted(str(p) for p in model_dir.iterdir() if p.suffix in (".pt", ".pt2"))
    with ServerProcess(paths, log_dir=tmp_path_factory.mktemp("torch_logs")) as proc:
        yield proc


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30.0) as client:
        yield client


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(server.address, network_timeout=30.0)
    yield client
    client.close()


def mlp(x: np.ndarray) -> np.ndarray:
    """What the test MLP computes, run here."""
    with torch.inference_mode():
        return tm.Mlp().eval()(torch.from_numpy(x)).numpy()


def rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, tm.WIDTH_IN)).astype(np.float32)


def make_input(name: str, array: np.ndarray, datatype: str, *, binary: bool = True) -> triton.InferInput:
    tensor = triton.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def assert_error(response: httpx.Response, status: int, *needles: str) -> str:
    """*response* is a protocol error of *status*; its message contains every needle."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["content-type"] == JSON
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str), body
    for needle in needles:
        assert needle in body["error"], (needle, body["error"])
    return str(body["error"])


# -- TorchScript ----------------------------------------------------------------------------------


def test_torchscript_metadata(http: httpx.Client, client: triton.InferenceServerClient) -> None:
    meta = http.get("/v2/models/mlp").json()
    assert meta["platform"] == "pytorch_libtorch"
    assert meta["inputs"] == [{"name": "x", "datatype": "", "shape": [-1]}]
    assert meta["outputs"] == []
    props = meta["properties"]
    assert props["backend"] == "torch" and props["format"] == "torchscript"
    assert props["device"] == "cpu" and props["torch_version"] == torch.__version__
    assert props["signature"] == OPEN_SIGNATURE
    assert client.get_model_metadata("mlp") == meta
    assert client.is_model_ready("mlp")


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_torchscript_mlp_with_tritonclient(client: triton.InferenceServerClient, binary: bool) -> None:
    x = rows(5)
    result = client.infer("mlp", [make_input("x", x, "FP32", binary=binary)])
    output = result.get_output("output__0")
    assert output is not None and output["datatype"] == "FP32" and output["shape"] == [5, tm.WIDTH_OUT]
    np.testing.assert_allclose(result.as_numpy("output__0"), mlp(x), rtol=1e-6, atol=1e-6)
    # asked for by name, in the other encoding
    wanted = [triton.InferRequestedOutput("output__0", binary_data=not binary)]
    again = client.infer("mlp", [make_input("x", x, "FP32", binary=binary)], outputs=wanted)
    np.testing.assert_allclose(again.as_numpy("output__0"), mlp(x), rtol=1e-6, atol=1e-6)


def test_torchscript_mlp_with_httpx_json(http: httpx.Client) -> None:
    x = rows(2, seed=3)
    doc = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": x.ravel().tolist()}]}
    response = http.post("/v2/models/mlp/infer", json=doc)
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("output__0", "FP32", [2, tm.WIDTH_OUT])
    np.testing.assert_allclose(np.asarray(output["data"], dtype=np.float32), mlp(x).ravel(), rtol=1e-6, atol=1e-6)


def test_torchscript_two_inputs_tuple_output(client: triton.InferenceServerClient) -> None:
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.full((2, 3), 0.5, dtype=np.float32)
    meta = client.get_model_metadata("pair")
    assert [i["name"] for i in meta["inputs"]] == ["a", "b"] and meta["outputs"] == []
    result = client.infer("pair", [make_input("a", a, "FP32"), make_input("b", b, "FP32", binary=False)])
    assert [o["name"] for o in result.get_response()["outputs"]] == ["output__0", "output__1"]
    np.testing.assert_array_equal(result.as_numpy("output__0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("output__1"), a * b)


def test_torchscript_dict_output(http: httpx.Client) -> None:
    doc = {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "INT32", "data": [1, 2, 3, 4]}]}
    response = http.post("/v2/models/named/infer", json=doc)
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert set(outputs) == {"total", "doubled"}
    assert (outputs["total"]["datatype"], outputs["total"]["shape"], outputs["total"]["data"]) == ("INT64", [2], [3, 7])
    assert (outputs["doubled"]["datatype"], outputs["doubled"]["data"]) == ("INT32", [2, 4, 6, 8])


# -- torch.export ---------------------------------------------------------------------------------


def test_export_metadata_shows_the_derived_signature(http: httpx.Client) -> None:
    meta = http.get("/v2/models/mlp_export").json()
    assert meta["platform"] == "pytorch_export"
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, tm.WIDTH_IN]}]
    assert meta["outputs"] == [{"name": "output__0", "datatype": "FP32", "shape": [-1, tm.WIDTH_OUT]}]
    assert meta["properties"]["format"] == "torch.export"
    config = http.get("/v2/models/mlp_export/config").json()
    assert config["max_batch_size"] == 0
    assert config["input"][0]["data_type"] == "TYPE_FP32" and config["input"][0]["dims"] == [-1, tm.WIDTH_IN]


@pytest.mark.parametrize("n", [1, 3])
def test_export_inference(client: triton.InferenceServerClient, n: int) -> None:
    x = rows(n, seed=n)
    result = client.infer("mlp_export", [make_input("x", x, "FP32")])
    np.testing.assert_allclose(result.as_numpy("output__0"), mlp(x), rtol=1e-5, atol=1e-6)


def test_export_datatype_mismatch_is_a_bad_request(http: httpx.Client) -> None:
    doc = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1.0, 2.0, 3.0, 4.0]}]}
    assert_error(http.post("/v2/models/mlp_export/infer", json=doc), 400, "'x'", "FP64", "FP32")


def test_export_shape_mismatch_is_a_bad_request(http: httpx.Client) -> None:
    doc = {"inputs": [{"name": "x", "shape": [1, 5], "datatype": "FP32", "data": [1.0] * 5}]}
    assert_error(http.post("/v2/models/mlp_export/infer", json=doc), 400, "'x'", "[1, 5]", "[-1, 4]")


# -- datatypes ------------------------------------------------------------------------------------


def sample(datatype: str) -> np.ndarray:
    """A 2x3 array of *datatype*, as tritonclient sends and returns it."""
    if datatype == "BOOL":
        return np.array([[True, False, True], [False, False, True]])
    if datatype == "INT64":
        return np.array([[np.iinfo(np.int64).min, np.iinfo(np.int64).max, 0], [1, -1, 42]], dtype=np.int64)
    if datatype == "FP16":
        return np.array([[0.1, -65504.0, 65504.0], [6e-8, 1.5, -1 / 3]], dtype=np.float16)
    values = np.array([1.0, -2.25, 3.140625, 1e30, -1e-30, 0.1], dtype=np.float32)
    return (values.view(np.uint32) >> 16).astype(np.uint16).view(ml_dtypes.bfloat16).reshape(2, 3)


def round_trips(datatype: str) -> list[Any]:
    binaries = [True] if datatype == "BF16" else [True, False]  # BF16 has no JSON form
    return [pytest.param(datatype, binary, id=f"{datatype}-{'binary' if binary else 'json'}") for binary in binaries]


@pytest.mark.parametrize(("datatype", "binary"), [p for dt in COPY_DTYPES for p in round_trips(dt)])
def test_datatypes_round_trip_through_an_exported_copy(
    client: triton.InferenceServerClient, datatype: str, binary: bool
) -> None:
    model = f"copy_{datatype.lower()}"
    meta = client.get_model_metadata(model)
    assert meta["inputs"] == [{"name": "x", "datatype": datatype, "shape": [-1, 3]}]
    assert meta["outputs"] == [{"name": "output__0", "datatype": datatype, "shape": [-1, 3]}]
    x = sample(datatype)
    wanted = [triton.InferRequestedOutput("output__0", binary_data=binary)]
    result = client.infer(model, [make_input("x", x, datatype, binary=binary)], outputs=wanted)
    assert result.get_output("output__0")["datatype"] == datatype
    got = result.as_numpy("output__0")
    assert got.dtype == x.dtype and got.shape == x.shape
    np.testing.assert_array_equal(got.view(np.uint16) if datatype == "BF16" else got, x.view(np.uint16) if datatype == "BF16" else x)


@pytest.mark.parametrize("datatype", ["FP16", "INT64", "BOOL"])
def test_datatypes_round_trip_through_an_open_torchscript_input(
    client: triton.InferenceServerClient, datatype: str
) -> None:
    x = sample(datatype)
    result = client.infer("identity", [make_input("x", x, datatype)])
    assert result.get_output("output__0")["datatype"] == datatype
    np.testing.assert_array_equal(result.as_numpy("output__0"), x)


def test_bf16_from_an_open_torchscript_output_is_widened_to_fp32(client: triton.InferenceServerClient) -> None:
    """Nothing declares the output BF16, so its exact values come back as FP32 (see torch_backend)."""
    x = sample("BF16")
    result = client.infer("identity", [make_input("x", x, "BF16")])
    assert result.get_output("output__0")["datatype"] == "FP32"
    np.testing.assert_array_equal(result.as_numpy("output__0"), x.astype(np.float32))


# -- failures -------------------------------------------------------------------------------------


def test_a_forward_that_raises_is_a_500_and_the_server_keeps_serving(http: httpx.Client) -> None:
    bad = {"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1.0, -1.0]}]}
    assert_error(http.post("/v2/models/raising/infer", json=bad), 500, "'raising'", "negative input refused")
    good = {"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1.0, 2.0]}]}
    response = http.post("/v2/models/raising/infer", json=good)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == [2.0, 3.0]
    assert http.get("/v2/health/ready").status_code == 200
    assert http.get("/v2/models/raising/ready").status_code == 200


def test_a_corrupt_pt_file_stops_the_server_naming_the_file(
    tmp_path: Path, start_server: Callable[..., ServerProcess]
) -> None:
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a TorchScript archive\n" * 20)
    proc = start_server([str(broken)], expect_ready=False)
    assert proc.wait(timeout=120) != 0
    output = proc.stderr() + proc.stdout()
    assert str(broken) in output and "not a loadable TorchScript file" in output, output[-2000:]


# -- statistics and metrics -----------------------------------------------------------------------


def _stats(http: httpx.Client, model: str) -> dict[str, Any]:
    response = http.get(f"/v2/models/{model}/stats")
    assert response.status_code == 200, response.text
    (entry,) = response.json()["model_stats"]
    return entry


def _requests(http: httpx.Client, model: str, outcome: str) -> float:
    text = http.get("/metrics").text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "servecore_requests_total" and s.labels.get("model") == model and s.labels.get("outcome") == outcome
    )


def test_statistics_and_metrics_count_torch_requests(http: httpx.Client) -> None:
    model = "counted"
    before = _stats(http, model)
    successes, failures = _requests(http, model, "success"), _requests(http, model, "failure")
    for seed in range(3):
        x = rows(2, seed)
        doc = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": x.ravel().tolist()}]}
        assert http.post(f"/v2/models/{model}/infer", json=doc).status_code == 200
    # the open input takes the request, and the Linear layer refuses 5 columns: a model failure
    wide = {"inputs": [{"name": "x", "shape": [1, 5], "datatype": "FP32", "data": [1.0] * 5}]}
    assert_error(http.post(f"/v2/models/{model}/infer", json=wide), 500, f"'{model}'")
    after = _stats(http, model)
    # an open input has no known batch dimension: each request counts as one inference (the
    # exported model of the batching test counts rows)
    assert after["inference_count"] - before["inference_count"] == 3
    assert after["execution_count"] - before["execution_count"] == 3
    success, fail = after["inference_stats"]["success"], after["inference_stats"]["fail"]
    assert success["count"] - before["inference_stats"]["success"]["count"] == 3
    assert success["ns"] > before["inference_stats"]["success"]["ns"]
    assert fail["count"] - before["inference_stats"]["fail"]["count"] == 1
    assert _requests(http, model, "success") - successes == 3
    assert _requests(http, model, "failure") - failures == 1


# -- dynamic batching -----------------------------------------------------------------------------


def test_dynamic_batching_answers_each_request_with_its_own_rows(
    model_dir: Path, start_server: Callable[..., ServerProcess]
) -> None:
    args = [str(model_dir / "mlp_export.pt2"), "--max-batch-size", "8", "--max-queue-delay-us", "2000"]
    server = start_server(args)
    inputs = [rows(1 + i % 2, seed=100 + i) for i in range(24)]

    def call(x: np.ndarray) -> np.ndarray:
        doc = {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
        response = http.post("/v2/models/mlp_export/infer", json=doc)
        assert response.status_code == 200, response.text
        (output,) = response.json()["outputs"]
        assert output["shape"] == [x.shape[0], tm.WIDTH_OUT]
        return np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])

    with httpx.Client(base_url=server.url, timeout=30.0) as http:
        config = http.get("/v2/models/mlp_export/config").json()
        assert config["max_batch_size"] == 8 and "dynamic_batching" in config
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(call, inputs))
        for x, got in zip(inputs, answers):
            np.testing.assert_allclose(got, mlp(x), rtol=1e-5, atol=1e-6)
        stats = _stats(http, "mlp_export")
    assert stats["inference_count"] == sum(len(x) for x in inputs)
    assert 1 <= stats["execution_count"] <= len(inputs)


# -- a repository with model.toml -----------------------------------------------------------------


def test_a_torchscript_model_in_a_repository_takes_its_signature_from_model_toml(tmp_path: Path) -> None:
    """model.toml declares the signature TorchScript cannot tell: metadata shows it, requests
    are checked against it, and with a batch dimension the model batches like an ONNX model."""
    version = tmp_path / "repo" / "scripted" / "1"
    version.mkdir(parents=True)
    tm.script(tm.Mlp(), version / "model.pt")
    (version.parent / "model.toml").write_text(
        'description = "scripted MLP"\n'
        "[batching]\nmax_batch_size = 8\nmax_queue_delay_us = 2000\n"
        '[[inputs]]\nname = "x"\ndatatype = "FP32"\nshape = [-1, 4]\n'
        '[[outputs]]\nname = "scores"\ndatatype = "FP32"\nshape = [-1, 3]\n'
    )
    with ServerProcess([str(tmp_path / "repo")], log_dir=tmp_path / "logs") as server, httpx.Client(
        base_url=server.url, timeout=30.0
    ) as http:
        metadata = http.get("/v2/models/scripted").json()
        assert metadata["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
        assert metadata["outputs"] == [{"name": "scores", "datatype": "FP32", "shape": [-1, 3]}]
        assert metadata["properties"]["description"] == "scripted MLP"
        assert http.get("/v2/models/scripted/config").json()["max_batch_size"] == 8
        bad = http.post("/v2/models/scripted/infer", json={"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 4], "data": [0, 0, 0, 0]}]})
        assert_error(bad, 400, "'x'", "FP64")
        xs = [rows(int(n), seed=i) for i, n in enumerate([1, 3, 2, 1, 4, 2])]

        def one(x: np.ndarray) -> np.ndarray:
            body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}
            response = http.post("/v2/models/scripted/infer", json=body)
            assert response.status_code == 200, response.text
            [out] = response.json()["outputs"]
            assert out["name"] == "scores"
            return np.array(out["data"], dtype=np.float32).reshape(out["shape"])

        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            for x, got in zip(xs, pool.map(one, xs)):
                np.testing.assert_allclose(got, mlp(x), rtol=1e-5, atol=1e-5)
