"""quantize-dynamic: int8 weights (MatMulInteger / ConvInteger), smaller, close to fp32, deterministic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from edgebuild.steps.base import StepError
from edgebuild.steps.quantize_dynamic import QuantizeDynamic


def _x(shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(4).standard_normal(shape).astype(np.float32)


def test_mlp_weights_become_int8(kit, tmp_path: Path, models) -> None:
    ctx = kit.make_ctx(QuantizeDynamic, tmp_path, model=models["mlp"], ir_version=9)
    facts = QuantizeDynamic().run(ctx)
    model = onnx.load(str(ctx.output_model))
    assert model.ir_version <= 9
    assert facts["ops"]["MatMulInteger"] == 2 and "MatMul" not in facts["ops"]
    assert facts["size_after"] < facts["size_before"] / 3    # 4-byte floats -> 1-byte ints
    x = _x((5, 64))
    (want,) = kit.run_ort(models["mlp"], {"x": x})
    (got,) = kit.run_ort(ctx.output_model, {"x": x})
    assert float(np.max(np.abs(got - want))) <= 0.05 * float(np.max(np.abs(want)))


def test_gemm_layers_are_quantized_too(kit, tmp_path: Path, models) -> None:
    ctx = kit.make_ctx(QuantizeDynamic, tmp_path, {"weight_type": "uint8", "per_channel": True}, model=models["mlp_gemm"])
    facts = QuantizeDynamic().run(ctx)
    assert facts["gemm_rewritten"] == 2
    assert facts["ops"]["MatMulInteger"] == 2 and "Gemm" not in facts["ops"]
    x = _x((3, 64))
    (want,) = kit.run_ort(models["mlp_gemm"], {"x": x})
    (got,) = kit.run_ort(ctx.output_model, {"x": x})
    assert float(np.max(np.abs(got - want))) <= 0.05 * float(np.max(np.abs(want)))


def test_cnn_uses_conv_integer_and_loads(kit, tmp_path: Path, models) -> None:
    ctx = kit.make_ctx(QuantizeDynamic, tmp_path, model=models["cnn"])
    facts = QuantizeDynamic().run(ctx)
    assert facts["ops"]["ConvInteger"] == 2
    x = _x((2, 3, 16, 16))
    (want,) = kit.run_ort(models["cnn"], {"x": x})
    (got,) = kit.run_ort(ctx.output_model, {"x": x})
    assert float(np.max(np.abs(got - want))) <= 0.1 * float(np.max(np.abs(want)))


def test_quantize_dynamic_is_byte_deterministic(kit, tmp_path: Path, models) -> None:
    a = kit.make_ctx(QuantizeDynamic, tmp_path / "a", model=models["cnn"])
    b = kit.make_ctx(QuantizeDynamic, tmp_path / "b", model=models["cnn"])
    assert QuantizeDynamic().run(a) == QuantizeDynamic().run(b)
    assert a.output_model.read_bytes() == b.output_model.read_bytes()


def test_nothing_to_quantize_is_an_error(kit, tmp_path: Path, models) -> None:
    ctx = kit.make_ctx(QuantizeDynamic, tmp_path, {"op_types": ["Conv"]}, model=models["mlp"], step_id="q")
    with pytest.raises(StepError, match="nothing was quantized") as e:
        QuantizeDynamic().run(ctx)
    assert e.value.recipe_path == ("steps", "q", "with", "op_types")
