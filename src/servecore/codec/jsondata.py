"""Pure-Python twin of :mod:`servecore._native.jsondata`: JSON tensor data cut out of a request.

A V2 JSON request is mostly numbers: 512 floats take 10 kB and, parsed by orjson, 512 Python
floats and a list, which :func:`servecore.codec.reference.json_to_array` then turns into an
array. :func:`cut_json_data` reads those numbers straight into the array instead, and hands back
the rest of the document, small, for the JSON parser. This module is the specification; the
compiled twin returns the same for every input, only faster.

**The contract.** ``cut_json_data(raw)`` returns ``None`` or ``(text, cut)``:

* ``text`` is *raw* with some inputs' ``data`` arrays replaced by ``null``;
* ``cut`` maps each such input's index in ``inputs`` to ``(datatype, array)``: a 1-D array
  equal, element for element and in dtype, to what ``orjson.loads`` followed by
  ``json_to_array(data, datatype, len(data), name)`` gives for that array.

Parsing ``text`` then sees exactly the document *raw* is, with those arrays set aside. What the
scanner cannot prove it reads the way the JSON parser does, it does not cut, and when it cuts
nothing, or meets a document outside the subset below, it returns ``None`` (the caller parses
*raw* as before; every error comes from there). The subset:

* *raw* is one valid JSON object (RFC 8259: strict numbers, ``true``/``false``/``null``,
  whitespace around tokens only), nested at most :data:`MAX_DEPTH` deep;
* no string holds a backslash or a control character (so a string is the bytes between two
  quotes, and keys compare as bytes), and every string is valid UTF-8;
* no key repeats where it would matter: ``inputs`` at the top, ``datatype`` and ``data`` in an
  input.

Every input's ``data`` is cut, or the document is not: an input's ``data`` is cut when the
input's ``datatype`` member, a string, comes before it and is one of :data:`DATATYPES`, and
``data`` is a flat array of numbers each of which converts exactly and quietly (all or nothing:
a request the scanner leaves half read costs it a second parse, so it stops at the first data
it does not cut):

* FP32: a number's value is the float nearest the double nearest to it (what orjson and then
  numpy give; a number beyond the double range is left to orjson, which refuses it, and one
  whose cast overflows or underflows, which numpy would warn about, is left alone); an integer
  of at most 15 digits is exact.
* INT32 / INT64: integers only, at most 18 digits, in the type's range.

FP64 is not cut: clients write doubles with 16-17 significant digits, past the fast exact
conversion (15), and the exact one per number is slower than orjson.
* No number longer than :data:`MAX_NUMBER_BYTES`, and at most :data:`MAX_CUTS` inputs with data.

Nothing else is cut: nested data, booleans, other datatypes, a ``datatype`` given after
``data``. A request with any of those takes the ordinary path. Inputs without ``data`` (binary
tensor data) do not count.
"""

from __future__ import annotations

import re
from typing import Callable, Final

import numpy as np

#: Deepest nesting of arrays and objects the scanner follows (the document is then left alone).
MAX_DEPTH: Final[int] = 64
#: The datatypes whose data is cut, and the dtype of the array each gives.
DATATYPES: Final[dict[str, np.dtype]] = {
    "FP32": np.dtype(np.float32),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
}
#: Longest integer (digits) read as an exact float, and as an integer.
MAX_INT_DIGITS_FLOAT: Final[int] = 15
MAX_INT_DIGITS: Final[int] = 18
#: Longest number (bytes) that is cut.
MAX_NUMBER_BYTES: Final[int] = 64
#: Most inputs with data in a request that is cut.
MAX_CUTS: Final[int] = 64

