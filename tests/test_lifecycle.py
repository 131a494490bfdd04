"""Shutdown and liveness of a real server while a slow request runs.

SIGTERM/SIGINT: readiness turns false at once, no new connections are accepted, the in-flight
request finishes, and the process exits 0; ``--graceful-timeout`` bounds the wait (a request
outliving it is abandoned, exit code 3). The health probes answer while a model computes.

The slow model repeats a MatMul+Relu step as many times as the request's ``n`` input says
(an ONNX ``Loop``), so one small model gives requests of any duration on any machine: each test
first measures a step here and asks for about a second of compute. Timing assertions are relative
to that measured time, never absolute.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import httpx
import numpy as np
import pytest

import models
from backends import GatedBackend
from servecore import hookimpl
from servecore.config import ServeConfig
from servecore.dataplane import DataPlane
from servecore.plugins import get_plugin_manager
from servecore.server import ABANDONED
from servecore.types import ModelEvent
from server_process import ServerProcess

WIDTH = 256
ROWS = 256
TARGET_SECONDS = 1.0  # compute time of a "slow" request
Start = Callable[..., ServerProcess]


def looped(path: Path, width: int = WIDTH) -> Path:
    """y = (x -> Relu(x @ W)) applied ``n`` times: FP32 x [batch, width], INT64 scalar n."""
    return models.looped(path, width, seed=1)


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return looped(tmp_path_factory.mktemp("slow") / "slow.onnx")


def infer_request(steps: int) -> tuple[bytes, dict[str, str]]:
    """A request for *steps* steps: x as binary tensor data, n as JSON."""
    data = np.full((ROWS, WIDTH), 0.5, dtype=np.float32).tobytes()
    header = json.dumps(
        {
            "inputs": [
                {"name": "x", "shape": [ROWS, WIDTH], "datatype": "FP32", "parameters": {"binary_data_size": len(data)}},
                {"name": "n", "shape": [], "datatype": "INT64", "data": [steps]},
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    return header + data, {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"}


@dataclass
class InFlight:
    """A request running on its own thread; ``status`` is the HTTP status or the transport error."""

    url: str
    steps: int
    status: int | str | None = None
    elapsed: float = 0.0
    done_at: float = 0.0
    thread: threading.Thread = field(init=False)

    def __post_init__(self) -> None:
        self.body, self.headers = infer_request(self.steps)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        start = time.monotonic()
        try:
            response = httpx.post(self.url + "/v2/models/slow/infer", content=self.body, headers=self.headers, timeout=300)
            self.status = response.status_code
        except httpx.TransportError as exc:
            self.status = type(exc).__name__
        self.done_at = time.monotonic()
        self.elapsed = self.done_at - start

    def start(self) -> InFlight:
        self.thread.start()
        return self

    def join(self, timeout: float = 300) -> InFlight:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the request never finished"
        return self


def calibrate(server: ServerProcess) -> tuple[int, float]:
    """Steps for a request of at least TARGET_SECONDS here, and that request's measured duration."""
    assert InFlight(server.url, 1).start().join().status == 200  # warm-up
    steps = 20
    for _ in range(10):
        measured = InFlight(server.url, steps).start().join()
        assert measured.status == 200
        if measured.elapsed >= TARGET_SECONDS:
            return steps, measured.elapsed
        steps = int(steps * min(20.0, 1.25 * TARGET_SECONDS / max(measured.elapsed, 0.01))) + 1
    raise AssertionError(f"{steps} steps still take under {TARGET_SECONDS}s")


