"""Failure patterns: FP32 vs the plain ONNX Runtime quantization calls vs edgebuild, on the models that break them.

Run: .venv/bin/python benchmarks/patterns.py   (from the repository root; takes about 1.5-2 minutes)

The pattern models are the ones the tests build to show each failure (tests/steps/test_accuracy_aware.py
and tests/test_rewrite.py; their builder functions are imported from there, so pytest must be installed:
scripts/setup-tests.sh): weights in Constant nodes (an MLP; a conv net whose float16 weights go through a
Cast), a YOLO-like head whose one output concatenates boxes (0..640) and scores (0..1), a conv net with an
outlier activation channel, a graph wrapped in an If on a `sample_rate` input, a fully convolutional
model with wrongly declared fixed dims, a conv stack with decomposed hard-swish and its weights listed as
graph inputs, and a conv net on which dynamic INT8 is slower than FP32. Plus the bundled vitals model
(recipes/vitals), exported to ONNX by edgebuild first.

For each model and variant it reports the size, the p50 latency at 1 and 2 threads (its own timing loop:
sessions made up front, warm-up, then the variants interleaved in short blocks, a few hundred timed runs
each) and the task metric against the FP32 reference on held-out samples:

- FP32: the model as published (for vitals: edgebuild's `export`);
- plain dynamic / plain static: onnxruntime.quantization.quantize_dynamic(src, dst) and
  quantize_static(src, dst, reader) with every other argument left at its default, as tutorials show;
- edgebuild: a recipe per model in a temporary folder, run with `python -m edgebuild run --keep-going` in a
  subprocess, against a copy of targets/x86-64.yaml that describes this host (its ISA features, 2
  threads). Quantize steps carry `accuracy: {data: eval, metric: <the task metric>, min: <goal>}`, so
  edgebuild searches until the goal is met and then refuses a result that is not faster than FP32 with
  the target's threads; a refused step is reported with edgebuild's message, and the same step with
  `faster: false` is built too so that the model it refused can be measured. Facts (nodes kept in
  float, calibration, the step's own latency comparison) come from dist/<name>/manifest.json and the
  step's log in the cache.

A variant that fails (a quantizer that raises, a model that no longer runs on the recipe's input, a
quantization that quantized nothing) is reported as such, with the reason. Prints a markdown table and
writes docs/benchmarks-patterns.md (`--no-doc`: print only).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import importlib.util
import json
import logging
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
VITALS = ROOT / "recipes" / "vitals"
DOC = ROOT / "docs" / "benchmarks-patterns.md"
TARGET = "host-x86"
THREADS = (1, 2)
YOLO_SCORES = "decision@0.5 on det[:, 4:]"

sys.path.insert(0, str(ROOT))


def _module(path: Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def pattern_builders() -> tuple[Any, Any]:
    """The tests' model builders (the test modules import pytest at the top)."""
    try:
        aa = _module(ROOT / "tests" / "steps" / "test_accuracy_aware.py", "bench_patterns_accuracy")
        rw = _module(ROOT / "tests" / "test_rewrite.py", "bench_patterns_rewrite")
    except ImportError as exc:
        raise SystemExit(f"cannot import the tests' model builders ({exc}): run scripts/setup-tests.sh first") from None
    return aa, rw


# ---------------------------------------------------------------------------------------------- models

@dataclass
class Model:
    name: str
    pattern: str                          # what breaks, one line
    metric: str                           # cosine | decision | argmax
    goal: float                           # the accuracy goal given to edgebuild (also the bar for every variant)
    spec: str                             # edgebuild's metric spec for that goal
    onnx: Path | None = None              # the published model (None: vitals, exported by edgebuild)
    inputs: dict[str, Any] | None = None  # recipe model.inputs
    steps: dict[str, Any] = field(default_factory=dict)   # recipe steps: id -> step
    labels: dict[str, str] = field(default_factory=dict)  # step id -> table label
    fixed: dict[str, np.ndarray] = field(default_factory=dict)   # inputs the published model also needs
    reference: Path | None = None         # the FP32 model metrics compare with (default: the published one)
    reference_label: str = ""             # a row for `reference` when it is not the published model
    data: dict[str, Path] = field(default_factory=dict)   # calib, eval (edgebuild), test (this script's metrics)
    source: dict[str, Any] | None = None  # recipe model for a PyTorch model
    fp32_step: str | None = None          # the step whose artifact is the FP32 model (vitals: export)


def _datasets(d: Path, name: str, sample: tuple[int, ...], scale: float = 1.0) -> dict[str, Path]:
    """calib (32), eval (64) and test (64) sets of seeded standard-normal samples, one array `name`."""
    out = {}
    for split, n, seed in (("calib", 32, 1), ("eval", 64, 2), ("test", 64, 3)):
        x = (np.random.default_rng(seed).standard_normal((n, *sample)) * scale).astype(np.float32)
        np.savez(d / f"{split}.npz", **{name: x})  # type: ignore[arg-type]
        out[split] = d / f"{split}.npz"
    return out


def _q(use: str, spec: str, goal: float, src: str | None = None, **extra: Any) -> dict[str, Any]:
    step: dict[str, Any] = {"use": use, "with": {**extra, "accuracy": {"data": "eval", "metric": spec, "min": goal}}}
    if use == "quantize-static":
        step["with"] = {"data": "calib", **step["with"]}
    if src:
        step["from"] = src
    return step


def relax_dims(src: Path, dst: Path, shape: list[Any]) -> Path:
    """By hand, what a user does to a model whose declared dims are wrong: set the input's, erase the rest."""
    import onnx

    m = onnx.load(str(src))
    dims = m.graph.input[0].type.tensor_type.shape.dim
    for d, v in zip(dims, shape):
        d.Clear()
        d.dim_value = v
    for o in m.graph.output:
        o.type.tensor_type.ClearField("shape")
    m.graph.ClearField("value_info")
    onnx.save(m, str(dst))
    return dst


