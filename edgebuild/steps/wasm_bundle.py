"""wasm-bundle: a folder a static web server serves as is, running the model with onnxruntime-web (WebAssembly).

The folder holds
- `model.onnx`, the input model;
- the onnxruntime-web files of the plain WebAssembly execution provider only, at the version the
  target pins (`runtimes: {onnxruntime-web: "1.30"}` -> the newest 1.30.x on npm):
  `ort.wasm.bundle.min.mjs` (the JS API with the Emscripten glue inside) and
  `ort-wasm-simd-threaded.wasm` -- about 14 MB, against 28 MB for the WebGPU/JSEP build;
- `edgebuild-model.mjs`, a loader generated for this model: `load()` creates the session once and
  warms it up, `predict(inputs)` returns `{outputs, ms}`; it knows the model's input names, dtypes
  and shapes (symbolic dimensions, e.g. batch, are 1);
- `index.html`, a demo page that runs the model on a fixed sample, shows outputs, latency and the
  largest difference from the outputs Python ONNX Runtime computed on the same sample (embedded),
  and writes `{"ok": true, "outputs": ..., "ms": ..., "threads": n, ...}` (or `{"ok": false,
  "error": ...}`) into `<pre id="result">` for scripts and tests;
- `_headers` (Netlify / Cloudflare Pages syntax) with the cross-origin isolation headers that
  multi-threaded WebAssembly needs (SharedArrayBuffer). `edgebuild serve DIR` sends them too.

The sample is the first sample of the dataset named by `sample`, else of the first recipe dataset
that has every model input; with none, the page makes a seeded pseudo-random input (see
`seeded_sample()` for the formula, which the loader's `makeSample()` implements in JavaScript).

onnxruntime-web comes from the npm registry (`npm pack`), checked against the registry's sha512
integrity, and is kept once per exact version under `<downloads>/onnxruntime-web/<version>/`, where
<downloads> is $EDGEBUILD_DOWNLOADS, else $EDGEBUILD_CACHE/downloads, else
~/.cache/edgebuild/downloads. For offline builds, EDGEBUILD_ORT_WEB=/path/to/dist names a folder
holding the two files (e.g. node_modules/onnxruntime-web/dist).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from edgebuild.steps.base import WEB, PlanContext, RunContext, StepError, StepKind, tool_errors

PACKAGE = "onnxruntime-web"
RUNTIME_FILES = ("ort.wasm.bundle.min.mjs", "ort-wasm-simd-threaded.wasm")
LOADER = "edgebuild-model.mjs"
SAMPLE_SEED = 1234
# Element types onnxruntime-web tensors can hold (the names onnx_graph.dtype_name gives).
WEB_DTYPES = ("float32", "float16", "float64", "int8", "uint8", "int16", "uint16", "int32", "uint32",
              "int64", "uint64", "bool")
NPM_TIMEOUT_S = 600


class WasmBundle(StepKind):
    name = "wasm-bundle"
    version = 1
    summary = ("A static web folder running the model in the browser with onnxruntime-web (WebAssembly): "
               "model, runtime, a JS loader and a demo page.")
    params = {
        "threads": {"type": ["integer", "null"], "minimum": 1, "maximum": 64, "default": None,
                    "description": "WebAssembly threads (onnxruntime-web env.wasm.numThreads); unset: the target's "
                                   "cpu.threads. More than 1 needs a cross-origin-isolated page (see `_headers`, "
                                   "`edgebuild serve`); otherwise the loader falls back to 1 and says so."},
        "sample": {"type": ["string", "null"], "default": None,
                   "description": "Dataset (under `data:`) whose first sample the demo page runs; unset: the first "
                                  "dataset that has every model input, else a seeded pseudo-random input."},
        "warmup": {"type": "integer", "minimum": 0, "maximum": 1000, "default": 3,
                   "description": "Runs the loader makes after creating the session, before predict() is timed."},
        "runs": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 20,
                 "description": "Timed runs on the demo page; it reports the median latency in ms."},
    }
    takes = ("onnx",)
    gives = WEB
    tools = ("onnx", "onnxruntime", "jinja2")
    target_specific = True              # the onnxruntime-web version and the thread count come from the target
    dataset_params = ("sample",)
    code_files = ("templates/wasm-bundle.loader.mjs.j2", "templates/wasm-bundle.index.html.j2")

    @classmethod
    def source_files(cls, params: dict[str, Any], recipe_dir: Path) -> dict[str, Path]:
        """With EDGEBUILD_ORT_WEB, the local runtime files are copied into the bundle: their content enters
        the key (a different build of onnxruntime-web in that folder rebuilds the bundle). Files from npm are
        fixed by the target's pin and checked against the registry's integrity hash instead."""
        local = os.environ.get("EDGEBUILD_ORT_WEB")
        if not local:
            return {}
        folder = Path(local).expanduser()
        return {f"EDGEBUILD_ORT_WEB/{f}": folder / f for f in RUNTIME_FILES if (folder / f).is_file()}

    def check(self, ctx: PlanContext) -> None:
        users = _targets_using(ctx)
        for t in ctx.targets:
            if users is not None and t.name not in users:
                continue
            if not t.data.get("runtimes", {}).get(PACKAGE):
                ctx.error(f"target '{t.name}' declares no {PACKAGE} runtime, which a wasm-bundle step needs "
                          "(it pins the version the bundle ships)",
                          hint=f"add `runtimes: {{{PACKAGE}: \"1.30\"}}` to the target profile, or ship this step "
                               "to a browser target such as browser-wasm")

    def run(self, ctx: RunContext) -> dict[str, Any]:
        from edgebuild.onnx import graph as onnx_graph

        if not ctx.target:
            raise StepError("wasm-bundle is target-specific but got no target profile")
        pinned = _pinned_runtime(ctx.target)
        threads = int(ctx.params.get("threads") or (ctx.target.get("cpu") or {}).get("threads") or 1)
        warmup, runs = int(ctx.params["warmup"]), int(ctx.params["runs"])

        model = onnx_graph.load(ctx.input_model)
        inputs, outputs = _web_specs(model)
        # 1. the model, as one file; 2. the sample and the outputs Python ONNX Runtime gives on it
        model_bytes = _write_model(ctx.input_model, ctx.output_model)
        sample_info, feeds = _sample(ctx, inputs)
        for name, arr in feeds.items():
            inputs[name]["feed_shape"] = list(arr.shape)
        expected, reference = _reference_outputs(ctx.output_model, feeds)
        # 3. the runtime; 4. loader, page, headers
        runtime = _copy_runtime(pinned, ctx.out_dir, ctx.log)
        render_bundle(ctx.out_dir, step_id=ctx.step_id, target=str(ctx.target.get("name", "")),
                      ort_version=runtime["version"], inputs=inputs, outputs=outputs, threads=threads,
                      warmup=warmup, runs=runs, sample=sample_info, feeds=feeds, expected=expected,
                      reference=reference)
        sizes = _sizes(ctx.out_dir, runtime["files"])
        _log_size(ctx, sizes, model_bytes, runtime)
        return {
            "model": {"bytes": sizes["model.onnx"]["bytes"], "gzip_bytes": sizes["model.onnx"]["gzip_bytes"],
                      "precision": onnx_graph.precision_of(model)},
            "runtime": _runtime_facts(pinned, runtime, sizes),
            "inputs": inputs,
            "outputs": outputs,
            "sample": sample_info,
            "threads": threads, "warmup": warmup, "runs": runs,
            "files": {k: v["bytes"] for k, v in sorted(sizes.items())},
            "total_bytes": sum(v["bytes"] for v in sizes.values()),
            "total_gzip_bytes": sum(v["gzip_bytes"] for v in sizes.values()),
        }


# ---------------------------------------------------------------------------------------------
# run, step by step

def _pinned_runtime(target: dict[str, Any]) -> str:
    """The onnxruntime-web version the target pins ("1.30"); a target without one cannot get a bundle."""
    pinned = str((target.get("runtimes") or {}).get(PACKAGE) or "")
    if not pinned:
        raise StepError(f"target '{target.get('name')}' declares no {PACKAGE} runtime",
                        hint=f"add `runtimes: {{{PACKAGE}: \"1.30\"}}` to the target profile")
    return pinned


def _web_specs(model: Any) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """The model's (inputs, outputs) specs, refused before anything is written when the page could not
    feed or read them: no inputs, or an element type onnxruntime-web tensors cannot hold."""
    inputs = _specs(model, graph_input=True)
    outputs = _specs(model, graph_input=False)
    if not inputs:
        raise StepError("the model has no inputs: nothing for the page to feed")
    for name, spec in {**inputs, **outputs}.items():
        if spec["dtype"] not in WEB_DTYPES:
            raise StepError(f"model tensor '{name}' has element type {spec['dtype']}, which onnxruntime-web "
                            f"tensors cannot hold (they hold {', '.join(WEB_DTYPES)})")
    return inputs, outputs


def _reference_outputs(model_path: Path, feeds: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """(output name -> what Python ONNX Runtime computes on the sample, the words the page names it by).

    Unoptimized: ONNX Runtime's fused int8 kernels on x86 without VNNI saturate (VPMADDUBSW); the
    reference semantics are the graph's QDQ arithmetic, which the WebAssembly kernels follow."""
    import numpy as np

    from edgebuild.onnx import runtime as onnx_runtime

    with onnx_runtime.keep_root_logging():
        import onnxruntime

    with tool_errors("ONNX Runtime (Python) cannot run the model on the demo sample"):
        sess = onnx_runtime.session(model_path, optimize=False)
        got = sess.run(None, feeds)
    expected = {o.name: np.asarray(v) for o, v in zip(sess.get_outputs(), got)}
    return expected, f"Python ONNX Runtime {onnxruntime.__version__} (CPU, 1 thread, graph optimizations off)"


