"""The compiled codec (``servecore._native.codec``) against its pure-Python twin, the spec.

Unit tests run on both implementations (the ``impl`` fixture, ids ``py`` and ``c``) and state the
expected results; the hypothesis tests feed the same random inputs to both and require identical
outcomes: equal arrays of the same dtype and shape, or the same exception type and message.
"""

from __future__ import annotations

import re
import struct
from types import ModuleType
from typing import Any, Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from servecore.codec import reference
from servecore.errors import BackendError, InvalidInputError

try:
    from servecore._native import codec
except ImportError:  # not built: the "c" cases are skipped
    codec = None  # type: ignore[assignment]

needs_native = pytest.mark.skipif(codec is None, reason="servecore._native.codec is not built")


@pytest.fixture(
    params=[pytest.param(reference, id="py"), pytest.param(codec, id="c", marks=needs_native)]
)
def impl(request: pytest.FixtureRequest) -> ModuleType:
    """Each implementation of the codec in turn."""
    return request.param


INT_TYPES = {
    "INT8": (-(2**7), 2**7 - 1, np.int8),
    "INT16": (-(2**15), 2**15 - 1, np.int16),
    "INT32": (-(2**31), 2**31 - 1, np.int32),
    "INT64": (-(2**63), 2**63 - 1, np.int64),
    "UINT8": (0, 2**8 - 1, np.uint8),
    "UINT16": (0, 2**16 - 1, np.uint16),
    "UINT32": (0, 2**32 - 1, np.uint32),
    "UINT64": (0, 2**64 - 1, np.uint64),
}
FLOAT_TYPES = {"FP16": np.float16, "FP32": np.float32, "FP64": np.float64}
DATATYPES = [*INT_TYPES, *FLOAT_TYPES, "BOOL", "BYTES", "BF16"]


def nested(value: object, depth: int) -> object:
    """*value* inside *depth* lists: the outermost is at depth 1, the innermost at *depth*."""
    for _ in range(depth):
        value = [value]
    return value


def frame(*elements: bytes) -> bytes:
    """A well-formed BYTES blob."""
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def msg(text: str) -> str:
    """An exact-match pattern for ``pytest.raises(match=...)``."""
    return "^" + re.escape(text) + "$"


def check_array(got: np.ndarray, expected: list[object], dtype: Any) -> None:
    assert isinstance(got, np.ndarray)
    assert got.dtype == np.dtype(dtype)
    assert got.ndim == 1 and got.flags.c_contiguous and got.flags.writeable
    assert got.tolist() == expected
    if got.dtype == object:
        assert [type(v) for v in got.tolist()] == [type(v) for v in expected]


# --------------------------------------------------------------------------------------------
# json_to_array: good data
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("datatype", list(FLOAT_TYPES))
def test_floats_accept_floats_and_ints(impl: ModuleType, datatype: str) -> None:
    got = impl.json_to_array([1.5, -2, 0.0, -0.0, 3], datatype, 5, "x")
    check_array(got, [1.5, -2.0, 0.0, -0.0, 3.0], FLOAT_TYPES[datatype])
    assert np.signbit(got[3])


def test_fp32_rounding_matches_numpy(impl: ModuleType) -> None:
    values = [0.1, 1 / 3, 2**60 + 2**36 + 1, 16777217, 1e-30, 3.0e38]
    got = impl.json_to_array(values, "FP32", len(values), "x")
    assert got.tobytes() == np.array(values, dtype=np.float32).tobytes()


def test_fp16_rounding_matches_numpy(impl: ModuleType) -> None:
    values = [0.1, 1 / 3, 65504, 2049, 6.1035e-05, -1.0009765625]
    got = impl.json_to_array(values, "FP16", len(values), "x")
    assert got.tobytes() == np.array(values, dtype=np.float16).tobytes()


def test_fp64_large_ints(impl: ModuleType) -> None:
    values = [2**53 + 1, 2**64, -(2**70), 10**300]
    got = impl.json_to_array(values, "FP64", 4, "x")
    assert got.tolist() == [float(v) for v in values]


@pytest.mark.parametrize("datatype", ["FP32", "FP16"])
def test_float_overflow_warns_like_numpy(impl: ModuleType, datatype: str) -> None:
    # numpy reports the overflow of the cast; pytest turns the RuntimeWarning into an error.
    with pytest.raises(RuntimeWarning, match="overflow encountered in cast"):
        impl.json_to_array([1.0, 1e300], datatype, 2, "x")
    with np.errstate(over="ignore"):
        got = impl.json_to_array([1.0, 1e300], datatype, 2, "x")
    check_array(got, [1.0, np.inf], FLOAT_TYPES[datatype])


