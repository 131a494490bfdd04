"""The V2 wire format: JSON header plus binary tensor data, in both directions (protocol.md 1-3)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import orjson

from servecore.codec import Codec
from servecore.datatypes import NUMPY_DTYPES, WIRE_ITEMSIZE, bf16_to_float32
from servecore.errors import InvalidInputError
from servecore.types import InferenceRequest, InferenceResponse, InferInput, RequestedOutput, TensorSpec

#: The header giving the length of the JSON part of a body with binary tensor data (lower case).
HEADER_LENGTH = b"inference-header-content-length"
#: Largest accepted ``Inference-Header-Content-Length`` (int32, as Triton).
MAX_HEADER_LENGTH = 2**31 - 1
#: Most elements a tensor shape may describe (counting 0 dims as 1): what numpy can address.
MAX_ELEMENTS = np.iinfo(np.intp).max // 8
#: Most dimensions a tensor may have (numpy 1.x's limit; numpy 2 allows 64).
MAX_DIMS = 32
_LE = {name: dt.newbyteorder("<") for name, dt in NUMPY_DTYPES.items() if name != "BYTES"}
#: Smallest JSON document whose numeric data is read by ``Codec.cut_json_data``: below it orjson
#: alone is as fast (a few dozen numbers), and the scan would only add its fixed cost.
CUT_MIN_BYTES = 2048


def parse_header_length(value: str | None, body_length: int) -> int | None:
    """The JSON length from ``Inference-Header-Content-Length``, or None when the header is absent."""
    if value is None:
        return None
    text = value.strip()
    if not text.isdigit() or not text.isascii():
        raise InvalidInputError(f"Inference-Header-Content-Length must be a non-negative integer, not {value!r}")
    length = int(text)
    if length > MAX_HEADER_LENGTH or length > body_length:
        raise InvalidInputError(
            f"Inference-Header-Content-Length {length} is larger than the request body ({body_length} bytes)"
        )
    return length


def _require(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], what: str) -> Any:
    value = obj.get(key)
    if value is None:
        raise InvalidInputError(f"{what}: '{key}' is required")
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise InvalidInputError(f"{what}: '{key}' has the wrong JSON type")
    return value


def _parameters(obj: dict[str, Any], what: str) -> dict[str, Any]:
    params = obj.get("parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise InvalidInputError(f"{what}: 'parameters' must be a JSON object")
    return params


def _shape(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise InvalidInputError(f"{what}: 'shape' must be a list of non-negative integers")
    if len(value) > MAX_DIMS:
        raise InvalidInputError(f"{what}: shape has {len(value)} dimensions, at most {MAX_DIMS} allowed")
    size = 1
    for dim in value:
        if type(dim) is not int or dim < 0:
            raise InvalidInputError(f"{what}: 'shape' must be a list of non-negative integers, got {value!r}")
        # numpy (so every backend) cannot describe an array whose non-zero dims multiply past
        # MAX_ELEMENTS, empty or not: refuse it here rather than fail with a 500 later.
        size *= dim or 1
        if size > MAX_ELEMENTS:
            raise InvalidInputError(f"{what}: shape {value!r} is too large")
    return tuple(value)


def _load_json(raw: bytes | memoryview) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidInputError(f"malformed JSON in request body: {exc}") from None


class HeaderPlans:
    """The JSON headers of binary requests already parsed, and what they say, by their bytes.

    A client sending binary tensors (perf_analyzer, tritonclient, a service calling with the same
    shapes) sends the same JSON header again and again; only the tensor bytes after it change.
    A header parsed and validated once is not parsed again: its inputs (name, datatype, shape,
    bytes), outputs, id and parameters are kept, and a body that repeats it, with exactly the
    tensor bytes it announces, is cut up by that plan. Anything else (another length of tensor
    data, BYTES inputs, whose elements are validated one by one) is parsed in full, so every
    error is the full parser's. Each request gets its own objects; nothing is shared but strings
    and numbers. At most *capacity* headers are kept; then the plans start again.

    JSON requests whose numbers the compiled core reads (:func:`cut_json`) are planned the same
    way, by the rest of the document once their ``data`` arrays are set aside (``"data":null``
    in place of each): a request that repeats that rest is the same request but for its
    numbers, which the plan takes when each array has the length its input's shape asks for.
    """

    def __init__(self, capacity: int = 256) -> None:
        self.capacity = capacity
        self._plans: dict[bytes, Plan] = {}
        self._cut_plans: dict[bytes, Plan] = {}

    def get(self, header: bytes) -> Plan | None:
        return self._plans.get(header)

    def get_cut(self, text: bytes) -> Plan | None:
        """The plan of a JSON request whose document, its data set aside, is *text*."""
        return self._cut_plans.get(text)

    def add_cut(self, text: bytes, request: InferenceRequest, arrays: dict[int, tuple[str, np.ndarray]]) -> None:
        if len(arrays) != len(request.inputs):
            return  # an input without data (an empty binary one): parsed in full each time
        inputs = [
            (tensor.name, tensor.datatype, tensor.shape, _CUT, tensor.data.size, _copy(tensor.parameters))
            for tensor in request.inputs
        ]
        if len(self._cut_plans) >= self.capacity:
            self._cut_plans.clear()
        self._cut_plans[text] = self._plan(inputs, request, _CUT)

    def add(self, header: bytes, request: InferenceRequest, json_end: int, body_length: int) -> None:
        offset = json_end
        inputs = []
        for tensor in request.inputs:
            size = tensor.parameters.get("binary_data_size")
            if tensor.datatype == "BYTES" or type(size) is not int:
                return  # BYTES elements are checked one by one; JSON data is part of the header
            inputs.append((tensor.name, tensor.datatype, tensor.shape, offset, offset + size, _copy(tensor.parameters)))
            offset += size
        if offset != body_length:
            return
        if len(self._plans) >= self.capacity:
            self._plans.clear()
        self._plans[header] = self._plan(inputs, request, offset)

    @staticmethod
    def _plan(inputs: list[tuple[str, str, tuple[int, ...], int, int, dict[str, Any]]], request: InferenceRequest, end: int) -> Plan:
        outputs = None if request.outputs is None else [(o.name, o.binary, o.class_count, _copy(o.parameters)) for o in request.outputs]
        return Plan(inputs, outputs, request.id, _copy(request.parameters), request.binary_output_default, end)


#: a plan's ``end`` and each input's ``start`` when its data comes from the JSON scanner's cut
_CUT = -1


@dataclass(frozen=True, slots=True)
class Plan:
    """What one binary request header says, or one JSON document with its data cut out (see
    :class:`HeaderPlans`)."""

    #: (name, datatype, shape, start, end, parameters) of each input, its bytes at body[start:end];
    #: for a cut JSON request, (name, datatype, shape, _CUT, element count, parameters)
    inputs: list[tuple[str, str, tuple[int, ...], int, int, dict[str, Any]]]
    #: (name, binary, class count, parameters) of each requested output; None: all outputs
    outputs: list[tuple[str, bool | None, int, dict[str, Any]]] | None
    id: str | None
    parameters: dict[str, Any]
    binary_default: bool
    #: the whole body's length: JSON header and every tensor; _CUT for a cut JSON request
    end: int

    def tensors(self, body: memoryview, arrays: dict[int, tuple[str, np.ndarray]] | None = None) -> list[np.ndarray] | None:
        """Each input's tensor from *body* (a cut JSON request: from the *arrays* the scanner
        read), shaped; None when the request must be parsed in full."""
        if arrays is None:
            if len(body) != self.end:
                return None
        elif self.end != _CUT or len(arrays) != len(self.inputs):
            return None
        tensors = []
        for index, (_, datatype, shape, start, end, _) in enumerate(self.inputs):
            if arrays is None:
                array = np.frombuffer(body[start:end], dtype=_LE[datatype])
                if datatype == "BOOL" and array.view(np.uint8).max(initial=0) > 1:
                    return None
            else:
                cut = arrays.get(index)
                if cut is None or cut[0] != datatype or len(cut[1]) != end:
                    return None  # a count the full parse reports
                array = cut[1]
            tensors.append(array.reshape(shape))
        return tensors

    def request(
        self, body: memoryview, model_name: str, model_version: str | None,
        arrays: dict[int, tuple[str, np.ndarray]] | None = None,
    ) -> InferenceRequest | None:
        """The request this plan makes of *body* (see :meth:`tensors`); None when it must be
        parsed in full."""
        tensors = self.tensors(body, arrays)
        if tensors is None:
            return None
        inputs = [
            InferInput(name, datatype, shape, tensor, _copy(params))
            for (name, datatype, shape, _, _, params), tensor in zip(self.inputs, tensors)
        ]
        outputs = None
        if self.outputs is not None:
            outputs = [RequestedOutput(name, binary, classes, _copy(params)) for name, binary, classes, params in self.outputs]
        return InferenceRequest(
            model_name=model_name,
            model_version=model_version,
            inputs=inputs,
            outputs=outputs,
            id=self.id,
            parameters=_copy(self.parameters),
            binary_output_default=self.binary_default,
        )


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _copy(params: dict[str, Any]) -> dict[str, Any]:
    """A request's own parameters: a deep copy of what the JSON parser made (dicts, lists, scalars)."""
    if not params:
        return {}
    if all(type(v) in _SCALARS for v in params.values()):
        return dict(params)
    result: dict[str, Any] = orjson.loads(orjson.dumps(params))
    return result


