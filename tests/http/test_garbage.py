"""Requests leave no reference cycles behind: each one's objects go the moment it is answered.

A request whose objects sit in a reference cycle (its scope, its body, its tensors) is freed
only by the cyclic garbage collector, which then runs every few hundred requests over everything
young: measured on the batching server, gen-0 collections of ~0.6 ms freeing whole requests in
bulk, a quarter of the server's CPU time per request gone to allocation and collection. The
server here runs under ``tests/gc_probe.py`` (``gc.DEBUG_SAVEALL``: whatever the collector finds
unreachable is kept and counted, not freed). The count is taken after a round of good and bad
requests, and again after a second round: the second round must add (next to) nothing, whatever
the number of requests, on the fast path, through the ASGI app, and for a model that does not batch.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from checks import eventually
from gc_probe import FILE_ENV
from server_process import ServerProcess
from test_bad_input import binary_request, tensor
from test_batching import batch_models  # noqa: F401  (fixture)

PROBE = Path(__file__).resolve().parents[1] / "gc_probe.py"
#: requests of each kind in each round
ROUNDS = 40
#: cyclic garbage objects a round may add in all, however many requests it makes
SLACK = 10


class GarbageServer(ServerProcess):
    """servecore under tests/gc_probe.py."""

    def __init__(self, args: list[str], *, log_dir: Path) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.report_path = log_dir / f"gc-{os.getpid()}-{id(self)}.json"
        super().__init__(args, env={FILE_ENV: str(self.report_path)}, log_dir=log_dir)
        self.args[1:3] = [str(PROBE)]

    def garbage(self) -> dict[str, object]:
        assert self.proc is not None
        self.report_path.unlink(missing_ok=True)
        self.proc.send_signal(signal.SIGUSR1)
        eventually(self.report_path.exists, "the garbage report", timeout=30)
        return json.loads(self.report_path.read_text())


@pytest.fixture(scope="module", params=["fast-path", "asgi", "unbatched"])
def gc_server(request: pytest.FixtureRequest, batch_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[GarbageServer]:  # noqa: F811
    args = [str(batch_models["identity_fp32"]), str(batch_models["mlp"])]
    if request.param != "unbatched":
        args += ["--max-batch-size", "8", "--max-queue-delay-us", "0"]
    if request.param == "asgi":
        args.append("--no-fast-path")
    with GarbageServer(args, log_dir=tmp_path_factory.mktemp("logs")) as server:
        yield server


def mixed_requests(client: httpx.Client, n: int) -> None:
    """*n* of each: JSON and binary inferences, bad ones of several kinds, metadata, health."""
    infer = "/v2/models/identity_fp32/infer"
    for i in range(n):
        data = [float(i), 2.0, 3.0]
        good = client.post(infer, json={"inputs": [tensor(data=data)]})
        assert good.status_code == 200, good.text
        assert good.json()["outputs"][0]["data"] == data
        body, headers = binary_request(
            {"inputs": [tensor(binary_data_size=12)], "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}]},
            np.asarray(data, dtype=np.float32).tobytes(),
        )
        binary = client.post(infer, content=body, headers=headers)
        assert binary.status_code == 200, binary.text
        assert client.post(infer, content=b"{not json").status_code == 400
        assert client.post(infer, json={"inputs": [tensor(data=[1.0] * 4)]}).status_code == 400
        assert client.post("/v2/models/nope/infer", json={"inputs": [tensor(data=data)]}).status_code == 404
        assert client.get("/v2/models/identity_fp32").status_code == 200
        assert client.get("/v2/health/ready").status_code == 200


def test_requests_leave_no_cyclic_garbage(gc_server: GarbageServer) -> None:
    with httpx.Client(base_url=gc_server.url, timeout=30) as client:
        mixed_requests(client, ROUNDS)  # first uses: caches, lazily built objects
        gc_server.garbage()  # ... and the report's own first run
        before = gc_server.garbage()
        mixed_requests(client, ROUNDS)
        after = gc_server.garbage()
    grown = int(after["garbage"]) - int(before["garbage"])  # type: ignore[call-overload]
    types_before: dict[str, int] = before["types"]  # type: ignore[assignment]
    types_after: dict[str, int] = after["types"]  # type: ignore[assignment]
    new = {k: v - types_before.get(k, 0) for k, v in types_after.items() if v > types_before.get(k, 0)}
    assert grown <= SLACK, f"{grown} objects in reference cycles after {7 * ROUNDS} requests: {new}"


def test_connections_leave_no_cyclic_garbage(gc_server: GarbageServer) -> None:
    """One request per connection (clients without keep-alive, probes): each connection's objects
    go when it closes, on either side."""
    body = {"inputs": [tensor(data=[1.0, 2.0, 3.0])]}

    def churn() -> None:
        for _ in range(ROUNDS):
            with httpx.Client(base_url=gc_server.url, timeout=30) as client:
                assert client.post("/v2/models/identity_fp32/infer", json=body).status_code == 200
            with httpx.Client(base_url=gc_server.url, timeout=30, headers={"Connection": "close"}) as client:
                assert client.get("/v2/health/ready").status_code == 200

    churn()
    gc_server.garbage()
    before = gc_server.garbage()
    churn()
    time.sleep(0.5)  # the server sees the last connections close
    after = gc_server.garbage()
    grown = int(after["garbage"]) - int(before["garbage"])  # type: ignore[call-overload]
    types_before: dict[str, int] = before["types"]  # type: ignore[assignment]
    new = {k: v - types_before.get(k, 0) for k, v in after["types"].items() if v > types_before.get(k, 0)}  # type: ignore[union-attr]
    assert grown <= SLACK, f"{grown} objects in reference cycles after {2 * ROUNDS} connections: {new}"