def test_float_nan_and_inf(impl: ModuleType) -> None:
    for datatype in FLOAT_TYPES:
        got = impl.json_to_array([float("nan"), float("inf"), -float("inf")], datatype, 3, "x")
        assert np.isnan(got[0]) and got[1] == np.inf and got[2] == -np.inf


def test_int_too_large_for_a_double(impl: ModuleType) -> None:
    with pytest.raises(OverflowError, match="int too large to convert to float"):
        impl.json_to_array([1.0, 10**400], "FP64", 2, "x")


def test_bool(impl: ModuleType) -> None:
    got = impl.json_to_array([[True], [False, True]], "BOOL", 3, "x")
    check_array(got, [True, False, True], np.bool_)


@pytest.mark.parametrize("datatype", list(INT_TYPES))
def test_int_boundaries_accepted(impl: ModuleType, datatype: str) -> None:
    low, high, dtype = INT_TYPES[datatype]
    check_array(impl.json_to_array([low, 0, high], datatype, 3, "x"), [low, 0, high], dtype)


@pytest.mark.parametrize("datatype", list(INT_TYPES))
@pytest.mark.parametrize("side", ["low", "high"])
def test_int_out_of_range(impl: ModuleType, datatype: str, side: str) -> None:
    low, high, _ = INT_TYPES[datatype]
    bad = low - 1 if side == "low" else high + 1
    error = f"input 'x': value {bad} is out of range for datatype {datatype}"
    with pytest.raises(InvalidInputError, match=msg(error)):
        impl.json_to_array([0, bad, "later"], datatype, 3, "x")


@pytest.mark.parametrize("value", [10**30, -(10**30), 2**64, -(2**63) - 1])
@pytest.mark.parametrize("datatype", ["INT64", "UINT64", "INT8"])
def test_huge_ints_out_of_range(impl: ModuleType, datatype: str, value: int) -> None:
    with pytest.raises(InvalidInputError, match="is out of range for datatype"):
        impl.json_to_array([value], datatype, 1, "x")


def test_uint64_max(impl: ModuleType) -> None:
    got = impl.json_to_array([2**64 - 1, 2**63, 2**63 - 1, 0], "UINT64", 4, "x")
    check_array(got, [2**64 - 1, 2**63, 2**63 - 1, 0], np.uint64)


def test_bytes_from_json(impl: ModuleType) -> None:
    values = ["", "a", "é\x00€", "🙂", "x" * 5000]
    got = impl.json_to_array(values, "BYTES", len(values), "x")
    check_array(got, [v.encode() for v in values], object)


def test_bytes_lone_surrogate(impl: ModuleType) -> None:
    with pytest.raises(UnicodeEncodeError, match="surrogates not allowed"):
        impl.json_to_array(["a", "\ud800", 1], "BYTES", 3, "x")


@pytest.mark.parametrize(
    ("data", "datatype", "expected"),
    [
        (7, "INT32", [7]),
        (2.5, "FP32", [2.5]),
        (True, "BOOL", [True]),
        ("hi", "BYTES", [b"hi"]),
        ([[[1]]], "UINT8", [1]),
    ],
)
def test_scalar_data_for_count_1(
    impl: ModuleType, data: object, datatype: str, expected: list[object]
) -> None:
    got = impl.json_to_array(data, datatype, 1, "x")
    assert got.shape == (1,) and got.tolist() == expected


@pytest.mark.parametrize("data", [[], [[]], [[], [[]]]])
@pytest.mark.parametrize("datatype", ["FP32", "INT64", "BOOL", "BYTES", "UINT64", "FP16"])
def test_empty_for_count_0(impl: ModuleType, data: object, datatype: str) -> None:
    got = impl.json_to_array(data, datatype, 0, "x")
    assert got.shape == (0,)


def test_nested_order_is_depth_first(impl: ModuleType) -> None:
    data = [[1, [2, 3]], 4, [[[5]], []], [6]]
    check_array(impl.json_to_array(data, "INT16", 6, "x"), [1, 2, 3, 4, 5, 6], np.int16)


