"""Quantization benchmark: FP32, dynamic/static INT8, FP16 and INT4 variants, measured as edgebuild measures them.

Run: .venv/bin/python benchmarks/quantization.py   (from the repository root; about 4 minutes on an idle machine)

For two models -- the bundled vitals 1D-CNN (recipes/vitals) and a transformer encoder of 5.3M parameters
that this script builds itself (seeded init, random seeded inputs) -- it writes a recipe in a temporary
folder whose steps are the six variants (dynamic INT8 twice: default and
reduce_range) and whose targets are two copies of targets/x86-64.yaml
(`bench-1t` with cpu.threads 1, `bench-2t` with cpu.threads 2), with `checks:` fidelity/latency/size.
It runs `python -m edgebuild run` on it and reads every number from the published manifest (latency
p50/p95 per thread count, size, argmax agreement and cosine similarity against the FP32 export), then
measures again in further rounds (7 for vitals, 4 for the transformer; each bumps checks.latency.warmup by
one so that only the measurement nodes rerun, and rotates the order in which the variants are measured)
and reports the median latency of the rounds. The
profiles' budgets are raised so that no budget fails a check: the benchmark reports, it does not judge.
A variant whose step fails (e.g. int4 on a model without MatMul/Gemm) is dropped from a second,
fully cached run so that the others still publish, and is reported as n/a with edgebuild's message.

Prints a markdown table and writes docs/benchmarks.md (table, machine, tool versions, date);
`--no-doc` only prints. Before each round it waits (up to --max-wait seconds) for the CPUs to be idle, and
it drops (and repeats) a round during which other processes used more than 0.25 cores: on a shared 2-core
VM the numbers still vary by 10-20 % between runs.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
VITALS = ROOT / "recipes" / "vitals"
DOC = ROOT / "docs" / "benchmarks.md"

# step id -> (label, step definition)
VARIANTS = {
    "fp32": ("FP32", {"use": "export", "with": {"opset": 17}}),
    "int8": ("dynamic INT8", {"use": "quantize-dynamic", "from": "fp32"}),
    "int8rr": ("dynamic INT8, reduce_range", {"use": "quantize-dynamic", "from": "fp32", "with": {"reduce_range": True}}),
    "qdq": ("static INT8 (QDQ)", {"use": "quantize-static", "from": "fp32", "with": {"data": "calib", "method": "minmax"}}),
    "half": ("FP16", {"use": "fp16", "from": "fp32"}),
    "int4": ("INT4 (weight-only)", {"use": "int4", "from": "fp32"}),
}
TARGETS = {"bench-1t": 1, "bench-2t": 2}

# The transformer: written into the work folder as the model's factory file.
TRANSFORMER_PY = '''"""Benchmark model: a transformer encoder classifier (written by benchmarks/quantization.py).

