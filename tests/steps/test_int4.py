"""int4: MatMulNBits weight-only quantization, Gemm rewritten first, clear error without MatMul weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgebuild.steps.base import StepError
from edgebuild.steps.int4 import Int4


def _x() -> np.ndarray:
    return np.random.default_rng(8).standard_normal((3, 64)).astype(np.float32)


def test_matmul_weights_become_matmulnbits(kit, tmp_path: Path, models) -> None:
    ctx = kit.make_ctx(Int4, tmp_path, model=models["mlp"], ir_version=10)
    facts = Int4().run(ctx)
    model = onnx.load(str(ctx.output_model))
    assert model.ir_version <= 10
    assert facts["quantized"] == 2 and facts["ops"]["MatMulNBits"] == 2 and "MatMul" not in facts["ops"]
    node = next(n for n in model.graph.node if n.op_type == "MatMulNBits")
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert node.domain == "com.microsoft" and attrs["bits"] == 4 and attrs["block_size"] == 32
    assert "accuracy_level" not in attrs
    assert facts["size_after"] < facts["size_before"] / 4
    (want,) = kit.run_ort(models["mlp"], {"x": _x()})
    (got,) = kit.run_ort(ctx.output_model, {"x": _x()})
    # 4-bit weights: within 15% of the output range
    assert float(np.max(np.abs(got - want))) <= 0.15 * float(np.max(np.abs(want)))


def test_gemm_is_rewritten_and_options_apply(kit, tmp_path: Path, models) -> None:
    ctx = kit.make_ctx(Int4, tmp_path, {"symmetric": False, "block_size": 16, "accuracy_level": 4},
                       model=models["mlp_gemm"])
    facts = Int4().run(ctx)
    assert facts["gemm_rewritten"] == 2 and facts["quantized"] == 2 and "Gemm" not in facts["ops"]
    model = onnx.load(str(ctx.output_model))
    node = next(n for n in model.graph.node if n.op_type == "MatMulNBits")
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["block_size"] == 16 and attrs["accuracy_level"] == 4
    assert len(node.input) == 4   # asymmetric: zero points
    (want,) = kit.run_ort(models["mlp_gemm"], {"x": _x()})
    (got,) = kit.run_ort(ctx.output_model, {"x": _x()})
    assert float(np.max(np.abs(got - want))) <= 0.15 * float(np.max(np.abs(want)))


def test_int4_is_byte_deterministic(kit, tmp_path: Path, models) -> None:
    a = kit.make_ctx(Int4, tmp_path / "a", model=models["mlp_gemm"])
    b = kit.make_ctx(Int4, tmp_path / "b", model=models["mlp_gemm"])
    assert Int4().run(a) == Int4().run(b)
    assert a.output_model.read_bytes() == b.output_model.read_bytes()


def test_conv_only_model_is_an_error(kit, tmp_path: Path) -> None:
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "conv",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path = kit.save(m, tmp_path / "conv.onnx")
    ctx = kit.make_ctx(Int4, tmp_path / "out", model=path)
    with pytest.raises(StepError, match="no MatMul with constant weights to quantize") as e:
        Int4().run(ctx)
    assert "transformer" in (e.value.hint or "")
    assert not ctx.output_model.exists()