def test_count_may_be_a_numpy_int(impl: ModuleType) -> None:
    check_array(impl.json_to_array([1, 2], "INT32", np.int64(2), "x"), [1, 2], np.int32)
    check_array(impl.json_to_array(["a"], "BYTES", np.int64(1), "x"), [b"a"], object)


# --------------------------------------------------------------------------------------------
# json_to_array: refusals
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("datatype", "value", "shown", "json_type"),
    [
        ("FP32", True, "True", "boolean"),
        ("FP64", "1.0", "'1.0'", "string"),
        ("FP16", None, "None", "null"),
        ("FP32", {"a": 1}, "{'a': 1}", "object"),
        ("INT32", 1.0, "1.0", "number"),
        ("INT64", False, "False", "boolean"),
        ("UINT64", True, "True", "boolean"),
        ("UINT8", "7", "'7'", "string"),
        ("BOOL", 1, "1", "number"),
        ("BOOL", 0.0, "0.0", "number"),
        ("BOOL", "true", "'true'", "string"),
        ("BYTES", 1, "1", "number"),
        ("BYTES", b"raw", "b'raw'", "array"),
        ("BYTES", None, "None", "null"),
        ("INT8", (1, 2), "(1, 2)", "array"),
    ],
)
def test_bad_element(
    impl: ModuleType, datatype: str, value: object, shown: str, json_type: str
) -> None:
    good = {"BOOL": True, "BYTES": "s"}.get(datatype, 1)
    error = f"element {shown} of JSON type {json_type} is not valid for datatype {datatype}"
    with pytest.raises(InvalidInputError, match=msg(f"input 'x': {error}")):
        impl.json_to_array([good, [value, good]], datatype, 3, "x")


def test_bad_element_repr_is_cut_at_40_characters(impl: ModuleType) -> None:
    value = "y" * 50
    error = f"element {repr(value)[:37]}... of JSON type string is not valid for datatype INT32"
    with pytest.raises(InvalidInputError, match=msg(f"input 'in\"p': {error}")):
        impl.json_to_array([1, value], "INT32", 2, 'in"p')
    exact = "z" * 38  # repr is 40 characters: shown whole
    error = f"element {exact!r} of JSON type string is not valid for datatype FP32"
    with pytest.raises(InvalidInputError, match=msg(f"input 'x': {error}")):
        impl.json_to_array([exact], "FP32", 1, "x")


def test_first_problem_in_order_wins(impl: ModuleType) -> None:
    with pytest.raises(InvalidInputError, match="value 300 is out of range"):
        impl.json_to_array([1, 300, "s"], "UINT8", 3, "x")
    with pytest.raises(InvalidInputError, match="element 's' of JSON type string"):
        impl.json_to_array([1, "s", 300], "UINT8", 3, "x")
    # For floats every type is checked before numpy converts anything.
    with pytest.raises(InvalidInputError, match="element 's' of JSON type string"):
        impl.json_to_array([10**400, "s"], "FP32", 2, "x")


def test_depth_100_accepted(impl: ModuleType) -> None:
    assert impl.MAX_JSON_DEPTH == 100
    check_array(impl.json_to_array(nested(5, 100), "INT32", 1, "x"), [5], np.int32)
    check_array(impl.json_to_array([1, nested(2, 99)], "INT32", 2, "x"), [1, 2], np.int32)


TOO_DEEP = [
    nested(5, 101),
    [1, nested(2, 100)],
    nested([], 100),
    nested(1, 5000),
    [[1], nested(1, 101)],
]


@pytest.mark.parametrize("data", TOO_DEEP)
def test_depth_101_refused(impl: ModuleType, data: object) -> None:
    with pytest.raises(
        InvalidInputError,
        match=msg("input 'x': JSON nesting depth exceeds maximum allowed limit (100)"),
    ):
        impl.json_to_array(data, "INT32", 99, "x")  # before the count and the element types


def test_cyclic_list_is_too_deep(impl: ModuleType) -> None:
    data: list[object] = [1]
    data.append(data)
    with pytest.raises(InvalidInputError, match="JSON nesting depth exceeds"):
        impl.json_to_array(data, "INT32", 2, "x")


@pytest.mark.parametrize(
    ("data", "count", "n"),
    [
        ([1, 2, 3], 2, 3),
        ([[1], [2, 3]], 4, 3),
        ([[[1, 2]]], 1, 2),
        (1, 2, 1),
        ([], 1, 0),
        ([[]], 1, 0),
        ([1, "bad"], 1, 2),
    ],
)
def test_count_mismatch(impl: ModuleType, data: object, count: int, n: int) -> None:
    with pytest.raises(
        InvalidInputError, match=msg(f"input 'x': shape needs {count} elements but data has {n}")
    ):
        impl.json_to_array(data, "INT32", count, "x")


