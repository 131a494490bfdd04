"""v2.HeaderPlans: a binary request's JSON header parsed once, then reused, changes no answer;
nor does a JSON request's document whose numbers the compiled scanner set aside.

Every body is parsed twice, once with plans shared across the whole sequence and once without:
both give the same request (field by field, arrays by value) or the same error message, whether
the plan was made by an earlier body or not. Each request gets its own objects, so one request
cannot reach into another's. Run with the native and the pure-Python codec.
"""

from __future__ import annotations

import json
import random
from typing import Any

import numpy as np
import pytest

from servecore.codec import Codec, load_codec
from servecore.errors import InvalidInputError
from servecore.http import v2
from servecore.types import InferenceRequest


@pytest.fixture(params=[False, True], ids=["native", "python"])
def codec(request: pytest.FixtureRequest) -> Codec:
    return load_codec(pure_python=bool(request.param))


def body_of(header: dict[str, Any], *blobs: bytes) -> tuple[bytes, int]:
    head = json.dumps(header).encode()
    return head + b"".join(blobs), len(head)


def parse(body: bytes, length: int | None, codec: Codec, plans: v2.HeaderPlans | None) -> InferenceRequest | str:
    try:
        return v2.parse_request(body, length, model_name="m", model_version="2", codec=codec, plans=plans)
    except InvalidInputError as exc:
        return f"error: {exc.message}"


def same(a: InferenceRequest | str, b: InferenceRequest | str) -> None:
    if isinstance(a, str) or isinstance(b, str):
        assert a == b
        return
    assert (a.model_name, a.model_version, a.id, a.parameters, a.outputs, a.binary_output_default) == (
        b.model_name, b.model_version, b.id, b.parameters, b.outputs, b.binary_output_default
    )
    assert len(a.inputs) == len(b.inputs)
    for x, y in zip(a.inputs, b.inputs):
        assert (x.name, x.datatype, x.shape, x.parameters) == (y.name, y.datatype, y.shape, y.parameters)
        assert x.data.dtype == y.data.dtype and x.data.shape == y.data.shape
        np.testing.assert_array_equal(x.data, y.data)


TWO_INPUTS = {
    "id": "r-1",
    "parameters": {"timeout": 5000, "priority": 1, "nested": {"a": [1, 2]}},
    "inputs": [
        {"name": "a", "shape": [2, 3], "datatype": "FP32", "parameters": {"binary_data_size": 24}},
        {"name": "b", "shape": [2], "datatype": "BOOL", "parameters": {"binary_data_size": 2}},
    ],
    "outputs": [{"name": "y", "parameters": {"binary_data": True, "classification": 2}}],
}


def test_a_repeated_header_is_cut_up_by_its_plan_with_each_body_own_tensors(codec: Codec) -> None:
    plans = v2.HeaderPlans()
    seen = []
    for i in range(3):
        a = np.arange(6, dtype=np.float32) + 10 * i
        body, length = body_of(TWO_INPUTS, a.tobytes(), bytes([i % 2, 1]))
        got = parse(body, length, codec, plans)
        same(got, parse(body, length, codec, None))
        assert isinstance(got, InferenceRequest)
        np.testing.assert_array_equal(got.inputs[0].data, a.reshape(2, 3))
        seen.append(got)
    assert len(plans._plans) == 1
    # nothing mutable is shared between requests, or with the plan
    first, second = seen[0], seen[1]
    assert first.parameters is not second.parameters
    assert first.parameters["nested"] is not second.parameters["nested"]
    assert first.inputs[0].parameters is not second.inputs[0].parameters
    assert first.outputs is not None and second.outputs is not None
    assert first.outputs[0] is not second.outputs[0]
    assert first.outputs[0].parameters is not second.outputs[0].parameters
    first.parameters["nested"]["a"].append(3)
    first.inputs[0].parameters["binary_data_size"] = 0
    again = parse(*body_of(TWO_INPUTS, bytes(24), bytes(2)), codec, plans)
    assert isinstance(again, InferenceRequest)
    assert again.parameters["nested"] == {"a": [1, 2]} and again.inputs[0].parameters == {"binary_data_size": 24}


@pytest.mark.parametrize(
    "tail",
    [bytes(24) + bytes([0, 2]), bytes(24) + bytes(1), bytes(24) + bytes(3), bytes(25)],
    ids=["bool-not-0-or-1", "short", "long", "short-two"],
)
def test_a_known_header_over_the_wrong_tensor_bytes_gets_the_full_parser_error(codec: Codec, tail: bytes) -> None:
    plans = v2.HeaderPlans()
    body, length = body_of(TWO_INPUTS, bytes(24), bytes(2))
    assert isinstance(parse(body, length, codec, plans), InferenceRequest)
    bad = body[:length] + tail
    got = parse(bad, length, codec, plans)
    assert isinstance(got, str) and got.startswith("error: ")
    assert got == parse(bad, length, codec, None)


