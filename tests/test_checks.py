"""checks: and best: on a small real model: measurements, failures with their numbers, task metrics.

Builds run in this process (clikit.in_process, steps with the in-process runner)."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import clikit
import numpy as np
import pytest
from clikit import Result

ROOT = Path(__file__).resolve().parent.parent


def mlp(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1, w2 = rng.standard_normal((32, 64)).astype(np.float32), rng.standard_normal((64, 4)).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("MatMul", ["r", "w2"], ["y"])], "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    onnx.save(m, str(path))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    mlp(tmp_path / "mlp.onnx")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((64, 32)).astype(np.float32)
    import onnxruntime as ort
    y = ort.InferenceSession(str(tmp_path / "mlp.onnx")).run(None, {"x": x})[0]
    np.savez(tmp_path / "eval.npz", x=x, labels=y.argmax(1).astype(np.int64))
    np.savez(tmp_path / "calib.npz", x=x[:32])
    (tmp_path / "score.py").write_text("def score(reference, candidate, data):\n"
                                       "    return float((candidate['y'].argmax(-1) == data['labels']).mean())\n")
    return tmp_path


RECIPE = """
    edgebuild: 1
    name: mlp
    model: {onnx: mlp.onnx}
    data: {calib: calib.npz, eval: eval.npz}
    targets: [x86-64]
    steps:
      int8: {use: quantize-dynamic}
      qdq: {use: quantize-static, with: {data: calib}}
      opt: {use: optimize}
    ship:
      x86-64: SHIP
    checks:
      CHECKS
