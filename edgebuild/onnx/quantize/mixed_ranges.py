"""Range mixing: nodes that put tensors of very different ranges into one tensor.

A Concat that joins tensors of very different ranges (box coordinates in pixels next to class scores in
0..1) gets one scale for its output; 8 bits at 640/255 per step round every score to 0. `range_mixing()`
finds such nodes from the calibrated ranges of their inputs (`tensor_spans`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgebuild.onnx import runtime as onnx_runtime
from edgebuild.onnx.quantize import layers

if TYPE_CHECKING:  # pragma: no cover
    import onnx


# Ops that put their inputs side by side in one tensor (inputs that matter: all but Where's condition).
MIXING_OPS = {"Concat": slice(0, None), "Where": slice(1, 3)}


RATIO = 20.0          # range-mixing: largest input range over smallest


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
    consumers = layers.consumers(g)
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
            if layers.has_weights(c, inits):
                return None
            seen[c.name] = c
            stack.extend(c.output)
    return sorted(seen) if reaches_output else None
