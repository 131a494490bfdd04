"""Canonical JSON: the one byte form of a record, used both for hashing and on disk.

* objects with ``str`` keys only, written in sorted order (code point order), no duplicates;
* no insignificant whitespace (``,`` and ``:`` separators), UTF-8, non-ASCII written as is;
* integers in decimal; floats must be finite and are written with Python's shortest
  round-trip ``repr`` (``0.1``, ``1e+16``), so re-encoding a parsed line gives the same bytes;
* ``NaN``, ``Infinity``, lone surrogates, ``bytes`` and any other type are refused.

:func:`normalise` validates a value and copies it into plain ``dict``/``list``/``str``/``int``/
``float``/``bool``/``None``, so a caller mutating its mapping after handing it over changes
nothing. :func:`loads_canonical` parses a line strictly and checks that it *is* canonical (the
bytes re-encode to themselves), so an edit that keeps the JSON valid but changes the layout is
still caught.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from servecore.audit.errors import CanonicalError

_MAX_DEPTH = 64


def normalise(value: Any, *, _depth: int = 0) -> Any:
    """A plain, validated copy of *value*; raises :class:`CanonicalError` naming the problem."""
    if _depth > _MAX_DEPTH:
        raise CanonicalError(f"nested deeper than {_MAX_DEPTH} levels")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CanonicalError(f"{value!r} is not a finite number")
        return float(value)
    if isinstance(value, str):
        _check_text(value)
        return str(value)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise CanonicalError(f"object key {key!r} is not a string")
            _check_text(key)
            out[str(key)] = normalise(item, _depth=_depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        return [normalise(item, _depth=_depth + 1) for item in value]
    raise CanonicalError(f"{type(value).__name__} is not a JSON type")


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CanonicalError(f"string is not valid Unicode: {exc.reason}") from None


def dumps(value: Any) -> bytes:
    """The canonical bytes of *value*, which must already be :func:`normalise`-d (the writer's
    fast path); use :func:`encode` for arbitrary input."""
    try:
        text = json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise CanonicalError(str(exc)) from None
    return text.encode("utf-8")


def encode(value: Any) -> bytes:
    """Validate then encode: ``dumps(normalise(value))``."""
    return dumps(normalise(value))


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
    if encode(value) != data:
        raise CanonicalError("not in canonical form (key order, spacing or number format)")
    return value
