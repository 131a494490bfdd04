"""JSON tensor data cut out of a request: ``cut_json_data``, compiled and pure-Python.

The contract (``servecore.codec.jsondata``'s docstring): either ``None``, or the document with
some inputs' ``data`` arrays replaced by ``null`` and, for each, the array that orjson followed by
``json_to_array`` gives, bit for bit and in dtype. Unit tests state what is and is not cut, on
both implementations (``impl``: ``py``, ``c``); hypothesis feeds both the same random numbers,
documents and corrupted documents and requires identical answers that keep the contract. Last,
``parse_request`` with the cut must answer exactly what it answers without it, errors included.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from types import ModuleType
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from servecore.codec import jsondata as twin
from servecore.codec import load_codec, reference
from servecore.errors import InvalidInputError
from servecore.http import v2

try:
    from servecore._native import jsondata as compiled
except ImportError:  # not built: the "c" cases are skipped
    compiled = None  # type: ignore[assignment]

needs_native = pytest.mark.skipif(compiled is None, reason="servecore._native.jsondata is not built")
IMPLS = [pytest.param(twin, id="py"), pytest.param(compiled, id="c", marks=needs_native)]
CUT_TYPES = ["FP32", "INT32", "INT64"]


@pytest.fixture(params=IMPLS)
def impl(request: pytest.FixtureRequest) -> ModuleType:
    return request.param


def body(*inputs: dict[str, Any], **top: Any) -> bytes:
    return json.dumps({"inputs": list(inputs), **top}).encode()


def an_input(datatype: str, data: Any, name: str = "x", **extra: Any) -> dict[str, Any]:
    shape = [len(data)] if isinstance(data, list) else [1]
    return {"name": name, "shape": shape, "datatype": datatype, "data": data, **extra}


def raw_input(datatype: str, numbers: list[str]) -> bytes:
    """A request whose one input's data are exactly these number tokens."""
    return (
        b'{"inputs": [{"name": "x", "shape": [%d], "datatype": "%s", "data": [%s]}]}'
        % (len(numbers), datatype.encode(), ", ".join(numbers).encode())
    )


def expected_array(raw: bytes, index: int) -> np.ndarray:
    """What the ordinary path makes of input *index*'s data: orjson, then json_to_array."""
    tensor = orjson.loads(raw)["inputs"][index]
    data = tensor["data"]
    return reference.json_to_array(data, tensor["datatype"], len(data), str(tensor.get("name")))


