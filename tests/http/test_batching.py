"""Dynamic batching over HTTP: real server processes started with batching options, real clients.

The servers run whichever batching core ``SERVECORE_PURE_PYTHON`` selects (CI runs the suite once
each way). Nothing here asserts how long anything takes. Requests are ordered by watching the
server: ``servecore_inflight_requests`` counts requests handed to the scheduler, so "the gauge
says 2" means the second request is queued. Holding the only instance busy takes a slow model
(``looped_rows``) whose run time is measured here first, as tests/test_lifecycle.py does; a few
seconds are only hang guards.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
import onnx
import pytest
import tritonclient.http as triton
import tritonclient.http.aio as triton_aio
from onnx import numpy_helper
from prometheus_client.parser import text_string_to_metric_families

from models import LOOKUP_TABLE, lookup, looped_rows, mlp
from servecore.codec import pure_python_requested
from server_process import ServerProcess

T = TypeVar("T")
Start = Callable[..., ServerProcess]
JSON = "application/json"
#: hang guard of one scenario, seconds
GUARD = 120.0
#: a request that holds the slow model's only instance runs about this long (measured, not assumed)
HOLD_SECONDS = 2.0
SLOW_WIDTH = 512
REASONS = ("size", "preferred", "delay", "deadline", "shape")
#: queue delay of the reasons server: long enough that nothing closes for delay by accident
REASONS_DELAY_US = 3_000_000


def run(scenario: Awaitable[T]) -> T:
    async def guarded() -> T:
        return await asyncio.wait_for(scenario, GUARD)

    return asyncio.run(guarded())


# -- servers --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def batch_models(model_paths: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("batch-models")
    return {
        "mlp": mlp(directory / "mlp.onnx"),
        "slow": looped_rows(directory / "slow.onnx", SLOW_WIDTH),
        "lookup": lookup(directory / "lookup.onnx"),
        "identity_fp32": model_paths["identity_fp32"],
        "add_sub": model_paths["add_sub"],
    }


def serving(models: dict[str, Path], *names: str) -> list[str]:
    return [str(models[name]) for name in names]


@pytest.fixture(scope="module")
def load_server(batch_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Batches of up to 32 rows, waiting up to 20 ms for company."""
    args = [*serving(batch_models, "mlp", "identity_fp32"), "--max-batch-size", "32", "--max-queue-delay-us", "20000"]
    with ServerProcess(args, log_dir=tmp_path_factory.mktemp("logs")) as server:
        yield server


@pytest.fixture(scope="module")
def reasons_server(batch_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Batches of up to 8 rows, sent at once at 4, else after a long delay."""
    args = [
        *serving(batch_models, "identity_fp32", "add_sub", "lookup"),
        "--max-batch-size", "8", "--preferred-batch-sizes", "4", "--max-queue-delay-us", str(REASONS_DELAY_US),
    ]
    with ServerProcess(args, log_dir=tmp_path_factory.mktemp("logs")) as server:
        yield server


@pytest.fixture
def reasons_http(reasons_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=reasons_server.url, timeout=60) as client:
        yield client
        still_serves(client)


@pytest.fixture(scope="module")
def hold_steps(batch_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> int:
    """Loop steps for a slow request of at least HOLD_SECONDS here (measured on a non-batching server)."""
    with (
        ServerProcess(serving(batch_models, "slow"), log_dir=tmp_path_factory.mktemp("logs")) as server,
        httpx.Client(base_url=server.url, timeout=300) as client,
    ):

        def measure(steps: int) -> float:
            started = time.monotonic()
            response = client.post("/v2/models/slow/infer", json=slow_doc(steps))
            assert response.status_code == 200, response.text
            return time.monotonic() - started

        measure(1)  # warm-up
        steps = 1000
        for _ in range(10):
            elapsed = measure(steps)
            if elapsed >= HOLD_SECONDS:
                elapsed = min(elapsed, measure(steps))  # one slow measurement is not enough
            if elapsed >= HOLD_SECONDS:
                return steps
            steps = int(steps * min(50.0, 1.25 * HOLD_SECONDS / max(elapsed, 0.005))) + 1
    raise AssertionError(f"{steps} steps still take under {HOLD_SECONDS}s")


@pytest.fixture
def slow_server(batch_models: dict[str, Path], start_server: Start) -> Callable[..., ServerProcess]:
    """``slow_server(*options)``: a fresh server of the slow model, one instance, nothing inline."""

    def start(*options: str) -> ServerProcess:
        args = [*serving(batch_models, "slow"), "--max-batch-size", "8", "--inline-compute-us", "0", *options]
        return start_server(args)

    return start


# -- helpers --------------------------------------------------------------------------------------


def slow_doc(steps: int, rows: int = 1, **parameters: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "inputs": [
            {"name": "x", "shape": [rows, SLOW_WIDTH], "datatype": "FP32", "data": [0.5] * (rows * SLOW_WIDTH)},
            {"name": "n", "shape": [rows, 1], "datatype": "INT64", "data": [steps] * rows},
        ]
    }
    if parameters:
        doc["parameters"] = parameters
    return doc


def identity_doc(x: np.ndarray, **parameters: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "inputs": [{"name": "INPUT0", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]
    }
    if parameters:
        doc["parameters"] = parameters
    return doc


def distinct(rid: int, rows: int, n: int) -> np.ndarray:
    """Request *rid*'s rows: small exact integers no other request uses."""
    return (rid * 1000 + np.arange(rows * n, dtype=np.float32)).reshape(rows, n)


def answer(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    (out,) = response.json()["outputs"]
    return np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])


