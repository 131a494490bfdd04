"""Dynamic batching in-process: the scheduler behind a :class:`~servecore.dataplane.DataPlane`.

Every test runs against both batching cores (the compiled one is skipped only when not built).
The backend is :class:`backends.RowwiseBackend`: each output row is a function of its input row,
every batch it runs is recorded, a marker row makes a batch fail, and a gate holds its instances
busy. Requests carry their own id in the first element of each row, so the recorded batches say
exactly which requests ran together and in which order, and any mix-up between requests shows.

No assertion depends on how long anything takes: requests are ordered with the gate and by
watching the queue; timeouts are only guards against hangs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from backends import RowwiseBackend, rowwise
from servecore import hookimpl
from servecore.batching import BatchingCore, load_batching
from servecore.batching.policy import BatchSettings
from servecore.batching.scheduler import Scheduler
from servecore.config import ServeConfig
from servecore.dataplane import DataPlane
from servecore.errors import (
    BackendError,
    DeadlineExceededError,
    InvalidInputError,
    ServecoreError,
    TooManyRequestsError,
)
from servecore.http.app import ServecoreApp
from servecore.plugins import get_plugin_manager
from servecore.types import InferenceRequest, InferenceResponse, InferInput

T = TypeVar("T")
MODEL = "rows"
#: hang guard of one scenario (seconds); nothing is expected to take more than a fraction of it
GUARD = 60.0


# -- cores and data planes ----------------------------------------------------------------------


@pytest.fixture(params=["python", "native"])
def pure_python(request: pytest.FixtureRequest) -> bool:
    """Which core the test's data plane uses (True: the pure-Python twin)."""
    if request.param == "native":
        if load_batching(pure_python=False).implementation != "native":
            pytest.skip("the compiled batching core is not built")
        return False
    return True


@pytest.fixture
def core(pure_python: bool) -> BatchingCore:
    return load_batching(pure_python=pure_python)


class Served:
    """A data plane serving :class:`RowwiseBackend` as model ``rows``, with batching options."""

    def __init__(self, tmp_path: Path, pure_python: bool, **options: Any) -> None:
        self.backend = backend = RowwiseBackend()

        class Plugin:
            @hookimpl
            def servecore_register_backends(self, register: Any) -> None:
                register("rowwise", lambda source, config: backend, suffixes=(".rows",))

        path = tmp_path / f"{MODEL}.rows"
        path.touch()
        options = {"max_batch_size": 8, "inline_compute_us": 0, **options}
        config = ServeConfig(models=(str(path),), pure_python=pure_python, warmup=False, **options)
        pm = get_plugin_manager(load_entrypoints=False, extra_plugins=[("rowwise", Plugin())])
        self.dp = DataPlane(config=config, pm=pm)
        self.dp.load_models()
        self.model = self.dp.model(MODEL, None)
        assert self.model.scheduler is not None
        self.scheduler = self.model.scheduler
        assert self.scheduler.core.implementation == ("python" if pure_python else "native")

    def close(self) -> None:
        self.backend.gate.set()
        self.dp.close(timeout=10)

    # -- requests ---------------------------------------------------------------------------------

    def infer(self, x: np.ndarray, **parameters: Any) -> Awaitable[InferenceResponse]:
        return self.dp.infer(request(x, **parameters))

    def submit(self, x: np.ndarray, **parameters: Any) -> asyncio.Task[InferenceResponse]:
        """Start a request as a task (it queues at the next turn of the loop)."""
        return asyncio.ensure_future(self.infer(x, **parameters))

    async def hold(self) -> asyncio.Task[InferenceResponse]:
        """Close the gate and occupy the (only) instance with request id 999 until the gate opens."""
        self.backend.gate.clear()
        before = len(self.backend.calls)
        task = self.submit(rows_of(999))
        assert await asyncio.to_thread(self.backend.wait_started, before + 1), "the holding request never ran"
        return task

    async def queued(self, count: int) -> None:
        """Until *count* requests wait in the model's queue."""
        await until(lambda: len(self.scheduler.policy) == count, f"{count} queued requests")

    # -- what happened ----------------------------------------------------------------------------

    def batches(self) -> list[list[int]]:
        """The request ids of every executed batch, in execution order (one id per request)."""
        out = []
        for x in list(self.backend.calls):
            ids: list[int] = []
            for first in x[:, 0]:
                rid = request_id(float(first))
                if not ids or ids[-1] != rid:
                    ids.append(rid)
            out.append(ids)
        return out

    def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = self.dp.metrics.render().decode()
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def metric(self, name: str, **labels: str) -> float:
        labels = {"model": MODEL, "version": "1", **labels}
        found = [
            v for (n, ls), v in self.samples().items()
            if n == name and all(dict(ls).get(k) == want for k, want in labels.items())
        ]
        assert len(found) == 1, (name, labels, found)
        return found[0]

    def reasons(self) -> dict[str, float]:
        return {
            reason: self.metric("servecore_batches_total", reason=reason)
            for reason in ("size", "preferred", "delay", "deadline", "shape")
        }

    def stats(self) -> dict[str, Any]:
        (stats,) = self.dp.statistics(MODEL)["model_stats"]
        return stats


