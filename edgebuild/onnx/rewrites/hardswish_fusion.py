"""Decomposed hard-swish (x * relu6(x + 3) / 6 in its exporters' variants) fused into one HardSwish node,
which ONNX Runtime's own optimizer leaves decomposed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgebuild.onnx.graph import default_opset
from edgebuild.onnx.rewrites.folding import Constants, close_to, scalar
from edgebuild.onnx.rewrites.scopes import (
    FreshNames,
    drop_unused_constants,
    graphs_of,
    is_standard,
    model_names,
    read_counts,
)

if TYPE_CHECKING:
    import onnx

HARDSWISH_MIN_OPSET = 14


def fuse_hardswish(model: "onnx.ModelProto") -> int:
    """Fuse decomposed hard-swish into one `HardSwish` node; return the number of patterns fused.

    hard-swish(x) = x * relu6(x + 3) / 6. Recognized, in every graph (subgraphs included):
      - x * Clip(x + 3, 0, 6) / 6, with the 1/6 as a Div by 6 or a Mul by 1/6, applied to the
        product, to the Clip, or to x first; Mul operands in either order;
      - relu6 written as Clip (attributes before opset 11, inputs after), Min(Max(a, 0), 6),
        Max(Min(a, 6), 0) or Min(Relu(a), 6);
      - x * HardSigmoid(x) with alpha 1/6 and beta 0.5 (PyTorch's hardsigmoid).
    Every constant must be a scalar (rank 0 or [1]) initializer or Constant that is not a graph
    input, and every intermediate value must feed only the pattern. Needs opset 14 (HardSwish);
    an older model is left as it is.
    """
    if default_opset(model) < HARDSWISH_MIN_OPSET:
        return 0
    fresh = FreshNames(model_names(model))
    return _fuse_graph(model.graph, None, fresh)


def _fuse_graph(graph: "onnx.GraphProto", outer: Constants | None, fresh: FreshNames) -> int:
    from onnx import helper

    consts = Constants(graph, outer)
    nodes_now = list(graph.node)   # one wrapper object per node for the whole pass (ids below rely on it)
    producer = {o: n for n in nodes_now for o in n.output if o}
    uses = read_counts(graph)
    removed: set[int] = set()
    replace: dict[int, Any] = {}
    fused = 0
    for node in nodes_now:
        if id(node) in removed or not is_standard(node) or node.op_type not in ("Mul", "Div") or len(node.output) != 1:
            continue
        m = _match_hardswish(node.output[0], producer, consts)
        if m is None:
            continue
        x, nodes = m
        ids = {id(n) for n in nodes}
        if ids & removed:
            continue
        inner = [o for n in nodes for o in n.output if o and o != node.output[0]]
        if any(uses[o] != 1 for o in inner):   # an intermediate read elsewhere (or a graph output): keep
            continue
        removed |= ids - {id(node)}
        replace[id(node)] = helper.make_node("HardSwish", [x], [node.output[0]],
                                             name=fresh((node.name or node.output[0]) + "_hardswish"))
        fused += 1
    if fused:
        read = {i for n in nodes_now if id(n) in removed or id(n) in replace for i in n.input}
        new = [replace.get(id(n), n) for n in nodes_now if id(n) not in removed]
        graph.ClearField("node")
        graph.node.extend(new)
        drop_unused_constants(graph, read)
    for n in graph.node:
        for g in graphs_of(n):
            fused += _fuse_graph(g, consts, fresh)
    return fused


def _peel(name: str, producer: dict[str, Any], consts: Constants) -> tuple[str, float, list[Any]]:
    """Strip Mul/Div by scalar constants off `name`: value(name) = k * value(base). Returns (base, k, nodes)."""
    k, nodes = 1.0, []  # type: float, list[Any]
    while True:
        base, step, n = _peel_one(name, producer, consts)
        if n is None:
            return name, k, nodes
        k, name = k * step, base
        nodes.append(n)


def _peel_one(name: str, producer: dict[str, Any], consts: Constants) -> tuple[str, float, Any]:
    """One Mul/Div by a scalar constant: (its other operand, the factor, the node), or (name, 1, None)."""
    n = producer.get(name)
    if n is None or not is_standard(n) or len(n.input) != 2 or n.op_type not in ("Mul", "Div"):
        return name, 1.0, None
    if n.op_type == "Div":
        c = scalar(consts, n.input[1])
        if c is None or c == 0 or consts.get(n.input[0]) is not None:
            return name, 1.0, None
        return n.input[0], 1.0 / c, n
    a, b = scalar(consts, n.input[0]), scalar(consts, n.input[1])
    if a is not None and b is None:
        return n.input[1], a, n
    if b is not None and a is None:
        return n.input[0], b, n
    return name, 1.0, None


def _peel_to(name: str, target: str, producer: dict[str, Any], consts: Constants) -> tuple[float, list[Any]] | None:
    """If value(name) = k * value(target) through Mul/Div by scalar constants: (k, nodes); else None."""
    k, nodes = 1.0, []
    while name != target:
        base, step, n = _peel_one(name, producer, consts)
        if n is None:
            return None
        k, name = k * step, base
        nodes.append(n)
    return k, nodes


def _relu6_arg(name: str, producer: dict[str, Any], consts: Constants) -> tuple[str, list[Any]] | None:
    """If value(name) = relu6(a) = clip(a, 0, 6): (a, nodes)."""
    from onnx import helper

    n = producer.get(name)
    if n is None or not is_standard(n):
        return None
    if n.op_type == "Clip":
        if len(n.input) >= 3 and n.input[1] and n.input[2]:
            lo, hi = scalar(consts, n.input[1]), scalar(consts, n.input[2])
        else:
            attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
            lo, hi = attrs.get("min"), attrs.get("max")
            if len(n.input) > 1:
                return None   # one of min/max given as an input, the other missing: not relu6
        if close_to(lo, 0.0) and close_to(hi, 6.0) and lo is not None and hi is not None:
            return n.input[0], [n]
        return None
    if n.op_type in ("Min", "Max") and len(n.input) == 2:
        bound = 6.0 if n.op_type == "Min" else 0.0
        inner_op = "Max" if n.op_type == "Min" else "Min"
        other_bound = 0.0 if n.op_type == "Min" else 6.0
        for vi, ci in ((0, 1), (1, 0)):
            if not close_to(scalar(consts, n.input[ci]), bound):
                continue
            m = producer.get(n.input[vi])
            if m is None or not is_standard(m):
                return None
            if m.op_type == inner_op and len(m.input) == 2:
                for mv, mc in ((0, 1), (1, 0)):
                    if close_to(scalar(consts, m.input[mc]), other_bound):
                        return m.input[mv], [n, m]
            if n.op_type == "Min" and m.op_type == "Relu":
                return m.input[0], [n, m]
            return None
    return None


def _hsig(name: str, producer: dict[str, Any], consts: Constants) -> tuple[str, float, list[Any]] | None:
    """If value(name) = k * clip(x + 3, 0, 6): (x, k, nodes)."""
    from onnx import helper

    base, k, nodes = _peel(name, producer, consts)
    n = producer.get(base)
    if n is None or not is_standard(n):
        return None
    if n.op_type == "HardSigmoid":
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if close_to(attrs.get("alpha", 0.2), 1 / 6) and close_to(attrs.get("beta", 0.5), 0.5):
            return n.input[0], k / 6.0, nodes + [n]
        return None
    r = _relu6_arg(base, producer, consts)
    if r is None:
        return None
    a, rnodes = r
    add = producer.get(a)
    if add is None or not is_standard(add) or add.op_type != "Add" or len(add.input) != 2:
        return None
    for xi, ci in ((0, 1), (1, 0)):
        if close_to(scalar(consts, add.input[ci]), 3.0) and consts.get(add.input[xi]) is None:
            return add.input[xi], k, nodes + rnodes + [add]
    return None


def _match_hardswish(y: str, producer: dict[str, Any], consts: Constants) -> tuple[str, list[Any]] | None:
    """If value(y) = hard-swish(x): (x, nodes computing y from x, the node producing y first)."""
    base, k, outer = _peel(y, producer, consts)
    mul = producer.get(base)
    if mul is None or not is_standard(mul) or mul.op_type != "Mul" or len(mul.input) != 2:
        return None
    for p, q in ((mul.input[0], mul.input[1]), (mul.input[1], mul.input[0])):
        h = _hsig(q, producer, consts)
        if h is None:
            continue
        x, kh, hnodes = h
        xs = _peel_to(p, x, producer, consts)
        if xs is None:
            continue
        kx, xnodes = xs
        if not close_to(k * kh * kx, 1 / 6):
            continue
        nodes = outer + [mul] + hnodes + xnodes
        first = producer[y]
        return x, [first] + [n for n in nodes if n is not first]
    return None
