"""What the quantize steps share: pre-processing, types from the target, the quantized-node check,
range-mixing tensors, per-node sensitivity and the accuracy-aware search. Called inside run() only.

Pre-processing. Exporters often leave weights in `Constant` nodes, or behind a chain of constant
ops (Constant -> Transpose -> MatMul, float16 Constant -> Cast -> Conv). ONNX Runtime's quantizers
only quantize weights that are initializers: dynamic quantization then quantizes nothing (the file
grows by the quantization ops) or quantizes the weights again at every run. `preprocess()` turns
Constant nodes into initializers, folds every node whose inputs are all constant (evaluated once with
ONNX Runtime, optimizations off) and runs ONNX shape inference, so the quantizer also sees the
types of intermediate tensors. It is our own small pass rather than onnxruntime's
`quant_pre_process`, whose optimizer also fuses nodes (the fused graph is ONNX Runtime's, not the
input's) and whose symbolic shape inference fails on some exported graphs.

Types. `auto` quantization types follow the target's CPU (see `auto_types`).

Range mixing. A Concat that joins tensors of very different ranges (box coordinates in pixels next
to class scores in 0..1) gets one scale for its output; 8 bits at 640/255 per step round every
score to 0. `range_mixing()` finds such nodes from the calibrated ranges of their inputs.

Accuracy-aware search. `AccuracySearch` quantizes candidates (calibration method, per-channel,
nodes kept in float) and keeps the one that meets the recipe's goal on a dataset with the fewest
nodes kept in float, within a fixed budget of quantizations, then checks it is faster than FP32. A
candidate meets the goal when it does both with Q/DQ simulated in float and on the build host's fused
int8 kernels at the target's thread count, which is how `checks:` will run it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from edgebuild.onnx import graph as onnx_graph
from edgebuild.onnx import runtime as onnx_runtime
from edgebuild.steps.base import RunContext, StepError

if TYPE_CHECKING:  # pragma: no cover
    import onnx

# Ops whose weight input makes them the compute of a layer (quantizing them is what speeds a model up).
WEIGHT_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm", "LSTM", "GRU", "Attention", "Gather"})
# Integer ops -> index of their weight input.
_INTEGER_WEIGHT_INPUT = {"MatMulInteger": 1, "ConvInteger": 1, "QLinearConv": 3, "QLinearMatMul": 3, "QGemm": 3,
                         "DynamicQuantizeMatMul": 1, "MatMulIntegerToFloat": 1, "QAttention": 1, "DynamicQuantizeLSTM": 1}
_INT_TYPES = frozenset({2, 3, 4, 5, 21, 22})   # uint8, int8, uint16, int16, uint4, int4
# Ops that put their inputs side by side in one tensor (inputs that matter: all but Where's condition).
MIXING_OPS = {"Concat": slice(0, None), "Where": slice(1, 3)}
# Not folded: random, quantization (an existing Q/DQ pair stays as it is), and ops that expand a small
# constant into a large one (folding them would grow the file).
_NO_FOLD = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
                      "Bernoulli", "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "ConstantOfShape",
                      "Expand", "Tile", "Range", "EyeLike", "Constant", "If", "Loop", "Scan"})
# Ops that pass a quantized tensor through (ONNX Runtime gives their output their input's Q/DQ
# parameters, or folds them into the producer): never a source of error of their own.
PASS_THROUGH = frozenset({"Relu", "Clip", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Slice",
                          "MaxPool", "Pad", "Resize", "Split", "Identity", "Dropout"})
RATIO = 20.0          # range-mixing: largest input range over smallest
MAX_QUANTIZATIONS = 16
SENSITIVITY_SAMPLES = 16
ACCURACY_SAMPLES = 200


# -- pre-processing ----------------------------------------------------------------------------------

def name_nodes(model: "onnx.ModelProto") -> int:
    """Give every main-graph node a unique name (`nodes_to_exclude` works by name). Returns how many changed."""
    seen: set[str] = set()
    changed = 0
    for i, node in enumerate(model.graph.node):
        name = node.name or f"{node.op_type}_{i}"
        base, k = name, 1
        while name in seen:
            name, k = f"{base}_{k}", k + 1
        if name != node.name:
            node.name = name
            changed += 1
        seen.add(name)
    return changed


def preprocess(model: "onnx.ModelProto", log: Any) -> tuple["onnx.ModelProto", dict[str, Any]]:
    """Constants to initializers, constant folding, shape inference; returns (model, what changed)."""
    facts = weights_as_initializers(model, log)
    flat = flat_gemm_biases(model)
    if flat:
        facts["gemm_biases_flattened"] = flat
        log.info("pre-processing: %d Gemm bias(es) of shape [1, N] stored as [N]", flat)
    model, facts["shapes_inferred"] = infer_shapes(model, log)
    return model, facts


def flat_gemm_biases(model: "onnx.ModelProto") -> int:
    """Store Gemm biases of shape [1, N] as [N] (the same sum: C broadcasts either way). ONNX Runtime's QDQ
    quantizer takes a Gemm bias to be 1-D: a [1, N] one (what a fused MatMul + Add of a TF/JAX export gives)
    breaks its per-channel bias scales and then the model's DequantizeLinear. Returns how many changed."""
    from onnx import numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    uses: dict[str, int] = {}
    for node in onnx_graph.iter_nodes(model):
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    changed = 0
    for node in graph.node:
        if node.op_type != "Gemm" or len(node.input) < 3 or node.input[2] not in inits or uses.get(node.input[2]) != 1:
            continue
        t = inits[node.input[2]]
        if len(t.dims) >= 2 and all(d == 1 for d in t.dims[:-1]):
            arr = numpy_helper.to_array(t)
            t.CopyFrom(numpy_helper.from_array(arr.reshape(arr.shape[-1]), t.name))
            changed += 1
    return changed


def weights_as_initializers(model: "onnx.ModelProto", log: Any) -> dict[str, Any]:
    """Constant nodes to initializers and constant subgraphs folded, in place: the weight-rewriting steps
    (quantize, fp16, int4) only see weights that are initializers. Returns what changed."""
    facts: dict[str, Any] = {"constants_to_initializers": constants_to_initializers(model)}
    try:
        facts["folded_nodes"] = fold_constants(model)
    except Exception as exc:   # an op ONNX Runtime cannot run on its own: leave the graph as it is
        facts["folded_nodes"] = 0
        facts["folding_skipped"] = f"{type(exc).__name__}: {str(exc).strip()[:200]}"
        log.warning("constant folding skipped: %s", facts["folding_skipped"])
    if facts["constants_to_initializers"] or facts["folded_nodes"]:
        log.info("pre-processing: %d Constant node(s) became initializers, %d constant node(s) folded",
                 facts["constants_to_initializers"], facts["folded_nodes"])
    return facts


