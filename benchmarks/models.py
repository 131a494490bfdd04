"""ONNX models for the benchmarks, built with ``onnx.helper`` from fixed seeds (reproducible files).

* :func:`build_heavy` - FP32[batch, 512] -> four Dense(1024) + ReLU -> Dense(10) -> ``logits``:
  about 3.7 M multiply-adds per row, so one row is a memory-bound matrix-vector pass over 15 MB of
  weights while a batch is compute-bound matrix multiplication: what dynamic batching is for.
* :func:`build_small` - the bundled demo MLP (FP32[batch, 64] -> 256 -> 10), re-exported from
  :mod:`servecore.demo.build` so the benchmarks can rebuild it anywhere.

Both use IR version 9 and opset 17, which every onnxruntime since 1.16 loads. Run directly to write
both into a directory: ``python benchmarks/models.py OUT_DIR``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from servecore.demo.build import IR_VERSION, OPSET
from servecore.demo.build import build_mlp as build_small

__all__ = ["HEAVY_FEATURES", "HEAVY_HIDDEN", "HEAVY_LAYERS", "build_heavy", "build_small"]

HEAVY_FEATURES = 512
HEAVY_HIDDEN = 1024
HEAVY_LAYERS = 4
HEAVY_CLASSES = 10


def build_heavy(
    path: Path,
    *,
    features: int = HEAVY_FEATURES,
    hidden: int = HEAVY_HIDDEN,
    layers: int = HEAVY_LAYERS,
    classes: int = HEAVY_CLASSES,
    seed: int = 0,
) -> Path:
    """Write the heavy MLP (``input`` FP32[batch, features] -> ``logits`` FP32[batch, classes]) to *path*.

    Weights are scaled by ``1/sqrt(fan_in)`` so activations stay of order one through the layers
    (logits comparable with onnxruntime's to 1e-5 absolute); biases are small and non-zero.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes = []
    initializers = []
    previous, width = "input", features
    for i in range(layers + 1):
        last = i == layers
        out_width = classes if last else hidden
        w = (rng.standard_normal((width, out_width)) / np.sqrt(width)).astype(np.float32)
        b = (0.01 * rng.standard_normal(out_width)).astype(np.float32)
        initializers += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes.append(helper.make_node("MatMul", [previous, f"w{i}"], [f"mm{i}"]))
        if last:
            nodes.append(helper.make_node("Add", [f"mm{i}", f"b{i}"], ["logits"]))
        else:
            nodes.append(helper.make_node("Add", [f"mm{i}", f"b{i}"], [f"pre{i}"]))
            nodes.append(helper.make_node("Relu", [f"pre{i}"], [f"h{i}"]))
            previous = f"h{i}"
        width = out_width
    graph = helper.make_graph(
        nodes,
        "heavy",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        initializer=initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="servecore-benchmarks",
        doc_string=(
            f"servecore batching benchmark model: FP32[batch,{features}] -> "
            f"{layers} x ({hidden} ReLU) -> {classes} logits"
        ),
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


if __name__ == "__main__":
    out_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd()
    out_dir.mkdir(parents=True, exist_ok=True)
    print(build_heavy(out_dir / "heavy.onnx"))
    print(build_small(out_dir / "mlp.onnx"))
