"""--model-cpus: model threads on their CPUs, the event loop on the others (servecore.affinity).

The server test reads each thread's allowed CPUs from /proc after a batched and an unbatched
model have run, in a real server process; it needs two CPUs this process may use.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from models import mlp
from servecore.affinity import AffinityError, parse_cpus, placement, restricted_cpu_count
from server_process import ServerProcess

Start = Callable[..., ServerProcess]


@pytest.mark.parametrize(
    ("text", "cpus"),
    [("", set()), ("0", {0}), ("0,2-3", {0, 2, 3}), (" 1 , 1 ", {1}), ("4-4", {4}), ("0,", {0})],
)
def test_parse_cpus(text: str, cpus: set[int]) -> None:
    assert parse_cpus(text) == cpus


@pytest.mark.parametrize("text", ["a", "3-1", "1-", "-1", ",", "1.5", "0-x"])
def test_parse_cpus_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_cpus(text)


def test_placement_refuses_cpus_this_process_cannot_use() -> None:
    allowed = sorted(os.sched_getaffinity(0))
    with pytest.raises(AffinityError, match="not available to this process"):
        placement(str(max(allowed) + 1000))
    with pytest.raises(AffinityError, match="leaves no CPU for the event loop"):
        placement(",".join(map(str, allowed)))
    assert placement("") is None


def _allowed_by_thread(pid: int) -> tuple[list[frozenset[int]], frozenset[int]]:
    """The CPUs each thread of *pid* but its main thread may use, and the main thread's."""
    others: list[frozenset[int]] = []
    main: frozenset[int] = frozenset()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
        except OSError:  # the thread ended
            continue
        line = next(line for line in status.splitlines() if line.startswith("Cpus_allowed_list"))
        cpus = parse_cpus(line.split(":", 1)[1].strip())
        if tid == str(pid):
            main = cpus
        else:
            others.append(cpus)
    return others, main


def _post(url: str, model: str, body: dict[str, object]) -> None:
    response = httpx.post(f"{url}/v2/models/{model}/infer", json=body, timeout=30)
    assert response.status_code == 200, response.text


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_model_threads_and_event_loop_are_pinned(start_server: Start, model_paths: dict[str, Path], tmp_path: Path) -> None:
    allowed = frozenset(os.sched_getaffinity(0))
    model_cpu = min(allowed)
    server = start_server([
        str(mlp(tmp_path / "mlp.onnx")), str(model_paths["fixed"]),
        "--max-batch-size", "4", "--model-cpus", str(model_cpu), "--inline-compute-us", "0",
    ])
    # mlp batches (its scheduler's worker thread runs it); fixed has no batch dimension (its own thread)
    _post(server.url, "mlp", {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 64}]})
    _post(server.url, "fixed", {"inputs": [{"name": "INPUT0", "shape": [2, 3], "datatype": "INT32", "data": list(range(6))}]})
    assert server.proc is not None
    pinned, main = _allowed_by_thread(server.proc.pid)
    # Python 3.11 does not name OS threads: the two model threads are the ones on the model CPU
    # (what the kernel reports as '0' or a range); the loader may have gone already.
    assert sum(1 for cpus in pinned if cpus == {model_cpu}) >= 2, pinned
    assert main == allowed - {model_cpu}


def test_unusable_model_cpus_stop_the_server_with_a_message(start_server: Start, model_paths: dict[str, Path]) -> None:
    server = start_server([str(model_paths["fixed"]), "--model-cpus", "4000"], expect_ready=False)
    assert server.wait(timeout=60) == 1
    assert "--model-cpus 4000: CPU(s) 4000 are not available to this process" in server.stderr()


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_a_confined_server_keeps_every_thread_on_its_cpus(model_paths: dict[str, Path], tmp_path: Path) -> None:
    """Under taskset, onnxruntime's own pool (its default: a thread per physical core, each pinned
    by onnxruntime) must not put threads on CPUs the process was not given."""
    cpu = min(os.sched_getaffinity(0))
    server = ServerProcess([str(mlp(tmp_path / "mlp.onnx")), "--max-batch-size", "8"], log_dir=tmp_path / "logs")
    server.args[:0] = ["taskset", "-c", str(cpu)]
    with server:
        _post(server.url, "mlp", {"inputs": [{"name": "input", "shape": [8, 64], "datatype": "FP32", "data": [0.5] * 512}]})
        assert server.proc is not None
        others, main = _allowed_by_thread(server.proc.pid)
    assert main == {cpu}
    assert all(cpus == {cpu} for cpus in others), others


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_restricted_cpu_count() -> None:
    """The --model-cpus list when there is one; else the CPUs taskset left the process."""
    assert restricted_cpu_count("0,2-3") == 3
    assert restricted_cpu_count("1") == 1
    cpu = min(os.sched_getaffinity(0))
    code = "from servecore.affinity import restricted_cpu_count as r; print(r(''), r('0-1'))"
    out = subprocess.run(
        ["taskset", "-c", str(cpu), sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert out == ["1", "2"]
