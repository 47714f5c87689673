"""optimize: ONNX Runtime's offline graph optimization; fewer nodes, same results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgebuild.steps.optimize import Optimize


def _conv_bn(path: Path, kit) -> Path:
    """Conv -> BatchNormalization -> Identity -> Relu: basic level folds BN into the conv, drops Identity."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b"),
             numpy_helper.from_array(rng.uniform(0.5, 1.5, 4).astype(np.float32), "scale"),
             numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "shift"),
             numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "mean"),
             numpy_helper.from_array(rng.uniform(0.5, 2.0, 4).astype(np.float32), "var")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "scale", "shift", "mean", "var"], ["n"]),
             helper.make_node("Identity", ["n"], ["i"]),
             helper.make_node("Relu", ["i"], ["y"])]
    g = helper.make_graph(nodes, "convbn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4, 8, 8])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return kit.save(m, path)


def test_basic_level_folds_and_keeps_results(kit, tmp_path: Path) -> None:
    src = _conv_bn(tmp_path / "convbn.onnx", kit)
    ctx = kit.make_ctx(Optimize, tmp_path / "out", model=src, ir_version=8)
    facts = Optimize().run(ctx)
    assert facts == {"level": "basic", "nodes_before": 4, "nodes_after": 2}
    model = onnx.load(str(ctx.output_model))
    assert model.ir_version <= 8
    assert all(n.domain in ("", "ai.onnx") for n in model.graph.node)   # portable: standard ops only
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(kit.run_ort(ctx.output_model, {"x": x})[0], kit.run_ort(src, {"x": x})[0], atol=1e-4)


def test_extended_level_may_use_contrib_ops(kit, tmp_path: Path, models) -> None:
    ctx = kit.make_ctx(Optimize, tmp_path, {"level": "extended"}, model=models["cnn"])
    facts = Optimize().run(ctx)
    assert facts["nodes_after"] < facts["nodes_before"]
    model = onnx.load(str(ctx.output_model))
    assert any(n.domain == "com.microsoft" for n in model.graph.node)   # e.g. FusedConv
    x = np.random.default_rng(2).standard_normal((2, 3, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(kit.run_ort(ctx.output_model, {"x": x})[0], kit.run_ort(models["cnn"], {"x": x})[0],
                               atol=1e-4)


def test_optimize_is_byte_deterministic(kit, tmp_path: Path, models) -> None:
    a = kit.make_ctx(Optimize, tmp_path / "a", {"level": "extended"}, model=models["cnn"])
    b = kit.make_ctx(Optimize, tmp_path / "b", {"level": "extended"}, model=models["cnn"])
    Optimize().run(a)
    Optimize().run(b)
    assert a.output_model.read_bytes() == b.output_model.read_bytes()


def test_a_model_with_external_data_is_optimized(kit, tmp_path: Path) -> None:
    """Models exported with their weights in a separate .data file (common for text encoders) optimize
    like any other: the output is one self-contained file with the same results."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((64, 64)).astype(np.float32), "w")   # 16 KB: kept external
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Identity", ["h"], ["i"]),
                           helper.make_node("Relu", ["i"], ["y"])], "mm",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 64])], [w])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    src = kit.save(model, tmp_path / "inline.onnx")
    ext = tmp_path / "ext" / "mm.onnx"
    ext.parent.mkdir()
    onnx.save_model(onnx.load(str(src)), str(ext), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="mm.onnx.data", size_threshold=0)
    assert (ext.parent / "mm.onnx.data").stat().st_size >= 64 * 64 * 4
    ctx = kit.make_ctx(Optimize, tmp_path / "out", model=ext, ir_version=8)
    facts = Optimize().run(ctx)
    assert facts["nodes_after"] == 2
    assert [p.name for p in ctx.output_model.parent.iterdir() if p.suffix == ".data"] == []
    x = rng.standard_normal((2, 64)).astype(np.float32)
    np.testing.assert_allclose(kit.run_ort(ctx.output_model, {"x": x})[0], kit.run_ort(src, {"x": x})[0], atol=1e-4)
