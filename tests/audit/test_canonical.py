"""Canonical JSON: one byte form per value; everything ambiguous is refused."""

from __future__ import annotations

import math

import pytest

from servecore.audit.canonical import encode, loads, loads_canonical
from servecore.audit.errors import CanonicalError


def test_sorted_keys_compact_utf8() -> None:
    assert encode({"b": 1, "a": [True, None, "é"], "A": {"z": 0, "y": -1}}) == (
        '{"A":{"y":-1,"z":0},"a":[true,null,"é"],"b":1}'.encode()
    )


def test_keys_sort_by_code_point() -> None:
    assert encode({"é": 1, "z": 2, "Z": 3}) == '{"Z":3,"z":2,"é":1}'.encode()


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, {"x": [1.0, math.nan]}])
def test_non_finite_numbers_are_refused(value: object) -> None:
    with pytest.raises(CanonicalError, match="finite"):
        encode(value)


@pytest.mark.parametrize("value", [b"bytes", {1: "int key"}, {("a",): 1}, {1, 2}, object()])
def test_non_json_types_are_refused(value: object) -> None:
    with pytest.raises(CanonicalError):
        encode(value)


def test_lone_surrogate_is_refused() -> None:
    with pytest.raises(CanonicalError, match="Unicode"):
        encode({"x": "\ud800"})
    with pytest.raises(CanonicalError, match="Unicode"):
        encode({"\udfff": 1})


@pytest.mark.parametrize("number", [0.1, 1e16, 1e-7, -0.0, 2.5e-308, 123456789.125, 1 / 3])
def test_floats_round_trip_to_the_same_bytes(number: float) -> None:
    data = encode({"x": number})
    assert encode(loads(data)) == data
    assert loads(data)["x"] == number


def test_integers_are_exact() -> None:
    big = 2**70 + 1
    assert encode([big, -big, 0]) == f"[{big},{-big},0]".encode()


def test_parse_refuses_duplicates_nan_and_bad_utf8() -> None:
    with pytest.raises(CanonicalError, match="duplicate"):
        loads(b'{"a":1,"a":2}')
    with pytest.raises(CanonicalError, match="NaN"):
        loads(b'{"a":NaN}')
    with pytest.raises(CanonicalError, match="Infinity"):
        loads(b'[-Infinity]')
    with pytest.raises(CanonicalError, match="UTF-8"):
        loads(b'{"a":"\xff"}')
    with pytest.raises(CanonicalError, match="JSON"):
        loads(b'{"a":')


def test_huge_exponent_parses_to_inf_and_is_refused() -> None:
    with pytest.raises(CanonicalError, match="finite"):
        loads_canonical(b"[1e400]")


@pytest.mark.parametrize("line", [
    b'{"b":1,"a":2}',          # key order
    b'{"a": 1}',               # spacing
    b'{"a":1.0e2}',            # number format
    b'{"a":"\\u00e9"}',        # escaped non-ASCII
    b'{"a":1}\n',              # trailing newline
])
def test_non_canonical_forms_are_detected(line: bytes) -> None:
    loads(line.strip())  # valid JSON ...
    with pytest.raises(CanonicalError, match="canonical"):
        loads_canonical(line)  # ... but not canonical


def test_non_string_keys_are_refused_at_any_depth() -> None:
    # json.dumps would write {2: .., 10: ..} as {"2":..,"10":..}: out of canonical order
    with pytest.raises(CanonicalError, match="not a string"):
        encode({"a": [{"b": {2: "x", 10: "y"}}]})
    with pytest.raises(CanonicalError, match="not a string"):
        encode({"a": ({None: 1},)})


def test_nesting_is_bounded() -> None:
    deep: object = 1
    for _ in range(100):
        deep = [deep]
    with pytest.raises(CanonicalError, match="deeper"):
        encode(deep)