@pytest.fixture
def serve(tmp_path: Path, pure_python: bool) -> Iterator[Callable[..., Served]]:
    """``serve(**options)``: a :class:`Served` with those ServeConfig options, closed after the test."""
    made: list[Served] = []

    def make(**options: Any) -> Served:
        directory = tmp_path / str(len(made))
        directory.mkdir()
        served = Served(directory, pure_python, **options)
        made.append(served)
        return served

    yield make
    for served in made:
        served.close()


# -- requests and checks ------------------------------------------------------------------------

#: request ids travel in each row's first element as ``id * ID_STRIDE + row``
ID_STRIDE = 16


def rows_of(rid: int, rows: int = 1, n: int = 3) -> np.ndarray:
    """The input of request *rid*: *rows* rows of width *n*; every value is an exact small integer."""
    x = np.empty((rows, n), dtype=np.float32)
    for r in range(rows):
        x[r] = rid * ID_STRIDE + r + np.arange(n, dtype=np.float32) * 0.5
    return x


def request_id(first: float) -> int:
    return -1 if first == RowwiseBackend.MARKER else int(first) // ID_STRIDE


def marked(rows: int = 1, n: int = 3) -> np.ndarray:
    x = rows_of(0, rows, n)
    x[-1, 0] = RowwiseBackend.MARKER
    return x


def request(x: np.ndarray, **parameters: Any) -> InferenceRequest:
    return InferenceRequest(MODEL, None, [InferInput("x", "FP32", x.shape, x)], parameters=parameters)


def outputs(response: InferenceResponse) -> dict[str, np.ndarray]:
    return {o.name: np.asarray(o.data) for o in response.outputs}


def assert_own(response: InferenceResponse, x: np.ndarray) -> None:
    """*response* holds exactly the answer to *x*, nothing of any other request."""
    got = outputs(response)
    assert got["y"].shape == x.shape
    np.testing.assert_array_equal(got["y"], rowwise(x))
    np.testing.assert_array_equal(got["first"], x[:, 0])


async def until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.001)


def run(scenario: Awaitable[T]) -> T:
    async def guarded() -> T:
        return await asyncio.wait_for(scenario, GUARD)

    return asyncio.run(guarded())


async def failure(task: Awaitable[Any]) -> ServecoreError:
    """The ServecoreError *task* raises (it must raise one)."""
    with pytest.raises(ServecoreError) as info:
        await task
    return info.value


