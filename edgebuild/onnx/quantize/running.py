"""Running a model on dataset samples: feeds in the model's input types, outputs stacked over the samples,
and one inference's latency."""

from __future__ import annotations

from typing import Any, Iterator

from edgebuild.onnx import runtime as onnx_runtime


def cast_feeds(feeds: Iterator[dict[str, Any]], specs: dict[str, dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Float samples in the model's float input type (e.g. float16 inputs after an fp16 step)."""
    for feed in feeds:
        out = {}
        for k, v in feed.items():
            want = specs.get(k, {}).get("dtype", "")
            out[k] = v.astype(want) if want.startswith("float") and v.dtype.kind == "f" and v.dtype.name != want else v
        yield out


def outputs(sess: Any, feeds: list[dict[str, Any]]) -> dict[str, Any]:
    """Output name -> outputs of every feed, stacked along axis 0 (batches of one concatenated)."""
    import numpy as np

    names = [o.name for o in sess.get_outputs()]
    got: dict[str, list[Any]] = {n: [] for n in names}
    for feed in feeds:
        for n, v in zip(names, sess.run(names, feed)):
            got[n].append(np.asarray(v))
    return {n: (np.concatenate(v) if v and v[0].ndim else np.stack(v)) for n, v in got.items()}


def latency_ms(sess: Any, feed: dict[str, Any], budget_s: float = 0.25, min_runs: int = 5, max_runs: int = 2000) -> float:
    """Median wall time of one inference, over at least `min_runs` runs and about `budget_s` seconds."""
    import numpy as np

    return float(np.median(onnx_runtime.timings(sess, feed, 2, min_runs, budget_s, max_runs)))
