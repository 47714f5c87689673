"""The measurement step behind `checks:`: latency, memory, fidelity and accuracy of one ONNX artifact.

It is an internal step kind: the planner adds one per shipped (or candidate) ONNX artifact and target
thread count, so measurements are cached like any step and a rerun does not re-measure. It runs
alone (`exclusive`), in its own worker process, so timings are not disturbed by parallel steps.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path
from typing import Any

from edgebuild.steps.base import ONNX, WEB, RunContext, StepError, StepKind

MEASURE_REF = "edgebuild.checks.measure:Measure"


class Measure(StepKind):
    name = "measure"
    version = 5
    summary = "Measure an ONNX artifact on this host: latency with the target's threads, peak memory, fidelity, accuracy."
    params = {
        "threads": {"type": "integer", "description": "intra-op threads (the target's cpu.threads)"},
        "latency": {"type": "boolean", "default": True,
                    "description": "time the model (false for a web bundle's model: its latency is the browser's)"},
        "warmup": {"type": "integer", "default": 10, "description": "untimed runs first"},
        "runs": {"type": "integer", "default": 100, "description": "least number of timed runs"},
        "fidelity_data": {"type": ["string", "null"], "default": None, "description": "dataset to compare with the reference on"},
        "fidelity_samples": {"type": ["integer", "null"], "default": None, "description": "at most this many samples"},
        "fidelity_metric": {"type": ["string", "null"], "default": None, "description": "a task metric (edgebuild.checks.metrics)"},
        "accuracy_data": {"type": ["string", "null"], "default": None, "description": "dataset with labels"},
        # no default: a measurement taken here keeps the key it had before the option existed
        "where": {"enum": ["device"], "description": "measured on the target device (a Dask worker advertising device-<target>)"},
    }
    takes = (ONNX, WEB)
    gives = "measurements"
    tools = ("onnxruntime", "numpy")
    dataset_params = ("fidelity_data", "accuracy_data")
    host_specific = True   # the measuring host's hardware class enters the key (a shared cache: issue 11)

    @classmethod
    def source_files(cls, params: dict[str, Any], recipe_dir: Path) -> dict[str, Path]:
        from edgebuild.checks import metrics

        f = metrics.user_file(params["fidelity_metric"], recipe_dir) if params.get("fidelity_metric") else None
        return {"metric": f} if f is not None else {}
    exclusive = True

    @classmethod
    def resources(cls, params: dict[str, Any], target: Any) -> dict[str, float]:
        """`checks.latency.where: device`: a worker that is the target's device (`edgebuild worker` on it)."""
        return {f"device-{target.name}": 1.0} if params.get("where") == "device" else {}

    def run(self, ctx: RunContext) -> dict[str, Any]:
        import numpy as np
        import onnxruntime as ort

        from edgebuild.frontend import datasets

        p = ctx.params
        base_rss = _rss_mb()
        sess = _session(ort, ctx.input_model, p["threads"])
        names = {i.name: {"shape": list(i.shape)} for i in sess.get_inputs()}
        first = p["fidelity_data"] or p["accuracy_data"]
        for ds in {d for d in (p["fidelity_data"], p["accuracy_data"]) if d}:
            nan = datasets.nan_problem(ctx.data[ds], list(names))
            if nan:
                raise StepError(f"dataset '{ds}': {nan}", recipe_path=("data", ds),
                                hint="fidelity and accuracy need real values: drop those samples or fill the gaps")
        feed = next(datasets.feeds(ctx.data[first], names, 1)) if first else _synthetic(sess, np)
        facts: dict[str, Any] = {"host": host_cpu()}
        ref_path = ctx.refs["reference"] / "model.onnx" if "reference" in ctx.refs else Path(ctx.source["onnx"])
        itself = ctx.input_model.resolve() == ref_path.resolve()   # the FP32 export that `best:` lists with the rest
        if p.get("latency", True):
            facts["latency_ms"] = _latency(sess, feed, p["warmup"], p["runs"], p["threads"])
            ctx.log.info("latency p50 %.3f ms p95 %.3f ms", facts["latency_ms"]["p50"], facts["latency_ms"]["p95"])
            facts["memory_mb"] = round(max(_peak_rss_mb() - base_rss, 0.0), 1)   # before a second model loads
            facts["latency_ms"]["vs_reference"] = (_versus(ort, sess, ref_path, feed, p["threads"], ctx.log) if not itself
                                                   else _same_model(ctx.log))
        else:
            sess.run(None, feed)
            facts["latency_ms"] = None   # see the `latency` parameter
            facts["memory_mb"] = round(max(_peak_rss_mb() - base_rss, 0.0), 1)
        ctx.log.info("peak memory +%.1f MB", facts["memory_mb"])
        if first:
            ref = sess if itself else _session(ort, ref_path, p["threads"])
            limit = p["fidelity_samples"]
            data_name = p["fidelity_data"] or first
            cand_out = _outputs(sess, ctx.data[data_name], names, limit)
            ref_out = cand_out if itself else _outputs(ref, ctx.data[data_name], names, limit)
            facts["fidelity"] = dict(data=data_name, **compare(ref_out, cand_out))
            if p["fidelity_metric"]:
                facts["fidelity"]["metric"] = _metric(p["fidelity_metric"], _joined(ref_out), _joined(cand_out),
                                                      ctx.data[data_name], limit, ctx.recipe_dir)
            if p["accuracy_data"]:
                # the same samples already run through both models: their first outputs are reused
                ran = (ref_out, cand_out) if p["accuracy_data"] == data_name and limit is None else None
                facts["accuracy"] = _accuracy(sess, ref, ctx.data[p["accuracy_data"]], names, p["accuracy_data"], ran)
        return facts