def _copy_runtime(pinned: str, out_dir: Path, log: Any) -> dict[str, Any]:
    """Fetch the pinned onnxruntime-web (see fetch_runtime) and copy its files into the bundle."""
    import shutil

    runtime = fetch_runtime(pinned, log)
    for f in RUNTIME_FILES:
        shutil.copyfile(runtime["dir"] / f, out_dir / f)
    return runtime


def _log_size(ctx: RunContext, sizes: dict[str, dict[str, int]], model_bytes: int, runtime: dict[str, Any]) -> None:
    """Log the bundle's size, with a warning when it is over the target's model-size budget."""
    total = sum(v["bytes"] for v in sizes.values())
    total_gz = sum(v["gzip_bytes"] for v in sizes.values())
    budget_mb = ((ctx.target or {}).get("budgets") or {}).get("model_size_mb")
    if budget_mb and total > budget_mb * 1e6:
        ctx.log.warning("the bundle is %.1f MB, over the target's model_size_mb budget of %s MB", total / 1e6, budget_mb)
    ctx.log.info("bundle: %d files, %.2f MB (%.2f MB gzip-compressed); model %d bytes; onnxruntime-web %s (%s)",
                 len(sizes), total / 1e6, total_gz / 1e6, model_bytes, runtime["version"], runtime["source"])


