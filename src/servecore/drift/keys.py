"""Category keys: how a raw value becomes a vocabulary key, the same way everywhere.

The profile builder, both categorical histograms (compiled and twin) and the profile loader use
:func:`category_key`, so a value maps to the same key at reference time and at serving time.

* ``str`` (and ``numpy.str_``): cut to :data:`RAW_CHARS` characters, normalised to NFC, then cut to
  :data:`MAX_KEY_CHARS` characters (the first cut bounds the work a huge string costs; a string
  whose first 128 normalised characters need more than 1,024 raw ones is a pathological one).
  The empty string is missing (:attr:`Special.NULL`).
* ``bytes``: decoded as UTF-8 (invalid sequences replaced by U+FFFD), then as a ``str``.
* ``bool`` (and ``numpy.bool_``): ``"true"`` / ``"false"``.
* integers and real floats (Python or numpy): canonical decimal text by value, so ``1``, ``1.0``
  and ``numpy.float32(1)`` share the key ``"1"`` (and ``-0.0`` is ``"0"``). An integral value
  below 2**53 in magnitude is written as an integer; any other value as the shortest ``repr`` of
  the nearest float64 (``"0.1"``, ``"1e+300"``, ``"inf"``); NaN is missing.
* ``None`` is missing; anything else (lists, complex numbers, dates, ...) is a wrong type
  (:attr:`Special.WRONG_TYPE`).
"""

from __future__ import annotations

import enum
import math
import unicodedata

import numpy as np

#: the longest key, in characters (whylogs' cap for frequent items)
MAX_KEY_CHARS = 128
#: a string is cut to this many characters before normalisation
RAW_CHARS = 1024
#: the name of the bucket for values outside the vocabulary, in reports
OTHER = "__other__"
#: the name of the bucket for missing values, in reports
NULL = "__null__"

_INT_EXACT = 2**53


class Special(enum.Enum):
    """What :func:`category_key` returns for a value that is not a key."""

    NULL = "null"
    WRONG_TYPE = "wrong_type"


def normalise_text(text: str) -> str:
    """*text* as a key: cut to :data:`RAW_CHARS`, NFC-normalised, cut to :data:`MAX_KEY_CHARS`."""
    if len(text) > RAW_CHARS:
        text = text[:RAW_CHARS]
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
    return text[:MAX_KEY_CHARS]


def number_key(value: float) -> str:
    """The canonical text of a real number (not NaN), by value."""
    if isinstance(value, int):
        if -_INT_EXACT < value < _INT_EXACT:
            return str(value)
        try:
            return repr(float(value))
        except OverflowError:
            return "inf" if value > 0 else "-inf"
    if value.is_integer() and -_INT_EXACT < value < _INT_EXACT:
        return str(int(value))
    return repr(value)


def category_key(value: object) -> str | Special:
    """The vocabulary key of *value*, or why it has none (see the module docstring)."""
    if isinstance(value, str):
        return normalise_text(value) if value else Special.NULL
    if value is None:
        return Special.NULL
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return number_key(int(value))
    if isinstance(value, (float, np.floating)):
        number = float(value)
        return Special.NULL if math.isnan(number) else number_key(number)
    if isinstance(value, (bytes, bytearray)):
        return category_key(bytes(value).decode("utf-8", "replace"))
    return Special.WRONG_TYPE
