"""Exports as people have them (PaddleOCR's paddle2onnx, older torch.onnx): opset 11 and weights held in
Constant nodes. Every step either writes a model ONNX Runtime loads and the ONNX checker passes, or refuses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgebuild.steps import fp16, int4, quantize_dynamic, quantize_static
from edgebuild.steps.base import StepError


def _constant(name: str, arr: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], name=f"const_{name}", value=numpy_helper.from_array(arr, name))


def build_paddle_like(path: Path, opset: int = 11, constants: bool = True) -> Path:
    """x[-1, 3, ?, ?] -> Conv -> Relu -> Conv -> GlobalAveragePool -> Flatten -> MatMul + Add: opset 11, weights in
    Constant nodes (as paddle2onnx writes them), an unnamed batch dim (-1) and unnamed spatial dims."""
    rng = np.random.default_rng(0)
    weights = {"c1": (rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32),
               "c1b": (rng.standard_normal(8) * 0.1).astype(np.float32),
               "c2": (rng.standard_normal((16, 8, 3, 3)) * 0.2).astype(np.float32),
               "fc": (rng.standard_normal((16, 32)) * 0.3).astype(np.float32),
               "fcb": (rng.standard_normal(32) * 0.1).astype(np.float32)}
    nodes = [_constant(k, v) for k, v in weights.items()] if constants else []
    inits = [] if constants else [numpy_helper.from_array(v, k) for k, v in weights.items()]
    nodes += [helper.make_node("Conv", ["x", "c1", "c1b"], ["a1"], name="conv1", pads=[1, 1, 1, 1]),
              helper.make_node("Relu", ["a1"], ["r1"], name="relu1"),
              helper.make_node("Conv", ["r1", "c2"], ["a2"], name="conv2", pads=[1, 1, 1, 1]),
              helper.make_node("Relu", ["a2"], ["r2"], name="relu2"),
              helper.make_node("GlobalAveragePool", ["r2"], ["p"], name="gap"),
              helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
              helper.make_node("MatMul", ["f", "fc"], ["m"], name="fc"),
              helper.make_node("Add", ["m", "fcb"], ["y"], name="fc_bias")]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 3, "", ""])
    x.type.tensor_type.shape.dim[2].ClearField("dim_param")
    x.type.tensor_type.shape.dim[3].ClearField("dim_param")
    graph = helper.make_graph(nodes, "paddle_like", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [-1, 32])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="test")
    model.ir_version = 6
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def paddle_like(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_paddle_like(tmp_path_factory.mktemp("older") / "paddle_like.onnx")


@pytest.fixture(scope="module")
def calib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("older-data") / "calib.npz"
    np.savez(path, x=np.random.default_rng(3).standard_normal((16, 3, 24, 40)).astype(np.float32))
    return path


def _valid(path: Path) -> onnx.ModelProto:
    import onnxruntime as ort

    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return model


def _opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def test_per_channel_static_on_opset_11_converts_to_13(kit, tmp_path: Path, paddle_like: Path, calib: Path) -> None:
    ctx = kit.make_ctx(quantize_static.KIND, tmp_path / "out", {"data": "calib", "per_channel": True},
                       model=paddle_like, data={"calib": calib})
    facts = quantize_static.KIND().run(ctx)
    model = _valid(ctx.output_model)
    assert facts["opset"] == {"from": 11, "to": 13}
    assert _opset(model) == 13 and facts["per_channel"] is True
    axes = [a.i for n in model.graph.node if n.op_type == "DequantizeLinear" for a in n.attribute if a.name == "axis"]
    assert axes, "per-channel weights carry a DequantizeLinear axis"
    out = kit.run_ort(ctx.output_model, {"x": np.load(calib)["x"][:1]})[0]
    ref = kit.run_ort(paddle_like, {"x": np.load(calib)["x"][:1]})[0]
    assert out.shape == ref.shape and np.corrcoef(out.ravel(), ref.ravel())[0, 1] > 0.95


def test_per_channel_falls_back_to_per_tensor_when_the_opset_cannot_rise(kit, tmp_path: Path, paddle_like: Path,
                                                                        calib: Path) -> None:
    # the consumers' runtime loads opset 12 at most: no conversion, per-tensor weights, a valid model
    ctx = kit.make_ctx(quantize_static.KIND, tmp_path / "out", {"data": "calib", "per_channel": True},
                       model=paddle_like, data={"calib": calib}, max_opset=12)
    facts = quantize_static.KIND().run(ctx)
    model = _valid(ctx.output_model)
    assert _opset(model) == 11 and facts["per_channel"] is False
    assert facts["opset"]["kept"] == 11 and "opset 12 at most" in facts["opset"]["reason"]


def test_per_tensor_static_leaves_the_opset_alone(kit, tmp_path: Path, paddle_like: Path, calib: Path) -> None:
    ctx = kit.make_ctx(quantize_static.KIND, tmp_path / "out", {"data": "calib", "per_channel": False},
                       model=paddle_like, data={"calib": calib})
    facts = quantize_static.KIND().run(ctx)
    assert _opset(_valid(ctx.output_model)) == 11 and "opset" not in facts


def test_per_channel_dynamic_on_opset_11(kit, tmp_path: Path, paddle_like: Path) -> None:
    ctx = kit.make_ctx(quantize_dynamic.KIND, tmp_path / "out", {"per_channel": True}, model=paddle_like)
    facts = quantize_dynamic.KIND().run(ctx)
    _valid(ctx.output_model)
    assert facts["quantized_nodes"] > 0


def test_fp16_converts_weights_held_in_constant_nodes(kit, tmp_path: Path, paddle_like: Path, calib: Path) -> None:
    ctx = kit.make_ctx(fp16.KIND, tmp_path / "out", model=paddle_like)
    facts = fp16.KIND().run(ctx)
    model = _valid(ctx.output_model)
    assert facts["preprocess"]["constants_to_initializers"] == 5
    assert facts["initializers"].get("float16", 0) >= 5 and not [n for n in model.graph.node if n.op_type == "Constant"
                                                                  and n.attribute[0].t.data_type == TensorProto.FLOAT]
    x = np.load(calib)["x"][:1]
    assert np.allclose(kit.run_ort(ctx.output_model, {"x": x})[0], kit.run_ort(paddle_like, {"x": x})[0], atol=2e-2)


def test_int4_quantizes_matmul_weights_held_in_constant_nodes(kit, tmp_path: Path, paddle_like: Path) -> None:
    ctx = kit.make_ctx(int4.KIND, tmp_path / "out", {"block_size": 16}, model=paddle_like)
    facts = int4.KIND().run(ctx)
    _valid(ctx.output_model)
    assert facts["quantized"] == 1 and facts["preprocess"]["constants_to_initializers"] == 5


def test_fp16_of_a_model_without_float_weights_still_refuses(kit, tmp_path: Path) -> None:
    path = tmp_path / "noweights.onnx"
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    with pytest.raises(StepError, match="no float32 weights"):
        fp16.KIND().run(kit.make_ctx(fp16.KIND, tmp_path / "out", model=path))