Input ``x`` float32 [batch, 64, 64] (64 tokens of 64 features); output ``logits`` float32 [batch, 10].
Linear(64->256) + learned positions -> 4 x TransformerEncoderLayer(d_model 256, 4 heads, FF 2048, ReLU)
-> mean over tokens -> LayerNorm -> Linear(256->10).
"""

import torch
from torch import nn

SEQ, FEATURES, D_MODEL, HEADS, FF, LAYERS, CLASSES = 64, 64, 256, 4, 2048, 4, 10


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(FEATURES, D_MODEL)
        self.pos = nn.Parameter(torch.randn(1, SEQ, D_MODEL) * 0.02)
        layer = nn.TransformerEncoderLayer(D_MODEL, HEADS, FF, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(D_MODEL)
        self.head = nn.Linear(D_MODEL, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(self.proj(x) + self.pos)
        return self.head(self.norm(h.mean(dim=1)))


def build() -> nn.Module:
    return Encoder().eval()
'''


# ---------------------------------------------------------------------------------------------- models

def _load(path: Path, name: str) -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def vitals_model(work: Path) -> dict[str, Any]:
    params = sum(p.numel() for p in _load(VITALS / "model.py", "bench_vitals").build().parameters())
    return {"name": "vitals", "title": f"1D-CNN, {params:,} parameters, input [1, 1, 256] (recipes/vitals)",
            "factory": f"{VITALS / 'model.py'}:build", "weights": str(VITALS / "weights.pt"),
            "inputs": {"ecg": {"shape": ["batch", 1, 256], "dtype": "float32"}},
            "calib": str(VITALS / "calib.npz"), "eval": str(VITALS / "eval.npz"), "params": params,
            "rounds": 7}   # tens of microseconds per inference: noisier, and each round takes only seconds


def transformer_model(work: Path) -> dict[str, Any]:
    """Factory file, seeded weights and seeded calib/eval sets (labels = the FP32 model's own argmax)."""
    import numpy as np
    import torch

    d = work / "transformer"
    d.mkdir()
    (d / "model.py").write_text(TRANSFORMER_PY)
    mod = _load(d / "model.py", "bench_transformer")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = mod.build()
    # nn.TransformerEncoder deep-copies one layer: give every layer its own weights (identical initializers
    # would be deduplicated by the exporter and make the model look 4x smaller than it is)
    with torch.no_grad():
        for module in net.modules():
            for name, p in module.named_parameters(recurse=False):
                if isinstance(module, torch.nn.LayerNorm):
                    p.normal_(1.0 if name == "weight" else 0.0, 0.02)
                elif p.dim() > 1:
                    torch.nn.init.xavier_uniform_(p)
                else:
                    p.normal_(0.0, 0.02)
    torch.save(net.state_dict(), d / "weights.pt")
    rng = np.random.default_rng(1234)
    calib = rng.standard_normal((32, mod.SEQ, mod.FEATURES)).astype(np.float32)
    ev = rng.standard_normal((64, mod.SEQ, mod.FEATURES)).astype(np.float32)
    with torch.no_grad():
        labels = net(torch.from_numpy(ev)).argmax(-1).numpy().astype(np.int64)
    torch.set_num_threads(threads)
    np.savez(d / "calib.npz", x=calib)
    np.savez(d / "eval.npz", x=ev, labels=labels)
    params = sum(p.numel() for p in net.parameters())
    return {"name": "transformer", "title": f"transformer encoder, {params / 1e6:.2f}M parameters (d_model 256, 4 layers, "
                                            "4 heads, FF 2048), input [1, 64, 64]",
            "factory": f"{d / 'model.py'}:build", "weights": str(d / "weights.pt"),
            "inputs": {"x": {"shape": ["batch", mod.SEQ, mod.FEATURES], "dtype": "float32"}},
            "calib": str(d / "calib.npz"), "eval": str(d / "eval.npz"), "params": params, "rounds": 4}


# ---------------------------------------------------------------------------------------------- recipes

def write_targets(work: Path) -> None:
    """bench-1t / bench-2t: targets/x86-64.yaml with 1 and 2 threads and budgets no measurement reaches."""
    base = (ROOT / "targets" / "x86-64.yaml").read_text()
    for name, threads in TARGETS.items():
        text = base.replace("name: x86-64", f"name: {name}")
        text = re.sub(r"(?m)^  threads: \d+", f"  threads: {threads}", text)
        text = re.sub(r"(?m)^  (model_size_mb|latency_p95_ms|memory_mb): \d+", r"  \1: 1000000", text)
        assert f"threads: {threads}" in text and "1000000" in text, "targets/x86-64.yaml changed shape"
        (work / f"{name}.yaml").write_text(text)


def write_recipe(work: Path, m: dict[str, Any], variants: list[str], rnd: int = 0) -> Path:
    """The model's recipe; round `rnd` > 0 sets checks.latency.warmup to 10 + rnd, which changes the measurement
    nodes' cache keys (so edgebuild measures again) and nothing else (the variants stay cached). The ship lists
    are rotated by `rnd`, so that no variant is always measured first (edgebuild measures in ship order)."""
    import yaml

    k = rnd % len(variants)
    order = variants[k:] + variants[:k]

    recipe = {
        "edgebuild": 1, "name": f"bench-{m['name']}",
        "model": {"pytorch": {"factory": m["factory"], "weights": m["weights"]}, "inputs": m["inputs"]},
        "data": {"calib": m["calib"], "eval": m["eval"]},
        "targets": [str(work / f"{t}.yaml") for t in TARGETS],
        "steps": {s: VARIANTS[s][1] for s in variants},
        "ship": {t: list(order) for t in TARGETS},
        "checks": {"fidelity": {"data": "eval"}, "latency": {"warmup": 10 + rnd} if rnd else {}, "size": {}},
    }
    path = work / f"{m['name']}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def edgebuild_run(recipe: Path, cache: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "edgebuild", "run", str(recipe), "--cache", str(cache), "--out", str(out),
                           "--keep-going"], cwd=recipe.parent, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))


