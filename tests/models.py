"""ONNX test models, built with ``onnx.helper`` (IR version 9 so any recent onnxruntime loads them)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IR_VERSION = 9
OPSET = 17

#: V2 datatype -> ONNX element type, for every datatype onnxruntime can hold.
ONNX_TYPES: dict[str, int] = {
    "BOOL": TensorProto.BOOL,
    "UINT8": TensorProto.UINT8,
    "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32,
    "UINT64": TensorProto.UINT64,
    "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
    "BYTES": TensorProto.STRING,
    "BF16": TensorProto.BFLOAT16,
}


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="servecore-tests")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def identity(path: Path, datatype: str, shape: Sequence[int | str] = ("batch", "n")) -> Path:
    """INPUT0 -> OUTPUT0 unchanged, of one datatype."""
    t = ONNX_TYPES[datatype]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"])],
        f"identity_{datatype.lower()}",
        [helper.make_tensor_value_info("INPUT0", t, list(shape))],
        [helper.make_tensor_value_info("OUTPUT0", t, list(shape))],
    )
    return _save(graph, path)


def add_sub(path: Path, width: int = 16) -> Path:
    """Triton's classic: OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1, FP32 [batch, width]."""
    shape = ["batch", width]
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
            helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"]),
        ],
        "add_sub",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in ("INPUT0", "INPUT1")],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in ("OUTPUT0", "OUTPUT1")],
    )
    return _save(graph, path)


def scalar(path: Path) -> Path:
    """A rank-0 FP32 input doubled."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "x"], ["y"])],
        "scalar",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
    )
    return _save(graph, path)


def slow(path: Path, width: int = 1024, layers: int = 8) -> Path:
    """FP32 [batch, width] through *layers* square MatMul+Relu layers: slow for large batches."""
    rng = np.random.default_rng(1)
    nodes, inits, last = [], [], "x"
    for i in range(layers):
        w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("MatMul", [last, f"w{i}"], [f"m{i}"]))
        nodes.append(helper.make_node("Relu", [f"m{i}"], [f"r{i}"]))
        last = f"r{i}"
    nodes.append(helper.make_node("Identity", [last], ["y"]))
    graph = helper.make_graph(
        nodes, "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
        initializer=inits,
    )
    return _save(graph, path)


def build_all(directory: Path) -> dict[str, Path]:
    """Every test model, by the name the server will give it (the file stem)."""
    directory.mkdir(parents=True, exist_ok=True)
    models = {f"identity_{dt.lower()}": identity(directory / f"identity_{dt.lower()}.onnx", dt) for dt in ONNX_TYPES}
    models["add_sub"] = add_sub(directory / "add_sub.onnx")
    models["scalar"] = scalar(directory / "scalar.onnx")
    models["fixed"] = identity(directory / "fixed.onnx", "INT32", (2, 3))
    return models


# -- dynamic batching ---------------------------------------------------------------------------


def mlp(path: Path, seed: int = 3) -> Path:
    """The demo's MLP shape (FP32 ``input[batch, 64]`` -> ``logits[batch, 10]``), with its own weights."""
    from servecore.demo.build import build_mlp

    return build_mlp(path, seed=seed)


def _square_step(width: int) -> onnx.GraphProto:
    """A Loop body: ``h -> Relu(h @ w)`` (``w`` from the enclosing graph)."""
    return helper.make_graph(
        [
            helper.make_node("MatMul", ["h_in", "w"], ["m"]),
            helper.make_node("Relu", ["m"], ["h_out"]),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        ],
        "step",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("h_in", TensorProto.FLOAT, ["batch", width]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("h_out", TensorProto.FLOAT, ["batch", width]),
        ],
    )


