"""PRelu with a constant slope in [0, 1] rewritten as Max(x, x * s), exactly: ONNX Runtime's PRelu kernel
is slower than Mul and Max."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgebuild.onnx.rewrites.folding import Constants
from edgebuild.onnx.rewrites.scopes import (
    FreshNames,
    graphs_of,
    is_standard,
    model_names,
)

if TYPE_CHECKING:
    import onnx


def prelu_to_max(model: "onnx.ModelProto") -> int:
    """Rewrite PRelu(x, s) as Max(x, x * s) where s is a constant with every value in [0, 1].

    For 0 <= s <= 1: x >= 0 gives s*x <= x, and x < 0 gives s*x >= x, so max(x, s*x) is PRelu exactly.
    The slope must be a float initializer (not a graph input) or Constant; PRelu's slope broadcasts
    to x's shape, so x * s keeps x's shape. Applies to every graph; returns the number rewritten.
    """
    fresh = FreshNames(model_names(model))
    return _prelu_graph(model.graph, None, fresh)


def _prelu_graph(graph: "onnx.GraphProto", outer: Constants | None, fresh: FreshNames) -> int:
    import numpy as np
    from onnx import helper

    consts = Constants(graph, outer)
    new, count = [], 0
    for node in graph.node:
        if node.op_type == "PRelu" and is_standard(node) and len(node.input) == 2 and len(node.output) == 1:
            s = consts.get(node.input[1])
            if s is not None and s.dtype.kind == "f" and s.size and bool(np.all((s >= 0) & (s <= 1))):
                base = node.name or node.output[0]
                scaled = fresh(node.output[0] + "_scaled")
                new.append(helper.make_node("Mul", [node.input[0], node.input[1]], [scaled], name=fresh(base + "_mul")))
                new.append(helper.make_node("Max", [node.input[0], scaled], [node.output[0]], name=fresh(base + "_max")))
                count += 1
                continue
        new.append(node)
    if count:
        graph.ClearField("node")
        graph.node.extend(new)
    for n in graph.node:
        for g in graphs_of(n):
            count += _prelu_graph(g, consts, fresh)
    return count
