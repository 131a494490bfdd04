"""Rebuild the bundled demo model ``mlp.onnx`` (needs the ``onnx`` package; run at development time).

A small MLP, FP32[batch, 64] -> Dense(256) -> ReLU -> Dense(10) -> ``logits``, with fixed seeded
weights so the file is reproducible: ``python -m servecore.demo.build``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: IR version that every onnxruntime since 1.16 accepts (onnx 1.23 writes 14 by default).
IR_VERSION = 9
OPSET = 17


def build_mlp(path: Path, *, features: int = 64, hidden: int = 256, classes: int = 10, seed: int = 0) -> Path:
    """Write the demo MLP to *path* and return it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((features, hidden)) / np.sqrt(features)).astype(np.float32)
    b1 = np.zeros(hidden, dtype=np.float32)
    w2 = (rng.standard_normal((hidden, classes)) / np.sqrt(hidden)).astype(np.float32)
    b2 = np.zeros(classes, dtype=np.float32)
    nodes = [
        helper.make_node("MatMul", ["input", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "w2"], ["h3"]),
        helper.make_node("Add", ["h3", "b2"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        initializer=[
            numpy_helper.from_array(w1, "w1"),
            numpy_helper.from_array(b1, "b1"),
            numpy_helper.from_array(w2, "w2"),
            numpy_helper.from_array(b2, "b2"),
        ],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="servecore-demo",
        doc_string="servecore demo model: FP32[batch,64] -> 256 ReLU -> 10 logits",
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


if __name__ == "__main__":
    print(build_mlp(Path(__file__).with_name("mlp.onnx")))