def looped(path: Path, width: int = 512, *, per_row: bool = False, seed: int = 2) -> Path:
    """A slow model: ``y`` = (x -> Relu(x @ W)) applied ``n`` times, FP32 ``x[batch, width]``.

    ``n`` is an INT64 scalar, or with *per_row* an INT64 ``[batch, 1]`` of which the largest
    counts, so that every input is batched. One request's duration is set by its ``n``: a single
    small model holds an instance busy as long as a test needs.
    """
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
    step = _square_step(width)
    if per_row:
        nodes = [
            helper.make_node("ReduceMax", ["n"], ["steps"], keepdims=0),
            helper.make_node("Loop", ["steps", "", "x"], ["y"], body=step),
        ]
    else:
        nodes = [helper.make_node("Loop", ["n", "", "x"], ["y"], body=step)]
    graph = helper.make_graph(
        nodes,
        "looped_rows" if per_row else "looped",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width]),
            helper.make_tensor_value_info("n", TensorProto.INT64, ["batch", 1] if per_row else []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
        initializer=[numpy_helper.from_array(w, "w")],
    )
    return _save(graph, path)


def looped_rows(path: Path, width: int = 512) -> Path:
    """:func:`looped` with a per-row ``n``."""
    return looped(path, width, per_row=True)


#: the table :func:`lookup` reads: entry i is 10 * i + 0.5
LOOKUP_TABLE = np.arange(16, dtype=np.float32) * 10 + 0.5


def lookup(path: Path) -> Path:
    """INT64 ``index[batch, 4]`` -> FP32 ``value[batch, 4]`` = ``LOOKUP_TABLE[index]``.

    An index outside 0..15 makes onnxruntime fail the whole run: a marker that fails its batch.
    """
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "index"], ["value"], axis=0)],
        "lookup",
        [helper.make_tensor_value_info("index", TensorProto.INT64, ["batch", 4])],
        [helper.make_tensor_value_info("value", TensorProto.FLOAT, ["batch", 4])],
        initializer=[numpy_helper.from_array(LOOKUP_TABLE, "table")],
    )
    return _save(graph, path)


def row_sum(path: Path) -> Path:
    """FP32 ``x[batch, n]`` -> ``total[batch]`` (sum of each row) and ``doubled[batch, n]`` (2x).

    With zero padding the sums are exact, and ``doubled`` shows outputs being cut back.
    """
    graph = helper.make_graph(
        [
            helper.make_node("ReduceSum", ["x", "axes"], ["total"], keepdims=0),
            helper.make_node("Add", ["x", "x"], ["doubled"]),
        ],
        "row_sum",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "n"])],
        [
            helper.make_tensor_value_info("total", TensorProto.FLOAT, ["batch"]),
            helper.make_tensor_value_info("doubled", TensorProto.FLOAT, ["batch", "n"]),
        ],
        initializer=[numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")],
    )
    return _save(graph, path)


def masked_sum(path: Path) -> Path:
    """``ids`` FP32 [batch, n] and ``mask`` INT64 [batch, n] -> ``total`` [batch] = sum(ids * mask)
    and ``count`` [batch] = sum(mask): a stand-in for a model with an attention mask."""
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["mask"], ["maskf"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["ids", "maskf"], ["kept"]),
            helper.make_node("ReduceSum", ["kept", "axes"], ["total"], keepdims=0),
            helper.make_node("ReduceSum", ["mask", "axes"], ["count"], keepdims=0),
        ],
        "masked_sum",
        [
            helper.make_tensor_value_info("ids", TensorProto.FLOAT, ["batch", "n"]),
            helper.make_tensor_value_info("mask", TensorProto.INT64, ["batch", "n"]),
        ],
        [
            helper.make_tensor_value_info("total", TensorProto.FLOAT, ["batch"]),
            helper.make_tensor_value_info("count", TensorProto.INT64, ["batch"]),
        ],
        initializer=[numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")],
    )
    return _save(graph, path)


def add_constant(path: Path, constant: float, width: int = 4) -> Path:
    """y = x + constant, FP32 [batch, width]: a response tells which version answered."""
    c = numpy_helper.from_array(np.full((width,), constant, dtype=np.float32), "c")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "c"], ["y"])],
        "add_constant",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
        initializer=[c],
    )
    return _save(graph, path)


def needs_two_rows(path: Path, width: int = 4) -> Path:
    """Reshapes x[batch, width] to a fixed [2, width]: runs with two rows, fails with any other
    number (a model whose warmup on one generated row raises)."""
    shape = numpy_helper.from_array(np.array([2, width], dtype=np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        "needs_two_rows",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, width])],
        initializer=[shape],
    )
    return _save(graph, path)