def make_models(work: Path, only: list[str] | None) -> list[Model]:
    import onnx

    aa, rw = pattern_builders()
    models: list[Model] = []

    def want(name: str) -> Path | None:
        if only and name not in only:
            return None
        d = work / name
        d.mkdir(parents=True)
        return d

    if d := want("constant-mlp"):
        models.append(Model("constant-mlp", "MLP [1, 64] -> 128 -> 32 whose weights are Constant nodes (one behind a Transpose)",
                            "cosine", 0.99, "cosine", onnx=aa.constant_mlp(d / "model.onnx"),
                            data=_datasets(d, "x", (64,)),
                            steps={"q": _q("quantize-dynamic", "cosine", 0.99)}, labels={"q": "edgebuild quantize-dynamic"}))
    if d := want("constant-cnn"):
        models.append(Model("constant-cnn", "2 convs, [1, 3, 16, 16]; weights are Constant nodes, one float16 behind a Cast",
                            "cosine", 0.99, "cosine", onnx=aa.constant_cnn(d / "model.onnx"),
                            data=_datasets(d, "x", (3, 16, 16)),
                            steps={"q": _q("quantize-static", "cosine", 0.99)}, labels={"q": "edgebuild quantize-static"}))
    if d := want("yolo-head"):
        models.append(Model("yolo-head", "2 strided convs + box/score branches, [1, 3, 32, 32]; output `det` [1, 12, 64] "
                                         "concatenates boxes (0..640) and scores (0..1)",
                            "decision", 0.95, YOLO_SCORES, onnx=aa.yolo_like(d / "model.onnx"),
                            data=_datasets(d, "x", (3, 32, 32)),
                            steps={"q": _q("quantize-static", YOLO_SCORES, 0.95)}, labels={"q": "edgebuild quantize-static"}))
    if d := want("outlier-cnn"):
        models.append(Model("outlier-cnn", "3 convs + Gemm, [1, 3, 16, 16]; one activation channel carries a +300 bias",
                            "cosine", 0.999, "cosine", onnx=aa.outlier_cnn(d / "model.onnx"),
                            data=_datasets(d, "x", (3, 16, 16)),
                            steps={"q": _q("quantize-static", "cosine", 0.999)}, labels={"q": "edgebuild quantize-static"}))
    if d := want("if-wrapped"):
        path = d / "model.onnx"
        onnx.save(rw._if_model(), str(path))
        models.append(Model("if-wrapped", "the whole graph in an If on an int64 `sample_rate` input (16 kHz / 8 kHz branches "
                                          "with their own MatMul weights), x [1, 64]",
                            "cosine", 0.99, "cosine", onnx=path, data=_datasets(d, "x", (64,)),
                            inputs={"sample_rate": {"shape": [], "value": 16000}},
                            fixed={"sample_rate": np.array(16000, dtype=np.int64)},
                            steps={"opt": {"use": "optimize"}, "q": _q("quantize-dynamic", "cosine", 0.99)},
                            labels={"opt": "edgebuild optimize (FP32)", "q": "edgebuild quantize-dynamic"}))
    if d := want("wrong-shape"):
        path = d / "model.onnx"
        onnx.save(rw._fully_conv_wrongly_declared(), str(path))
        shape = [1, 3, 64, 64]
        models.append(Model("wrong-shape", "fully convolutional (2 convs) but declared with a fixed [10, 3, 32, 32] input and "
                                           "a [1, 100] output; used at [1, 3, 64, 64]",
                            "cosine", 0.99, "cosine", onnx=path, data=_datasets(d, "x", tuple(shape[1:])),
                            inputs={"x": {"shape": shape}},
                            reference=relax_dims(path, d / "relaxed.onnx", shape),
                            reference_label="FP32, dims edited by hand",
                            steps={"opt": {"use": "optimize"}, "q": _q("quantize-static", "cosine", 0.99)},
                            labels={"opt": "edgebuild optimize (FP32)", "q": "edgebuild quantize-static"}))
    if d := want("hardswish-inputs"):
        path = d / "model.onnx"
        onnx.save(rw._conv_stack("clip", consts_as="input"), str(path))
        models.append(Model("hardswish-inputs", "2 convs + hard-swish written as x * Clip(x + 3, 0, 6) / 6, [1, 3, 16, 16]; "
                                                "every weight also listed as a graph input (old exporters)",
                            "cosine", 0.99, "cosine", onnx=path, data=_datasets(d, "x", (3, 16, 16), scale=3.0),
                            steps={"opt": {"use": "optimize"}, "q": _q("quantize-static", "cosine", 0.99, src="opt")},
                            labels={"opt": "edgebuild optimize (FP32)", "q": "edgebuild optimize -> quantize-static"}))
    if d := want("conv-net"):
        models.append(Model("conv-net", "4 convs (3 -> 32 -> 64 -> 64 -> 128, two strided) + Gemm, [1, 3, 64, 64]",
                            "cosine", 0.99, "cosine", onnx=aa.conv_net(d / "model.onnx"),
                            data=_datasets(d, "x", (3, 64, 64)),
                            steps={"q": _q("quantize-static", "cosine", 0.99), "qd": _q("quantize-dynamic", "cosine", 0.99)},
                            labels={"q": "edgebuild quantize-static", "qd": "edgebuild quantize-dynamic"}))
    if d := want("vitals"):
        models.append(Model("vitals", "recipes/vitals: 1D-CNN ECG classifier (11k params), [1, 1, 256] -> 2 logits",
                            "argmax", 0.98, "argmax",
                            source={"pytorch": {"factory": f"{VITALS / 'model.py'}:build", "weights": str(VITALS / "weights.pt")}},
                            inputs={"ecg": {"shape": ["batch", 1, 256], "dtype": "float32"}},
                            data={"calib": VITALS / "calib.npz", "eval": VITALS / "eval.npz", "test": VITALS / "eval.npz"},
                            fp32_step="fp32",
                            steps={"fp32": {"use": "export", "with": {"opset": 17}},
                                   "q": _q("quantize-static", "argmax", 0.98, src="fp32"),
                                   "qd": _q("quantize-dynamic", "argmax", 0.98, src="fp32")},
                            labels={"fp32": "FP32 (edgebuild export)", "q": "edgebuild quantize-static",
                                    "qd": "edgebuild quantize-dynamic"}))
    return models


# ---------------------------------------------------------------------------------------------- edgebuild