def _runtime_facts(pinned: str, runtime: dict[str, Any], sizes: dict[str, dict[str, int]]) -> dict[str, Any]:
    """The manifest's record of the onnxruntime-web the bundle ships: version, where it came from, sizes."""
    return {"package": PACKAGE, "pinned": pinned, "version": runtime["version"],
            "source": runtime["source"], "integrity": runtime.get("integrity"),
            "files": {f: sizes[f]["bytes"] for f in RUNTIME_FILES},
            "bytes": sum(sizes[f]["bytes"] for f in RUNTIME_FILES),
            "gzip_bytes": sum(sizes[f]["gzip_bytes"] for f in RUNTIME_FILES)}


# ---------------------------------------------------------------------------------------------
# plan time

def _targets_using(ctx: PlanContext) -> set[str] | None:
    """Names of the targets whose shipped steps reach this step through `from` (None if unknown)."""
    ship = getattr(ctx.recipe, "ship", None)
    steps = getattr(ctx.recipe, "steps", None)
    if not isinstance(ship, dict) or not isinstance(steps, dict):
        return None
    users = set()
    for tname, shipped in ship.items():
        for sid in shipped or []:
            cur, seen = sid, set()
            while cur is not None and cur not in seen and cur in steps:
                if cur == ctx.step_id:
                    users.add(tname)
                    break
                seen.add(cur)
                cur = steps[cur].source
    return users