def assert_error(response: httpx.Response, status: int, *needles: str) -> str:
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["content-type"] == JSON, response.headers
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    for needle in needles:
        assert needle in body["error"], (needle, body["error"])
    return str(body["error"])


def still_serves(client: httpx.Client) -> None:
    """A good request of the preferred size is answered at once, with its own data."""
    x = distinct(7, 4, 2)
    np.testing.assert_array_equal(answer(client.post("/v2/models/identity_fp32/infer", json=identity_doc(x))), x)


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    text = httpx.get(url + "/metrics", timeout=30).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def metric(samples: Samples, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    found = [v for (n, ls), v in samples.items() if n == name and wanted <= ls and len(ls) == len(wanted)]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def reasons(url: str, model: str) -> dict[str, float]:
    samples = scrape(url)
    return {r: metric(samples, "servecore_batches_total", model=model, version="1", reason=r) for r in REASONS}


def model_stats(url: str, model: str) -> dict[str, Any]:
    (stats,) = httpx.get(f"{url}/v2/models/{model}/stats", timeout=30).json()["model_stats"]
    return stats


def inflight(url: str) -> float:
    return metric(scrape(url), "servecore_inflight_requests")


async def until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(condition):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def inflight_reaches(url: str, count: int) -> None:
    await until(lambda: inflight(url) >= count, f"{count} requests in flight")


# -- the batching core ------------------------------------------------------------------------------


def test_the_server_batches_with_the_selected_core(reasons_server: ServerProcess) -> None:
    core = "python" if pure_python_requested() else "native"
    log = reasons_server.stderr() + reasons_server.stdout()
    for model in ("identity_fp32", "add_sub", "lookup"):
        assert f"model {model} version 1: dynamic batching up to 8 rows ({core} core)" in log, log[-2000:]


# -- correctness under load -------------------------------------------------------------------------


def mlp_reference(path: Path, x: np.ndarray) -> np.ndarray:
    weights = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in onnx.load(str(path)).graph.initializer}
    hidden = np.maximum(x.astype(np.float64) @ weights["w1"] + weights["b1"], 0)
    return hidden @ weights["w2"] + weights["b2"]


