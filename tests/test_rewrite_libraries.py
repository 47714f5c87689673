"""onnxscript's optimizer and rewriter, and onnx-ir's passes, on the cases edgebuild's own rewrites handle.

Each library function here claims a rewrite edgebuild writes by hand (edgebuild/onnx/rewrites/). Each
test runs it on the models tests/test_rewrite.py builds and shows where it falls short of what edgebuild
must keep; the hand-written rewrite stays for the reason the test's docstring gives. When a library
release closes a gap, its test fails: then adopt the library there and remove the test.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper as H
from onnx import numpy_helper as NH
from test_rewrite import _conv_stack, _if_model, _model, _ops, _run, _same, _x

from edgebuild.onnx.rewrites.gemm_as_matmul import gemm_to_matmul
from edgebuild.onnx.rewrites.hardswish_fusion import fuse_hardswish
from edgebuild.onnx.rewrites.if_inlining import inline_constant_if
from edgebuild.onnx.rewrites.initializer_inputs import drop_initializer_inputs, fix_inputs

optimizer = pytest.importorskip("onnxscript.optimizer")
ir = pytest.importorskip("onnx_ir")


def _ir_pass(model: onnx.ModelProto, make_pass: Callable[[], Any]) -> onnx.ModelProto:
    """`model` through an onnx-ir pass, as a new ModelProto."""
    m = ir.serde.deserialize_model(model)
    make_pass()(m)
    return ir.serde.serialize_model(m)


def test_onnxscript_if_elimination_is_correct_but_renames_nodes_and_adds_value_info() -> None:
    """inline_constant_if stays: onnxscript's constant folding (plus remove_unused_nodes) takes the right
    branch and computes the same numbers, but the model comes back with every unnamed node named
    (node_1, ...), the inlined nodes renamed after the If, and value_info added for initializers and
    intermediates; edgebuild's normalization must change the If and nothing else (value_info it
    refreshes itself; node names are what the quantize steps exclude nodes by and report in facts)."""
    x = _x((3, 64), seed=4)
    for rate in (16000, 8000):
        m = _if_model()
        fix_inputs(m, {"sample_rate": rate})
        hand, lib = copy.deepcopy(m), copy.deepcopy(m)
        assert inline_constant_if(hand) == 1
        optimizer.fold_constants(lib)
        optimizer.remove_unused_nodes(lib)
        onnx.checker.check_model(lib, full_check=True)
        assert not any(n.op_type == "If" and n.name == "by_rate" for n in lib.graph.node)   # correct: the If is gone
        for xs in (x, -x):
            np.testing.assert_allclose(_run(lib, {"x": xs})[0], _run(hand, {"x": xs})[0], rtol=1e-6, atol=1e-6)
        assert lib.ir_version == hand.ir_version and list(lib.opset_import) == list(hand.opset_import)
        assert [o.name for o in lib.graph.output] == [o.name for o in hand.graph.output]
        # the shortfall
        assert not hand.graph.value_info and lib.graph.value_info
        assert [n.name for n in lib.graph.node] != [n.name for n in hand.graph.node]
        assert any(n.name.startswith("node_") for n in lib.graph.node)


def test_onnxscript_constant_folding_changes_a_model_with_no_constant_if() -> None:
    """inline_constant_if leaves a model without a constant If byte for byte as it was; onnxscript's
    fold_constants, the function that eliminates Ifs, rewrites the rest of the graph too (Constant
    nodes moved, value_info added), so it cannot be the normalization of a recipe's source model."""
    m = _conv_stack("clip", consts_as="constant")
    hand, lib = copy.deepcopy(m), copy.deepcopy(m)
    assert inline_constant_if(hand) == 0
    assert hand.SerializeToString() == m.SerializeToString()
    optimizer.fold_constants(lib)
    assert lib != m and len(lib.graph.value_info) > len(m.graph.value_info)
    _same(m, lib, {"x": _x()})


def test_onnx_ir_remove_unused_nodes_rewrites_a_model_with_nothing_to_remove() -> None:
    """The pruning after an inlined If (scopes.prune) and after hard-swish fusion (drop_unused_constants)
    stays hand-written: onnx-ir's RemoveUnusedNodesPass, through the IR round trip, returns a model with
    nothing unused that is not the model it was given (a value_info entry per initializer)."""
    from onnx_ir.passes.common import RemoveUnusedNodesPass

    m = _conv_stack("clip")
    lib = _ir_pass(m, RemoveUnusedNodesPass)
    assert _ops(lib) == _ops(m) and lib != m
    assert {vi.name for vi in lib.graph.value_info} >= {t.name for t in m.graph.initializer}