def host_features() -> list[str]:
    """This CPU's ISA extensions, as target profiles name them."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = set(next((l.split(":", 1)[1].split() for l in info.splitlines() if l.startswith("flags")), []))
    names = {"sse4_2": "sse4.2", "avx": "avx", "avx2": "avx2", "fma": "fma", "f16c": "f16c", "avx_vnni": "vnni",
             "avx512f": "avx512", "avx512_vnni": "avx512-vnni", "avx512_bf16": "avx512-bf16",
             "avx512_fp16": "avx512-fp16", "amx_int8": "amx"}
    return [v for k, v in names.items() if k in flags]


def write_target(work: Path) -> Path:
    """targets/x86-64.yaml describing this host: its ISA features, 2 threads (capped at its cores)."""
    text = (ROOT / "targets" / "x86-64.yaml").read_text()
    cores = os.cpu_count() or 1
    subs = [(r"(?m)^name: x86-64$", f"name: {TARGET}"),
            (r"(?m)^description: .*$", "description: this benchmark host (a copy of x86-64.yaml with its own ISA and threads)"),
            (r"(?m)^  cores: \d+", f"  cores: {cores}"), (r"(?m)^  threads: \d+", f"  threads: {min(2, cores)}"),
            (r"(?m)^  features: \[[^\]]*\].*$", f"  features: [{', '.join(host_features())}]")]
    for pat, rep in subs:
        text, n = re.subn(pat, rep, text)
        if n != 1:
            raise SystemExit(f"targets/x86-64.yaml changed shape: no line matches {pat!r}")
    path = work / f"{TARGET}.yaml"
    path.write_text(text)
    return path


def write_recipe(m: Model, d: Path, target: Path, steps: dict[str, Any]) -> Path:
    import yaml

    model: dict[str, Any] = dict(m.source) if m.source else {"onnx": m.onnx.name}  # type: ignore[union-attr]
    if m.inputs:
        model["inputs"] = m.inputs
    recipe = {"edgebuild": 1, "name": m.name, "model": model,
              "data": {"calib": str(m.data["calib"]), "eval": str(m.data["eval"])},
              "targets": [str(target)], "steps": steps, "ship": {TARGET: list(steps)}}
    path = d / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


STEP_FAILED = re.compile(r"error: step '([^'@]+)(?:@[^']*)?' \([^)]*\) failed: (.*)")
NOT_FASTER = "is not faster than FP32"


def edgebuild(m: Model, d: Path, target: Path) -> dict[str, Any]:
    """Build the model's recipe; return {manifest, failed: {step: message}, kept: {refused step: twin step}, seconds}.

    edgebuild publishes no target with a failed artifact, so after a failure the recipe is run again
    without the failed steps (and what depends on them); a step refused as not faster than FP32 gets a
    twin with `accuracy.faster: false` in that run, so that the model it refused is measured too."""
    steps = copy.deepcopy(m.steps)
    failed: dict[str, str] = {}
    kept: dict[str, str] = {}
    t0 = time.perf_counter()
    for _ in range(4):
        recipe = write_recipe(m, d, target, steps)
        r = subprocess.run([PY, "-m", "edgebuild", "run", str(recipe), "--keep-going", "--cache", str(d / "cache"),
                            "--out", str(d / "dist")], cwd=d, capture_output=True, text=True,
                           env=dict(os.environ, PYTHONPATH=str(ROOT)))
        if r.returncode == 0:
            manifest = json.loads((d / "dist" / m.name / "manifest.json").read_text())
            return {"manifest": manifest, "failed": failed, "kept": kept, "seconds": time.perf_counter() - t0,
                    "cache": d / "cache"}
        new = {sid: msg.strip() for sid, msg in STEP_FAILED.findall(r.stderr)}
        if not new:
            raise SystemExit(f"edgebuild failed on {m.name} without a step failure:\n{r.stdout}\n{r.stderr}")
        failed.update(new)
        for sid, msg in new.items():
            steps.pop(sid, None)
            if NOT_FASTER in msg and sid in m.steps:
                twin = copy.deepcopy(m.steps[sid])
                twin["with"]["accuracy"]["faster"] = False
                steps[f"{sid}-kept"] = twin
                kept[sid] = f"{sid}-kept"
        while True:   # steps built from a failed step cannot build either
            orphans = [s for s, v in steps.items() if v.get("from") and v["from"] not in steps]
            if not orphans:
                break
            for s in orphans:
                failed[s] = f"not built: it is built from step '{steps[s]['from']}', which failed"
                steps.pop(s)
        if not steps:
            return {"manifest": None, "failed": failed, "kept": kept, "seconds": time.perf_counter() - t0, "cache": None}
    raise SystemExit(f"edgebuild kept failing on {m.name}: {failed}")


def chosen_line(cache: Path, key: str) -> str:
    """The quantize step's `chosen:` log line, from its cache entry."""
    log = cache / "objects" / key[:2] / key / "log.txt"
    if not log.is_file():
        return ""
    return next((l.split("chosen: ", 1)[1] for l in log.read_text().splitlines() if "chosen: " in l), "")


def step_facts(manifest: dict[str, Any], sid: str) -> tuple[dict[str, Any], str]:
    for key in (f"{sid}@{TARGET}", sid):
        if key in manifest["steps"]:
            s = manifest["steps"][key]
            return s.get("facts") or {}, s.get("key", "")
    return {}, ""