"""


def edgebuild_run(root: Path) -> Result:
    """`edgebuild run recipe.yaml` from `root`."""
    return clikit.in_process(["run", "recipe.yaml"], root, dict(os.environ, PYTHONPATH=str(ROOT)))


def run(root: Path, ship: str, checks: str) -> Result:
    body = textwrap.dedent(RECIPE).replace("SHIP", ship).replace("CHECKS", checks)
    (root / "recipe.yaml").write_text(body.lstrip())
    return edgebuild_run(root)


def manifest(root: Path) -> dict:
    return json.loads((root / "dist" / "mlp" / "manifest.json").read_text())


def test_a_broken_promise_fails_the_build_with_its_numbers(project: Path) -> None:
    r = run(project, "[int8, opt]", "latency: {p95_ms: 0.000001}\n  size: {}")
    assert r.code == 1
    lines = [x for x in r.err.splitlines() if ": error: " in x]
    assert len(lines) == 2 and all("x86-64: " in x and "p95 latency" in x and "> 1e-06 ms (measured on host:" in x
                                   for x in lines), r.err
    assert lines[0].startswith("recipe.yaml:13:3: error: x86-64: int8: p95 latency ")
    assert "or raise the limit (checks.latency.p95_ms)" in r.err   # the hint names where the limit is set
    assert not (project / "dist" / "mlp" / "x86-64").exists()       # nothing shipped that broke a promise
    again = run(project, "[int8, opt]", "latency: {p95_ms: 0.000001}\n  size: {}")
    assert "built  check:" not in again.err                         # measurements are cached


def test_best_picks_the_fastest_passing_candidate_and_says_why_others_lost(project: Path) -> None:
    r = run(project, "{best: [int8, qdq, opt], by: size}", "fidelity: {data: eval, metric: cosine, min: 0.95}")
    assert r.code == 0, r.err
    sel = manifest(project)["targets"]["x86-64"]["selection"]
    sizes = {c["step"]: c["value"] for c in sel["candidates"]}
    assert sel["chosen"] == min(sizes, key=sizes.get) and sel["chosen"] in ("int8", "qdq")
    assert next(c for c in sel["candidates"] if c["step"] == "opt")["why"].startswith("larger than ")
    metric = sel["candidates"][0]["checks"]["measurements"]["fidelity"]["metric"]
    assert metric["spec"] == "cosine" and 0.95 <= metric["value"] <= 1


def test_no_passing_candidate_fails_and_names_each_failed_check(project: Path) -> None:
    r = run(project, "{best: [int8, qdq]}", "fidelity: {data: eval, metric: max_abs_error, max: 0.0000001}")
    assert r.code == 1
    line = next(x for x in r.err.splitlines() if ": error: " in x)
    assert line.startswith("recipe.yaml:11:12: error: x86-64: no candidate passes every check (int8: max_abs_error ")
    assert "qdq: max_abs_error " in line


def test_a_user_metric_judges_the_task(project: Path) -> None:
    r = run(project, "[qdq]", "fidelity: {data: eval, metric: score.py:score, min: 0.5}\n  accuracy: {data: eval, max_drop: 0.5}")
    assert r.code == 0, r.err
    checks = manifest(project)["targets"]["x86-64"]["artifacts"][0]["checks"]
    user = next(x for x in checks["results"] if x["what"] == "score.py:score")
    assert user["passed"] and user["value"] == checks["measurements"]["accuracy"]["candidate"]


@pytest.mark.parametrize("checks, first", [
    ("fidelity: {data: evl}", "recipe.yaml:13:20: error: checks.fidelity uses dataset 'evl', which is not declared under `data:`"),
    ("accuracy: {data: calib, max_drop: 0.1}", "recipe.yaml:13:20: error: checks.accuracy needs labels, but dataset 'calib' has no 'labels' array"),
    ("fidelity: {data: eval, metric: cosine, max: 0.9}", "recipe.yaml:13:47: error: checks.fidelity: metric 'cosine' is higher-is-better: its goal is `min:`, not `max:`"),
    ("fidelity: {data: eval, min_agreement: 1.5}", "recipe.yaml:13:41: error: checks.fidelity.min_agreement must be <= 1, found 1.5"),
])
def test_bad_checks_are_located_errors_before_anything_builds(project: Path, checks: str, first: str) -> None:
    r = run(project, "[qdq]", checks)
    assert r.code == 1 and "Traceback" not in r.err
    assert next(x for x in r.err.splitlines() if ": error: " in x) == first
    assert not (project / ".edgebuild" / "cache" / "objects").exists()


def test_selection_by_latency_treats_near_ties_as_ties_and_keeps_the_recipe_order() -> None:
    """Two candidates within run-to-run noise must not flip between builds: the one listed first wins."""
    from edgebuild.checks.judge import TIE, Candidate, select

    def cand(step: str, p95: float, size: int = 100, passed: bool = True) -> Candidate:
        return Candidate(step, passed, [] if passed else ["latency p95 too high"], latency=p95, size=size)

    near = 1.0 * (1 + TIE / 2)
    chosen, why = select("latency", [cand("qdq", near), cand("fp32", 1.0)])
    assert chosen == "qdq"
    assert why[1].why.startswith("as fast as qdq within 5%") and "comes first in best:" in why[1].why
    assert select("latency", [cand("fp32", 1.0), cand("qdq", near)])[0] == "fp32"
    chosen, why = select("latency", [cand("qdq", 1.2), cand("fp32", 1.0)])   # beyond the tie: the fastest
    assert chosen == "fp32" and why[0].why == "slower than fp32 (1.2 ms vs 1 ms)"
    chosen, why = select("latency", [cand("int8", 0.5, passed=False), cand("fp32", 1.0)])
    assert chosen == "fp32" and why[0].why == "failed: latency p95 too high"
    assert select("size", [cand("a", 1.0, size=101), cand("b", 1.0, size=100)])[0] == "b"   # sizes are exact
    assert select("latency", [cand("a", 1.0, passed=False)])[0] is None


def detector(path: Path) -> None:
    """Scores (float), a sequence-first map [T, batch, C], and NonMaxSuppression's selected boxes, whose
    count depends on the data (and may differ between the reference and a quantized candidate)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(2)
    w1, w2 = rng.standard_normal((16, 20)).astype(np.float32), rng.standard_normal((16, 5)).astype(np.float32)
    const = lambda name, v: numpy_helper.from_array(np.array(v, dtype=np.int64), name)   # noqa: E731
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"]),
         helper.make_node("Reshape", ["h", "box_shape"], ["boxes"]),
         helper.make_node("MatMul", ["x", "w2"], ["logits"]),
         helper.make_node("Sigmoid", ["logits"], ["scores"]),
         helper.make_node("Unsqueeze", ["scores", "axis1"], ["scores3"]),
         helper.make_node("NonMaxSuppression", ["boxes", "scores3", "max_out", "iou", "thresh"], ["selected"]),
         helper.make_node("Reshape", ["h", "seq_shape"], ["hs"]),
         helper.make_node("Transpose", ["hs"], ["seq"], perm=[1, 0, 2])], "det",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 5]),
         helper.make_tensor_value_info("selected", TensorProto.INT64, ["k", 3]),
         helper.make_tensor_value_info("seq", TensorProto.FLOAT, [4, "batch", 5])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"), const("box_shape", [-1, 5, 4]),
         const("seq_shape", [-1, 4, 5]), const("axis1", [1]), const("max_out", [5]),
         numpy_helper.from_array(np.array([0.3], np.float32), "iou"),
         numpy_helper.from_array(np.array([0.5], np.float32), "thresh")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    onnx.save(m, str(path))