def test_bf16_refused_first(impl: ModuleType) -> None:
    with pytest.raises(
        InvalidInputError, match=msg("input 'x': BF16 data cannot be sent as JSON; use binary data")
    ):
        impl.json_to_array(nested(1.0, 500), "BF16", 7, "x")


def test_unsupported_datatype_after_count(impl: ModuleType) -> None:
    with pytest.raises(InvalidInputError, match=msg("input 'x': unsupported datatype 'COMPLEX64'")):
        impl.json_to_array([1, 2], "COMPLEX64", 2, "x")
    with pytest.raises(InvalidInputError, match="shape needs 3 elements"):
        impl.json_to_array([1, 2], "COMPLEX64", 3, "x")
    with pytest.raises(InvalidInputError, match=msg("input 'x': unsupported datatype None")):
        impl.json_to_array([1], None, 1, "x")


def test_list_subclass(impl: ModuleType) -> None:
    class Tensor(list):  # type: ignore[type-arg]
        pass

    check_array(impl.json_to_array(Tensor([1, Tensor([2])]), "INT8", 2, "x"), [1, 2], np.int8)
    check_array(impl.json_to_array([Tensor([1.5])], "FP64", 1, "x"), [1.5], np.float64)


# --------------------------------------------------------------------------------------------
# decode_bytes / encode_bytes
# --------------------------------------------------------------------------------------------

ELEMENTS = [b"", b"\x00\xff", b"\xc3\x28 not utf-8 \xfe", "é🙂".encode(), b"k" * 6000, b""]


BLOB_KINDS = {
    "bytes": bytes,
    "bytearray": bytearray,
    "memoryview": memoryview,
    "uint8-array": lambda b: np.frombuffer(b, dtype=np.uint8),
    "int8-view": lambda b: memoryview(np.frombuffer(b, dtype=np.int8)),
}


@pytest.mark.parametrize("kind", BLOB_KINDS.values(), ids=BLOB_KINDS.keys())
def test_decode(impl: ModuleType, kind: Callable[[bytes], object]) -> None:
    got = impl.decode_bytes(kind(frame(*ELEMENTS)), len(ELEMENTS), "x")
    check_array(got, ELEMENTS, object)


def test_decode_memoryview_slice(impl: ModuleType) -> None:
    body = b"garbage" + frame(b"ab", b"c") + b"tail"
    got = impl.decode_bytes(memoryview(body)[7:-4], 2, "x")
    check_array(got, [b"ab", b"c"], object)


def test_decode_empty(impl: ModuleType) -> None:
    check_array(impl.decode_bytes(b"", 0, "x"), [], object)
    check_array(impl.decode_bytes(frame(b"", b""), 2, "x"), [b"", b""], object)


@pytest.mark.parametrize(
    ("blob", "count", "error"),
    [
        (b"", 1, "BYTES data holds 0 elements, shape needs 1"),
        (frame(b"ab") + b"\x01\x00\x00", 2, "BYTES data holds 1 elements, shape needs 2"),
        (frame(b"ab"), 3, "BYTES data holds 1 elements, shape needs 3"),
        (b"\x05\x00\x00\x00abcd", 1, "BYTES element 0 of 5 bytes runs past the end of the data"),
        (
            frame(b"a") + b"\xff\xff\xff\xff",
            2,
            "BYTES element 1 of 4294967295 bytes runs past the end of the data",
        ),
        (frame(b"ab") + b"x", 1, "BYTES data has 1 bytes left after 1 elements"),
        (frame(b"ab", b"cd"), 1, "BYTES data has 6 bytes left after 1 elements"),
        (b"\x00", 0, "BYTES data has 1 bytes left after 0 elements"),
    ],
)
def test_decode_refusals(impl: ModuleType, blob: bytes, count: int, error: str) -> None:
    with pytest.raises(InvalidInputError, match=msg(f"input 'x': {error}")):
        impl.decode_bytes(blob, count, "x")