def test_bytes_inputs_and_json_data_are_never_planned(codec: Codec) -> None:
    plans = v2.HeaderPlans()
    blob = (3).to_bytes(4, "little") + b"abc"
    header = {"inputs": [{"name": "s", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": len(blob)}}]}
    body, length = body_of(header, blob)
    same(parse(body, length, codec, plans), parse(body, length, codec, None))
    mixed = {"inputs": [
        {"name": "a", "shape": [1], "datatype": "INT32", "data": [7]},
        {"name": "b", "shape": [1], "datatype": "INT32", "parameters": {"binary_data_size": 4}},
    ]}
    body, length = body_of(mixed, np.int32(5).tobytes())
    same(parse(body, length, codec, plans), parse(body, length, codec, None))
    assert not plans._plans
    # and a small JSON-only request (one the compiled scanner leaves to orjson) is not planned either
    doc = json.dumps({"inputs": [{"name": "a", "shape": [1], "datatype": "INT32", "data": [7]}]}).encode()
    same(parse(doc, len(doc), codec, plans), parse(doc, len(doc), codec, None))
    assert not plans._plans and not plans._cut_plans


def test_plans_stay_bounded() -> None:
    codec = load_codec(pure_python=True)
    plans = v2.HeaderPlans(capacity=8)
    for i in range(50):
        header = {"id": f"r{i}", "inputs": [{"name": "a", "shape": [1], "datatype": "INT64", "parameters": {"binary_data_size": 8}}]}
        body, length = body_of(header, np.int64(i).tobytes())
        got = parse(body, length, codec, plans)
        assert isinstance(got, InferenceRequest) and got.id == f"r{i}" and int(got.inputs[0].data[0]) == i
        assert len(plans._plans) <= 8


DATATYPES = ["FP32", "FP16", "FP64", "INT8", "UINT8", "INT32", "INT64", "BOOL", "BF16"]


def random_body(rng: random.Random, headers: list[dict[str, Any]]) -> tuple[bytes, int]:
    """A body over one of a few headers (so plans are hit), its tensor bytes right, short, long or
    odd; now and then a header never seen, a broken one or one with a mistake in it."""
    roll = rng.random()
    if roll < 0.1:
        text = rng.choice([b"{", b"[]", b'{"inputs": []}', b'{"inputs": [{"name": 1}]}', b'\xff'])
        return text + bytes(rng.randrange(8)), len(text)
    header = json.loads(json.dumps(rng.choice(headers)))
    if roll < 0.2:
        header["inputs"][0]["shape"] = [rng.randrange(3), 2]  # announces a size that may not match
    blobs = []
    for tensor in header["inputs"]:
        size = tensor["parameters"]["binary_data_size"]
        if tensor["datatype"] == "BOOL":
            blobs.append(bytes(rng.choice([0, 1, 1, 1, 2]) for _ in range(size)))
        else:
            blobs.append(rng.randbytes(size))
    tail = b"".join(blobs)
    cut = rng.random()
    if cut < 0.1:
        tail = tail[:-1]
    elif cut < 0.2:
        tail += b"\0"
    head = json.dumps(header).encode()
    return head + tail, len(head)


def test_a_random_stream_parses_the_same_with_and_without_plans(codec: Codec) -> None:
    rng = random.Random(7)
    headers = []
    for h in range(6):
        inputs = []
        for i in range(rng.randrange(1, 4)):
            datatype = rng.choice(DATATYPES)
            shape = [rng.randrange(1, 4), rng.randrange(1, 5)]
            size = shape[0] * shape[1] * (1 if datatype in ("BOOL", "INT8", "UINT8") else 2 if datatype in ("FP16", "BF16") else 4 if datatype in ("FP32", "INT32") else 8)
            inputs.append({"name": f"x{i}", "shape": shape, "datatype": datatype, "parameters": {"binary_data_size": size}})
        header: dict[str, Any] = {"inputs": inputs}
        if h % 2:
            header["id"] = f"h{h}"
            header["parameters"] = {"binary_data_output": True, "timeout": h}
        headers.append(header)
    plans = v2.HeaderPlans(capacity=4)
    outcomes = {"request": 0, "error": 0}
    for _ in range(600):
        body, length = random_body(rng, headers)
        planned = parse(body, length, codec, plans)
        same(planned, parse(body, length, codec, None))
        outcomes["error" if isinstance(planned, str) else "request"] += 1
    assert outcomes["request"] > 200 and outcomes["error"] > 50, outcomes


# -- JSON documents the compiled scanner cut ------------------------------------------------------


def json_doc(width: int, rng: random.Random, *, count: int | None = None, **top: Any) -> bytes:
    """A JSON request of an FP32 [1, width] and an INT64 [2, 3] input, numbers random (count:
    how many FP32 numbers it really holds)."""
    numbers = [rng.uniform(-1e3, 1e3) for _ in range(width if count is None else count)]
    doc = {
        **top,
        "inputs": [
            {"name": "a", "shape": [1, width], "datatype": "FP32", "data": numbers},
            {"name": "b", "shape": [2, 3], "datatype": "INT64", "data": [rng.randrange(-(2**40), 2**40) for _ in range(6)], "parameters": {"p": [1]}},
        ],
    }
    return json.dumps(doc).encode()


def test_a_repeated_json_document_is_planned_with_each_request_own_numbers(codec: Codec) -> None:
    rng = random.Random(1)
    plans = v2.HeaderPlans()
    top = {"id": "j-1", "parameters": {"timeout": 10, "nested": {"a": [1]}}, "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}
    seen = []
    for _ in range(3):
        doc = json_doc(200, rng, **top)
        got = parse(doc, None, codec, plans)
        same(got, parse(doc, None, codec, None))
        assert isinstance(got, InferenceRequest)
        np.testing.assert_array_equal(got.inputs[0].data, np.array(json.loads(doc)["inputs"][0]["data"], dtype=np.float32).reshape(1, 200))
        seen.append(got)
    # with the compiled core the document, its numbers set aside, is planned once; without it,
    # nothing is cut, so nothing is planned
    assert len(plans._cut_plans) == (1 if codec.cut_json_data is not None else 0) and not plans._plans
    first, second = seen[0], seen[1]
    assert first.parameters is not second.parameters and first.parameters["nested"] is not second.parameters["nested"]
    assert first.inputs[1].parameters is not second.inputs[1].parameters
    assert first.inputs[0].data is not second.inputs[0].data
    first.parameters["nested"]["a"].append(2)
    first.inputs[1].parameters["p"].append(2)
    again = parse(json_doc(200, rng, **top), None, codec, plans)
    assert isinstance(again, InferenceRequest)
    assert again.parameters["nested"] == {"a": [1]} and again.inputs[1].parameters == {"p": [1]}


@pytest.mark.parametrize("count", [199, 201, 0])
def test_a_known_json_document_with_another_count_gets_the_full_parser_error(codec: Codec, count: int) -> None:
    rng = random.Random(2)
    plans = v2.HeaderPlans()
    assert isinstance(parse(json_doc(200, rng), None, codec, plans), InferenceRequest)
    bad = json_doc(200, rng, count=count)
    got = parse(bad, None, codec, plans)
    assert isinstance(got, str) and got.startswith("error: ") and "200" in got
    assert got == parse(bad, None, codec, None)


def test_a_random_json_stream_parses_the_same_with_and_without_plans(codec: Codec) -> None:
    """Documents over a few shapes and ids, their counts right or not, now and then numbers the
    scanner does not cut (booleans, a nested list) or an input it cannot plan."""
    rng = random.Random(11)
    plans = v2.HeaderPlans(capacity=3)
    outcomes = {"request": 0, "error": 0}
    for _ in range(300):
        width = rng.choice([150, 200, 300])
        count = width if rng.random() < 0.8 else width + rng.choice([-1, 1])
        top: dict[str, Any] = rng.choice([{}, {"id": "x"}, {"id": "y", "parameters": {"binary_data_output": True}}])
        doc = json_doc(width, rng, count=count, **top)
        roll = rng.random()
        if roll < 0.05:
            doc = doc.replace(b'"data": [', b'"data": [true, ', 1)
        elif roll < 0.1:
            doc = doc.replace(b'"data": [', b'"data": [[1.0], ', 1)
        elif roll < 0.15:
            doc = doc.replace(b'"name": "b"', b'"name": "b", "name": "c"', 1)
        planned = parse(doc, None, codec, plans)
        same(planned, parse(doc, None, codec, None))
        outcomes["error" if isinstance(planned, str) else "request"] += 1
    assert outcomes["request"] > 150 and outcomes["error"] > 30, outcomes