def constants_to_initializers(model: "onnx.ModelProto") -> int:
    """Replace main-graph `Constant` nodes by initializers of the same name; returns how many."""
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model.graph
    outputs = {o.name for o in graph.output}
    keep, moved = [], 0
    for node in graph.node:
        if node.op_type != "Constant" or node.domain not in ("", "ai.onnx") or node.output[0] in outputs:
            keep.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if "value" in attrs:
            arr = numpy_helper.to_array(attrs["value"])
        elif "value_float" in attrs:
            arr = np.asarray(attrs["value_float"], dtype=np.float32)
        elif "value_floats" in attrs:
            arr = np.asarray(list(attrs["value_floats"]), dtype=np.float32)
        elif "value_int" in attrs:
            arr = np.asarray(attrs["value_int"], dtype=np.int64)
        elif "value_ints" in attrs:
            arr = np.asarray(list(attrs["value_ints"]), dtype=np.int64)
        else:   # sparse or string constants stay nodes
            keep.append(node)
            continue
        graph.initializer.append(numpy_helper.from_array(np.asarray(arr), node.output[0]))
        moved += 1
    if moved:
        graph.ClearField("node")
        graph.node.extend(keep)
    return moved


def fold_constants(model: "onnx.ModelProto") -> int:
    """Evaluate main-graph nodes whose inputs are all initializers, once, and store their results as
    initializers (weights behind Transpose / Cast / Reshape / DequantizeLinear-free chains). Returns the
    number of nodes folded."""
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    graph = model.graph
    overridable = {v.name for v in graph.input}   # an initializer that is also an input is only a default
    const = {t.name for t in graph.initializer} - overridable
    graph_outputs = {o.name for o in graph.output}
    folded: list[Any] = []
    for node in graph.node:
        inputs = [i for i in node.input if i]
        if (not inputs or node.domain not in ("", "ai.onnx") or node.op_type in _NO_FOLD
                or any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)
                or not all(i in const for i in inputs) or any(o in graph_outputs for o in node.output)):
            continue
        folded.append(node)
        const.update(o for o in node.output if o)
    if not folded:
        return 0
    folded_ids = {id(n) for n in folded}
    rest = [n for n in graph.node if id(n) not in folded_ids]
    produced = {o for n in folded for o in n.output if o}
    needed = sorted(produced & (_reads(rest) | graph_outputs))
    if not needed:
        return 0
    read = {i for n in folded for i in n.input if i}
    inits = [t for t in graph.initializer if t.name in read]
    sub = helper.make_graph(list(folded), "fold", [], [onnx.ValueInfoProto(name=n) for n in needed], inits)
    sub_model = helper.make_model(sub, opset_imports=list(model.opset_import))
    sub_model.ir_version = model.ir_version
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(sub_model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    values = sess.run(needed, {})
    graph.ClearField("node")
    graph.node.extend(rest)
    graph.initializer.extend(numpy_helper.from_array(v, n) for n, v in zip(needed, values))
    used = _reads(list(graph.node)) | graph_outputs
    keep = [t for t in graph.initializer if t.name in used]
    graph.ClearField("initializer")
    graph.initializer.extend(keep)
    return len(folded)


# Per-channel weights need DequantizeLinear's `axis`, which arrived in opset 13; PaddleOCR and many older
# exporters write opset 11 or 12, and ONNX Runtime's quantizer then writes an invalid model.
PER_CHANNEL_OPSET = 13


def upgrade_opset(model: "onnx.ModelProto", want: int, max_opset: int, log: Any) -> tuple["onnx.ModelProto", dict[str, Any]]:
    """The model at default-domain opset `want` when it is older (onnx.version_converter), within `max_opset`.

    Returns (model, facts): {"from", "to"} when converted, {"from", "kept", "reason"} when the model stays
    at its opset (the caller then avoids what needs the newer one), {} when nothing was needed."""
    import onnx
    from onnx import version_converter


    have = onnx_graph.default_opset(model)
    if have == 0 or have >= want:
        return model, {}
    if want > max_opset:
        return model, {"from": have, "kept": have,
                       "reason": f"the targets' runtimes load opset {max_opset} at most, below {want}"}
    try:
        converted = version_converter.convert_version(model, want)
        onnx.checker.check_model(converted)
    except Exception as exc:   # the converter lacks an adapter for some op, or writes a graph the checker rejects
        reason = f"onnx.version_converter failed: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}"
        log.warning("opset %d -> %d: %s", have, want, reason)
        return model, {"from": have, "kept": have, "reason": reason}
    log.info("converted the model from opset %d to %d (per-channel weights need opset %d)", have, want, want)
    return converted, {"from": have, "to": want}


def per_channel_opset(model: "onnx.ModelProto", per_channel: bool, max_opset: int,
                      log: Any) -> tuple["onnx.ModelProto", bool, dict[str, Any] | None]:
    """Make per-channel weights possible on an opset < 13 model: convert it, or fall back to per-tensor weights.

    Returns (model, per-channel still allowed, facts for the manifest or None when nothing was needed)."""
    model, facts = upgrade_opset(model, PER_CHANNEL_OPSET, max_opset, log)
    if not facts:
        return model, True, None
    if "to" in facts:
        return model, True, facts
    if per_channel:
        log.warning("per-channel weights need opset %d: quantizing per tensor instead", PER_CHANNEL_OPSET)
    return model, False, facts


def infer_shapes(model: "onnx.ModelProto", log: Any) -> tuple["onnx.ModelProto", int]:
    """ONNX shape inference (types and shapes of intermediate tensors); (model, values it typed)."""
    import onnx

    before = len(model.graph.value_info)
    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
    except Exception as exc:   # onnx raises assorted errors on graphs it cannot follow
        log.warning("shape inference skipped: %s", str(exc).strip()[:200])
        return model, 0
    return inferred, max(len(inferred.graph.value_info) - before, 0)


def _reads(nodes: Iterable[Any]) -> set[str]:
    """Every tensor name `nodes` read, their subgraphs included."""
    import onnx

    out: set[str] = set()
    for n in nodes:
        out.update(i for i in n.input if i)
        for a in n.attribute:
            graphs = [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)
            for g in graphs:
                out |= _reads(g.node)
    return out


# -- what was quantized ------------------------------------------------------------------------------

def quantized_nodes(model: "onnx.ModelProto") -> list[str]:
    """Names (or op types, for unnamed nodes) of the nodes whose weights are stored as integers: an
    integer op with an integer initializer weight, or a node reading DequantizeLinear of an integer
    initializer. Weights quantized at run time (DynamicQuantizeLinear of a Constant) do not count."""

    out: set[str] = set()
    for g in onnx_graph.iter_graphs(model.graph):
        int_inits = {t.name for t in g.initializer if t.data_type in _INT_TYPES}
        dq_weights = {n.output[0] for n in g.node if n.op_type == "DequantizeLinear" and n.input[0] in int_inits}
        for n in g.node:
            idx = _INTEGER_WEIGHT_INPUT.get(n.op_type)
            if idx is not None and len(n.input) > idx and n.input[idx] in int_inits:
                out.add(n.name or n.op_type)
            elif n.op_type not in ("DequantizeLinear", "QuantizeLinear") and any(i in dq_weights for i in n.input):
                out.add(n.name or n.op_type)
    return sorted(out)


def nothing_quantized(model: "onnx.ModelProto", op_types: Iterable[str], excluded: Iterable[str] = ()) -> str:
    """Why no node was quantized, for the StepError."""
    ops = set(op_types)
    g = model.graph
    present = [n for n in g.node if n.op_type in ops and n.op_type in WEIGHT_OPS]
    if not present:
        return f"the model has no {'/'.join(sorted(ops & WEIGHT_OPS) or sorted(ops))} node"
    inits = {t.name for t in g.initializer}
    consts = {n.output[0] for n in g.node if n.op_type == "Constant"}
    with_weights = [n for n in present if any(i in inits for i in n.input)]
    kinds = "/".join(sorted({n.op_type for n in present}))
    if not with_weights:
        where = ("Constant nodes" if any(i in consts for n in present for i in n.input)
                 else "other nodes, at run time")
        return (f"none of its {len(present)} {kinds} node(s) has constant weights (an initializer): their weights "
                f"come from {where}")
    excl = set(excluded)
    if all(n.name in excl for n in with_weights):
        return f"every {kinds} node with weights is kept in float ({len(with_weights)})"
    return f"ONNX Runtime's quantizer left all {len(with_weights)} {kinds} node(s) with weights in float"


# -- types from the target ---------------------------------------------------------------------------

@dataclass
class Types:
    activation_type: str
    weight_type: str
    per_channel: bool
    reduce_range: bool
    reason: str

    def facts(self) -> dict[str, Any]:
        return {"activation_type": self.activation_type, "weight_type": self.weight_type,
                "per_channel": self.per_channel, "reduce_range": self.reduce_range, "reason": self.reason}


def auto_types(target: dict[str, Any] | None) -> Types:
    """The integer types ONNX Runtime's CPU kernels (MLAS) run fastest on this target's CPU.

    - x86-64: U8S8 (uint8 activations, int8 weights). MLAS's x86 int8 GEMM and symmetric-conv
      kernels are U8S8 (VPMADDUBSW on AVX2/AVX-512, VPDPBUSD with VNNI); S8S8 has no fast x86
      kernel short of AVX-VNNI-INT8 and falls back to portable code, which is why int8 activations
      ran slower than FP32 on most conv models. Without VNNI, VPMADDUBSW adds pairs of u8*s8
      products in 16 bits and can saturate: ONNX Runtime's guidance is 7-bit weights
      (reduce_range) there, per-channel or not. With VNNI there is no saturation.
    - aarch64: S8S8. MLAS has native signed kernels on Arm64 (SDOT with dotprod, SMMLA with i8mm,
      widening NEON multiplies without either), its symmetric int8 conv kernels take int8 weights,
      and ONNX Runtime keeps int8 QDQ activations native only on Arm; Arm has no saturation issue.
    - armv7l: U8S8: 32-bit Arm's NEON int8 GEMM takes unsigned activations (U8X8).
    - wasm32: U8S8: onnxruntime-web's int8 GEMM kernels (WebAssembly SIMD and relaxed SIMD) are U8X8.
      The SIMD128 kernel widens to 16 bits before multiplying (no saturation); relaxed SIMD's int8
      dot product takes one 7-bit operand, so with `relaxed-simd` weights are 7-bit (reduce_range).
    - No target (a step that is not per target): U8S8, ONNX Runtime's x86-64 default.
    Per-channel weights everywhere: every one of these kernels takes per-channel weight scales at no
    run-time cost, and they keep convolutions with uneven filters accurate.
    """
    if not target:
        return Types("uint8", "int8", True, False, "no target profile: U8S8, ONNX Runtime's default kernels")
    cpu = target.get("cpu") or {}
    arch = cpu.get("arch", "")
    feats = set(cpu.get("features") or [])
    # the reasons name the CPU class, not the target: targets that resolve alike share one build (and its facts)
    if arch == "x86_64":
        if feats & {"vnni", "avx512-vnni", "amx"}:
            return Types("uint8", "int8", True, False, "x86-64 with VNNI: U8S8 runs on VPDPBUSD")
        if feats & {"avx2", "avx512"}:
            return Types("uint8", "int8", True, True,
                         "x86-64 with AVX2/AVX-512 but no VNNI: U8S8 on VPMADDUBSW, 7-bit weights against its 16-bit saturation")
        return Types("uint8", "int8", True, False, "x86-64 without AVX2: U8S8")
    if arch == "aarch64":
        how = "SMMLA (i8mm)" if "i8mm" in feats else "SDOT (dotprod)" if "dotprod" in feats else "widening NEON"
        return Types("int8", "int8", True, False, f"Arm64: S8S8 on {how}")
    if arch == "armv7l":
        return Types("uint8", "int8", True, False, "32-bit Arm: U8S8 (NEON U8X8 kernels)")
    if arch == "wasm32":
        if "relaxed-simd" in feats:   # relaxed SIMD's int8 dot product takes a 7-bit operand: 7-bit weights are safe
            return Types("uint8", "int8", True, True, "WebAssembly relaxed SIMD: U8S8, 7-bit weights")
        return Types("uint8", "int8", True, False, "WebAssembly: U8S8 (U8X8 SIMD kernels)")
    return Types("uint8", "int8", True, False, f"{arch or 'unknown CPU'}: U8S8")


def resolve_types(params: dict[str, Any], target: dict[str, Any] | None, dynamic: bool = False) -> Types:
    """The step's types with every `auto` replaced by `auto_types(target)`'s choice."""
    auto = auto_types(target)
    act = "uint8" if dynamic else (auto.activation_type if params.get("activation_type") == "auto" else params["activation_type"])
    wt = auto.weight_type if params.get("weight_type") == "auto" else params["weight_type"]
    pc = auto.per_channel if params.get("per_channel") == "auto" else bool(params.get("per_channel"))
    if dynamic:
        rr_param = params.get("reduce_range", False)
        rr = auto.reduce_range if rr_param == "auto" else bool(rr_param)
    else:   # quantize-static has no reduce_range parameter: it follows the automatic types
        rr = auto.reduce_range and (params.get("activation_type") == "auto" or params.get("weight_type") == "auto")
        if act == "int8" and wt == "int8":
            rr = False   # reduce_range is for the U8S8 kernels' saturation
    reason = auto.reason if uses_auto(params, ("activation_type", "weight_type", "per_channel", "reduce_range")) else "as given"
    return Types(act, wt, pc, rr, reason)


def resolved(params: dict[str, Any], target: dict[str, Any], dynamic: bool = False) -> dict[str, Any]:
    """What a quantize step takes from its target, as concrete values (its cache key's target part): the
    types `auto` picks and, with an accuracy goal, the thread count its speed check runs with."""
    t = resolve_types(params, target, dynamic)
    out: dict[str, Any] = {"activation_type": t.activation_type, "weight_type": t.weight_type,
                           "per_channel": t.per_channel, "reduce_range": t.reduce_range}
    if params.get("accuracy"):
        out["threads"] = threads_for(target)
    return out


def uses_auto(params: dict[str, Any], keys: Iterable[str]) -> bool:
    return any(params.get(k) == "auto" for k in keys)


def threads_for(target: dict[str, Any] | None) -> int:
    """The target's inference threads, capped at this host's CPUs (1 without a target)."""
    want = int(((target or {}).get("cpu") or {}).get("threads") or 1)
    return max(1, min(want, os.cpu_count() or 1))


# -- running models ----------------------------------------------------------------------------------

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


# "Faster than FP32" must be a measurable gain: at least MIN_GAIN, and more than the uncertainty of the
# measured ratio (its bootstrap interval, capped at MAX_MARGIN), so a model at parity with FP32 is refused every time
# instead of passing or failing by chance. FP32 and the quantized model are timed interleaved, pair by
# pair (edgebuild.onnx.graph.paired_latency), so a busy host slows both sides alike.
MIN_GAIN = 0.03
MAX_MARGIN = 0.2


SETTLE_S = 12.0   # the most a speed check times FP32 and the candidate when the first budget leaves it unclear


def required_gain(noise: float) -> float:
    """The speed-up over FP32 (as a fraction) that counts as faster, given the paired timing's noise."""
    return min(max(MIN_GAIN, noise), MAX_MARGIN)


def decided(pair: onnx_runtime.Paired) -> bool:
    """Whether a paired timing settles "faster than FP32": clearly faster (the bar its noise sets is met),
    clearly not (even the optimistic end of its interval is below the 3 % bar), or measured so precisely that
    its noise is within that bar. Otherwise the speed check times more pairs, up to SETTLE_S."""
    speedup = 1.0 / pair.ratio if pair.ratio > 0 else 0.0
    return (speedup >= 1 + required_gain(pair.noise) or speedup * (1 + pair.noise) < 1 + MIN_GAIN
            or pair.noise <= MIN_GAIN)


# -- range mixing ------------------------------------------------------------------------------------

def _span(lo: float, hi: float) -> float:
    return max(abs(float(lo)), abs(float(hi)))


def tensor_spans(model: "onnx.ModelProto", ranges: Any) -> dict[str, float]:
    """Tensor name -> max |value|: calibrated ranges of activations, and the values of initializers."""
    import numpy as np
    from onnx import numpy_helper

    out: dict[str, float] = {}
    for name in ranges:
        try:
            lo, hi = ranges[name].range_value
        except (AttributeError, TypeError, ValueError):
            continue
        out[name] = _span(np.min(lo), np.max(hi))
    for t in model.graph.initializer:
        if t.data_type in (1, 10, 11) and t.name not in out:
            arr = numpy_helper.to_array(t)
            out[t.name] = float(np.max(np.abs(arr))) if arr.size else 0.0
    return out


def range_mixing(model: "onnx.ModelProto", spans: dict[str, float], ratio: float = RATIO) -> list[dict[str, Any]]:
    """Nodes that put tensors of very different ranges into one tensor (largest range / smallest > ratio).

    When the mixed tensor only flows to graph outputs through nodes without weights (an output head,
    e.g. YOLO's Concat of boxes and scores), `keep_fp32` lists the node and those nodes: kept in
    float, the tensor is never quantized. When a layer with weights reads it (a Concat inside the
    backbone), that layer quantizes it with one scale whatever this node does: `keep_fp32` is empty.
    """

    g = model.graph
    consumers = _consumers(g)
    outputs = {o.name for o in g.output}
    inits = {t.name for t in g.initializer}
    found = []
    for node in g.node:
        which = MIXING_OPS.get(node.op_type)
        if which is None:
            continue
        vals = [spans[i] for i in list(node.input)[which] if i and i in spans and spans[i] > 1e-12]
        if len(vals) < 2 or max(vals) / min(vals) <= ratio:
            continue
        head = _downstream_head(node, consumers, outputs, inits)
        entry: dict[str, Any] = {"node": node.name, "ratio": onnx_runtime.sig3(max(vals) / min(vals)),
                                 "input_ranges": [onnx_runtime.sig3(v) for v in vals]}
        if head is None:
            # a layer with weights reads the mixed tensor and quantizes it with one scale anyway:
            # keeping this node in float would cost speed and save nothing
            entry.update(head=False, keep_fp32=[])
        else:
            entry.update(head=True, keep_fp32=[node.name] + [n for n in head if n != node.name])
        found.append(entry)
    return found


def _consumers(g: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for n in g.node:
        for i in set(n.input):
            if i:
                out.setdefault(i, []).append(n)
    return out


def _producers(g: Any) -> dict[str, Any]:
    return {o: n for n in g.node for o in n.output if o}


def _has_weights(node: Any, inits: set[str]) -> bool:
    return node.op_type in WEIGHT_OPS and any(i in inits for i in node.input)


def _downstream_head(node: Any, consumers: dict[str, list[Any]], outputs: set[str], inits: set[str]) -> list[str] | None:
    """The nodes after `node` up to the graph outputs when its output reaches a graph output and no
    node after it has weights (an output head); None otherwise."""
    seen: dict[str, Any] = {}
    stack = list(node.output)
    reaches_output = False
    while stack:
        t = stack.pop()
        if t in outputs:
            reaches_output = True
        for c in consumers.get(t, []):
            if c.name in seen:
                continue
            if _has_weights(c, inits):
                return None
            seen[c.name] = c
            stack.extend(c.output)
    return sorted(seen) if reaches_output else None


def output_heads(model: "onnx.ModelProto") -> list[str]:
    """Nodes between the last layers with weights and the graph outputs, those last layers included
    (walking back from each output, stopping at a node with weights), in graph order."""
    g = model.graph
    prod = _producers(g)
    inits = {t.name for t in g.initializer}
    seen: set[str] = set()
    stack = [o.name for o in g.output]
    while stack:
        n = prod.get(stack.pop())
        if n is None or n.name in seen:
            continue
        seen.add(n.name)
        if _has_weights(n, inits):
            continue
        stack.extend(i for i in n.input if i and i not in inits)
    return [n.name for n in g.node if n.name in seen]


# -- sensitivity ---------------------------------------------------------------------------------------

def sensitivity(fp32: "onnx.ModelProto", quant: "onnx.ModelProto", nodes: list[str], feeds: list[dict[str, Any]]) -> dict[str, float]:
    """Node name -> the relative error the node adds in the quantized model, on these samples.

    Both models run with every float tensor they share as an output (no graph optimizations, so
    nothing is fused away). A tensor's error is ||quantized - fp32|| / ||fp32|| (for a Concat output,
    the worst of its parts, so small scores next to large boxes are not hidden). A node's added error
    is the error at its output (the nearest shared tensor downstream) minus the worst error at its
    inputs (nearest shared tensors upstream; 0 at graph inputs): the error its own quantization
    (weights, and its input activations as it reads them) brings in.
    """
    import numpy as np
    import onnx

    g = fp32.graph
    qnames = {o for n in quant.graph.node for o in n.output} | {o.name for o in quant.graph.output}
    fnames = [o for n in g.node for o in n.output if o]
    probes = [t for t in dict.fromkeys(fnames) if t in qnames]
    if not probes:
        return {n: 0.0 for n in nodes}
    segments = _concat_segments(g)

    def probe_model(m: "onnx.ModelProto") -> Any:
        m2 = onnx.ModelProto()
        m2.CopyFrom(m)
        have = {o.name for o in m2.graph.output}
        for t in probes:
            if t not in have:
                m2.graph.output.append(onnx.ValueInfoProto(name=t))
        return onnx_runtime.session(m2, threads=1, optimize=False)

    fs, qs = probe_model(fp32), probe_model(quant)
    clamps = _fused_activations(fp32, quant, probes)
    # per probe: squared error and squared reference, per part (one part, or one per Concat input)
    err_sq: dict[str, Any] = {}
    ref_sq: dict[str, Any] = {}
    for feed in feeds:
        fo = dict(zip(probes, fs.run(probes, feed)))
        qo = dict(zip(probes, qs.run(probes, feed)))
        for t in probes:
            f, q = np.asarray(fo[t]), np.asarray(qo[t])
            if f.dtype.kind != "f" or f.shape != q.shape:
                continue
            f64, q64 = f.astype(np.float64), q.astype(np.float64)
            if t in clamps:   # the quantizer dropped this Relu/Clip: its output's Q/DQ range clamps instead
                q64 = np.clip(q64, *clamps[t])
            axis, sizes = segments.get(t, (0, [f64.shape[0] if f64.ndim else 1]))
            if f64.ndim == 0 or sum(sizes) != f64.shape[axis]:
                f64, q64, axis, sizes = f64.reshape(1, -1), q64.reshape(1, -1), 0, [1]
            cuts = np.cumsum(sizes)[:-1]
            fp, qp = np.split(f64, cuts, axis=axis), np.split(q64, cuts, axis=axis)
            e = np.array([np.sum((a - b) ** 2) for a, b in zip(qp, fp)])
            r = np.array([np.sum(b ** 2) for b in fp])
            err_sq[t] = err_sq[t] + e if t in err_sq else e
            ref_sq[t] = ref_sq[t] + r if t in ref_sq else r
    err: dict[str, float] = {t: float(np.max(np.sqrt(err_sq[t] / np.maximum(ref_sq[t], 1e-30)))) for t in err_sq}
    prod, cons = _producers(g), _consumers(g)
    inits = {t.name for t in g.initializer}
    out: dict[str, float] = {}
    by_name = {n.name: n for n in g.node}
    for name in nodes:
        node = by_name.get(name)
        if node is None:
            continue
        after = _nearest(list(node.output), err, lambda t: [o for c in cons.get(t, []) for o in c.output])
        before = [(_nearest([i], err, lambda t: [x for x in (prod[t].input if t in prod else []) if x and x not in inits]))
                  for i in node.input if i and i not in inits]
        worst_in = max([b for b in before if b is not None], default=0.0)
        out[name] = max((after or 0.0) - worst_in, 0.0)
    return out


def _fused_activations(fp32: Any, quant: Any, probes: list[str]) -> dict[str, tuple[float, float]]:
    """Probed tensors made by a Relu/Clip in the FP32 model but by another node in the quantized one
    (ONNX Runtime's QDQ quantizer removes activations its output range already clamps): tensor ->
    (low, high) to clamp the quantized model's pre-quantization value with before comparing."""
    import numpy as np
    from onnx import helper, numpy_helper

    fprod, qprod = _producers(fp32.graph), _producers(quant.graph)
    inits = {t.name: t for t in fp32.graph.initializer}
    out: dict[str, tuple[float, float]] = {}
    for t in probes:
        f, q = fprod.get(t), qprod.get(t)
        if f is None or q is None or f.op_type == q.op_type or f.op_type not in ("Relu", "Clip"):
            continue
        if f.op_type == "Relu":
            out[t] = (0.0, np.inf)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in f.attribute}
        lo, hi = float(attrs.get("min", -np.inf)), float(attrs.get("max", np.inf))
        for idx in (1, 2):
            if len(f.input) > idx and f.input[idx] in inits:
                v = float(numpy_helper.to_array(inits[f.input[idx]]).reshape(-1)[0])
                lo, hi = (v, hi) if idx == 1 else (lo, v)
        out[t] = (lo, hi)
    return out


def _nearest(start: list[str], err: dict[str, float], step: Callable[[str], list[str]], depth: int = 4) -> float | None:
    """The worst error among the nearest probed tensors from `start`, walking with `step`."""
    frontier, seen = list(start), set()
    for _ in range(depth):
        hit = [err[t] for t in frontier if t in err]
        if hit:
            return max(hit)
        nxt = []
        for t in frontier:
            if t in seen:
                continue
            seen.add(t)
            nxt.extend(step(t))
        if not nxt:
            return None
        frontier = nxt
    return None


def _concat_segments(g: Any) -> dict[str, tuple[int, list[int]]]:
    """Concat output -> (axis, sizes of its inputs along it), where value_info knows the sizes."""

    shapes = {v.name: onnx_graph.dims(v) for v in list(g.value_info) + list(g.input) + list(g.output)}
    shapes.update({t.name: list(t.dims) for t in g.initializer})
    out = {}
    for n in g.node:
        if n.op_type != "Concat":
            continue
        axis = next((a.i for a in n.attribute if a.name == "axis"), 0)
        sizes: list[int] = []
        for i in n.input:
            s = shapes.get(i)
            if not s or not isinstance(s[axis] if -len(s) <= axis < len(s) else None, int):
                sizes = []
                break
            sizes.append(int(s[axis]))
        if sizes:
            out[n.output[0]] = (axis, sizes)
    return out


# -- the accuracy-aware search -------------------------------------------------------------------------

@dataclass
class Goal:
    data: str
    metric: str
    limit: dict[str, float]         # {"min": x} or {"max": x}
    samples: int
    faster: bool

    @classmethod
    def from_params(cls, acc: dict[str, Any]) -> "Goal":
        limit = {k: float(acc[k]) for k in ("min", "max") if acc.get(k) is not None}
        return cls(acc["data"], acc["metric"], limit, int(acc.get("samples") or ACCURACY_SAMPLES),
                   bool(acc.get("faster", True)))

    def text(self) -> str:
        key, value = next(iter(self.limit.items()))
        return f"{self.metric} {'>=' if key == 'min' else '<='} {value:.10g}"

    def show(self, x: float) -> str:
        """A metric value with enough digits to tell it from the goal (0.99999 is not "1" next to 0.9999999)."""
        limit = next(iter(self.limit.values()))
        for digits in (4, 6, 8, 10):
            if f"{x:.{digits}g}" != f"{limit:.{digits}g}":
                return f"{x:.{digits}g}"
        return f"{x:.10g}"


@dataclass
class Candidate:
    method: str | None
    per_channel: bool
    excluded: tuple[str, ...]
    ops: str | None = None   # quantize-static's op set ("weighted", "all"); None for dynamic
    model: Any = None
    quantized: int = 0
    metric: float = float("nan")      # the worse of the two below: what the search ranks and the goal gates
    simulated: float = float("nan")   # Q/DQ simulated in float (no graph optimizations): host-independent
    kernels: float = float("nan")     # ONNX Runtime's fused int8 kernels on the build host, the target's threads
    ms: float = float("nan")
    meets: bool = False
    note: str = ""

    def facts(self) -> dict[str, Any]:

        out: dict[str, Any] = {}
        if self.method is not None:
            out["method"] = self.method
        if self.ops is not None:
            out["op_types"] = self.ops
        out.update(per_channel=self.per_channel, excluded=len(self.excluded), quantized_nodes=self.quantized,
                   metric=onnx_runtime.sig3(self.metric) if self.metric == self.metric else None,
                   simulated=onnx_runtime.sig3(self.simulated) if self.simulated == self.simulated else None,
                   kernels=onnx_runtime.sig3(self.kernels) if self.kernels == self.kernels else None,
                   ms=round(self.ms, 3) if self.ms == self.ms else None, meets=self.meets)
        if self.note:
            out["note"] = self.note
        return out


Config = tuple["str | None", bool, "str | None"]   # (method, per_channel, op set): one setting the search tries


def _ops_text(ops: str | None) -> str:
    return f" op_types={ops}" if ops else ""


@dataclass
class AccuracySearch:
    """Quantize, measure the goal's metric against the FP32 model, and search until it is met.

    `build(method, per_channel, ops, excluded)` returns the quantized ModelProto (None when it quantized
    nothing). `configs` lists (method, per_channel, ops) settings, the step's own first. `ranking(model)` gives
    the exclusion units in the order to keep them in float (each unit a list of node names), from a
    quantized candidate. Candidates that meet the goal are compared by how many nodes they keep in
    float (fewer is faster), then by metric; the search stops at MAX_QUANTIZATIONS.
    """

    ctx: RunContext
    goal: Goal
    fp32_model: Path
    build: Callable[[str | None, bool, str | None, tuple[str, ...]], Any]
    configs: list[Config]
    base_excluded: tuple[str, ...]
    ranking: Callable[[Any], list[list[str]]]
    why_nothing: Callable[[], str] = lambda: "ONNX Runtime's quantizer left every node in float"
    tried: list[Candidate] = field(default_factory=list)

    def run(self) -> tuple[Candidate, dict[str, Any]]:
        from edgebuild.engine import hostinfo

        ctx, goal = self.ctx, self.goal
        self._load_data()
        self.threads = threads_for(ctx.target)
        self.fp32_sess = onnx_runtime.session(self.fp32_model, threads=self.threads)
        # the reference: FP32 without graph optimizations, the same numbers on every host. Candidates are
        # scored against it simulated (host-independent) and on this host's int8 kernels (`_try`), so the
        # bytes picked depend on the build host only where its kernels and the simulation disagree about the
        # goal; the facts name that host
        self.ref = outputs(onnx_runtime.session(self.fp32_model, optimize=False), self.feeds)
        first = self._try(*self.configs[0], self.base_excluded)
        if first is None or first.model is None:
            raise StepError(f"no node was quantized: {self.why_nothing()}",
                            hint="check the model has Conv/MatMul/Gemm nodes with constant weights, and `preprocess: true`")
        chosen = first if first.meets else None
        if chosen is None:
            ctx.log.info("accuracy goal %s not met (%s = %.4g): searching", goal.text(), goal.metric, first.metric)
            chosen = self._search()
        if chosen is None:
            best = max((c for c in self.tried if c.metric == c.metric), key=lambda c: self._score(c.metric), default=first)
            raise StepError(
                f"the accuracy goal {goal.text()} on dataset '{goal.data}' is not met: the best of {len(self.tried)} "
                f"quantization(s) reached {goal.show(best.metric)} ({best.method or 'dynamic'}, per_channel={best.per_channel}, "
                f"{'op_types=' + best.ops + ', ' if best.ops else ''}"
                f"{len(best.excluded)} node(s) in float); the first reached {goal.show(first.metric)}",
                hint="lower the goal, calibrate on more representative samples, or let `best:` pick another variant",
                recipe_path=("steps", ctx.step_id, "with", "accuracy"))
        # a careful comparison when it decides the outcome, a quick one when it is only reported
        pair = onnx_runtime.paired_latency(self.fp32_sess, onnx_runtime.session(chosen.model, threads=self.threads), self.timing_feed,
                                    budget_s=1.5 if goal.faster else 0.2, settled=decided if goal.faster else None,
                                    max_s=SETTLE_S)
        fp32_ms, q_ms, speedup = pair.a_ms, pair.b_ms, 1.0 / pair.ratio if pair.ratio > 0 else 0.0
        gain = required_gain(pair.noise)
        facts = {
            "data": goal.data, "metric": goal.metric, "goal": {k: v for k, v in goal.limit.items()},
            "samples": self.n, "before": onnx_runtime.sig3(first.metric), "after": onnx_runtime.sig3(chosen.metric),
            "fp32_nodes": list(chosen.excluded), "threads": self.threads,
            "simulated": onnx_runtime.sig3(chosen.simulated), "kernels": onnx_runtime.sig3(chosen.kernels),
            "kernels_host": {k: v for k, v in hostinfo.cpu_class().items() if k in ("cpu", "isa")},
            "latency_ms": {"fp32": round(fp32_ms, 3), "quantized": round(q_ms, 3), "speedup": round(speedup, 2),
                           **({"required_speedup": round(1 + gain, 2)} if goal.faster else {}),
                           "pairs": pair.pairs, "noise": round(pair.noise, 4), "spread": round(pair.spread, 4)},
            "search": [c.facts() for c in self.tried],
        }
        ctx.log.info("chosen: %s=%.4g with %d node(s) in float; latency FP32 %.3f ms, quantized %.3f ms, speed-up %.2fx "
                     "over %d interleaved pairs (±%.1f%%; %d thread(s))", goal.metric, chosen.metric, len(chosen.excluded),
                     fp32_ms, q_ms, speedup, pair.pairs, 100 * pair.noise, self.threads)
        if goal.faster and not speedup >= 1 + gain:
            raise StepError(
                f"the quantized model meets {goal.text()} ({goal.show(chosen.metric)}) but is not faster than FP32 with "
                f"{self.threads} thread(s): {q_ms:.3f} ms vs {fp32_ms:.3f} ms, a speed-up of {speedup:.2f}x where at "
                f"least {1 + gain:.2f}x counts as faster ({pair.pairs} interleaved pairs, ±{pair.noise:.1%}; "
                f"{len(chosen.excluded)} node(s) kept in float)",
                hint="int8 pays off for conv/matmul-heavy models on CPUs with fast int8 kernels; try the other "
                     "quantization step, or set `accuracy: {faster: false}` to keep it anyway",
                recipe_path=("steps", ctx.step_id, "with", "accuracy"))
        return chosen, facts

    # -- internals

    def _load_data(self) -> None:
        import numpy as np

        from edgebuild.frontend import datasets

        ctx, goal = self.ctx, self.goal
        if goal.data not in ctx.data:
            raise StepError(f"dataset '{goal.data}' is not declared under `data:`",
                            recipe_path=("steps", ctx.step_id, "with", "accuracy", "data"))
        path = Path(ctx.data[goal.data])
        model = _load(self.fp32_model)
        specs = _graph_inputs(model)
        names = list(specs)
        try:
            arrays = datasets.inspect(path)
        except (OSError, ValueError) as exc:
            raise StepError(f"cannot read dataset '{goal.data}': {exc}", recipe_path=("data", goal.data)) from None
        missing = [i for i in names if i not in arrays]
        if missing:
            raise StepError(f"dataset '{goal.data}' has no array for model input(s) {', '.join(missing)} "
                            f"(it has: {', '.join(arrays) or 'no arrays'})", recipe_path=("data", goal.data))
        self.n = min(goal.samples, datasets.count(path, names))
        if self.n == 0:
            raise StepError(f"dataset '{goal.data}' holds no samples", recipe_path=("data", goal.data))
        self.feeds = list(cast_feeds(datasets.feeds(path, {k: specs[k] for k in names}, limit=self.n), specs))
        self.timing_feed = self.feeds[0]
        with np.load(path, allow_pickle=False) as npz:
            self.data = {k: npz[k][: self.n] if npz[k].ndim else npz[k] for k in npz.files}

    def _score(self, value: float) -> float:
        """Higher is better whatever the metric's direction (NaN worst)."""
        if value != value:
            return -math.inf
        return value if "min" in self.goal.limit else -value

    def _try(self, method: str | None, per_channel: bool, ops: str | None, excluded: tuple[str, ...]) -> Candidate | None:
        from edgebuild.checks import metrics

        if len(self.tried) >= MAX_QUANTIZATIONS:
            return None
        excluded = tuple(sorted(set(excluded)))
        for c in self.tried:
            if (c.method, c.per_channel, c.ops, c.excluded) == (method, per_channel, ops, excluded):
                return c
        cand = Candidate(method, per_channel, excluded, ops)
        self.tried.append(cand)
        try:
            model = self.build(method, per_channel, ops, excluded)
        except StepError as exc:
            if len(self.tried) == 1:   # the step's own settings: their failure is the step's
                raise
            # another method the search tries (e.g. percentile calibration on a model whose attention mask
            # puts -inf into a tensor) is a candidate that missed, not the end of the search
            cand.note = f"failed: {exc.message}"
            self.ctx.log.warning("candidate %s per_channel=%s%s float=%d failed: %s", method or "dynamic", per_channel,
                                 _ops_text(ops), len(excluded), exc.message)
            return cand
        if model is None:
            cand.note = "no node quantized"
            self.ctx.log.info("candidate %s per_channel=%s%s float=%d: no node quantized", method, per_channel, _ops_text(ops),
                              len(excluded))
            return cand
        cand.model = model
        cand.quantized = len(quantized_nodes(model))
        # scored twice: with Q/DQ simulated in float (the same on every host), and as the runtime runs it here,
        # fused int8 kernels and the target's threads (what `checks:` measures; without VNNI, or on Arm, the
        # kernels round and saturate where the simulation does not); a candidate meets the goal when both do
        fused = onnx_runtime.session(model, threads=self.threads)
        cand.simulated = self._metric(onnx_runtime.session(model, optimize=False))
        cand.kernels = self._metric(fused)
        cand.metric = min(cand.simulated, cand.kernels, key=self._score)
        cand.meets = metrics.meets(cand.simulated, self.goal.limit) and metrics.meets(cand.kernels, self.goal.limit)
        cand.ms = latency_ms(fused, self.timing_feed, budget_s=0.1)
        self.ctx.log.info("candidate %s per_channel=%s%s float=%d: %s=%.4g simulated, %.4g on this host's kernels (%s), "
                          "%.3f ms", method or "dynamic", per_channel, _ops_text(ops), len(excluded), self.goal.metric,
                          cand.simulated, cand.kernels, "meets" if cand.meets else "misses", cand.ms)
        return cand

    def _metric(self, sess: Any) -> float:
        from edgebuild.checks import metrics

        try:
            got = outputs(sess, self.feeds)
            return metrics.evaluate(self.goal.metric, self.ref, got, self.data, self.ctx.recipe_dir)
        except metrics.MetricError as exc:
            raise StepError(f"metric '{self.goal.metric}': {exc}",
                            recipe_path=("steps", self.ctx.step_id, "with", "accuracy", "metric")) from None

    def _best(self, cands: list[Candidate]) -> Candidate | None:
        ok = [c for c in cands if c.meets and c.model is not None]
        if not ok:
            return None
        return min(ok, key=lambda c: (len(c.excluded), -self._score(c.metric), self.tried.index(c)))

    def _search(self) -> Candidate | None:
        # 1. other calibration methods / per-channel settings, with the step's own float nodes
        for method, pc, ops in self.configs[1:]:
            if self._try(method, pc, ops, self.base_excluded) is None:
                break
        found = self._best(self.tried)
        if found is not None:
            return found
        # 2. keep the most sensitive nodes in float, on the best configuration so far
        base = max((c for c in self.tried if c.model is not None), key=lambda c: self._score(c.metric))
        units = [u for u in self.ranking(base.model) if not set(u) <= set(self.base_excluded)]
        if not units:
            return None
        ks, k = [], 1
        while k < len(units):
            ks.append(k)
            k *= 2
        ks.append(len(units))
        lo, hi = 0, None
        results: dict[int, Candidate] = {}
        for k in ks:
            excl = tuple(self.base_excluded) + tuple(n for u in units[:k] for n in u)
            c = self._try(base.method, base.per_channel, base.ops, excl)
            if c is None:
                break
            results[k] = c
            if c.meets and c.model is not None:
                hi = k
                break
            if c.model is None:   # everything in float: nothing more to keep
                break
            lo = k
        if hi is None:
            return None
        while hi - lo > 1:   # fewer nodes in float, by bisection, while the budget lasts
            mid = (lo + hi) // 2
            excl = tuple(self.base_excluded) + tuple(n for u in units[:mid] for n in u)
            c = self._try(base.method, base.per_channel, base.ops, excl)
            if c is None:
                break
            results[mid] = c
            if c.meets and c.model is not None:
                hi = mid
            else:
                lo = mid
        return results[hi]


def rank_units(fp32: "onnx.ModelProto", quant: "onnx.ModelProto", candidates: list[str], feeds: list[dict[str, Any]],
               mixing: list[dict[str, Any]], log: Any) -> list[list[str]]:
    """Exclusion units (node names kept in float together), most important first.

    First the range-mixing groups; then one unit per candidate node, ordered by the error it adds
    (`sensitivity`), output-head nodes first among those that add any real error (at least a tenth
    of the worst). A node's unit is the node and the nodes that quantize its inputs (the producers,
    back through pass-through ops such as Relu or Reshape, whose Q/DQ pair ONNX Runtime shares
    with the producer): its added error comes from its weights and from its quantized inputs, and
    both must stay in float to remove it. Pass-through ops are not units of their own.
    """
    g = fp32.graph
    inits = {t.name for t in g.initializer}
    prod = _producers(g)
    nodes = {n.name: n for n in g.node}
    own = [n for n in candidates if n in nodes and nodes[n].op_type not in PASS_THROUGH]
    sens = sensitivity(fp32, quant, own, feeds)
    heads = set(output_heads(fp32))
    worst = max(sens.values(), default=0.0)
    units: list[list[str]] = []
    taken: set[str] = set()
    for group in mixing:
        unit = [n for n in group["keep_fp32"] if n not in taken]
        if unit:
            units.append(unit)
            taken.update(unit)
    order = sorted((n for n in own if n in sens and n not in taken),
                   key=lambda n: (0 if n in heads and sens[n] >= 0.1 * worst > 0 else 1, -sens[n], own.index(n)))
    cand_set = set(candidates)
    for n in order:
        unit = [n]
        stack = [i for i in nodes[n].input if i and i not in inits]
        seen: set[str] = set()
        while stack:
            p = prod.get(stack.pop())
            if p is None or p.name in seen or p.name not in cand_set:
                continue
            seen.add(p.name)
            unit.append(p.name)
            if p.op_type in PASS_THROUGH:
                stack.extend(i for i in p.input[:1] if i and i not in inits)
        unit = [u for u in dict.fromkeys(unit) if u not in taken] or [n]
        units.append(unit)
    top = ", ".join(f"{n} {sens[n]:.3g}" for n in sorted(sens, key=lambda n: -sens[n])[:5])
    log.info("sensitivity (added relative error), top: %s", top or "none")
    return units


def _load(path: Path) -> Any:

    return onnx_graph.load(path)


def _graph_inputs(model: Any) -> dict[str, dict[str, Any]]:

    return onnx_graph.graph_inputs(model)


def sensitivity_feeds(path: Path, model: Any, limit: int = SENSITIVITY_SAMPLES) -> list[dict[str, Any]]:
    from edgebuild.frontend import datasets

    specs = _graph_inputs(model)
    return list(cast_feeds(datasets.feeds(path, specs, limit=limit), specs))


# -- the `accuracy:` parameter (plan time: no heavy imports) -----------------------------------------

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
