"""export: PyTorch model -> ONNX, checked against PyTorch on sample inputs with ONNX Runtime.

Exporter: the TorchScript-based `torch.onnx.export(..., dynamo=False)`. In torch 2.13 it writes
byte-identical files run after run, honours every opset from 7 to 20 (the torch.export-based
exporter starts at opset 18 and its down-conversion fails on common graphs such as ReduceMean),
takes ~50 ms instead of seconds, and embeds no source paths or stack traces in the model.

Output names are the module's natural outputs: a single tensor is "output"; a tuple or list gives
"output_0", "output_1", ...; a dict gives its keys; a namedtuple its field names (nested
containers join the parts with "_", e.g. "output_1_0").
"""

from __future__ import annotations

import contextlib
import traceback
import warnings
from pathlib import Path
from typing import Any

from edgebuild.pytorch import modules as torch_modules
from edgebuild.pytorch.modules import FACTORY, WEIGHTS, flatten, short
from edgebuild.steps.base import ONNX, PYTORCH, RunContext, StepError, StepKind

__all__ = ["FACTORY", "WEIGHTS", "Export"]
MAX_OPSET = 20   # the TorchScript exporter's highest opset in torch 2.13


class Export(StepKind):
    name = "export"
    version = 1
    summary = "Export the PyTorch model to ONNX and check it against PyTorch with ONNX Runtime."
    params = {
        "opset": {"type": "integer", "minimum": 7, "maximum": MAX_OPSET, "default": 17,
                  "description": f"ONNX opset to export (7..{MAX_OPSET}); must not exceed what the targets' runtimes load."},
        "tolerance": {"type": "number", "exclusiveMinimum": 0, "default": 1e-4,
                      "description": "Largest absolute difference allowed between PyTorch and ONNX Runtime outputs on the sample inputs."},
        "samples": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 4,
                    "description": "Number of sample inputs to compare PyTorch and ONNX Runtime on."},
        "data": {"type": ["string", "null"], "default": None,
                 "description": "Recipe dataset to take the sample inputs from; when unset, seeded random inputs "
                                "with symbolic dims set to 1 and 2 in turn."},
    }
    takes = (PYTORCH,)
    gives = ONNX
    precision = "fp32"
    tools = ("torch", "onnx", "onnxruntime")   # the TorchScript exporter does not use onnxscript
    dataset_params = ("data",)

    def run(self, ctx: RunContext) -> dict[str, Any]:
        import onnx
        import torch

        from edgebuild.onnx import graph as onnx_graph
        from edgebuild.onnx import runtime as onnx_runtime

        p = ctx.params
        opset = int(p["opset"])
        opset_path = ("steps", ctx.step_id, "with", "opset")
        if opset > ctx.max_opset:
            raise StepError(f"opset {opset} is above what the targets' runtimes load (opset {ctx.max_opset} at most)",
                            hint=f"use `opset: {ctx.max_opset}` or lower", recipe_path=opset_path)
        if not ctx.inputs:
            raise StepError("the PyTorch model has no declared inputs", recipe_path=("model",),
                            hint="add `inputs:` under `model:` with the name, shape and dtype of each input")
        threads = torch.get_num_threads()
        torch.set_num_threads(1)   # the same float results (constant folding, reference outputs) on every machine
        try:
            module = torch_modules.load(ctx)
            samples = _samples(ctx, int(p["samples"]), p.get("data"))
            trace_feed = _trace_feed(ctx, samples)
            names = list(ctx.inputs)
            with torch.no_grad():
                reference = module(*_to_torch(trace_feed, names))
            out_names = _output_names(reference)
            ctx.log.info("exporting with the TorchScript exporter at opset %d; inputs %s; outputs %s",
                         opset, ", ".join(names), ", ".join(out_names))
            model = _export(ctx, module, trace_feed, names, out_names, opset)
        finally:
            torch.set_num_threads(threads)

        _normalize(model)
        onnx_graph.save(model, ctx.output_model, ctx.ir_version, ctx.max_opset, opset_path)
        ctx.log.info("wrote %s (%d bytes, IR version %d)", ctx.output_model.name,
                     onnx_graph.file_size(ctx.output_model), min(model.ir_version, ctx.ir_version))

        worst = _compare(ctx, module, ctx.output_model, samples, names, out_names)
        tol = float(p["tolerance"])
        saved = onnx.load(str(ctx.output_model), load_external_data=False)
        facts = {"max_abs_diff": onnx_runtime.sig3(worst), "samples": len(samples), "opset": opset,
                 "inputs": onnx_graph.graph_inputs(saved), "outputs": onnx_graph.graph_outputs(saved)}
        ctx.log.info("largest |PyTorch - ONNX Runtime| over %d sample(s): %s (tolerance %g)",
                     len(samples), facts["max_abs_diff"], tol)
        if not worst <= tol:   # also catches NaN
            raise StepError(
                f"ONNX Runtime outputs differ from PyTorch by up to {facts['max_abs_diff']:g}, above the tolerance {tol:g}",
                hint="raise `tolerance` if this difference is acceptable; else look for ops that export inexactly "
                     "(a different opset may help)",
                recipe_path=("steps", ctx.step_id, "with", "tolerance"))
        return facts