# -- correctness under load ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("delay_us", "instances", "inline"),
    [(0, 1, 0), (2000, 2, 0), (500, 1, 10**6)],
    ids=["no-delay", "delay-2-instances", "inline"],
)
def test_hundreds_of_concurrent_requests_each_get_their_own_rows(
    serve: Callable[..., Served], delay_us: int, instances: int, inline: int
) -> None:
    served = serve(max_batch_size=16, max_queue_delay_us=delay_us, instances=instances, inline_compute_us=inline)
    rng = np.random.default_rng(7)
    inputs = [rows_of(i + 1, int(rng.integers(1, 5)), 4) for i in range(300)]

    async def scenario() -> list[InferenceResponse]:
        if inline:  # teach the runtime model that this backend is quick: later batches run inline
            for x in inputs[:3]:
                await served.infer(x)
        return await asyncio.gather(*(served.infer(x) for x in inputs))

    responses = run(scenario())
    for response, x in zip(responses, inputs):
        assert_own(response, x)
    total_rows = sum(len(x) for x in inputs) + (sum(len(x) for x in inputs[:3]) if inline else 0)
    requests = len(inputs) + (3 if inline else 0)
    stats = served.stats()
    assert stats["inference_count"] == total_rows
    assert stats["inference_stats"]["success"]["count"] == requests
    assert stats["execution_count"] == len(served.backend.calls) < requests
    sizes = {b["batch_size"]: b["compute_infer"]["count"] for b in stats["batch_stats"]}
    assert max(sizes) > 1 and max(sizes) <= 16
    assert sum(sizes.values()) == stats["execution_count"]
    assert sum(size * count for size, count in sizes.items()) == total_rows
    assert sorted(len(x) for x in served.backend.calls) == sorted(
        size for size, count in sizes.items() for _ in range(count)
    )
    if inline:
        assert any(not name.startswith("servecore-") for name in served.backend.threads), (
            "no batch ran inline on the loop thread"
        )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    shapes=st.lists(st.tuples(st.integers(1, 4), st.sampled_from([1, 2, 3]), st.integers(0, 2)), min_size=1, max_size=40),
    max_batch=st.integers(1, 6),
    preferred=st.sets(st.integers(1, 6), max_size=2),
)
def test_any_mix_of_requests_is_answered_row_for_row(
    serve: Callable[..., Served], shapes: list[tuple[int, int, int]], max_batch: int, preferred: set[int]
) -> None:
    """Random rows, widths and priorities while the instance is held: every request gets its own
    answer; no batch mixes widths or passes max_batch_size; requests run by priority, then FIFO."""
    shapes = [(min(rows, max_batch), n, priority) for rows, n, priority in shapes]
    sizes = ",".join(str(p) for p in sorted(preferred) if p <= max_batch)
    served = serve(max_batch_size=max_batch, preferred_batch_sizes=sizes)
    inputs = [rows_of(i + 1, rows, n) for i, (rows, n, _) in enumerate(shapes)]

    async def scenario() -> list[InferenceResponse]:
        holder = await served.hold()
        tasks = [served.submit(x, priority=p) for x, (_, _, p) in zip(inputs, shapes)]
        await served.queued(len(tasks))
        served.backend.gate.set()
        await holder
        return await asyncio.gather(*tasks)

    for response, x in zip(run(scenario()), inputs):
        assert_own(response, x)
    executed = served.backend.calls[1:]
    assert all(len(x) <= max_batch for x in executed)
    order = [rid for batch in served.batches()[1:] for rid in batch]
    level = {i + 1: (p if p > 0 else 2**31 - 1) for i, (_, _, p) in enumerate(shapes)}
    assert order == sorted(order, key=lambda rid: (level[rid], rid))
    for x in executed:
        widths = {shapes[request_id(float(f)) - 1][1] for f in x[:, 0]}
        assert widths == {x.shape[1]}, "a batch mixed requests of different shapes"
    served.close()


# -- shapes and sizes ---------------------------------------------------------------------------


def test_requests_of_different_shapes_never_share_a_batch(serve: Callable[..., Served]) -> None:
    served = serve(max_batch_size=8)

    async def scenario() -> None:
        holder = await served.hold()
        a, b, c, d = rows_of(1, 1, 2), rows_of(2, 2, 3), rows_of(3, 1, 2), rows_of(4, 3, 3)
        tasks = [served.submit(x) for x in (a, b, c, d)]
        await served.queued(4)
        before = served.reasons()
        served.backend.gate.set()
        await holder
        for task, x in zip(tasks, (a, b, c, d)):
            assert_own(await task, x)
        # FIFO: c may not jump ahead to join a, nor d to join b
        assert served.batches()[1:] == [[1], [2], [3], [4]]
        after = served.reasons()
        assert after["shape"] - before["shape"] == 3
        assert after["delay"] - before["delay"] == 2  # the holder and the last one, with nothing behind them

    run(scenario())


def test_too_many_rows_is_a_bad_request(serve: Callable[..., Served]) -> None:
    served = serve(max_batch_size=4)

    async def scenario() -> None:
        error = await failure(served.infer(rows_of(1, 5)))
        assert isinstance(error, InvalidInputError) and error.status_code == 400
        assert "max_batch_size" in error.message and "5 rows" in error.message
        assert_own(await served.infer(rows_of(2, 4)), rows_of(2, 4))

    run(scenario())
    assert served.backend.seen_firsts() == [float(v) for v in rows_of(2, 4)[:, 0]]


