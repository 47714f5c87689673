"""Pre-processing before ONNX Runtime's quantizers: Constant nodes to initializers, constant folding, shape
inference, unique node names, and the opset that per-channel weights need.

Exporters often leave weights in `Constant` nodes, or behind a chain of constant ops (Constant -> Transpose
-> MatMul, float16 Constant -> Cast -> Conv). ONNX Runtime's quantizers only quantize weights that are
initializers: dynamic quantization then quantizes nothing (the file grows by the quantization ops) or
quantizes the weights again at every run. `preprocess()` turns Constant nodes into initializers, folds
every node whose inputs are all constant (evaluated once with ONNX Runtime, optimizations off) and runs
ONNX shape inference, so the quantizer also sees the types of intermediate tensors. It is our own small
pass rather than onnxruntime's `quant_pre_process`, whose optimizer also fuses nodes (the fused graph is
ONNX Runtime's, not the input's) and whose symbolic shape inference fails on some exported graphs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable

from edgebuild.onnx import graph as onnx_graph

if TYPE_CHECKING:  # pragma: no cover
    import onnx


# Not folded: random, quantization (an existing Q/DQ pair stays as it is), and ops that expand a small
# constant into a large one (folding them would grow the file).
_NO_FOLD = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
                      "Bernoulli", "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "ConstantOfShape",
                      "Expand", "Tile", "Range", "EyeLike", "Constant", "If", "Loop", "Scan"})


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


@dataclass
class Prepared:
    """The model a quantize step hands its quantizer, and what was done to it (facts for the manifest)."""
    model: "onnx.ModelProto"
    preprocess: dict[str, Any] | None   # what `preprocess` changed; None when the step's `preprocess` is off
    opset: dict[str, Any] | None        # `per_channel_opset`'s facts; None when nothing was needed
    per_channel: bool                   # whether per-channel weights are possible on the model's opset


def prepare(model: "onnx.ModelProto", params: dict[str, Any], per_channel: bool, max_opset: int, log: Any) -> Prepared:
    """What both quantize steps do before their quantizer: `preprocess` when the step asks for it, then the
    opset per-channel weights need when they may be used (the step's own setting, or the accuracy search,
    which tries them too)."""
    pre: dict[str, Any] | None = None
    if params["preprocess"]:
        model, pre = preprocess(model, log)
    if not (per_channel or params.get("accuracy")):
        return Prepared(model, pre, None, True)
    model, possible, opset = per_channel_opset(model, per_channel, max_opset, log)
    return Prepared(model, pre, opset, possible)


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