STEP_FAILED = re.compile(r"error: step '([^']+)' \([^)]*\) failed: (.*)")


DISTURBED = 0.25   # cores used by other processes during a round above which its timings are not kept


def build_and_measure(work: Path, m: dict[str, Any], rounds: int, max_wait: float, budget: float) -> dict[str, Any]:
    """Build and measure (round 1), then measure again until `rounds` rounds ran undisturbed by other processes
    (or `budget` seconds have passed, or 3 x `rounds` rounds ran). Returns {manifests: [the kept rounds'],
    failed: {step: message}, rounds_run, background: the most other processes used in a kept round, seconds}."""
    cache, out = work / "cache", work / "dist"
    manifest = out / f"bench-{m['name']}" / "manifest.json"
    variants = list(VARIANTS)
    failed: dict[str, str] = {}
    t_start, attempts = time.perf_counter(), []
    for rnd in range(3 * rounds):
        idle = wait_until_idle(max_wait)
        t0, cpu0, kids0 = time.perf_counter(), _cpu_busy_s(), _children_cpu_s()
        r = edgebuild_run(write_recipe(work, m, variants, rnd), cache, out)
        if rnd == 0:
            for sid, msg in STEP_FAILED.findall(r.stderr):
                failed[sid.split("@")[0].removeprefix("check:")] = msg.strip()
        if r.returncode != 0 and rnd == 0 and failed:
            if "fp32" in failed:
                raise SystemExit(f"the FP32 export of {m['name']} failed: {failed['fp32']}")
            # a target with a failed artifact is not published: publish the rest from the cache (nothing re-runs)
            variants = [v for v in variants if v not in failed]
            r = edgebuild_run(write_recipe(work, m, variants, rnd), cache, out)
        if r.returncode != 0:
            raise SystemExit(f"edgebuild failed on {m['name']} in measurement round {rnd + 1}:\n{r.stdout}\n{r.stderr}")
        wall = time.perf_counter() - t0
        bg = max((_cpu_busy_s() - cpu0) - (_children_cpu_s() - kids0), 0.0) / wall
        attempts.append({"manifest": json.loads(manifest.read_text()), "background": bg, "idle": idle})
        clean = [a for a in attempts if a["background"] <= DISTURBED]
        if bg > DISTURBED:
            print(f"  {m['name']}: round {rnd + 1} disturbed (other processes used {bg:.2f} cores): not kept",
                  file=sys.stderr)
        if len(clean) >= rounds or time.perf_counter() - t_start > budget:
            break
    kept = clean if clean else sorted(attempts, key=lambda a: a["background"])[:rounds]
    return {"manifests": [a["manifest"] for a in kept], "failed": failed, "rounds_run": len(attempts),
            "background": max(a["background"] for a in kept), "seconds": time.perf_counter() - t_start}


# ---------------------------------------------------------------------------------------------- machine load

def _cpu_busy_s() -> float:
    """CPU seconds all cores spent not idle since boot (/proc/stat)."""
    f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(f[:8]) - f[3] - f[4]) / os.sysconf("SC_CLK_TCK")


def _children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def wait_until_idle(max_wait: float, limit: float = 0.25) -> float:
    """Wait until other processes use less than `limit` cores (sampled over 3 s); return the last sample."""
    deadline = time.monotonic() + max_wait
    while True:
        b0, t0 = _cpu_busy_s(), time.monotonic()
        time.sleep(3.0)
        busy = (_cpu_busy_s() - b0) / (time.monotonic() - t0)
        if busy < limit or time.monotonic() >= deadline:
            return busy
        print(f"  waiting for an idle machine: other processes use {busy:.1f} cores", file=sys.stderr)
        time.sleep(2.0)