def _metric(spec: str, ref: dict[str, Any], cand: dict[str, Any], data_file: Path, limit: int | None,
            recipe_dir: Path) -> dict[str, Any]:
    """The value of a task metric (edgebuild.checks.metrics) on the outputs, with the dataset's arrays at hand."""
    import numpy as np

    from edgebuild.checks import metrics

    with np.load(data_file) as z:
        data = {k: z[k][:limit] if limit else z[k] for k in z.files}
    return {"spec": spec, "value": round(float(metrics.evaluate(spec, ref, cand, data, recipe_dir)), 6)}


VERSUS_NOISE = 0.025   # half of checks.TIE
VERSUS_MAX_S = 4.0


def _versus(ort: Any, sess: Any, ref_path: Path, feed: dict[str, Any], threads: int, log: Any) -> dict[str, Any] | None:
    """This artifact's latency relative to the FP32 reference, timed interleaved pair by pair: what `best:`
    compares, since a ratio taken on one busy host at one moment is steadier than two latencies timed in
    separate steps (None when the reference cannot run on this feed)."""
    from edgebuild.onnx import runtime as onnx_runtime

    try:
        # `best:` counts candidates within 5 % as equally fast: a ratio noisier than half of that is timed
        # longer (a loaded host), up to VERSUS_MAX_S
        pair = onnx_runtime.paired_latency(_session(ort, ref_path, threads), sess, feed, budget_s=0.5,
                                    settled=lambda p: p.noise <= VERSUS_NOISE, max_s=VERSUS_MAX_S)
    except onnx_runtime.runtime_errors() as exc:   # the reference takes other inputs (a model whose inputs were fixed)
        log.info("no paired timing against the reference: %s", str(exc).strip().splitlines()[0][:200] if str(exc).strip() else exc)
        return None
    log.info("latency vs the FP32 reference: %.3fx over %d interleaved pairs (±%.1f%%)", pair.ratio, pair.pairs,
             100 * pair.noise)
    return pair.facts()


def _same_model(log: Any) -> dict[str, Any]:
    """The artifact is the reference: its ratio is 1 by definition, and timing a model against itself would only
    add noise (and seconds) to what `best:` compares."""
    log.info("latency vs the FP32 reference: this is the reference (1x, not timed against itself)")
    return {"ratio": 1.0, "noise": 0.0, "spread": 0.0, "pairs": 0, "itself": True}


def _session(ort: Any, path: Path, threads: int) -> Any:
    from edgebuild.onnx import runtime as onnx_runtime

    return onnx_runtime.session(path, threads=threads)


def _synthetic(sess: Any, np: Any) -> dict[str, Any]:
    """A seeded input per model input, symbolic dims set to 1, when the recipe gives no dataset."""
    rng = np.random.default_rng(0)
    types = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
             "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(uint8)": np.uint8, "tensor(int8)": np.int8,
             "tensor(bool)": np.bool_}
    feed = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in i.shape]
        dtype = types.get(i.type, np.float32)
        feed[i.name] = (rng.standard_normal(shape) if np.issubdtype(dtype, np.floating) else rng.integers(0, 2, shape)).astype(dtype)
    return feed


def _latency(sess: Any, feed: dict[str, Any], warmup: int, runs: int, threads: int) -> dict[str, Any]:
    """Time single inferences until `runs` are taken and one second has passed (at most 20 x runs)."""
    import numpy as np

    from edgebuild.onnx import runtime as onnx_runtime

    times = onnx_runtime.timings(sess, feed, warmup, runs, 1.0, runs * 20)
    a = np.array(times)
    q = {k: float(np.percentile(a, v)) for k, v in (("p50", 50), ("p95", 95), ("p99", 99))}
    return {**{k: round(v, 4) for k, v in q.items()}, "mean": round(float(a.mean()), 4), "stdev": round(float(a.std()), 4),
            "min": round(float(a.min()), 4), "max": round(float(a.max()), 4), "runs": len(times), "threads": threads}