@pytest.mark.parametrize("count", [10**12, 10**30])
def test_decode_huge_count_refused_before_allocating(impl: ModuleType, count: int) -> None:
    # The client picks the count (through the shape): it must not cost count slots of memory.
    error = f"input 'x': BYTES data holds 1 elements, shape needs {count}"
    with pytest.raises(InvalidInputError, match=msg(error)):
        impl.decode_bytes(frame(b"ab"), count, "x")


def test_decode_negative_count(impl: ModuleType) -> None:
    with pytest.raises(ValueError, match="negative dimensions are not allowed"):
        impl.decode_bytes(b"", -1, "x")
    error = "input 'x': BYTES data has 1 bytes left after -1 elements"
    with pytest.raises(InvalidInputError, match=msg(error)):
        impl.decode_bytes(b"\x00", -1, "x")


def test_decode_not_a_buffer(impl: ModuleType) -> None:
    with pytest.raises(TypeError, match="memoryview: a bytes-like object is required, not 'str'"):
        impl.decode_bytes("abc", 1, "x")


def test_encode(impl: ModuleType) -> None:
    array = np.array([b"", "é", b"\x00\xff", "x" * 3000, bytearray(b"ba")], dtype=object)
    assert impl.encode_bytes(array) == frame(b"", "é".encode(), b"\x00\xff", b"x" * 3000, b"ba")


@pytest.mark.parametrize(
    "array",
    [
        np.array([], dtype=object),
        np.array([[b"a", "b"], [b"cc", ""]], dtype=object),
        np.asfortranarray(np.array([[b"a", "b"], [b"cc", ""]], dtype=object)),
        np.array([b"ab", b"c\x00"]),  # S dtype (numpy drops trailing NULs)
        np.array(["ab", "é"]),  # U dtype
        np.array("scalar", dtype=object),
    ],
    ids=["empty", "2d", "fortran", "S", "U", "0d"],
)
def test_encode_shapes_and_dtypes(impl: ModuleType, array: np.ndarray) -> None:
    expected = frame(*(v.encode() if isinstance(v, str) else bytes(v) for v in array.ravel()))
    assert impl.encode_bytes(array) == expected
    assert impl.decode_bytes(expected, array.size, "x").tolist() == [
        v.encode() if isinstance(v, str) else bytes(v) for v in array.ravel()
    ]


def test_encode_read_only_array(impl: ModuleType) -> None:
    array = np.array([b"a", "b"], dtype=object)
    array.flags.writeable = False
    assert impl.encode_bytes(array) == frame(b"a", b"b")


def test_encode_refusals(impl: ModuleType) -> None:
    with pytest.raises(UnicodeEncodeError, match="surrogates not allowed"):
        impl.encode_bytes(np.array(["a", "\udc80"], dtype=object))
    with pytest.raises(BackendError, match="holds a NoneType element"):
        impl.encode_bytes(np.array([b"a", None], dtype=object))
    with pytest.raises(BackendError, match="holds a int element"):  # bytes(5) would be five zero bytes
        impl.encode_bytes(np.array([b"a", 5], dtype=object))
    with pytest.raises(AttributeError):
        impl.encode_bytes([b"a"])


@needs_native
def test_common_inputs_stay_native(monkeypatch: pytest.MonkeyPatch) -> None:
    """Typical requests and their refusals never fall back to the pure-Python twin."""

    def no_fallback(*args: object) -> None:
        raise AssertionError("fell back to the reference")

    for fn in ("json_to_array", "decode_bytes", "encode_bytes"):
        monkeypatch.setattr(reference, fn, no_fallback)
    floats = [0.5 * i - 3 for i in range(64)]
    batch = [floats[i : i + 8] for i in range(0, 64, 8)]
    for datatype in FLOAT_TYPES:
        for data in (floats, [floats], batch, [[batch]]):
            assert codec.json_to_array(data, datatype, 64, "x").shape == (64,)
    for datatype, (low, high, _) in INT_TYPES.items():
        assert codec.json_to_array([[low, high], [0]], datatype, 3, "x").shape == (3,)
        with pytest.raises(InvalidInputError):
            codec.json_to_array([high + 1], datatype, 1, "x")
    assert codec.json_to_array([True, [False]], "BOOL", 2, "x").shape == (2,)
    assert codec.json_to_array(["a", ["b"]], "BYTES", 2, "x").shape == (2,)
    refused = [([1, "a"], "INT8", 2), ([1], "FP32", 2), (nested(1, 101), "FP32", 1)]
    for data, datatype, count in refused:
        with pytest.raises(InvalidInputError):
            codec.json_to_array(data, datatype, count, "x")
    blob = frame(*ELEMENTS)
    for kind in (bytes, bytearray, memoryview):
        assert codec.decode_bytes(kind(blob), len(ELEMENTS), "x").size == len(ELEMENTS)
    with pytest.raises(InvalidInputError):
        codec.decode_bytes(blob, 2, "x")
    assert codec.encode_bytes(np.array([b"a", "b"], dtype=object)) == frame(b"a", b"b")
    assert codec.encode_bytes(np.array([b"a", b"b"])) == frame(b"a", b"b")
    assert codec.encode_bytes(np.array(["a", "b"])) == frame(b"a", b"b")


