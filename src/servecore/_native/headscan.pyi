"""Type stubs for the compiled twin of :mod:`servecore.http.headscan` (``headscan.pyx``)."""

from typing import Final

METHODS: Final[tuple[str, ...]]
MAX_LENGTH_DIGITS: Final[int]  # = 18; C: enum _MAX_LENGTH_DIGITS, so the length fits a uint64_t

def scan_request(
    data: bytes, start: int, max_head: int
) -> tuple[str, bytes, str, list[tuple[bytes, bytes]], bool, bytes, int] | None:
    """The plain request in ``data[start:]``, or None (see the twin)."""
