"""The quantize steps' `accuracy:` parameter at plan time: its schema, the user metric file that enters the
key, and its checks (no heavy imports)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgebuild.onnx.quantize.search import ACCURACY_SAMPLES, MAX_QUANTIZATIONS


def accuracy_schema(searched: str) -> dict[str, Any]:
    """JSON Schema of the quantize steps' `accuracy:` parameter."""
    return {
        "type": ["object", "null"], "default": None, "additionalProperties": False, "required": ["data", "metric"],
        "description": ("Accuracy goal: quantize, compare with the FP32 input on dataset `data` with `metric`, and when "
                        f"the goal is missed search {searched} (at most {MAX_QUANTIZATIONS} quantizations), keeping "
                        "the candidate that meets it with the fewest nodes in float; the result must also run faster "
                        "than FP32 with the target's threads. The step is then built per target. null: no goal."),
        "properties": {
            "data": {"type": "string", "description": "Recipe dataset (under `data:`) to measure the metric on."},
            "metric": {"type": "string",
                       "description": "cosine, max_abs_error, mean_abs_error, argmax, topK (top5), iou@T, decision@T, "
                                      "optionally `on OUTPUT[INDEX]` (e.g. `decision@0.5 on det[:, 4:]`); or "
                                      "path/to/file.py:function (relative to the recipe): "
                                      "function(reference, candidate, data) -> float, higher is better."},
            "min": {"type": "number", "description": "Goal for higher-is-better metrics: at least this value."},
            "max": {"type": "number", "description": "Goal for error metrics (max_abs_error, mean_abs_error): at most this."},
            "samples": {"type": "integer", "minimum": 1, "default": ACCURACY_SAMPLES,
                        "description": "Measure on the first N samples of `data`."},
            "faster": {"type": "boolean", "default": True,
                       "description": "Fail unless the result is measurably faster than the FP32 input (the target's "
                                      "threads, capped at this host's CPUs), timed interleaved with it pair by pair: a "
                                      "speed-up of at least 3 %, and more than the timing's uncertainty (at most 20 %); "
                                      "false: report both latencies only."},
        },
    }


def metric_source_files(params: dict[str, Any], recipe_dir: Path) -> dict[str, Path]:
    """The user metric file of `accuracy.metric`, if any: its content enters the cache key."""
    from edgebuild.checks import metrics

    acc = params.get("accuracy")
    if not isinstance(acc, dict) or not isinstance(acc.get("metric"), str):
        return {}
    f = metrics.user_file(acc["metric"], recipe_dir)
    return {"metric": f} if f is not None else {}


def check_accuracy(ctx: Any) -> None:
    """Plan-time checks of `accuracy:` (metric spec, min/max against its direction, user metric file)."""
    from edgebuild.checks import metrics
    from edgebuild.errors import Problem

    acc = ctx.params.get("accuracy")
    if not isinstance(acc, dict):
        return
    recipe_dir = getattr(ctx.recipe, "dir", None)
    for message, key, hint in metrics.goal_problems(acc, recipe_dir):
        where = ctx.recipe.doc.at(("steps", ctx.step_id, "with", "accuracy", key))
        ctx.problems.append(Problem(f"accuracy: {message}", where, hint))