# --------------------------------------------------------------------------------------------
# Parity: the same outcome from both implementations, for random and for odd inputs
# --------------------------------------------------------------------------------------------


def outcome(fn: Callable[..., object], *args: object) -> tuple[object, ...]:
    """What a call did, comparable across implementations."""
    try:
        result = fn(*args)
    except Exception as exc:  # noqa: BLE001 - the exception is the outcome
        return ("raised", type(exc), str(exc))
    if isinstance(result, bytes):
        return ("bytes", result)
    assert isinstance(result, np.ndarray)
    if result.dtype == object:
        payload: object = [(type(v), v) for v in result.tolist()]
    else:
        payload = result.tobytes()  # bit for bit: NaN payloads, -0.0
    return ("array", result.dtype, result.shape, result.flags.c_contiguous, payload)


def same(fn_name: str, *args: object) -> tuple[object, ...]:
    expected = outcome(getattr(reference, fn_name), *args)
    got = outcome(getattr(codec, fn_name), *args)
    assert got == expected
    return expected


def _int_boundaries() -> list[int]:
    values = [0, 1, -1, 2**64, 2**64 + 1, 10**20, -(10**20), 2**53 + 1, 2**1000]
    for low, high, _ in INT_TYPES.values():
        values += [low - 1, low, high, high + 1]
    return values


ints = st.one_of(st.integers(-300, 300), st.integers(), st.sampled_from(_int_boundaries()))
floats = st.one_of(
    st.floats(-2.0, 2.0),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([3.4028235e38, 3.4028236e38, 65504.0, 65520.0, 6.1e-05, 1e-45, 1.2e-38, -0.0]),
)
strings = st.one_of(
    st.text(max_size=8),
    st.sampled_from(["\ud800", "x" * 45, "é", "🙂", ""]),
)
objects = st.dictionaries(st.text(max_size=2), st.integers(), max_size=2)
leaves = st.one_of(ints, floats, st.booleans(), strings, st.none(), objects)
json_values = st.recursive(leaves, lambda children: st.lists(children, max_size=5), max_leaves=30)


def count_leaves(data: object) -> int:
    if not isinstance(data, list):
        return 1
    return sum(count_leaves(item) for item in data)