# -- inputs and outputs ------------------------------------------------------------------------

_NP_DTYPES = {"float32": "float32", "float16": "float16", "float64": "float64", "int64": "int64",
              "int32": "int32", "int8": "int8", "uint8": "uint8", "bool": "bool"}


def _samples(ctx: RunContext, n: int, data: str | None) -> list[dict[str, Any]]:
    """Sample feeds: from the named dataset (batches of one), or seeded random inputs."""
    import numpy as np

    from edgebuild.frontend import datasets

    names = list(ctx.inputs)
    if data:
        if data not in ctx.data:
            raise StepError(f"dataset '{data}' is not declared under `data:`", recipe_path=("steps", ctx.step_id, "with", "data"))
        try:
            out = list(datasets.feeds(ctx.data[data], {k: ctx.inputs[k] for k in names}, limit=n))
        except KeyError as exc:
            raise StepError(str(exc.args[0]), recipe_path=("data", data)) from None
        if not out:
            raise StepError(f"dataset '{data}' holds no samples", recipe_path=("data", data))
        for feed in out:
            for k in names:
                want = _NP_DTYPES.get(ctx.inputs[k].get("dtype", "float32"), "float32")
                if feed[k].dtype != np.dtype(want):
                    feed[k] = feed[k].astype(want)
        ctx.log.info("sample inputs: the first %d sample(s) of dataset '%s'", len(out), data)
        return out
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        size = 1 if i % 2 == 0 else 2
        out.append({k: _random(rng, ctx.inputs[k], size) for k in names})
    ctx.log.info("sample inputs: %d seeded random input(s), symbolic dims set to 1 and 2 in turn", n)
    return out


def _random(rng: Any, spec: dict[str, Any], size: int) -> Any:
    import numpy as np

    shape = tuple(d if isinstance(d, int) else size for d in spec["shape"])
    dtype = _NP_DTYPES.get(spec.get("dtype", "float32"), "float32")
    if dtype.startswith("float"):
        return rng.standard_normal(shape).astype(dtype)
    if dtype == "bool":
        return rng.integers(0, 2, shape).astype(bool)
    if dtype == "uint8":
        return rng.integers(0, 256, shape).astype(np.uint8)
    if dtype == "int8":
        return rng.integers(-128, 128, shape).astype(np.int8)
    return rng.integers(0, 10, shape).astype(dtype)   # small ids: safe for embeddings and index inputs


def _trace_feed(ctx: RunContext, samples: list[dict[str, Any]]) -> dict[str, Any]:
    """The input traced by the exporter: symbolic dims should not be 1 (tracing may specialize on 1)."""
    import numpy as np

    two = [s for s in samples if all(_symbolic_ok(ctx.inputs[k]["shape"], v.shape) for k, v in s.items())]
    if two:
        return two[0]
    first = samples[0]
    if len(samples) > 1 and all(isinstance(ctx.inputs[k]["shape"][0], str) for k in first if ctx.inputs[k]["shape"]):
        return {k: np.concatenate([samples[0][k], samples[1][k]]) for k in first}
    return first


def _symbolic_ok(spec: list[Any], shape: tuple[int, ...]) -> bool:
    return all(not isinstance(d, str) or s != 1 for d, s in zip(spec, shape))


def _to_torch(feed: dict[str, Any], names: list[str]) -> tuple[Any, ...]:
    import torch

    return tuple(torch.from_numpy(feed[n].copy()) for n in names)


def _output_names(out: Any) -> list[str]:
    import torch

    names: list[str] = []

    def walk(x: Any, name: str, top: bool) -> None:
        if isinstance(x, torch.Tensor):
            names.append(name)
        elif isinstance(x, dict):
            for k, v in x.items():
                walk(v, str(k) if top else f"{name}_{k}", False)
        elif isinstance(x, tuple) and hasattr(x, "_fields"):
            for k, v in zip(x._fields, x):
                walk(v, k if top else f"{name}_{k}", False)
        elif isinstance(x, (tuple, list)):
            for i, v in enumerate(x):
                walk(v, f"{name}_{i}", False)
        else:
            raise StepError(f"the model returns a {type(x).__name__} ({name}); ONNX outputs must be tensors",
                            recipe_path=FACTORY, hint="return tensors (or tuples/dicts of tensors) from forward()")

    walk(out, "output", True)
    if not names:
        raise StepError("the model returns no tensors", recipe_path=FACTORY)
    return names


