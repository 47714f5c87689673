"""fp16: float16 weights, float32 I/O by default, loads in ONNX Runtime CPU, close to fp32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from edgebuild.steps.base import StepError
from edgebuild.steps.fp16 import Fp16


def _x() -> np.ndarray:
    return np.random.default_rng(6).standard_normal((2, 3, 16, 16)).astype(np.float32)


def test_fp16_weights_with_float32_io(kit, tmp_path: Path, models) -> None:
    ctx = kit.make_ctx(Fp16, tmp_path, model=models["cnn"], ir_version=8)
    facts = Fp16().run(ctx)
    model = onnx.load(str(ctx.output_model))
    assert model.ir_version <= 8
    assert {t.data_type for t in model.graph.initializer} == {TensorProto.FLOAT16}
    assert facts["initializers"] == {"float16": 6}
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert facts["size_after"] < 0.7 * facts["size_before"]
    (want,) = kit.run_ort(models["cnn"], {"x": _x()})
    (got,) = kit.run_ort(ctx.output_model, {"x": _x()})   # loads and runs on the CPU provider
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-2)


def test_fp16_io_when_asked(kit, tmp_path: Path, models) -> None:
    ctx = kit.make_ctx(Fp16, tmp_path, {"keep_io_types": False}, model=models["mlp"])
    Fp16().run(ctx)
    model = onnx.load(str(ctx.output_model))
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    x = np.random.default_rng(1).standard_normal((2, 64)).astype(np.float32)
    (want,) = kit.run_ort(models["mlp"], {"x": x})
    (got,) = kit.run_ort(ctx.output_model, {"x": x.astype(np.float16)})
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float32), want, atol=2e-2)


def test_fp16_is_byte_deterministic(kit, tmp_path: Path, models) -> None:
    a = kit.make_ctx(Fp16, tmp_path / "a", model=models["cnn"])
    b = kit.make_ctx(Fp16, tmp_path / "b", model=models["cnn"])
    Fp16().run(a)
    Fp16().run(b)
    assert a.output_model.read_bytes() == b.output_model.read_bytes()


def test_fp16_of_fp16_is_an_error(kit, tmp_path: Path, models) -> None:
    first = kit.make_ctx(Fp16, tmp_path / "first", model=models["mlp"])
    Fp16().run(first)
    again = kit.make_ctx(Fp16, tmp_path / "again", model=first.output_model)
    with pytest.raises(StepError, match="no float32 weights"):
        Fp16().run(again)
