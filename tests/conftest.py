"""Shared fixtures: test models and one real server process per session serving all of them.

The server runs whichever core the environment selects (``SERVECORE_PURE_PYTHON=1`` for the
pure-Python twins); CI runs the suite once each way.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Callable, Iterator

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from checks import assert_serving  # noqa: E402
from models import build_all  # noqa: E402
from server_process import ServerProcess  # noqa: E402


@pytest.fixture(scope="session")
def model_paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """name -> path of every test model (see tests/models.py)."""
    return build_all(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def server(model_paths: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One servecore process on 127.0.0.1 serving every test model."""
    with ServerProcess([str(p) for p in model_paths.values()], log_dir=tmp_path_factory.mktemp("logs")) as proc:
        yield proc


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    """A plain HTTP client on the shared server."""
    with httpx.Client(base_url=server.url, timeout=30.0) as client:
        yield client


@pytest.fixture
def still_serving(server: ServerProcess) -> Iterator[None]:
    """After the test the shared server still serves (see checks.assert_serving).

    A module opts in with ``pytestmark = pytest.mark.usefixtures("still_serving")``.
    """
    yield
    with httpx.Client(base_url=server.url, timeout=10.0) as client:
        assert_serving(client)


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[object]:
    """Factory: ``start_server(args, env=...)`` starts an extra server, stopped after the test."""
    started: list[ServerProcess] = []

    def start(args: list[str], *, env: dict[str, str] | None = None, expect_ready: bool = True) -> ServerProcess:
        proc = ServerProcess(args, env=env, log_dir=tmp_path / "logs")
        started.append(proc)
        return proc.start(expect_ready=expect_ready)

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def serve(start_server: Callable[..., ServerProcess]) -> Callable[..., ServerProcess]:
    """``serve(*args, expect_ready=True)``: :func:`start_server` with the arguments spread out."""

    def start(*args: str, expect_ready: bool = True) -> ServerProcess:
        return start_server(list(args), expect_ready=expect_ready)

    return start


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """``tmpfs(size_bytes)``: a fresh tmpfs mount, unmounted after the test."""
    mounts: list[Path] = []

    def mount(size: int) -> Path:
        target = tmp_path / f"tmpfs-{uuid.uuid4().hex[:8]}"
        target.mkdir()
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)],
                              check=False, capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounts.append(target)
        return target

    yield mount
    for target in mounts:
        subprocess.run(["umount", "-l", str(target)], check=False)