def test_hundreds_of_concurrent_requests_each_get_their_own_answer(
    load_server: ServerProcess, batch_models: dict[str, Path]
) -> None:
    """300 distinct requests of 1-4 rows in flight together through tritonclient.aio: every answer
    is that request's own (against the MLP computed here, request by request), and batches formed."""
    rng = np.random.default_rng(11)
    inputs = [rng.standard_normal((int(rng.integers(1, 5)), 64)).astype(np.float32) for _ in range(300)]
    before = model_stats(load_server.url, "mlp")
    before_reasons = reasons(load_server.url, "mlp")

    async def scenario() -> list[triton.InferResult]:
        client = triton_aio.InferenceServerClient(load_server.address, conn_limit=len(inputs))
        try:
            calls = []
            for i, x in enumerate(inputs):
                tensor = triton_aio.InferInput("input", list(x.shape), "FP32")
                tensor.set_data_from_numpy(x, binary_data=True)
                calls.append(client.infer("mlp", [tensor], request_id=str(i)))
            return await asyncio.gather(*calls)
        finally:
            await client.close()

    results = run(scenario())
    for i, (result, x) in enumerate(zip(results, inputs)):
        assert result.get_response()["id"] == str(i)
        logits = result.as_numpy("logits")
        assert logits.shape == (len(x), 10)
        # loose enough for a GPU's TF32 matmuls; another request's logits differ by whole units
        np.testing.assert_allclose(logits, mlp_reference(batch_models["mlp"], x), rtol=1e-2, atol=1e-2)
    after = model_stats(load_server.url, "mlp")
    rows = sum(len(x) for x in inputs)
    executions = after["execution_count"] - before["execution_count"]
    assert after["inference_count"] - before["inference_count"] == rows
    assert after["inference_stats"]["success"]["count"] - before["inference_stats"]["success"]["count"] == 300
    assert 0 < executions < 300, "no batch held more than one request"
    sizes_before = {b["batch_size"]: b["compute_infer"]["count"] for b in before["batch_stats"]}
    sizes = {b["batch_size"]: b["compute_infer"]["count"] - sizes_before.get(b["batch_size"], 0) for b in after["batch_stats"]}
    assert sum(sizes.values()) == executions
    assert sum(size * count for size, count in sizes.items()) == rows
    assert max(size for size, count in sizes.items() if count) > 1
    assert max(sizes) <= 32
    after_reasons = reasons(load_server.url, "mlp")
    assert sum(after_reasons.values()) - sum(before_reasons.values()) == executions


def test_concurrent_requests_of_mixed_shapes_are_answered_exactly(load_server: ServerProcess) -> None:
    """identity_fp32 takes [batch, n]: requests of different n in flight together never share a batch
    (a shared batch would pad or fail), and each gets exactly its own data back."""
    rng = np.random.default_rng(5)
    plan = [(int(rng.integers(1, 5)), int(rng.choice([2, 3, 5], p=[0.45, 0.45, 0.1]))) for _ in range(200)]
    inputs = [distinct(i, rows, n) for i, (rows, n) in enumerate(plan)]
    before = model_stats(load_server.url, "identity_fp32")
    before_reasons = reasons(load_server.url, "identity_fp32")

    async def scenario() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=len(inputs))
        async with httpx.AsyncClient(base_url=load_server.url, timeout=60, limits=limits) as client:
            return await asyncio.gather(
                *(client.post("/v2/models/identity_fp32/infer", json=identity_doc(x)) for x in inputs)
            )

    for response, x in zip(run(scenario()), inputs):
        np.testing.assert_array_equal(answer(response), x)
    after = model_stats(load_server.url, "identity_fp32")
    executions = after["execution_count"] - before["execution_count"]
    assert after["inference_count"] - before["inference_count"] == sum(len(x) for x in inputs)
    assert 0 < executions < len(inputs)
    after_reasons = reasons(load_server.url, "identity_fp32")
    assert sum(after_reasons.values()) - sum(before_reasons.values()) == executions


# -- close reasons --------------------------------------------------------------------------------


