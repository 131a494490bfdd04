"""The snapshot format of the per-window states: one byte layout for both implementations.

Both histogram implementations (compiled and twin) pack and unpack through these functions, so
their snapshots are byte-identical for equal states and each loads the other's. A snapshot is a
frame::

    magic  b"SCDS"        4 bytes
    version               uint16   (FORMAT_VERSION)
    kind                  uint8    (1 numeric histogram, 2 categorical histogram, 3 window)
    reserved              uint8    (0)
    body length           uint32
    body                  body-length bytes (little-endian throughout)
    crc32                 uint32 of everything before it (zlib.crc32)

A numeric body holds the edges, the B+2 counts, the counters and the Welford triple with min and
max; a categorical body holds its vocabulary, the K+2 counts and the wrong-type counter. Both
are self-contained, so a snapshot loads without its profile; whoever merges states checks that
they share the profile's layout. Unpacking checks the frame (size, magic, version, kind, CRC)
and then the content (finite increasing edges, counts consistent with ``n``, sane statistics)
and raises :class:`~servecore.drift.errors.SnapshotError` naming the first problem.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from servecore.drift.errors import SnapshotError
from servecore.drift.keys import normalise_text

MAGIC = b"SCDS"
FORMAT_VERSION = 1
KIND_NUMERIC = 1
KIND_CATEGORICAL = 2
KIND_WINDOW = 3
UINT64_MAX = 2**64 - 1

_HEADER = struct.Struct("<4sHBBI")
_CRC = struct.Struct("<I")
_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")
_NUMERIC_TAIL = struct.Struct("<6Q4d")
_KIND_NAMES = {KIND_NUMERIC: "numeric", KIND_CATEGORICAL: "categorical", KIND_WINDOW: "window"}


@dataclass(frozen=True, slots=True)
class NumericSnapshot:
    """The content of a numeric histogram snapshot."""

    edges: np.ndarray  # float64, B+1
    counts: np.ndarray  # uint64, B+2
    n_nan: int
    n_pinf: int
    n_ninf: int
    n_null: int
    n_wrongtype: int
    n: int
    mean: float
    m2: float
    min: float
    max: float


@dataclass(frozen=True, slots=True)
class CategoricalSnapshot:
    """The content of a categorical histogram snapshot."""

    vocabulary: tuple[str, ...]
    counts: np.ndarray  # uint64, K+2
    n_wrongtype: int


# --------------------------------------------------------------------------------------------
# Frames


def frame(kind: int, body: bytes) -> bytes:
    """*body* in a frame of *kind*: header, body, CRC32."""
    head = _HEADER.pack(MAGIC, FORMAT_VERSION, kind, 0, len(body)) + body
    return head + _CRC.pack(zlib.crc32(head))


def unframe(data: bytes | bytearray | memoryview, kind: int) -> memoryview:
    """The body of the frame *data*, checked to be of *kind* and intact."""
    view = memoryview(data).cast("B")
    what = _KIND_NAMES[kind]
    if len(view) < _HEADER.size + _CRC.size:
        raise SnapshotError(f"{what} snapshot is truncated: {len(view)} bytes")
    magic, version, got, _, length = _HEADER.unpack_from(view)
    if magic != MAGIC:
        raise SnapshotError(f"not a drift snapshot: magic {bytes(magic)!r}, expected {MAGIC!r}")
    if version != FORMAT_VERSION:
        raise SnapshotError(
            f"{what} snapshot has format version {version}; this build reads {FORMAT_VERSION}"
        )
    if got != kind:
        raise SnapshotError(
            f"expected a {what} snapshot, got kind {_KIND_NAMES.get(got, got)!r}"
        )
    if len(view) != _HEADER.size + length + _CRC.size:
        raise SnapshotError(
            f"{what} snapshot is torn: header says {length} body bytes, "
            f"{len(view) - _HEADER.size - _CRC.size} present"
        )
    end = _HEADER.size + length
    (crc,) = _CRC.unpack_from(view, end)
    if zlib.crc32(view[:end]) != crc:
        raise SnapshotError(f"{what} snapshot is corrupt: CRC32 mismatch")
    return view[_HEADER.size : end]


class _Reader:
    """Reads a body front to back, failing cleanly when it runs short."""

    def __init__(self, body: memoryview, what: str) -> None:
        self.body = body
        self.pos = 0
        self.what = what

    def take(self, size: int) -> memoryview:
        if size < 0 or self.pos + size > len(self.body):
            raise SnapshotError(f"{self.what} snapshot body is too short")
        piece = self.body[self.pos : self.pos + size]
        self.pos += size
        return piece

    def unpack(self, fmt: struct.Struct) -> tuple[Any, ...]:
        return fmt.unpack(self.take(fmt.size))

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size), "little")

    def array(self, dtype: str, count: int) -> np.ndarray:
        size = np.dtype(dtype).itemsize
        return np.frombuffer(self.take(count * size), dtype=dtype).astype(dtype[1:])

    def done(self) -> None:
        if self.pos != len(self.body):
            raise SnapshotError(
                f"{self.what} snapshot body has {len(self.body) - self.pos} trailing bytes"
            )


# --------------------------------------------------------------------------------------------
# Numeric


def pack_numeric(
    edges: np.ndarray,
    counts: np.ndarray,
    counters: tuple[int, int, int, int, int, int],
    stats: tuple[float, float, float, float],
) -> bytes:
    """Snapshot bytes of a numeric state.

    :param counters: ``(n_nan, n_pinf, n_ninf, n_null, n_wrongtype, n)``.
    :param stats: ``(mean, m2, min, max)``.
    """
    body = (
        _U32.pack(len(edges))
        + np.ascontiguousarray(edges, dtype="<f8").tobytes()
        + np.ascontiguousarray(counts, dtype="<u8").tobytes()
        + _NUMERIC_TAIL.pack(*counters, *stats)
    )
    return frame(KIND_NUMERIC, body)


def unpack_numeric(data: bytes | bytearray | memoryview) -> NumericSnapshot:
    """The content of numeric snapshot bytes, checked."""
    read = _Reader(unframe(data, KIND_NUMERIC), "numeric")
    n_edges = read.uint(4)
    edges = read.array("<f8", n_edges)
    counts = read.array("<u8", n_edges + 1)
    tail = read.unpack(_NUMERIC_TAIL)
    read.done()
    n_nan, n_pinf, n_ninf, n_null, n_wrongtype, n = (int(v) for v in tail[:6])
    mean, m2, lo, hi = (float(v) for v in tail[6:])
    if n_edges < 2 or not np.all(np.isfinite(edges)) or not np.all(np.diff(edges) > 0):
        raise SnapshotError("numeric snapshot has invalid edges (need >= 2, finite, increasing)")
    _check_total(counts, n, "numeric")
    if n == 0:
        if (mean, m2, lo, hi) != (0.0, 0.0, math.inf, -math.inf):
            raise SnapshotError("numeric snapshot of no values has statistics")
    elif not (lo <= hi) or math.isnan(lo) or m2 < 0:
        raise SnapshotError(f"numeric snapshot has inconsistent statistics: min {lo}, max {hi}")
    return NumericSnapshot(edges, counts, n_nan, n_pinf, n_ninf, n_null, n_wrongtype, n,
                           mean, m2, lo, hi)


def _check_total(counts: np.ndarray, n: int, what: str) -> None:
    """Unless a counter saturated, *n* must be the sum of the binned *counts*."""
    if n == UINT64_MAX or (counts == UINT64_MAX).any():
        return
    total = sum(int(c) for c in counts)
    if total != n:
        raise SnapshotError(f"{what} snapshot counts add up to {total}, not n = {n}")


# --------------------------------------------------------------------------------------------
# Categorical


def pack_categorical(vocabulary: tuple[str, ...], counts: np.ndarray, n_wrongtype: int) -> bytes:
    """Snapshot bytes of a categorical state (*counts*: vocabulary, ``__other__``, null)."""
    parts = [_U32.pack(len(vocabulary))]
    for key in vocabulary:
        raw = key.encode("utf-8", "surrogatepass")
        parts.append(_U16.pack(len(raw)) + raw)
    parts.append(np.ascontiguousarray(counts, dtype="<u8").tobytes())
    parts.append(struct.pack("<Q", n_wrongtype))
    return frame(KIND_CATEGORICAL, b"".join(parts))


def unpack_categorical(data: bytes | bytearray | memoryview) -> CategoricalSnapshot:
    """The content of categorical snapshot bytes, checked."""
    read = _Reader(unframe(data, KIND_CATEGORICAL), "categorical")
    k = read.uint(4)
    keys = []
    for _ in range(k):
        size = read.uint(2)
        try:
            keys.append(bytes(read.take(size)).decode("utf-8", "surrogatepass"))
        except UnicodeDecodeError as exc:
            raise SnapshotError(f"categorical snapshot has an undecodable key: {exc}") from exc
    counts = read.array("<u8", k + 2)
    n_wrongtype = read.uint(8)
    read.done()
    vocabulary = tuple(keys)
    if len(set(vocabulary)) != k or any(not key or normalise_text(key) != key for key in keys):
        raise SnapshotError("categorical snapshot has duplicate, empty or unnormalised keys")
    return CategoricalSnapshot(vocabulary, counts, n_wrongtype)