def test_inputs_with_different_leading_dimensions_are_a_bad_request(
    model_paths: dict[str, Path], pure_python: bool
) -> None:
    config = ServeConfig(models=(str(model_paths["add_sub"]),), max_batch_size=8, pure_python=pure_python)
    dp = DataPlane(config=config, pm=get_plugin_manager(load_entrypoints=False))
    dp.load_models()
    a, b = np.ones((2, 16), np.float32), np.ones((3, 16), np.float32)
    req = InferenceRequest("add_sub", None, [InferInput("INPUT0", "FP32", a.shape, a), InferInput("INPUT1", "FP32", b.shape, b)])

    async def scenario() -> None:
        error = await failure(dp.infer(req))
        assert isinstance(error, InvalidInputError) and error.status_code == 400
        assert "INPUT0 2" in error.message and "INPUT1 3" in error.message
        good = InferenceRequest("add_sub", None, [InferInput("INPUT0", "FP32", a.shape, a), InferInput("INPUT1", "FP32", a.shape, a * 3)])
        response = await dp.infer(good)
        np.testing.assert_array_equal(response.outputs[0].data, a * 4)

    try:
        run(scenario())
        assert dp.model("add_sub", None).stats.execution_count == 1
    finally:
        dp.close(timeout=10)


# -- close reasons ------------------------------------------------------------------------------


def test_every_close_reason_is_counted(serve: Callable[..., Served]) -> None:
    """size, preferred, deadline and shape close at once with a long delay; delay needs a short one."""
    served = serve(max_batch_size=4, preferred_batch_sizes="2", max_queue_delay_us=3_600_000_000)
    quick = serve(max_batch_size=4, max_queue_delay_us=1000)

    async def expect(s: Served, reason: str, *inputs_and_parameters: tuple[np.ndarray, dict[str, Any]]) -> None:
        """The requests, sent together, make exactly one batch, closed for *reason*."""
        before = s.reasons()
        tasks = [s.submit(x, **p) for x, p in inputs_and_parameters]
        for task, (x, _) in zip(tasks, inputs_and_parameters):
            assert_own(await task, x)
        after = s.reasons()
        assert {k: after[k] - before[k] for k in after} == {k: int(k == reason) for k in after}, reason

    async def scenario() -> None:
        await expect(served, "size", (rows_of(1, 4), {}))
        await expect(served, "preferred", (rows_of(2, 2), {}))
        await expect(served, "preferred", (rows_of(3, 1), {}), (rows_of(4, 1), {}))
        # waiting an hour for others would miss the request's 60 s timeout: it closes now
        await expect(served, "deadline", (rows_of(5, 1), {"timeout": 60_000_000}))
        # a request of another shape behind the head closes the head's batch
        before = served.reasons()
        a = served.submit(rows_of(6, 1, 2))
        await served.queued(1)
        b = served.submit(rows_of(7, 3, 3), timeout=60_000_000)
        assert_own(await a, rows_of(6, 1, 2))
        assert_own(await b, rows_of(7, 3, 3))
        after = served.reasons()
        assert after["shape"] - before["shape"] == 1
        assert after["deadline"] - before["deadline"] == 1
        await expect(quick, "delay", (rows_of(8, 1), {}))

    run(scenario())
    assert served.batches() == [[1], [2], [3, 4], [5], [6], [7]]


def test_a_delayed_batch_is_cut_to_a_preferred_size(serve: Callable[..., Served]) -> None:
    served = serve(max_batch_size=8, preferred_batch_sizes="2,4", max_queue_delay_us=1000)

    async def scenario() -> None:
        holder = await served.hold()
        tasks = [served.submit(rows_of(i)) for i in (1, 2, 3)]
        await served.queued(3)
        served.backend.gate.set()
        await holder
        for i, task in zip((1, 2, 3), tasks):
            assert_own(await task, rows_of(i))

    run(scenario())
    assert served.batches()[1:] == [[1, 2], [3]]


# -- deadlines ----------------------------------------------------------------------------------


def test_requests_whose_timeout_passes_in_the_queue_never_run(serve: Callable[..., Served]) -> None:
    served = serve(max_batch_size=4)

    async def scenario() -> None:
        holder = await served.hold()
        late = [served.submit(rows_of(i), timeout=1000) for i in (1, 2)]
        patient = served.submit(rows_of(3), timeout=0)
        # answered while the instance is still busy: a timeout bounds the wait
        for task in late:
            error = await failure(task)
            assert isinstance(error, DeadlineExceededError) and error.status_code == 504
            assert repr(MODEL) in error.message
        assert not holder.done()
        served.backend.gate.set()
        assert_own(await holder, rows_of(999))
        assert_own(await patient, rows_of(3))

    run(scenario())
    assert served.batches() == [[999], [3]]
    assert served.metric("servecore_batch_expired_requests_total") == 2
    stats = served.stats()
    assert stats["inference_stats"]["fail"]["count"] == 2
    assert stats["inference_stats"]["success"]["count"] == 2
    assert served.metric("servecore_requests_total", outcome="failure") == 2


