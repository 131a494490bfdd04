"""``/metrics``: Prometheus text with per-model request counts, latency histograms, the in-flight
gauge, HTTP errors and the build (version and active core)."""

from __future__ import annotations

import asyncio
import importlib.util
import re
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import numpy as np
import pytest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from backends import GatedBackend
from servecore import __version__, hookimpl
from servecore.codec import pure_python_requested
from servecore.config import ServeConfig
from servecore.dataplane import DataPlane
from servecore.plugins import get_plugin_manager
from servecore.types import InferenceRequest, InferInput
from server_process import ServerProcess

HISTOGRAMS = ("servecore_request_duration_seconds", "servecore_queue_duration_seconds", "servecore_compute_duration_seconds")


def add_sub_body(rows0: int = 1, rows1: int = 1) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "INPUT0", "shape": [rows0, 16], "datatype": "FP32", "data": [1.0] * (16 * rows0)},
            {"name": "INPUT1", "shape": [rows1, 16], "datatype": "FP32", "data": [2.0] * (16 * rows1)},
        ]
    }


def scrape(server: ServerProcess) -> tuple[httpx.Response, list[Sample]]:
    response = httpx.get(server.url + "/metrics", timeout=30)
    samples = [s for family in text_string_to_metric_families(response.text) for s in family.samples]
    return response, samples


def value(samples: list[Sample], name: str, **labels: str) -> float:
    found = [s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, f"{name}{labels}: {found}"
    return found[0]


@pytest.fixture(scope="module")
def traffic(model_paths: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server that has answered 3 successes, 1 model failure, 1 invalid request and 1 unknown model."""
    args = [str(model_paths["add_sub"]), str(model_paths["identity_fp32"])]
    with ServerProcess(args, log_dir=tmp_path_factory.mktemp("logs")) as server:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for _ in range(3):
                assert client.post("/v2/models/add_sub/infer", json=add_sub_body()).status_code == 200
            # shapes each match [batch, 16] but cannot be added: onnxruntime fails, a model failure
            assert client.post("/v2/models/add_sub/infer", json=add_sub_body(2, 3)).status_code == 500
            invalid = add_sub_body()
            invalid["inputs"][0]["datatype"] = "INT32"  # well-formed, but not the model's datatype
            invalid["inputs"][0]["data"] = [int(v) for v in invalid["inputs"][0]["data"]]
            assert client.post("/v2/models/add_sub/infer", json=invalid).status_code == 400
            assert client.post("/v2/models/nope/infer", json=add_sub_body()).status_code == 404
        yield server


def test_prometheus_text_format(traffic: ServerProcess) -> None:
    response, samples = scrape(traffic)
    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    assert CONTENT_TYPE_LATEST.startswith("text/plain; version=")
    assert re.search(r"^# TYPE servecore_requests(_total)? counter$", response.text, re.M)
    assert re.search(r"^# TYPE servecore_request_duration_seconds histogram$", response.text, re.M)
    assert samples


def test_requests_by_model_version_and_outcome(traffic: ServerProcess) -> None:
    _, samples = scrape(traffic)
    assert value(samples, "servecore_requests_total", model="add_sub", version="1", outcome="success") == 3
    assert value(samples, "servecore_requests_total", model="add_sub", version="1", outcome="failure") == 1
    # refused by validation against the model's signature (the datatype mismatch)
    assert value(samples, "servecore_requests_total", model="add_sub", version="1", outcome="invalid") == 1
    # a model that has served nothing has its series, at zero
    idle = [s for s in samples if s.name == "servecore_requests_total" and s.labels.get("model") == "identity_fp32"]
    assert idle and all(s.value == 0 for s in idle)


def test_failures_are_counted_as_http_errors_too(traffic: ServerProcess) -> None:
    _, samples = scrape(traffic)
    assert value(samples, "servecore_http_errors_total", status="500") == 1
    assert value(samples, "servecore_http_errors_total", status="400") == 1
    assert value(samples, "servecore_http_errors_total", status="404") == 1


@pytest.mark.parametrize("name", HISTOGRAMS)
def test_latency_histograms(traffic: ServerProcess, name: str) -> None:
    _, samples = scrape(traffic)
    labels = {"model": "add_sub", "version": "1"}
    count = value(samples, f"{name}_count", **labels)
    # the request histogram also times the failure; queue and compute only what ran to completion
    assert count == (4 if name == "servecore_request_duration_seconds" else 3)
    total = value(samples, f"{name}_sum", **labels)
    assert total >= 0
    buckets = sorted(
        ((float(s.labels["le"]), s.value) for s in samples if s.name == f"{name}_bucket" and s.labels.get("model") == "add_sub"),
    )
    assert buckets[-1] == (float("inf"), count)
    counts = [c for _, c in buckets]
    assert counts == sorted(counts), "cumulative buckets must not decrease"
    assert buckets[0][0] <= 0.0001 and 10.0 in [b for b, _ in buckets]
    if name != "servecore_queue_duration_seconds":
        assert total > 0


def test_inflight_gauge_is_zero_when_idle(traffic: ServerProcess) -> None:
    _, samples = scrape(traffic)
    assert value(samples, "servecore_inflight_requests") == 0


def test_build_info_names_version_and_core(traffic: ServerProcess) -> None:
    _, samples = scrape(traffic)
    core = "python" if pure_python_requested() or not importlib.util.find_spec("servecore._native.codec") else "native"
    assert value(samples, "servecore_build_info", version=__version__, core=core) == 1


def test_metrics_need_no_model_traffic(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server([])
    _, samples = scrape(server)
    assert value(samples, "servecore_inflight_requests") == 0
    # every served version has its series from the start (rate() works from the first scrape)
    counts = [s for s in samples if s.name == "servecore_requests_total"]
    assert counts and all(s.value == 0 for s in counts)
    states = {(s.labels["model"], s.labels["state"]): s.value for s in samples if s.name == "servecore_model_state"}
    assert states[("mlp", "ready")] == 1 and states[("mlp", "loading")] == 0


def test_inflight_gauge_counts_running_requests(tmp_path: Path) -> None:
    """In-process: the gauge is 1 while a request runs in its model, and back to 0 after."""
    backend = GatedBackend()

    class Plugin:
        @hookimpl
        def servecore_register_backends(self, register: Any) -> None:
            register("held", lambda source, config: backend, suffixes=(".held",))

    (tmp_path / "m.held").touch()
    pm = get_plugin_manager(load_entrypoints=False, extra_plugins=[("held", Plugin())])
    dp = DataPlane(config=ServeConfig(models=(str(tmp_path / "m.held"),), warmup=False), pm=pm)
    dp.load_models()

    def gauge() -> float:
        samples = [s for f in text_string_to_metric_families(dp.metrics.render().decode()) for s in f.samples]
        return value(samples, "servecore_inflight_requests")

    async def scenario() -> list[float]:
        x = np.arange(3, dtype=np.float32)
        request = InferenceRequest("m", None, [InferInput("x", "FP32", (3,), x)])
        seen = [gauge()]
        task = asyncio.ensure_future(dp.infer(request))
        assert await asyncio.to_thread(backend.started.wait, 30)
        seen.append(gauge())
        backend.release.set()
        response = await task
        assert response.outputs[0].data.tolist() == [0.0, 1.0, 2.0]
        seen.append(gauge())
        return seen

    try:
        assert asyncio.run(scenario()) == [0, 1, 0]
    finally:
        backend.release.set()
        dp.close()
    samples = [s for f in text_string_to_metric_families(dp.metrics.render().decode()) for s in f.samples]
    assert value(samples, "servecore_requests_total", model="m", version="1", outcome="success") == 1
