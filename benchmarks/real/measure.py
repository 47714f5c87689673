"""Measuring here, outside edgebuild: feeding datasets to a model, its outputs, the task metric, interleaved
latency at a given thread count, checking an artifact, and the hand-tuned reference quantization.

The hand-tuned reference is what an engineer who knows onnxruntime.quantization would write by hand:
`quant_pre_process`, then `quantize_static` in QDQ format, per-channel weights, uint8 activations and int8
weights in 7 bits (`reduce_range`, as ONNX Runtime advises on x86 with AVX2 and no VNNI, like this host), MinMax calibration on the same calibration set edgebuild gets; for the detectors the output head
(the nodes after the last layers with weights) is kept in float, as their exporters' docs advise. It says
whether an INT8 model that is faster and keeps the task exists at all for the model on this machine.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import corpus


def session(path: Path | str | bytes, threads: int = 1, optimize: bool = True) -> Any:
    """A CPU session opened the way edgebuild opens one (same threads, logging, optimization level)."""
    from edgebuild.onnx import runtime as onnx_runtime

    return onnx_runtime.session(path, optimize=optimize, threads=threads)


_NP = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64, "tensor(int32)": np.int32,
       "tensor(double)": np.float64, "tensor(uint8)": np.uint8, "tensor(int8)": np.int8}


def feeds(sess: Any, arrays: dict[str, np.ndarray], m: corpus.Model, limit: int | None = None) -> list[dict[str, Any]]:
    """One feed per sample for this session's inputs, as edgebuild feeds a dataset: `array[i]` to an input with
    one axis less than the array (no batch dim), else `array[i:i+1]`; inputs the recipe fixes (`value:`) get
    their value; float arrays are cast to the input's float type (float16 models)."""
    fixed = {k: v for k, v in (m.inputs or {}).items() if "value" in v}
    n = min(len(a) for a in arrays.values())
    if limit is not None:
        n = min(n, limit)
    out = []
    for i in range(n):
        feed: dict[str, Any] = {}
        for inp in sess.get_inputs():
            want = _NP.get(inp.type, np.float32)
            if inp.name in arrays:
                a = arrays[inp.name]
                v = a[i] if a.ndim == len(inp.shape) + 1 else a[i:i + 1]
                if v.dtype.kind == "f" and v.dtype != want:
                    v = v.astype(want)
                feed[inp.name] = np.ascontiguousarray(v)
            elif inp.name in fixed:
                feed[inp.name] = np.asarray(fixed[inp.name]["value"], dtype=want).reshape(fixed[inp.name].get("shape") or ())
            else:
                raise KeyError(f"no data for input {inp.name}")
        out.append(feed)
    return out


