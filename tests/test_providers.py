"""Execution-provider choice of the onnxruntime backend: quiet probing, visible result.

The probe asks onnxruntime for GPU providers only when the CUDA driver reports a device, so on a
CPU-only machine it picks CPUExecutionProvider without onnxruntime printing a word.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import httpx
import pytest

from servecore.builtins.onnx_backend import (
    CPU,
    CUDA,
    TENSORRT,
    available_providers,
    candidate_providers,
    cuda_device_count,
)

ORT_NOISE = re.compile(r"\[[WE]:onnxruntime")
ALL_COMPILED_IN = [TENSORRT, CUDA, CPU]

cpu_only = pytest.mark.skipif(cuda_device_count() > 0, reason="a CUDA device is present")


# -- the probe's logic -----------------------------------------------------------------------------


def test_candidates_without_a_device_are_cpu_only() -> None:
    assert candidate_providers(ALL_COMPILED_IN, 0) == [CPU]
    assert candidate_providers([CPU], 0) == [CPU]


def test_candidates_with_a_device_prefer_tensorrt_then_cuda() -> None:
    assert candidate_providers(ALL_COMPILED_IN, 1) == [TENSORRT, CUDA, CPU]
    assert candidate_providers([CUDA, CPU], 2) == [CUDA, CPU]
    # order of the compiled-in list does not matter; CPU is always the last resort
    assert candidate_providers([CPU, CUDA, TENSORRT], 1) == [TENSORRT, CUDA, CPU]


def test_candidates_without_gpu_providers_compiled_in() -> None:
    assert candidate_providers([CPU], 4) == [CPU]
    assert candidate_providers([], 1) == [CPU]
    assert candidate_providers(["ROCMExecutionProvider", CPU], 1) == [CPU]


@cpu_only
def test_this_machine_probes_cpu_only() -> None:
    assert cuda_device_count() == 0
    assert available_providers() == [CPU]


# -- a real server ---------------------------------------------------------------------------------


def provider_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if CPU in line or CUDA in line or TENSORRT in line]


@cpu_only
def test_server_chooses_cpu_quietly(start_server: Callable[..., Any]) -> None:
    server = start_server([])
    stderr = server.stderr()
    assert not ORT_NOISE.search(stderr), stderr
    assert not ORT_NOISE.search(server.stdout())
    metadata = httpx.get(server.url + "/v2/models/mlp", timeout=30).json()
    assert metadata["properties"]["providers"] == CPU
    config = httpx.get(server.url + "/v2/models/mlp/config", timeout=30).json()
    assert config["parameters"]["providers"] == {"string_value": CPU}
    # the choice is logged once, naming the model
    lines = provider_lines(stderr)
    assert len(lines) == 1, stderr
    assert "mlp" in lines[0] and CPU in lines[0]


def test_providers_override(start_server: Callable[..., Any]) -> None:
    server = start_server(["--providers", CPU])
    assert not ORT_NOISE.search(server.stderr()), server.stderr()
    metadata = httpx.get(server.url + "/v2/models/mlp", timeout=30).json()
    assert metadata["properties"]["providers"] == CPU
    assert "was asked for" not in server.stderr()


def test_providers_override_from_env(start_server: Callable[..., Any]) -> None:
    server = start_server([], env={"SERVECORE_PROVIDERS": f" {CPU} "})
    metadata = httpx.get(server.url + "/v2/models/mlp", timeout=30).json()
    assert metadata["properties"]["providers"] == CPU


@cpu_only
def test_unavailable_provider_asked_for_falls_back_with_a_warning(start_server: Callable[..., Any]) -> None:
    """Asking for CUDA on a machine without a device still serves, on the CPU, and says so."""
    server = start_server(["--providers", f"{CUDA},{CPU}"])
    metadata = httpx.get(server.url + "/v2/models/mlp", timeout=30).json()
    assert metadata["properties"]["providers"] == CPU
    assert f"provider {CUDA} was asked for but {CPU} is used" in server.stderr()


def test_gpu_providers_need_their_libraries() -> None:
    """A device without the CUDA (or TensorRT) libraries onnxruntime loads is not offered to it."""
    assert candidate_providers(ALL_COMPILED_IN, 1, cuda_runtime=False) == [CPU]
    assert candidate_providers(ALL_COMPILED_IN, 1, cuda_runtime=False, tensorrt_runtime=True) == [CPU]
    assert candidate_providers(ALL_COMPILED_IN, 1, tensorrt_runtime=False) == [CUDA, CPU]


def test_gpu_runtimes_probe_is_quiet(capfd: pytest.CaptureFixture[str]) -> None:
    """Probing for the GPU libraries prints nothing, found or not."""
    from servecore.builtins.onnx_backend import gpu_runtimes

    cuda, tensorrt = gpu_runtimes("13.0")
    assert not tensorrt or cuda
    assert gpu_runtimes("not-a-version") == (False, False)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
