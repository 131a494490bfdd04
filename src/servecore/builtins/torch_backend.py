"""Built-in plugin: the PyTorch backend for TorchScript (``*.pt``) and torch.export (``*.pt2``) files.

torch is imported only when a model is loaded (inside :func:`load_torch_model`), never when this
module is imported, so servers and CLI commands without torch models do not pay for it.

Signatures:

* ``model.toml`` ``[[inputs]]`` / ``[[outputs]]`` win when present; tensors are passed to
  ``forward`` positionally in the declared order, and positional outputs take the declared names.
* a torch.export program (``.pt2``) describes itself: each user input's name, dtype and shape come
  from its placeholder's fake tensor (dynamic dimensions are ``-1``); outputs are ``output__0``,
  ``output__1``... (Triton's convention), or the keys when ``forward`` returns a dict.
* a TorchScript file (``.pt``) only names its inputs (the scripted ``forward``'s schema): each is
  declared *open* (any datatype and shape, see :class:`~servecore.types.TensorSpec`) and the
  outputs are left undeclared, so every tensor ``forward`` returns is sent.

``forward`` may return a tensor (``output__0``), a tuple or list of tensors (``output__0``,
``output__1``... in order, nested sequences flattened depth-first) or a dict of tensors (its keys).

BF16 travels as raw 16-bit patterns (``uint16`` arrays, see :mod:`servecore.datatypes`): a
``uint16`` array reaching this backend is always read as BF16, since torch has no usable UINT16
type. A BF16 result is sent as BF16 when the output is declared BF16, and widened (exactly) to FP32
when nothing declares it, because an undeclared ``uint16`` array would be labelled UINT16.

``--intra-op-threads`` is not applied: torch's thread count is process-wide (``torch.set_num_threads``),
not a per-model setting; ``properties["threads"]`` shows what torch uses.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from servecore.errors import BackendError, InvalidInputError, ModelLoadError
from servecore.hookspecs import RegisterBackend, hookimpl
from servecore.types import ANY_DATATYPE, ModelSource, TensorSpec

if TYPE_CHECKING:
    import torch
    from servecore.config import ServeConfig

logger = logging.getLogger("servecore.torch")

NAME = "torch"
TORCHSCRIPT_PLATFORM = "pytorch_libtorch"
EXPORT_PLATFORM = "pytorch_export"
TORCHSCRIPT_SUFFIX = ".pt"
EXPORT_SUFFIX = ".pt2"

#: torch dtype name (``str(dtype)`` without ``torch.``) -> V2 datatype, both ways. Other torch
#: dtypes (complex, float8, the unsigned 16/32/64-bit ones) are refused with a message.
TORCH_TO_V2: dict[str, str] = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
    "bfloat16": "BF16",
}
V2_TO_TORCH: dict[str, str] = {v2: name for name, v2 in TORCH_TO_V2.items()}
#: numpy dtypes fed to torch as they are (uint16 is BF16's wire form and handled apart)
_FEEDABLE = frozenset(np.dtype(n) for n in TORCH_TO_V2 if n != "bfloat16")

OPEN_SIGNATURE = "inputs from the scripted forward's schema; datatypes and shapes from each request"
EXPORT_SIGNATURE = "from the exported program"
DECLARED_SIGNATURE = "declared in model.toml"


@hookimpl
def servecore_register_backends(register: RegisterBackend) -> None:
    register(NAME, load_torch_model, suffixes=(TORCHSCRIPT_SUFFIX, EXPORT_SUFFIX))


# -- dtypes -------------------------------------------------------------------------------------


def v2_of(dtype: torch.dtype) -> str | None:
    """The V2 datatype of a torch dtype, or None when this backend does not serve it."""
    return TORCH_TO_V2.get(str(dtype).removeprefix("torch."))


def to_tensor(name: str, array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A request array as a tensor on *device*; ``uint16`` arrays are BF16 bit patterns."""
    import torch

    if array.dtype == np.uint16:
        bits = torch.from_numpy(np.ascontiguousarray(array).view(np.int16).copy())
        return bits.view(torch.bfloat16).to(device)
    if array.dtype not in _FEEDABLE:
        raise InvalidInputError(
            f"input {name!r}: numpy dtype {array.dtype} cannot be fed to a torch model; "
            f"send one of {', '.join(TORCH_TO_V2.values())}"
        )
    if not array.flags.writeable:  # torch.from_numpy warns about read-only buffers
        array = np.array(array)
    return torch.from_numpy(array).to(device)


def to_array(name: str, tensor: torch.Tensor, *, bf16: bool) -> np.ndarray:
    """A result tensor as a numpy array on the CPU.

    BF16 becomes its ``uint16`` bit patterns when *bf16* (the output is declared BF16), FP32 otherwise.
    """
    import torch

    if v2_of(tensor.dtype) is None:
        raise BackendError(f"output {name!r} has torch dtype {tensor.dtype}, which has no V2 datatype")
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        if not bf16:
            return tensor.float().numpy()
        return tensor.contiguous().view(torch.int16).numpy().view(np.uint16)
    return tensor.numpy()