def describe_edgebuild(facts: dict[str, Any], chosen: str) -> str:
    """One line of what the step did, from its manifest facts (and its cache log)."""
    bits = []
    src = facts.get("source") or {}
    if src.get("fixed"):
        bits.append("input(s) fixed: " + ", ".join(f"{k}={v}" for k, v in src["fixed"].items()))
    if src.get("if_inlined"):
        bits.append(f"{src['if_inlined']} If inlined")
    if src.get("inputs"):
        bits.append("input dims " + "; ".join(f"{k} {v['declared']} -> {v['now']}" for k, v in src["inputs"].items()))
    if facts.get("rewrites"):
        bits.append("rewrites " + ", ".join(f"{k} x{v}" for k, v in facts["rewrites"].items()))
    if "nodes_before" in facts:
        bits.append(f"nodes {facts['nodes_before']} -> {facts['nodes_after']}")
    pre = facts.get("preprocess") or {}
    if pre.get("constants_to_initializers") or pre.get("folded_nodes"):
        bits.append(f"pre-processing: {pre.get('constants_to_initializers', 0)} Constant(s) -> initializers, "
                    f"{pre.get('folded_nodes', 0)} node(s) folded")
    for g in facts.get("range_mixing") or []:
        if g.get("keep_fp32"):
            bits.append(f"range mixing: {g['node']} joins ranges {g['ratio']}x apart, kept in float")
    if "quantized_nodes" in facts:
        t = facts.get("types") or {}
        q = f"{facts['quantized_nodes']} node(s) with int8 weights"
        if "method" in facts:
            q += f", {facts['method']} calibration"
        if t:
            q += (f", {t.get('activation_type', 'uint8')} activations x {t.get('weight_type')} weights, "
                  f"per_channel={facts.get('per_channel')}, reduce_range={t.get('reduce_range')}")
        bits.append(q)
    acc = facts.get("accuracy")
    if acc:
        bits.append(f"search: {len(acc.get('search', []))} quantization(s), {acc['metric']} {acc['before']} -> {acc['after']}"
                    f" (goal >= {acc['goal'].get('min')}), {len(acc.get('fp32_nodes', []))} node(s) kept in float"
                    + (f" ({', '.join(acc['fp32_nodes'])})" if 0 < len(acc.get("fp32_nodes", [])) <= 4 else ""))
    if chosen:   # from the step's log in the cache: what it chose and its own latency comparison with its input
        bits.append(f"its log: \"chosen: {chosen}\"")
    elif acc and acc.get("latency_ms"):
        lat = acc["latency_ms"]
        bits.append(f"its own check at {acc.get('threads')} thread(s): FP32 {lat.get('fp32')} ms vs {lat.get('quantized')} ms")
    return "; ".join(bits)


# ---------------------------------------------------------------------------------------------- plain calls

def plain_dynamic(src: Path, dst: Path) -> Path:
    from onnxruntime.quantization import quantize_dynamic

    quantize_dynamic(str(src), str(dst))
    return dst


def plain_static(src: Path, dst: Path, feeds: list[dict[str, np.ndarray]]) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    quantize_static(str(src), str(dst), Reader())
    return dst


_QUANT_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "ConvInteger", "MatMulInteger",
              "QLinearConv", "QLinearMatMul")


def quant_summary(path: Path) -> tuple[int, Counter[str]]:
    """(int8/uint8 initializers of more than one value: stored int8 weights, quantization ops) over every graph."""
    import onnx

    def graphs(g: Any) -> Any:
        yield g
        for n in g.node:
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    yield from graphs(a.g)
                for sub in a.graphs:
                    yield from graphs(sub)

    weights, ops = 0, Counter[str]()
    for g in graphs(onnx.load(str(path)).graph):
        weights += sum(1 for t in g.initializer if t.data_type in (2, 3) and int(np.prod(t.dims)) > 1)
        ops.update(n.op_type for n in g.node if n.op_type in _QUANT_OPS)
    return weights, ops


