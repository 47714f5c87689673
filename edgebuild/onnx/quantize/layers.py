"""Layers with weights: which ops they are, the producer and consumer maps that walk a graph between them,
and which layers a quantizer stored with integer weights (or why none)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

from edgebuild.onnx import graph as onnx_graph

if TYPE_CHECKING:  # pragma: no cover
    import onnx


# Ops whose weight input makes them the compute of a layer (quantizing them is what speeds a model up).
WEIGHT_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm", "LSTM", "GRU", "Attention", "Gather"})
# Integer ops -> index of their weight input.
_INTEGER_WEIGHT_INPUT = {"MatMulInteger": 1, "ConvInteger": 1, "QLinearConv": 3, "QLinearMatMul": 3, "QGemm": 3,
                         "DynamicQuantizeMatMul": 1, "MatMulIntegerToFloat": 1, "QAttention": 1, "DynamicQuantizeLSTM": 1}
_INT_TYPES = frozenset({2, 3, 4, 5, 21, 22})   # uint8, int8, uint16, int16, uint4, int4


def consumers(g: Any) -> dict[str, list[Any]]:
    """Tensor name -> the nodes of `g` that read it."""
    out: dict[str, list[Any]] = {}
    for n in g.node:
        for i in set(n.input):
            if i:
                out.setdefault(i, []).append(n)
    return out


def producers(g: Any) -> dict[str, Any]:
    """Tensor name -> the node of `g` that writes it."""
    return {o: n for n in g.node for o in n.output if o}


def has_weights(node: Any, inits: set[str]) -> bool:
    """Whether `node` is a layer with constant weights (`inits`: the graph's initializer names)."""
    return node.op_type in WEIGHT_OPS and any(i in inits for i in node.input)


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
