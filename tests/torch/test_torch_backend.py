"""The torch backend in-process: lazy import, signatures, dtypes, declared signatures, load errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch_models as tm

import torch
from servecore.builtins import torch_backend as tb
from servecore.config import ServeConfig
from servecore.errors import BackendError, InvalidInputError, ModelLoadError
from servecore.models import BackendRegistry
from servecore.plugins import DEFAULT_PLUGINS, get_plugin_manager
from servecore.types import ANY_DATATYPE, Backend, ModelSettings, ModelSource, TensorSpec

CONFIG = ServeConfig()


def load(path: Path, settings: ModelSettings | None = None) -> tb.TorchBackend:
    source = ModelSource(path.name.split(".")[0], "1", path, settings or ModelSettings())
    return tb.load_torch_model(source, CONFIG)


def bf16_bits(values: list[float]) -> np.ndarray:
    """float32 *values* truncated to BF16 bit patterns (uint16), the form BF16 arrives in."""
    return (np.asarray(values, dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16)


# -- the plugin -----------------------------------------------------------------------------------


def test_importing_the_plugin_does_not_import_torch() -> None:
    code = (
        "import sys, servecore.builtins.torch_backend, servecore.plugins as p; p.get_plugin_manager(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]", result.stderr


def test_torch_is_a_builtin_backend_for_pt_and_pt2() -> None:
    assert ("torch", "servecore.builtins.torch_backend") in DEFAULT_PLUGINS
    registry = BackendRegistry.from_plugins(get_plugin_manager(load_entrypoints=False))
    for name in ("model.pt", "model.PT", "model.pt2"):
        registration = registry.for_path(Path(name))
        assert (registration.name, registration.loader) == ("torch", tb.load_torch_model)


# -- dtypes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "datatype"),
    [
        (torch.bool, "BOOL"), (torch.uint8, "UINT8"), (torch.int8, "INT8"), (torch.int16, "INT16"),
        (torch.int32, "INT32"), (torch.int64, "INT64"), (torch.float16, "FP16"), (torch.float32, "FP32"),
        (torch.float64, "FP64"), (torch.bfloat16, "BF16"),
    ],
)
def test_dtype_mapping_both_ways(dtype: torch.dtype, datatype: str) -> None:
    assert tb.v2_of(dtype) == datatype
    assert getattr(torch, tb.V2_TO_TORCH[datatype]) == dtype


@pytest.mark.parametrize("dtype", [torch.complex64, torch.uint32, torch.float8_e4m3fn])
def test_unserved_dtypes_have_no_datatype(dtype: torch.dtype) -> None:
    assert tb.v2_of(dtype) is None


def test_bf16_bits_become_bfloat16_and_back() -> None:
    values = [1.0, -2.25, 3.140625, 1e30, -0.5]
    bits = bf16_bits(values)
    tensor = tb.to_tensor("x", bits, torch.device("cpu"))
    assert tensor.dtype == torch.bfloat16
    np.testing.assert_array_equal(tensor.float().numpy(), (bits.astype(np.uint32) << 16).view(np.float32))
    back = tb.to_array("y", tensor, bf16=True)
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, bits)
    widened = tb.to_array("y", tensor, bf16=False)
    assert widened.dtype == np.float32
    np.testing.assert_array_equal(widened, (bits.astype(np.uint32) << 16).view(np.float32))


def test_read_only_arrays_are_fed_without_warnings() -> None:
    array = np.frombuffer(np.arange(6, dtype=np.float32).tobytes(), dtype=np.float32)
    assert not array.flags.writeable
    tensor = tb.to_tensor("x", array, torch.device("cpu"))  # filterwarnings=error would fail on a warning
    assert tensor.tolist() == list(range(6))


@pytest.mark.parametrize("array", [np.array([b"a"], dtype=object), np.arange(3, dtype=np.uint32)])
def test_arrays_torch_cannot_take_are_a_bad_request(array: np.ndarray) -> None:
    with pytest.raises(InvalidInputError, match="input 'x'.*cannot be fed to a torch model"):
        tb.to_tensor("x", array, torch.device("cpu"))


def test_results_torch_types_cannot_send_are_a_backend_error() -> None:
    with pytest.raises(BackendError, match="output 'z'.*complex64"):
        tb.to_array("z", torch.zeros(2, dtype=torch.complex64), bf16=False)


# -- naming results -------------------------------------------------------------------------------


def test_results_are_named_by_position_keys_or_declaration() -> None:
    a, b = torch.zeros(1), torch.ones(1)
    assert list(tb.named_results(a, ())) == ["output__0"]
    assert list(tb.named_results((a, [b, a]), ())) == ["output__0", "output__1", "output__2"]
    assert list(tb.named_results({"p": a, "q": b}, ())) == ["p", "q"]
    assert list(tb.named_results((a, b), ("A", "B"))) == ["A", "B"]
    with pytest.raises(BackendError, match="returned 2 tensors but 3 outputs are declared"):
        tb.named_results((a, b), ("A", "B", "C"))
    with pytest.raises(BackendError, match="returned a int"):
        tb.named_results(3, ())


# -- TorchScript ----------------------------------------------------------------------------------


def test_torchscript_inputs_are_open_and_outputs_undeclared(tmp_path: Path) -> None:
    backend = load(tm.script(tm.Pair(), tmp_path / "pair.pt"))
    assert isinstance(backend, Backend)
    assert (backend.name, backend.platform, backend.max_batch_size) == ("torch", "pytorch_libtorch", 0)
    assert list(backend.inputs) == [TensorSpec("a", ANY_DATATYPE, ()), TensorSpec("b", ANY_DATATYPE, ())]
    assert list(backend.outputs) == []
    props = backend.properties
    assert props["format"] == "torchscript" and props["device"] == "cpu"
    assert props["torch_version"] == torch.__version__
    assert props["signature"] == tb.OPEN_SIGNATURE
    assert len(props["sha256"]) == 64 and int(props["size_bytes"]) > 0
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.full((2, 3), 2.0, dtype=np.float32)
    out = backend.infer({"a": a, "b": b}, [])
    assert list(out) == ["output__0", "output__1"]
    np.testing.assert_array_equal(out["output__0"], a + b)
    np.testing.assert_array_equal(out["output__1"], a * b)
    assert list(backend.infer({"a": a, "b": b}, ["output__1"])) == ["output__1"]
    backend.close()
    assert backend.module is None


def test_torchscript_forward_with_defaults_and_non_tensor_arguments(tmp_path: Path) -> None:
    class Defaults(torch.nn.Module):
        def forward(self, x: torch.Tensor, scale: float = 2.0) -> torch.Tensor:
            return x * scale

    class NeedsInt(torch.nn.Module):
        def forward(self, x: torch.Tensor, k: int) -> torch.Tensor:
            return x * k

    backend = load(tm.script(Defaults(), tmp_path / "defaults.pt"))
    assert [s.name for s in backend.inputs] == ["x"]
    out = backend.infer({"x": np.ones(2, dtype=np.float32)}, [])
    np.testing.assert_array_equal(out["output__0"], [2.0, 2.0])
    with pytest.raises(ModelLoadError, match=r"forward argument 'k' of needs_int.pt is int, not a tensor"):
        load(tm.script(NeedsInt(), tmp_path / "needs_int.pt"))


def test_declared_signature_wins(tmp_path: Path) -> None:
    settings = ModelSettings(
        inputs=(TensorSpec("INPUT0", "FP32", (-1, 3)), TensorSpec("INPUT1", "FP32", (-1, 3))),
        outputs=(TensorSpec("SUM", "FP32", (-1, 3)), TensorSpec("PRODUCT", "FP32", (-1, 3))),
    )
    backend = load(tm.script(tm.Pair(), tmp_path / "pair.pt"), settings)
    assert list(backend.inputs) == list(settings.inputs)
    assert list(backend.outputs) == list(settings.outputs)
    assert backend.properties["signature"] == tb.DECLARED_SIGNATURE
    a = np.ones((1, 3), dtype=np.float32)
    out = backend.infer({"INPUT0": a, "INPUT1": a * 3}, ["SUM", "PRODUCT"])
    np.testing.assert_array_equal(out["SUM"], a * 4)
    np.testing.assert_array_equal(out["PRODUCT"], a * 3)


def test_declared_bf16_output_is_sent_as_bf16_bits(tmp_path: Path) -> None:
    settings = ModelSettings(outputs=(TensorSpec("y", "BF16", (-1,)),))
    backend = load(tm.script(tm.Identity(), tmp_path / "identity.pt"), settings)
    bits = bf16_bits([1.5, -3.0, 1e-3])
    out = backend.infer({"x": bits}, ["y"])
    assert out["y"].dtype == np.uint16
    np.testing.assert_array_equal(out["y"], bits)


def test_declared_signature_of_the_wrong_size_or_type_is_refused(tmp_path: Path) -> None:
    path = tm.script(tm.Pair(), tmp_path / "pair.pt")
    one = ModelSettings(inputs=(TensorSpec("a", "FP32", (-1,)),))
    with pytest.raises(ModelLoadError, match="model.toml declares 1 inputs but pair.pt has 2"):
        load(path, one)
    text = ModelSettings(inputs=(TensorSpec("a", "BYTES", (-1,)), TensorSpec("b", "FP32", (-1,))))
    with pytest.raises(ModelLoadError, match="input 'a' is declared BYTES, which torch cannot hold"):
        load(path, text)


# -- torch.export ---------------------------------------------------------------------------------


def test_export_signature_is_derived(tmp_path: Path) -> None:
    path = tm.export(tm.Mlp(), (torch.randn(2, tm.WIDTH_IN),), tmp_path / "mlp.pt2")
    backend = load(path)
    assert backend.platform == "pytorch_export"
    assert list(backend.inputs) == [TensorSpec("x", "FP32", (-1, tm.WIDTH_IN))]
    assert list(backend.outputs) == [TensorSpec("output__0", "FP32", (-1, tm.WIDTH_OUT))]
    assert backend.properties["format"] == "torch.export"
    assert backend.properties["signature"] == tb.EXPORT_SIGNATURE
    x = np.random.default_rng(0).standard_normal((5, tm.WIDTH_IN)).astype(np.float32)
    want = tm.Mlp().eval()(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(backend.infer({"x": x}, ["output__0"])["output__0"], want, rtol=1e-6, atol=1e-6)


def test_export_static_shapes_and_dict_outputs(tmp_path: Path) -> None:
    path = tm.export(tm.Named(), (torch.ones(2, 3, dtype=torch.float64),), tmp_path / "named.pt2", batch=False)
    backend = load(path)
    assert list(backend.inputs) == [TensorSpec("x", "FP64", (2, 3))]
    assert list(backend.outputs) == [TensorSpec("total", "FP64", (2,)), TensorSpec("doubled", "FP64", (2, 3))]
    out = backend.infer({"x": np.ones((2, 3))}, [])
    np.testing.assert_array_equal(out["total"], [3.0, 3.0])


def test_export_bf16_signature(tmp_path: Path) -> None:
    path = tm.export(tm.Copy(), (tm.example(torch.bfloat16),), tmp_path / "copy_bf16.pt2")
    backend = load(path)
    assert list(backend.inputs) == [TensorSpec("x", "BF16", (-1, 3))]
    assert list(backend.outputs) == [TensorSpec("output__0", "BF16", (-1, 3))]
    bits = bf16_bits([0.5, -1.0, 2.0e5, 7.0, -9.5, 0.0]).reshape(2, 3)
    np.testing.assert_array_equal(backend.infer({"x": bits}, ["output__0"])["output__0"], bits)


def test_export_with_a_dtype_v2_lacks_is_refused(tmp_path: Path) -> None:
    path = tm.export(tm.Copy(), (torch.ones(2, 3, dtype=torch.complex64),), tmp_path / "complex.pt2")
    with pytest.raises(ModelLoadError, match=r"model 'complex': input 'x' of complex.pt2 has torch dtype torch.complex64"):
        load(path)


# -- broken files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["broken.pt", "broken.pt2"])
def test_a_corrupt_file_is_a_load_error_naming_model_and_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"this is not a zip archive" * 10)
    with pytest.raises(ModelLoadError, match=rf"model 'broken': .*{name} is not a loadable"):
        load(path)


def test_a_torchscript_file_is_not_an_export_program(tmp_path: Path) -> None:
    scripted = tm.script(tm.Identity(), tmp_path / "identity.pt")
    renamed = tmp_path / "identity.pt2"
    renamed.write_bytes(scripted.read_bytes())
    with pytest.raises(ModelLoadError, match="identity.pt2 is not a loadable torch.export program"):
        load(renamed)


def test_a_missing_file_is_a_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="is not a file"):
        load(tmp_path / "missing.pt")
