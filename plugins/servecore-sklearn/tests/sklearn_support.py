"""Helpers of the servecore-sklearn tests (a module of its own, so that test modules can import
them; ``conftest`` cannot be imported reliably).

Servers are started with the servecore repository's own helper, ``tests/server_process.py`` at the
root of the checkout these tests live in.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT_TESTS = HERE.parents[2] / "tests"

if not (ROOT_TESTS / "server_process.py").is_file():
    raise ImportError(f"{ROOT_TESTS / 'server_process.py'} not found: run these tests from a servecore checkout")
if str(ROOT_TESTS) not in sys.path:
    sys.path.append(str(ROOT_TESTS))

from server_process import ServerProcess  # noqa: E402


def environ(env: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without servecore settings the test did not ask for, with this
    directory on PYTHONPATH (the server unpickles classes of sklearn_test_estimators)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("SERVECORE_") or k == "SERVECORE_PURE_PYTHON"}
    base["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p)
    return {**base, **(env or {})}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Trained:
    """A fitted estimator and rows to ask it about."""

    estimator: Any
    X: Any


# -- model repositories ------------------------------------------------------------------------------


@dataclass
class Repository:
    """``root/<model>/<version>/model.<suffix>`` with ``root/<model>/model.toml``."""

    root: Path
    artefacts: dict[str, Path] = field(default_factory=dict)

    def add(self, name: str, estimator: Any, *, fmt: str = "joblib", pin: bool | str = True, toml: str = "",
            version: str = "1") -> Path:
        """Save *estimator* as model *name*; *pin* True pins its digest, a string pins that digest."""
        import joblib
        import skops.io

        path = self.root / name / version / f"model.{fmt}"
        path.parent.mkdir(parents=True)
        if fmt == "skops":
            skops.io.dump(estimator, path)
        else:
            joblib.dump(estimator, path)
        digest = pin if isinstance(pin, str) else sha256(path)
        lines = [toml.strip()] if toml.strip() else []
        if pin:
            lines.append(f'[sha256]\n"{version}" = "{digest}"')
        if lines:
            (self.root / name / "model.toml").write_text("\n\n".join(lines) + "\n")
        self.artefacts[name] = path
        return path


# -- servers -----------------------------------------------------------------------------------------


def start(args: list[str], log_dir: Path, env: dict[str, str] | None = None) -> ServerProcess:
    server = ServerProcess(args, log_dir=log_dir)
    server.env = environ(env)
    return server.start(timeout=120)


@dataclass
class Failed:
    """A ``servecore serve`` that did not start."""

    returncode: int
    stderr: str