def uniform(kind: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    """Nested lists whose leaves are all drawn from *kind* (mostly valid data)."""
    return st.recursive(kind, lambda children: st.lists(children, max_size=6), max_leaves=40)


datatypes = st.one_of(st.sampled_from(DATATYPES), st.sampled_from(["FP8", "int32", "", None, 3]))
valid_ish = st.one_of(
    st.tuples(uniform(ints), st.sampled_from([*INT_TYPES, "FP32", "FP64", "FP16"])),
    st.tuples(uniform(floats), st.sampled_from([*FLOAT_TYPES, "INT32"])),
    st.tuples(uniform(st.booleans()), st.just("BOOL")),
    st.tuples(uniform(strings), st.just("BYTES")),
    st.tuples(json_values, datatypes),
)

parity = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@needs_native
@parity
@given(
    case=valid_ish,
    count_delta=st.sampled_from([0, 0, 0, 1, -1]),
    name=st.sampled_from(["x", "in'put", 7]),
)
@example(case=([1.5, [2]], "FP32"), count_delta=0, name="x")
def test_json_to_array_parity(case: tuple[object, object], count_delta: int, name: object) -> None:
    data, datatype = case
    same("json_to_array", data, datatype, count_leaves(data) + count_delta, name)


@needs_native
@parity
@given(
    leaf=leaves,
    depth=st.integers(95, 106),
    siblings=st.lists(st.integers(0, 3), max_size=3),
    datatype=st.sampled_from(["INT32", "FP32", "BOOL", "BYTES", "BF16"]),
)
def test_deep_nesting_parity(leaf: object, depth: int, siblings: list[int], datatype: str) -> None:
    data = nested(leaf, depth)
    for level in siblings:  # more leaves at shallower depths
        data = [level, data] if level % 2 else [data, level]
    same("json_to_array", data, datatype, count_leaves(data), "x")
    same("json_to_array", data, datatype, 0, "x")


def frames(draw_elements: st.SearchStrategy[list[bytes]]) -> st.SearchStrategy[bytes]:
    return draw_elements.map(lambda elements: frame(*elements))


blobs = st.one_of(
    st.binary(max_size=40),
    frames(st.lists(st.binary(max_size=20), max_size=6)),
    # a well-formed blob, cut short or with bytes appended
    st.tuples(
        frames(st.lists(st.binary(max_size=20), min_size=1, max_size=6)), st.integers(-8, 8)
    ).map(lambda t: t[0][: t[1]] if t[1] < 0 else t[0] + b"\x01" * t[1]),
)


@needs_native
@parity
@given(blob=blobs, count=st.integers(-1, 8), kind=st.sampled_from(list(BLOB_KINDS.values())))
def test_decode_bytes_parity(blob: bytes, count: int, kind: Callable[[bytes], object]) -> None:
    same("decode_bytes", kind(blob), count, "x")


ODD_BLOBS = [
    memoryview(frame(b"ab", b"c") * 2)[::2],  # not contiguous
    memoryview(frame(b"abcd")).cast("I"),  # 4-byte items: len() counts items
    memoryview(frame(b"ab", b"cd")).cast("B", (2, 6)),  # 2-D
    np.frombuffer(frame(b"ab", b"c"), dtype=np.uint8)[::-1],
    "not bytes",
    None,
]
ODD_COUNTS = [2.0, True, np.int64(1), np.int64(2), "2", None, 10**30, -1, [2], np.array(2)]


@needs_native
@pytest.mark.parametrize("blob", ODD_BLOBS)
@pytest.mark.parametrize("count", [0, 1, 2, 3])
def test_decode_odd_blobs_parity(blob: object, count: int) -> None:
    same("decode_bytes", blob, count, "x")


@needs_native
@pytest.mark.parametrize("count", ODD_COUNTS, ids=repr)
def test_odd_counts_parity(count: object) -> None:
    same("decode_bytes", frame(b"a", b"bc"), count, "x")
    same("decode_bytes", frame(b"a"), count, "x")
    for datatype in ("INT32", "BYTES", "FP16"):
        same("json_to_array", [[1], [2]], datatype, count, "x")
        same("json_to_array", ["a", "b"], datatype, count, "x")
        same("json_to_array", 1, datatype, count, "x")


@needs_native
@parity
@given(elements=st.lists(st.binary(max_size=30), max_size=8), extra=st.integers(-1, 1))
def test_decode_bytes_well_formed_parity(elements: list[bytes], extra: int) -> None:
    result = same("decode_bytes", frame(*elements), len(elements) + extra, "x")
    if extra == 0:
        assert result[-1] == [(bytes, e) for e in elements]


encodable = st.one_of(
    st.binary(max_size=20),
    strings,
    st.binary(max_size=5).map(bytearray),
    st.binary(max_size=5).map(np.bytes_),
    st.text(max_size=5).map(np.str_),
    st.integers(-1, 5),  # bytes(n): n zero bytes, as the reference does
    st.none(),
)


@needs_native
@parity
@given(values=st.lists(encodable, max_size=8), two_d=st.booleans())
def test_encode_bytes_parity(values: list[object], two_d: bool) -> None:
    array = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        array[i] = value
    if two_d and values and len(values) % 2 == 0:
        array = array.reshape(2, -1).T  # not contiguous: ravel copies
    result = same("encode_bytes", array)
    if result[0] == "bytes":
        assert reference.decode_bytes(result[1], len(values), "x").size == len(values)


@needs_native
@parity
@given(st.lists(st.binary(max_size=10), max_size=6) | st.lists(st.text(max_size=6), max_size=6))
def test_encode_bytes_fixed_width_parity(values: list[object]) -> None:
    same("encode_bytes", np.array(values))


@needs_native
def test_native_module_is_the_compiled_one() -> None:
    assert codec.__file__ is not None and not codec.__file__.endswith(".py")
    assert codec.__doc__ is not None and "servecore.codec.reference" in codec.__doc__
