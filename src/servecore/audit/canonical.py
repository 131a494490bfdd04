"""Canonical JSON: the one byte form of a record, used both for hashing and on disk.

* objects with ``str`` keys only, written in sorted order (code point order), no duplicates;
* no insignificant whitespace (``,`` and ``:`` separators), UTF-8, non-ASCII written as is;
* integers in decimal; floats must be finite and are written with Python's shortest
  round-trip ``repr`` (``0.1``, ``1e+16``), so re-encoding a parsed line gives the same bytes;
* ``NaN``, ``Infinity``, lone surrogates, non-string keys, ``bytes`` and any other type are
  refused.

:func:`encode` is the C JSON encoder with those settings behind a small walk that refuses what
the encoder would quietly convert (non-string keys). Encoding snapshots the value, so a caller
mutating its mapping afterwards changes nothing. :func:`loads_canonical` parses a line strictly
and checks that it *is* canonical (the bytes re-encode to themselves), so an edit that keeps the
JSON valid but changes the layout is still caught.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from servecore.audit.errors import CanonicalError

_MAX_DEPTH = 64


def check(value: Any, *, _depth: int = 0) -> None:
    """Refuse what the JSON encoder would otherwise let through: object keys that are not
    strings (it would write ``{2: .., 10: ..}`` as ``{"2":..,"10":..}``, out of order) and
    nesting deeper than 64 levels. Numbers, strings and types are checked by :func:`dumps`."""
    if _depth > _MAX_DEPTH:
        raise CanonicalError(f"nested deeper than {_MAX_DEPTH} levels")
    kind = type(value)
    if kind is list or kind is tuple:
        for item in value:
            if type(item) not in _SCALARS:
                check(item, _depth=_depth + 1)
        return
    if kind is not dict and not isinstance(value, Mapping):
        if isinstance(value, (list, tuple)):
            check(list(value), _depth=_depth)
        return  # a scalar, or a type dumps() refuses
    for key, item in value.items():
        if type(key) is not str and not isinstance(key, str):
            raise CanonicalError(f"object key {key!r} is not a string")
        if type(item) not in _SCALARS:
            check(item, _depth=_depth + 1)


_SCALARS = frozenset({str, int, float, bool, type(None)})


def dumps(value: Any) -> bytes:
    """The canonical bytes of a value that passed :func:`check` (the writer's fast path); use
    :func:`encode` for arbitrary input."""
    try:
        return _ENCODER.encode(value).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CanonicalError(f"string is not valid Unicode: {exc.reason}") from None
    except ValueError as exc:  # NaN and infinities
        raise CanonicalError(f"{exc} (only finite numbers)") from None
    except (TypeError, RecursionError) as exc:
        raise CanonicalError(str(exc)) from None


_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)


def encode(value: Any) -> bytes:
    """Validate then encode: the canonical bytes of *value*."""
    check(value)
    return dumps(value)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, item in pairs:
        if key in out:
            raise CanonicalError(f"duplicate key {key!r}")
        out[key] = item
    return out


def _no_constant(name: str) -> Any:
    raise CanonicalError(f"{name} is not allowed")


def loads(data: bytes) -> Any:
    """Parse JSON strictly: UTF-8, no duplicate keys, no ``NaN``/``Infinity``."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CanonicalError(f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise CanonicalError(f"not JSON: {exc.msg} at column {exc.colno}") from None
    except RecursionError:
        raise CanonicalError("nested too deeply") from None


def loads_canonical(data: bytes) -> Any:
    """Parse *data* strictly and check that it is exactly the canonical encoding of its value."""
    value = loads(data)
    if dumps(value) != data:
        raise CanonicalError("not in canonical form (key order, spacing or number format)")
    return value