# -- results ------------------------------------------------------------------------------------


def output_name(index: int) -> str:
    """The name of positional output *index* (Triton's convention)."""
    return f"output__{index}"


def _leaves(value: Any) -> list[torch.Tensor]:
    """The tensors of a tensor or (nested) tuple/list of tensors, depth-first."""
    import torch

    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [leaf for item in value for leaf in _leaves(item)]
    raise BackendError(f"forward returned a {type(value).__name__}; a torch model must return tensors")


def named_results(result: Any, declared: Sequence[str]) -> dict[str, torch.Tensor]:
    """Name what ``forward`` returned: dict keys, else *declared* names or ``output__N`` in order."""
    import torch

    if isinstance(result, dict):
        named = {str(key): value for key, value in result.items()}
        for key, value in named.items():
            if not isinstance(value, torch.Tensor):
                raise BackendError(f"forward returned {type(value).__name__} for key {key!r}, not a tensor")
        return named
    leaves = _leaves(result)
    if not declared:
        return {output_name(i): leaf for i, leaf in enumerate(leaves)}
    if len(leaves) != len(declared):
        raise BackendError(f"forward returned {len(leaves)} tensors but {len(declared)} outputs are declared")
    return dict(zip(declared, leaves))


# -- the backend --------------------------------------------------------------------------------


