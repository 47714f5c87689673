"""Running edgebuild on a corpus model as a new user would: recipes written next to the data, `edgebuild run` in a
subprocess, results read from what it prints, dist/<name>/manifest.json, build-log.json and `edgebuild plan`.

Two recipes per model, in benchmarks/.corpus/work/<model>/:

- `choose.yaml`: optimize, then dynamic and static INT8 with the model's task-metric goal (`accuracy:`), shipped
  to x86-avx2-1t (AVX2, no VNNI, 1 thread: x86-avx2-1t.yaml) with `best: [opt, dyn, qdq], by: latency` and `checks:` (the same task metric as fidelity goal, a
  latency limit that never fails: the point is the choice). Its outcome is the variant edgebuild ships.
- `steps.yaml`: every step kind alone on the model (optimize, quantize-dynamic, quantize-static, fp16, int4 for
  x86-avx2-1t, wasm-bundle for browser-wasm), no goals, `--keep-going`; each built artifact is then checked here
  (onnx.checker.check_model, an onnxruntime session, the task metric on the evaluation samples). When the run
  stops before every step had its chance (a plan-time error, a crash), each step missing a result is run again
  in a recipe of its own, so one failure does not hide the others.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import corpus

ROOT = corpus.BENCH.parent
_SCRIPT = Path(sys.executable).parent / "edgebuild"
EDGEBUILD = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "edgebuild"]   # .venv/bin/edgebuild
STEP_KINDS = {"opt": "optimize", "dyn": "quantize-dynamic", "qdq": "quantize-static", "fp16": "fp16", "int4": "int4",
              "web": "wasm-bundle"}
LATENCY_CHECK = {"p95_ms": 100000, "warmup": 3, "runs": 20}
# the profile every x86 recipe ships to: AVX2 without VNNI like this host, one inference thread (the goal is the speed-up
# at 1 thread, and one thread times honestly on a 2-core host with a step or another build beside it)
TARGET_FILE = corpus.BENCH / "real" / "x86-avx2-1t.yaml"
TARGET = "x86-avx2-1t"


@dataclass
class Run:
    recipe: Path
    rc: int
    seconds: float
    stdout: str
    stderr: str
    summary: dict[str, Any] | None
    build_log: dict[str, Any] | None
    manifest: dict[str, Any] | None
    failures: dict[str, str] = field(default_factory=dict)     # node -> first line of its error
    bug: str | None = None                                     # traceback head when edgebuild crashed (exit 2)


def _rel(p: Path, start: Path) -> str:
    return os.path.relpath(p, start)


def model_block(m: corpus.Model, folder: Path) -> dict[str, Any]:
    block: dict[str, Any] = {"onnx": _rel(m.path, folder)}
    if m.inputs:
        block["inputs"] = m.inputs
    return block


def goal(m: corpus.Model) -> dict[str, Any]:
    return {"data": "eval", "metric": m.metric, "min": m.goal}


def write_metric(m: corpus.Model, folder: Path) -> None:
    if not m.metric_file:
        return
    src = corpus.BENCH / "real" / "metrics" / m.metric_file
    dest = folder / "metric.py"
    if not dest.is_file() or dest.read_bytes() != src.read_bytes():
        shutil.copyfile(src, dest)


def _dump(path: Path, recipe: dict[str, Any], comment: str) -> None:
    text = f"# {comment}\n" + yaml.safe_dump(recipe, sort_keys=False, default_flow_style=None, width=120, allow_unicode=True)
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)


def write_choose(m: corpus.Model, folder: Path) -> Path:
    recipe = {
        "edgebuild": 1, "name": m.id, "model": model_block(m, folder),
        "data": {"calib": "calib.npz", "eval": "eval.npz"}, "targets": [_rel(TARGET_FILE, folder)],
        "steps": {
            "opt": {"use": "optimize"},
            "dyn": {"use": "quantize-dynamic", "from": "opt", "with": {"accuracy": goal(m)}},
            "qdq": {"use": "quantize-static", "from": "opt", "with": {"data": "calib", "accuracy": goal(m)}},
        },
        "ship": {TARGET: {"best": ["opt", "dyn", "qdq"], "by": "latency"}},
        "checks": {"fidelity": goal(m), "latency": dict(LATENCY_CHECK)},
    }
    path = folder / "choose.yaml"
    _dump(path, recipe, f"{m.id}: the fastest of FP32 (optimized), dynamic INT8 and static INT8 that keeps the task "
                        f"({m.metric} >= {m.goal}); written by benchmarks/real_models.py")
    return path


def write_steps(m: corpus.Model, folder: Path, only: list[str] | None = None) -> Path:
    steps = {"opt": {"use": "optimize"}, "dyn": {"use": "quantize-dynamic"},
             "qdq": {"use": "quantize-static", "with": {"data": "calib"}}, "fp16": {"use": "fp16"}, "int4": {"use": "int4"},
             "web": {"use": "wasm-bundle"}}
    ids = only or list(steps)
    ship: dict[str, Any] = {}
    x86 = [s for s in ids if s != "web"]
    if x86:
        ship[TARGET] = x86
    if "web" in ids:
        ship["browser-wasm"] = ["web"]
    recipe = {
        "edgebuild": 1, "name": f"{m.id}-steps" + (f"-{ids[0]}" if only else ""), "model": model_block(m, folder),
        "data": {"calib": "calib.npz", "eval": "eval.npz"},
        "targets": [_rel(TARGET_FILE, folder) if t == TARGET else t for t in ship],
        "steps": {s: steps[s] for s in ids}, "ship": ship,
    }
    path = folder / (f"steps-{ids[0]}.yaml" if only else "steps.yaml")
    _dump(path, recipe, f"{m.id}: every step kind alone on the model; written by benchmarks/real_models.py")
    return path


# -- running -------------------------------------------------------------------------------------------

_FAIL = re.compile(r"^\S*:\d+:\d+: (?:error|warning): step '([^']+)' \(([^)]+)\) failed: (.*)$")


def run(recipe: Path, cache: Path, keep_going: bool = True, timeout: float = 3600, jobs: int | None = None) -> Run:
    folder = recipe.parent
    cmd = EDGEBUILD + ["run", recipe.name, "--json", "--cache", str(cache), "--out", "dist"]
    if keep_going:
        cmd.append("--keep-going")
    if jobs:
        cmd += ["--jobs", str(jobs)]
    env = dict(os.environ)
    t0 = time.perf_counter()
    try:
        res = subprocess.run(cmd, cwd=folder, capture_output=True, text=True, timeout=timeout, env=env)
        rc, out, err = res.returncode, res.stdout, res.stderr
    except subprocess.TimeoutExpired as exc:
        rc, out, err = -9, exc.stdout or "", (exc.stderr or "") + f"\n(timed out after {timeout:.0f} s)"
        out = out.decode() if isinstance(out, bytes) else out
        err = err.decode() if isinstance(err, bytes) else err
    seconds = time.perf_counter() - t0
    name = _recipe_name(recipe)
    dist = folder / "dist" / name
    summary = None
    try:
        summary = json.loads(out) if out.strip() else None
    except json.JSONDecodeError:
        summary = None
    r = Run(recipe, rc, seconds, out, err, summary, _read_json(dist / "build-log.json"),
            _read_json(dist / "manifest.json"))
    for line in err.splitlines():
        mm = _FAIL.match(line.strip())
        if mm:
            r.failures[mm.group(1)] = mm.group(3).strip()
    if rc == 2 or "hit a bug in edgebuild" in err or "edgebuild: internal error" in err:
        r.bug = _traceback_head(err)   # a traceback inside a step's captured log is the step's failure, not a crash
    return r


def _recipe_name(recipe: Path) -> str:
    return str(yaml.safe_load(recipe.read_text())["name"])


def _read_json(p: Path) -> dict[str, Any] | None:
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _traceback_head(err: str) -> str:
    """The line that says what crashed, the last frames of the traceback and the exception line."""
    lines = [x.rstrip() for x in err.splitlines() if x.strip()]
    starts = [k for k, x in enumerate(lines) if "Traceback (most recent call last)" in x or "traceback:" in x]
    if not starts:
        return "\n".join(lines[-6:])
    i = starts[-1]
    end = next((k for k in range(i + 1, len(lines)) if lines[k].startswith("edgebuild: internal error")), len(lines))
    body = lines[i + 1:end]
    frames = [x.strip() for x in body if x.strip().startswith("File ")]
    exc = next((x.strip() for x in reversed(body) if not x.strip().startswith("File ") and not x.startswith("    ")), "")
    return "\n".join([lines[i]] + frames[-3:] + ([exc] if exc else []))


def plan_keys(recipe: Path, cache: Path) -> dict[str, dict[str, Any]]:
    """node id -> {key, status, use, target} from `edgebuild plan --format json`."""
    res = subprocess.run(EDGEBUILD + ["plan", recipe.name, "--format", "json", "--cache", str(cache)], cwd=recipe.parent,
                         capture_output=True, text=True)
    try:
        plan = json.loads(res.stdout)
    except json.JSONDecodeError:
        return {}
    return {n["node"]: n for n in plan.get("nodes", [])}


def entry(cache: Path, key: str) -> Path:
    return cache / "objects" / key[:2] / key


def step_log(cache: Path, key: str) -> str:
    try:
        return (entry(cache, key) / "log.txt").read_text(errors="replace")
    except OSError:
        return ""


def classify(message: str) -> str:
    """What kind of failure a step's message is: a refusal by design, or something to fix."""
    if message.startswith("TRACEBACK") or "hit a bug in edgebuild" in message:
        return "TRACEBACK"
    if "does not pass the ONNX checker" in message:
        return "INVALID MODEL (caught)"
    if "quantizer failed" in message or "failed: ValueError" in message:
        return "tool error"
    return "refused"


def first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""