def test_fidelity_of_a_detector_with_data_dependent_and_integer_outputs(tmp_path: Path) -> None:
    detector(tmp_path / "det.onnx")
    np.savez(tmp_path / "eval.npz", x=np.random.default_rng(3).standard_normal((24, 16)).astype(np.float32))
    (tmp_path / "recipe.yaml").write_text(textwrap.dedent("""
        edgebuild: 1
        name: det
        model: {onnx: det.onnx}
        data: {eval: eval.npz}
        targets: [x86-64]
        steps:
          int8: {use: quantize-dynamic}
        ship:
          x86-64: {best: [int8], by: latency}
        checks:
          fidelity: {data: eval, min_cosine: 0.9}
    """).lstrip())
    r = edgebuild_run(tmp_path)
    assert r.code == 0, r.err
    fid = json.loads((tmp_path / "dist" / "det" / "manifest.json").read_text())[
        "targets"]["x86-64"]["selection"]["candidates"][0]["checks"]["measurements"]["fidelity"]
    assert fid["samples"] == 24                           # samples fed, not rows of a [T, batch, C] output
    assert fid["cosine"] > 0.99 and "selected" not in fid   # scores and seq only: no box indices mixed in
    assert fid["exact"]["selected"]["dtype"] == "int64" and 0.0 <= fid["exact"]["selected"]["same"] <= 1.0
    assert "argmax_agreement" in fid                      # over the first float output (scores)


def test_compare_keeps_integer_and_ragged_outputs_out_of_the_numeric_errors() -> None:
    from edgebuild.checks.measure import compare

    ref = {"p": [np.array([[0.1, 0.9]], np.float32)] * 2, "label": [np.array([1]), np.array([1])],
           "sel": [np.zeros((3, 3), np.int64), np.zeros((2, 3), np.int64)]}
    cand = {"p": [np.array([[0.2, 0.8]], np.float32)] * 2, "label": [np.array([1]), np.array([0])],
            "sel": [np.zeros((3, 3), np.int64), np.zeros((1, 3), np.int64)]}
    out = compare(ref, cand)
    assert out["samples"] == 2 and out["argmax_agreement"] == 1.0
    assert abs(out["max_abs_error"] - 0.1) < 1e-6
    assert out["exact"] == {"label": {"dtype": "int64", "same": 0.5},
                            "sel": {"dtype": "int64", "same": 0.5, "shape_differs": 1}}


def test_a_failed_best_candidate_loses_the_selection_and_the_build_goes_on(project: Path) -> None:
    body = textwrap.dedent(RECIPE).replace("SHIP", "{best: [strict, opt], by: latency}").replace("CHECKS", "size: {}")
    body = body.replace("opt: {use: optimize}", "opt: {use: optimize}\n  strict: {use: quantize-static, with: {data: calib, "
                        "accuracy: {data: eval, metric: max_abs_error, max: 0.0, faster: false}}}")
    (project / "recipe.yaml").write_text(body.lstrip())
    r = edgebuild_run(project)
    assert r.code == 0, r.err
    warning = next(x for x in r.err.splitlines() if ": warning: step 'strict@x86-64'" in x)
    assert warning.startswith("recipe.yaml:") and "the accuracy goal max_abs_error <= 0 on dataset 'eval' is not met" in warning
    assert "only a `best:` candidate" in r.err
    sel = manifest(project)["targets"]["x86-64"]["selection"]
    assert sel["chosen"] == "opt"
    lost = next(c for c in sel["candidates"] if c["step"] == "strict")
    assert lost["passed"] is False and lost["why"].startswith("failed: step 'strict@x86-64' failed: the accuracy goal")
    assert (project / "dist" / "mlp" / "x86-64" / "opt.onnx").exists()
    # the no-op rerun does not retry it, and says so again
    again = edgebuild_run(project)
    assert "up to date" in again.out and "`best:` candidate strict failed: step 'strict@x86-64'" in again.err