def short_error(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
    text = text.replace(" Please fix either the inputs/outputs or the model.", "")
    return f"{type(exc).__name__}: {text[:220]}"


# ---------------------------------------------------------------------------------------------- measuring

@dataclass
class Variant:
    label: str
    path: Path | None = None
    kind: str = "fp32"                  # fp32 | plain | edgebuild (an FP32 or quantized step) | kept (a refused model)
    quantized: bool = False
    status: str = "ok"                  # ok | failed | refused | note
    inert: str = ""                     # a plain call's result with no int8 weight: what it is, in the table
    rewritten: bool = False             # an FP32 step that changed the graph (fewer nodes, rewrites, If inlined)
    reason: str = ""                    # footnote text
    sessions: dict[int, Any] = field(default_factory=dict)
    times: dict[int, list[float]] = field(default_factory=dict)
    metric: float | None = None
    baseline: bool = False


def session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def feed_for(sess: Any, sample: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {i.name: sample[i.name] for i in sess.get_inputs()}


def samples(path: Path, fixed: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Each sample of a dataset as a batch of one, with the inputs the recipe fixes."""
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files if k != "labels"}
    n = min(len(a) for a in arrays.values())
    return [{**{k: a[i:i + 1] for k, a in arrays.items()}, **fixed} for i in range(n)]


def outputs(path: Path, samples: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    sess = session(path, 1)
    names = [o.name for o in sess.get_outputs()]
    got: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for s in samples:
        for n, v in zip(names, sess.run(names, feed_for(sess, s))):
            got[n].append(np.asarray(v, dtype=np.float64))
    return {n: np.concatenate(v) for n, v in got.items()}


def metric(kind: str, ref: dict[str, np.ndarray], cand: dict[str, np.ndarray]) -> float:
    """cosine: of all outputs flattened; decision: the score channels' decisions `> 0.5` kept,
    min(positives kept, negatives kept); argmax: share of samples whose argmax agrees."""
    if kind == "cosine":
        r = np.concatenate([ref[k].ravel() for k in ref])
        c = np.concatenate([cand[k].ravel() for k in ref])
        nr, nc = np.linalg.norm(r), np.linalg.norm(c)
        return 1.0 if nr == nc == 0 else 0.0 if nr == 0 or nc == 0 else float(r @ c / (nr * nc))
    if kind == "decision":
        r, c = ref["det"][:, 4:] > 0.5, cand["det"][:, 4:] > 0.5
        pos, neg = r.sum(), (~r).sum()
        kept_pos = (r & c).sum() / pos if pos else 1.0
        kept_neg = (~r & ~c).sum() / neg if neg else 1.0
        return float(min(kept_pos, kept_neg))
    if kind == "argmax":
        k = next(iter(ref))
        return float(np.mean(ref[k].argmax(-1) == cand[k].argmax(-1)))
    raise ValueError(kind)


def time_variants(variants: list[Variant], sample: dict[str, np.ndarray], runs: int, seconds: float,
                  block: int = 20, cap: int = 5000) -> None:
    """p50 material: sessions made up front, 30 warm-up runs each, then rounds of `block` runs per variant and
    thread count, interleaved, until each has at least `runs` timed runs and the rounds have lasted `seconds`
    (at most `cap` runs each). On a shared VM the speed of sub-0.1 ms inferences jumps between two levels
    from one second to the next: rounds spread over seconds give every variant the same mix of both."""
    # grouped by thread count: a 2-thread session's pool spins a moment after each run, which would slow the
    # 1-thread run after it on a 2-core host
    live = [(v, t) for t in THREADS for v in variants if v.path is not None and v.status != "failed"]
    feeds = {}
    for v, t in live:
        v.sessions[t] = session(v.path, t)  # type: ignore[arg-type]
        feeds[(id(v), t)] = feed_for(v.sessions[t], sample)
        for _ in range(30):
            v.sessions[t].run(None, feeds[(id(v), t)])
        v.times[t] = []
    start, done = time.perf_counter(), 0
    while live and (done < runs or time.perf_counter() - start < seconds) and done < cap:
        for v, t in live:
            s, f, out = v.sessions[t], feeds[(id(v), t)], v.times[t]
            for _ in range(block):
                t0 = time.perf_counter()
                s.run(None, f)
                out.append((time.perf_counter() - t0) * 1000.0)
        done += block
    for v, _ in live:
        v.sessions.clear()


def _busy_s() -> float:
    """CPU seconds all cores spent not idle since boot (/proc/stat); 0 where there is none."""
    try:
        f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return 0.0
    return (sum(f[:8]) - f[3] - f[4]) / os.sysconf("SC_CLK_TCK")


def _own_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def wait_until_idle(max_wait: float, limit: float = 0.3) -> float:
    """Wait (up to `max_wait` s) until other processes use less than `limit` cores; return the last 1 s sample."""
    deadline = time.monotonic() + max_wait
    while True:
        b0, o0, t0 = _busy_s(), _own_s(), time.monotonic()
        time.sleep(1.0)
        busy = max(_busy_s() - b0 - (_own_s() - o0), 0.0) / (time.monotonic() - t0)
        if busy < limit or time.monotonic() >= deadline:
            return busy


def p50(v: Variant, t: int) -> float | None:
    return float(np.median(v.times[t])) if v.times.get(t) else None


# ---------------------------------------------------------------------------------------------- one model

def run_model(m: Model, work: Path, target: Path, runs: int, seconds: float, max_wait: float) -> tuple[list[Variant], dict[str, Any]]:
    d = work / m.name
    t0 = time.perf_counter()
    eb = edgebuild(m, d, target)
    manifest = eb["manifest"]
    arts = {a["step"]: a for a in (manifest["targets"][TARGET]["artifacts"] if manifest else [])}
    dist = d / "dist" / m.name

    variants: list[Variant] = []
    # FP32: the published model (vitals: edgebuild's export of it)
    if m.fp32_step:
        if m.fp32_step not in arts:
            raise SystemExit(f"{m.name}: the FP32 export failed: {eb['failed'].get(m.fp32_step)}")
        fp32 = dist / arts[m.fp32_step]["path"]
        variants.append(Variant(m.labels[m.fp32_step], fp32, baseline=True))
    else:
        fp32 = m.onnx  # type: ignore[assignment]
        variants.append(Variant("FP32 (as published)", fp32, baseline=m.reference is None))
    reference = m.reference or fp32
    if m.reference is not None:
        variants.append(Variant(m.reference_label, m.reference, baseline=True))

    # plain ONNX Runtime calls on the FP32 model
    calib = samples(m.data["calib"], m.fixed)
    for label, call in (("plain quantize_dynamic", lambda dst: plain_dynamic(fp32, dst)),
                        ("plain quantize_static", lambda dst: plain_static(fp32, dst, calib))):
        dst = d / f"{label.split()[-1]}.onnx"
        v = Variant(label, kind="plain", quantized=True)
        try:
            v.path = call(dst)
        except Exception as exc:   # the quantizer raised: that is the result
            v.status, v.reason = "failed", f"the call raised {short_error(exc)}"
            variants.append(v)
            continue
        weights, ops = quant_summary(v.path)
        grew = v.path.stat().st_size > fp32.stat().st_size
        if weights == 0 and not ops:
            v.status, v.inert = "note", "runs; quantized nothing"
            v.reason = "quantized nothing: no quantization op, no int8 weight" + (" (the file grew)" if grew else "")
        elif weights == 0:
            v.status, v.inert = "note", "runs; no int8 weight"
            v.reason = ("no weight stored as int8: it only adds " + ", ".join(f"{k} x{n}" for k, n in sorted(ops.items()))
                        + (", which quantize the float weights again at every run" if ops.get("DynamicQuantizeLinear", 0)
                           > sum(ops.get(k, 0) for k in ("ConvInteger", "MatMulInteger")) else "")
                        + (f" (the file grew, {fp32.stat().st_size} -> {v.path.stat().st_size} bytes)" if grew else ""))
        variants.append(v)

    # edgebuild's results
    for sid in m.steps:
        if sid == m.fp32_step:
            continue
        label = m.labels[sid]
        if sid in eb["failed"]:
            msg = eb["failed"][sid]
            refused = NOT_FASTER in msg
            variants.append(Variant(label, kind="edgebuild", quantized=m.steps[sid]["use"].startswith("quantize"),
                                    status="refused" if refused else "failed", reason=f"edgebuild: {msg}"))
            if sid in eb["kept"] and eb["kept"][sid] in arts:
                twin = eb["kept"][sid]
                facts, key = step_facts(manifest, twin)
                variants.append(Variant("↳ the same with `faster: false` (the model it refused)", dist / arts[twin]["path"],
                                        kind="kept", quantized=True, status="note",
                                        reason=describe_edgebuild(facts, chosen_line(eb["cache"], key))))
            continue
        facts, key = step_facts(manifest, sid)
        changed = bool(facts.get("rewrites") or (facts.get("source") or {}).get("if_inlined")
                       or facts.get("nodes_after", 0) < facts.get("nodes_before", 0))
        variants.append(Variant(label, dist / arts[sid]["path"], kind="edgebuild", status="note", rewritten=changed,
                                quantized=m.steps[sid]["use"].startswith("quantize"),
                                reason=describe_edgebuild(facts, chosen_line(eb["cache"], key))))

    # metrics against the FP32 reference, on the held-out samples; a model that does not run fails here
    test = samples(m.data["test"], m.fixed)
    ref = outputs(reference, test)
    for v in variants:
        if v.path is None or v.status == "failed":
            continue
        try:
            v.metric = metric(m.metric, ref, outputs(v.path, test))
        except Exception as exc:
            v.status = "failed"
            v.reason = (v.reason + "; " if v.reason else "") + f"does not run on the input it is used with: {short_error(exc)}"
    build_s = time.perf_counter() - t0
    idle = wait_until_idle(max_wait)
    b0, o0, w0 = _busy_s(), _own_s(), time.perf_counter()
    time_variants(variants, test[0], runs, seconds)
    background = max(_busy_s() - b0 - (_own_s() - o0), 0.0) / (time.perf_counter() - w0)
    return variants, {"edgebuild_s": eb["seconds"], "build_s": build_s, "total_s": time.perf_counter() - t0,
                      "tools": (manifest or {}).get("tools", {}), "background": background, "idle": idle}


# ---------------------------------------------------------------------------------------------- report

HEADER = ["model", "variant", "result", "size (bytes)", "p50 ms, 1 thread", "p50 ms, 2 threads", "vs FP32, 1 / 2 threads",
          "metric vs FP32"]
METRIC_NAME = {"cosine": "cosine", "decision": "decision@0.5", "argmax": "argmax agreement"}


def _ms(x: float | None) -> str:
    return "—" if x is None else f"{x:.4f}" if x < 0.1 else f"{x:.3f}" if x < 10 else f"{x:.1f}"


def _ratio(base: float | None, x: float | None) -> str:
    return "—" if not base or not x else f"{base / x:.2f}x"


def rows_for(m: Model, variants: list[Variant], notes: list[str]) -> tuple[list[list[str]], dict[str, Any]]:
    """The model's table rows (reasons go to `notes`, referenced as [n]) and, per variant, what the
    interpretation needs."""
    base = next(v for v in variants if v.baseline)
    rows = []
    verdict: dict[str, Any] = {"model": m, "variants": [], "fp32_ms": p50(base, 1)}
    for v in variants:
        ref = ""
        if v.reason:
            notes.append(f"{m.name}, {v.label.removeprefix('↳ ')}: {v.reason}")
            ref = f" [{len(notes)}]"
        meets = v.metric is not None and v.metric >= m.goal and v.status != "failed"
        if v.status == "failed":
            result = "fails"
        elif v.status == "refused":
            result = "refused: not faster"
        elif v.baseline:
            result = "reference"
        elif v.inert:
            result = v.inert
        else:
            result = "meets goal" if meets else "misses goal"
        size = str(v.path.stat().st_size) if v.path is not None and v.status != "failed" else "—"
        r1, r2 = p50(v, 1), p50(v, 2)
        s1 = p50(base, 1) / r1 if r1 else None   # type: ignore[operator]
        s2 = p50(base, 2) / r2 if r2 else None   # type: ignore[operator]
        speed = "(baseline)" if v.baseline else f"{_ratio(p50(base, 1), r1)} / {_ratio(p50(base, 2), r2)}" if r1 else "—"
        met = "—" if v.metric is None or v.status == "failed" else f"{v.metric:.4f}" + ("" if meets else " ✗")
        rows.append([m.name, v.label + ref, result, size, _ms(r1), _ms(r2), speed, met])
        verdict["variants"].append({"label": v.label, "kind": v.kind, "quantized": v.quantized, "status": v.status,
                                    "inert": v.inert.removeprefix("runs; "), "meets": meets, "s1": s1, "s2": s2,
                                    "rewritten": v.rewritten, "check": _check_ratio(v.reason)})
    return rows, verdict


def table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "|".join("---" if i < 3 else "---:" for i in range(len(HEADER))) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


FASTER = 1.10   # a ratio counts as faster beyond +10 %: the run-to-run noise of a shared 2-core VM


def _check_ratio(message: str) -> float | None:
    """quantized / FP32 latency from a step's "not faster than FP32 ...: Q ms vs F ms" message."""
    m = re.search(r"not faster than FP32 .*?: ([\d.]+) ms vs ([\d.]+) ms", message)
    return float(m[1]) / float(m[2]) if m and float(m[2]) > 0 else None


def _x(v: dict[str, Any]) -> str:
    return f"{v['s1']:.2f}x / {v['s2']:.2f}x"


def interpretation(verdicts: list[dict[str, Any]]) -> list[str]:
    """At most 5 lines written from the numbers: where edgebuild's int8 wins and the plain calls do not (or
    not), how the plain calls go wrong, what the FP32 rewrites give, where nothing beats FP32, what
    edgebuild refused."""
    # speed verdicts use 1 thread: on a 2-vCPU VM the 2-thread p50 of one model swings by tens of percent
    # from run to run (the second intra-op thread shares the host with everything else)
    def fast(v: dict[str, Any]) -> bool:
        return bool(v["s1"] and v["s1"] >= FASTER)

    def slow(v: dict[str, Any]) -> bool:
        return bool(v["s1"] and v["s1"] <= 1 / FASTER)

    def calls(vs: list[dict[str, Any]]) -> str:
        names = [v["label"].split()[-1].removeprefix("quantize_") for v in vs]
        return "both" if len(names) == 2 else names[0]

    wins, both, rewrites, nothing, lenient, unfixed = [], [], [], [], [], []
    went_wrong: set[str] = set()
    wrong: dict[str, list[str]] = {"inert": [], "fails": [], "misses": [], "slow": []}
    refused: dict[str, list[str]] = {}
    close: list[str] = []
    fp32_ms: list[float] = []
    for vd in verdicts:
        name, vs = vd["model"].name, vd["variants"]
        real = [v for v in vs if v["quantized"] and v["kind"] in ("plain", "edgebuild") and not v["inert"]
                and v["status"] not in ("failed", "refused")]
        eb_win = [v for v in real if v["kind"] == "edgebuild" and v["meets"] and fast(v)]
        plain_win = [v for v in real if v["kind"] == "plain" and v["meets"] and fast(v)]
        if eb_win and not plain_win:
            wins.append(f"{name} ({_x(max(eb_win, key=lambda v: v['s1']))})")
        elif eb_win:
            both.append(f"{name} (1 / 2 threads: plain {plain_win[0]['label'].split()[-1]} {_x(plain_win[0])}, "
                        f"edgebuild {_x(eb_win[0])})")
        rewrites += [f"{name} ({_x(v)})" for v in vs if v["kind"] == "edgebuild" and v["rewritten"] and fast(v)]
        plain = [v for v in vs if v["kind"] == "plain"]
        for key, test in (("fails", lambda v: v["status"] == "failed"), ("inert", lambda v: bool(v["inert"])),
                          ("misses", lambda v: v["status"] != "failed" and not v["inert"] and not v["meets"]),
                          ("slow", lambda v: v["status"] != "failed" and not v["inert"] and v["meets"] and slow(v))):
            hit = [v for v in plain if test(v)]
            if hit:
                wrong[key].append(f"{name} ({calls(hit)})")
                went_wrong.add(name)
        if name in went_wrong and not any(v["quantized"] and v["kind"] in ("edgebuild", "kept") and v["meets"] for v in vs):
            unfixed.append(name)
        if not any(v["meets"] and fast(v) for v in real):
            nothing.append(name)
            fp32_ms.append(vd["fp32_ms"])
            lenient += [f"{name} ({_x(v)})" for v in real if v["kind"] == "edgebuild" and v["meets"]]
        for v in vs:
            if v["status"] == "refused":
                refused.setdefault(v["label"].split()[-1], []).append(name)
                if v["check"] is not None and v["check"] < FASTER:
                    close.append(f"{v['label'].split()[-1]} on {name} ({v['check']:.2f}x FP32's time)")
    out = []
    if wins:
        out.append(f"edgebuild's int8 result is faster than FP32 (by more than {FASTER - 1:.0%} at 1 thread) and meets the "
                   f"metric goal, where neither plain call does both, on: {', '.join(wins)} (at 1 / 2 threads)."
                   + (f" On {', '.join(both)} a plain call does as well." if both else ""))
    else:
        out.append(f"On no model here is edgebuild's int8 result faster than FP32 (by more than {FASTER - 1:.0%} at 1 thread) "
                   "and accurate while the plain calls are not"
                   + (f". Int8 pays off only on {', '.join(both)}, and there a plain call is as fast and as accurate: "
                      "edgebuild adds the measured goal and the speed check, not speed." if both else "."))
    parts = [f"quantize no weight on {', '.join(wrong['inert'])}" if wrong["inert"] else "",
             f"fail on {', '.join(wrong['fails'])}" if wrong["fails"] else "",
             f"miss the metric goal on {', '.join(wrong['misses'])}" if wrong["misses"] else "",
             f"keep the metric but run more than {FASTER - 1:.0%} slower than FP32 on "
             f"{', '.join(wrong['slow'])}" if wrong["slow"] else ""]
    if any(parts):
        out.append("The plain calls " + "; ".join(p for p in parts if p) + ". edgebuild's int8 model (its row, or the ↳ row "
                   "where it refused to ship it) runs and meets the goal on "
                   + (f"all of them but {', '.join(unfixed)}" if unfixed else "every one of them")
                   + "; whether it is also faster is another matter (below).")
    if rewrites:
        out.append(f"edgebuild's `optimize` output (FP32, the same numbers) is faster than the published FP32 on: "
                   f"{', '.join(rewrites)}, from the rewrites the notes list.")
    if nothing:
        span = f"{min(fp32_ms):.3f}-{max(fp32_ms):.3f} ms" if fp32_ms else "?"
        out.append(f"No int8 model that a plain call makes or edgebuild ships beats FP32 by more than {FASTER - 1:.0%} "
                   f"while keeping the metric on {', '.join(nothing)} (FP32 p50 {span} at 1 thread: at that size the "
                   "quantize/dequantize work costs about what int8 arithmetic saves on this CPU); FP32, or edgebuild's "
                   "`optimize` output, is what to ship for them here."
                   + (f" edgebuild's own build-time check (a short 2-thread comparison) did ship int8 on {', '.join(lenient)}, "
                      f"which this loop does not find more than {FASTER - 1:.0%} faster at 1 thread." if lenient else ""))
    if refused:
        out.append("edgebuild refused its int8 result as not faster than FP32 ("
                   + "; ".join(f"{k} on {', '.join(v)}" for k, v in refused.items())
                   + "): the ↳ rows are those models; each keeps the metric but was not faster than the step's own FP32 "
                   "input in its check."
                   + (f" Some were close: {', '.join(close)}; the check asks for a measurable speed-up (at least 3 %, "
                      f"and more than the noise of its interleaved FP32/int8 timing pairs), so such a model is refused on every build "
                      f"rather than by chance." if close else ""))
    return out[:5]


def machine(tools: dict[str, str]) -> dict[str, str]:
    import onnxruntime as ort

    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    cpu = next((l.split(":", 1)[1].strip() for l in info.splitlines() if l.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": str(os.cpu_count()), "isa": ", ".join(host_features()) or "unknown",
            "onnxruntime": tools.get("onnxruntime", ort.__version__), "onnx": tools.get("onnx", "?"),
            "python": platform.python_version(), "date": datetime.date.today().isoformat()}


def write_doc(text: str, notes: list[str], interp: list[str], models: list[Model], mach: dict[str, str],
              runs: int, seconds: float, timings: dict[str, dict[str, Any]], total_s: float) -> None:
    model_lines = "\n".join(
        f"- **{m.name}** — {m.pattern}. Metric: {METRIC_NAME[m.metric]}"
        + (" on the score channels (`det[:, 4:]`)" if m.metric == "decision" else "")
        + f", goal ≥ {m.goal:g}. edgebuild steps: "
        + "; ".join(f"`{sid}`: `{json.dumps(s, separators=(', ', ': '))}`" for sid, s in m.steps.items())
        + (f"; `model.inputs`: `{json.dumps(m.inputs, separators=(', ', ': '))}`" if m.inputs and m.onnx else "")
        for m in models)
    note_lines = "\n".join(f"{i}. {n}" for i, n in enumerate(notes, 1))
    interp_lines = "\n".join(f"- {s}" for s in interp)
    time_lines = ", ".join(f"{k} {v['total_s']:.0f} s" for k, v in timings.items())
    bg = " / ".join(f"{v['background']:.2f}" for v in timings.values())
    bg_warn = ("; **enough to disturb the timings of the models where it is above 0.25: rerun on a quiet machine**"
               if any(v["background"] > 0.25 for v in timings.values()) else "")
    vnni = "" if "vnni" in mach["isa"] else "; no VNNI"
    doc = f"""# Benchmark: failure patterns — FP32 vs plain ONNX Runtime quantization vs edgebuild

Generated by [`benchmarks/patterns.py`](../benchmarks/patterns.py); rerun it to refresh this page
(`--no-doc` only prints the table):

```sh
.venv/bin/python benchmarks/patterns.py
```

Measured on {mach['date']} on {mach['cpu']}, {mach['cores']} cores ({mach['isa']}{vnni}),
onnxruntime {mach['onnxruntime']}, onnx {mach['onnx']}, Python {mach['python']}. The whole run took
{total_s:.0f} s ({time_lines}). While the variants were timed, other processes used {bg} cores on
average (per model, in the order above){bg_warn}.

## Results

{text}

✗: below the goal edgebuild was given for that model (the same bar for every variant). "vs FP32" is the
FP32 row's p50 divided by the variant's, at 1 and at 2 threads (above 1: faster). "—": nothing to
measure (the variant failed, or its step refused to ship).

{note_lines}

## What it says

{interp_lines}

## Models

{model_lines}

The pattern models are built by the tests' own builder functions (tests/steps/test_accuracy_aware.py,
tests/test_rewrite.py), in a temporary folder, with seeded standard-normal inputs: calib (32 samples,
seed 1) for calibration, eval (64, seed 2) for edgebuild's accuracy goal, test (64, seed 3) for every
metric in the table. Vitals uses its own `calib.npz` (200 windows) and `eval.npz` (500 windows) for all
three (edgebuild's goal sees the first 200 eval windows; the table, all 500).

## Method

- **FP32**: the model as published (vitals: exported by edgebuild's `export` step, opset 17). For
  wrong-shape, ONNX Runtime refuses the published model at [1, 3, 64, 64], so the reference (and the
  speed baseline) is a copy whose input dims the script sets by hand and whose output shape and
  value_info it erases — what a user has to do before anything else.
- **plain quantize_dynamic / quantize_static**: `quantize_dynamic(src, dst)` and
  `quantize_static(src, dst, reader)` from onnxruntime.quantization, every other argument at its default
  (QDQ, int8 activations and weights, per-tensor, MinMax for static), the reader feeding the calib
  samples one at a time; no pre-processing, as tutorials show them. A call that raises, a result that
  does not run on the input the model is used with, and a result with no int8 weight are reported as
  such.
- **edgebuild**: one recipe per model in the temporary folder, built by `python -m edgebuild run
  --keep-going` in a subprocess with a fresh cache, for one target: `targets/x86-64.yaml` copied as
  `{TARGET}` with this host's ISA features and 2 threads (so `auto` types follow this CPU, and the
  accuracy search's "faster than FP32" check runs with 2 threads). Quantize steps carry
  `accuracy: {{data: eval, metric: ..., min: ...}}`; edgebuild then refuses a result that is not faster
  than FP32, and the script builds the same step with `faster: false` as well so that the model it
  refused is in the table too. That check compares with the step's own input -- the FP32 model after
  the recipe's input overrides (If inlined, dims set) or after `optimize` -- so a ↳ row can be faster
  than the published FP32 and still have been refused. The notes quote the step's facts from `dist/<name>/manifest.json` and
  its `chosen:` line from its log in the cache.
- **latency**: this script's own loop, not edgebuild's: ONNX Runtime CPU provider, default graph
  optimizations, `intra_op_num_threads` 1 or 2, batch of one (the first test sample); every session is
  made first and warmed up with 30 runs, then all variants and both thread counts are timed in
  rounds of 20 runs each, interleaved (per round: 1-thread sessions first, then the 2-thread ones,
  whose pools spin for a moment after each run), until each has at least {runs} timed runs and the
  rounds have lasted {seconds:g} s (so that sub-0.1 ms models, whose speed on this VM jumps between two
  levels from one second to the next, see the same mix of both); the p50 of all of them. Timings below 0.1 ms
  mostly measure ONNX Runtime's per-call overhead. On a 2-core VM the 1-thread numbers move by about
  10 % between runs, the 2-thread ones by much more (the second intra-op thread competes with
  everything else on the host, and 2 threads are often no faster than 1): "What it says" therefore
  judges speed at 1 thread, by a margin above 10 %.
- **size**: the ONNX file in bytes.
"""
    DOC.write_text(doc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--no-doc", action="store_true", help="only print; leave docs/benchmarks-patterns.md alone")
    ap.add_argument("--models", nargs="+", help="run only these models (names as in the table)")
    ap.add_argument("--runs", type=int, default=300, help="at least this many timed runs per variant and thread count "
                                                            "(default 300)")
    ap.add_argument("--seconds", type=float, default=4.0,
                    help="and keep timing each model's variants, interleaved, for at least this long (default 4)")
    ap.add_argument("--max-wait", type=float, default=5.0,
                    help="seconds to wait for other processes to quieten before timing each model (default 5)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (models, recipes, caches, manifests)")
    args = ap.parse_args()
    logging.disable(logging.WARNING)   # onnxruntime.quantization's "please pre-process" warnings
    import onnxruntime as ort

    ort.set_default_logger_severity(3)  # and ONNX Runtime's own (initializers listed as inputs...)
    t_start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="edgebuild-patterns-"))
    try:
        target = write_target(work)
        models = make_models(work, args.models)
        if not models:
            raise SystemExit("no model selected")
        rows: list[list[str]] = []
        notes: list[str] = []
        verdicts: list[dict[str, Any]] = []
        timings: dict[str, dict[str, Any]] = {}
        tools: dict[str, str] = {}
        for m in models:
            print(f"{m.name}: building (edgebuild + plain calls), measuring ...", file=sys.stderr, flush=True)
            variants, info = run_model(m, work, target, args.runs, args.seconds, args.max_wait)
            timings[m.name] = info
            tools = info["tools"] or tools
            r, vd = rows_for(m, variants, notes)
            rows += r
            verdicts.append(vd)
            print(f"{m.name}: done in {info['total_s']:.0f} s (edgebuild {info['edgebuild_s']:.0f} s); other processes "
                  f"used {info['background']:.2f} cores while it was timed", file=sys.stderr)
        text = table(rows)
        interp = interpretation(verdicts)
        mach = machine(tools)
        total = time.perf_counter() - t_start
        print(text)
        print()
        for i, n in enumerate(notes, 1):
            print(f"{i}. {n}")
        print()
        for s in interp:
            print(f"- {s}")
        print(f"\n{mach['cpu']}, {mach['cores']} cores ({mach['isa']}), onnxruntime {mach['onnxruntime']}; "
              f"{mach['date']}; total {total:.0f} s")
        if not args.no_doc:
            write_doc(text, notes, interp, models, mach, args.runs, args.seconds, timings, total)
            print(f"wrote {DOC.relative_to(ROOT)}")
    finally:
        if args.keep:
            print(f"work folder kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
