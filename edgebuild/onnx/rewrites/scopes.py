"""Graphs and their name scopes, for the rewrites: nested graphs, the names each defines and reads, fresh
names, renaming across subgraphs, and removing what nothing reads any more."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    import onnx


def graphs_of(node: "onnx.NodeProto") -> list["onnx.GraphProto"]:
    """The graphs a node holds as attributes (If branches, Loop and Scan bodies)."""
    import onnx

    out = []
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            out.append(attr.g)
        elif attr.type == onnx.AttributeProto.GRAPHS:
            out.extend(attr.graphs)
    return out


def all_graphs(graph: "onnx.GraphProto", skip: Any = None) -> Iterator["onnx.GraphProto"]:
    """`graph` and every graph nested in it, leaving out the subgraphs of node `skip` and what they hold."""
    yield graph
    for node in graph.node:
        if node is skip:
            continue
        for g in graphs_of(node):
            yield from all_graphs(g, skip)


def defined(graph: "onnx.GraphProto") -> set[str]:
    """Names a graph defines in its own scope: its inputs, initializers and node outputs."""
    out = {vi.name for vi in graph.input} | {t.name for t in graph.initializer}
    out |= {t.values.name for t in graph.sparse_initializer}
    for n in graph.node:
        out.update(o for o in n.output if o)
    return out


def outer_reads(graph: "onnx.GraphProto") -> set[str]:
    """Names a (sub)graph reads from enclosing scopes, its nested subgraphs included."""
    local = defined(graph)
    out: set[str] = set()
    for n in graph.node:
        out.update(i for i in n.input if i and i not in local)
        for g in graphs_of(n):
            out.update(x for x in outer_reads(g) if x not in local)
    out.update(o.name for o in graph.output if o.name not in local)
    return out


def read_counts(graph: "onnx.GraphProto") -> Counter[str]:
    """How many times each name is read in `graph`: node inputs, reads by nested subgraphs, graph outputs."""
    c: Counter[str] = Counter()
    for n in graph.node:
        c.update(i for i in n.input if i)
        for g in graphs_of(n):
            c.update(outer_reads(g))
    c.update(o.name for o in graph.output)
    return c


def model_names(model: "onnx.ModelProto", skip: Any = None) -> set[str]:
    """Every value and node name in the model (all graphs but those of node `skip`), to make fresh names from."""
    names: set[str] = set()
    for g in all_graphs(model.graph, skip):
        names |= defined(g)
        names.update(vi.name for vi in g.value_info)
        names.update(o.name for o in g.output)
        for n in g.node:
            names.update(i for i in n.input if i)
            if n.name:
                names.add(n.name)
    return names


class FreshNames:
    """Makes names not yet used anywhere in the model."""

    def __init__(self, taken: set[str]) -> None:
        self.taken = taken

    def __call__(self, base: str) -> str:
        name, i = base, 1
        while name in self.taken:
            name, i = f"{base}_{i}", i + 1
        self.taken.add(name)
        return name


def is_standard(node: "onnx.NodeProto") -> bool:
    """Whether a node is in the default ONNX domain (a custom domain's `Mul` is not ours to rewrite)."""
    return node.domain in ("", "ai.onnx")


def drop_unused_constants(graph: "onnx.GraphProto", names: set[str]) -> None:
    """Remove initializers (not graph inputs) and Constant nodes among `names` that nothing reads any more."""
    uses = read_counts(graph)
    inputs = {vi.name for vi in graph.input}
    dead = {n for n in names if not uses[n] and n not in inputs}
    if not dead:
        return
    inits = [t for t in graph.initializer if t.name not in dead]
    if len(inits) != len(graph.initializer):
        graph.ClearField("initializer")
        graph.initializer.extend(inits)
    nodes = [n for n in graph.node if not (n.op_type == "Constant" and is_standard(n) and list(n.output) and n.output[0] in dead)]
    if len(nodes) != len(graph.node):
        graph.ClearField("node")
        graph.node.extend(nodes)


def graph_names(graph: "onnx.GraphProto") -> set[str]:
    """Every name a graph and its nested graphs define, node names included."""
    names: set[str] = set()
    for g in all_graphs(graph):
        names |= defined(g)
        for n in g.node:
            if n.name:
                names.add(n.name)
    return names


def copied(proto: Any) -> Any:
    """A copy of a protobuf message, detached from the message that holds it."""
    out = type(proto)()
    out.CopyFrom(proto)
    return out


def rename_node(node: "onnx.NodeProto", mapping: dict[str, str]) -> None:
    """Rename a node's inputs and outputs, and the reads of those names inside its subgraphs."""
    for i, name in enumerate(node.input):
        if name in mapping:
            node.input[i] = mapping[name]
    for i, name in enumerate(node.output):
        if name in mapping:
            node.output[i] = mapping[name]
    for g in graphs_of(node):
        rename_refs(g, mapping)


def rename_refs(graph: "onnx.GraphProto", mapping: dict[str, str]) -> None:
    """Rename reads of outer names inside a nested graph, except names the graph defines itself."""
    inner = {k: v for k, v in mapping.items() if k not in defined(graph)}
    if not inner:
        return
    for n in graph.node:
        for i, name in enumerate(n.input):
            if name in inner:
                n.input[i] = inner[name]
        for g in graphs_of(n):
            rename_refs(g, inner)
    for o in graph.output:
        if o.name in inner:
            o.name = inner[o.name]


def prune(graph: "onnx.GraphProto") -> None:
    """Drop nodes none of whose outputs is read (repeatedly), then initializers nobody reads."""
    while True:
        uses = read_counts(graph)
        keep = [n for n in graph.node if any(o and uses[o] for o in n.output)]
        if len(keep) == len(graph.node):
            break
        graph.ClearField("node")
        graph.node.extend(keep)
    uses = read_counts(graph)
    inputs = {vi.name for vi in graph.input}
    inits = [t for t in graph.initializer if uses[t.name] or t.name in inputs]
    if len(inits) != len(graph.initializer):
        graph.ClearField("initializer")
        graph.initializer.extend(inits)