def parse_request(
    body: bytes, header_length: int | None, *, model_name: str, model_version: str | None, codec: Codec,
    plans: HeaderPlans | None = None,
) -> InferenceRequest:
    """Parse a V2 inference request body (JSON, optionally followed by binary tensor data).

    With *plans*, a binary request whose JSON header was parsed before is cut up by what it
    said (:class:`HeaderPlans`), and a new one is remembered once it has parsed.
    """
    if plans is not None and header_length:
        header = body[:header_length]
        plan = plans.get(header)
        if plan is not None:
            known = plan.request(memoryview(body), model_name, model_version)
            if known is not None:
                return known
        request = parse_request(body, header_length, model_name=model_name, model_version=model_version, codec=codec)
        plans.add(header, request, header_length, len(body))
        return request
    json_end = len(body) if header_length is None else header_length
    cut = cut_json(body, json_end, codec)
    return parse_cut_request(body, json_end, cut, model_name=model_name, model_version=model_version, codec=codec, plans=plans)


Cut = tuple[bytes, dict[int, tuple[str, np.ndarray]]]


def cut_json(body: bytes, json_end: int, codec: Codec) -> Cut | None:
    """The JSON document ``body[:json_end]`` with its numeric data read straight into arrays
    (:mod:`servecore.codec.jsondata`), or None when it is not (no compiled core, a small
    document, or one the scanner leaves to orjson)."""
    if codec.cut_json_data is None or json_end < CUT_MIN_BYTES:
        return None
    return codec.cut_json_data(memoryview(body)[:json_end])