def test_the_default_timeout_applies_without_a_parameter(serve: Callable[..., Served]) -> None:
    served = serve(max_batch_size=4, default_timeout_us=2000)

    async def scenario() -> None:
        holder = await served.hold()  # runs at once: a timeout only limits the time in the queue
        late = served.submit(rows_of(1))
        error = await failure(late)
        assert isinstance(error, DeadlineExceededError) and repr(MODEL) in error.message
        patient = served.submit(rows_of(2), timeout=0)  # an explicit 0: no timeout
        await served.queued(1)
        served.backend.gate.set()
        assert_own(await holder, rows_of(999))
        assert_own(await patient, rows_of(2))

    run(scenario())
    assert served.batches() == [[999], [2]]
    assert served.metric("servecore_batch_expired_requests_total") == 1
    config = served.dp.model_config(MODEL, None)
    assert config["dynamic_batching"]["default_queue_policy"]["default_timeout_microseconds"] == 2000


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("timeout", -1), ("timeout", "1000"), ("timeout", 1.5), ("timeout", True), ("timeout", [1]),
        ("priority", -1), ("priority", "1"), ("priority", 2.0), ("priority", False), ("priority", {"a": 1}),
    ],
)
def test_bad_timeout_or_priority_is_a_bad_request(serve: Callable[..., Served], name: str, value: Any) -> None:
    served = serve(max_batch_size=4)

    async def scenario() -> None:
        error = await failure(served.infer(rows_of(1), **{name: value}))
        assert isinstance(error, InvalidInputError) and error.status_code == 400
        assert repr(name) in error.message
        assert_own(await served.infer(rows_of(2)), rows_of(2))

    run(scenario())
    assert served.batches() == [[2]]


@pytest.mark.parametrize(("name", "value"), [("timeout", 2**63 - 1), ("timeout", 2**64 + 5), ("priority", 2**31), ("priority", 2**63)])
def test_huge_timeout_or_priority_never_breaks_the_server(serve: Callable[..., Served], name: str, value: int) -> None:
    """Values past what the queue stores are a bad request or accepted, never an internal error."""
    served = serve(max_batch_size=4)

    async def scenario() -> None:
        try:
            response = await served.infer(rows_of(1), **{name: value})
        except InvalidInputError as error:
            assert repr(name) in error.message
        else:
            assert_own(response, rows_of(1))
        assert_own(await served.infer(rows_of(2)), rows_of(2))

    run(scenario())


# -- admission ----------------------------------------------------------------------------------


def test_a_full_queue_refuses_with_429_and_keeps_serving(serve: Callable[..., Served]) -> None:
    served = serve(max_batch_size=4, max_queue_size=3)

    async def scenario() -> None:
        holder = await served.hold()
        queued = [served.submit(rows_of(1, 2)), served.submit(rows_of(2, 1))]
        await served.queued(2)
        for x in (rows_of(3, 1), rows_of(4, 2)):  # 3 rows wait: one more is too many
            error = await failure(served.infer(x))
            assert isinstance(error, TooManyRequestsError) and error.status_code == 429
            assert isinstance(error.retry_after_s, int) and error.retry_after_s >= 1
            assert repr(MODEL) in error.message and "queue is full" in error.message
        served.backend.gate.set()
        assert_own(await holder, rows_of(999))
        assert_own(await queued[0], rows_of(1, 2))
        assert_own(await queued[1], rows_of(2, 1))
        assert_own(await served.infer(rows_of(5, 3)), rows_of(5, 3))

    run(scenario())
    assert served.batches() == [[999], [1, 2], [5]]
    assert served.metric("servecore_batch_rejected_requests_total", reason="queue_full") == 2
    assert served.metric("servecore_batch_rejected_requests_total", reason="deadline") == 0