def test_a_failed_step_says_which_targets_were_published(project: Path) -> None:
    r = run(project, "[int8]", "size: {}")
    assert r.code == 0
    body = (project / "recipe.yaml").read_text().replace("int8: {use: quantize-dynamic}",
                                                          "int8: {use: quantize-dynamic, with: {op_types: [Conv]}}")
    (project / "recipe.yaml").write_text(body)
    r = edgebuild_run(project)
    assert r.code == 1
    assert "1 step(s) and 0 check(s) failed; nothing was published (kept from the last good build: x86-64)" in r.err


def test_argmax_agreement_only_for_class_scores_and_a_limit_on_it_then_fails() -> None:
    """A detector's first output is boxes [batch, N, 4]: an argmax over coordinates means nothing, so
    there is no agreement figure, and a `min_agreement` limit fails saying why instead of passing."""
    import types

    from edgebuild.checks.judge import evaluate
    from edgebuild.checks.measure import compare

    boxes = {"boxes": [np.random.default_rng(0).random((1, 6, 4)).astype(np.float32)] * 3}
    out = compare(boxes, boxes)
    assert "argmax_agreement" not in out and out["cosine"] == 1.0
    assert "argmax_agreement" in compare({"p": [np.array([0.2, 0.8], np.float32)]}, {"p": [np.array([0.3, 0.7], np.float32)]})
    recipe = types.SimpleNamespace(checks={"fidelity": {"data": "eval", "min_agreement": 0.9}})
    target = types.SimpleNamespace(data={"budgets": {}})
    results = evaluate(recipe, target, 1000, {"fidelity": dict(out, data="eval")})
    assert [(r.passed, r.value) for r in results] == [(False, None)]
    assert "not one score per class" in results[0].describe() and "cannot be measured" in results[0].describe()


def test_a_limit_from_the_target_budget_says_so_in_the_hint(project: Path) -> None:
    profile = (ROOT / "targets" / "x86-64.yaml").read_text().replace("latency_p95_ms: 20", "latency_p95_ms: 0.000001")
    (project / "x86-64.yaml").write_text(profile)
    body = textwrap.dedent(RECIPE).replace("SHIP", "[opt]").replace("CHECKS", "latency: {}")
    (project / "recipe.yaml").write_text(body.replace("targets: [x86-64]", "targets: [x86-64.yaml]").lstrip())
    r = edgebuild_run(project)
    assert r.code == 1
    assert "or raise the limit (budgets.latency_p95_ms in the x86-64 profile)" in r.err, r.err


def test_selection_by_latency_uses_paired_ratios_when_every_candidate_has_one() -> None:
    """Times relative to the FP32 reference, taken in interleaved pairs, decide over p95s timed in separate
    steps: a neighbour that slowed one candidate's measurement must not hand the choice to another."""
    from edgebuild.checks.judge import Candidate, select

    def cand(step: str, p95: float, relative: float | None) -> Candidate:
        return Candidate(step, True, [], latency=p95, size=100, relative=relative)

    # qdq's p95 was taken while another build ran (slower), but its paired ratio says it is faster
    chosen, why = select("latency", [cand("fp32", 1.0, 1.0), cand("qdq", 1.6, 0.7)])
    assert chosen == "qdq" and why[0].why == "slower than qdq (1x the reference's time vs 0.7x the reference's time)"
    # one candidate without a ratio: fall back to the p95s for all of them
    assert select("latency", [cand("fp32", 1.0, 1.0), cand("qdq", 1.6, None)])[0] == "fp32"


def test_a_web_bundles_size_budget_is_its_download() -> None:
    """The browser profile's size budget is what every visitor downloads: the runtime with the model."""
    import types

    from edgebuild.checks.judge import evaluate

    recipe = types.SimpleNamespace(checks={"size": {}})
    target = types.SimpleNamespace(name="browser-wasm", data={"budgets": {"model_size_mb": 25}})
    (result,) = evaluate(recipe, target, 30_000_000, {}, "download size")
    assert not result.passed and result.describe().startswith("download size 30 MB > 25")