def parse_cut_request(
    body: bytes, json_end: int, cut: Cut | None, *, model_name: str, model_version: str | None, codec: Codec,
    plans: HeaderPlans | None = None,
) -> InferenceRequest:
    """:func:`parse_request` for a body whose JSON part, ``body[:json_end]``, gave *cut*. *plans*
    serve only a body that is all JSON: binary tensors after it are the header plans' business."""
    view = memoryview(body)
    if json_end != len(body):
        plans = None
    if cut is not None:
        # The numeric data read straight into arrays; the rest of the document, small, parsed
        # here, or planned before. Anything this parse would refuse is parsed again in full
        # below, so that every error is the full parser's (positions in JSON errors included).
        text, arrays = cut
        plan = plans.get_cut(text) if plans is not None else None
        known = plan.request(view, model_name, model_version, arrays) if plan is not None else None
        if known is not None:
            return known
        try:
            request = _parse_document(orjson.loads(text), view, json_end, model_name, model_version, codec, arrays)
        except (InvalidInputError, orjson.JSONDecodeError, _NotCut):
            pass
        else:
            if plans is not None:
                plans.add_cut(text, request, arrays)
            return request
    return _parse_document(_load_json(view[:json_end]), view, json_end, model_name, model_version, codec, {})


class _NotCut(Exception):
    """Data set aside by :func:`~servecore.codec.jsondata.cut_json_data` does not fit its input."""


