"""``servecore`` with a spy on the HTTP fast path, for tests/http/test_fastpath.py.

Run as ``python tests/fastpath_probe.py serve ...`` with ``FASTPATH_PROBE_LOG`` naming a file:
every call of :meth:`servecore.http.fastpath.FastInfer.handle` is passed through unchanged and
logged there as one line, ``<X-Case header or -> <1 taken | 0 declined>``, after it returns.
Nothing else differs from ``python -m servecore``; a server started with ``--no-fast-path`` never
calls ``handle``, so its log stays empty.
"""

from __future__ import annotations

from typing import Any

#: the environment variable naming the log file
LOG_ENV = "FASTPATH_PROBE_LOG"
#: the request header whose value names a request in the log
CASE_HEADER = b"x-case"


def install(log_path: str) -> None:
    from servecore.http import fastpath

    log = open(log_path, "a", buffering=1, encoding="utf-8")  # line-buffered: one write per call
    original = fastpath.FastInfer.handle

    def handle(self: fastpath.FastInfer, cycle: Any, token: Any, body: bytes) -> bool:
        taken = original(self, cycle, token, body)
        case = next((v.decode("latin-1") for k, v in cycle.scope["headers"] if k == CASE_HEADER), "-")
        log.write(f"{case} {int(taken)}\n")
        return taken

    fastpath.FastInfer.handle = handle  # type: ignore[method-assign]


def main() -> None:
    from probes import serve_with

    serve_with(install, LOG_ENV)


if __name__ == "__main__":
    main()