# ---------------------------------------------------------------------------------------------
# model, sample

def _specs(model: Any, graph_input: bool) -> dict[str, dict[str, Any]]:
    """name -> {"dtype", "shape" (as the model declares it), "fixed_shape" (symbolic dims -> 1)}."""
    from edgebuild.onnx import graph as onnx_graph

    if graph_input:
        inits = {t.name for t in model.graph.initializer}
        values = [vi for vi in model.graph.input if vi.name not in inits]
    else:
        values = list(model.graph.output)
    out = {}
    for vi in values:
        shape = onnx_graph.dims(vi)
        out[vi.name] = {"dtype": onnx_graph.dtype_name(vi), "shape": shape,
                        "fixed_shape": [d if isinstance(d, int) else 1 for d in shape]}
    return out


def _write_model(src: Path, dst: Path) -> int:
    """Copy the model as one file (external data, if any, folded in); return its size."""
    import shutil

    import onnx

    from edgebuild.onnx import graph as onnx_graph

    with tool_errors(f"cannot read ONNX model {src}"):
        light = onnx.load(str(src), load_external_data=False)
    external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in onnx_graph.iter_initializers(light))
    if not external:
        shutil.copyfile(src, dst)
    else:
        full = onnx_graph.load(src)
        if full.ByteSize() >= onnx_graph.TWO_GB:
            raise StepError("the model is over 2 GB: a single-file web bundle cannot hold it")
        dst.write_bytes(full.SerializeToString(deterministic=True))
    return dst.stat().st_size


def _numpy_dtype(name: str) -> Any:
    import numpy as np

    return np.dtype(np.bool_) if name == "bool" else np.dtype(name)


