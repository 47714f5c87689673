"""edgebuild.onnx.rewrites and source normalization on small ONNX models built here, one per failure pattern
seen in published models: initializers listed as inputs, decomposed hard-swish, PRelu, wrongly
declared fixed shapes, and a whole graph wrapped in an If on a `sample_rate` input."""

from __future__ import annotations

import copy
import json
import logging
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as TP
from onnx import helper as H
from onnx import numpy_helper as NH

from edgebuild.errors import UserError
from edgebuild.onnx import graph as onnx_graph
from edgebuild.onnx import source as onnx_source
from edgebuild.onnx.rewrites.declared_shapes import override_input_dims
from edgebuild.onnx.rewrites.gemm_as_matmul import constant_matmuls
from edgebuild.onnx.rewrites.hardswish_fusion import fuse_hardswish
from edgebuild.onnx.rewrites.if_inlining import inline_constant_if
from edgebuild.onnx.rewrites.initializer_inputs import drop_initializer_inputs, fix_inputs
from edgebuild.onnx.rewrites.prelu_as_max import prelu_to_max
from edgebuild.steps.base import RunContext, StepError

# -- helpers -----------------------------------------------------------------------------------


def _f32(a: Any) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


def _model(nodes: list[Any], inputs: list[Any], outputs: list[Any], inits: list[Any], opset: int = 17,
           ir: int = 8) -> onnx.ModelProto:
    m = H.make_model(H.make_graph(nodes, "g", inputs, outputs, inits), opset_imports=[H.make_opsetid("", opset)])
    m.ir_version = ir
    onnx.checker.check_model(m)
    return m


def _run(model: onnx.ModelProto, feed: dict[str, np.ndarray], optimize: bool = False) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    return sess.run(None, {k: v for k, v in feed.items() if k in names})


def _same(a: onnx.ModelProto, b: onnx.ModelProto, feed: dict[str, np.ndarray], tol: float = 1e-5) -> None:
    for ya, yb in zip(_run(a, feed), _run(b, feed), strict=True):
        np.testing.assert_allclose(ya, yb, rtol=tol, atol=tol)


def _ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in onnx_graph.iter_nodes(model)]


