"""The repository API (explicit mode) and who may use it, idle unload, memory over load/unload
cycles, and version swaps under continuous load, against a real server."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException
from prometheus_client.parser import text_string_to_metric_families

from models import add_constant
from server_process import ServerProcess
from checks import eventually
from test_repository import X, answer, infer, put_version, states


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    put_version(root, "m", 1)
    put_version(root, "other", 5)
    return root




def post(url: str, path: str, key: str | None = None, **body: object) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(url + path, json=body or None, headers=headers, timeout=60)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_explicit_mode_loads_and_unloads(repo: Path, serve: Callable[..., ServerProcess]) -> None:
    server = serve(str(repo), "--model-control", "explicit")
    url = server.url
    assert post(url, "/v2/repository/models/m/unload").status_code == 200
    assert states(url, "m")["1"][0] == "UNLOADED"
    response = infer(url, "m")
    assert response.status_code == 404 and "error" in response.json()
    assert answer(infer(url, "other")) == ("5", 5.0), "the other model is untouched"
    assert post(url, "/v2/repository/models/m/load").status_code == 200
    assert answer(infer(url, "m")) == ("1", 1.0)
    # a version copied in is picked up by the next explicit load, not before
    put_version(repo, "m", 2)
    time.sleep(0.3)
    assert answer(infer(url, "m")) == ("1", 1.0)
    assert post(url, "/v2/repository/models/m/load").status_code == 200
    assert answer(infer(url, "m")) == ("2", 2.0)
    # bad requests are protocol errors and nothing changes
    for path, status in (
        ("/v2/repository/models/nope/load", 404),
        ("/v2/repository/models/nope/unload", 404),
    ):
        response = post(url, path)
        assert response.status_code == status and "nope" in response.json()["error"]
    response = post(url, "/v2/repository/models/m/load", parameters={"config": "{}"})
    assert response.status_code == 400 and "'config' is not supported" in response.json()["error"]
    response = httpx.post(url + "/v2/repository/index", content=b"{not json", timeout=10)
    assert response.status_code == 400 and "error" in response.json()
    # tritonclient's repository calls work unchanged
    client = triton.InferenceServerClient(server.address)
    client.unload_model("other", unload_dependents=True)
    assert not client.is_model_ready("other")
    assert infer(url, "other").status_code == 404
    client.load_model("other")
    assert client.is_model_ready("other")
    with pytest.raises(InferenceServerException, match="nope"):
        client.load_model("nope")
    # a corrupt artefact fails the load with the reason; the served version stays
    (repo / "m" / "3").mkdir()
    (repo / "m" / "3" / "model.onnx").write_bytes(b"corrupt")
    response = post(url, "/v2/repository/models/m/load")
    assert response.status_code == 400 and "model.onnx" in response.json()["error"]
    assert answer(infer(url, "m")) == ("2", 2.0)


def test_the_api_is_refused_without_explicit_mode(repo: Path, serve: Callable[..., ServerProcess]) -> None:
    server = serve(str(repo))
    response = post(server.url, "/v2/repository/models/m/unload")
    assert response.status_code == 400 and "--model-control explicit" in response.json()["error"]
    assert answer(infer(server.url, "m")) == ("1", 1.0)


def test_with_api_keys_only_model_admins_may_load_and_unload(
    repo: Path, serve: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    keys.write_text("ops:ops-key\nreader:reader-key\n")
    server = serve(str(repo), "--model-control", "explicit", "--api-keys-file", str(keys), "--model-admins", "ops")
    url = server.url
    assert post(url, "/v2/repository/models/m/unload").status_code == 401
    response = post(url, "/v2/repository/models/m/unload", key="reader-key")
    assert response.status_code == 403 and "reader may not" in response.json()["error"]
    assert post(url, "/v2/repository/index", key="reader-key").status_code == 200
    assert post(url, "/v2/repository/models/m/unload", key="ops-key").status_code == 200
    assert post(url, "/v2/repository/models/m/load", key="ops-key").status_code == 200


def test_an_idle_model_is_unloaded_and_comes_back_on_the_next_request(
    repo: Path, serve: Callable[..., ServerProcess]
) -> None:
    server = serve(str(repo), "--idle-unload-seconds", "0.3")
    url = server.url
    assert answer(infer(url, "m")) == ("1", 1.0)
    eventually(lambda: states(url, "m")["1"] == ("UNLOADED", "idle"), "the idle model to unload")
    assert httpx.get(url + "/v2/health/ready").status_code == 200, "an idle model still counts as servable"
    assert httpx.get(url + "/v2/models/m/ready").status_code == 200
    assert answer(infer(url, "m")) == ("1", 1.0)
    assert states(url, "m")["1"][0] == "READY"
    samples = [s for f in text_string_to_metric_families(httpx.get(url + "/metrics").text) for s in f.samples]
    cold = [s for s in samples if s.name == "servecore_model_cold_start_seconds_count" and s.labels["model"] == "m"]
    assert cold and cold[0].value >= 1
    # concurrent requests on a sleeping model wait for one reload, and all succeed
    eventually(lambda: states(url, "m")["1"][0] == "UNLOADED", "the model to sleep again")
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(infer(url, "m").status_code)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [200] * 8


def test_load_unload_cycles_return_their_memory(repo: Path, serve: Callable[..., ServerProcess], tmp_path: Path) -> None:
    # a model big enough to see: 64 MB of weights
    from models import slow

    big = tmp_path / "big" / "1"
    big.mkdir(parents=True)
    slow(big / "model.onnx", width=1024, layers=16)
    server = serve(str(tmp_path / "big"), "--model-control", "explicit", "--model-name", "big")
    assert server.proc is not None
    url = server.url

    def cycle() -> None:
        assert post(url, "/v2/repository/models/big/unload").status_code == 200
        assert post(url, "/v2/repository/models/big/load").status_code == 200

    def settled_rss() -> int:
        """The lowest of a few readings: a freed session's pages may take a moment to go."""
        readings = []
        for _ in range(3):
            time.sleep(0.2)
            readings.append(rss_kib(server.proc.pid))  # type: ignore[union-attr]
        return min(readings)

    cycle()
    after_first = settled_rss()
    history = []
    for _ in range(49):
        cycle()
        history.append(rss_kib(server.proc.pid))
    after_fifty = settled_rss()
    assert after_fifty <= after_first * 1.10, (
        f"RSS grew from {after_first} KiB after the first cycle to {after_fifty} KiB after 50 "
        f"(every 10th cycle: {history[::10]})"
    )


