"""edgebuild.checks.metrics: task metrics on stacked outputs, their goals, user metric files."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgebuild.checks import metrics
from edgebuild.checks.metrics import MetricError

ROOT = Path(__file__).resolve().parents[1]


def test_parse_names_and_arguments() -> None:
    assert metrics.parse("cosine") == ("cosine", None)
    assert metrics.parse("max_abs_error") == ("max_abs_error", None)
    assert metrics.parse("top5") == ("topk", 5)
    assert metrics.parse("iou@0.5") == ("iou", 0.5)
    assert metrics.parse("decision@0.25 on det[:, 4:]") == ("decision", 0.25)
    assert metrics.parse("metrics/task.py:score") == ("user", ("metrics/task.py", "score"))
    assert metrics.selection("decision@0.5 on det[:, 4:]") == ("det", (slice(None), slice(4, None)))
    assert metrics.selection("argmax on logits") == ("logits", None)
    assert metrics.selection("iou@0.5 on mask[..., 0]") == ("mask", (Ellipsis, 0))
    assert metrics.selection("cosine") == (None, None)


@pytest.mark.parametrize("spec, message", [
    ("cosin", "unknown metric 'cosin' (did you mean 'cosine'?)"),
    ("iou", "metric 'iou' needs a threshold: write `iou@0.5`"),
    ("cosine@3", "metric 'cosine' takes no @ argument"),
    ("decision@high", "the threshold 'high' is not a number"),
    ("top0", "K must be at least 1"),
    ("argmax on y[a]", "bad index 'a'"),
    ("m.py:score on y", "a user metric sees every output"),
    ("", "the metric is empty"),
])
def test_parse_rejects_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(MetricError, match=re.escape(message)):
        metrics.parse(spec)
        metrics.selection(spec)


def test_directions_and_goals() -> None:
    assert metrics.direction("cosine") == metrics.HIGHER and metrics.direction("top5") == metrics.HIGHER
    assert metrics.direction("max_abs_error") == metrics.LOWER == metrics.direction("mean_abs_error")
    assert metrics.direction("x.py:f") == metrics.HIGHER
    assert metrics.meets(0.99, {"min": 0.98}) and not metrics.meets(0.97, {"min": 0.98})
    assert metrics.meets(0.01, {"max": 0.02}) and not metrics.meets(0.03, {"max": 0.02})
    assert not metrics.meets(float("nan"), {"min": 0.0}) and not metrics.meets(float("nan"), {"max": 1.0})
    assert metrics.goal_problems({"metric": "cosine", "min": 0.99}) == []
    assert metrics.goal_problems({"metric": "mean_abs_error", "max": 0.1}) == []
    (msg, key, hint), = metrics.goal_problems({"metric": "mean_abs_error", "min": 0.1})
    assert key == "min" and "`max:`" in msg and hint == "write `max: 0.1`"
    (msg, key, _), = metrics.goal_problems({"metric": "cosine", "min": 0.9, "max": 1.0})
    assert key == "max" and "one bound" in msg


def _ab(shape: tuple[int, ...], noise: float, seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    ref = rng.standard_normal(shape)
    return {"y": ref}, {"y": ref + noise * rng.standard_normal(shape)}


def test_elementwise_metrics() -> None:
    ref, cand = _ab((8, 10), 0.0)
    assert metrics.evaluate("cosine", ref, cand, None, None) == pytest.approx(1.0)
    assert metrics.evaluate("max_abs_error", ref, cand, None, None) == 0.0
    ref, cand = _ab((8, 10), 0.1)
    d = np.abs(ref["y"] - cand["y"])
    assert metrics.evaluate("max_abs_error", ref, cand, None, None) == pytest.approx(d.max())
    assert metrics.evaluate("mean_abs_error", ref, cand, None, None) == pytest.approx(d.mean())
    assert 0.98 < metrics.evaluate("cosine", ref, cand, None, None) < 1.0
    assert metrics.evaluate("cosine", {"y": np.zeros(3)}, {"y": np.zeros(3)}, None, None) == 1.0
    assert metrics.evaluate("cosine", {"y": np.zeros(3)}, {"y": np.ones(3)}, None, None) == 0.0
    # every output counts, unless `on` picks one
    two_ref = {"a": np.ones((4, 2)), "b": np.ones((4, 3))}
    two_cand = {"a": np.ones((4, 2)), "b": np.full((4, 3), 3.0)}
    assert metrics.evaluate("max_abs_error", two_ref, two_cand, None, None) == 2.0
    assert metrics.evaluate("max_abs_error on a", two_ref, two_cand, None, None) == 0.0


def test_argmax_and_topk() -> None:
    ref = {"logits": np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [0.3, 0.3, 0.4]])}
    cand = {"logits": np.array([[0.1, 0.8, 0.1], [0.1, 0.8, 0.1], [0.4, 0.2, 0.5], [0.9, 0.05, 0.05]])}
    assert metrics.evaluate("argmax", ref, cand, None, None) == 0.5
    # top2 of the candidate holds the reference argmax in rows 0, 1 and 2, not in row 3 ([0, 1])
    assert metrics.evaluate("top2", ref, cand, None, None) == 0.75
    assert metrics.evaluate("top3", ref, cand, None, None) == 1.0
    with pytest.raises(MetricError, match="last axis has two or more"):
        metrics.evaluate("argmax", {"y": np.ones((4, 1))}, {"y": np.ones((4, 1))}, None, None)


def test_iou_of_thresholded_maps() -> None:
    ref = {"mask": np.array([[[0.9, 0.9], [0.1, 0.1]], [[0.0, 0.0], [0.0, 0.0]]])}
    cand = {"mask": np.array([[[0.9, 0.1], [0.1, 0.1]], [[0.0, 0.0], [0.0, 0.0]]])}
    # sample 0: 1 of 2 pixels; sample 1: both empty (1.0)
    assert metrics.evaluate("iou@0.5", ref, cand, None, None) == pytest.approx(0.75)


def test_decision_agreement_collapses_when_positives_vanish() -> None:
    rng = np.random.default_rng(0)
    scores = rng.uniform(0, 1, (16, 8, 64))
    boxes = rng.uniform(0, 640, (16, 4, 64))
    ref = {"det": np.concatenate([boxes, scores], axis=1)}
    same = metrics.evaluate("decision@0.5 on det[:, 4:]", ref, ref, None, None)
    zeroed = {"det": np.concatenate([boxes, np.zeros_like(scores)], axis=1)}
    assert same == 1.0
    assert metrics.evaluate("decision@0.5 on det[:, 4:]", ref, zeroed, None, None) == 0.0
    # over the whole tensor the boxes (all "positive") dilute the loss: select the scores with `on`
    assert 0.4 < metrics.evaluate("decision@0.5", ref, zeroed, None, None) < 0.6
    everything = {"det": np.concatenate([boxes, np.ones_like(scores)], axis=1)}
    assert metrics.evaluate("decision@0.5 on det[:, 4:]", ref, everything, None, None) == 0.0


def test_shape_and_output_errors() -> None:
    with pytest.raises(MetricError, match="no output 'z'"):
        metrics.evaluate("cosine on z", {"y": np.ones(2)}, {"y": np.ones(2)}, None, None)
    with pytest.raises(MetricError, match="shape"):
        metrics.evaluate("cosine", {"y": np.ones((2, 3))}, {"y": np.ones((2, 4))}, None, None)


def test_user_metric_from_a_file_relative_to_the_recipe(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "task.py").write_text(
        "import numpy as np\n"
        "def accuracy(reference, candidate, data):\n"
        "    return float(np.mean(candidate['y'].argmax(-1) == data['labels']))\n"
        "def broken(reference, candidate, data):\n"
        "    return 'high'\n")
    ref = {"y": np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])}
    data = {"labels": np.array([1, 0, 0])}
    assert metrics.evaluate("m/task.py:accuracy", ref, ref, data, tmp_path) == pytest.approx(2 / 3)
    assert metrics.user_file("m/task.py:accuracy", tmp_path) == tmp_path / "m" / "task.py"
    assert metrics.user_file("cosine", tmp_path) is None
    assert metrics.goal_problems({"metric": "m/task.py:accuracy", "min": 0.5}, tmp_path) == []
    with pytest.raises(MetricError, match="returned str, not a number"):
        metrics.evaluate("m/task.py:broken", ref, ref, data, tmp_path)
    with pytest.raises(MetricError, match="defines no function 'nope'"):
        metrics.evaluate("m/task.py:nope", ref, ref, data, tmp_path)
    with pytest.raises(MetricError, match="metric file not found"):
        metrics.evaluate("m/missing.py:f", ref, ref, data, tmp_path)
    (msg, key, _), = metrics.goal_problems({"metric": "m/task.py:nope", "min": 0.5}, tmp_path)
    assert "defines no function 'nope'" in msg and key == "metric"


@pytest.mark.slow   # a fresh interpreter
def test_importing_metrics_stays_cheap() -> None:
    code = ("import sys, json, edgebuild.checks.metrics as m; m.parse('top5'); m.goal_problems({'metric': 'cosine', 'min': 1}); "
            "print(json.dumps([x for x in ('numpy', 'onnx', 'onnxruntime') if x in sys.modules]))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    assert json.loads(out.stdout) == []