@dataclass
class TorchBackend:
    """A loaded TorchScript module or torch.export program, run under ``torch.inference_mode``."""

    module: Any
    device: torch.device
    platform: str
    inputs: Sequence[TensorSpec]
    outputs: Sequence[TensorSpec]
    properties: Mapping[str, str]
    max_batch_size: int = 0
    name: str = NAME
    #: output names for positional results (empty: ``output__N``)
    _positional_names: tuple[str, ...] = ()
    _bf16_outputs: frozenset[str] = field(default_factory=frozenset)

    def infer(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        """Run ``forward`` with the inputs in signature order; exceptions from it propagate."""
        import torch

        args = [to_tensor(spec.name, inputs[spec.name], self.device) for spec in self.inputs]
        with torch.inference_mode():
            result = self.module(*args)
            named = named_results(result, self._positional_names)
            return {
                key: to_array(key, tensor, bf16=key in self._bf16_outputs)
                for key, tensor in named.items()
                if not outputs or key in outputs
            }

    def close(self) -> None:
        """Drop the module; on CUDA, give its cached memory back."""
        self.module = None
        if self.device.type == "cuda":
            import torch

            torch.cuda.empty_cache()


# -- signatures ---------------------------------------------------------------------------------


def _check_declared(source: ModelSource, specs: Sequence[TensorSpec], kind: str) -> None:
    """Refuse declared datatypes torch has no tensor type for."""
    for spec in specs:
        if spec.datatype not in V2_TO_TORCH:
            raise ModelLoadError(
                f"model {source.name!r}: {kind} {spec.name!r} is declared {spec.datatype}, which torch "
                f"cannot hold; torch models take {', '.join(V2_TO_TORCH)}"
            )


def _fake_spec(source: ModelSource, name: str, value: Any, kind: str) -> TensorSpec:
    """The spec of an exported program's placeholder or output from its ``meta["val"]``."""
    dtype = getattr(value, "dtype", None)
    shape = getattr(value, "shape", None)
    if dtype is None or shape is None:
        raise ModelLoadError(
            f"model {source.name!r}: {kind} {name!r} of {source.path.name} is not a tensor "
            f"({type(value).__name__}); declare the signature in model.toml"
        )
    datatype = v2_of(dtype)
    if datatype is None:
        raise ModelLoadError(
            f"model {source.name!r}: {kind} {name!r} of {source.path.name} has torch dtype {dtype}, "
            f"which has no V2 datatype; torch models take {', '.join(V2_TO_TORCH)}"
        )
    return TensorSpec(name, datatype, tuple(d if isinstance(d, int) else -1 for d in shape))


def _export_output_names(program: Any, count: int) -> list[str]:
    """Dict keys when ``forward`` returns a flat dict, else ``output__N``."""
    spec = getattr(getattr(program, "call_spec", None), "out_spec", None)
    keys = getattr(spec, "context", None)
    flat_dict = getattr(spec, "type", None) is dict and getattr(spec, "num_leaves", None) == count
    if flat_dict and isinstance(keys, list) and len(keys) == count:
        return [str(key) for key in keys]
    return [output_name(i) for i in range(count)]


def export_signature(source: ModelSource, program: Any) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs of a torch.export program, from its graph signature and fake tensors."""
    from torch.export.graph_signature import InputKind, OutputKind, TensorArgument

    nodes = {node.name: node for node in program.graph.nodes}
    signature = program.graph_signature
    inputs = []
    for spec in signature.input_specs:
        if spec.kind == InputKind.USER_INPUT:
            name = getattr(spec.arg, "name", str(spec.arg))
            value = nodes[name].meta.get("val") if name in nodes else None
            inputs.append(_fake_spec(source, name, value, "input"))
    values = []
    for spec in signature.output_specs:
        if spec.kind == OutputKind.USER_OUTPUT:
            arg = spec.arg
            node = nodes.get(arg.name) if isinstance(arg, TensorArgument) else None
            values.append(node.meta.get("val") if node is not None else arg)
    names = _export_output_names(program, len(values))
    outputs = [_fake_spec(source, name, value, "output") for name, value in zip(names, values)]
    return inputs, outputs


def _check_arity(source: ModelSource, kind: str, declared: int, low: int, high: int) -> None:
    """Refuse a model.toml signature with a number of tensors the artefact cannot take."""
    if declared and not low <= declared <= high:
        takes = str(low) if low == high else f"{low} to {high}"
        raise ModelLoadError(
            f"model {source.name!r}: model.toml declares {declared} {kind}s but {source.path.name} has {takes}"
        )


def torchscript_inputs(source: ModelSource, module: Any) -> list[str]:
    """The tensor arguments of a scripted ``forward`` (skipping ``self`` and arguments with defaults)."""
    names = []
    for argument in module.forward.schema.arguments[1:]:
        if argument.has_default_value():
            continue
        if argument.type.kind() != "TensorType":
            raise ModelLoadError(
                f"model {source.name!r}: forward argument {argument.name!r} of {source.path.name} is "
                f"{argument.type}, not a tensor; declare the inputs in model.toml"
            )
        names.append(argument.name)
    return names


# -- loading ------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def choose_device() -> torch.device:
    """CUDA when torch sees a device, else the CPU."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _load_torchscript(source: ModelSource, device: torch.device) -> Any:
    import torch

    load: Any = torch.jit.load  # untyped in torch
    try:
        with warnings.catch_warnings():
            # torch >= 2.13 deprecates TorchScript; serving an existing TorchScript file is the point
            warnings.filterwarnings("ignore", r"`torch\.jit\.load` is deprecated", DeprecationWarning)
            module = load(str(source.path), map_location=device)
    except Exception as exc:
        raise ModelLoadError(
            f"model {source.name!r}: {source.path} is not a loadable TorchScript file: {exc}"
        ) from exc
    return module.eval()


def _load_export(source: ModelSource, device: torch.device) -> Any:
    import torch

    try:
        program = torch.export.load(str(source.path))
    except Exception as exc:
        raise ModelLoadError(
            f"model {source.name!r}: {source.path} is not a loadable torch.export program: {exc}"
        ) from exc
    if device.type != "cpu":
        from torch.export.passes import move_to_device_pass

        program = move_to_device_pass(program, device)
    return program


def load_torch_model(source: ModelSource, config: ServeConfig) -> TorchBackend:
    """The backend loader registered for ``*.pt`` (TorchScript) and ``*.pt2`` (torch.export)."""
    path = source.path
    if not path.is_file():
        raise ModelLoadError(f"model {source.name!r}: {path} is not a file")
    import torch

    if config.intra_op_threads:
        logger.info("model %s: --intra-op-threads is not applied to torch models (process-wide in torch)", source.name)
    device = choose_device()
    declared_in, declared_out = source.settings.inputs, source.settings.outputs
    _check_declared(source, declared_in, "input")
    _check_declared(source, declared_out, "output")
    if path.name.lower().endswith(EXPORT_SUFFIX):
        program = _load_export(source, device)
        derived_in, derived_out = export_signature(source, program)
        _check_arity(source, "input", len(declared_in), len(derived_in), len(derived_in))
        _check_arity(source, "output", len(declared_out), len(derived_out), len(derived_out))
        module = program.module()
        platform, fmt, signature = EXPORT_PLATFORM, "torch.export", EXPORT_SIGNATURE
    else:
        module = _load_torchscript(source, device)
        derived_in = [TensorSpec(n, ANY_DATATYPE, ()) for n in torchscript_inputs(source, module)]
        arguments = len(module.forward.schema.arguments) - 1  # without self
        _check_arity(source, "input", len(declared_in), len(derived_in), arguments)
        derived_out = []
        platform, fmt, signature = TORCHSCRIPT_PLATFORM, "torchscript", OPEN_SIGNATURE
    inputs = list(declared_in) or derived_in
    outputs = list(declared_out) or derived_out
    if declared_in or declared_out:
        signature = DECLARED_SIGNATURE if declared_in and declared_out else f"partly {DECLARED_SIGNATURE}; {signature}"
    properties = {
        "format": fmt,
        "device": str(device),
        "torch_version": torch.__version__,
        "threads": str(torch.get_num_threads()),
        "signature": signature,
        "sha256": source.sha256 or _sha256(path),
        "size_bytes": str(path.stat().st_size),
    }
    return TorchBackend(
        module=module,
        device=device,
        platform=platform,
        inputs=inputs,
        outputs=outputs,
        properties=properties,
        _positional_names=tuple(s.name for s in outputs),
        _bf16_outputs=frozenset(s.name for s in outputs if s.datatype == "BF16"),
    )
