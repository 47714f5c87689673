"""ONNX helpers shared by the step kinds; called inside run() only (this module imports onnx lazily).

`save()` is the one way a step writes its model: it pins the IR version to what every consumer's
runtime accepts, refuses an opset above the consumers' limit, runs the ONNX checker, and writes
the same bytes for the same model (no tool versions, deterministic serialization).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from edgebuild.steps.base import StepError

if TYPE_CHECKING:  # pragma: no cover
    import onnx

PRODUCER = "edgebuild"
TWO_GB = 2**31

# Element types (TensorProto enum values) that need a minimum IR version.
_DTYPE_MIN_IR = {
    17: 9, 18: 9, 19: 9, 20: 9,   # FLOAT8E4M3FN, FLOAT8E4M3FNUZ, FLOAT8E5M2, FLOAT8E5M2FNUZ
    21: 10, 22: 10,               # UINT4, INT4
    23: 11,                       # FLOAT4E2M1
}
_DTYPE_NAMES = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64",
                9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 16: "bfloat16",
                21: "uint4", 22: "int4"}

# Op types that mark a quantized graph.
INT8_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger",
                      "ConvInteger", "QLinearConv", "QLinearMatMul", "QLinearAdd", "QLinearMul",
                      "QGemm", "DynamicQuantizeMatMul", "QAttention"})
INT4_OPS = frozenset({"MatMulNBits", "GatherBlockQuantized"})


def load(path: str | Path) -> "onnx.ModelProto":
    """Load a model with its external data; a file that is not an ONNX model is a StepError."""
    import onnx

    try:
        return onnx.load(str(path))
    except FileNotFoundError:
        raise StepError(f"model file not found: {path}") from None
    except Exception as exc:  # protobuf DecodeError and friends
        raise StepError(f"cannot read ONNX model {path}: {type(exc).__name__}: {str(exc)[:200]}") from None


def default_opset(model: "onnx.ModelProto") -> int:
    """The model's default-domain ("" / "ai.onnx") opset; 0 when it imports none."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def save(model: "onnx.ModelProto", path: str | Path, ir_version: int, max_opset: int,
         opset_path: tuple[Any, ...] | None = None) -> int:
    """Check `model` and write it to `path` as one file; return the number of bytes written.

    - IR version: lowered to `ir_version` when the model's is higher (onnx 1.23 writes IR 14,
      which ONNX Runtime 1.31 and onnxruntime-web 1.30 reject). A model whose opset or element
      types need a higher IR version than that is a StepError.
    - Opset: a default-domain opset above `max_opset` is a StepError; `opset_path` is the recipe
      key to blame (e.g. the export step's `opset`).
    - Nodes in topological order in every graph (`topo_sort`), then the ONNX checker must pass.
    - Opset imports of domains no node uses are dropped (ONNX Runtime's optimizer imports every
      domain it knows, e.g. ai.onnx.ml 5, which would demand a newer IR version).
    - Deterministic bytes: producer "edgebuild" with no version, deterministic serialization.
    """
    import onnx

    prune_opset_imports(model)
    opset = default_opset(model)
    if opset > max_opset:
        raise StepError(
            f"the model uses ONNX opset {opset}, but the runtimes of the targets it is built for load opset {max_opset} at most",
            hint=f"set `opset: {max_opset}` (or lower) on the export step, or take this step from a model exported at that opset",
            recipe_path=opset_path)
    need = _min_ir_version(model)
    if need > ir_version:
        raise StepError(
            f"the model needs ONNX IR version {need} (for its opset or element types), but the targets' runtimes "
            f"load IR version {ir_version} at most",
            hint="lower the export opset, or drop the target whose runtime is older from this step's consumers",
            recipe_path=opset_path)
    for g in iter_graphs(model.graph):   # a tool may leave a node before one it reads from (the checker refuses)
        topo_sort(g)
    model.ir_version = min(model.ir_version or ir_version, ir_version)
    model.producer_name = PRODUCER
    model.producer_version = ""
    size = model.ByteSize()
    if size >= TWO_GB:
        raise StepError(f"the model is {size / 2**30:.1f} GiB: models over 2 GB (external data) are not supported yet")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx.checker.ValidationError, or a C++ error for odd graphs
        raise StepError(f"the output model does not pass the ONNX checker: {str(exc).strip()[:500]}",
                        hint="this is likely a bug in the tool this step runs; try other parameters or an earlier step") from None
    data = model.SerializeToString(deterministic=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return len(data)


def prune_opset_imports(model: "onnx.ModelProto") -> None:
    """Drop opset imports of domains that no node (in any graph or local function) uses."""
    used = {"", "ai.onnx"}
    for n in iter_nodes(model):
        used.add(n.domain)
    for f in model.functions:
        for n in f.node:
            used.add(n.domain)
    keep = [o for o in model.opset_import if o.domain in used]
    if len(keep) != len(model.opset_import):
        del model.opset_import[:]
        model.opset_import.extend(keep)


def _min_ir_version(model: "onnx.ModelProto") -> int:
    import onnx.helper

    need = onnx.helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    for t in iter_initializers(model):
        need = max(need, _DTYPE_MIN_IR.get(t.data_type, 0))
    return need


def iter_graphs(graph: "onnx.GraphProto") -> Iterator["onnx.GraphProto"]:
    """`graph` and every subgraph (If/Loop/Scan bodies) inside it."""
    import onnx

    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from iter_graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from iter_graphs(g)


def iter_nodes(model: "onnx.ModelProto") -> Iterator["onnx.NodeProto"]:
    for g in iter_graphs(model.graph):
        yield from g.node


def iter_initializers(model: "onnx.ModelProto") -> Iterator["onnx.TensorProto"]:
    for g in iter_graphs(model.graph):
        yield from g.initializer


def count_ops(model: "onnx.ModelProto") -> dict[str, int]:
    """Op type -> number of nodes (subgraphs included), sorted by op type."""
    return dict(sorted(Counter(n.op_type for n in iter_nodes(model)).items()))


def node_count(model: "onnx.ModelProto") -> int:
    return sum(1 for _ in iter_nodes(model))


def initializer_dtypes(model: "onnx.ModelProto") -> dict[str, int]:
    """Element type name -> number of initializers of that type, sorted by name."""
    c = Counter(_DTYPE_NAMES.get(t.data_type, str(t.data_type)) for t in iter_initializers(model))
    return dict(sorted(c.items()))


def precision_of(model: "onnx.ModelProto") -> str:
    """The model's numeric precision as edgebuild names it: "int4", "int8", "fp16" or "fp32".

    Quantization ops decide first (any weight-only 4-bit op -> int4, any 8-bit quantization op -> int8);
    otherwise the floating-point type holding most initializer bytes.
    """
    ops = {n.op_type for n in iter_nodes(model)}
    if ops & INT4_OPS or any(t.data_type in (21, 22) for t in iter_initializers(model)):
        return "int4"
    if ops & INT8_OPS:
        return "int8"
    fp16 = fp32 = 0
    for t in iter_initializers(model):
        n = 1
        for d in t.dims:
            n *= d
        if t.data_type == 10:
            fp16 += n
        elif t.data_type == 1:
            fp32 += n
    return "fp16" if fp16 > fp32 else "fp32"


# An unnamed dim: no dim_param, an empty one, or a negative dim_value (exporters write -1). Each one is a
# free dim of its own: two of them never have to agree, unlike two dims with the same name.
UNNAMED = "?"


def declared_dims(value_info: Any) -> list[int | str] | None:
    """The one reader of declared shapes: recipe-style dims (ints for fixed dims, names for symbolic
    ones, UNNAMED for unnamed ones), or None when no shape (not even the rank) is declared."""
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return None
    out: list[int | str] = []
    for d in t.shape.dim:
        if d.HasField("dim_value") and d.dim_value >= 0:
            out.append(int(d.dim_value))
        else:
            out.append(d.dim_param or UNNAMED)
    return out


def dims(value_info: Any) -> list[int | str]:
    """`declared_dims`, with no dims when no shape is declared."""
    return declared_dims(value_info) or []


def dtype_name(value_info: Any) -> str:
    t = value_info.type.tensor_type.elem_type
    return _DTYPE_NAMES.get(t, str(t))


def graph_inputs(model: "onnx.ModelProto") -> dict[str, dict[str, Any]]:
    """Input name -> {"shape", "dtype"} for the graph's real inputs (not initializers), in graph order."""
    inits = {t.name for t in model.graph.initializer}
    return {vi.name: {"shape": dims(vi), "dtype": dtype_name(vi)} for vi in model.graph.input if vi.name not in inits}


def graph_outputs(model: "onnx.ModelProto") -> dict[str, list[int | str]]:
    """Output name -> shape, in graph order."""
    return {vi.name: dims(vi) for vi in model.graph.output}


def file_size(path: str | Path) -> int:
    """The bytes of a model: its file and the external data files its tensors point at (a model exported
    with `save_as_external_data` keeps its weights beside the .onnx file)."""
    import onnx

    size = os.stat(path).st_size
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:
        return size
    files = {e.value for t in _all_tensors(model) if t.data_location == onnx.TensorProto.EXTERNAL
             for e in t.external_data if e.key == "location"}
    base = Path(path).parent
    return size + sum(os.stat(base / f).st_size for f in sorted(files) if (base / f).is_file())


def _all_tensors(model: "onnx.ModelProto") -> Iterator[Any]:
    """Initializers and constant-node tensors of the graph and its subgraphs."""
    import onnx

    def walk(g: Any) -> Iterator[Any]:
        yield from g.initializer
        for n in g.node:
            for a in n.attribute:
                if a.type == onnx.AttributeProto.TENSOR:
                    yield a.t
                elif a.type == onnx.AttributeProto.GRAPH:
                    yield from walk(a.g)
                elif a.type == onnx.AttributeProto.GRAPHS:
                    for sg in a.graphs:
                        yield from walk(sg)

    return walk(model.graph)


def input_names(model: "onnx.ModelProto") -> list[str]:
    return list(graph_inputs(model))


def topo_sort(graph: "onnx.GraphProto") -> bool:
    """Order `graph`'s nodes so each comes after the nodes it reads from (stable: keeps the original
    order where it is already valid). Some converters append nodes at the end; the ONNX checker
    requires sorted graphs. Returns True when the order changed; a cycle leaves the graph as is.
    """
    import heapq

    nodes = list(graph.node)
    producer = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    deps: list[set[int]] = []
    for i, n in enumerate(nodes):
        names = set(n.input) | _subgraph_reads(n)
        deps.append({producer[x] for x in names if x in producer and producer[x] != i})
    users: list[list[int]] = [[] for _ in nodes]
    for i, d in enumerate(deps):
        for j in d:
            users[j].append(i)
    waiting = [len(d) for d in deps]
    ready = [i for i, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for u in users[i]:
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(ready, u)
    if len(order) != len(nodes) or order == list(range(len(nodes))):
        return False
    graph.ClearField("node")
    graph.node.extend(nodes[i] for i in order)
    return True


def _subgraph_reads(node: Any) -> set[str]:
    import onnx

    out: set[str] = set()
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for g in graphs:
            for sg in iter_graphs(g):
                for n in sg.node:
                    out.update(n.input)
    return out
