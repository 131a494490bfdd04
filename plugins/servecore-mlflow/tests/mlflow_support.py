"""Helpers of the servecore-mlflow tests (imported by conftest.py and the tests; a name of its own
so that it cannot be confused with another test directory's helpers when suites run together)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- MLflow --------------------------------------------------------------------------------------


@dataclass
class MlflowServer:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group *proc* leads (it was started in a session of its own), then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
        # the leader is gone; make sure no worker of the group outlives it
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return


def onnx_add(constant: float) -> Any:
    """An ONNX model: FP32 ``y = x + constant``, ``x`` of shape [batch, 4]."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "c"], ["y"])],
        f"add_{constant:g}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor("c", TensorProto.FLOAT, [], [constant])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="servecore-mlflow-tests"
    )
    model.ir_version = 10  # onnx >= 1.23 writes IR 14 by default, which onnxruntime refuses
    onnx.checker.check_model(model)
    return model


class Registry:
    """The session's MLflow registry: two logged ONNX models (``y = x + 1``, ``y = x + 2``) that
    tests register, as new versions, under registered models of their own."""

    def __init__(self, url: str) -> None:
        import mlflow
        import mlflow.onnx
        from mlflow import MlflowClient

        self.url = url
        self.client = MlflowClient(tracking_uri=url, registry_uri=url)
        mlflow.set_tracking_uri(url)
        self.logged: dict[int, str] = {}
        for constant in (1, 2):
            where = {"name": "model"} if int(mlflow.__version__.split(".")[0]) >= 3 else {"artifact_path": "model"}
            # MLflow's logging warns about things of no concern here (type hints, signatures, ...)
            with warnings.catch_warnings(), mlflow.start_run(run_name=f"add-{constant}"):
                warnings.simplefilter("ignore")
                info = mlflow.onnx.log_model(onnx_add(constant), pip_requirements=["onnx"], **where)
            self.logged[constant] = info.model_uri

    def register(self, name: str, constant: int) -> str:
        """A new version of registered model *name* (created if needed) answering ``x + constant``."""
        import mlflow

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            version = mlflow.register_model(self.logged[constant], name)
        return str(version.version)


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")
