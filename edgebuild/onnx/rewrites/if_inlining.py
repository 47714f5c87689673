"""An If whose condition is constant (or folds to one) replaced by the nodes of the branch it takes, so
quantizers and ONNX Runtime see that branch's nodes in the graph that holds the If."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgebuild.onnx.rewrites.folding import Constants, folded_value
from edgebuild.onnx.rewrites.scopes import (
    FreshNames,
    copied,
    graph_names,
    graphs_of,
    is_standard,
    model_names,
    prune,
    rename_node,
)

if TYPE_CHECKING:
    import onnx


def inline_constant_if(model: "onnx.ModelProto") -> int:
    """Replace each If whose condition is constant by the nodes of the branch it takes; return how many.

    The condition is constant when it is an initializer (not a graph input) or a Constant output, or
    when it is computed only from such constants (and from Shape/Size of inputs whose declared dims
    are all fixed) by at most 64 deterministic standard ops: that small subgraph is evaluated with
    onnx's reference evaluator (Equal, Greater, Less, Not, Cast, And...).

    The chosen branch's nodes take the If's place: the values it names as outputs are renamed to the
    If's outputs (an Identity where a branch output is an outer value, a branch initializer, or
    repeated), its initializers move to the enclosing graph, and its other names are renamed where
    they clash with a name elsewhere in the model. Renaming respects scope: references inside nested
    subgraphs are renamed unless the nested graph defines that name itself. Repeats until no constant
    If is left (an inlined branch may hold one), in subgraphs too; nodes left dead (the condition's
    computation) and initializers nobody reads any more are removed from the graphs that changed.
    """
    return _inline_graph(model, model.graph, None, is_main=True)


def _inline_graph(model: "onnx.ModelProto", graph: "onnx.GraphProto", outer: Constants | None, is_main: bool) -> int:
    total = 0
    while True:
        consts = Constants(graph, outer)
        done = False
        for i, node in enumerate(graph.node):
            if node.op_type != "If" or not is_standard(node) or not node.input:
                continue
            cond = folded_value(model, graph, node.input[0], consts, is_main)
            if cond is None or cond.size != 1:
                continue
            if _inline_one(model, graph, i, bool(cond.reshape(-1)[0])):
                total += 1
                done = True
                break
        if not done:
            break
    if total:
        prune(graph)
    consts = Constants(graph, outer)
    for n in graph.node:
        for g in graphs_of(n):
            total += _inline_graph(model, g, consts, is_main=False)
    return total


def _inline_one(model: "onnx.ModelProto", graph: "onnx.GraphProto", index: int, take_then: bool) -> bool:
    from onnx import helper

    node = graph.node[index]
    attrs = {a.name: a for a in node.attribute}
    key = "then_branch" if take_then else "else_branch"
    if key not in attrs:
        return False
    branch = attrs[key].g
    if len(branch.sparse_initializer) or len(branch.output) < len(node.output):
        return False
    # The If's own branches go away with it: their names are free (matched by identity; where a protobuf
    # runtime hands out new wrapper objects, they merely count as taken and some names get renamed needlessly).
    taken_outside = model_names(model, skip=node)
    fresh = FreshNames(taken_outside | graph_names(branch))
    local = {t.name for t in branch.initializer} | {o for n in branch.node for o in n.output if o}
    produced = {o for n in branch.node for o in n.output if o}
    mapping: dict[str, str] = {}
    identities: list[tuple[str, str]] = []
    for bo, yo in zip(branch.output, node.output):
        if not yo:
            continue
        if bo.name in produced and bo.name not in mapping:
            mapping[bo.name] = yo
        else:
            identities.append((bo.name, yo))
    for name in sorted(local):
        if name not in mapping and name in taken_outside:
            mapping[name] = fresh(name)
    body = [copied(n) for n in branch.node]
    inits = [copied(t) for t in branch.initializer]
    for n in body:
        rename_node(n, mapping)
    for t in inits:
        t.name = mapping.get(t.name, t.name)
    base = node.name or node.output[0]
    for src, dst in identities:
        body.append(helper.make_node("Identity", [mapping.get(src, src)], [dst], name=fresh(f"{base}_{dst}_identity")))
    nodes = list(graph.node)
    graph.ClearField("node")
    graph.node.extend(nodes[:index] + body + nodes[index + 1:])
    graph.initializer.extend(inits)
    return True
