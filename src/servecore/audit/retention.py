"""Retention by calendar: which whole segments may go.

A segment expires ``months`` calendar months after its last record (the AI Act's "at least six
months", Art. 19(1)/26(6), counted by calendar rather than as 183 days: 31 August + 6 months is
28/29 February). It is removed only if it is not the segment being written and a checkpoint
ends exactly where the next segment starts (the writer signs one at every rotation), so the
remaining log still verifies from a signed root. Only the oldest run of segments is removed,
never one in the middle.
"""

from __future__ import annotations

import calendar
import itertools
import os
from datetime import datetime, timezone
from pathlib import Path

from servecore.audit.records import parse_record, parse_ts


def add_months(us: int, months: int) -> int:
    """*us* (µs since the epoch, UTC) plus *months* calendar months, the day clamped to the
    month's length."""
    when = datetime.fromtimestamp(us // 1_000_000, timezone.utc)
    total = when.year * 12 + (when.month - 1) + months
    year, month = divmod(total, 12)
    day = min(when.day, calendar.monthrange(year, month + 1)[1])
    moved = when.replace(year=year, month=month + 1, day=day)
    return int(moved.timestamp()) * 1_000_000 + us % 1_000_000


def last_record_us(path: Path) -> int | None:
    """The time of a segment's last complete record (None for an empty segment)."""
    size = path.stat().st_size
    chunk = 65_536
    with open(path, "rb") as f:
        while True:
            start = max(0, size - chunk)
            f.seek(start)
            data = f.read(size - start)
            end = data.rfind(b"\n")
            if end < 0:
                return None
            begin = data.rfind(b"\n", 0, end) + 1
            if begin > 0 or start == 0:
                return parse_ts(parse_record(data[begin:end])["ts"])
            chunk *= 4


def expired_prefix(
    segments: list[tuple[int, Path]], checkpoint_sizes: set[int], *, now_us: int, months: int
) -> list[tuple[int, Path, int]]:
    """(first seq, path, next segment's first seq) of the oldest segments that may be removed."""
    out = []
    for (first, path), (next_first, _) in itertools.pairwise(segments):
        last = last_record_us(path)
        if last is None or add_months(last, months) > now_us:
            break
        if next_first not in checkpoint_sizes:
            break
        out.append((first, path, next_first))
    return out


def remove(paths: list[Path]) -> None:
    """Delete segment files and make their removal durable."""
    for path in paths:
        path.unlink(missing_ok=True)
    if paths:
        fd = os.open(paths[0].parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