# ---------------------------------------------------------------------------------------------- report

def rows_for(m: dict[str, Any], res: dict[str, Any], notes: list[str]) -> tuple[list[list[str]], dict[str, Any]]:
    """Table rows of one model; failures are appended to `notes` and referenced as [n]. Also returns, per
    variant, (its speed-up over FP32 at 1 thread, whether its 1-thread p50 range overlaps FP32's).

    Latencies are the median over the measurement rounds of each round's p50 (p95). The speed-up compares the
    lowest p50 of the rounds (the least disturbed one: interference only adds time). Fidelity comes from the
    first round (it does not depend on timing)."""
    meas: dict[str, dict[str, list[dict[str, Any]]]] = {}     # step -> target -> measurements per round
    for manifest in res["manifests"]:
        for t in TARGETS:
            for a in manifest["targets"].get(t, {}).get("artifacts", []):
                meas.setdefault(a["step"], {}).setdefault(t, []).append(a["checks"]["measurements"])

    def lat(sid: str, t: str, q: str) -> float:
        return statistics.median(x["latency_ms"][q] for x in meas[sid][t])

    base_p50s = [x["latency_ms"]["p50"] for x in meas["fp32"]["bench-1t"]]
    base = min(base_p50s)
    rows: list[list[str]] = []
    summary: dict[str, tuple[float, bool]] = {}
    for sid, (label, _) in VARIANTS.items():
        if sid not in meas:
            reason = res["failed"].get(sid, "not published")
            notes.append(f"{m['name']} {label}: the `{VARIANTS[sid][1]['use']}` step failed: {reason}")
            rows.append([m["name"], f"{label} [{len(notes)}]"] + ["n/a"] * (len(HEADER) - 2))
            continue
        one, fid = meas[sid]["bench-1t"][0], meas[sid]["bench-1t"][0]["fidelity"]
        p50s = [x["latency_ms"]["p50"] for x in meas[sid]["bench-1t"]]
        speed = base / min(p50s)
        summary[sid] = (speed, min(p50s) <= max(base_p50s) and max(p50s) >= min(base_p50s))
        cell = "(baseline)" if sid == "fp32" else _speed(speed) + ("" if _differs(summary[sid]) else " (within noise)")
        rows.append([m["name"], label, _size(one["size_mb"]),
                     f"{_ms(lat(sid, 'bench-1t', 'p50'))} / {_ms(lat(sid, 'bench-1t', 'p95'))}",
                     f"{_ms(min(p50s))}–{_ms(max(p50s))}",
                     f"{_ms(lat(sid, 'bench-2t', 'p50'))} / {_ms(lat(sid, 'bench-2t', 'p95'))}",
                     cell,
                     f"{fid.get('argmax_agreement', float('nan')):.3f}", f"{fid['cosine']:.4f}"])
    return rows, summary


def summary_line(name: str, speed: dict[str, tuple[float, bool]]) -> str:
    """'vitals at 1 thread vs FP32: dynamic INT8 2.61x slower; ...; no measurable difference: FP16, INT4'.

    A variant differs from FP32 when its best round is at least 10 % apart from FP32's and the p50s of its
    rounds do not overlap FP32's (on this VM a sub-0.1 ms p50 can double from one second to the next)."""
    others = [s for s in speed if s != "fp32"]
    apart = [f"{VARIANTS[s][0]} {_speed(speed[s][0])}" for s in others if _differs(speed[s])]
    same = [VARIANTS[s][0] for s in others if not _differs(speed[s])]
    out = f"{name} at 1 thread vs FP32: " + ("; ".join(apart) if apart else "no variant differs measurably")
    if same:
        out += f"; no measurable difference (within 10 %, or p50 ranges overlapping FP32's): {', '.join(same)}"
    return out


def _differs(speed: tuple[float, bool]) -> bool:
    x, overlap = speed
    return abs(x - 1) >= 0.1 and not overlap