def test_a_request_that_cannot_meet_its_timeout_is_refused_at_admission(serve: Callable[..., Served]) -> None:
    served = serve(max_batch_size=4)

    async def scenario() -> None:
        # one run held for a quarter of a second teaches the runtime model that a row takes that long
        first = await served.hold()
        await asyncio.sleep(0.25)
        served.backend.gate.set()
        assert_own(await first, rows_of(999))
        assert served.scheduler.runtime.table[1] >= 250_000_000
        error = await failure(served.infer(rows_of(1), timeout=1000))
        assert isinstance(error, TooManyRequestsError) and error.status_code == 429
        assert error.retry_after_s >= 1 and "predicted wait" in error.message and repr(MODEL) in error.message
        assert_own(await served.infer(rows_of(2), timeout=600_000_000), rows_of(2))
        assert_own(await served.infer(rows_of(3)), rows_of(3))

    run(scenario())
    assert served.batches() == [[999], [2], [3]]
    assert served.metric("servecore_batch_rejected_requests_total", reason="deadline") == 1
    assert served.metric("servecore_batch_expired_requests_total") == 0


# -- priority -----------------------------------------------------------------------------------


def test_higher_priority_requests_run_first(serve: Callable[..., Served]) -> None:
    served = serve(max_batch_size=1)

    async def scenario() -> None:
        holder = await served.hold()
        plan = [(1, {}), (2, {"priority": 0}), (3, {"priority": 2}), (4, {"priority": 1}), (5, {}), (6, {"priority": 1})]
        tasks = [served.submit(rows_of(i), **p) for i, p in plan]
        await served.queued(len(plan))
        served.backend.gate.set()
        await holder
        for (i, _), task in zip(plan, tasks):
            assert_own(await task, rows_of(i))

    run(scenario())
    assert served.batches() == [[999], [4], [6], [3], [1], [2], [5]]


def test_requests_of_one_priority_batch_together(serve: Callable[..., Served]) -> None:
    served = serve(max_batch_size=8)

    async def scenario() -> None:
        holder = await served.hold()
        plan = [(1, 0), (2, 1), (3, 0), (4, 1)]
        tasks = [served.submit(rows_of(i), priority=p) for i, p in plan]
        await served.queued(len(plan))
        served.backend.gate.set()
        await holder
        for (i, _), task in zip(plan, tasks):
            assert_own(await task, rows_of(i))

    run(scenario())
    assert served.batches()[1] == [2, 4, 1, 3]


# -- failures and isolation ---------------------------------------------------------------------


def test_a_failing_batch_fails_only_its_own_requests(serve: Callable[..., Served]) -> None:
    served = serve(max_batch_size=4)

    async def scenario() -> None:
        holder = await served.hold()
        first = [served.submit(rows_of(1)), served.submit(marked()), served.submit(rows_of(2, 2))]
        second = [served.submit(rows_of(i)) for i in (3, 4, 5)]
        await served.queued(6)
        served.backend.gate.set()
        assert_own(await holder, rows_of(999))
        for task in first:
            error = await failure(task)
            assert isinstance(error, BackendError) and error.status_code == 500
            assert repr(MODEL) in error.message and "marker row" in error.message
        for i, task in zip((3, 4, 5), second):
            assert_own(await task, rows_of(i))
        assert_own(await served.infer(rows_of(6, 3)), rows_of(6, 3))

    run(scenario())
    assert served.batches() == [[999], [1, -1, 2], [3, 4, 5], [6]]
    stats = served.stats()
    assert stats["inference_stats"]["fail"]["count"] == 3
    assert stats["inference_stats"]["success"]["count"] == 5
    assert served.metric("servecore_requests_total", outcome="failure") == 3


def test_a_backend_error_over_several_requests_is_500_for_each(serve: Callable[..., Served]) -> None:
    """A backend's own 400 blames the input; over a batch of several requests it cannot say whose,
    so each gets 500 naming the model and the batch. A request batched alone keeps the backend's error."""
    served = serve(max_batch_size=4)
    served.backend.error = InvalidInputError

    async def scenario() -> None:
        holder = await served.hold()
        together = [served.submit(rows_of(1)), served.submit(marked())]
        await served.queued(2)
        served.backend.gate.set()
        await holder
        for task in together:
            error = await failure(task)
            assert type(error) is BackendError and error.status_code == 500
            assert f"model {MODEL!r} version 1: a batch of 2 rows (2 requests) failed: marker row" in error.message
        alone = await failure(served.infer(marked()))
        assert isinstance(alone, InvalidInputError) and alone.status_code == 400 and "marker row" in alone.message
        assert_own(await served.infer(rows_of(2)), rows_of(2))

    run(scenario())
    assert served.batches() == [[999], [1, -1], [-1], [2]]


