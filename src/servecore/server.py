"""Run a server: build the plugins, the data plane and the app, and serve them over HTTP/1.1.

The HTTP server is servecore's own (:mod:`servecore.http.connection`) on uvloop when installed.
SIGTERM/SIGINT: readiness turns false at once, the listening socket closes (no new connections),
idle keep-alive connections close, in-flight requests get ``graceful_timeout`` seconds to finish
(their connections close after the answer), then the models are unloaded and :func:`serve`
returns 0. A second SIGINT stops waiting. A model call still running after that cannot be
interrupted: it is abandoned and :func:`serve` returns :data:`ABANDONED`, telling the caller to
end the process without waiting for it.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from servecore.affinity import pin_event_loop
from servecore.dataplane import DataPlane, create_dataplane
from servecore.http.app import ServecoreApp
from servecore.http.connection import Connection, ServerState
from servecore.http.fastpath import FastInfer
from servecore.http.headscan import load_scanner
from servecore.models import pin_mmap_threshold
from servecore.plugins import get_plugin_manager

if TYPE_CHECKING:
    import pluggy

    from servecore.config import ServeConfig

logger = logging.getLogger("servecore")

#: Exit code of a shutdown that abandoned model calls still running after ``graceful_timeout``.
#: Their worker threads cannot be stopped, so the process must exit without joining them.
ABANDONED = 3
#: Pending connections the kernel queues before accepting.
BACKLOG = 2048


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        return asyncio.new_event_loop
    return uvloop.new_event_loop


class _Server:
    """Listens, serves until a shutdown signal, then drains."""

    def __init__(self, config: ServeConfig, dataplane: DataPlane, on_started: Callable[[str, int], None]) -> None:
        self.config = config
        self.dataplane = dataplane
        self.on_started = on_started
        self.exit_requested_at: float | None = None
        self.started = False
        self._exit: asyncio.Event | None = None
        self._force: asyncio.Event | None = None

    def handle_exit(self, sig: int) -> None:
        assert self._exit is not None and self._force is not None
        if self.exit_requested_at is None:
            logger.info("shutting down: readiness is now false, finishing in-flight requests")
            self.exit_requested_at = time.monotonic()
        elif sig == signal.SIGINT:
            logger.warning("second interrupt: not waiting for in-flight requests")
            self._force.set()
        # A graceful stop by SIGTERM is a success: the process exits 0.
        self.dataplane.shutting_down = True
        self._exit.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._exit, self._force = asyncio.Event(), asyncio.Event()
        config = self.config
        app = ServecoreApp(self.dataplane)
        state = ServerState(
            app,
            keep_alive_timeout=config.keep_alive_timeout,
            access_log=config.access_log,
            fast=FastInfer(app) if config.fast_path else None,
            scan=load_scanner(pure_python=config.pure_python),
        )
        try:
            server = await loop.create_server(
                lambda: Connection(state), host=config.host, port=config.port, backlog=BACKLOG, reuse_address=True
            )
        except OSError as exc:
            logger.error("cannot listen on %s:%d: %s", config.host, config.port, exc.strerror or exc)
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.handle_exit, sig)
        self.started = True
        host, port = server.sockets[0].getsockname()[:2]
        background = [asyncio.create_task(job) for job in self.dataplane.background_tasks()]
        self.on_started(host, port)
        await self._exit.wait()

        for task in background:  # no polls or idle unloads while in-flight requests finish
            task.cancel()
        server.close()  # no new connections
        drained = asyncio.ensure_future(state.drain())
        forced = asyncio.ensure_future(self._force.wait())
        await asyncio.wait({drained, forced}, timeout=config.graceful_timeout, return_when=asyncio.FIRST_COMPLETED)
        if not drained.done():
            logger.warning(
                "%d request(s) still unanswered after the graceful timeout of %gs: closing their connections",
                state.busy, config.graceful_timeout,
            )
        for waiting in (drained, forced):
            waiting.cancel()
        state.abort_all()

    def grace_left(self) -> float | None:
        """Seconds of the graceful timeout left since the shutdown signal; None without a signal."""
        if self.exit_requested_at is None:
            return None
        return max(0.0, self.config.graceful_timeout - (time.monotonic() - self.exit_requested_at))


def example_request(dataplane: DataPlane, host: str, port: int) -> str:
    """A ready-to-paste curl command for the first model served."""
    import orjson

    model = next(iter(dataplane.models), None)
    if model is None:
        return "no model is loaded yet: see POST /v2/repository/index"
    samples = {"BOOL": True, "BYTES": "hello", "FP16": 0.5, "FP32": 0.5, "FP64": 0.5}
    inputs = []
    for spec in model.backend.inputs:
        shape = [1 if d < 0 else d for d in spec.shape]
        count = 1
        for d in shape:
            count *= d
        value: Any = samples.get(spec.datatype, 1)
        inputs.append({"name": spec.name, "shape": shape, "datatype": spec.datatype, "data": [value] * count})
    body = orjson.dumps({"inputs": inputs}).decode()
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    auth = " -H 'Authorization: Bearer <key>'" if dataplane.requires_auth else ""
    return (
        f"curl -s http://{shown}:{port}/v2/models/{model.name}/infer"
        f" -H 'Content-Type: application/json'{auth} -d '{body}'"
    )


def serve(
    config: ServeConfig,
    *,
    pm: pluggy.PluginManager | None = None,
    print_fn: Callable[[str], None] = print,
) -> int:
    """Serve until a shutdown signal; returns the process exit code (0 after a clean shutdown).

    Raises :class:`~servecore.errors.ServecoreError` subclasses when a model cannot be loaded.
    """
    pin_mmap_threshold()  # models loaded and unloaded for days must not fragment the heap
    # model threads get the GIL back from a busy event loop within this (see the option's help)
    sys.setswitchinterval(config.gil_switch_interval_us / 1e6)
    pin_event_loop(config.model_cpus)  # before any thread starts: the others inherit it
    pm = pm or get_plugin_manager(disabled=config.disabled_plugins)
    dataplane = create_dataplane(config, pm)
    logger.info("servecore core: %s", dataplane.codec.implementation)

    def started(host: str, port: int) -> None:
        print_fn(f"servecore is serving {len(dataplane.models)} model(s) on http://{host}:{port}")
        print_fn("Try it:\n  " + example_request(dataplane, host, port))
        sys.stdout.flush()

    server = _Server(config, dataplane, started)
    abandoned = 0
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(server.run())
    finally:
        abandoned = dataplane.close(timeout=server.grace_left())
    if abandoned:
        return ABANDONED
    return 0 if server.started else 1