def outputs(sess: Any, fs: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Output name -> the samples' outputs joined along axis 0 (the form task metrics take)."""
    names = [o.name for o in sess.get_outputs()]
    got: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for f in fs:
        for n, v in zip(names, sess.run(names, f)):
            a = np.asarray(v)
            got[n].append(a.astype(np.float32) if a.dtype == np.float16 else a)
    return {n: (np.concatenate(v) if v and v[0].ndim else np.stack(v)) for n, v in got.items()}


def metric(m: corpus.Model, ref: dict[str, np.ndarray], cand: dict[str, np.ndarray], data: dict[str, np.ndarray],
           folder: Path, n: int) -> float:
    """The model's task metric on the first n samples, computed by edgebuild's own metrics module (user metric
    files beside the recipe). `ref` may hold more samples than `cand`: its first ones are used."""
    from edgebuild.checks import metrics

    n_all = len(next(iter(data.values())))
    r, c = {}, {}
    for k, v in cand.items():
        if k not in ref:
            continue
        per = len(ref[k]) // n_all if n_all and len(ref[k]) % n_all == 0 else 1   # rows per sample (time-major outputs)
        r[k], c[k] = ref[k][: n * per], v
    return float(metrics.evaluate(m.metric, r, c, {k: v[:n] for k, v in data.items()}, folder))


def load(folder: Path, name: str) -> dict[str, np.ndarray]:
    with np.load(folder / f"{name}.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _busy() -> tuple[float, float]:
    """(CPU seconds used by the whole machine, by this process) so far."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
        machine = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        machine = 0.0
    t = os.times()
    return machine, t.user + t.system


def background(seconds: float = 0.5) -> float:
    """Cores other processes used over the next `seconds`."""
    m0, o0 = _busy()
    time.sleep(seconds)
    m1, o1 = _busy()
    return max(0.0, (m1 - m0) - (o1 - o0)) / seconds


def wait_idle(limit: float = 0.25, max_wait: float = 10.0) -> float:
    """Wait (at most max_wait s) until other processes use less than `limit` cores; returns the last reading."""
    end = time.perf_counter() + max_wait
    load = background()
    while load > limit and time.perf_counter() < end:
        load = background()
    return load


def latencies(variants: dict[str, tuple[Any, dict[str, Any]]], rounds: int = 5, budget_s: float = 0.4,
              min_runs: int = 3) -> dict[str, dict[str, float]]:
    """Interleaved timing: in each round every variant runs for about `budget_s` (at least `min_runs` runs), in
    turn; per variant the median of all its runs (ms) and the spread of its per-round medians."""
    times: dict[str, list[float]] = {k: [] for k in variants}
    per_round: dict[str, list[float]] = {k: [] for k in variants}
    for sess, feed in variants.values():
        sess.run(None, feed)
        sess.run(None, feed)
    m0, o0 = _busy()
    t_start = time.perf_counter()
    for r in range(rounds):
        order = list(variants) if r % 2 == 0 else list(reversed(variants))
        for k in order:
            sess, feed = variants[k]
            got: list[float] = []
            start = time.perf_counter()
            while len(got) < min_runs or time.perf_counter() - start < budget_s:
                t0 = time.perf_counter()
                sess.run(None, feed)
                got.append((time.perf_counter() - t0) * 1000)
            times[k] += got
            per_round[k].append(statistics.median(got))
    m1, o1 = _busy()
    elapsed = time.perf_counter() - t_start
    out: dict[str, dict[str, float]] = {
        k: {"ms": statistics.median(v), "spread": (max(per_round[k]) - min(per_round[k])) / min(per_round[k])}
        for k, v in times.items()}
    out["_background"] = {"cores": max(0.0, (m1 - m0) - (o1 - o0)) / max(elapsed, 1e-9), "seconds": elapsed}
    return out


def check(path: Path) -> tuple[bool, str]:
    """onnx.checker.check_model (full check, with the file's path so external data and large models work) and an
    onnxruntime session: (True, "") or (False, "INVALID MODEL: ..." / "DOES NOT LOAD: ...")."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=False)
    except Exception as exc:
        return False, f"INVALID MODEL: {type(exc).__name__}: {_one_line(str(exc))}"
    try:
        session(path)
    except Exception as exc:
        return False, f"DOES NOT LOAD in onnxruntime: {_one_line(str(exc))}"
    return True, ""


def _one_line(text: str, n: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


# -- the hand-tuned reference -----------------------------------------------------------------------------

WEIGHT_OPS = {"Conv", "ConvTranspose", "MatMul", "Gemm"}


def head_nodes(model: Any) -> list[str]:
    """Names of the nodes between the last layers with weights and the graph outputs (walking back from each
    output and stopping at a Conv/MatMul/Gemm with an initializer weight)."""
    g = model.graph
    inits = {t.name for t in g.initializer}
    prod = {o: n for n in g.node for o in n.output}
    seen: set[str] = set()
    stack = [o.name for o in g.output]
    head: set[str] = set()
    while stack:
        n = prod.get(stack.pop())
        if n is None or n.name in seen:
            continue
        seen.add(n.name)
        if n.op_type in WEIGHT_OPS and any(i in inits for i in n.input[1:]):
            continue
        head.add(n.name)
        stack.extend(i for i in n.input if i and i not in inits)
    return [n.name for n in g.node if n.name in head]


class _Reader:
    def __init__(self, fs: list[dict[str, Any]]):
        self._it = iter(fs)

    def get_next(self) -> dict[str, Any] | None:
        return next(self._it, None)


def hand_tuned(m: corpus.Model, folder: Path, out: Path) -> dict[str, Any]:
    """Quantize the published model by hand (see the module docstring); returns facts, with `error` on failure."""
    import logging

    logging.getLogger().setLevel(logging.ERROR)   # onnxruntime.quantization logs a warning per tensor on the root logger
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)   # quant_pre_process and the calibrator leave temporary files in the working directory
        try:
            return _hand_tuned(m, folder, out.resolve(), Path(tmp))
        finally:
            os.chdir(cwd)


def _hand_tuned(m: corpus.Model, folder: Path, out: Path, tmp: Path) -> dict[str, Any]:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    facts: dict[str, Any] = {}
    pre = tmp / "pre.onnx"
    src = m.path
    try:
        quant_pre_process(str(m.path), str(pre))
        src = pre
    except Exception as exc:   # symbolic shape inference fails on many exports: the rest of the pre-processing still
        facts["preprocess_error"] = _one_line(f"{type(exc).__name__}: {exc}", 200)   # folds Constant-node weights
        try:
            quant_pre_process(str(m.path), str(pre), skip_symbolic_shape=True)
            src = pre
            facts["preprocess"] = "skip_symbolic_shape=True"
        except Exception as exc2:
            facts["preprocess_error"] += "; without symbolic shapes: " + _one_line(f"{type(exc2).__name__}: {exc2}", 200)
    model = onnx.load(str(src))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    if opset < 13:   # per-channel DequantizeLinear (its `axis`) needs opset 13: convert first, as one would by hand
        from onnx import version_converter
        try:
            model = version_converter.convert_version(model, 13)
            facts["converted"] = f"opset {opset} -> 13"
        except Exception as exc:
            facts["convert_error"] = _one_line(f"{type(exc).__name__}: {exc}", 200)
    for i, n in enumerate(model.graph.node):   # nodes_to_exclude works by name
        if not n.name:
            n.name = f"{n.op_type}_{i}"
    named = tmp / "named.onnx"
    onnx.save(model, str(named))
    exclude = head_nodes(model) if m.head_float else []
    facts["float_nodes"] = len(exclude)
    fs = feeds(session(named, optimize=False), load(folder, "calib"), m)
    t0 = time.perf_counter()
    try:
        quantize_static(str(named), str(out), _Reader(fs), quant_format=QuantFormat.QDQ, per_channel=True,
                        reduce_range=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=exclude)
    except Exception as exc:
        facts["error"] = _one_line(f"quantize_static failed: {type(exc).__name__}: {exc}", 240)
        return facts
    facts["seconds"] = round(time.perf_counter() - t0, 1)
    facts["quantized_weights"] = _int8_weights(onnx.load(str(out)))
    return facts


def _int8_weights(model: Any) -> int:
    """DequantizeLinear nodes that read an integer initializer (quantized weights), subgraphs included."""
    def walk(g: Any) -> int:
        ints = {t.name for t in g.initializer if t.data_type in (2, 3)}
        n = sum(1 for x in g.node if x.op_type == "DequantizeLinear" and x.input[0] in ints)
        for x in g.node:
            for a in x.attribute:
                n += sum(walk(sg) for sg in ([a.g] if a.type == 5 else list(a.graphs)))
        return n
    return walk(model.graph)