def same_array(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal bit for bit (so -0.0 differs from 0.0), dtype and shape included."""
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def check_contract(raw: bytes, result: tuple[bytes, dict[int, tuple[str, np.ndarray]]] | None) -> None:
    """*result* keeps the contract for *raw* (a None is always allowed)."""
    if result is None:
        return
    text, arrays = result
    assert arrays
    original = orjson.loads(raw)  # it cut, so the document must be valid JSON
    remainder = orjson.loads(text)
    for index, (datatype, array) in arrays.items():
        tensor = original["inputs"][index]
        assert tensor["datatype"] == datatype
        assert same_array(array, expected_array(raw, index))
        tensor["data"] = None
    assert remainder == original


def both(raw: bytes) -> Any:
    """The two implementations' answers for *raw*, which must be identical; the twin's."""
    answer = twin.cut_json_data(raw)
    if compiled is not None:
        other = compiled.cut_json_data(raw)
        assert (answer is None) == (other is None), raw
        if answer is not None:
            assert other[0] == answer[0]
            assert other[1].keys() == answer[1].keys()
            for index, (datatype, array) in answer[1].items():
                assert other[1][index][0] == datatype
                assert same_array(other[1][index][1], array), (raw, index)
    check_contract(raw, answer)
    return answer


# -- what is cut ------------------------------------------------------------------------------------


def test_a_float32_request_is_cut_to_its_header(impl: ModuleType) -> None:
    x = np.random.default_rng(0).standard_normal(512).astype(np.float32)
    raw = json.dumps(
        {"inputs": [{"name": "input", "shape": [1, 512], "datatype": "FP32", "data": x.tolist()}]},
        separators=(",", ":"),
    ).encode()
    text, arrays = impl.cut_json_data(raw)
    assert text == b'{"inputs":[{"name":"input","shape":[1,512],"datatype":"FP32","data":null}]}'
    (datatype, array), = arrays.values()
    assert datatype == "FP32" and same_array(array, x)


@pytest.mark.parametrize(
    ("datatype", "data", "dtype"),
    [
        ("FP32", [1.5, -2, 0.1, 3e-5, 1e30], np.float32),
        ("INT32", [0, -1, 2**31 - 1, -(2**31)], np.int32),
        ("INT64", [0, -(10**18) + 1, 10**18 - 1, 42], np.int64),
    ],
)
def test_each_datatype_gives_its_dtype(impl: ModuleType, datatype: str, data: list[Any], dtype: type) -> None:
    raw = body(an_input(datatype, data), outputs=[{"name": "y"}])
    text, arrays = impl.cut_json_data(raw)
    assert arrays[0][0] == datatype
    assert same_array(arrays[0][1], np.array(data, dtype=dtype))
    assert orjson.loads(text)["inputs"][0]["data"] is None
    assert orjson.loads(text)["outputs"] == [{"name": "y"}]


def test_every_input_with_data_is_cut(impl: ModuleType) -> None:
    binary = {"name": "b", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}}
    raw = body(an_input("FP32", [1.0, 2.0], "a"), binary, an_input("INT64", [3, 4], "c"), outputs=[{"name": "y"}])
    text, arrays = impl.cut_json_data(raw)
    assert sorted(arrays) == [0, 2]
    doc = orjson.loads(text)
    assert [t.get("data", "absent") for t in doc["inputs"]] == [None, "absent", None]


@pytest.mark.parametrize(
    "other",
    [
        an_input("BOOL", [True], "b"),
        an_input("FP32", [[1.0], [2.0]], "c"),  # nested
        {"name": "d", "data": [1, 2], "datatype": "INT32", "shape": [2]},  # datatype after data
        {"name": "d", "data": [1, 2], "shape": [2]},  # no datatype
        an_input("INT32", [1.5], "e"),  # a float for an integer type
        an_input("BYTES", ["s"], "f"),
        an_input("FP64", [0.5], "g"),
        an_input("FP32", [1.0, "2"], "h"),
        {"name": "i", "datatype": "FP32", "shape": [1], "data": 1.0},  # a scalar
    ],
)
def test_one_input_whose_data_is_not_cut_leaves_the_document_to_orjson(impl: ModuleType, other: dict[str, Any]) -> None:
    assert impl.cut_json_data(body(an_input("FP32", [1.0, 2.0], "a"), other)) is None
    assert impl.cut_json_data(body(other, an_input("FP32", [1.0, 2.0], "a"))) is None


@pytest.mark.parametrize(
    ("datatype", "token"),
    [
        ("FP32", "1e39"),  # the cast to float32 overflows
        ("FP32", "3.4028236e38"),  # rounds past the largest float
        ("FP32", "1e-40"),  # underflows to a subnormal float32
        ("FP32", "1e400"),  # past the double range: orjson refuses it
        ("FP64", "0.5"),  # FP64 is never cut
        ("FP32", "1234567890123456"),  # an integer of 16 digits
        ("INT64", "1234567890123456789"),  # 19 digits
        ("INT32", "2147483648"),
        ("INT32", "-2147483649"),
        ("INT64", "1.0"),
        ("INT64", "1e3"),
        ("FP32", "0." + "1" * 70),  # longer than MAX_NUMBER_BYTES
    ],
)
def test_numbers_that_do_not_convert_quietly_stay_in_the_text(impl: ModuleType, datatype: str, token: str) -> None:
    assert impl.cut_json_data(raw_input(datatype, ["1", token])) is None


@pytest.mark.parametrize(
    ("datatype", "token", "value"),
    [
        ("FP32", "-0", np.float32(0.0)),  # an integer: orjson gives int 0, so +0.0
        ("FP32", "-0.0", np.float32(-0.0)),
        ("FP32", "-0e5", np.float32(-0.0)),
        ("FP32", "-1e-400", np.float32(-0.0)),  # orjson reads it as -0.0, no underflow
        ("FP32", "3.4028235e38", np.float32(3.4028235e38)),
        ("FP32", "1.1754943508222875e-38", np.float32(1.1754943508222875e-38)),  # the smallest normal float32
        ("FP32", "0.1000000000000000055511151231257827", np.float32(0.1)),  # 34 digits
        ("FP32", "16777217", np.float32(16777216.0)),  # ties to even
        ("FP32", "1E+2", np.float32(100.0)),
        ("INT64", "-999999999999999999", np.int64(-999999999999999999)),
    ],
)
def test_edge_values(impl: ModuleType, datatype: str, token: str, value: np.generic) -> None:
    raw = raw_input(datatype, [token])
    _, arrays = impl.cut_json_data(raw)
    assert same_array(arrays[0][1], np.array([value]))
    assert same_array(arrays[0][1], expected_array(raw, 0))


def test_empty_data_is_cut(impl: ModuleType) -> None:
    text, arrays = impl.cut_json_data(b'{"inputs":[{"datatype":"FP32","data":[ ]}]}')
    assert text == b'{"inputs":[{"datatype":"FP32","data":null}]}'
    assert same_array(arrays[0][1], np.empty(0, dtype=np.float32))


def test_at_most_max_cuts_inputs_are_cut(impl: ModuleType) -> None:
    raw = body(*(an_input("FP32", [float(i)], f"x{i}") for i in range(impl.MAX_CUTS)))
    text, arrays = impl.cut_json_data(raw)
    assert sorted(arrays) == list(range(impl.MAX_CUTS))
    assert impl.cut_json_data(body(*(an_input("FP32", [float(i)], f"x{i}") for i in range(impl.MAX_CUTS + 1)))) is None


# -- what makes the whole document the ordinary parser's ----------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"[]",
        b'{"inputs": []}',  # nothing to cut
        b'{"inputs":[{"datatype":"FP32","data":[1]}]} x',  # trailing bytes
        b'{"inputs":[{"datatype":"FP32","data":[1,]}]}',  # trailing comma
        b'{"inputs":[{"datatype":"FP32","data":[01]}]}',  # leading zero
        b'{"inputs":[{"datatype":"FP32","data":[1.]}]}',
        b'{"inputs":[{"datatype":"FP32","data":[NaN]}]}',
        b'{"inputs":[{"datatype":"FP32","data":[1 2]}]}',
        b'{"inputs":[{"datatype":"FP32","data":[1]}]',  # unclosed
        b'{"inputs":[{"datatype":"FP32","data":[1]}],"inputs":[]}',  # inputs twice
        b'{"inputs":[{"datatype":"FP32","data":[1],"data":[2]}]}',  # data twice
        b'{"inputs":[{"datatype":"FP32","datatype":"FP64","data":[1]}]}',
        b'{"inputs":[{"datatype":"FP32","data":[1]}],"id":"a\\"b"}',  # an escape anywhere
        b'{"inputs":[{"datatype":"FP32","data":[1]}],"id":"a\tb"}',  # a control character
        b'{"inputs":[{"datatype":"FP32","data":[1]}],"p":' + b"[" * 70 + b"]" * 70 + b"}",  # too deep
        b'{"inputs":[{"datatype":"FP32","data":[1]}],"p":tru}',
        b'{"inputs":[{"datatype":"FP32","data":[1]}],"id":"\xed\xa0\x80"}',  # an encoded surrogate
        b'{"inputs":[{"datatype":"FP32","data":[1]}],"id":"\xc0\xaf"}',  # an overlong form
        b'{"inputs":[{"datatype":"FP32","data":[1]}],"id":"\xf4\x90\x80\x80"}',  # past U+10FFFF
        b'{"inputs":[{"datatype":"FP32","data":[1]}],"id":"\xe2\x82"}',  # cut short
    ],
)
def test_documents_outside_the_subset_are_not_cut(impl: ModuleType, raw: bytes) -> None:
    assert impl.cut_json_data(raw) is None


def test_utf8_strings_are_read(impl: ModuleType) -> None:
    raw = body(an_input("FP32", [1.0], "é€😀"), id="Grüße")
    text, arrays = impl.cut_json_data(json.dumps(orjson.loads(raw), ensure_ascii=False).encode())
    assert orjson.loads(text)["inputs"][0]["name"] == "é€😀" and orjson.loads(text)["id"] == "Grüße"


def test_a_memoryview_is_read_like_bytes(impl: ModuleType) -> None:
    raw = raw_input("FP32", ["1.25", "2"]) + b"BINARY TAIL"
    view = memoryview(raw)[: len(raw) - len(b"BINARY TAIL")]
    text, arrays = impl.cut_json_data(view)
    assert same_array(arrays[0][1], np.array([1.25, 2.0], dtype=np.float32))


# -- hypothesis: the two implementations agree and keep the contract ------------------------------------

_digits = st.text("0123456789", min_size=1, max_size=24)


@st.composite
def number_tokens(draw: st.DrawFn) -> str:
    """Valid JSON number tokens of every shape: short, long, tiny, huge, integral."""
    kind = draw(st.sampled_from(["repr32", "repr64", "parts", "int"]))
    if kind == "repr32":
        return repr(float(np.float32(draw(st.floats(width=32, allow_nan=False, allow_infinity=False)))))
    if kind == "repr64":
        return repr(draw(st.floats(allow_nan=False, allow_infinity=False)))
    if kind == "int":
        return str(draw(st.integers(min_value=-(2**70), max_value=2**70)))
    sign = draw(st.sampled_from(["", "-"]))
    whole = draw(_digits).lstrip("0") or "0"
    frac = draw(st.one_of(st.just(""), _digits.map(lambda d: "." + d)))
    exp = draw(st.one_of(st.just(""), st.integers(-60, 60).map(lambda e: draw(st.sampled_from("eE")) + f"{e:+d}")))
    return sign + whole + frac + exp


@st.composite
def near_float32_ties(draw: st.DrawFn) -> str:
    """Numbers at or next to the midpoint of two adjacent float32s, the hardest to round: the
    shortest decimal of the midpoint (whose nearest double is the midpoint itself, a tie), or of
    a double a few units in the last place away."""
    f = np.float32(draw(st.floats(min_value=2.0**-100, max_value=2.0**127, width=32)))
    midpoint = (float(f) + float(np.nextafter(f, np.float32(np.inf)))) / 2  # exact in a double
    steps = draw(st.integers(-3, 3))
    value = midpoint
    for _ in range(abs(steps)):
        value = float(np.nextafter(value, np.inf if steps > 0 else -np.inf))
    sign = draw(st.sampled_from(["", "-"]))
    return sign + repr(value)


@settings(max_examples=400, deadline=None)
@given(st.lists(near_float32_ties(), min_size=1, max_size=40))
@example(["16777217.0", "16777217.000000001", "33554434.0", "1.6777217e7"])
def test_numbers_next_to_float32_ties(tokens: list[str]) -> None:
    both(raw_input("FP32", tokens))


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(CUT_TYPES), st.lists(number_tokens(), min_size=1, max_size=40))
@example("FP32", ["0.1257302165031433", "-0.13210485875606537", "1.30400002002716064"])
@example("FP32", ["4.0000002384185791015625"])  # a float32 tie written out exactly
@example("FP32", ["1.00000005960464477539062500001"])  # just past that tie
@example("INT64", ["9007199254740993", "-0", "123456789012345678"])
def test_random_numbers(datatype: str, tokens: list[str]) -> None:
    both(raw_input(datatype, tokens))


#: mostly strings JSON writes without escapes (an escape leaves the whole document uncut)
_texts = st.one_of(st.text("abcXYZ _-/.:é", max_size=8), st.text(max_size=4))
_json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**64), 2**64), st.floats(allow_nan=False, allow_infinity=False), _texts,
)
_json = st.recursive(
    _json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_texts, children, max_size=4),
    max_leaves=12,
)


@st.composite
def documents(draw: st.DrawFn) -> bytes:
    """Requests mixing inputs the scanner cuts (most of them) and inputs it must not, other
    members, any spacing."""
    inputs = []
    for _ in range(draw(st.integers(0, 4))):
        if draw(st.integers(0, 9)) < 7:  # one that is cut
            datatype = draw(st.sampled_from(CUT_TYPES))
            number = st.integers(-(2**31), 2**31 - 1) if datatype == "INT32" else st.integers(-(2**40), 2**40)
            if datatype == "FP32":
                number = st.one_of(number, st.floats(-(2.0**100), 2.0**100, width=32).map(float))
            head = draw(st.permutations([("name", draw(_texts)), ("datatype", datatype), ("shape", [1])]))
            members = [*head, ("data", draw(st.lists(number, max_size=6)))]
        else:
            datatype = draw(st.sampled_from([*CUT_TYPES, "BOOL", "FP16", "FP64", draw(_texts)]))
            data = draw(
                st.one_of(
                    st.lists(st.integers(-(2**40), 2**40), max_size=6),
                    st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=6),
                    _json,
                )
            )
            members = draw(st.permutations([("name", draw(_texts)), ("datatype", datatype), ("data", data), ("shape", [1])]))
        extra = draw(st.dictionaries(st.sampled_from(["parameters", "id", "zz"]), _json, max_size=2))
        inputs.append(dict([*members, *extra.items()]))
    doc: dict[str, Any] = {"inputs": inputs}
    doc.update(draw(st.dictionaries(st.sampled_from(["outputs", "id", "parameters"]), _json, max_size=2)))
    indent = draw(st.sampled_from([None, 0, 2]))
    separators = draw(st.sampled_from([(",", ":"), (", ", ": "), (" ,", " : ")]))
    return json.dumps(doc, indent=indent, separators=separators, ensure_ascii=draw(st.booleans())).encode()


@settings(max_examples=300, deadline=None)
@given(documents())
def test_random_documents(raw: bytes) -> None:
    both(raw)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents(), st.lists(st.tuples(st.integers(0, 10**6), st.binary(max_size=3), st.integers(0, 3)), min_size=1, max_size=3))
def test_corrupted_documents(raw: bytes, edits: list[tuple[int, bytes, int]]) -> None:
    """Bytes replaced, inserted or deleted anywhere: both agree, and whatever is cut is right."""
    data = bytearray(raw)
    for position, insert, delete in edits:
        at = position % (len(data) + 1)
        data[at : at + delete] = insert
    both(bytes(data))


# -- parse_request answers the same with and without the cut ------------------------------------------


@pytest.fixture(params=["native", "python"])
def codecs(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    """A codec, and the same codec that never cuts (every document tried, however small)."""
    monkeypatch.setattr(v2, "CUT_MIN_BYTES", 0)
    if request.param == "native" and compiled is None:
        pytest.skip("servecore._native.jsondata is not built")
    codec = load_codec(pure_python=request.param == "python")
    if request.param == "python":  # serving without the compiled core does not cut; the twin can
        assert codec.cut_json_data is None
        codec = dataclasses.replace(codec, cut_json_data=twin.cut_json_data)
    return codec, dataclasses.replace(codec, cut_json_data=None)


def parsed(raw: bytes, codec: Any) -> Any:
    """parse_request's answer, comparable: the request's fields with arrays as bytes, or the error."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # numpy's warning on an overflowing FP16 cast, say
            request = v2.parse_request(raw, None, model_name="m", model_version=None, codec=codec)
    except InvalidInputError as exc:
        return ("error", exc.message)
    except RuntimeWarning as warning:
        return ("warning", str(warning))
    return (
        [(t.name, t.datatype, t.shape, t.data.dtype.str, t.data.shape, t.data.tobytes(), t.parameters) for t in request.inputs],
        request.outputs, request.id, request.parameters, request.binary_output_default,
    )


@pytest.mark.parametrize(
    "raw",
    [
        body(an_input("FP32", [1.0, 2.0])),
        body({"name": "x", "shape": [3], "datatype": "FP32", "data": [1.0, 2.0]}),  # a count off
        body({"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0], "parameters": {"binary_data_size": 4}}),
        body({"shape": [1], "datatype": "FP32", "data": [1.0]}),  # no name
        body({"name": "x", "shape": [-1], "datatype": "FP32", "data": [1.0]}),
        body(an_input("FP32", [1.0]), id=5),
        body(an_input("INT64", [1, 2]), an_input("FP32", [0.5], "z"), outputs=[{"name": "y", "parameters": {"binary_data": True}}]),
        body(an_input("FP32", [1.0])) + b"]",  # invalid JSON after the data: the full parser's position
    ],
)
def test_parse_request_is_unchanged(codecs: tuple[Any, Any], raw: bytes) -> None:
    cutting, plain = codecs
    assert parsed(raw, cutting) == parsed(raw, plain)


def test_small_documents_are_left_to_orjson() -> None:
    calls: list[int] = []
    codec = dataclasses.replace(load_codec(), cut_json_data=lambda raw: calls.append(len(raw)))
    small = body(an_input("FP32", [1.0] * 10))
    large = body(an_input("FP32", [0.125] * 400))
    assert len(small) < v2.CUT_MIN_BYTES <= len(large)
    for raw in (small, large):
        v2.parse_request(raw, None, model_name="m", model_version=None, codec=codec)
    assert calls == [len(large)]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=documents())
def test_parse_request_is_unchanged_for_random_documents(codecs: tuple[Any, Any], raw: bytes) -> None:
    cutting, plain = codecs
    assert parsed(raw, cutting) == parsed(raw, plain)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=12).map(lambda b: bytes(c for c in b if c not in b'"\\' and c >= 32)))
@example("😀".encode()[:3])
@example(b"\xef\xbf\xbf\xf0\x90\x80\x80")  # U+FFFF, U+10000: valid
def test_random_bytes_in_strings(text: bytes) -> None:
    """Any bytes in a string: cut only when they are UTF-8 that orjson accepts (both agree)."""
    answer = both(b'{"inputs":[{"datatype":"FP32","data":[1]}],"id":"' + text + b'"}')
    try:
        text.decode("utf-8")
        valid = True
    except UnicodeDecodeError:
        valid = False
    assert (answer is not None) == valid