# -- export and check --------------------------------------------------------------------------

def _export(ctx: RunContext, module: Any, feed: dict[str, Any], names: list[str], out_names: list[str], opset: int) -> Any:
    import io
    import tempfile

    import onnx
    import torch

    dynamic_axes = {k: {i: d for i, d in enumerate(ctx.inputs[k]["shape"]) if isinstance(d, str)} for k in names}
    dynamic_axes = {k: v for k, v in dynamic_axes.items() if v}
    tmp = tempfile.TemporaryDirectory(prefix="edgebuild-export-")
    path = Path(tmp.name) / "exported.onnx"
    with tmp, warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("always")
        try:
            torch.onnx.export(module, _to_torch(feed, names), str(path), dynamo=False, input_names=names,
                              output_names=out_names, dynamic_axes=dynamic_axes or None, opset_version=opset,
                              do_constant_folding=True, export_params=True)
        except Exception as exc:
            ctx.log.error("the exporter raised:\n%s", traceback.format_exc())
            unsupported = "unsupported" in str(exc).lower() or type(exc).__name__ in ("UnsupportedOperatorError", "SymbolicValueError")
            hint = (f"an op may need a newer opset (up to {MAX_OPSET}); or rewrite that part of forward()" if unsupported
                    else "the exporter traces forward() with the sample input; data-dependent Python control flow cannot be traced")
            raise StepError(f"PyTorch could not export the model to ONNX opset {opset}: {type(exc).__name__}: {short(exc)}",
                            hint=hint, recipe_path=("steps", ctx.step_id, "with", "opset") if unsupported else ("steps", ctx.step_id)) from None
        model = onnx.load(str(path))
    for w in caught:
        if issubclass(w.category, DeprecationWarning) or issubclass(w.category, FutureWarning):
            continue   # the TorchScript exporter's deprecation notice: chosen on purpose, see the module doc
        ctx.log.warning("exporter: %s: %s", w.category.__name__, str(w.message).strip())
    return model


def _normalize(model: Any) -> None:
    """Drop what makes bytes depend on where or when the export ran (doc strings, node metadata)."""
    from edgebuild.onnx import graph as onnx_graph

    model.doc_string = ""
    for g in onnx_graph.iter_graphs(model.graph):
        g.doc_string = ""
        for node in g.node:
            node.doc_string = ""
            del node.metadata_props[:]


def _compare(ctx: RunContext, module: Any, path: Path, samples: list[dict[str, Any]], names: list[str],
             out_names: list[str]) -> float:
    import numpy as np
    import torch

    from edgebuild.onnx import runtime as onnx_runtime

    sess = onnx_runtime.check_loads(path, "exported", hint="the exported graph uses something ONNX Runtime's CPU provider lacks; try another opset")
    fed = [i.name for i in sess.get_inputs()]   # the exporter drops inputs forward() does not use
    worst = 0.0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for i, feed in enumerate(samples):
            with torch.no_grad():
                want = [t.detach().numpy() for t in flatten(module(*_to_torch(feed, names)))]
            try:
                got = sess.run(out_names, {k: feed[k] for k in fed})
            except Exception as exc:
                shapes = ", ".join(f"{k} {list(feed[k].shape)}" for k in names)
                symbolic = [k for k in names if any(isinstance(d, str) for d in ctx.inputs[k]["shape"])]
                raise StepError(f"ONNX Runtime failed on sample {i} ({shapes}): {short(exc)}",
                                hint="the traced graph fixed a size that the samples vary: "
                                     + ("declare the dims that vary symbolic (a name) in `inputs:`" if not symbolic else
                                        "the inputs' dims are symbolic, so the model's code turned a size into a Python "
                                        "number while tracing (int(x.shape[1]), a data-dependent branch, or "
                                        "nn.TransformerEncoder's nested-tensor fast path: build it with "
                                        "enable_nested_tensor=False); see the exporter's TracerWarnings in the log")) from None
            for name, a, b in zip(out_names, want, got):
                if a.shape != b.shape:
                    raise StepError(f"output '{name}' has shape {list(b.shape)} in ONNX Runtime but {list(a.shape)} in PyTorch "
                                    f"on sample {i}", hint="a dim was fixed while tracing; declare it symbolic (a name) in `inputs:`")
                if a.size == 0:
                    continue
                if a.dtype == np.bool_ or b.dtype == np.bool_:
                    d = float(np.max(a != b))
                else:
                    a64, b64 = a.astype(np.float64), b.astype(np.float64)
                    both_nan = np.isnan(a64) & np.isnan(b64)
                    diff = np.where(both_nan, 0.0, np.abs(a64 - b64))
                    d = float(np.max(np.where(np.isnan(diff), np.inf, diff)))
                worst = max(worst, d)
    finally:
        torch.set_num_threads(threads)
    return worst


KIND = Export
