"""Gemm with a constant weight rewritten as MatMul (+ Add), so quantizers that only quantize MatMul see its
weight; and the count of MatMuls with a constant weight, what those quantizers can take."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgebuild.onnx.graph import iter_graphs, iter_nodes

if TYPE_CHECKING:
    import onnx


def gemm_to_matmul(model: "onnx.ModelProto") -> int:
    """Rewrite Gemm nodes whose B is a constant 2-D float initializer as MatMul (+ Add for C).

    alpha and transB are folded into a new weight initializer, beta into a new bias, so tools that
    only quantize MatMul (dynamic int8 MatMulInteger, INT4 MatMulNBits) see these weights too.
    Gemm with transA=1 is left alone. Returns the number of nodes rewritten (main graph only).
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    taken = {t.name for t in graph.initializer} | {v.name for v in graph.input} | {
        o for n in graph.node for o in n.output}

    def fresh(base: str) -> str:
        name, i = base, 1
        while name in taken:
            name, i = f"{base}_{i}", i + 1
        taken.add(name)
        return name

    new_nodes, rewritten = [], 0
    for node in graph.node:
        if node.op_type != "Gemm" or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
            new_nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        b = inits.get(node.input[1])
        if (attrs.get("transA", 0) or b is None or len(b.dims) != 2
                or b.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)):
            new_nodes.append(node)
            continue
        c_name = node.input[2] if len(node.input) > 2 and node.input[2] else ""
        c = inits.get(c_name) if c_name else None
        beta = float(attrs.get("beta", 1.0))
        if c_name and c is None and beta != 1.0:
            new_nodes.append(node)   # a computed C scaled by beta: leave as Gemm
            continue
        w = numpy_helper.to_array(b)
        if attrs.get("transB", 0):
            w = w.T
        alpha = float(attrs.get("alpha", 1.0))
        if alpha != 1.0:
            w = w * np.asarray(alpha, dtype=w.dtype)
        w_name = fresh(f"{b.name}_matmul")
        graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(w), w_name))
        base = node.name or node.output[0]
        out = node.output[0]
        if c_name:
            mm_out = fresh(f"{out}_matmul")
            new_nodes.append(helper.make_node("MatMul", [node.input[0], w_name], [mm_out], name=f"{base}_MatMul"))
            bias = c_name
            if c is not None and beta != 1.0:
                arr = numpy_helper.to_array(c)
                bias = fresh(f"{c_name}_scaled")
                graph.initializer.append(numpy_helper.from_array(arr * np.asarray(beta, dtype=arr.dtype), bias))
            new_nodes.append(helper.make_node("Add", [mm_out, bias], [out], name=f"{base}_Add"))
        else:
            new_nodes.append(helper.make_node("MatMul", [node.input[0], w_name], [out], name=f"{base}_MatMul"))
        rewritten += 1
    if rewritten:
        graph.ClearField("node")
        graph.node.extend(new_nodes)
        used = {i for n in iter_nodes(model) for i in n.input} | {o.name for o in graph.output}
        keep = [t for t in graph.initializer if t.name in used]
        graph.ClearField("initializer")
        graph.initializer.extend(keep)
        gi = [v for v in graph.input if v.name not in inits or v.name in used]
        if len(gi) != len(graph.input):
            graph.ClearField("input")
            graph.input.extend(gi)
    return rewritten


def constant_matmuls(model: "onnx.ModelProto") -> int:
    """Number of MatMul nodes whose B is a float initializer of rank 2 (or rank > 2 with leading 1s)."""
    import onnx

    count = 0
    for g in iter_graphs(model.graph):
        inits = {t.name: t for t in g.initializer}
        for n in g.node:
            if n.op_type != "MatMul" or len(n.input) < 2:
                continue
            t = inits.get(n.input[1])
            if t is None or t.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
                continue
            if len(t.dims) == 2 or (len(t.dims) > 2 and all(d == 1 for d in t.dims[:-2])):
                count += 1
    return count