def _conv_stack(act: str, *, channels: int = 8, layers: int = 2, opset: int = 17, consts_as: str = "init",
                seed: int = 0) -> onnx.ModelProto:
    """x[1, 3, 16, 16] -> (Conv -> activation) x layers -> GlobalAveragePool; `act` names the hard-swish
    variant (or "prelu"); `consts_as`: "init" (initializers), "constant" (Constant nodes), "input"
    (initializers also listed as graph inputs)."""
    rng = np.random.default_rng(seed)
    inits: list[Any] = []
    nodes: list[Any] = []

    def const(name: str, value: Any) -> str:
        if consts_as == "constant" and np.asarray(value).size == 1:
            nodes.append(H.make_node("Constant", [], [name], value=NH.from_array(_f32(value), name)))
        else:
            inits.append(NH.from_array(_f32(value), name))
        return name

    cur, cin = "x", 3
    for i in range(layers):
        w = const(f"w{i}", rng.standard_normal((channels, cin, 3, 3)) * 0.5)
        b = const(f"b{i}", rng.standard_normal(channels) * 0.5)
        nodes.append(H.make_node("Conv", [cur, w, b], [f"c{i}"], pads=[1, 1, 1, 1], name=f"conv{i}"))
        x, y = f"c{i}", f"h{i}"
        if act == "clip":            # x * Clip(x + 3, 0, 6) / 6
            nodes += [H.make_node("Add", [x, const(f"three{i}", 3.0)], [f"a{i}"]),
                      H.make_node("Clip", [f"a{i}", const(f"zero{i}", 0.0), const(f"six{i}", 6.0)], [f"r{i}"]),
                      H.make_node("Mul", [x, f"r{i}"], [f"m{i}"]),
                      H.make_node("Div", [f"m{i}", const(f"sixd{i}", 6.0)], [y])]
        elif act == "hardsigmoid":   # x * HardSigmoid(x, 1/6, 0.5)
            nodes += [H.make_node("HardSigmoid", [x], [f"s{i}"], alpha=1 / 6, beta=0.5),
                      H.make_node("Mul", [f"s{i}", x], [y])]
        elif act == "relu6":         # Mul(x, Min(Relu(3 + x), 6)) * (1/6)
            nodes += [H.make_node("Add", [const(f"three{i}", 3.0), x], [f"a{i}"]),
                      H.make_node("Relu", [f"a{i}"], [f"q{i}"]),
                      H.make_node("Min", [f"q{i}", const(f"six{i}", 6.0)], [f"r{i}"]),
                      H.make_node("Mul", [f"r{i}", x], [f"m{i}"]),
                      H.make_node("Mul", [f"m{i}", const(f"sixth{i}", 1 / 6)], [y])]
        elif act == "minmax":        # (Max(Min(x + 3, 6), 0) / 6) * x
            nodes += [H.make_node("Add", [x, const(f"three{i}", 3.0)], [f"a{i}"]),
                      H.make_node("Min", [f"a{i}", const(f"six{i}", 6.0)], [f"q{i}"]),
                      H.make_node("Max", [const(f"zero{i}", 0.0), f"q{i}"], [f"r{i}"]),
                      H.make_node("Div", [f"r{i}", const(f"sixd{i}", 6.0)], [f"d{i}"]),
                      H.make_node("Mul", [f"d{i}", x], [y])]
        elif act == "scale_first":   # Mul(Mul(x, 1/6), Clip(x + 3, 0, 6))
            nodes += [H.make_node("Add", [x, const(f"three{i}", 3.0)], [f"a{i}"]),
                      H.make_node("Clip", [f"a{i}", const(f"zero{i}", 0.0), const(f"six{i}", 6.0)], [f"r{i}"]),
                      H.make_node("Mul", [x, const(f"sixth{i}", 1 / 6)], [f"k{i}"]),
                      H.make_node("Mul", [f"k{i}", f"r{i}"], [y])]
        elif act == "prelu":
            slope = const(f"slope{i}", rng.uniform(0.0, 1.0, (channels, 1, 1)))
            nodes.append(H.make_node("PRelu", [x, slope], [y]))
        else:
            raise ValueError(act)
        cur, cin = y, channels
    nodes.append(H.make_node("GlobalAveragePool", [cur], ["y"]))
    inputs = [H.make_tensor_value_info("x", TP.FLOAT, [1, 3, 16, 16])]
    if consts_as == "input":
        inputs += [H.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in inits]
    return _model(nodes, inputs, [H.make_tensor_value_info("y", TP.FLOAT, [1, channels, 1, 1])], inits, opset=opset)


def _x(shape: tuple[int, ...] = (1, 3, 16, 16), seed: int = 1) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * 3).astype(np.float32)


# -- drop_initializer_inputs -------------------------------------------------------------------


def test_drop_initializer_inputs_makes_weights_constants_and_keeps_results() -> None:
    m = _conv_stack("clip", consts_as="input")
    n_inits = len(m.graph.initializer)
    assert len(m.graph.input) == 1 + n_inits
    assert fuse_hardswish(copy.deepcopy(m)) == 0     # overridable "constants": nothing to fuse
    r = copy.deepcopy(m)
    assert drop_initializer_inputs(r) == n_inits
    assert [vi.name for vi in r.graph.input] == ["x"]
    onnx.checker.check_model(r)
    _same(m, r, {"x": _x()})
    assert drop_initializer_inputs(r) == 0
    assert fuse_hardswish(r) == 2                    # now they are constants


