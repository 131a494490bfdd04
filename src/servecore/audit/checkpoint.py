"""Signed checkpoints (signed tree heads), one canonical-JSON line each in ``checkpoints.jsonl``.

A checkpoint commits to the first ``tree_size`` records: ``root`` is their RFC 6962 tree head,
``last_hash`` the leaf hash of record ``tree_size - 1`` (so an edited last record is named
directly), ``frontier`` the perfect-subtree roots the tree continues from (so the log can still be
verified from here on after retention removed earlier segments), ``segment``/``offset`` where the
next record goes. The Ed25519 signature covers ``"servecore-audit-checkpoint\\n"`` followed by the
canonical JSON of every other field. Tree sizes only grow: a smaller or equal size after a larger
one is a replayed checkpoint.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from servecore.audit.canonical import encode, loads_canonical
from servecore.audit.errors import CanonicalError
from servecore.audit.keys import KeySet, SigningKey
from servecore.audit.merkle import root_from_frontier
from servecore.audit.records import SCHEMA_VERSION, format_ts, parse_ts, split_lines

_DOMAIN = b"servecore-audit-checkpoint\n"


@dataclass(frozen=True)
class Checkpoint:
    """One signed tree head."""

    origin: str
    tree_size: int
    root: str
    last_hash: str
    frontier: list[str]
    ts: str
    key_id: str
    segment: str
    offset: int
    sig: str = ""
    v: int = field(default=SCHEMA_VERSION)

    def body(self) -> dict[str, Any]:
        """Every field but the signature."""
        out = asdict(self)
        del out["sig"]
        return out

    def message(self) -> bytes:
        """The bytes the signature covers."""
        return _DOMAIN + encode(self.body())

    def to_line(self) -> bytes:
        return encode(asdict(self)) + b"\n"

    @property
    def ts_us(self) -> int:
        return parse_ts(self.ts)

    @classmethod
    def from_line(cls, line: bytes) -> Checkpoint:
        """Parse one line strictly (canonical JSON, every field of the right type)."""
        value = loads_canonical(line)
        if not isinstance(value, dict) or set(value) != _FIELDS:
            raise CanonicalError("not a checkpoint (wrong fields)")
        ints = ("tree_size", "offset", "v")
        strs = ("origin", "root", "last_hash", "ts", "key_id", "segment", "sig")
        if any(not isinstance(value[k], int) or isinstance(value[k], bool) for k in ints):
            raise CanonicalError("checkpoint field of the wrong type")
        if any(not isinstance(value[k], str) for k in strs) or not isinstance(
            value["frontier"], list
        ):
            raise CanonicalError("checkpoint field of the wrong type")
        if value["v"] != SCHEMA_VERSION:
            raise CanonicalError(f"unknown checkpoint version {value['v']}")
        try:
            parse_ts(value["ts"])
        except ValueError as exc:
            raise CanonicalError(str(exc)) from None
        return cls(**value)

    def check(self, keyset: KeySet) -> str | None:
        """None when the signature, key validity and frontier are right, else what is wrong."""
        key = keyset.get(self.key_id)
        if key is None:
            return f"signed with unknown key {self.key_id}"
        try:
            signature = base64.b64decode(self.sig, validate=True)
        except (binascii.Error, ValueError):
            return "signature is not base64"
        if not key.verify(signature, self.message()):
            return f"bad signature (key {self.key_id})"
        if not key.valid_at(self.ts_us):
            return f"key {self.key_id} was not valid at {self.ts}"
        try:
            frontier = [bytes.fromhex(h) for h in self.frontier]
        except ValueError:
            return "frontier is not hex"
        if len(frontier) != self.tree_size.bit_count():
            return "frontier does not fit the tree size"
        if root_from_frontier(frontier).hex() != self.root:
            return "frontier does not give the root"
        return None


_FIELDS = frozenset(Checkpoint.__dataclass_fields__)


def sign_checkpoint(
    key: SigningKey,
    *,
    origin: str,
    tree_size: int,
    root: bytes,
    last_hash: str,
    frontier: list[bytes],
    ts_us: int,
    segment: str,
    offset: int,
) -> Checkpoint:
    """Build and sign a checkpoint."""
    unsigned = Checkpoint(
        origin=origin, tree_size=tree_size, root=root.hex(), last_hash=last_hash,
        frontier=[h.hex() for h in frontier], ts=format_ts(ts_us), key_id=key.key_id,
        segment=segment, offset=offset,
    )
    sig = base64.b64encode(key.sign(unsigned.message())).decode()
    return Checkpoint(**{**asdict(unsigned), "sig": sig})


@dataclass
class CheckpointFile:
    """The parsed content of a checkpoint file."""

    checkpoints: list[Checkpoint]
    #: (line number, problem) of complete lines that are not checkpoints
    bad_lines: list[tuple[int, str]]
    #: bytes after the last newline (a checkpoint torn by a crash), and where they start
    torn_bytes: int
    good_size: int


def read_checkpoints(path: Path) -> CheckpointFile:
    """Read a checkpoint file (a missing file reads as empty)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return CheckpointFile([], [], 0, 0)
    lines, rest = split_lines(data)
    result = CheckpointFile([], [], len(rest), len(data) - len(rest))
    for number, (_, line) in enumerate(lines, 1):
        try:
            result.checkpoints.append(Checkpoint.from_line(line))
        except CanonicalError as exc:
            result.bad_lines.append((number, str(exc)))
    return result
