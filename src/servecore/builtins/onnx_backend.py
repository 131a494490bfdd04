"""Built-in plugin: the onnxruntime backend for ``*.onnx`` files.

Execution providers are chosen TensorRT -> CUDA -> CPU. The probe is quiet: on a machine without
a CUDA device it never asks onnxruntime for a GPU provider (so no warnings are printed); with a
device it creates the session with the GPU providers at a silenced log level and reads back which
providers onnxruntime actually kept. ``--providers`` skips the probe.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from servecore.affinity import restricted_cpu_count
from servecore.builtins.onnx_file import read_header
from servecore.errors import BackendError, InvalidInputError, ModelLoadError
from servecore.hookspecs import RegisterBackend, hookimpl
from servecore.types import ModelSource, TensorSpec

if TYPE_CHECKING:
    import onnxruntime

    from servecore.config import ServeConfig

logger = logging.getLogger("servecore.onnx")

PLATFORM = "onnxruntime_onnx"
TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

#: onnxruntime tensor type -> V2 datatype. Types without a V2 datatype (float8, int4, complex)
#: are refused at load time with a message naming the tensor.
ORT_TO_V2: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
    "tensor(bfloat16)": "BF16",
}
_ONNX_BFLOAT16 = 16  # onnx.TensorProto.BFLOAT16


@hookimpl
def servecore_register_backends(register: RegisterBackend) -> None:
    register("onnxruntime", load_onnx_model, suffixes=(".onnx",))


def cuda_device_count() -> int:
    """CUDA devices visible through the driver API, without touching onnxruntime (0 if none)."""
    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    try:
        if driver.cuInit(0) != 0 or driver.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return 0
    except AttributeError:
        return 0
    return count.value


def candidate_providers(
    available: Sequence[str], devices: int, *, cuda_runtime: bool = True, tensorrt_runtime: bool = True
) -> list[str]:
    """The providers worth trying, best first.

    GPU providers only when a CUDA device exists and the libraries they load are present (a
    missing library would make onnxruntime print errors and fall back anyway); TensorRT also
    needs the CUDA libraries, since it falls back to CUDA for the nodes it cannot take.
    """
    order: list[str] = []
    if devices > 0 and cuda_runtime:
        order = [TENSORRT, CUDA] if tensorrt_runtime else [CUDA]
    return [p for p in order if p in available] + [CPU]


def _loadable(*names: str) -> bool:
    """Whether every shared library in *names* can be loaded (by soname, via the loader's path)."""
    for name in names:
        try:
            ctypes.CDLL(name)
        except OSError:
            return False
    return True


def gpu_runtimes(cuda_version: str) -> tuple[bool, bool]:
    """(CUDA libraries present, TensorRT libraries present) for onnxruntime built against *cuda_version*.

    onnxruntime's own loader is given the chance to find libraries installed as ``nvidia-*``
    wheels first (``preload_dlls``, whose messages are swallowed).
    """
    import contextlib
    import io

    import onnxruntime as ort

    major = cuda_version.split(".")[0] if cuda_version else ""
    if not major.isdigit():
        return False, False
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(Exception):
            preload(cuda=True, cudnn=True, msvc=False)
    cuda = _loadable(f"libcudart.so.{major}", f"libcublasLt.so.{major}", f"libcublas.so.{major}", "libcudnn.so.9")
    tensorrt = cuda and _loadable("libnvinfer.so.10")
    return cuda, tensorrt


def available_providers() -> list[str]:
    """Providers this machine can run: those compiled in, GPU ones only with a device and libraries."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    devices = cuda_device_count()
    if devices == 0 or CUDA not in available:
        return candidate_providers(available, devices)
    from onnxruntime.capi import build_and_package_info

    cuda, tensorrt = gpu_runtimes(getattr(build_and_package_info, "cuda_version", ""))
    if not cuda:
        logger.info("a CUDA device is present but its runtime libraries are not: using the CPU")
    return candidate_providers(available, devices, cuda_runtime=cuda, tensorrt_runtime=tensorrt)


def _provider_options(provider: str, config: ServeConfig) -> dict[str, Any]:
    if provider == TENSORRT:
        cache = config.resolved_trt_cache_dir
        os.makedirs(cache, exist_ok=True)
        return {
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": cache,
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": cache,
        }
    return {}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _spec(node: Any, model: str) -> TensorSpec:
    datatype = ORT_TO_V2.get(node.type)
    if datatype is None:
        raise ModelLoadError(f"model {model!r}: tensor {node.name!r} has type {node.type}, which has no V2 datatype")
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (node.shape or ()))
    return TensorSpec(node.name, datatype, shape)


def create_session(
    path: Path, providers: Sequence[str], config: ServeConfig
) -> onnxruntime.InferenceSession:
    """An InferenceSession over *providers* with the server's threading options, quietly."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: a provider that cannot start falls back silently
    threads = config.intra_op_threads or restricted_cpu_count(config.model_cpus)
    if threads:
        options.intra_op_num_threads = threads
    with_options = [(p, _provider_options(p, config)) for p in providers]
    return ort.InferenceSession(
        str(path),
        sess_options=options,
        providers=[p for p, _ in with_options],
        provider_options=[o for _, o in with_options],
    )


@dataclass
class OnnxBackend:
    """A loaded ONNX model: one onnxruntime session (thread-safe for concurrent ``run``)."""

    session: onnxruntime.InferenceSession
    inputs: Sequence[TensorSpec]
    outputs: Sequence[TensorSpec]
    max_batch_size: int
    properties: Mapping[str, str]
    name: str = "onnxruntime"
    platform: str = PLATFORM
    _bf16_inputs: frozenset[str] = field(default_factory=frozenset)
    _bf16_outputs: frozenset[str] = field(default_factory=frozenset)
    _string_inputs: frozenset[str] = field(default_factory=frozenset)

    def infer(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        feeds = dict(inputs)
        if self._string_inputs:
            for name in self._string_inputs & feeds.keys():
                feeds[name] = _as_text(name, feeds[name])
        try:
            if self._bf16_inputs or self._bf16_outputs:
                return self._run_ortvalues(feeds, outputs)
            results = self.session.run(list(outputs), feeds)
        except InvalidInputError:
            raise
        except Exception as exc:  # onnxruntime raises its own exception types for runtime failures
            raise BackendError(f"onnxruntime failed: {exc}") from exc
        return dict(zip(outputs, results))

    def _run_ortvalues(self, feeds: dict[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        """BF16 has no numpy dtype: feed and fetch it as raw uint16 patterns through OrtValues."""
        import onnxruntime as ort

        values = {
            name: ort.OrtValue.ortvalue_from_numpy_with_onnx_type(np.ascontiguousarray(a), _ONNX_BFLOAT16)
            if name in self._bf16_inputs
            else ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(a) if a.dtype != object else a)
            for name, a in feeds.items()
        }
        results = self.session.run_with_ort_values(list(outputs), values)
        out: dict[str, np.ndarray] = {}
        for name, value in zip(outputs, results):
            out[name] = _bf16_bits(value) if name in self._bf16_outputs else value.numpy()
        return out

    def close(self) -> None:
        del self.session


def _bf16_bits(value: Any) -> np.ndarray:
    shape = tuple(value.shape())
    count = int(np.prod(shape))
    if count == 0:
        return np.zeros(shape, dtype=np.uint16)
    buffer = (ctypes.c_uint16 * count).from_address(value.data_ptr())
    return np.frombuffer(memoryview(buffer), dtype=np.uint16).copy().reshape(shape)


def _as_text(name: str, array: np.ndarray) -> np.ndarray:
    """onnxruntime string tensors hold text: decode BYTES elements as UTF-8 (400 if they are not)."""
    flat = array.ravel()
    text = np.empty(flat.shape, dtype=object)
    for i, value in enumerate(flat):
        try:
            text[i] = value.decode("utf-8") if isinstance(value, bytes) else str(value)
        except UnicodeDecodeError:
            raise InvalidInputError(
                f"input {name!r}: element {i} is not valid UTF-8; onnxruntime string tensors hold text"
            ) from None
    return text.reshape(array.shape)


def load_onnx_model(source: ModelSource, config: ServeConfig) -> OnnxBackend:
    """The backend loader registered for ``*.onnx``."""
    path = source.path
    if not path.is_file():
        raise ModelLoadError(f"model {source.name!r}: {path} is not a file")
    requested = config.provider_list
    providers = list(requested) if requested else available_providers()
    try:
        session = create_session(path, providers, config)
    except Exception as exc:
        raise ModelLoadError(f"model {source.name!r}: onnxruntime cannot load {path}: {exc}") from exc
    chosen = session.get_providers()
    if requested and chosen[0] != requested[0]:
        logger.warning("model %s: provider %s was asked for but %s is used", source.name, requested[0], chosen[0])
    inputs = [_spec(n, source.name) for n in session.get_inputs()]
    outputs = [_spec(n, source.name) for n in session.get_outputs()]
    meta = session.get_modelmeta()
    header = read_header(path)
    properties = {
        "opset": ",".join(f"{domain}:{version}" for domain, version in sorted(header.opsets.items())),
        "ir_version": str(header.ir_version),
        "providers": ",".join(chosen),
        "sha256": sha256_file(path),
        "size_bytes": str(path.stat().st_size),
        "producer": meta.producer_name,
    }
    if meta.description:
        properties["description"] = meta.description
    return OnnxBackend(
        session=session,
        inputs=inputs,
        outputs=outputs,
        max_batch_size=0,
        properties=properties,
        _bf16_inputs=frozenset(s.name for s in inputs if s.datatype == "BF16"),
        _bf16_outputs=frozenset(s.name for s in outputs if s.datatype == "BF16"),
        _string_inputs=frozenset(s.name for s in inputs if s.datatype == "BYTES"),
    )
