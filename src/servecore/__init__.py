"""servecore: a model-serving runtime for the Open Inference Protocol.

Importing this package is cheap and has no side effects: no web framework, backend library or
plugin is imported until a server or command asks for it.
"""

from __future__ import annotations

from servecore._version import __version__
from servecore.hookspecs import hookimpl

__all__ = ["__version__", "hookimpl"]