def _speed(x: float) -> str:
    return f"{x:.2f}x faster" if x >= 1 else f"{1 / x:.2f}x slower"


def _ms(v: float) -> str:
    return f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 10 else f"{v:.1f}"


def _size(mb: float) -> str:
    return f"{mb * 1000:.1f} kB" if mb < 1 else f"{mb:.2f} MB"


HEADER = ["model", "variant", "size", "p50 / p95 ms, 1 thread", "1-thread p50 range", "p50 / p95 ms, 2 threads",
          "vs FP32 (best-round p50, 1 thread)", "argmax agreement", "cosine vs FP32"]


def table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "|".join("---" if i < 2 else "---:" for i in range(len(HEADER))) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def machine(tools: dict[str, str]) -> dict[str, str]:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    cpu = next((l.split(":", 1)[1].strip() for l in info.splitlines() if l.startswith("model name")), platform.processor())
    flags = next((l.split(":", 1)[1].split() for l in info.splitlines() if l.startswith("flags")), [])
    isa = [f for f in ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx_vnni", "avx512_fp16", "amx_int8") if f in flags]
    return {"cpu": cpu, "cores": str(os.cpu_count()), "isa": ", ".join(isa) or "unknown",
            "python": platform.python_version(), "onnxruntime": tools.get("onnxruntime", "?"), "torch": tools.get("torch", "?"),
            "onnx": tools.get("onnx", "?"), "date": datetime.date.today().isoformat()}


def write_doc(path: Path, models: list[dict[str, Any]], text: str, notes: list[str], mach: dict[str, str],
              runs: dict[str, dict[str, Any]], summaries: list[str]) -> None:
    model_lines = "\n".join(f"- **{m['name']}**: {m['title']}" for m in models)
    rounds = ", ".join(f"{len(r['manifests'])} for {name}" for name, r in runs.items())
    run_lines = "\n".join(
        f"- {name}: {len(r['manifests'])} rounds kept of {r['rounds_run']} run"
        + (f" ({r['rounds_run'] - len(r['manifests'])} dropped: other processes used more than {DISTURBED} cores during them)"
           if r["rounds_run"] > len(r["manifests"]) else "")
        + f"; other processes used at most {r['background']:.2f} cores during a kept round; {r['seconds']:.0f} s in all"
        + (" -- **not enough undisturbed rounds: these timings are not reliable, the 2-thread ones least**"
           if r["background"] > DISTURBED else "")
        for name, r in runs.items())
    note_lines = "".join(f"\n[{i}] {n}  " for i, n in enumerate(notes, 1)) + ("\n" if notes else "")
    vnni = "vnni" in mach["isa"]
    isa_note = ("" if vnni else f"""
- **This host has AVX2 but no VNNI** ({mach['isa']}), while `targets/x86-64.yaml` describes a CPU with
  AVX-512 VNNI. Without VNNI, ONNX Runtime's u8 x s8 kernels multiply-add pairs into saturating 16-bit
  sums, which costs fidelity on models with large activations: that is what `reduce_range: true` (7-bit
  weights) avoids, and why the table has a `reduce_range` row. Static QDQ runs on the same kernels and
  drifts as much on the transformer; `quantize-static` has no `reduce_range` parameter, but in a side check
  ONNX Runtime's own `quantize_static(..., reduce_range=True)` on this model raised the cosine from 0.98
  to 0.998. On a VNNI CPU none of this applies.""")
    doc = f"""# Quantization benchmark

What edgebuild's precision steps do to latency, size and fidelity on two models, measured the way
edgebuild measures every shipped artifact (`checks:` in a recipe; see `edgebuild/checks/measure.py`).
Generated by [`benchmarks/quantization.py`](../benchmarks/quantization.py); rerun it to refresh this page:

```sh
.venv/bin/python benchmarks/quantization.py      # ~4 minutes on an idle machine; --no-doc only prints the table
```

## Results

{text}
{note_lines}
{chr(10).join(f"- {s}" for s in summaries)}

Measured on {mach['date']} on {mach['cpu']}, {mach['cores']} cores ({mach['isa']}), Python {mach['python']},
onnxruntime {mach['onnxruntime']}, torch {mach['torch']}, onnx {mach['onnx']}.

**Expect ±10–20 % between runs** of this benchmark: this is a shared 2-core VM. edgebuild runs every
measurement alone, and the script waits for idle CPUs before each measurement round, keeps only rounds
during which other processes used at most {DISTURBED} cores (it measures again otherwise), but other
tenants of the host can still take CPU time unseen (the 2-thread column suffers most). Sub-0.1 ms
timings (vitals) are noisier still: on this VM one measurement's p50 lands either near the model's best
time or up to about twice it, from one second to the next, whatever the variant (the "1-thread p50
range" column gives the lowest and highest p50 of the kept rounds). Hence several rounds per model,
medians for p50/p95, the best round for the comparison with FP32, and no meaning in differences under
~10 %. During this run:

{run_lines}

## Reading the table

- **vitals** runs in tens of microseconds, so ONNX Runtime's per-inference overhead (session run, input
  and output copies, waking a thread pool at 2 threads) is a large share of it and a second thread does
  not help. Dynamic INT8 adds nodes around every layer: it quantizes each activation at run time
  (DynamicQuantizeLinear, then ConvInteger/MatMulInteger, then Cast, Mul and Add to rescale: the 12-node
  FP32 graph becomes 40 nodes), which costs more than INT8 arithmetic saves on layers this small. Static QDQ
  fixes the activation scales at build time and ONNX Runtime fuses the Q/DQ pairs into integer kernels.
  INT4 only reaches the two Linear layers of the head (the convolutions stay FP32), hence its small
  size gain.
- **transformer** time goes mostly to its weight MatMuls (attention projections and the 256 -> 2048 -> 256
  feed-forward of each layer), which is where INT8 kernels pay off, and to the shape plumbing the
  TorchScript exporter writes around multi-head attention (Shape/Gather/Reshape/Transpose nodes). INT4
  (MatMulNBits: weights unpacked block by block, activations in FP32 unless `accuracy_level` says
  otherwise) is above all a size reduction on an x86 CPU.
- The transformer is untrained and its inputs are random, so its logits have small margins: argmax
  agreement is a strict measure here (a few swapped near-ties cost several points), and the cosine
  similarity of the logits says more about how far a variant drifts. For vitals, a trained model with
  clear margins, agreement above 0.99 is the normal outcome.{isa_note}
- FP16 halves the file. ONNX Runtime's CPU provider has no FP16 kernels for most of these ops on x86
  and runs them in FP32 behind inserted Casts, so expect FP32 speed at best; `fp16` is meant for GPUs and
  NPUs (jetson-* targets).

## Models

{model_lines}

The transformer is built by the benchmark itself in its temporary folder: a factory file
(`nn.TransformerEncoder`, post-norm, ReLU), weights from a seeded init (`torch.manual_seed(0)`, each
layer initialized separately, saved with `torch.save(state_dict)`), calibration and evaluation sets of
seeded standard-normal inputs (32 and 64 samples), and eval labels that are the FP32 model's own argmax.
The vitals model is used as it is, by absolute path: `recipes/vitals/model.py:build`, `weights.pt`,
`calib.npz` (200 windows) and `eval.npz` (500 labelled windows).

## Method

For each model the script writes a recipe with six steps -- `fp32` (`export`, opset 17), `int8`
(`quantize-dynamic`, defaults), `int8rr` (`quantize-dynamic`, `reduce_range: true`), `qdq`
(`quantize-static` on `calib`: minmax, QDQ, per-tensor, uint8 activations, int8 weights), `half` (`fp16`)
and `int4` (`int4`: block 32, symmetric) -- ships all of them to two targets, and runs
`python -m edgebuild run --keep-going` with a fresh cache. The targets are copies of
`targets/x86-64.yaml` named `bench-1t` and `bench-2t` with `cpu.threads` 1 and 2 and budgets that no
artifact reaches (the benchmark reports; it does not judge). `checks: {{fidelity: {{data: eval}},
latency: {{}}, size: {{}}}}` makes edgebuild measure each artifact once per target, and every number above
is read from the published manifest (`targets.<t>.artifacts[i].checks.measurements`):

- latency: single inferences of the first eval sample (batch 1) on ONNX Runtime's CPU provider with the
  target's intra-op threads (capped at this host's cores), after 10 warm-up runs, at least 100 timed runs
  and then more until one second has passed or 2,000 runs are taken; p50 / p95 in milliseconds. The
  table gives the median, over the rounds ({rounds}), of each round's p50 and p95: round 1 is the recipe's
  `latency: {{}}`, and each further round sets `checks.latency.warmup` one higher (11, 12, ...), which changes
  the measurement nodes' cache keys so edgebuild measures again while the built variants stay cached, and
  rotates the ship lists so that each variant takes its turn at being measured first;
- vs FP32: the lowest p50 of FP32's rounds at 1 thread divided by the variant's lowest (the least
  disturbed round of each: on a shared machine interference only ever adds time, and the median of a
  few rounds can still carry it);
- size: the ONNX file;
- argmax agreement and cosine similarity: the variant's outputs against the FP32 export's on the whole
  eval set (cosine over all logits together), from the 1-thread measurement.

A variant whose step fails (for example `int4` on a model with no MatMul or Gemm) does not stop the
others: the run keeps going, then a second run without it publishes the rest from the cache (edgebuild
publishes no target with a failed artifact), and the table shows n/a with edgebuild's error message.
"""
    path.write_text(doc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--no-doc", action="store_true", help="only print the table; leave docs/benchmarks.md alone")
    ap.add_argument("--max-wait", type=float, default=60.0, help="seconds to wait for an idle machine before each round")
    ap.add_argument("--budget", type=float, default=300.0,
                    help="seconds per model after which no further round starts, clean or not")
    ap.add_argument("--models", nargs="+", default=["vitals", "transformer"], choices=["vitals", "transformer"])
    ap.add_argument("--rounds", type=int, help="measurement rounds per model (latency: median of the rounds); "
                                                "default 7 for vitals, 4 for the transformer")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (recipes, models, caches, manifests)")
    args = ap.parse_args()
    t_start = time.perf_counter()
    rows: list[list[str]] = []
    notes: list[str] = []
    models, runs, summaries, tools = [], {}, [], {}
    with tempfile.TemporaryDirectory(prefix="edgebuild-bench-") as tmp:
        work = Path(tempfile.mkdtemp(prefix="edgebuild-bench-")) if args.keep else Path(tmp)
        if args.keep:
            print(f"work folder: {work}", file=sys.stderr)
        for name in args.models:
            mwork = work / name
            mwork.mkdir()
            write_targets(mwork)
            m = vitals_model(mwork) if name == "vitals" else transformer_model(mwork)
            models.append(m)
            rounds = args.rounds or m["rounds"]
            print(f"{name}: building {len(VARIANTS)} variants, measuring them at {len(TARGETS)} thread counts "
                  f"x {rounds} rounds ...", file=sys.stderr)
            res = build_and_measure(mwork, m, rounds, args.max_wait, args.budget)
            print(f"{name}: done in {res['seconds']:.0f} s; kept {len(res['manifests'])} of {res['rounds_run']} rounds"
                  + (" (not enough undisturbed ones: the timings are not reliable, rerun when the machine is quieter)"
                     if res["background"] > DISTURBED else ""), file=sys.stderr)
            runs[name] = res
            tools = res["manifests"][0]["tools"]
            r, speed = rows_for(m, res, notes)
            rows += r
            summaries.append(summary_line(name, speed))
    text = table(rows)
    mach = machine(tools)
    print(text)
    for i, n in enumerate(notes, 1):
        print(f"[{i}] {n}")
    print()
    for s in summaries:
        print(s)
    print(f"\n{mach['cpu']}, {mach['cores']} cores, Python {mach['python']}, onnxruntime {mach['onnxruntime']}, "
          f"torch {mach['torch']}; {mach['date']}; total {time.perf_counter() - t_start:.0f} s")
    if not args.no_doc:
        write_doc(DOC, models, text, notes, mach, runs, summaries)
        print(f"wrote {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