def inflight_gauge(server: ServerProcess) -> float:
    for line in httpx.get(server.url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("servecore_inflight_requests "):
            return float(line.split()[1])
    raise AssertionError("no servecore_inflight_requests in /metrics")


def wait_until_computing(server: ServerProcess, request: InFlight, timeout: float = 60) -> None:
    """Until the server has handed *request* to its model (the in-flight gauge says 1)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert request.thread.is_alive(), f"request finished early: {request.status}"
        if inflight_gauge(server) >= 1:
            return
        time.sleep(0.005)
    raise AssertionError("the request never reached the model")


class ReadinessPoller(threading.Thread):
    """Polls /v2/health/ready on fresh connections; records (time, status or error name)."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.answers: list[tuple[float, int | str]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                answer: int | str = httpx.get(self.url + "/v2/health/ready", timeout=5).status_code
            except httpx.TransportError as exc:
                answer = type(exc).__name__
            self.answers.append((time.monotonic(), answer))
            time.sleep(0.01)

    def first_not_ready(self, after: float) -> float | None:
        return next((t for t, a in self.answers if t >= after and a != 200), None)


def refuses_new_connections(server: ServerProcess, within: float = 5.0) -> bool:
    """Whether new connections are refused, allowing *within* seconds for it: uvicorn closes its
    listening socket on its next tick (every 0.1 s) after the signal, while readiness turns false
    at once (and inference answers 503 in between)."""
    deadline = time.monotonic() + within
    while True:
        try:
            httpx.get(server.url + "/v2/health/live", timeout=5)
        except httpx.ConnectError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_drains_in_flight_request(start_server: Start, slow_model: Path, sig: signal.Signals) -> None:
    server = start_server([str(slow_model)])
    steps, compute = calibrate(server)

    request = InFlight(server.url, steps).start()
    wait_until_computing(server, request)
    poller = ReadinessPoller(server.url)
    poller.start()
    time.sleep(0.05)
    signalled = time.monotonic()
    server.signal(sig)

    # readiness turns false (or the socket is gone) long before the request is done
    deadline = signalled + compute
    while poller.first_not_ready(signalled) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    not_ready_at = poller.first_not_ready(signalled)
    assert not_ready_at is not None, "readiness never turned false"
    assert not_ready_at - signalled < compute / 2
    assert request.thread.is_alive(), "the request finished before the check: the model is too fast here"
    assert refuses_new_connections(server, within=compute / 4)  # while the request still runs

    code = server.wait(60)
    exited = time.monotonic()
    poller.stop.set()
    request.join()
    assert request.status == 200, f"in-flight request: {request.status}\n{server.stderr()}"
    assert not_ready_at < request.done_at
    assert code == 0, server.stderr()
    assert exited >= request.done_at - 0.5  # the process waited for the request
    assert all(a == 200 for t, a in poller.answers if t < signalled)
    assert "readiness is now false" in server.stderr()


def test_graceful_timeout_bounds_the_wait(start_server: Start, slow_model: Path) -> None:
    """A request outliving --graceful-timeout is abandoned: the process exits without waiting."""
    server = start_server([str(slow_model), "--graceful-timeout", "1"])
    steps, compute = calibrate(server)
    factor = 30  # the very slow request takes about thirty times the measured compute
    request = InFlight(server.url, factor * steps).start()
    wait_until_computing(server, request)
    signalled = time.monotonic()
    server.signal(signal.SIGTERM)
    code = server.wait(120)
    exited = time.monotonic() - signalled
    request.join()
    assert exited < 1 + max(2.0, compute), f"exited {exited:.1f}s after SIGTERM (compute {compute:.1f}s)"
    assert exited < factor * compute / 2, "the process waited for the very slow request"
    assert request.status != 200  # abandoned: 500, or the connection closed
    assert code == ABANDONED == 3, server.stderr()
    assert "abandoned" in server.stderr()


def test_health_probes_stay_fast_while_a_model_computes(start_server: Start, slow_model: Path) -> None:
    server = start_server([str(slow_model)])
    steps, compute = calibrate(server)
    request = InFlight(server.url, steps).start()
    wait_until_computing(server, request)
    timings = []
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for _ in range(5):
            start = time.monotonic()
            assert client.get("/v2/health/live").status_code == 200
            assert client.get("/v2/health/ready").status_code == 200
            timings.append(time.monotonic() - start)
    assert request.thread.is_alive(), "the model finished before the probes: it is too fast here"
    request.join()
    assert request.status == 200
    assert max(timings) < compute / 4, f"probes took {max(timings):.3f}s; compute is {compute:.3f}s"


def test_readiness_on_a_kept_alive_connection_during_shutdown(start_server: Start, slow_model: Path) -> None:
    """A client already connected sees readiness false (with --not-ready-status) or a closed connection."""
    server = start_server([str(slow_model), "--not-ready-status", "503"])
    steps, _ = calibrate(server)
    request = InFlight(server.url, steps).start()
    wait_until_computing(server, request)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.get("/v2/models/slow/ready").status_code == 200
        server.signal(signal.SIGTERM)
        time.sleep(0.1)
        for path in ("/v2/health/ready", "/v2/models/slow/ready"):
            try:
                answer: Any = client.get(path).status_code
            except httpx.TransportError:
                answer = "closed"
            assert answer in (503, "closed"), path
    request.join()
    assert request.status == 200
    assert server.wait(60) == 0


# -- unloading, in-process -------------------------------------------------------------------------


class BlockingPlugin:
    def __init__(self) -> None:
        self.backend = GatedBackend()
        self.events: list[ModelEvent] = []

    @hookimpl
    def servecore_register_backends(self, register: Any) -> None:
        register("blocking", lambda source, config: self.backend, suffixes=(".block",))

    @hookimpl
    def servecore_on_model_event(self, event: ModelEvent) -> None:
        self.events.append(event)


def _blocking_dataplane(tmp_path: Path) -> tuple[DataPlane, BlockingPlugin]:
    path = tmp_path / "held.block"
    path.touch()
    plugin = BlockingPlugin()
    pm = get_plugin_manager(load_entrypoints=False, extra_plugins=[("blocking", plugin)])
    dp = DataPlane(config=ServeConfig(models=(str(path),), warmup=False), pm=pm)
    dp.load_models()
    return dp, plugin


def test_close_waits_for_a_running_call(tmp_path: Path) -> None:
    dp, plugin = _blocking_dataplane(tmp_path)
    model = dp.model("held", None)
    call = model.executor.submit(plugin.backend.infer, {"x": np.zeros(1)}, ["x"])
    assert plugin.backend.started.wait(10)
    threading.Timer(0.3, plugin.backend.release.set).start()
    started = time.monotonic()
    assert dp.close() == 0
    assert time.monotonic() - started >= 0.2
    assert call.done() and plugin.backend.closed
    assert plugin.events[-1] == ModelEvent("held", "1", "unloaded", backend="blocking")


def test_close_abandons_a_call_that_outlives_the_timeout(tmp_path: Path) -> None:
    dp, plugin = _blocking_dataplane(tmp_path)
    model = dp.model("held", None)
    call = model.executor.submit(plugin.backend.infer, {"x": np.zeros(1)}, ["x"])
    assert plugin.backend.started.wait(10)
    try:
        started = time.monotonic()
        assert dp.close(timeout=0.2) == 1
        assert time.monotonic() - started < 5
        assert not call.done()
        assert not plugin.backend.closed, "the backend is still in use: it must not be closed"
        last = plugin.events[-1]
        assert (last.state, last.backend) == ("unloaded", "blocking") and "abandoned" in last.reason
        assert len(dp.models) == 0
    finally:
        plugin.backend.release.set()
    call.result(10)
