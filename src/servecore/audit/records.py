"""The record layout shared by the writer, the start-up scan and the verifier.

Every line of a segment file is one record in canonical JSON followed by ``\\n``. The writer adds
the header fields to each submitted event:

``v``        schema version (:data:`SCHEMA_VERSION`)
``seq``      gap-free sequence number, starting at 0; it is also the record's Merkle leaf index
``ts``       UTC time, RFC 3339 with microseconds (``2026-05-01T12:00:00.123456Z``)
``mono_ns``  the writer process's monotonic clock, nanoseconds (resets when the process does)
``prev``     hex leaf hash of record ``seq - 1`` (64 zeros for seq 0)

The leaf hash of a record is ``SHA-256(0x00 || line without its newline)``.
Segment files are ``audit-<first seq, 12 digits>.jsonl``; checkpoints live in
``checkpoints.jsonl`` next to them.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from servecore.audit.canonical import encode, loads_canonical
from servecore.audit.errors import CanonicalError

SCHEMA_VERSION = 1
HEADER_FIELDS = frozenset({"v", "seq", "ts", "mono_ns", "prev"})
ZERO_HASH = "0" * 64
CHECKPOINTS = "checkpoints.jsonl"
KEYSET_COPY = "signing-keys.json"
LOCK_FILE = ".lock"
ERASURE_SPOOL = "erasures.pending"

_SEGMENT = re.compile(r"^audit-(\d+)\.jsonl$")
_TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


_second_cache: tuple[int, str] = (-1, "")


def format_ts(us: int) -> str:
    """RFC 3339 UTC text of *us* microseconds since the epoch."""
    global _second_cache
    seconds, micro = divmod(us, 1_000_000)
    cached_second, prefix = _second_cache
    if seconds != cached_second:
        prefix = datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        _second_cache = (seconds, prefix)
    return f"{prefix}.{micro:06d}Z"


def parse_ts(text: str) -> int:
    """Microseconds since the epoch of an RFC 3339 time; a time without a zone is taken as UTC.

    Accepts the writer's own form and looser ISO forms (``2026-05-01``, ``...+02:00``) for the
    CLI's ``--from``/``--to``.
    """
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    delta = when - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def utc_day(us: int) -> str:
    """The UTC date (``YYYY-MM-DD``) of a time in microseconds."""
    return format_ts(us)[:10]


def segment_name(first_seq: int) -> str:
    """The file name of the segment whose first record is *first_seq*."""
    return f"audit-{first_seq:012d}.jsonl"


def list_segments(directory: Path) -> list[tuple[int, Path]]:
    """(first seq, path) of every segment file in *directory*, in seq order."""
    found = []
    for path in directory.iterdir():
        match = _SEGMENT.match(path.name)
        if match and path.is_file():
            found.append((int(match.group(1)), path))
    found.sort()
    return found


def parse_record(line: bytes) -> dict[str, Any]:
    """One record (without its newline), strictly: canonical JSON with a valid header."""
    value = loads_canonical(line)
    if not isinstance(value, dict):
        raise CanonicalError("a record is not a JSON object")
    if value.get("v") != SCHEMA_VERSION:
        raise CanonicalError(f"unknown schema version {value.get('v')!r}")
    seq = value.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise CanonicalError(f"bad seq {seq!r}")
    ts = value.get("ts")
    if not isinstance(ts, str) or not _TS.match(ts):
        raise CanonicalError(f"bad ts {ts!r}")
    mono = value.get("mono_ns")
    if not isinstance(mono, int) or isinstance(mono, bool):
        raise CanonicalError(f"bad mono_ns {mono!r}")
    prev = value.get("prev")
    if not isinstance(prev, str) or not _HEX64.match(prev):
        raise CanonicalError(f"bad prev {prev!r}")
    if not isinstance(value.get("event"), str):
        raise CanonicalError("no event type")
    return value


# The writer fills these slots in. A needle includes its key and the quotes around the value,
# which no submitted string can contain unescaped, and a token random per process.
_TOKEN = secrets.token_hex(8)
_SLOT_KEYS = ("mono_ns", "prev", "seq", "ts")  # in canonical (sorted) order
_SLOTS = dict.fromkeys(_SLOT_KEYS, f"@{_TOKEN}@")
_NEEDLES = [(f'"{key}":'.encode(), f'"{key}":"@{_TOKEN}@"'.encode()) for key in _SLOT_KEYS]

Template = tuple[bytes, bytes, bytes, bytes, bytes]


def make_template(event: Mapping[str, Any]) -> Template:
    """The canonical encoding of *event* with its header, cut where the writer fills in
    ``mono_ns``, ``prev``, ``seq`` and ``ts`` (in that key order). Raises
    :class:`CanonicalError` for an event that cannot be encoded."""
    reserved = HEADER_FIELDS.intersection(event)
    if reserved:
        raise CanonicalError(f"audit events may not set {sorted(reserved)}")
    data = encode({**event, **_SLOTS, "v": SCHEMA_VERSION})
    cuts = []
    start = 0
    for key, needle in _NEEDLES:
        at = data.index(needle, start)
        cuts.append((start, at + len(key)))
        start = at + len(needle)
    (a, b), (c, d), (e, f), (g, h) = cuts
    return data[a:b], data[c:d], data[e:f], data[g:h], data[start:]


def fill(template: Template, *, seq: int, prev: str, ts_us: int, mono_ns: int) -> bytes:
    """The record line (without newline) of a template."""
    a, b, c, d, e = template
    return b"".join((
        a, str(mono_ns).encode(), b, b'"', prev.encode(), b'"', c, str(seq).encode(), d,
        b'"', format_ts(ts_us).encode(), b'"', e,
    ))


def split_lines(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """(offset, line) of every newline-terminated line of *data*, and the unterminated rest."""
    lines: list[tuple[int, bytes]] = []
    start = 0
    while True:
        end = data.find(b"\n", start)
        if end < 0:
            return lines, data[start:]
        lines.append((start, data[start:end]))
        start = end + 1