def test_onnx_ir_remove_initializers_from_inputs_leaves_an_ir_3_model_invalid() -> None:
    """drop_initializer_inputs stays: onnx-ir's RemoveInitializersFromInputsPass drops the inputs but
    keeps IR version 3, where every initializer must be an input, so the checker rejects the result;
    edgebuild raises such a model to IR 4. On IR >= 4 it also adds value_info for every initializer."""
    from onnx_ir.passes.common import RemoveInitializersFromInputsPass

    m = _conv_stack("prelu", consts_as="input")
    m.ir_version = 3
    hand = copy.deepcopy(m)
    assert drop_initializer_inputs(hand) == 6
    onnx.checker.check_model(hand)
    lib = _ir_pass(m, RemoveInitializersFromInputsPass)
    assert [vi.name for vi in lib.graph.input] == ["x"] and lib.ir_version == 3
    with pytest.raises(onnx.checker.ValidationError, match="initializer but not in graph input"):
        onnx.checker.check_model(lib)
    m8 = _conv_stack("clip", consts_as="input")
    hand8 = copy.deepcopy(m8)
    drop_initializer_inputs(hand8)
    lib8 = _ir_pass(m8, RemoveInitializersFromInputsPass)
    assert [vi.name for vi in lib8.graph.input] == ["x"] and not hand8.graph.value_info and lib8.graph.value_info


@pytest.mark.parametrize("act", ["clip", "hardsigmoid", "relu6", "minmax", "scale_first"])
def test_onnxscript_hardswish_rules_miss_the_relu6_and_scale_first_variants(act: str) -> None:
    """fuse_hardswish stays: onnxscript's fuse_hardswish_rules fuse x * Clip(x + 3, 0, 6) / 6 and
    x * HardSigmoid(x), but not relu6 written as Min(Relu(a), 6) or Max(Min(a, 6), 0), nor the 1/6
    applied to x first, which exporters also produce; where they do fuse, value_info is added."""
    from onnxscript import rewriter
    from onnxscript.rewriter.rules.common import fuse_hardswish_rules

    m = _conv_stack(act)
    hand = copy.deepcopy(m)
    assert fuse_hardswish(hand) == 2
    lib = rewriter.rewrite(copy.deepcopy(m), pattern_rewrite_rules=fuse_hardswish_rules())
    fused = _ops(lib).count("HardSwish")
    assert fused == (2 if act in ("clip", "hardsigmoid") else 0)
    if fused:
        _same(hand, lib, {"x": _x()})
        assert lib.graph.value_info and not hand.graph.value_info


def test_onnxscript_gemm_to_matmul_rule_leaves_a_plain_gemm() -> None:
    """gemm_to_matmul stays: onnxscript's gemm_to_matmul_add_rule matches only Reshape -> Gemm -> Reshape;
    a plain Gemm with transB and alpha (what exporters write for nn.Linear) stays a Gemm, which
    MatMul-only quantizers (MatMulInteger, MatMulNBits) then skip."""
    from onnxscript import rewriter
    from onnxscript.rewriter.rules.common import gemm_to_matmul_add_rule

    rng = np.random.default_rng(0)
    inits = [NH.from_array(rng.standard_normal((4, 8)).astype(np.float32), "w"),
             NH.from_array(rng.standard_normal(4).astype(np.float32), "c")]
    m = _model([H.make_node("Gemm", ["x", "w", "c"], ["y"], transB=1, alpha=0.5)],
               [H.make_tensor_value_info("x", TP.FLOAT, [2, 8])], [H.make_tensor_value_info("y", TP.FLOAT, [2, 4])], inits)
    lib = rewriter.rewrite(copy.deepcopy(m), pattern_rewrite_rules=[gemm_to_matmul_add_rule])
    assert _ops(lib) == ["Gemm"]
    hand = copy.deepcopy(m)
    assert gemm_to_matmul(hand) == 1 and _ops(hand) == ["MatMul", "Add"]
    _same(m, hand, {"x": _x((2, 8))})
