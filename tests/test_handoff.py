"""servecore.handoff.run_on: model calls handed to a worker thread and awaited from the loop."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from servecore import handoff


def test_result_and_exception_come_back() -> None:
    with ThreadPoolExecutor(1) as pool:

        async def main() -> None:
            assert await handoff.run_on(pool, lambda a, b: a + b, 2, 3) == 5
            with pytest.raises(KeyError, match="missing"):
                await handoff.run_on(pool, {}.__getitem__, "missing")

        asyncio.run(main())


def test_the_call_runs_on_the_worker_thread() -> None:
    with ThreadPoolExecutor(1, thread_name_prefix="worker") as pool:
        name = asyncio.run(handoff.run_on(pool, lambda: threading.current_thread().name))
    assert name.startswith("worker")


def test_a_cancelled_wait_skips_a_queued_call_and_drops_a_running_one() -> None:
    release = threading.Event()
    ran: list[str] = []

    def blocking() -> str:
        ran.append("first")
        release.wait(10)
        return "first"

    def queued() -> str:
        ran.append("second")
        return "second"

    with ThreadPoolExecutor(1) as pool:

        async def main() -> None:
            first = asyncio.ensure_future(handoff.run_on(pool, blocking))
            second = asyncio.ensure_future(handoff.run_on(pool, queued))
            await asyncio.sleep(0.05)
            first.cancel()
            second.cancel()
            await asyncio.gather(first, second, return_exceptions=True)
            release.set()
            # the worker is free again and later calls still work
            assert await handoff.run_on(pool, lambda: "after") == "after"

        asyncio.run(main())
    assert ran == ["first"]


def test_a_call_finishing_after_its_loop_closed_is_dropped_quietly() -> None:
    loop = asyncio.new_event_loop()
    future = loop.create_future()
    loop.close()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            handoff._call(loop, future, lambda: 42, ())
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    assert errors == [] and not future.done()
