"""What the probe scripts (tests/fastpath_probe.py, tests/gc_probe.py) share: running servecore
with a probe installed, as ``python -m servecore`` would run it."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path


def serve_with(install: Callable[[str], None], env: str) -> None:
    """Install the probe with the value of environment variable *env*, then run servecore's CLI."""
    here = str(Path(__file__).resolve().parent)
    if sys.path and os.path.abspath(sys.path[0]) == here:
        del sys.path[0]  # the tests' helper modules must not shadow anything the server imports
    install(os.environ[env])
    from servecore.cli import main as servecore_main

    sys.argv[0] = "servecore"
    servecore_main()
