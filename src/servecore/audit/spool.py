"""Erasures made while a server holds the log (``servecore audit erase`` on a locked log).

The CLI destroys the subject's key at once and leaves one JSON file per erasure in
``DIR/erasures.pending/``; the writer of the running log polls that directory, writes an
``erasure`` record for each file and deletes the file once the record is written. A file left by
a crash is picked up at the next start (at worst the erasure is recorded twice).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from servecore.audit.events import erasure_record
from servecore.audit.records import ERASURE_SPOOL, format_ts

logger = logging.getLogger("servecore.audit")


def write_spool(
    directory: Path, pid: str, generation: str | None, legal_basis: str | None
) -> Path:
    """Leave an erasure for the log's writer; returns the file."""
    spool = Path(directory) / ERASURE_SPOOL
    spool.mkdir(exist_ok=True)
    entry = {"pid": pid, "key_generation": generation, "legal_basis": legal_basis,
             "requested": format_ts(time.time_ns() // 1000)}
    tmp = spool / f".{pid}.tmp"
    tmp.write_text(json.dumps(entry))
    target = spool / f"{pid}-{time.time_ns()}.json"
    os.replace(tmp, target)
    return target


def read_spool(directory: Path) -> list[tuple[Path, dict[str, Any]]]:
    """(file, erasure record) of each pending erasure; unreadable files are skipped and logged."""
    spool = Path(directory) / ERASURE_SPOOL
    if not spool.is_dir():
        return []
    out = []
    for path in sorted(spool.glob("*.json")):
        try:
            entry = json.loads(path.read_bytes())
            record = erasure_record(
                str(entry["pid"]), entry.get("key_generation"), entry.get("legal_basis"),
                via="cli", requested=entry.get("requested"),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("ignoring erasure spool file %s: %s", path.name, exc)
            continue
        out.append((path, record))
    return out
