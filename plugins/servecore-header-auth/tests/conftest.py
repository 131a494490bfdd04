"""Fixtures: the plugin must be installed (its entry point is what is under test), and real
``servecore serve`` processes, stopped after each test."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable, Iterator

import httpx
import pytest

SOURCE = Path(__file__).resolve().parent.parent / "src" / "servecore_header_auth"
DISTRIBUTION = "servecore-header-auth"


@pytest.fixture(scope="session")
def installed() -> metadata.Distribution:
    """The installed distribution; fails (not skips) when it is missing or is another checkout."""
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        pytest.fail(f"{DISTRIBUTION} is not installed: pip install -e plugins/servecore-header-auth")
    points = [ep for ep in dist.entry_points if ep.group == "servecore"]
    assert [(ep.name, ep.value) for ep in points] == [("header-auth", "servecore_header_auth")]
    import servecore_header_auth

    # Installed like a user would (a copy in site-packages) or editable: either way the code that
    # runs must be this checkout's, not a stale install of another version.
    module_file = Path(servecore_header_auth.__file__).resolve()
    if module_file.read_bytes() != (SOURCE / "__init__.py").read_bytes():
        pytest.fail(f"{DISTRIBUTION} at {module_file} differs from this checkout's {SOURCE}; reinstall it")
    return dist


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _environ(env: dict[str, str]) -> dict[str, str]:
    """This process's environment without servecore settings the test did not ask for."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("SERVECORE_") or k == "SERVECORE_PURE_PYTHON"}
    return {**base, **env}


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def serve(installed: metadata.Distribution, tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """``serve(*args, env={...})``: a ready ``servecore serve`` on a free port, serving the demo model."""
    servers: list[Server] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Server:
        port = _free_port()
        log = tmp_path / f"server-{port}.log"
        command = [sys.executable, "-m", "servecore", "serve", "--host", "127.0.0.1", "--port", str(port), *args]
        with log.open("wb") as out:
            proc = subprocess.Popen(command, env=_environ(env or {}), stdout=out, stderr=subprocess.STDOUT)
        server = Server(proc, f"http://127.0.0.1:{port}", log)
        servers.append(server)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"servecore exited with {proc.returncode}:\n{server.output()}")
            try:
                if httpx.get(server.url + "/v2/health/ready", timeout=1).status_code == 200:
                    return server
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"servecore not ready after 60s:\n{server.output()}")

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
def run_cli(installed: metadata.Distribution) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``run_cli(*args, env={...})``: a ``servecore`` command, its output captured."""

    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "servecore", *args],
            env=_environ(env or {}), capture_output=True, text=True, timeout=60, check=False,
        )

    return run
