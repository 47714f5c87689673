"""quantize-static: calibrated int8, close to fp32, byte-identical across runs, plan-time checks."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgebuild.steps.base import PlanContext, StepError
from edgebuild.steps.quantize_static import QuantizeStatic


def _x(n: int = 4) -> np.ndarray:
    return np.random.default_rng(5).standard_normal((n, 3, 16, 16)).astype(np.float32)


def _close_to_fp32(kit, fp32: Path, int8: Path, x: np.ndarray, tol: float) -> float:
    (want,) = kit.run_ort(fp32, {"x": x})
    (got,) = kit.run_ort(int8, {"x": x})
    err = float(np.max(np.abs(got - want)))
    assert err <= tol * float(np.max(np.abs(want))), err
    return err


def test_qdq_model_is_close_to_fp32(kit, tmp_path: Path, models, cnn_data: Path) -> None:
    ctx = kit.make_ctx(QuantizeStatic, tmp_path, {"data": "calib"}, model=models["cnn"], data={"calib": cnn_data})
    facts = QuantizeStatic().run(ctx)
    model = onnx.load(str(ctx.output_model))
    assert model.ir_version <= ctx.ir_version
    ops = facts["ops"]
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0
    assert facts["samples"] == 32 and facts["method"] == "minmax" and facts["format"] == "qdq"
    assert facts["size_after"] < facts["size_before"]
    assert ctx.output_model.stat().st_size == facts["size_after"]
    # int8 error stays within 5% of the output range on calibration-like inputs
    _close_to_fp32(kit, models["cnn"], ctx.output_model, _x(), tol=0.05)


def test_quantize_static_is_byte_deterministic(kit, tmp_path: Path, models, cnn_data: Path) -> None:
    params = {"data": "calib", "per_channel": True}
    a = kit.make_ctx(QuantizeStatic, tmp_path / "a", params, model=models["cnn"], data={"calib": cnn_data})
    b = kit.make_ctx(QuantizeStatic, tmp_path / "b", params, model=models["cnn"], data={"calib": cnn_data})
    fa, fb = QuantizeStatic().run(a), QuantizeStatic().run(b)
    assert a.output_model.read_bytes() == b.output_model.read_bytes()
    assert fa == fb


def test_qoperator_format_uses_integer_ops(kit, tmp_path: Path, models, cnn_data: Path) -> None:
    ctx = kit.make_ctx(QuantizeStatic, tmp_path, {"data": "calib", "format": "qoperator", "samples": 8},
                       model=models["cnn"], data={"calib": cnn_data})
    facts = QuantizeStatic().run(ctx)
    assert facts["ops"].get("QLinearConv") == 2 and facts["samples"] == 8
    _close_to_fp32(kit, models["cnn"], ctx.output_model, _x(), tol=0.05)


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_histogram_methods_with_batch_of_one_feeds(kit, tmp_path: Path, models, mlp_data: Path, method: str) -> None:
    minmax = kit.make_ctx(QuantizeStatic, tmp_path / "minmax", {"data": "d", "samples": 16},
                          model=models["mlp"], data={"d": mlp_data})
    QuantizeStatic().run(minmax)
    ctx = kit.make_ctx(QuantizeStatic, tmp_path / method, {"data": "d", "samples": 16, "method": method},
                       model=models["mlp"], data={"d": mlp_data})
    facts = QuantizeStatic().run(ctx)
    assert facts["method"] == method and facts["ops"]["QuantizeLinear"] > 0
    # a histogram method picks different ranges than min/max (ORT's default entropy settings would not)
    assert ctx.output_model.read_bytes() != minmax.output_model.read_bytes()
    x = np.random.default_rng(9).standard_normal((4, 64)).astype(np.float32)
    (want,) = kit.run_ort(models["mlp"], {"x": x})
    (got,) = kit.run_ort(ctx.output_model, {"x": x})
    # entropy clips rare large activations on purpose: judge the typical error, not the worst one
    assert float(np.mean(np.abs(got - want))) <= 0.1 * float(np.mean(np.abs(want)))


def test_dataset_without_the_model_input(kit, tmp_path: Path, models) -> None:
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, image=_x(2))
    ctx = kit.make_ctx(QuantizeStatic, tmp_path / "o", {"data": "calib"}, model=models["cnn"], data={"calib": wrong})
    with pytest.raises(StepError, match="no array for model input.*x.*it has: image") as e:
        QuantizeStatic().run(ctx)
    assert e.value.recipe_path == ("data", "calib")


def _plan_ctx(params: dict, data: dict) -> PlanContext:
    doc = types.SimpleNamespace(at=lambda path, key=False: None)
    recipe = types.SimpleNamespace(data=data, doc=doc)
    return PlanContext("int8", QuantizeStatic.fill_defaults(params), recipe, "onnx", [])


def test_check_reports_a_bad_type_combination() -> None:
    # an undeclared dataset is reported by the recipe stage for every kind (tests/failing covers it)
    ctx = _plan_ctx({"data": "calib"}, {"calib": Path("calib.npz")})
    QuantizeStatic().check(ctx)
    assert ctx.problems == []
    ctx = _plan_ctx({"data": "calib", "activation_type": "int8", "weight_type": "uint8"}, {"calib": Path("c.npz")})
    QuantizeStatic().check(ctx)
    assert len(ctx.problems) == 1 and "uint8 weights" in ctx.problems[0].message


def _dense_with_row_bias(path: Path) -> Path:
    """x[n, 16] -> Gemm(W[16, 8], bias [1, 8]) -> Relu -> Gemm(W[8, 4], bias [1, 4]): what ONNX Runtime's
    optimizer makes of a TF/JAX export's MatMul + Add with a [1, N] bias (magika's dense layers)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.standard_normal((16, 8)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((1, 8)).astype(np.float32), "b1"),
             numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "w2"),
             numpy_helper.from_array(rng.standard_normal((1, 4)).astype(np.float32), "b2")]
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="dense1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], name="dense2")]
    g = helper.make_graph(nodes, "dense", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def test_gemm_with_a_row_bias_quantizes_per_channel_and_runs(kit, tmp_path: Path) -> None:
    """ONNX Runtime's per-channel bias handling takes Gemm biases to be 1-D: a [1, N] bias failed its scale
    adjustment, then made a DequantizeLinear the model cannot run. The step stores such biases as [N]."""
    src = _dense_with_row_bias(tmp_path / "dense.onnx")
    x = np.random.default_rng(4).standard_normal((32, 16)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=x)
    ctx = kit.make_ctx(QuantizeStatic, tmp_path / "out", {"data": "calib", "per_channel": True}, model=src,
                       data={"calib": tmp_path / "calib.npz"})
    facts = QuantizeStatic().run(ctx)
    assert facts["preprocess"]["gemm_biases_flattened"] == 2 and facts["quantized_nodes"] == 2
    (want,) = kit.run_ort(src, {"x": x[:4]})
    (got,) = kit.run_ort(ctx.output_model, {"x": x[:4]})
    assert float(np.max(np.abs(got - want))) <= 0.1 * float(np.max(np.abs(want)))


def _residual(path: Path) -> Path:
    """x -> Conv -> Relu -> Conv, plus x (an Add of two activations, as in every residual block)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(6)
    inits = [numpy_helper.from_array((0.3 * rng.standard_normal((3, 3, 3, 3))).astype(np.float32), f"w{i}") for i in (1, 2)]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
             helper.make_node("Add", ["c2", "x"], ["y"], name="add")]
    g = helper.make_graph(nodes, "res", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3, 16, 16])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def test_weighted_op_set_leaves_the_ops_between_layers_in_float(kit, tmp_path: Path, cnn_data: Path) -> None:
    """`op_types: weighted` (the default) quantizes the layers with weights (their inputs and outputs) and leaves
    the residual Add's result in float; `all` rounds the Add's result to 8 bits too (ONNX Runtime's default)."""
    src = _residual(tmp_path / "res.onnx")
    runs = {}
    for ops in ("weighted", "all"):
        ctx = kit.make_ctx(QuantizeStatic, tmp_path / ops, {"data": "calib", "op_types": ops}, model=src,
                           data={"calib": cnn_data})
        runs[ops] = QuantizeStatic().run(ctx)
        assert runs[ops]["op_types"] == ops
        _close_to_fp32(kit, src, ctx.output_model, _x(), tol=0.15)
        graph = onnx.load(str(ctx.output_model)).graph
        (add,) = [n for n in graph.node if n.op_type == "Add"]
        runs[ops]["add_output_int8"] = any(n.op_type == "QuantizeLinear" and add.output[0] in n.input for n in graph.node)
    assert not runs["weighted"]["add_output_int8"] and runs["all"]["add_output_int8"]
