"""``servecore`` that keeps its cyclic garbage for inspection, for tests/http/test_garbage.py.

Run as ``python tests/gc_probe.py serve ...`` with ``GC_PROBE_FILE`` naming a file. The collector
runs with ``gc.DEBUG_SAVEALL``, so every object it finds unreachable (only objects in reference
cycles: refcounting frees the rest the moment they are dropped) is kept in ``gc.garbage`` instead
of being freed. On ``SIGUSR1`` the server collects and writes ``{"garbage": N, "types": {...}}``
(how many objects, by type name) to that file, then renames it into place, so a reader never
sees half a file. Nothing else differs from ``python -m servecore``.
"""

from __future__ import annotations

import collections
import gc
import json
import os
import signal
from typing import Any

#: the environment variable naming the report file
FILE_ENV = "GC_PROBE_FILE"


def _name(obj: object) -> str:
    """The type's name; for a function, also its own (``function:module.qualname``)."""
    kind = type(obj).__qualname__
    if kind == "function":
        return f"{kind}:{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', '?')}"
    return kind


def install(path: str) -> None:
    gc.set_debug(gc.DEBUG_SAVEALL)

    def report(signum: int, frame: Any) -> None:
        gc.collect()
        types = collections.Counter(_name(o) for o in gc.garbage)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as out:
            out.write(json.dumps({"garbage": len(gc.garbage), "types": dict(types)}))  # the C encoder: no cycles of its own
        os.replace(tmp, path)

    signal.signal(signal.SIGUSR1, report)


def main() -> None:
    from probes import serve_with

    serve_with(install, FILE_ENV)


if __name__ == "__main__":
    main()
