"""Run a server: build the plugins, the data plane and the app, and hand them to uvicorn.

SIGTERM/SIGINT: readiness turns false at once, the listening socket closes (no new connections),
in-flight requests get ``graceful_timeout`` seconds to finish, then the models are unloaded and
:func:`serve` returns 0. A model call still running after that cannot be interrupted: it is
abandoned and :func:`serve` returns :data:`ABANDONED`, telling the caller to end the process
without waiting for it.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
import time
from types import FrameType
from typing import TYPE_CHECKING, Any, Callable

import uvicorn

from servecore.dataplane import DataPlane, create_dataplane
from servecore.http.app import ServecoreApp
from servecore.models import pin_mmap_threshold
from servecore.http.protocols import json_error_protocol
from servecore.plugins import get_plugin_manager

if TYPE_CHECKING:
    import pluggy

    from servecore.config import ServeConfig

logger = logging.getLogger("servecore")

#: Exit code of a shutdown that abandoned model calls still running after ``graceful_timeout``.
#: Their worker threads cannot be stopped, so the process must exit without joining them.
ABANDONED = 3


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


class _Server(uvicorn.Server):
    """uvicorn's server, turning readiness off as soon as a shutdown signal arrives."""

    def __init__(self, config: uvicorn.Config, dataplane: DataPlane, on_started: Callable[[str, int], None]) -> None:
        super().__init__(config)
        self.dataplane = dataplane
        self.on_started = on_started
        self.exit_requested_at: float | None = None
        self.background: list[asyncio.Task[None]] = []

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.dataplane.shutting_down:
            logger.info("shutting down: readiness is now false, finishing in-flight requests")
            self.exit_requested_at = time.monotonic()
        self.dataplane.shutting_down = True
        # Unlike uvicorn's own handler, the signal is not recorded for re-raising after shutdown:
        # a graceful stop by SIGTERM is a success and exits 0. A second SIGINT forces the exit.
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        self.should_exit = True

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self.servers:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            self.background = [asyncio.create_task(job) for job in self.dataplane.background_tasks()]
            self.on_started(host, port)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for task in self.background:  # no polls or idle unloads while in-flight requests finish
            task.cancel()
        await super().shutdown(sockets)

    def grace_left(self) -> float | None:
        """Seconds of the graceful timeout left since the shutdown signal; None without a signal."""
        limit = self.config.timeout_graceful_shutdown
        if self.exit_requested_at is None or limit is None:
            return None
        return max(0.0, limit - (time.monotonic() - self.exit_requested_at))


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
    pm = pm or get_plugin_manager(disabled=config.disabled_plugins)
    dataplane = create_dataplane(config, pm)
    logger.info("servecore core: %s", dataplane.codec.implementation)

    def started(host: str, port: int) -> None:
        print_fn(f"servecore is serving {len(dataplane.models)} model(s) on http://{host}:{port}")
        print_fn("Try it:\n  " + example_request(dataplane, host, port))
        sys.stdout.flush()

    uv_config = uvicorn.Config(
        ServecoreApp(dataplane),
        host=config.host,
        port=config.port,
        loop="uvloop" if _has_module("uvloop") else "asyncio",
        http=json_error_protocol(),  # httptools when installed, else h11; unparseable HTTP gets JSON errors
        lifespan="off",
        access_log=config.access_log,
        log_level=config.log_level,
        timeout_graceful_shutdown=config.graceful_timeout,  # type: ignore[arg-type]  # uvicorn takes a float
        server_header=False,
    )
    server = _Server(uv_config, dataplane, started)
    abandoned = 0
    try:
        server.run()
    except SystemExit as exc:  # uvicorn exits when it cannot bind the port
        return int(exc.code or 1)
    finally:
        abandoned = dataplane.close(timeout=server.grace_left())
    if abandoned:
        return ABANDONED
    return 0 if server.started else 1