def test_twenty_version_swaps_under_load_fail_no_request(repo: Path, serve: Callable[..., ServerProcess]) -> None:
    """Clients hammer the unversioned route while versions 2..21 are copied in and old ones
    deleted: every request succeeds, and each answer comes from the version it names (x + v),
    a version that was in the repository while the request ran."""
    server = serve(str(repo), "--model-control", "poll", "--poll-interval", "0.05")
    url = server.url
    present: dict[int, tuple[float, float]] = {1: (0.0, float("inf"))}  # version -> (added, removed)
    lock = threading.Lock()
    stop = threading.Event()
    failures: list[str] = []
    answers: list[tuple[float, float, int, float]] = []

    def client() -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            while not stop.is_set():
                sent = time.monotonic()
                body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": X}]}
                try:
                    response = http.post("/v2/models/m/infer", json=body)
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                    continue
                if response.status_code != 200:
                    failures.append(response.text)
                    continue
                doc = response.json()
                with lock:
                    answers.append((sent, time.monotonic(), int(doc["model_version"]), doc["outputs"][0]["data"][0] - X[0][0]))

    clients = [threading.Thread(target=client) for _ in range(4)]
    for t in clients:
        t.start()
    try:
        eventually(lambda: len(answers) >= 8, "the clients to get answers from version 1")
        for version in range(2, 22):
            put_version(repo, "m", version)
            now = time.monotonic()
            with lock:
                present[version] = (now, float("inf"))
            eventually(lambda: answer(infer(url, "m"))[0] == str(version), f"version {version} to serve", timeout=30)
            old = repo / "m" / str(version - 1)
            for f in old.iterdir():
                os.remove(f)
            old.rmdir()
            with lock:
                present[version - 1] = (present[version - 1][0], time.monotonic())
        time.sleep(0.3)
    finally:
        stop.set()
        for t in clients:
            t.join(30)
    assert not failures, f"{len(failures)} failed requests, first: {failures[0]}"
    assert len(answers) > 100
    for sent, received, version, added in answers:
        assert added == version, f"version {version} answered with x + {added}"
        start, end = present[version]
        # the version existed in the repository at some moment while the request was in flight
        assert start <= received and end >= sent, f"version {version} answered outside its lifetime"
    assert {version for _, _, version, _ in answers} >= {1, 21}
    eventually(lambda: all(s[0] == "UNLOADED" for v, s in states(url, "m").items() if v != "21"), "old versions to unload")


@pytest.mark.parametrize(("binary", "width"), [(True, 4), (False, 256)], ids=["binary-header", "json-document"])
def test_a_remembered_header_is_checked_again_against_a_reloaded_model(
    repo: Path, serve: Callable[..., ServerProcess], binary: bool, width: int
) -> None:
    """The fast path remembers what validating a request header against a model version found
    (tritonclient sends the same one every time): a binary request's JSON header, or a JSON
    request's document once the compiled core has set its numbers aside (256 of them: a document
    over the 2 kB the scanner needs). A version loaded later, with other input dimensions,
    validates the same header afresh: 400, not the old version's verdict."""
    os.replace(add_constant(repo / "m" / "1" / "model.onnx.tmp", 1.0, width=width), repo / "m" / "1" / "model.onnx")
    server = serve(str(repo), "--model-control", "explicit", "--max-batch-size", "8", "--max-queue-delay-us", "0")
    client = triton.InferenceServerClient(server.address)
    rng = np.random.default_rng(3)

    def call(x: np.ndarray) -> np.ndarray:
        tensor = triton.InferInput("x", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=binary)
        result = client.infer("m", [tensor], outputs=[triton.InferRequestedOutput("y", binary_data=binary)])
        return result.as_numpy("y")

    for _ in range(3):  # the first validates, the others use what it found
        x = rng.standard_normal((1, width)).astype(np.float32)
        np.testing.assert_array_equal(call(x), x + np.float32(1))
    (repo / "m" / "2").mkdir()
    os.replace(add_constant(repo / "m" / "2" / "model.onnx.tmp", 2.0, width=2 * width), repo / "m" / "2" / "model.onnx")
    assert post(server.url, "/v2/repository/models/m/load").status_code == 200
    assert states(server.url, "m")["2"][0] == "READY"
    for _ in range(2):
        with pytest.raises(InferenceServerException) as info:
            call(rng.standard_normal((1, width)).astype(np.float32))
        assert info.value.status() == "400" and "shape" in str(info.value), str(info.value)
    for _ in range(2):
        x = rng.standard_normal((1, 2 * width)).astype(np.float32)
        np.testing.assert_array_equal(call(x), x + np.float32(2))
