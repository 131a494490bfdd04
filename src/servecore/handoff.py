"""Hand a model call to its worker thread and await the result, with as little work as possible.

``loop.run_in_executor`` creates a ``concurrent.futures.Future``, chains it to an asyncio future
with callbacks both ways (``wrap_future``) and wakes both through condition variables. Measured
on the 2-core development VM with the loop and the worker on one core, a no-op round trip took
60-95 µs that way and 37-52 µs here, where the worker posts its result straight to the loop with
``call_soon_threadsafe``; every unbatched call to a model slower than ``--inline-compute-us``,
and every batch, pays it. The executor (and so thread start-up, ``shutdown`` and the wait for a
running call in :func:`servecore.models.release`) is still a ``ThreadPoolExecutor``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

T = TypeVar("T")


async def run_on(executor: Executor, fn: Callable[..., T], *args: Any) -> T:
    """``await loop.run_in_executor(executor, fn, *args)``, cheaper. Cancelling the wait skips a
    call still queued; one already running finishes on its thread and its result is dropped."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    executor.submit(_call, loop, future, fn, args)
    return await future


def _call(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    """On the worker thread: run *fn* and post its outcome to *future*'s loop."""
    if future.cancelled():  # its waiter left while the call was queued: do not run it at all
        return
    try:
        result = fn(*args)
    except BaseException as exc:  # the caller sees whatever the call raised, as run_in_executor does
        _post(loop, _fail, future, exc)
    else:
        _post(loop, _succeed, future, result)


def _post(loop: asyncio.AbstractEventLoop, settle: Callable[..., None], *args: Any) -> None:
    try:
        loop.call_soon_threadsafe(settle, *args)
    except RuntimeError:  # the loop closed while the call ran (an abandoned shutdown): nobody waits
        pass


def _succeed(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():  # not cancelled meanwhile
        future.set_result(result)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
