"""Fixtures: the installed plugin, one real ``mlflow server`` per session (SQLite registry, artefacts
served through the server), ONNX models registered in it, and real ``servecore serve`` processes.

Nothing is mocked: the plugin talks HTTP to the MLflow server and downloads what it stores, and the
servers under test are child processes of ``python -m servecore serve``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path

import httpx
import pytest
from mlflow_support import MlflowServer, Registry, Server, free_port, stop_group

SOURCE = Path(__file__).resolve().parent.parent / "src" / "servecore_mlflow"
DISTRIBUTION = "servecore-mlflow"
#: seconds an ``mlflow server`` may take to answer /health (it is slow to start on 2 cores)
MLFLOW_START_TIMEOUT = 120.0


@pytest.fixture(scope="session")
def installed() -> metadata.Distribution:
    """The installed distribution; fails (not skips) when it is missing or is another checkout."""
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        pytest.fail(f"{DISTRIBUTION} is not installed: pip install -e plugins/servecore-mlflow")
    points = [ep for ep in dist.entry_points if ep.group == "servecore"]
    assert [(ep.name, ep.value) for ep in points] == [("mlflow", "servecore_mlflow")]
    import servecore_mlflow

    module_file = Path(servecore_mlflow.__file__).resolve()
    if module_file.read_bytes() != (SOURCE / "__init__.py").read_bytes():
        pytest.fail(f"{DISTRIBUTION} at {module_file} differs from this checkout's {SOURCE}; reinstall it")
    return dist


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A real ``mlflow server`` on a free port, with ``MLFLOW_TRACKING_URI`` set to it for the session.

    Artefacts are proxied (``--serve-artifacts --artifacts-destination``): clients upload and
    download them over HTTP, as against a remote server, not through a shared directory.
    """
    base = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = base / "mlflow-server.log"
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        f"sqlite:///{base / 'mlflow.db'}",
        "--serve-artifacts",
        "--artifacts-destination",
        str(base / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    # MLflow 3 also starts a job runner with a pool of huey consumers (about 1 GB); not needed here
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_TRACKING_URI": url}
    with log.open("wb") as out:
        # a session of its own, so that the server's worker processes are stopped with it
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = MlflowServer(url, proc, log)
    try:
        deadline = time.monotonic() + MLFLOW_START_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited with {proc.returncode}:\n{server.output()}")
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server not answering after {MLFLOW_START_TIMEOUT:g}s:\n{server.output()}")
            time.sleep(0.25)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MLFLOW_TRACKING_URI", url)
            mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
            yield server
    finally:
        stop_group(proc)


@pytest.fixture(scope="session")
def registry(mlflow_server: MlflowServer) -> Registry:
    """The session's registry, with two ONNX models logged (``y = x + 1`` and ``y = x + 2``)."""
    return Registry(mlflow_server.url)


# -- servecore -----------------------------------------------------------------------------------


def _environ(env: dict[str, str]) -> dict[str, str]:
    """This process's environment without servecore settings the test did not ask for."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("SERVECORE_") or k == "SERVECORE_PURE_PYTHON"}
    return {**base, **env}


@pytest.fixture
def serve(
    installed: metadata.Distribution, mlflow_server: MlflowServer, tmp_path: Path
) -> Iterator[Callable[..., Server]]:
    """``serve(*args, env={...})``: a ready ``servecore serve`` on a free port, with a model cache
    of its own (``--model-cache-dir``) and ``MLFLOW_TRACKING_URI`` pointing at the session's server."""
    servers: list[Server] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Server:
        port = free_port()
        log = tmp_path / f"server-{port}.log"
        command = [
            sys.executable,
            "-m",
            "servecore",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--model-cache-dir",
            str(tmp_path / "cache"),
            *args,
        ]
        with log.open("wb") as out:
            proc = subprocess.Popen(command, env=_environ(env or {}), stdout=out, stderr=subprocess.STDOUT)
        server = Server(proc, f"http://127.0.0.1:{port}", log)
        servers.append(server)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"servecore exited with {proc.returncode}:\n{server.output()}")
            try:
                if httpx.get(server.url + "/v2/health/ready", timeout=1).status_code == 200:
                    return server
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"servecore not ready after 90s:\n{server.output()}")

    yield start
    for server in servers:
        if server.proc.poll() is None:
            server.proc.send_signal(signal.SIGTERM)
            try:
                server.proc.wait(30)
            except subprocess.TimeoutExpired:
                server.proc.kill()
                server.proc.wait(10)


@pytest.fixture
def run_cli(
    installed: metadata.Distribution, mlflow_server: MlflowServer, tmp_path: Path
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``run_cli(*args, env={...})``: a ``servecore`` command run to its end, its output captured."""

    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "servecore", *args],
            env=_environ(env or {}),
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )

    return run
