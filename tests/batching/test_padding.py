"""Paddable inputs (--pad-inputs): requests of different lengths share a batch, each gets its own answer."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from models import row_sum
from servecore.config import ServeConfig
from servecore.dataplane import DataPlane, create_dataplane
from servecore.errors import ModelLoadError, ConfigError
from servecore.plugins import get_plugin_manager
from servecore.types import InferenceRequest, InferInput, RequestedOutput


@pytest.fixture(params=[True, False], ids=["py", "c"])
def pure_python(request: pytest.FixtureRequest) -> bool:
    if not request.param:
        pytest.importorskip("servecore._native.batching")
        pytest.importorskip("servecore._native.gather")
    return bool(request.param)


def _dataplane(path: Path, pure_python: bool, **options: object) -> DataPlane:
    settings: dict[str, object] = {"max_batch_size": 64, "max_queue_delay_us": 200_000, **options}
    config = ServeConfig(models=(str(path),), pure_python=pure_python, **settings)  # type: ignore[arg-type]
    return create_dataplane(config, get_plugin_manager(load_entrypoints=False))


def _request(x: np.ndarray) -> InferenceRequest:
    return InferenceRequest(
        "row_sum", None, [InferInput("x", "FP32", x.shape, x)],
        outputs=[RequestedOutput("total"), RequestedOutput("doubled")],
    )


async def _run_all(dp: DataPlane, arrays: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
    responses = await asyncio.gather(*(dp.infer(_request(x)) for x in arrays))
    return [{o.name: o.data for o in r.outputs} for r in responses]


def test_different_lengths_share_a_batch_and_get_their_own_outputs(tmp_path: Path, pure_python: bool) -> None:
    dp = _dataplane(row_sum(tmp_path / "row_sum.onnx"), pure_python, pad_inputs="x=0", max_batch_size=8, preferred_batch_sizes="8")
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((1, int(n))).astype(np.float32) for n in rng.integers(1, 20, size=24)]
    try:
        outputs = asyncio.run(_run_all(dp, arrays))
        for x, out in zip(arrays, outputs):
            assert out["doubled"].shape == x.shape  # cut back from the padded length
            np.testing.assert_allclose(out["doubled"], 2 * x, rtol=1e-6)
            np.testing.assert_allclose(out["total"], x.sum(axis=1), rtol=1e-5, atol=1e-5)
        stats = dp.statistics("row_sum")["model_stats"][0]
        assert stats["execution_count"] == 3  # 24 one-row requests of mixed lengths in batches of 8
        series = dp.metrics.series("row_sum", "1")
        assert series.padding_elements.value > 0
        assert series.batches_by_reason["size"] == 3  # the preferred size is the maximum: closed for size
    finally:
        dp.close()


def test_without_padding_lengths_never_share_a_batch(tmp_path: Path, pure_python: bool) -> None:
    dp = _dataplane(row_sum(tmp_path / "row_sum.onnx"), pure_python, max_batch_size=8, max_queue_delay_us=0)
    arrays = [np.ones((1, n), dtype=np.float32) for n in (3, 5, 3, 5)]
    try:
        outputs = asyncio.run(_run_all(dp, arrays))
        for x, out in zip(arrays, outputs):
            np.testing.assert_allclose(out["doubled"], 2 * x)
        assert dp.metrics.series("row_sum", "1").padding_elements.value == 0
    finally:
        dp.close()


def test_pad_value_is_used(tmp_path: Path, pure_python: bool) -> None:
    """A pad value of 1 adds (padded length - own length) to each row's sum: proof the value reaches the model."""
    dp = _dataplane(row_sum(tmp_path / "row_sum.onnx"), pure_python, pad_inputs="x=1", max_batch_size=2, preferred_batch_sizes="2")
    short, long = np.zeros((1, 2), dtype=np.float32), np.zeros((1, 5), dtype=np.float32)
    try:
        out_short, out_long = asyncio.run(_run_all(dp, [short, long]))
        assert out_short["total"].tolist() == [3.0]  # three padded ones
        assert out_long["total"].tolist() == [0.0]
        assert out_short["doubled"].shape == (1, 2)
    finally:
        dp.close()


@pytest.mark.parametrize("value", ["x", "x=", "=1", "x=abc"])
def test_bad_pad_inputs_are_config_errors(value: str) -> None:
    with pytest.raises(ConfigError):
        ServeConfig(pad_inputs=value)


def test_unknown_pad_input_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no input"):
        _dataplane(row_sum(tmp_path / "row_sum.onnx"), True, pad_inputs="nope=0")


def _masked_request(x: np.ndarray, mask: np.ndarray | None = None) -> InferenceRequest:
    inputs = [InferInput("ids", "FP32", x.shape, x)]
    if mask is not None:
        inputs.append(InferInput("mask", "INT64", mask.shape, mask))
    return InferenceRequest("masked_sum", None, inputs)


def test_mask_input_is_filled_in_and_padded_with_zero(tmp_path: Path, pure_python: bool) -> None:
    """'ids=7:mask': the pad value 7 never counts, because the generated mask is 0 over the padding."""
    from models import masked_sum

    path = masked_sum(tmp_path / "masked_sum.onnx")
    dp = _dataplane(path, pure_python, pad_inputs="ids=7:mask", max_batch_size=4, preferred_batch_sizes="4")
    rng = np.random.default_rng(5)
    arrays = [rng.standard_normal((1, n)).astype(np.float32) for n in (2, 9, 4, 6)]

    async def scenario() -> list[dict[str, np.ndarray]]:
        responses = await asyncio.gather(*(dp.infer(_masked_request(x)) for x in arrays))
        return [{o.name: o.data for o in r.outputs} for r in responses]

    try:
        outputs = asyncio.run(scenario())
        for x, out in zip(arrays, outputs):
            assert out["count"].tolist() == [x.shape[1]]  # ones over its own length only
            np.testing.assert_allclose(out["total"], x.sum(axis=1), rtol=1e-5, atol=1e-5)
        assert dp.statistics("masked_sum")["model_stats"][0]["execution_count"] == 1
        # a request may still send its own mask; it is padded with 0 like a generated one
        own = np.array([[1, 0, 1]], dtype=np.int64)
        x = np.array([[1.0, 100.0, 2.0]], dtype=np.float32)
        response = asyncio.run(dp.infer(_masked_request(x, own)))
        assert {o.name: o.data.tolist() for o in response.outputs} == {"total": [3.0], "count": [2]}
    finally:
        dp.close()


def test_mask_syntax() -> None:
    config = ServeConfig(pad_inputs="ids=7:mask, other=0")
    assert config.pad_values == {"ids": 7.0, "mask": 0.0, "other": 0.0}
    assert config.pad_masks == {"ids": "mask"}