_WS = re.compile(rb"[ \t\n\r]*")
_STRING = re.compile(rb'"[^"\\\x00-\x1f]*"')
_NUMBER = re.compile(rb"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_LITERALS = (b"true", b"false", b"null")
_INT_RANGES: Final[dict[str, tuple[int, int]]] = {"INT32": (-(2**31), 2**31 - 1), "INT64": (-(2**63), 2**63 - 1)}
_FLT_MIN: Final[float] = float(np.finfo(np.float32).tiny)


class _Outside(Exception):
    """The document is outside the subset the scanner reads (or is not valid JSON)."""


def convert(match: re.Match[bytes], datatype: str) -> float | int | None:
    """The value of a JSON number (*match*: of the number pattern) in an array of *datatype*, or
    None when it is not cut."""
    token = match.group()
    if len(token) > MAX_NUMBER_BYTES:
        return None
    is_int = match.group(1) is None and match.group(2) is None
    if datatype in _INT_RANGES:
        if not is_int or len(token.lstrip(b"-")) > MAX_INT_DIGITS:
            return None
        value = int(token)
        low, high = _INT_RANGES[datatype]
        return value if low <= value <= high else None
    if is_int:
        return float(int(token)) if len(token.lstrip(b"-")) <= MAX_INT_DIGITS_FLOAT else None
    double = float(token)
    if double in (float("inf"), float("-inf")):
        return None  # orjson refuses it
    magnitude = abs(double)
    # the cast to float32 would overflow (past the largest float, once rounded) or underflow
    if magnitude and (magnitude < _FLT_MIN or np.isinf(_to_float32(double))):
        return None
    return double


def _to_float32(double: float) -> np.float32:
    with np.errstate(over="ignore"):
        return np.float32(double)


class _Scanner:
    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.pos = 0
        self.cuts: list[tuple[int, int]] = []
        self.arrays: dict[int, tuple[str, np.ndarray]] = {}

    # -- tokens -------------------------------------------------------------------------------------

    def ws(self) -> None:
        match = _WS.match(self.raw, self.pos)
        assert match is not None  # matches the empty string
        self.pos = match.end()

    def peek(self) -> int:
        self.ws()
        if self.pos >= len(self.raw):
            raise _Outside
        return self.raw[self.pos]

    def expect(self, char: bytes) -> None:
        if self.peek() != char[0]:
            raise _Outside
        self.pos += 1

    def string(self) -> bytes:
        self.ws()
        match = _STRING.match(self.raw, self.pos)
        if match is None:
            raise _Outside  # not a string, an escape, a control character or no closing quote
        contents = match.group()[1:-1]
        if not contents.isascii():
            try:
                contents.decode("utf-8")
            except UnicodeDecodeError:
                raise _Outside from None
        self.pos = match.end()
        return contents

    def number(self) -> re.Match[bytes]:
        match = _NUMBER.match(self.raw, self.pos)
        if match is None:
            raise _Outside
        self.pos = match.end()
        return match

    # -- values -------------------------------------------------------------------------------------

    def value(self, depth: int) -> None:
        """Skip one JSON value, checking it."""
        char = self.peek()
        if char == ord("{"):
            self.members(depth + 1, lambda key: self.value(depth + 1))
        elif char == ord("["):
            self.elements(depth + 1, lambda index: self.value(depth + 1))
        elif char == ord('"'):
            self.string()
        elif char == ord("-") or ord("0") <= char <= ord("9"):
            self.number()
        else:
            for literal in _LITERALS:
                if self.raw.startswith(literal, self.pos):
                    self.pos += len(literal)
                    return
            raise _Outside

    def members(self, depth: int, member: Callable[[bytes], None]) -> None:
        """An object whose values *member* (called with each key) reads."""
        if depth > MAX_DEPTH:
            raise _Outside
        self.expect(b"{")
        if self.peek() == ord("}"):
            self.pos += 1
            return
        while True:
            key = self.string()
            self.expect(b":")
            member(key)
            if self.peek() == ord(","):
                self.pos += 1
                continue
            self.expect(b"}")
            return

    def elements(self, depth: int, element: Callable[[int], None]) -> None:
        """An array whose elements *element* (called with each index) reads."""
        if depth > MAX_DEPTH:
            raise _Outside
        self.expect(b"[")
        if self.peek() == ord("]"):
            self.pos += 1
            return
        index = 0
        while True:
            element(index)
            index += 1
            if self.peek() == ord(","):
                self.pos += 1
                continue
            self.expect(b"]")
            return

    # -- the request --------------------------------------------------------------------------------

    def document(self) -> None:
        seen_inputs = False

        def top(key: bytes) -> None:
            nonlocal seen_inputs
            if key != b"inputs":
                self.value(1)
                return
            if seen_inputs:
                raise _Outside
            seen_inputs = True
            if self.peek() == ord("["):
                self.elements(2, self.an_input)
            else:
                self.value(1)

        self.members(1, top)
        self.ws()
        if self.pos != len(self.raw):
            raise _Outside

    def an_input(self, index: int) -> None:
        if self.peek() != ord("{"):
            self.value(2)
            return
        keys: set[bytes] = set()
        datatype: str | None = None

        def member(key: bytes) -> None:
            nonlocal datatype
            if key in (b"datatype", b"data"):
                if key in keys:
                    raise _Outside
                keys.add(key)
            if key == b"datatype" and self.peek() == ord('"'):
                datatype = self.string().decode("latin-1")
            elif key == b"data":
                if datatype not in DATATYPES or self.peek() != ord("[") or len(self.cuts) >= MAX_CUTS:
                    raise _Outside  # data that is not cut: all of the document is orjson's
                self.data(index, datatype)
            else:
                self.value(3)

        self.members(3, member)

    def data(self, index: int, datatype: str) -> None:
        """A ``data`` array, cut: flat, all numbers, all converted (else the document is not cut)."""
        start = self.pos
        self.pos += 1  # the "["
        values: list[float | int] = []
        while True:
            char = self.peek()
            if not (char == ord("-") or ord("0") <= char <= ord("9")):
                if char == ord("]") and not values:
                    self.pos += 1
                    break
                raise _Outside
            converted = convert(self.number(), datatype)
            if converted is None:
                raise _Outside
            values.append(converted)
            char = self.peek()
            self.pos += 1
            if char == ord("]"):
                break
            if char != ord(","):
                raise _Outside
        self.cuts.append((start, self.pos))
        self.arrays[index] = (datatype, np.array(values, dtype=DATATYPES[datatype]))


def cut_json_data(raw: bytes | memoryview) -> tuple[bytes, dict[int, tuple[str, np.ndarray]]] | None:
    """*raw* with its inputs' numeric ``data`` arrays set aside (see the module docstring)."""
    scanner = _Scanner(bytes(raw))
    try:
        scanner.document()
    except _Outside:
        return None
    if not scanner.cuts:
        return None
    pieces = []
    last = 0
    for start, end in scanner.cuts:
        pieces += [scanner.raw[last:start], b"null"]
        last = end
    pieces.append(scanner.raw[last:])
    return b"".join(pieces), scanner.arrays