def _sample(ctx: RunContext, inputs: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(what the manifest says about the sample, input name -> array of batch 1)."""
    from edgebuild.frontend import datasets

    names = list(inputs)
    chosen = ctx.params.get("sample")
    if chosen is not None:
        if chosen not in ctx.data:
            raise StepError(f"dataset '{chosen}' is not declared under `data:`",
                            recipe_path=("steps", ctx.step_id, "with", "sample"))
        candidates = [chosen]
    else:
        candidates = list(ctx.data)
    for name in candidates:
        path = Path(ctx.data[name])
        try:
            arrays = datasets.inspect(path)
        except (OSError, ValueError) as exc:
            raise StepError(f"cannot read dataset '{name}' ({path}): {exc}") from None
        missing = [n for n in names if n not in arrays]
        if missing:
            if chosen is not None:
                raise StepError(f"dataset '{name}' has no array for model input(s) {', '.join(missing)} "
                                f"(it has: {', '.join(arrays) or 'none'})",
                                recipe_path=("steps", ctx.step_id, "with", "sample"))
            continue
        if any(arrays[n][0][:1] in ((), (0,)) for n in names):
            if chosen is not None:
                raise StepError(f"dataset '{name}' holds no samples", recipe_path=("steps", ctx.step_id, "with", "sample"))
            continue
        feeds = {n: a.astype(_numpy_dtype(inputs[n]["dtype"])) for n, a in next(datasets.feeds(path, inputs, 1)).items()}
        for n, arr in feeds.items():
            want = inputs[n]["shape"]
            if len(want) != arr.ndim or any(isinstance(d, int) and d != s for d, s in zip(want, arr.shape)):
                raise StepError(f"dataset '{name}': a sample of '{n}' has shape {list(arr.shape)}, but the model "
                                f"takes {want}", recipe_path=("steps", ctx.step_id, "with", "sample") if chosen else None)
        ctx.log.info("demo sample: dataset '%s', sample 0", name)
        return {"source": "dataset", "dataset": name, "index": 0}, feeds
    if chosen is None and ctx.data:
        ctx.log.info("no dataset has every model input (%s): the demo uses a seeded pseudo-random input",
                     ", ".join(names))
    return {"source": "seeded", "seed": SAMPLE_SEED}, seeded_sample(inputs, SAMPLE_SEED)


def seeded_sample(inputs: dict[str, dict[str, Any]], seed: int) -> dict[str, Any]:
    """The pseudo-random input the loader's makeSample(seed) builds in JavaScript, bit for bit.

    For input number k (graph order, from 0), the state starts at s = seed XOR ((k + 1) * 0x9E3779B9)
    (mod 2**32); for each element, in C order: s = (1664525 * s + 1013904223) mod 2**32, r = s >> 8
    (24 bits), and the value is r / 2**23 - 1 for float types (in [-1, 1), exact in float32),
    r & 1 for bool, and r % 10 for integer types. The shape is the input's with symbolic dims 1.
    """
    import numpy as np

    out = {}
    for k, (name, spec) in enumerate(inputs.items()):
        shape = spec["fixed_shape"]
        n = int(np.prod(shape, dtype=np.int64)) if shape else 1
        s = (seed ^ ((k + 1) * 0x9E3779B9)) & 0xFFFFFFFF
        r = np.empty(n, dtype=np.int64)
        for i in range(n):
            s = (1664525 * s + 1013904223) & 0xFFFFFFFF
            r[i] = s >> 8
        dtype = spec["dtype"]
        if dtype.startswith("float"):
            vals = (r.astype(np.float64) / 2.0**23 - 1.0).astype(np.float32).astype(_numpy_dtype(dtype))
        elif dtype == "bool":
            vals = (r & 1).astype(np.bool_)
        else:
            vals = (r % 10).astype(_numpy_dtype(dtype))
        out[name] = vals.reshape(shape)
    return out


# ---------------------------------------------------------------------------------------------
# rendering

def _b64(arr: Any, dtype: str) -> str:
    import base64

    import numpy as np

    a = np.ascontiguousarray(arr).astype(_numpy_dtype(dtype).newbyteorder("<"))
    if dtype == "bool":
        a = a.astype(np.uint8)
    return base64.b64encode(a.tobytes()).decode("ascii")


def render_bundle(out_dir: Path, *, step_id: str, target: str, ort_version: str, inputs: dict[str, Any],
                  outputs: dict[str, Any], threads: int, warmup: int, runs: int, sample: dict[str, Any],
                  feeds: dict[str, Any], expected: dict[str, Any],
                  reference: str = "Python ONNX Runtime") -> list[str]:
    """Write edgebuild-model.mjs, index.html and _headers into out_dir; return their names."""
    import jinja2
    import numpy as np

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(Path(__file__).resolve().parents[1] / "templates")),
                             autoescape=lambda name: ".html" in (name or ""), keep_trailing_newline=True,
                             undefined=jinja2.StrictUndefined)
    model_inputs = [{"name": n, "dtype": s["dtype"], "shape": s["fixed_shape"], "modelShape": s["shape"]}
                     for n, s in inputs.items()]
    model_outputs = [{"name": n, "dtype": s["dtype"], "modelShape": s["shape"]} for n, s in outputs.items()]
    page_sample: dict[str, Any] = dict(sample)
    if sample["source"] == "dataset":
        page_sample["inputs"] = {n: {"dtype": inputs[n]["dtype"], "dims": list(a.shape), "b64": _b64(a, inputs[n]["dtype"])}
                                 for n, a in feeds.items()}
    page_expected = {n: {"dims": list(a.shape), "b64": _b64(np.asarray(a, dtype=np.float64), "float64")}
                     for n, a in expected.items()}
    common = {"step_id": step_id, "target": target, "ort_version": ort_version, "threads": threads,
              "warmup": warmup, "runs": runs, "seed": SAMPLE_SEED, "inputs": model_inputs, "outputs": model_outputs}
    (out_dir / LOADER).write_text(env.get_template("wasm-bundle.loader.mjs.j2").render(**common))
    (out_dir / "index.html").write_text(env.get_template("wasm-bundle.index.html.j2").render(
        **common, sample=page_sample, expected=page_expected, reference=reference,
        sample_text=(f"dataset {sample['dataset']}, sample {sample['index']}" if sample["source"] == "dataset"
                     else f"seeded pseudo-random input (makeSample({sample['seed']}))")))
    (out_dir / "_headers").write_text(HEADERS_FILE)
    return [LOADER, "index.html", "_headers"]


HEADERS_FILE = """\
# Response headers for Netlify / Cloudflare Pages (written by edgebuild's wasm-bundle step).
# Cross-origin isolation lets onnxruntime-web run WebAssembly on several threads (SharedArrayBuffer);
# without it the page still works, on one thread. Other servers: send the same three headers.
/*
  Cross-Origin-Opener-Policy: same-origin
  Cross-Origin-Embedder-Policy: require-corp
  Cross-Origin-Resource-Policy: same-origin
"""


def _gzip_size(data: bytes) -> int:
    import gzip

    return len(gzip.compress(data, compresslevel=9, mtime=0))


def _sizes(out_dir: Path, runtime_files: dict[str, dict[str, Any]]) -> dict[str, dict[str, int]]:
    """file name -> {"bytes", "gzip_bytes"} for every file of the bundle (runtime gzip sizes come precomputed)."""
    out = {}
    for p in sorted(out_dir.iterdir()):
        if not p.is_file():
            continue
        if p.name in runtime_files and "gzip_bytes" in runtime_files[p.name]:
            out[p.name] = {"bytes": p.stat().st_size, "gzip_bytes": int(runtime_files[p.name]["gzip_bytes"])}
        else:
            data = p.read_bytes()
            out[p.name] = {"bytes": len(data), "gzip_bytes": _gzip_size(data)}
    return out


# ---------------------------------------------------------------------------------------------
# onnxruntime-web from npm, kept once per version

def downloads_dir() -> Path:
    """$EDGEBUILD_DOWNLOADS, else $EDGEBUILD_CACHE/downloads, else ~/.cache/edgebuild/downloads."""
    if os.environ.get("EDGEBUILD_DOWNLOADS"):
        return Path(os.environ["EDGEBUILD_DOWNLOADS"])
    if os.environ.get("EDGEBUILD_CACHE"):
        return Path(os.environ["EDGEBUILD_CACHE"]) / "downloads"
    return Path.home() / ".cache" / "edgebuild" / "downloads"


def _vkey(v: str) -> tuple[int, ...]:
    from edgebuild.engine import dists

    return dists.release(v)


def _matches(version: str, pinned: str) -> bool:
    """Whether an exact version satisfies the target's pin ("1.30" -> 1.30.x releases, "1.30.1" -> itself)."""
    if "-" in version and "-" not in pinned:
        return False   # dev builds only when pinned exactly
    p = pinned.split(".")
    return version == pinned or (len(p) < 3 and version.split("-", 1)[0].split(".")[:len(p)] == p)


def fetch_runtime(pinned: str, log: Any) -> dict[str, Any]:
    """The onnxruntime-web files for the target's pin: {"dir", "version", "source", "integrity", "files"}."""
    local = os.environ.get("EDGEBUILD_ORT_WEB")
    if local:
        return _local_runtime(Path(local).expanduser(), pinned, log)
    root = downloads_dir() / PACKAGE
    try:
        version, integrity = _npm_resolve(pinned)
    except StepError as exc:
        cached = _cached_versions(root, pinned)
        if not cached:
            raise
        version, integrity = cached[-1], None
        log.warning("%s; using onnxruntime-web %s from %s", exc.message, version, root / version)
    folder = root / version
    meta = _read_meta(folder)
    if meta is not None and (integrity is None or meta.get("integrity") == integrity) and _verify_files(folder, meta):
        log.info("onnxruntime-web %s: reusing %s", version, folder)
        return {"dir": folder, "version": version, "source": "npm", "integrity": meta.get("integrity"),
                "files": meta["files"]}
    if integrity is None:  # only reached when the cached copy failed its checks
        raise StepError(f"the cached onnxruntime-web {version} in {folder} is damaged and the registry cannot be reached",
                        hint=f"delete {folder} and build again with network access, or set EDGEBUILD_ORT_WEB=/path/to/dist")
    log.info("onnxruntime-web %s: downloading from the npm registry", version)
    return _download(root, version, integrity, log)


def _npm() -> str:
    import shutil

    npm = shutil.which("npm")
    if not npm:
        raise StepError("npm was not found: the wasm-bundle step downloads onnxruntime-web from the npm registry",
                        hint="install Node.js/npm, or set EDGEBUILD_ORT_WEB=/path/to/onnxruntime-web/dist (a folder "
                             f"holding {' and '.join(RUNTIME_FILES)}) for an offline build")
    return npm


def _run_npm(args: list[str], cwd: Path | None = None) -> str:
    import json
    import subprocess

    cmd = [_npm(), *args, "--json", "--no-fund", "--no-audit", "--loglevel=error"]
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=NPM_TIMEOUT_S,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise StepError(f"`npm {' '.join(args)}` did not finish in {NPM_TIMEOUT_S} s (network?)",
                        hint="check the connection to the npm registry, or set EDGEBUILD_ORT_WEB for an offline build") from None
    if proc.returncode != 0:
        code, summary = "", ""
        try:
            err = json.loads(proc.stdout).get("error", {})
            code, summary = str(err.get("code", "")), str(err.get("summary", ""))
        except (ValueError, AttributeError):
            pass
        detail = summary or (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        if code == "E404":
            raise StepError(f"the npm registry has no {args[-1] if args else PACKAGE}: {detail}",
                            hint="check the target profile's `runtimes: onnxruntime-web` version against "
                                 "`npm view onnxruntime-web versions`")
        network = code in ("ENOTFOUND", "EAI_AGAIN", "ETIMEDOUT", "ECONNREFUSED", "ECONNRESET", "EHOSTUNREACH",
                           "ENETUNREACH", "ERR_SOCKET_TIMEOUT", "UNABLE_TO_GET_ISSUER_CERT_LOCALLY") or "network" in detail.lower()
        what = "cannot reach the npm registry" if network else f"`npm {' '.join(args)}` failed"
        raise StepError(f"{what}: {code + ' ' if code else ''}{detail}".strip(),
                        hint="check the network (or the npm registry/proxy settings), or set "
                             "EDGEBUILD_ORT_WEB=/path/to/onnxruntime-web/dist for an offline build")
    return proc.stdout


@functools.lru_cache(maxsize=None)
def _npm_resolve(pinned: str) -> tuple[str, str]:
    """(newest exact version matching the pin, its sha512 integrity) from the registry (asked once per process)."""
    import json

    spec = f"{PACKAGE}@{pinned}" if len(pinned.split(".")) >= 3 else f"{PACKAGE}@~{pinned}.0"
    out = _run_npm(["view", spec, "version", "dist.integrity"])
    try:
        data = json.loads(out) if out.strip() else []
    except ValueError:
        raise StepError(f"unexpected answer from `npm view {spec}`: {out.strip()[:200]}") from None
    rows = data if isinstance(data, list) else [data]
    rows = [r for r in rows if isinstance(r, dict) and r.get("version") and _matches(str(r["version"]), pinned)]
    if not rows:
        raise StepError(f"the npm registry has no {PACKAGE} release matching {pinned}",
                        hint="check the target profile's `runtimes: onnxruntime-web` version")
    best = max(rows, key=lambda r: _vkey(str(r["version"])))
    integrity = str(best.get("dist.integrity") or "")
    if not integrity.startswith("sha512-"):
        raise StepError(f"the npm registry gave no sha512 integrity for {PACKAGE}@{best['version']}")
    return str(best["version"]), integrity


def _cached_versions(root: Path, pinned: str) -> list[str]:
    if not root.is_dir():
        return []
    found = [p.name for p in root.iterdir() if p.is_dir() and _matches(p.name, pinned) and _read_meta(p) is not None]
    return sorted(found, key=_vkey)


def _read_meta(folder: Path) -> dict[str, Any] | None:
    import json

    try:
        meta = json.loads((folder / "edgebuild.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or not all(f in meta.get("files", {}) for f in RUNTIME_FILES):
        return None
    return meta


def _verify_files(folder: Path, meta: dict[str, Any]) -> bool:
    import hashlib

    for f in RUNTIME_FILES:
        p = folder / f
        if not p.is_file() or hashlib.sha256(p.read_bytes()).hexdigest() != meta["files"][f].get("sha256"):
            return False
    return True


def _file_meta(data: bytes) -> dict[str, Any]:
    import hashlib

    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "gzip_bytes": _gzip_size(data)}


def _download(root: Path, version: str, integrity: str, log: Any) -> dict[str, Any]:
    import base64
    import hashlib
    import json
    import shutil
    import tarfile
    import tempfile
    import uuid

    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgebuild-npm-") as tmp:
        out = _run_npm(["pack", f"{PACKAGE}@{version}"], cwd=Path(tmp))
        tgz = next(iter(sorted(Path(tmp).glob("*.tgz"))), None)
        if tgz is None:
            raise StepError(f"`npm pack {PACKAGE}@{version}` wrote no tarball: {out.strip()[:200]}")
        digest = "sha512-" + base64.b64encode(hashlib.sha512(tgz.read_bytes()).digest()).decode()
        if digest != integrity:
            raise StepError(f"{tgz.name} does not match the registry's integrity hash ({digest[:24]}... != {integrity[:24]}...)",
                            hint="a proxy or cache altered the download; clear the npm cache (`npm cache clean --force`) and retry")
        files: dict[str, bytes] = {}
        try:
            with tarfile.open(tgz, "r:gz") as tar:
                for f in RUNTIME_FILES:
                    try:
                        member = tar.getmember(f"package/dist/{f}")
                    except KeyError:
                        raise StepError(f"{PACKAGE} {version} has no dist/{f}",
                                        hint="wasm-bundle needs onnxruntime-web 1.20 or newer (the .bundle.min.mjs build); "
                                             "pin a newer version in the target profile") from None
                    fp = tar.extractfile(member)
                    if fp is None:
                        raise StepError(f"{PACKAGE} {version}: dist/{f} is not a regular file")
                    files[f] = fp.read()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise StepError(f"cannot read {tgz.name}: {exc}") from None
    meta = {"package": PACKAGE, "version": version, "integrity": integrity,
            "files": {f: _file_meta(b) for f, b in files.items()}}
    stage = root / f".{version}.tmp-{uuid.uuid4().hex[:8]}"
    stage.mkdir()
    try:
        for f, b in files.items():
            (stage / f).write_bytes(b)
        (stage / "edgebuild.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        dest = root / version
        if dest.exists():   # a concurrent build got there first, or a damaged copy: replace it
            old = root / f".{version}.old-{uuid.uuid4().hex[:8]}"
            try:
                os.rename(dest, old)
            except OSError:
                pass
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.rename(stage, dest)
        except OSError:
            if _read_meta(dest) is None:
                raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    log.info("onnxruntime-web %s: kept in %s", version, root / version)
    return {"dir": root / version, "version": version, "source": "npm", "integrity": integrity, "files": meta["files"]}


def _local_runtime(folder: Path, pinned: str, log: Any) -> dict[str, Any]:
    import json
    import re

    missing = [f for f in RUNTIME_FILES if not (folder / f).is_file()]
    if missing:
        raise StepError(f"EDGEBUILD_ORT_WEB={folder} lacks {', '.join(missing)}",
                        hint=f"point it at an onnxruntime-web dist folder holding {' and '.join(RUNTIME_FILES)} "
                             "(e.g. node_modules/onnxruntime-web/dist)")
    version = None
    try:
        version = str(json.loads((folder.parent / "package.json").read_text()).get("version") or "") or None
    except (OSError, ValueError, AttributeError):
        pass
    if version is None:   # the bundle embeds its version (env.versions.web)
        text = (folder / RUNTIME_FILES[0]).read_text(errors="replace")
        found = set(re.findall(r'="(\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?)"', text))
        version = found.pop() if len(found) == 1 else None
    if version is None:
        log.warning("EDGEBUILD_ORT_WEB=%s: cannot tell the onnxruntime-web version; the target pins %s", folder, pinned)
    elif _vkey(version)[:len(_vkey(pinned))] != _vkey(pinned):
        raise StepError(f"EDGEBUILD_ORT_WEB={folder} holds onnxruntime-web {version}, but the target pins {pinned}",
                        hint="point EDGEBUILD_ORT_WEB at the dist folder of the version the target pins")
    files = {f: _file_meta((folder / f).read_bytes()) for f in RUNTIME_FILES}
    log.info("onnxruntime-web %s: local files from %s", version or "(unknown version)", folder)
    return {"dir": folder, "version": version or "unknown", "source": "local", "integrity": None, "files": files}


KIND = WasmBundle