def _parse_document(
    doc: Any, view: memoryview, json_end: int, model_name: str, model_version: str | None, codec: Codec,
    arrays: dict[int, tuple[str, np.ndarray]],
) -> InferenceRequest:
    """The request a parsed JSON header (*arrays*: data set aside, by input index) describes."""
    if not isinstance(doc, dict):
        raise InvalidInputError("the request body must be a JSON object")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInputError("'inputs' must be a non-empty list")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInputError("'id' must be a string")
    params = _parameters(doc, "request")
    binary_default = params.get("binary_data_output", False)
    if not isinstance(binary_default, bool):
        raise InvalidInputError("parameter 'binary_data_output' must be a boolean")
    offset = json_end
    inputs: list[InferInput] = []
    for index, raw in enumerate(raw_inputs):
        tensor, offset = _parse_input(raw, index, view, offset, codec, arrays.get(index))
        inputs.append(tensor)
    if offset != len(view):
        raise InvalidInputError(f"unexpected additional input data: {len(view) - offset} bytes after the last tensor")
    return InferenceRequest(
        model_name=model_name,
        model_version=model_version,
        inputs=inputs,
        outputs=_parse_outputs(doc.get("outputs")),
        id=request_id,
        parameters=params,
        binary_output_default=binary_default,
    )


def _parse_input(
    raw: Any, index: int, body: memoryview, offset: int, codec: Codec, cut: tuple[str, np.ndarray] | None = None
) -> tuple[InferInput, int]:
    if not isinstance(raw, dict):
        raise InvalidInputError(f"inputs[{index}] must be a JSON object")
    name = _require(raw, "name", str, f"inputs[{index}]")
    what = f"input {name!r}"
    datatype = _require(raw, "datatype", str, what)
    if datatype not in NUMPY_DTYPES:
        raise InvalidInputError(f"{what}: unknown datatype {datatype!r}")
    shape = _shape(_require(raw, "shape", list, what), what)
    count = math.prod(shape)
    params = _parameters(raw, what)
    binary_size = params.get("binary_data_size")
    has_data = "data" in raw
    if "shared_memory_region" in params:
        raise InvalidInputError(f"{what}: shared memory is not supported")
    if has_data == (binary_size is not None):
        raise InvalidInputError(f"{what}: set exactly one of 'data' and parameters.binary_data_size")
    if has_data:
        if cut is None:
            array = codec.json_to_array(raw["data"], datatype, count, name)
        elif cut[0] == datatype and len(cut[1]) == count:
            array = cut[1]
        else:
            raise _NotCut  # a count or datatype the full parse reports
        return InferInput(name, datatype, shape, array.reshape(shape), params), offset
    if type(binary_size) is not int or binary_size < 0:
        raise InvalidInputError(f"{what}: binary_data_size must be a non-negative integer")
    end = offset + binary_size
    if end > len(body):
        raise InvalidInputError(
            f"unexpected size for input {name!r}: expected {binary_size} bytes, "
            f"the body holds {len(body) - offset} more"
        )
    blob = body[offset:end]
    if datatype == "BYTES":
        if count > binary_size // 4:  # each element takes at least its 4-byte length prefix
            raise InvalidInputError(
                f"unexpected size for input {name!r}: {binary_size} bytes cannot hold "
                f"the {count} BYTES elements of shape {list(shape)}"
            )
        array = codec.decode_bytes(blob, count, name)
    else:
        expected = count * WIRE_ITEMSIZE[datatype]
        if binary_size != expected:
            raise InvalidInputError(
                f"unexpected size for input {name!r}: shape {list(shape)} of {datatype} needs "
                f"{expected} bytes, binary_data_size is {binary_size}"
            )
        array = np.frombuffer(blob, dtype=_LE[datatype])
        if datatype == "BOOL" and array.view(np.uint8).max(initial=0) > 1:
            raise InvalidInputError(f"{what}: BOOL bytes must be 0 or 1")
    return InferInput(name, datatype, shape, array.reshape(shape), params), end