def test_drop_initializer_inputs_raises_ir_3_models_to_4() -> None:
    m = _conv_stack("prelu", consts_as="input")
    m.ir_version = 3
    assert drop_initializer_inputs(m) == 6     # 2 layers x (weight, bias, slope)
    assert m.ir_version == 4


# -- fuse_hardswish ----------------------------------------------------------------------------


@pytest.mark.parametrize("act", ["clip", "hardsigmoid", "relu6", "minmax", "scale_first"])
@pytest.mark.parametrize("consts_as", ["init", "constant"])
def test_fuse_hardswish_variants_are_fused_and_numerically_identical(act: str, consts_as: str) -> None:
    m = _conv_stack(act, consts_as=consts_as)
    r = copy.deepcopy(m)
    assert fuse_hardswish(r) == 2
    onnx.checker.check_model(r)
    ops = _ops(r)
    assert ops.count("HardSwish") == 2
    assert not {"Clip", "Div", "Min", "Max", "Relu", "HardSigmoid", "Add", "Mul"} & set(ops)
    assert not {"Constant"} & set(ops)
    assert {t.name for t in r.graph.initializer} == {f"{p}{i}" for p in ("w", "b") for i in range(2)}   # unused scalars dropped
    _same(m, r, {"x": _x()})
    _same(m, r, {"x": _x(seed=5)}, tol=1e-5)


def test_fuse_hardswish_keeps_patterns_whose_intermediates_are_used_elsewhere() -> None:
    m = _conv_stack("clip", layers=1)
    m.graph.output.append(H.make_tensor_value_info("r0", TP.FLOAT, None))   # the Clip output is also a model output
    r = copy.deepcopy(m)
    assert fuse_hardswish(r) == 0
    assert r == m


def test_fuse_hardswish_needs_exact_constants_and_opset_14() -> None:
    m = _conv_stack("clip", layers=1)
    three = next(t for t in m.graph.initializer if t.name == "three0")
    three.CopyFrom(NH.from_array(_f32(2.0), "three0"))      # x * Clip(x + 2, 0, 6) / 6 is not hard-swish
    assert fuse_hardswish(copy.deepcopy(m)) == 0
    old = _conv_stack("clip", layers=1, opset=13)
    assert fuse_hardswish(old) == 0                 # no HardSwish before opset 14


def test_fuse_hardswish_inside_subgraphs() -> None:
    inner = _conv_stack("clip", layers=1).graph
    branch = H.make_graph(list(inner.node), "then", [], [H.make_tensor_value_info("y", TP.FLOAT, None)], list(inner.initializer))
    other = H.make_graph([H.make_node("GlobalAveragePool", ["x"], ["z"])], "else", [],
                         [H.make_tensor_value_info("z", TP.FLOAT, None)])
    g = H.make_graph([H.make_node("If", ["flag"], ["out"], then_branch=branch, else_branch=other)], "g",
                     [H.make_tensor_value_info("x", TP.FLOAT, [1, 3, 16, 16]), H.make_tensor_value_info("flag", TP.BOOL, [])],
                     [H.make_tensor_value_info("out", TP.FLOAT, [1, 8, 1, 1])])
    m = H.make_model(g, opset_imports=[H.make_opsetid("", 17)])
    m.ir_version = 8
    r = copy.deepcopy(m)
    assert fuse_hardswish(r) == 1
    onnx.checker.check_model(r)
    _same(m, r, {"x": _x(), "flag": np.array(True)})


# -- prelu_to_max ------------------------------------------------------------------------------


def test_prelu_to_max_is_exact_for_slopes_in_0_1() -> None:
    m = _conv_stack("prelu", layers=3)
    r = copy.deepcopy(m)
    assert prelu_to_max(r) == 3
    onnx.checker.check_model(r)
    assert "PRelu" not in _ops(r) and _ops(r).count("Max") == 3
    for seed in (1, 2):
        _same(m, r, {"x": _x(seed=seed)}, tol=0.0 + 1e-6)