def test_a_backend_returning_the_wrong_rows_fails_the_batch(serve: Callable[..., Served]) -> None:
    served = serve(max_batch_size=4)
    original = served.backend.infer

    def short(inputs: Any, names: Any) -> dict[str, Any]:
        result = original(inputs, names)
        return {name: array[:-1] for name, array in result.items()}

    served.backend.infer = short  # type: ignore[method-assign]

    async def scenario() -> None:
        error = await failure(served.infer(rows_of(1, 2)))
        assert isinstance(error, BackendError) and repr(MODEL) in error.message
        served.backend.infer = original  # type: ignore[method-assign]
        assert_own(await served.infer(rows_of(2, 2)), rows_of(2, 2))

    run(scenario())


# -- cancellation and disconnects ---------------------------------------------------------------


def test_a_cancelled_queued_request_is_removed_without_running(serve: Callable[..., Served]) -> None:
    served = serve(max_batch_size=4)

    async def scenario() -> None:
        holder = await served.hold()
        gone = served.submit(marked())
        kept = served.submit(rows_of(1))
        await served.queued(2)
        gone.cancel()
        await served.queued(1)
        assert served.scheduler.policy.queued_rows == 1
        served.backend.gate.set()
        assert_own(await holder, rows_of(999))
        assert_own(await kept, rows_of(1))
        assert gone.cancelled()

    run(scenario())
    assert RowwiseBackend.MARKER not in served.backend.seen_firsts()
    assert served.batches() == [[999], [1]]
    assert served.metric("servecore_requests_total", outcome="success") == 2


def test_a_request_cancelled_while_its_batch_runs_leaves_the_others_their_answers(serve: Callable[..., Served]) -> None:
    served = serve(max_batch_size=4, preferred_batch_sizes="3", max_queue_delay_us=3_600_000_000)

    async def scenario() -> None:
        served.backend.gate.clear()
        leaving, staying = served.submit(rows_of(1)), served.submit(rows_of(2, 2))  # 3 rows: sent at once
        assert await asyncio.to_thread(served.backend.wait_started, 1)
        leaving.cancel()
        await asyncio.sleep(0)
        served.backend.gate.set()
        assert_own(await staying, rows_of(2, 2))
        assert leaving.cancelled()

    run(scenario())
    assert served.batches() == [[1, 2]]
    assert served.stats()["execution_count"] == 1


class AsgiCall:
    """One HTTP request driven straight into the ASGI app; ``disconnect()`` is the client leaving."""

    def __init__(self, app: ServecoreApp, path: str, body: bytes) -> None:
        self.app = app
        self.scope = {
            "type": "http", "method": "POST", "path": path, "headers": [(b"content-length", str(len(body)).encode())],
            "query_string": b"",
        }
        self.body = body
        self.sent_body = False
        self.left = asyncio.Event()
        self.messages: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        if not self.sent_body:
            self.sent_body = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        await self.left.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    def disconnect(self) -> None:
        self.left.set()

    def start(self) -> asyncio.Task[None]:
        return asyncio.ensure_future(self.app(self.scope, self.receive, self.send))

    @property
    def status(self) -> int:
        return int(next(m["status"] for m in self.messages if m["type"] == "http.response.start"))


