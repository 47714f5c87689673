"""edgebuild.onnx.graph: saving (IR pin, opset limit, checker, same bytes) and graph rewrites."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgebuild.onnx import graph as onnx_graph
from edgebuild.onnx import runtime as onnx_runtime
from edgebuild.onnx.rewrites.gemm_as_matmul import constant_matmuls, gemm_to_matmul
from edgebuild.steps.base import StepError


def _relu(opset: int = 17, ir: int = onnx.IR_VERSION) -> onnx.ModelProto:
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], producer_name="someone",
                          producer_version="9.9")
    m.ir_version = ir
    return m


def test_save_pins_ir_version_and_producer(tmp_path: Path) -> None:
    m = _relu(ir=onnx.IR_VERSION)   # onnx 1.23 writes IR 14 by default
    onnx_graph.save(m, tmp_path / "m.onnx", ir_version=10, max_opset=21)
    back = onnx.load(str(tmp_path / "m.onnx"))
    assert back.ir_version == 10
    assert back.producer_name == "edgebuild" and back.producer_version == ""
    # a lower IR version stays as it is
    onnx_graph.save(_relu(ir=8), tmp_path / "low.onnx", ir_version=10, max_opset=21)
    assert onnx.load(str(tmp_path / "low.onnx")).ir_version == 8


def test_save_writes_identical_bytes(tmp_path: Path) -> None:
    onnx_graph.save(_relu(), tmp_path / "a.onnx", 10, 21)
    onnx_graph.save(_relu(), tmp_path / "b.onnx", 10, 21)
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()


def test_save_refuses_opset_above_limit(tmp_path: Path) -> None:
    with pytest.raises(StepError, match="opset 21.*opset 17 at most") as e:
        onnx_graph.save(_relu(opset=21), tmp_path / "m.onnx", 10, 17, opset_path=("steps", "fp32", "with", "opset"))
    assert e.value.recipe_path == ("steps", "fp32", "with", "opset")
    assert "opset: 17" in (e.value.hint or "")
    assert not (tmp_path / "m.onnx").exists()


def test_save_refuses_ir_too_low_for_opset(tmp_path: Path) -> None:
    with pytest.raises(StepError, match="IR version 10"):
        onnx_graph.save(_relu(opset=21), tmp_path / "m.onnx", ir_version=9, max_opset=21)


def test_save_drops_unused_domain_imports(tmp_path: Path) -> None:
    m = _relu()
    m.opset_import.extend([helper.make_opsetid("ai.onnx.ml", 5), helper.make_opsetid("com.microsoft", 1)])
    onnx_graph.save(m, tmp_path / "m.onnx", ir_version=8, max_opset=17)   # ai.onnx.ml 5 alone would need IR 10
    assert [o.domain for o in onnx.load(str(tmp_path / "m.onnx")).opset_import] == [""]


def test_save_runs_checker(tmp_path: Path) -> None:
    m = _relu()
    m.graph.node[0].input[0] = "nowhere"
    with pytest.raises(StepError, match="ONNX checker"):
        onnx_graph.save(m, tmp_path / "m.onnx", 10, 21)


def _gemm_model(trans_b: int, alpha: float, beta: float, bias: bool) -> tuple[onnx.ModelProto, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 5) if trans_b else (5, 6)).astype(np.float32)
    c = rng.standard_normal(6).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w")] + ([numpy_helper.from_array(c, "c")] if bias else [])
    node = helper.make_node("Gemm", ["x", "w"] + (["c"] if bias else []), ["y"], name="g",
                            transB=trans_b, alpha=alpha, beta=beta)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 5])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 6])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m, w, c


@pytest.mark.parametrize("trans_b,alpha,beta,bias", [(1, 1.0, 1.0, True), (0, 0.5, 2.0, True), (1, 2.0, 1.0, False)])
def test_gemm_to_matmul_keeps_results(trans_b: int, alpha: float, beta: float, bias: bool) -> None:
    m, _, _ = _gemm_model(trans_b, alpha, beta, bias)
    x = np.random.default_rng(1).standard_normal((3, 5)).astype(np.float32)
    want = onnx_runtime.session(m).run(None, {"x": x})[0]
    assert gemm_to_matmul(m) == 1
    assert "Gemm" not in onnx_graph.count_ops(m) and onnx_graph.count_ops(m)["MatMul"] == 1
    assert constant_matmuls(m) == 1
    onnx.checker.check_model(m)
    got = onnx_runtime.session(m).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert "w" not in {t.name for t in m.graph.initializer}   # the unused original weight is dropped


def test_topo_sort_orders_appended_nodes() -> None:
    g = helper.make_graph([helper.make_node("Relu", ["a"], ["y"], name="relu"),
                           helper.make_node("Neg", ["x"], ["a"], name="neg")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    assert onnx_graph.topo_sort(g) is True
    assert [n.name for n in g.node] == ["neg", "relu"]
    assert onnx_graph.topo_sort(g) is False


def test_precision_and_counts(models: dict[str, Path]) -> None:
    m = onnx_graph.load(models["cnn"])
    assert onnx_graph.precision_of(m) == "fp32"
    assert onnx_graph.count_ops(m) == {"Conv": 2, "Flatten": 1, "Gemm": 1, "GlobalAveragePool": 1, "Relu": 2}
    assert onnx_graph.graph_inputs(m) == {"x": {"shape": ["batch", 3, 16, 16], "dtype": "float32"}}
    assert onnx_graph.graph_outputs(m) == {"y": ["batch", 10]}
    assert onnx_runtime.sig3(0.000123456) == 0.000123 and onnx_runtime.sig3(123456.0) == 123000.0


def test_load_rejects_non_onnx(tmp_path: Path) -> None:
    bad = tmp_path / "x.onnx"
    bad.write_text("version https://git-lfs.github.com/spec/v1\n")
    with pytest.raises(StepError, match="cannot read ONNX model"):
        onnx_graph.load(bad)


def test_save_sorts_a_node_placed_before_what_its_subgraph_reads(tmp_path: Path) -> None:
    """A quantizer rewriting a model whose `If` was inlined (silero-vad) left an `If` before the node whose
    output its branch reads; the checker refuses that. `save` puts every graph in topological order."""
    branch = lambda name: helper.make_graph(  # noqa: E731
        [helper.make_node("Identity", ["t"], [f"{name}_out"])], name, [],
        [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, [2])])
    cond = numpy_helper.from_array(np.array(True), "cond")
    nodes = [helper.make_node("If", ["cond"], ["y"], then_branch=branch("then"), else_branch=branch("else"), name="if"),
             helper.make_node("Relu", ["x"], ["t"], name="makes_t")]   # after the If that reads t
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], [cond])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(m)
    onnx_graph.save(m, tmp_path / "m.onnx", 10, 21)
    back = onnx.load(str(tmp_path / "m.onnx"))
    assert [n.name for n in back.graph.node] == ["makes_t", "if"]


def test_timing_turn_waits_for_another_process_timing(tmp_path: Path) -> None:
    """Two timing loops never run at once on one host: a process holding the timing lock makes the next
    one wait until it lets go (the lock is re-entrant within a process)."""
    import subprocess
    import sys
    import time

    hold = ("import sys, time\nfrom edgebuild.onnx import runtime as onnx_runtime\nwith onnx_runtime.timing_turn():\n"
            "    print('held', flush=True)\n    time.sleep(1.0)\n")
    proc = subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        t0 = time.perf_counter()
        with onnx_runtime.timing_turn():
            with onnx_runtime.timing_turn():
                waited = time.perf_counter() - t0
        assert waited >= 0.5, waited
    finally:
        proc.wait(timeout=30)


def test_an_unsettled_paired_timing_times_more_pairs_until_it_settles() -> None:
    """A speed decision the first budget leaves unclear gets more pairs, a budget at a time, until `settled`
    says it is clear (or max_s has passed); `settled` sees every intermediate result."""
    sess = onnx_runtime.session(_relu())
    feed = {"x": np.ones((1, 4), np.float32)}
    seen: list[int] = []

    def clear_on_the_third_look(p: onnx_runtime.Paired) -> bool:
        seen.append(p.pairs)
        return len(seen) == 3

    out = onnx_runtime.paired_latency(sess, sess, feed, budget_s=0.01, min_pairs=20, max_pairs=1_000_000,
                               settled=clear_on_the_third_look, max_s=60.0)
    assert len(seen) == 3 and seen[0] >= 20 and seen[0] < seen[1] < seen[2] == out.pairs
    assert out.a_ms > 0 and out.b_ms > 0
    seen.clear()
    onnx_runtime.paired_latency(sess, sess, feed, budget_s=0.01, min_pairs=20, settled=lambda p: seen.append(p.pairs) or True,
                         max_s=60.0)
    assert len(seen) == 1   # clear at once: one budget


def test_a_speed_decision_is_settled_when_clear_either_way() -> None:
    from edgebuild.onnx.quantize.speed import MIN_GAIN, decided

    def pair(speedup: float, noise: float) -> onnx_runtime.Paired:
        return onnx_runtime.Paired(1.0, 1.0 / speedup, 1.0 / speedup, noise, 0.0, 20)

    assert decided(pair(1.6, 0.25))            # clearly faster, even at the noise cap
    assert decided(pair(0.5, 0.3))             # clearly slower: 0.5 x 1.3 is below the bar
    assert decided(pair(1.01, MIN_GAIN / 2))   # at parity, measured precisely: refused now
    assert not decided(pair(1.15, 0.25))       # could be either: time more pairs
    assert not decided(pair(1.0, 0.1))
