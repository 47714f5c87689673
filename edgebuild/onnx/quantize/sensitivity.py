"""Which nodes to keep in float first: the error each node adds in a quantized model (`sensitivity`), and
the exclusion units the accuracy search keeps in float, most important first (`rank_units`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from edgebuild.onnx import graph as onnx_graph
from edgebuild.onnx import runtime as onnx_runtime
from edgebuild.onnx.quantize import layers
from edgebuild.onnx.quantize.running import cast_feeds

if TYPE_CHECKING:  # pragma: no cover
    import onnx


# Ops that pass a quantized tensor through (ONNX Runtime gives their output their input's Q/DQ
# parameters, or folds them into the producer): never a source of error of their own.
PASS_THROUGH = frozenset({"Relu", "Clip", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Slice",
                          "MaxPool", "Pad", "Resize", "Split", "Identity", "Dropout"})


SENSITIVITY_SAMPLES = 16


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
    prod, cons = layers.producers(g), layers.consumers(g)
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

    fprod, qprod = layers.producers(fp32.graph), layers.producers(quant.graph)
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


def output_heads(model: "onnx.ModelProto") -> list[str]:
    """Nodes between the last layers with weights and the graph outputs, those last layers included
    (walking back from each output, stopping at a node with weights), in graph order."""
    g = model.graph
    prod = layers.producers(g)
    inits = {t.name for t in g.initializer}
    seen: set[str] = set()
    stack = [o.name for o in g.output]
    while stack:
        n = prod.get(stack.pop())
        if n is None or n.name in seen:
            continue
        seen.add(n.name)
        if layers.has_weights(n, inits):
            continue
        stack.extend(i for i in n.input if i and i not in inits)
    return [n.name for n in g.node if n.name in seen]


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
    prod = layers.producers(g)
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


def sensitivity_feeds(path: Path, model: Any, limit: int = SENSITIVITY_SAMPLES) -> list[dict[str, Any]]:
    from edgebuild.frontend import datasets

    specs = onnx_graph.graph_inputs(model)
    return list(cast_feeds(datasets.feeds(path, specs, limit=limit), specs))