def infer_body(x: np.ndarray) -> bytes:
    import json

    return json.dumps(
        {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
    ).encode()


def test_a_client_that_disconnects_while_queued_is_never_run(serve: Callable[..., Served]) -> None:
    served = serve(max_batch_size=4)
    app = ServecoreApp(served.dp)
    path = f"/v2/models/{MODEL}/infer"

    async def scenario() -> None:
        holder = await served.hold()
        leaving = AsgiCall(app, path, infer_body(marked()))
        staying = AsgiCall(app, path, infer_body(rows_of(1)))
        leaving_task, staying_task = leaving.start(), staying.start()
        await served.queued(2)
        leaving.disconnect()
        await leaving_task
        assert leaving.status == 499
        assert len(served.scheduler.policy) == 1
        served.backend.gate.set()
        await holder
        await staying_task
        assert staying.status == 200

    run(scenario())
    assert RowwiseBackend.MARKER not in served.backend.seen_firsts()
    assert served.batches() == [[999], [1]]
    samples = served.samples()
    assert samples[("servecore_http_errors_total", (("status", "499"),))] == 1
    assert served.metric("servecore_requests_total", outcome="success") == 2
    assert samples[("servecore_inflight_requests", ())] == 0


# -- instances ----------------------------------------------------------------------------------


def test_instances_run_batches_at_the_same_time(serve: Callable[..., Served]) -> None:
    served = serve(max_batch_size=2, instances=3)

    async def scenario() -> None:
        served.backend.gate.clear()
        tasks = [served.submit(rows_of(i, 2)) for i in range(1, 5)]
        assert await asyncio.to_thread(served.backend.wait_started, 3)
        await served.queued(1)  # three batches run together; the fourth waits for an instance
        assert len(served.backend.calls) == 3
        served.backend.gate.set()
        for i, task in zip(range(1, 5), tasks):
            assert_own(await task, rows_of(i, 2))

    run(scenario())
    assert sorted(map(tuple, served.batches())) == [(1,), (2,), (3,), (4,)]


# -- statistics and configuration ---------------------------------------------------------------


def test_statistics_come_from_the_scheduler(serve: Callable[..., Served]) -> None:
    served = serve(max_batch_size=8)

    async def scenario() -> None:
        holder = await served.hold()
        tasks = [served.submit(rows_of(i, i)) for i in (1, 2, 3)]
        await served.queued(3)
        served.backend.gate.set()
        await holder
        for i, task in zip((1, 2, 3), tasks):
            assert_own(await task, rows_of(i, i))
        await failure(served.infer(marked(2)))

    run(scenario())
    stats = served.stats()
    assert stats["name"] == MODEL and stats["version"] == "1"
    assert stats["inference_count"] == 1 + 1 + 2 + 3
    assert stats["execution_count"] == 2  # the holder, then one batch of three requests
    inference = stats["inference_stats"]
    for stage in ("success", "queue", "compute_input", "compute_infer", "compute_output"):
        assert inference[stage]["count"] == 4, stage
        assert inference[stage]["ns"] >= 0, stage
    assert inference["fail"]["count"] == 1
    assert inference["compute_infer"]["ns"] > 0 and inference["success"]["ns"] > 0 and inference["queue"]["ns"] > 0
    by_size = {b["batch_size"]: b for b in stats["batch_stats"]}
    assert set(by_size) == {1, 6}
    for entry in by_size.values():
        for stage in ("compute_input", "compute_infer", "compute_output"):
            assert entry[stage]["count"] == 1
        assert entry["compute_infer"]["ns"] > 0
    assert served.metric("servecore_batch_size_rows_count") == 2
    assert served.metric("servecore_batch_size_rows_sum") == 7


def test_model_config_shows_dynamic_batching(serve: Callable[..., Served]) -> None:
    served = serve(
        max_batch_size=8, max_queue_delay_us=1500, preferred_batch_sizes="4,2", max_queue_size=64,
        instances=2, default_timeout_us=9000,
    )
    config = served.dp.model_config(MODEL, None)
    assert config["max_batch_size"] == 8
    assert config["input"] == [{"name": "x", "data_type": "TYPE_FP32", "dims": [-1], "format": "FORMAT_NONE"}]
    assert [o["dims"] for o in config["output"]] == [[-1], []]
    assert config["dynamic_batching"] == {
        "max_queue_delay_microseconds": 1500,
        "preferred_batch_size": [2, 4],
        "default_queue_policy": {
            "max_queue_size": 64, "default_timeout_microseconds": 9000, "allow_timeout_override": True,
        },
    }
    assert config["instance_group"] == [{"count": 2, "kind": "KIND_AUTO"}]
    assert served.dp.model_metadata(MODEL, None)["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, -1]}]


# -- the scheduler on its own -------------------------------------------------------------------


def test_scheduler_direct(core: BatchingCore) -> None:
    """The scheduler without a data plane: submit returns every output and the batch's timing."""
    backend = RowwiseBackend()
    scheduler = Scheduler(MODEL, "1", backend, BatchSettings(max_batch_size=6, max_queue_delay_ns=10**6), core)

    async def scenario() -> None:
        inputs = [rows_of(i, 2) for i in (1, 2, 3, 4)]
        results = await asyncio.gather(*(scheduler.submit({"x": x}, len(x)) for x in inputs))
        for (result, timing), x in zip(results, inputs):
            np.testing.assert_array_equal(result["y"], rowwise(x))
            np.testing.assert_array_equal(result["first"], x[:, 0])
            assert timing.batch_rows in (2, 6) and timing.queue_ns >= 0 and timing.infer_ns > 0
        with pytest.raises(InvalidInputError):
            await scheduler.submit({"x": rows_of(5, 7)}, 7)

    try:
        run(scenario())
    finally:
        scheduler.close()
    assert sorted(len(x) for x in backend.calls) == [2, 6]