def test_every_close_reason_is_counted(reasons_server: ServerProcess, reasons_http: httpx.Client) -> None:
    url = reasons_server.url
    path = "/v2/models/identity_fp32/infer"

    def expect(reason: str, x: np.ndarray, **parameters: Any) -> None:
        before = reasons(url, "identity_fp32")
        np.testing.assert_array_equal(answer(reasons_http.post(path, json=identity_doc(x, **parameters))), x)
        after = reasons(url, "identity_fp32")
        assert {r: after[r] - before[r] for r in REASONS} == {r: int(r == reason) for r in REASONS}, reason

    expect("size", distinct(1, 8, 2))
    expect("preferred", distinct(2, 4, 2))
    # waiting the queue delay would miss the request's timeout: its batch closes at once
    expect("deadline", distinct(3, 1, 2), timeout=REASONS_DELAY_US // 3)
    expect("delay", distinct(4, 1, 2))

    # a request of another shape arriving behind a waiting one closes the waiting one's batch
    before = reasons(url, "identity_fp32")
    a, b = distinct(5, 1, 2), distinct(6, 8, 3)

    async def scenario() -> tuple[httpx.Response, httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            first = asyncio.ensure_future(client.post(path, json=identity_doc(a)))
            await inflight_reaches(url, 1)
            second = await client.post(path, json=identity_doc(b))
            return await first, second

    first, second = run(scenario())
    np.testing.assert_array_equal(answer(first), a)
    np.testing.assert_array_equal(answer(second), b)
    after = reasons(url, "identity_fp32")
    assert {r: after[r] - before[r] for r in REASONS} == {"size": 1, "preferred": 0, "delay": 0, "deadline": 0, "shape": 1}


# -- bad requests -----------------------------------------------------------------------------------


def test_more_rows_than_max_batch_size_is_a_bad_request(reasons_http: httpx.Client) -> None:
    response = reasons_http.post("/v2/models/identity_fp32/infer", json=identity_doc(distinct(1, 9, 2)))
    assert_error(response, 400, "identity_fp32", "9 rows", "max_batch_size")


def test_inputs_with_different_leading_dimensions_are_a_bad_request(reasons_http: httpx.Client) -> None:
    doc = {
        "inputs": [
            {"name": "INPUT0", "shape": [2, 16], "datatype": "FP32", "data": [1.0] * 32},
            {"name": "INPUT1", "shape": [3, 16], "datatype": "FP32", "data": [1.0] * 48},
        ]
    }
    assert_error(reasons_http.post("/v2/models/add_sub/infer", json=doc), 400, "INPUT0 2", "INPUT1 3")


@pytest.mark.parametrize(
    ("name", "value"),
    [("timeout", -1), ("timeout", "100"), ("timeout", 2.5), ("timeout", True),
     ("priority", -2), ("priority", "high"), ("priority", 1.0), ("priority", [1])],
)
def test_bad_timeout_or_priority_is_a_bad_request(reasons_http: httpx.Client, name: str, value: Any) -> None:
    doc = identity_doc(distinct(1, 4, 2), **{name: value})
    assert_error(reasons_http.post("/v2/models/identity_fp32/infer", json=doc), 400, repr(name))


def test_timeout_and_priority_from_tritonclient_are_accepted(reasons_server: ServerProcess) -> None:
    client = triton.InferenceServerClient(reasons_server.address, network_timeout=60)
    try:
        x = distinct(3, 4, 2)
        tensor = triton.InferInput("INPUT0", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        result = client.infer("identity_fp32", [tensor], priority=1, timeout=60_000_000)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), x)
    finally:
        client.close()


# -- failure isolation ------------------------------------------------------------------------------


def test_a_failing_batch_fails_only_its_own_requests(reasons_server: ServerProcess) -> None:
    """lookup fails a whole run on an index out of range: the batch holding one fails with 500 naming
    the model; the next batch, and every request after, gets its own values."""
    url = reasons_server.url
    path = "/v2/models/lookup/infer"

    def doc(index: list[int]) -> dict[str, Any]:
        return {"inputs": [{"name": "index", "shape": [1, 4], "datatype": "INT64", "data": index}]}

    good = [[i, (i + 1) % 16, (i + 5) % 16, 15 - i] for i in range(8)]
    before = model_stats(url, "lookup")

    async def batch_of_four(indices: list[list[int]]) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:  # 4 rows: a preferred batch
            return await asyncio.gather(*(client.post(path, json=doc(index)) for index in indices))

    failed = run(batch_of_four([good[0], good[1], [0, 1, 99, 2], good[2]]))
    for response in failed:
        assert_error(response, 500, "'lookup'", "4 requests")
    passed = run(batch_of_four(good[3:7]))
    for response, index in zip(passed, good[3:7]):
        np.testing.assert_array_equal(answer(response), LOOKUP_TABLE[index].reshape(1, 4))
    with httpx.Client(base_url=url, timeout=60) as client:
        alone = client.post(path, json={**doc(good[7]), "parameters": {"timeout": 1_000_000}})
        np.testing.assert_array_equal(answer(alone), LOOKUP_TABLE[good[7]].reshape(1, 4))
    after = model_stats(url, "lookup")
    assert after["execution_count"] - before["execution_count"] == 2
    assert after["inference_stats"]["fail"]["count"] - before["inference_stats"]["fail"]["count"] == 4
    assert after["inference_stats"]["success"]["count"] - before["inference_stats"]["success"]["count"] == 5


# -- statistics and configuration -----------------------------------------------------------------


def test_statistics_and_model_config(reasons_server: ServerProcess, load_server: ServerProcess) -> None:
    client = triton.InferenceServerClient(reasons_server.address, network_timeout=60)
    try:
        config = client.get_model_config("identity_fp32")
        assert config["max_batch_size"] == 8
        assert config["input"][0]["dims"] == [-1] and config["output"][0]["dims"] == [-1]
        assert config["dynamic_batching"]["max_queue_delay_microseconds"] == REASONS_DELAY_US
        assert config["dynamic_batching"]["preferred_batch_size"] == [4]
        before = client.get_inference_statistics("identity_fp32")["model_stats"][0]
        with httpx.Client(base_url=reasons_server.url, timeout=60) as http:
            for rows in (4, 8, 4):
                x = distinct(rows, rows, 3)
                np.testing.assert_array_equal(answer(http.post("/v2/models/identity_fp32/infer", json=identity_doc(x))), x)
        after = client.get_inference_statistics("identity_fp32")["model_stats"][0]
    finally:
        client.close()
    assert after["execution_count"] - before["execution_count"] == 3
    assert after["inference_count"] - before["inference_count"] == 16
    for stage in ("success", "queue", "compute_input", "compute_infer", "compute_output"):
        assert after["inference_stats"][stage]["count"] - before["inference_stats"][stage]["count"] == 3, stage
        assert after["inference_stats"][stage]["ns"] >= before["inference_stats"][stage]["ns"], stage
    assert after["inference_stats"]["compute_infer"]["ns"] > before["inference_stats"]["compute_infer"]["ns"]
    counts = {b["batch_size"]: b["compute_infer"]["count"] for b in after["batch_stats"]}
    counts_before = {b["batch_size"]: b["compute_infer"]["count"] for b in before["batch_stats"]}
    assert counts[4] - counts_before.get(4, 0) == 2 and counts[8] - counts_before.get(8, 0) == 1

    mlp_config = httpx.get(load_server.url + "/v2/models/mlp/config", timeout=30).json()
    assert mlp_config["max_batch_size"] == 32
    assert [i["dims"] for i in mlp_config["input"]] == [[64]]
    assert [o["dims"] for o in mlp_config["output"]] == [[10]]
    assert mlp_config["dynamic_batching"]["max_queue_delay_microseconds"] == 20000


# -- deadlines, admission and disconnects (the slow model holds the only instance) ----------------


async def post(client: httpx.AsyncClient, doc: dict[str, Any]) -> httpx.Response:
    return await client.post("/v2/models/slow/infer", json=doc)


def test_requests_whose_timeout_passes_in_the_queue_get_504_and_never_run(
    slow_server: Callable[..., ServerProcess], hold_steps: int
) -> None:
    server = slow_server("--default-timeout-us", "20000")
    url = server.url

    async def scenario() -> tuple[httpx.Response, ...]:
        async with httpx.AsyncClient(base_url=url, timeout=300) as client:
            holder = asyncio.ensure_future(post(client, slow_doc(hold_steps)))  # runs at once: no queueing
            await inflight_reaches(url, 1)
            by_default = asyncio.ensure_future(post(client, slow_doc(1)))
            by_parameter = asyncio.ensure_future(post(client, slow_doc(1, timeout=20000)))
            patient = asyncio.ensure_future(post(client, slow_doc(1, timeout=0)))
            return tuple(await asyncio.gather(holder, by_default, by_parameter, patient))

    holder, by_default, by_parameter, patient = run(scenario())
    assert holder.status_code == 200, holder.text
    for response in (by_default, by_parameter):
        assert_error(response, 504, "'slow'", "timed out", "not run")
    assert patient.status_code == 200, patient.text
    stats = model_stats(url, "slow")
    assert stats["execution_count"] == 2  # the holder and the patient one
    assert stats["inference_count"] == 2
    assert stats["inference_stats"]["fail"]["count"] == 2
    samples = scrape(url)
    assert metric(samples, "servecore_batch_expired_requests_total", model="slow", version="1") == 2
    assert metric(samples, "servecore_http_errors_total", status="504") == 2


def test_a_full_queue_answers_429_with_retry_after(slow_server: Callable[..., ServerProcess], hold_steps: int) -> None:
    server = slow_server("--max-queue-size", "2")
    url = server.url

    async def scenario() -> tuple[list[httpx.Response], httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=300) as client:
            holder = asyncio.ensure_future(post(client, slow_doc(hold_steps)))
            await inflight_reaches(url, 1)
            queued = [asyncio.ensure_future(post(client, slow_doc(1))) for _ in range(2)]
            await inflight_reaches(url, 3)
            refused = await post(client, slow_doc(1))
            return list(await asyncio.gather(holder, *queued)), refused

    answered, refused = run(scenario())
    assert_error(refused, 429, "'slow'", "queue is full")
    retry = refused.headers["retry-after"]
    assert retry.isdigit() and int(retry) >= 1
    for response in answered:
        assert response.status_code == 200, response.text
    with httpx.Client(base_url=url, timeout=300) as client:
        assert client.post("/v2/models/slow/infer", json=slow_doc(1)).status_code == 200
        # the runtime model has now learned how long a row takes: a 1 ms timeout cannot be met
        refused = client.post("/v2/models/slow/infer", json=slow_doc(1, timeout=1000))
        assert_error(refused, 429, "'slow'", "predicted wait")
        assert int(refused.headers["retry-after"]) >= 1
        assert client.post("/v2/models/slow/infer", json=slow_doc(1, timeout=600_000_000)).status_code == 200
    samples = scrape(url)
    assert metric(samples, "servecore_batch_rejected_requests_total", model="slow", version="1", reason="queue_full") == 1
    assert metric(samples, "servecore_batch_rejected_requests_total", model="slow", version="1", reason="deadline") == 1
    assert metric(samples, "servecore_http_errors_total", status="429") == 2


def raw_request(port: int, doc: dict[str, Any]) -> socket.socket:
    """Send an inference request on a raw socket and leave it open (closing it is the disconnect)."""
    body = json.dumps(doc).encode()
    head = (
        f"POST /v2/models/slow/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(head + body)
    return sock


def test_a_client_that_disconnects_while_queued_is_never_run(
    slow_server: Callable[..., ServerProcess], hold_steps: int
) -> None:
    server = slow_server()
    url = server.url

    def disconnects() -> float:
        samples = scrape(url)
        return samples.get(("servecore_http_errors_total", frozenset({("status", "499")})), 0.0)

    async def scenario() -> httpx.Response:
        async with httpx.AsyncClient(base_url=url, timeout=300) as client:
            holder = asyncio.ensure_future(post(client, slow_doc(hold_steps)))
            await inflight_reaches(url, 1)
            leaving = raw_request(server.port, slow_doc(hold_steps))  # would hold the model again if run
            await inflight_reaches(url, 2)
            leaving.close()
            await until(lambda: disconnects() == 1, "the server to notice the disconnect")
            await until(lambda: inflight(url) == 1, "the queued request to be dropped")
            assert not holder.done(), "the holding request ended too soon for this test to mean anything"
            return await holder

    assert run(scenario()).status_code == 200
    with httpx.Client(base_url=url, timeout=300) as client:
        assert client.post("/v2/models/slow/infer", json=slow_doc(1)).status_code == 200
    stats = model_stats(url, "slow")
    assert stats["execution_count"] == 2  # the holder and the last request: never the one that left
    assert stats["inference_count"] == 2


# -- paddable inputs ----------------------------------------------------------------------------


def test_padded_requests_of_different_lengths_over_http(tmp_path: Path) -> None:
    """--pad-inputs: 40 concurrent requests of random lengths, batched together, each answered exactly."""
    from models import row_sum

    path = row_sum(tmp_path / "row_sum.onnx")
    args = [str(path), "--max-batch-size", "8", "--max-queue-delay-us", "100000", "--pad-inputs", "x=0"]
    with ServerProcess(args, log_dir=tmp_path / "logs") as server:
        rng = np.random.default_rng(3)
        arrays = [rng.standard_normal((1, int(n))).astype(np.float32) for n in rng.integers(1, 30, size=40)]

        async def scenario() -> list[dict[str, np.ndarray]]:
            client = triton_aio.InferenceServerClient(server.address)
            try:
                async def one(x: np.ndarray) -> dict[str, np.ndarray]:
                    tensor = triton_aio.InferInput("x", list(x.shape), "FP32")
                    tensor.set_data_from_numpy(x)
                    result = await client.infer("row_sum", [tensor])
                    return {name: result.as_numpy(name) for name in ("total", "doubled")}

                return list(await asyncio.gather(*(one(x) for x in arrays)))
            finally:
                await client.close()

        for x, out in zip(arrays, run(scenario())):
            np.testing.assert_allclose(out["doubled"], 2 * x, rtol=1e-6)
            np.testing.assert_allclose(out["total"], x.sum(axis=1), rtol=1e-5, atol=1e-5)
        stats = httpx.get(server.url + "/v2/models/row_sum/stats").json()["model_stats"][0]
        assert stats["execution_count"] < len(arrays)  # mixed lengths really shared batches
        metrics = httpx.get(server.url + "/metrics").text
        padded = [line for line in metrics.splitlines() if line.startswith("servecore_batch_padding_elements_total")]
        assert padded and float(padded[0].rsplit(" ", 1)[1]) > 0