def test_prelu_to_max_leaves_slopes_outside_0_1_and_input_slopes() -> None:
    m = _conv_stack("prelu", layers=1)
    slope = m.graph.initializer[-1]
    arr = NH.to_array(slope).copy()
    arr[0] = 1.5
    slope.CopyFrom(NH.from_array(arr, slope.name))
    assert prelu_to_max(copy.deepcopy(m)) == 0
    arr[0] = -0.1
    slope.CopyFrom(NH.from_array(arr, slope.name))
    assert prelu_to_max(copy.deepcopy(m)) == 0
    assert prelu_to_max(_conv_stack("prelu", layers=1, consts_as="input")) == 0   # overridable slope


# -- override_input_dims -----------------------------------------------------------------------


def _fully_conv_wrongly_declared() -> onnx.ModelProto:
    """Conv -> Relu -> Conv, fully convolutional, declared with a fixed [10, 3, 32, 32] input, a wrong
    fixed output ([1, 100]: another rank altogether) and stale value_info."""
    rng = np.random.default_rng(0)
    inits = [NH.from_array(_f32(rng.standard_normal((8, 3, 3, 3)) * 0.3), "w1"),
             NH.from_array(_f32(rng.standard_normal((4, 8, 1, 1)) * 0.3), "w2")]
    nodes = [H.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]), H.make_node("Relu", ["c1"], ["r1"]),
             H.make_node("Conv", ["r1", "w2"], ["y"])]
    m = H.make_model(H.make_graph(nodes, "fcn", [H.make_tensor_value_info("x", TP.FLOAT, [10, 3, 32, 32])],
                                  [H.make_tensor_value_info("y", TP.FLOAT, [1, 100])], inits,
                                  value_info=[H.make_tensor_value_info("r1", TP.FLOAT, [10, 8, 32, 32])]),
                     opset_imports=[H.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_override_input_dims_lets_a_wrongly_declared_fully_conv_model_run_at_other_sizes() -> None:
    m = _fully_conv_wrongly_declared()
    x = _x((1, 3, 64, 64))
    with pytest.raises(Exception, match="dimensions|shape"):
        _run(m, {"x": x})
    r = copy.deepcopy(m)
    assert override_input_dims(r, {"x": {"shape": [1, 3, 64, 64]}}) == 2   # the input and the output
    onnx.checker.check_model(r)
    assert onnx_graph.dims(r.graph.input[0]) == [1, 3, 64, 64]
    assert onnx_graph.dims(r.graph.output[0]) == [1, 4, 64, 64]                       # inferred, not kept
    assert not r.graph.value_info
    (y,) = _run(r, {"x": x}, optimize=True)
    assert y.shape == (1, 4, 64, 64)
    # the same numbers as the model computes at its declared size, on the 32x32 corner
    ref = copy.deepcopy(m)
    override_input_dims(ref, {"x": {"shape": ["n", 3, "h", "w"]}})
    assert onnx_graph.dims(ref.graph.input[0]) == ["n", 3, "h", "w"]
    assert onnx_graph.dims(ref.graph.output[0])[1] == 4 and len(onnx_graph.dims(ref.graph.output[0])) == 4
    assert all(isinstance(d, str) for i, d in enumerate(onnx_graph.dims(ref.graph.output[0])) if i != 1)   # symbolic, never 1/100
    for shape in [(10, 3, 32, 32), (2, 3, 20, 28)]:
        xs = _x(shape, seed=3)
        (a,) = _run(ref, {"x": xs}, optimize=True)
        assert a.shape == (shape[0], 4, shape[2], shape[3])
    np.testing.assert_allclose(_run(ref, {"x": x})[0], y, rtol=1e-5, atol=1e-5)


def test_override_input_dims_is_a_no_op_when_dims_agree() -> None:
    m = _fully_conv_wrongly_declared()
    r = copy.deepcopy(m)
    assert override_input_dims(r, {"x": {"shape": [10, 3, 32, 32]}, "nope": {"shape": [1]}}) == 0
    assert r == m


# -- fix_inputs + inline_constant_if -------------------------------------------------------------


def _if_model(seed: int = 0) -> onnx.ModelProto:
    """The whole graph in an If on an int64 `sample_rate`: 16 kHz and 8 kHz branches with their own weights.

    - the then branch holds its weights as branch initializers and a nested If (on the data) whose
      branches read the branch value `h`;
    - a second, data-dependent If after it has a branch that also defines a local `h`, so inlining the
      first one must rename `h` (and the nested If's reads of it) to keep names unique.
    """
    rng = np.random.default_rng(seed)
    w16 = NH.from_array(_f32(rng.standard_normal((64, 32)) * 0.2), "w")
    w8 = NH.from_array(_f32(rng.standard_normal((64, 32)) * 0.2), "w")
    w2 = NH.from_array(_f32(rng.standard_normal((32, 10)) * 0.2), "w_out")
    two = NH.from_array(_f32(2.0), "two")
    zero = NH.from_array(_f32(0.0), "zero")
    vi = lambda n: H.make_tensor_value_info(n, TP.FLOAT, None)  # noqa: E731
    nested_then = H.make_graph([H.make_node("Mul", ["r", "two"], ["z_then"])], "nested_then", [], [vi("z_then")])
    nested_else = H.make_graph([H.make_node("Add", ["h", "r"], ["z_else"])], "nested_else", [], [vi("z_else")])
    then_branch = H.make_graph(
        [H.make_node("MatMul", ["x", "w"], ["h"]), H.make_node("Relu", ["h"], ["r"]),
         H.make_node("ReduceMean", ["r"], ["mean"], keepdims=0),
         H.make_node("Greater", ["mean", "zero"], ["positive"]),
         H.make_node("If", ["positive"], ["z"], then_branch=nested_then, else_branch=nested_else),
         H.make_node("MatMul", ["z", "w_out"], ["out16"])],
        "khz16", [], [vi("out16")], [w16])
    else_branch = H.make_graph(
        [H.make_node("MatMul", ["x", "w"], ["h"]), H.make_node("Tanh", ["h"], ["r"]),
         H.make_node("MatMul", ["r", "w_out"], ["out8"])],
        "khz8", [], [vi("out8")], [w8])
    bias_then = H.make_graph([H.make_node("Abs", ["x"], ["h"]), H.make_node("ReduceMean", ["h"], ["b1"], axes=[1])],
                             "bias_then", [], [vi("b1")])
    bias_else = H.make_graph([H.make_node("ReduceMean", ["x"], ["b2"], axes=[1])], "bias_else", [], [vi("b2")])
    nodes = [H.make_node("Constant", [], ["rate16k"], value=NH.from_array(np.array(16000, dtype=np.int64))),
             H.make_node("Equal", ["sample_rate", "rate16k"], ["is16k"]),
             H.make_node("If", ["is16k"], ["logits"], then_branch=then_branch, else_branch=else_branch, name="by_rate"),
             H.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
             H.make_node("Greater", ["total", "zero"], ["any_positive"]),
             H.make_node("If", ["any_positive"], ["bias"], then_branch=bias_then, else_branch=bias_else),
             H.make_node("Add", ["logits", "bias"], ["y"])]
    g = H.make_graph(nodes, "wrapped",
                     [H.make_tensor_value_info("x", TP.FLOAT, ["batch", 64]),
                      H.make_tensor_value_info("sample_rate", TP.INT64, [])],
                     [H.make_tensor_value_info("y", TP.FLOAT, [1, "seqlen"])],   # declared wrong, as published
                     [w2, two, zero])
    m = H.make_model(g, opset_imports=[H.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def test_fix_inputs_and_inline_constant_if_take_the_branch_and_keep_results() -> None:
    m = _if_model()
    x = _x((3, 64), seed=4)
    for rate in (16000, 8000):
        r = copy.deepcopy(m)
        assert fix_inputs(r, {"sample_rate": rate}) == 1
        assert "sample_rate" not in [vi.name for vi in r.graph.input]
        assert inline_constant_if(r) == 1   # the data-dependent Ifs stay
        onnx.checker.check_model(r, full_check=True)
        assert [n.name for n in r.graph.node if n.op_type == "If"] != ["by_rate"]
        assert not any(n.name == "by_rate" for n in r.graph.node)
        assert not {"Equal", "Constant"} & {n.op_type for n in r.graph.node}      # the condition is gone
        assert "sample_rate" not in {t.name for t in r.graph.initializer}
        for xs in (x, -x):   # both ways through the nested and the bias If
            np.testing.assert_allclose(_run(r, {"x": xs})[0],
                                       _run(m, {"x": xs, "sample_rate": np.array(rate, dtype=np.int64)})[0],
                                       rtol=1e-5, atol=1e-5)
        assert constant_matmuls(r) == 2                              # in the main graph now


def test_inline_renames_clashing_branch_names_in_nested_subgraphs_too() -> None:
    r = _if_model()
    fix_inputs(r, {"sample_rate": 16000})
    inline_constant_if(r)
    main = {o for n in r.graph.node for o in n.output}
    assert "h" not in main and "h_1" in main                       # `h` is also a local of the bias If's branch
    nested = next(n for n in r.graph.node if n.op_type == "If" and n.output[0] == "z")
    else_graph = next(a.g for a in nested.attribute if a.name == "else_branch")
    assert list(else_graph.node[0].input) == ["h_1", "r"]          # the nested read follows the rename
    assert any(t.name == "w" for t in r.graph.initializer)         # branch weights are now main-graph initializers


def test_inline_constant_if_folds_conditions_from_fixed_shapes() -> None:
    then_g = H.make_graph([H.make_node("Relu", ["x"], ["a"])], "t", [], [H.make_tensor_value_info("a", TP.FLOAT, None)])
    else_g = H.make_graph([H.make_node("Neg", ["x"], ["b"])], "e", [], [H.make_tensor_value_info("b", TP.FLOAT, None)])
    nodes = [H.make_node("Shape", ["x"], ["s"]), H.make_node("Gather", ["s", "one"], ["c"], axis=0),
             H.make_node("Equal", ["c", "three"], ["is3"]), H.make_node("Not", ["is3"], ["not3"]),
             H.make_node("If", ["not3"], ["y"], then_branch=then_g, else_branch=else_g)]
    inits = [NH.from_array(np.array(1, dtype=np.int64), "one"), NH.from_array(np.array(3, dtype=np.int64), "three")]
    m = _model(nodes, [H.make_tensor_value_info("x", TP.FLOAT, ["n", 3])], [H.make_tensor_value_info("y", TP.FLOAT, ["n", 3])],
               inits)
    assert inline_constant_if(copy.deepcopy(m)) == 0     # Shape of a partly symbolic input: not folded
    r = copy.deepcopy(m)
    override_input_dims(r, {"x": {"shape": [2, 3]}})
    assert inline_constant_if(r) == 1
    assert _ops(r) == ["Neg"]
    x = _x((2, 3))
    np.testing.assert_allclose(_run(r, {"x": x})[0], -x)


def test_inline_constant_if_leaves_data_dependent_ifs() -> None:
    m = _if_model()
    r = copy.deepcopy(m)
    assert inline_constant_if(r) == 0
    assert r == m


# -- normalize (the worker's source normalization) ----------------------------------------------


def _ctx(kind: Any, model: Path, out: Path, inputs: dict[str, Any] | None = None) -> RunContext:
    out.mkdir(parents=True, exist_ok=True)
    return RunContext(step_id="q", params=kind.fill_defaults({}), input_dir=None, source={"onnx": str(model)},
                      inputs=inputs or {}, data={}, out_dir=out, ir_version=10, max_opset=21, target=None,
                      recipe_dir=out, log=logging.getLogger("test"))


def test_normalized_if_model_has_no_if_and_quantize_dynamic_then_quantizes_its_matmuls(tmp_path: Path) -> None:
    from edgebuild.steps.quantize_dynamic import QuantizeDynamic

    src = tmp_path / "wrapped.onnx"
    onnx.save(_if_model(), str(src))
    # before: the MatMuls sit inside the If's branches, where the quantizer does not go
    with pytest.raises(StepError, match="nothing was quantized"):
        QuantizeDynamic().run(_ctx(QuantizeDynamic, src, tmp_path / "before"))

    inputs = {"x": {"shape": ["batch", 64], "dtype": "float32"},
              "sample_rate": {"shape": [], "dtype": "int64", "value": 16000}}
    out = tmp_path / "source.onnx"
    facts = onnx_source.normalize(src, inputs, out)
    assert facts == {"fixed": {"sample_rate": 16000}, "if_inlined": 1,
                     "outputs": {"y": {"declared": [1, "seqlen"], "now": ["batch", 10]}}}
    norm = onnx.load(str(out))
    assert [n for n in norm.graph.node if n.op_type == "If" and n.name == "by_rate"] == []
    assert [vi.name for vi in norm.graph.input] == ["x"]
    ctx = _ctx(QuantizeDynamic, out, tmp_path / "after")
    qfacts = QuantizeDynamic().run(ctx)
    assert qfacts["ops"].get("MatMulInteger", 0) >= 2
    x = _x((2, 64), seed=6)
    ref = _run(_if_model(), {"x": x, "sample_rate": np.array(16000, dtype=np.int64)})[0]
    got = _run(onnx.load(str(ctx.output_model)), {"x": x})[0]
    assert np.abs(got - ref).max() < 0.1 * np.abs(ref).max()     # int8: close, not equal


def test_normalize_does_nothing_when_the_recipe_agrees_with_the_graph(tmp_path: Path) -> None:
    src = tmp_path / "fcn.onnx"
    onnx.save(_fully_conv_wrongly_declared(), str(src))
    out = tmp_path / "source.onnx"
    assert onnx_source.normalize(src, {"x": {"shape": [10, 3, 32, 32], "dtype": "float32"}}, out) is None
    assert not out.exists()
    facts = onnx_source.normalize(src, {"x": {"shape": [1, 3, "h", "w"], "dtype": "float32"}}, out)
    assert facts == {"inputs": {"x": {"declared": [10, 3, 32, 32], "now": [1, 3, "h", "w"]}},
                     "outputs": {"y": {"declared": [1, 100], "now": [1, 4, "?", "?"]}}}
    (y,) = _run(onnx.load(str(out)), {"x": _x((1, 3, 64, 48))}, optimize=True)
    assert y.shape == (1, 4, 64, 48)


def test_normalize_rejects_a_value_that_does_not_fill_the_shape(tmp_path: Path) -> None:
    src = tmp_path / "wrapped.onnx"
    onnx.save(_if_model(), str(src))
    with pytest.raises(StepError) as info:
        onnx_source.normalize(src, {"sample_rate": {"shape": [2], "dtype": "int64", "value": 16000}}, tmp_path / "s.onnx")
    assert info.value.recipe_path == ("model", "inputs", "sample_rate", "value")


def test_worker_normalizes_the_recipe_model_and_reports_it_under_source(tmp_path: Path) -> None:
    from edgebuild.engine import worker

    src = tmp_path / "wrapped.onnx"
    onnx.save(_if_model(), str(src))
    scratch = tmp_path / "scratch"
    (scratch / "out").mkdir(parents=True)
    job = {"use": "quantize-dynamic", "step_id": "int8", "params": {}, "input_dir": None, "source": {"onnx": str(src)},
           "inputs": {"x": {"shape": ["batch", 64], "dtype": "float32"},
                      "sample_rate": {"shape": [], "dtype": "int64", "value": 16000}},
           "data": {}, "out_dir": str(scratch / "out"), "ir_version": 10, "max_opset": 21, "target": None,
           "recipe_dir": str(tmp_path), "result": str(scratch / "result.json"), "refs": {}, "kind_ref": None}
    from edgebuild.steps.quantize_dynamic import QuantizeDynamic

    job["params"] = QuantizeDynamic.fill_defaults({})
    info = worker._run(job, logging.getLogger("test"))
    assert info["source"]["fixed"] == {"sample_rate": 16000} and info["source"]["if_inlined"] == 1
    assert info["ops"]["MatMulInteger"] >= 2
    assert (scratch / "source.onnx").is_file()
    json.dumps(info)


# -- the recipe: model.inputs overrides for an ONNX model ----------------------------------------


def _recipe(tmp_path: Path, inputs: str, model: onnx.ModelProto | None = None) -> Path:
    onnx.save(model or _if_model(), str(tmp_path / "m.onnx"))
    text = textwrap.dedent("""\
        edgebuild: 1
        name: tiny
        model:
          onnx: m.onnx
          inputs:
        {inputs}
        targets: [x86-64]
        steps:
          int8: {{use: quantize-dynamic}}
        ship:
          x86-64: [int8]
        """).format(inputs=textwrap.indent(textwrap.dedent(inputs), "    "))
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_recipe_value_fixes_an_input_and_dims_may_override_the_graph(tmp_path: Path) -> None:
    from edgebuild.frontend import recipe

    r = recipe.load(_recipe(tmp_path, """\
        sample_rate: {shape: [], value: 16000}
        """))
    assert r.inputs == {"x": {"shape": ["batch", 64], "dtype": "float32"},               # unlisted: as declared
                        "sample_rate": {"shape": [], "dtype": "int64", "value": 16000}}  # dtype from the graph
    fcn = tmp_path / "fcn"
    fcn.mkdir()
    r = recipe.load(_recipe(fcn, "x: {shape: [1, 3, h, w]}\n", _fully_conv_wrongly_declared()))
    assert r.inputs == {"x": {"shape": [1, 3, "h", "w"], "dtype": "float32"}}


def test_recipe_errors_for_value_on_a_non_input_rank_change_and_bad_values(tmp_path: Path) -> None:
    from edgebuild.frontend import recipe

    with pytest.raises(UserError) as info:
        recipe.load(_recipe(tmp_path, "sample_rte: {shape: [], value: 16000}\n"))
    [p] = info.value.problems
    assert "model.inputs.sample_rte.value fixes 'sample_rte', which is not an input" in p.message
    assert p.hint and "sample_rate" in p.hint
    assert p.loc.line == 6

    with pytest.raises(UserError) as info:
        recipe.load(_recipe(tmp_path, "x: {shape: [batch, 8, 8]}\n"))
    [p] = info.value.problems
    assert "rank 3" in p.message and "rank 2" in p.message and p.loc.line == 6

    with pytest.raises(UserError) as info:
        recipe.load(_recipe(tmp_path, "sample_rate: {shape: [], value: 16000.5}\nx: {shape: [n, 64], dtype: float16}\n"))
    msgs = sorted(p.message for p in info.value.problems)
    assert any("sample_rate.value must be whole numbers" in m for m in msgs)
    assert any("x.dtype is float16" in m for m in msgs)

    with pytest.raises(UserError) as info:
        recipe.load(_recipe(tmp_path, "sample_rate: {shape: [2], value: 16000}\n"))
    assert "rank 1" in info.value.problems[0].message   # the graph declares a scalar