def _parse_outputs(raw: Any) -> list[RequestedOutput] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise InvalidInputError("'outputs' must be a list")
    outputs = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            raise InvalidInputError(f"outputs[{index}] must be a JSON object")
        name = _require(item, "name", str, f"outputs[{index}]")
        params = _parameters(item, f"output {name!r}")
        binary = params.get("binary_data")
        if binary is not None and not isinstance(binary, bool):
            raise InvalidInputError(f"output {name!r}: binary_data must be a boolean")
        classes = params.get("classification", 0)
        if type(classes) is not int or classes < 0:
            raise InvalidInputError(f"output {name!r}: classification must be a non-negative integer")
        if "shared_memory_region" in params:
            raise InvalidInputError(f"output {name!r}: shared memory is not supported")
        outputs.append(RequestedOutput(name, binary, classes, params))
    return outputs


def parse_raw_binary(body: bytes, spec: TensorSpec, *, model_name: str, model_version: str | None, codec: Codec) -> InferenceRequest:
    """A raw binary request (``Inference-Header-Content-Length: 0``): the body is the only input's data.

    The tensor is one batch row; the model's single variable dimension takes whatever size the
    bytes give (BYTES inputs hold exactly one element).
    """
    dims = list(spec.shape)
    variable = [i for i, d in enumerate(dims) if d < 0]
    if len(variable) > 1 and not (spec.shape[0] < 0 and len(variable) == 2):
        raise InvalidInputError(f"raw binary input {spec.name!r} needs at most one variable dimension")
    if spec.shape and spec.shape[0] < 0:
        dims[0] = 1
        variable = variable[1:]
    if spec.datatype == "BYTES":
        dims = [1 if d < 0 else d for d in dims]
        array = codec.decode_bytes(body, math.prod(dims), spec.name)
    else:
        itemsize = WIRE_ITEMSIZE[spec.datatype]
        fixed = math.prod(d for d in dims if d >= 0) * itemsize
        if variable:
            if fixed == 0 or len(body) % fixed:
                raise InvalidInputError(f"raw binary input {spec.name!r}: {len(body)} bytes do not fit shape {spec.shape}")
            dims[variable[0]] = len(body) // fixed
        elif len(body) != fixed:
            raise InvalidInputError(f"raw binary input {spec.name!r}: expected {fixed} bytes, got {len(body)}")
        array = np.frombuffer(body, dtype=_LE[spec.datatype])
        if spec.datatype == "BOOL" and array.view(np.uint8).max(initial=0) > 1:
            raise InvalidInputError(f"raw binary input {spec.name!r}: BOOL bytes must be 0 or 1")
    shape = tuple(dims)
    return InferenceRequest(
        model_name=model_name,
        model_version=model_version,
        inputs=[InferInput(spec.name, spec.datatype, shape, array.reshape(shape))],
        binary_output_default=True,
    )


def encode_response(response: InferenceResponse, codec: Codec) -> tuple[bytes, int | None]:
    """The response body, and the JSON length when binary tensor data follows it (else None)."""
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for out in response.outputs:
        entry: dict[str, Any] = {"name": out.name, "datatype": out.datatype, "shape": list(out.shape)}
        if out.binary:
            blob = _binary(out.datatype, out.data, codec)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = _json_data(out.name, out.datatype, out.data)
        outputs.append(entry)
    doc: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id is not None:
        doc["id"] = response.id
    if response.parameters:
        doc["parameters"] = response.parameters
    doc["outputs"] = outputs
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


def _binary(datatype: str, data: np.ndarray, codec: Codec) -> bytes:
    if datatype == "BYTES":
        return codec.encode_bytes(data)
    if datatype == "BF16":
        return np.ascontiguousarray(data, dtype=np.uint16).astype("<u2", copy=False).tobytes()
    return np.ascontiguousarray(data).astype(_LE[datatype], copy=False).tobytes()


def _json_data(name: str, datatype: str, data: np.ndarray) -> Sequence[Any] | np.ndarray:
    if datatype == "BYTES":
        try:
            return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in data.ravel().tolist()]
        except UnicodeDecodeError:
            raise InvalidInputError(
                f"output {name!r} holds bytes that are not UTF-8 and cannot be sent as JSON; request it as binary data"
            ) from None
    if datatype == "BF16":
        return bf16_to_float32(data.ravel())
    return np.ascontiguousarray(data).ravel()