def _outputs(sess: Any, data: Path, names: dict[str, Any], limit: int | None) -> dict[str, list[Any]]:
    """Output name -> its value for each sample, as the model gave it (dtype and shape kept: a detector's
    NonMaxSuppression output has a different length for each sample, and maybe in each model)."""
    import numpy as np

    from edgebuild.frontend import datasets

    outs: dict[str, list[Any]] = {o.name: [] for o in sess.get_outputs()}
    for feed in datasets.feeds(data, names, limit):
        for o, v in zip(outs, sess.run(None, feed)):
            outs[o].append(np.asarray(v))
    return outs


def _joined(outs: dict[str, list[Any]]) -> dict[str, Any]:
    """Each output's samples joined along axis 0, the form task metrics take."""
    import numpy as np

    return {k: np.concatenate(v) if v and v[0].ndim else np.stack(v) for k, v in outs.items()}


def compare(ref: dict[str, list[Any]], cand: dict[str, list[Any]]) -> dict[str, Any]:
    """How closely the candidate's outputs follow the reference's, sample by sample.

    Float outputs whose shapes agree in every sample are compared numerically, all together: max/mean
    abs error and cosine similarity; argmax agreement is over the first of them when it is a vector of
    class scores per sample ([batch, classes]; not a detector's boxes or a segmentation map).
    Other outputs (integer or boolean ones such as class ids, and outputs whose size depends on the
    data, such as NonMaxSuppression's) are compared for exact equality per sample, under `exact`:
    mixing a class id into an abs error would make it meaningless.
    """
    import numpy as np

    samples = len(next(iter(ref.values()), []))
    numeric, exact = [], {}
    for k in ref:
        r, c = ref[k], cand[k]
        shapes_differ = sum(a.shape != b.shape for a, b in zip(r, c))
        if r and r[0].dtype.kind == "f" and not shapes_differ:
            numeric.append(k)
            continue
        same = sum(a.shape == b.shape and bool(np.array_equal(a, b)) for a, b in zip(r, c))
        exact[k] = {"dtype": str(r[0].dtype) if r else "unknown", "same": round(same / max(len(r), 1), 6)}
        if shapes_differ:
            exact[k]["shape_differs"] = shapes_differ
    out: dict[str, Any] = {"samples": samples}
    if numeric:
        rv = np.concatenate([np.ravel(a).astype(np.float64) for k in numeric for a in ref[k]])
        cv = np.concatenate([np.ravel(a).astype(np.float64) for k in numeric for a in cand[k]])
        denom = float(np.linalg.norm(rv) * np.linalg.norm(cv))
        out.update({"max_abs_error": float(f"{float(np.max(np.abs(rv - cv))) if rv.size else 0.0:.4g}"),
                    "mean_abs_error": float(f"{float(np.mean(np.abs(rv - cv))) if rv.size else 0.0:.4g}"),
                    "cosine": round(float(rv @ cv) / denom, 6) if denom else (1.0 if np.allclose(rv, cv) else 0.0)})
        first = numeric[0]
        if ref[first] and _class_scores(ref[first][0].shape):
            agree = np.concatenate([np.ravel(a.argmax(-1) == b.argmax(-1)) for a, b in zip(ref[first], cand[first])])
            out["argmax_agreement"] = round(float(np.mean(agree)), 6)
    if exact:
        out["exact"] = exact
    return out


def _class_scores(sample_shape: tuple[int, ...]) -> bool:
    """One sample's output is a score per class: [1, C] (batch of one) or [C] (no batch dim), C > 1."""
    dims = list(sample_shape[1:]) if len(sample_shape) == 2 and sample_shape[0] == 1 else list(sample_shape)
    return len(dims) == 1 and dims[0] > 1


def _accuracy(sess: Any, ref: Any, data: Path, names: dict[str, Any], name: str,
              ran: tuple[dict[str, list[Any]], dict[str, list[Any]]] | None = None) -> dict[str, Any]:
    """Top-1 accuracy against the dataset's labels (one per sample): the argmax of each sample's first output.
    `ran`: the reference's and the candidate's outputs on every sample of `data`, when fidelity has them."""
    import numpy as np

    from edgebuild.frontend import datasets

    labels = np.asarray(datasets.load_labels(data)).reshape(-1)
    acc = []
    for s, outs in zip((ref, sess), ran or (None, None)):
        name0 = s.get_outputs()[0].name
        first = (outs if outs is not None else _outputs(s, data, names, None))[name0]
        pred = np.array([int(np.ravel(a).argmax()) for a in first])
        acc.append(float(np.mean(pred == labels[: len(pred)])))
    return {"data": name, "reference": round(acc[0], 6), "candidate": round(acc[1], 6), "drop": round(acc[0] - acc[1], 6)}


def host_cpu() -> str:
    """The CPU model of this machine: measurements say where they were taken."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine()


def _rss_mb() -> float:
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except OSError:
        return _peak_rss_mb()


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3   # kB on Linux
