"""Pure-ONNX graph rewrites: each takes a ModelProto, changes it in place and returns the number of changes.

They fix what published ONNX files often get wrong (initializers listed as graph inputs, wrongly
declared fixed dims, a whole graph wrapped in an `If` on an input the recipe fixes) and fuse
patterns ONNX Runtime's own optimizer leaves decomposed (hard-swish). None needs ONNX Runtime;
`onnx` is imported inside the functions, so importing this module stays cheap.

| rewrite | what it does |
|---|---|
| `drop_initializer_inputs` | initializers also listed as graph inputs (old exporters) stop being inputs, so they are constants |
| `fuse_hardswish` | x * Clip(x+3, 0, 6) / 6 and its variants (HardSigmoid, Relu6 as Min/Max, scale first) -> HardSwish |
| `prelu_to_max` | PRelu(x, s) with a constant s in [0, 1] -> Max(x, x * s) |
| `override_input_dims` | declared input dims replaced; stale value_info dropped; output dims re-inferred (or left symbolic) |
| `fix_inputs` | a graph input replaced by a constant initializer |
| `inline_constant_if` | an If whose condition is constant (or folds to one) replaced by the nodes of the chosen branch |
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any, Iterator

from edgebuild.onnx.graph import declared_dims, default_opset, iter_graphs, iter_nodes

if TYPE_CHECKING:
    import numpy as np
    import onnx

HARDSWISH_MIN_OPSET = 14
_SCALE_TOL = 1e-5           # relative tolerance on the constants of a pattern (1/6 as float32 etc.)
_FOLD_MAX_NODES = 64        # largest subgraph inline_constant_if evaluates to decide a condition
_NONDETERMINISTIC = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli"}


# ---------------------------------------------------------------------------------------------
# drop_initializer_inputs


def drop_initializer_inputs(model: "onnx.ModelProto") -> int:
    """Remove main-graph inputs that are also initializers; return how many were removed.

    Exporters before IR version 4 listed every weight as a graph input too. ONNX Runtime must then
    treat those weights as overridable, so it neither folds constants through them nor fuses the
    nodes that read them (Conv+BatchNorm, Conv+Add...). Without the input entries they are plain
    constants. A model below IR version 4 (which requires the listing) is raised to IR version 4.
    Subgraph inputs (Loop/Scan bodies) are formal parameters and are left alone.
    """
    graph = model.graph
    inits = {t.name for t in graph.initializer}
    keep = [vi for vi in graph.input if vi.name not in inits]
    dropped = len(graph.input) - len(keep)
    if dropped:
        graph.ClearField("input")
        graph.input.extend(keep)
        if model.ir_version < 4:
            model.ir_version = 4
    return dropped


# ---------------------------------------------------------------------------------------------
# shared graph helpers


def _graphs_of(node: "onnx.NodeProto") -> list["onnx.GraphProto"]:
    import onnx

    out = []
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            out.append(attr.g)
        elif attr.type == onnx.AttributeProto.GRAPHS:
            out.extend(attr.graphs)
    return out


def _all_graphs(graph: "onnx.GraphProto", skip: Any = None) -> Iterator["onnx.GraphProto"]:
    """`graph` and every graph nested in it, leaving out the subgraphs of node `skip` and what they hold."""
    yield graph
    for node in graph.node:
        if node is skip:
            continue
        for g in _graphs_of(node):
            yield from _all_graphs(g, skip)


def _defined(graph: "onnx.GraphProto") -> set[str]:
    """Names a graph defines in its own scope: its inputs, initializers and node outputs."""
    out = {vi.name for vi in graph.input} | {t.name for t in graph.initializer}
    out |= {t.values.name for t in graph.sparse_initializer}
    for n in graph.node:
        out.update(o for o in n.output if o)
    return out


def _outer_reads(graph: "onnx.GraphProto") -> set[str]:
    """Names a (sub)graph reads from enclosing scopes, its nested subgraphs included."""
    local = _defined(graph)
    out: set[str] = set()
    for n in graph.node:
        out.update(i for i in n.input if i and i not in local)
        for g in _graphs_of(n):
            out.update(x for x in _outer_reads(g) if x not in local)
    out.update(o.name for o in graph.output if o.name not in local)
    return out


def _uses(graph: "onnx.GraphProto") -> Counter[str]:
    """How many times each name is read in `graph`: node inputs, reads by nested subgraphs, graph outputs."""
    c: Counter[str] = Counter()
    for n in graph.node:
        c.update(i for i in n.input if i)
        for g in _graphs_of(n):
            c.update(_outer_reads(g))
    c.update(o.name for o in graph.output)
    return c


def _model_names(model: "onnx.ModelProto", skip: Any = None) -> set[str]:
    """Every value and node name in the model (all graphs but those of node `skip`), to make fresh names from."""
    names: set[str] = set()
    for g in _all_graphs(model.graph, skip):
        names |= _defined(g)
        names.update(vi.name for vi in g.value_info)
        names.update(o.name for o in g.output)
        for n in g.node:
            names.update(i for i in n.input if i)
            if n.name:
                names.add(n.name)
    return names


class _Fresh:
    """Makes names not yet used anywhere in the model."""

    def __init__(self, taken: set[str]):
        self.taken = taken

    def __call__(self, base: str) -> str:
        name, i = base, 1
        while name in self.taken:
            name, i = f"{base}_{i}", i + 1
        self.taken.add(name)
        return name


class _Consts:
    """Constant values visible in a graph: its initializers that are not graph inputs, its Constant nodes'
    outputs, then the enclosing graphs' constants. Arrays are made only when asked for."""

    def __init__(self, graph: "onnx.GraphProto", outer: "_Consts | None" = None,
                 extra: dict[str, "np.ndarray"] | None = None):
        inputs = {vi.name for vi in graph.input}
        self.tensors = {t.name: t for t in graph.initializer if t.name not in inputs}
        self.nodes = {n.output[0]: n for n in graph.node
                      if n.op_type == "Constant" and n.domain in ("", "ai.onnx") and len(n.output) == 1}
        self.local = _defined(graph)
        self.outer = outer
        self.cache: dict[str, Any] = dict(extra or {})

    def get(self, name: str) -> "np.ndarray | None":
        import numpy as np
        from onnx import numpy_helper

        if not name:
            return None
        if name in self.cache:
            return self.cache[name]
        value = None
        if name in self.tensors:
            try:
                value = numpy_helper.to_array(self.tensors[name])
            except Exception:
                value = None
        elif name in self.nodes:
            attrs = {a.name: a for a in self.nodes[name].attribute}
            try:
                if "value" in attrs:
                    value = numpy_helper.to_array(attrs["value"].t)
                elif "value_float" in attrs:
                    value = np.asarray(attrs["value_float"].f, dtype=np.float32)
                elif "value_floats" in attrs:
                    value = np.asarray(list(attrs["value_floats"].floats), dtype=np.float32)
                elif "value_int" in attrs:
                    value = np.asarray(attrs["value_int"].i, dtype=np.int64)
                elif "value_ints" in attrs:
                    value = np.asarray(list(attrs["value_ints"].ints), dtype=np.int64)
                # sparse_value / strings: not folded
            except Exception:
                value = None
        elif name not in self.local and self.outer is not None:
            value = self.outer.get(name)
        self.cache[name] = value
        return value


def _scalar(consts: _Consts, name: str) -> float | None:
    """The value of a constant holding one number (rank 0 or [1]), else None."""
    v = consts.get(name)
    if v is None or v.size != 1 or v.ndim > 1 or v.dtype.kind not in "fiu":
        return None
    return float(v.reshape(-1)[0])


def _close(a: float | None, b: float) -> bool:
    return a is not None and abs(a - b) <= _SCALE_TOL * max(1.0, abs(b))


def _std(node: "onnx.NodeProto") -> bool:
    return node.domain in ("", "ai.onnx")


# ---------------------------------------------------------------------------------------------
# fuse_hardswish


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
    fresh = _Fresh(_model_names(model))
    return _fuse_graph(model.graph, None, fresh)


def _fuse_graph(graph: "onnx.GraphProto", outer: _Consts | None, fresh: _Fresh) -> int:
    from onnx import helper

    consts = _Consts(graph, outer)
    nodes_now = list(graph.node)   # one wrapper object per node for the whole pass (ids below rely on it)
    producer = {o: n for n in nodes_now for o in n.output if o}
    uses = _uses(graph)
    removed: set[int] = set()
    replace: dict[int, Any] = {}
    fused = 0
    for node in nodes_now:
        if id(node) in removed or not _std(node) or node.op_type not in ("Mul", "Div") or len(node.output) != 1:
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
        _drop_unused_constants(graph, read)
    for n in graph.node:
        for g in _graphs_of(n):
            fused += _fuse_graph(g, consts, fresh)
    return fused


def _drop_unused_constants(graph: "onnx.GraphProto", names: set[str]) -> None:
    """Remove initializers (not graph inputs) and Constant nodes among `names` that nothing reads any more."""
    uses = _uses(graph)
    inputs = {vi.name for vi in graph.input}
    dead = {n for n in names if not uses[n] and n not in inputs}
    if not dead:
        return
    inits = [t for t in graph.initializer if t.name not in dead]
    if len(inits) != len(graph.initializer):
        graph.ClearField("initializer")
        graph.initializer.extend(inits)
    nodes = [n for n in graph.node if not (n.op_type == "Constant" and _std(n) and list(n.output) and n.output[0] in dead)]
    if len(nodes) != len(graph.node):
        graph.ClearField("node")
        graph.node.extend(nodes)


def _peel(name: str, producer: dict[str, Any], consts: _Consts) -> tuple[str, float, list[Any]]:
    """Strip Mul/Div by scalar constants off `name`: value(name) = k * value(base). Returns (base, k, nodes)."""
    k, nodes = 1.0, []  # type: float, list[Any]
    while True:
        base, step, n = _peel_one(name, producer, consts)
        if n is None:
            return name, k, nodes
        k, name = k * step, base
        nodes.append(n)


def _peel_one(name: str, producer: dict[str, Any], consts: _Consts) -> tuple[str, float, Any]:
    """One Mul/Div by a scalar constant: (its other operand, the factor, the node), or (name, 1, None)."""
    n = producer.get(name)
    if n is None or not _std(n) or len(n.input) != 2 or n.op_type not in ("Mul", "Div"):
        return name, 1.0, None
    if n.op_type == "Div":
        c = _scalar(consts, n.input[1])
        if c is None or c == 0 or consts.get(n.input[0]) is not None:
            return name, 1.0, None
        return n.input[0], 1.0 / c, n
    a, b = _scalar(consts, n.input[0]), _scalar(consts, n.input[1])
    if a is not None and b is None:
        return n.input[1], a, n
    if b is not None and a is None:
        return n.input[0], b, n
    return name, 1.0, None


def _peel_to(name: str, target: str, producer: dict[str, Any], consts: _Consts) -> tuple[float, list[Any]] | None:
    """If value(name) = k * value(target) through Mul/Div by scalar constants: (k, nodes); else None."""
    k, nodes = 1.0, []
    while name != target:
        base, step, n = _peel_one(name, producer, consts)
        if n is None:
            return None
        k, name = k * step, base
        nodes.append(n)
    return k, nodes


def _relu6_arg(name: str, producer: dict[str, Any], consts: _Consts) -> tuple[str, list[Any]] | None:
    """If value(name) = relu6(a) = clip(a, 0, 6): (a, nodes)."""
    from onnx import helper

    n = producer.get(name)
    if n is None or not _std(n):
        return None
    if n.op_type == "Clip":
        if len(n.input) >= 3 and n.input[1] and n.input[2]:
            lo, hi = _scalar(consts, n.input[1]), _scalar(consts, n.input[2])
        else:
            attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
            lo, hi = attrs.get("min"), attrs.get("max")
            if len(n.input) > 1:
                return None   # one of min/max given as an input, the other missing: not relu6
        if _close(lo, 0.0) and _close(hi, 6.0) and lo is not None and hi is not None:
            return n.input[0], [n]
        return None
    if n.op_type in ("Min", "Max") and len(n.input) == 2:
        bound = 6.0 if n.op_type == "Min" else 0.0
        inner_op = "Max" if n.op_type == "Min" else "Min"
        other_bound = 0.0 if n.op_type == "Min" else 6.0
        for vi, ci in ((0, 1), (1, 0)):
            if not _close(_scalar(consts, n.input[ci]), bound):
                continue
            m = producer.get(n.input[vi])
            if m is None or not _std(m):
                return None
            if m.op_type == inner_op and len(m.input) == 2:
                for mv, mc in ((0, 1), (1, 0)):
                    if _close(_scalar(consts, m.input[mc]), other_bound):
                        return m.input[mv], [n, m]
            if n.op_type == "Min" and m.op_type == "Relu":
                return m.input[0], [n, m]
            return None
    return None


def _hsig(name: str, producer: dict[str, Any], consts: _Consts) -> tuple[str, float, list[Any]] | None:
    """If value(name) = k * clip(x + 3, 0, 6): (x, k, nodes)."""
    from onnx import helper

    base, k, nodes = _peel(name, producer, consts)
    n = producer.get(base)
    if n is None or not _std(n):
        return None
    if n.op_type == "HardSigmoid":
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if _close(attrs.get("alpha", 0.2), 1 / 6) and _close(attrs.get("beta", 0.5), 0.5):
            return n.input[0], k / 6.0, nodes + [n]
        return None
    r = _relu6_arg(base, producer, consts)
    if r is None:
        return None
    a, rnodes = r
    add = producer.get(a)
    if add is None or not _std(add) or add.op_type != "Add" or len(add.input) != 2:
        return None
    for xi, ci in ((0, 1), (1, 0)):
        if _close(_scalar(consts, add.input[ci]), 3.0) and consts.get(add.input[xi]) is None:
            return add.input[xi], k, nodes + rnodes + [add]
    return None


def _match_hardswish(y: str, producer: dict[str, Any], consts: _Consts) -> tuple[str, list[Any]] | None:
    """If value(y) = hard-swish(x): (x, nodes computing y from x, the node producing y first)."""
    base, k, outer = _peel(y, producer, consts)
    mul = producer.get(base)
    if mul is None or not _std(mul) or mul.op_type != "Mul" or len(mul.input) != 2:
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
        if not _close(k * kh * kx, 1 / 6):
            continue
        nodes = outer + [mul] + hnodes + xnodes
        first = producer[y]
        return x, [first] + [n for n in nodes if n is not first]
    return None


# ---------------------------------------------------------------------------------------------
# prelu_to_max


def prelu_to_max(model: "onnx.ModelProto") -> int:
    """Rewrite PRelu(x, s) as Max(x, x * s) where s is a constant with every value in [0, 1].

    For 0 <= s <= 1: x >= 0 gives s*x <= x, and x < 0 gives s*x >= x, so max(x, s*x) is PRelu exactly.
    The slope must be a float initializer (not a graph input) or Constant; PRelu's slope broadcasts
    to x's shape, so x * s keeps x's shape. Applies to every graph; returns the number rewritten.
    """
    fresh = _Fresh(_model_names(model))
    return _prelu_graph(model.graph, None, fresh)


def _prelu_graph(graph: "onnx.GraphProto", outer: _Consts | None, fresh: _Fresh) -> int:
    import numpy as np
    from onnx import helper

    consts = _Consts(graph, outer)
    new, count = [], 0
    for node in graph.node:
        if node.op_type == "PRelu" and _std(node) and len(node.input) == 2 and len(node.output) == 1:
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
        for g in _graphs_of(n):
            count += _prelu_graph(g, consts, fresh)
    return count


# ---------------------------------------------------------------------------------------------
# override_input_dims


def override_input_dims(model: "onnx.ModelProto", inputs: dict[str, dict[str, Any]]) -> int:
    """Declare new dims for graph inputs and make every other declared shape agree; return the number of
    inputs and outputs whose declared shape changed.

    `inputs`: name -> {"shape": [...]} (an int is a fixed dim, a string a symbolic one); names that are
    not graph inputs are ignored. When some input changes: value_info (in every graph) is dropped,
    since it was inferred from the old dims; subgraph outputs lose their dims; ONNX shape inference
    runs again (strict_mode=False, data propagation on); each graph output takes the inferred dims
    where inference knows them and stays symbolic (an unnamed dim, or no shape at all when even the
    rank is unknown) where it does not. A fixed dim from before is never kept on trust.
    """
    graph = model.graph
    inits = {t.name for t in graph.initializer}
    changed = 0
    for vi in graph.input:
        if vi.name in inits or vi.name not in inputs or not vi.type.HasField("tensor_type"):
            continue
        want = list(inputs[vi.name]["shape"])
        if declared_dims(vi) == want:
            continue
        vi.type.tensor_type.ClearField("shape")
        shape = vi.type.tensor_type.shape
        shape.SetInParent()   # rank 0 is a shape with no dims, not a missing shape
        for d in want:
            dim = shape.dim.add()
            if isinstance(d, int):
                dim.dim_value = d
            else:
                dim.dim_param = str(d)
        changed += 1
    if changed:
        changed += refresh_shapes(model)
    return changed




def refresh_shapes(model: "onnx.ModelProto") -> int:
    """Drop value_info and declared subgraph output dims, re-infer the graph outputs' shapes (see
    `override_input_dims`); return the number of graph outputs whose declared shape changed."""
    import onnx

    before = {o.name: declared_dims(o) for o in model.graph.output}
    for g in _all_graphs(model.graph):
        del g.value_info[:]
        if g is not model.graph:
            for o in g.output:
                if o.type.HasField("tensor_type"):
                    o.type.tensor_type.ClearField("shape")
    for o in model.graph.output:
        if o.type.HasField("tensor_type"):
            o.type.tensor_type.ClearField("shape")
    inferred: dict[str, Any] = {}
    try:
        out = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
        inferred = {o.name: o for o in out.graph.output}
        inferred.update({vi.name: vi for vi in out.graph.value_info if vi.name not in inferred})
    except Exception:   # inference is best effort: outputs then stay without dims
        pass
    changed = 0
    for o in model.graph.output:
        if not o.type.HasField("tensor_type"):
            continue
        src = inferred.get(o.name)
        t = o.type.tensor_type
        if src is not None and src.type.HasField("tensor_type") and src.type.tensor_type.HasField("shape"):
            t.shape.CopyFrom(src.type.tensor_type.shape)
            for d in t.shape.dim:   # names inference made up ("unk__3") claim equalities nobody knows of
                if d.HasField("dim_param") and d.dim_param.startswith("unk__"):
                    d.ClearField("dim_param")
            if not t.elem_type and src.type.tensor_type.elem_type:
                t.elem_type = src.type.tensor_type.elem_type
        elif (old := before[o.name]) is not None:
            # Not inferred: the old rank with every dim symbolic (the checker wants a shape on graph outputs).
            t.shape.SetInParent()
            for _ in old:
                t.shape.dim.add()
        if declared_dims(o) != before[o.name]:
            changed += 1
    return changed


# ---------------------------------------------------------------------------------------------
# fix_inputs


def fix_inputs(model: "onnx.ModelProto", values: dict[str, Any]) -> int:
    """Replace graph inputs by constant initializers; return the number replaced.

    `values`: input name -> a number, nested list or numpy array, converted to the input's element
    type. When the input declares a fully fixed shape holding as many elements, the constant takes
    that shape (16000 for a [1] input becomes [16000]). Names that are not graph inputs are ignored;
    an initializer listed as an input gets its value replaced.
    """
    import numpy as np
    import onnx
    from onnx import numpy_helper

    graph = model.graph
    by_name = {vi.name: vi for vi in graph.input}
    done = 0
    for name, value in values.items():
        vi = by_name.get(name)
        if vi is None:
            continue
        elem = vi.type.tensor_type.elem_type or onnx.TensorProto.FLOAT
        arr = np.asarray(value, dtype=onnx.helper.tensor_dtype_to_np_dtype(elem))
        shape = declared_dims(vi)
        if shape is not None and all(isinstance(d, int) for d in shape):
            fixed = [int(d) for d in shape]
            if int(np.prod(fixed, dtype=np.int64)) == arr.size:
                arr = arr.reshape(fixed)
        tensor = numpy_helper.from_array(np.ascontiguousarray(arr), name)
        keep = [t for t in graph.initializer if t.name != name]
        graph.ClearField("initializer")
        graph.initializer.extend(keep)
        graph.initializer.append(tensor)
        kept_inputs = [v for v in graph.input if v.name != name]
        graph.ClearField("input")
        graph.input.extend(kept_inputs)
        done += 1
    if done and model.ir_version < 4:
        model.ir_version = 4   # below IR 4 every initializer must also be an input
    return done


# ---------------------------------------------------------------------------------------------
# inline_constant_if


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


def _inline_graph(model: "onnx.ModelProto", graph: "onnx.GraphProto", outer: _Consts | None, is_main: bool) -> int:
    total = 0
    while True:
        consts = _Consts(graph, outer)
        done = False
        for i, node in enumerate(graph.node):
            if node.op_type != "If" or not _std(node) or not node.input:
                continue
            cond = _constant_value(model, graph, node.input[0], consts, is_main)
            if cond is None or cond.size != 1:
                continue
            if _inline_one(model, graph, i, bool(cond.reshape(-1)[0])):
                total += 1
                done = True
                break
        if not done:
            break
    if total:
        _prune(graph)
    consts = _Consts(graph, outer)
    for n in graph.node:
        for g in _graphs_of(n):
            total += _inline_graph(model, g, consts, is_main=False)
    return total


def _constant_value(model: "onnx.ModelProto", graph: "onnx.GraphProto", name: str, consts: _Consts,
                    is_main: bool) -> "np.ndarray | None":
    """The value of `name` when it is a constant or folds to one from constants (see inline_constant_if)."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    v = consts.get(name)
    if v is not None:
        return v
    nodes_now = list(graph.node)
    producer = {o: n for n in nodes_now for o in n.output if o}
    inputs = {vi.name: vi for vi in graph.input} if is_main else {}
    cone: list[Any] = []
    in_cone: set[int] = set()
    leaves: dict[str, Any] = {}
    seen: set[str] = set()
    stack = [name]
    while stack:
        cur = stack.pop()
        if not cur or cur in seen:
            continue
        seen.add(cur)
        c = consts.get(cur)
        if c is not None:
            leaves[cur] = c
            continue
        n = producer.get(cur)
        if n is None or not _std(n) or n.op_type in _NONDETERMINISTIC or _graphs_of(n):
            return None
        if n.op_type in ("Shape", "Size") and n.input and n.input[0] in inputs:
            declared = declared_dims(inputs[n.input[0]])
            if declared is None or not all(isinstance(d, int) for d in declared):
                return None
            dims = [int(d) for d in declared]
            if n.op_type == "Size":
                leaves[cur] = np.asarray(int(np.prod(dims, dtype=np.int64)), dtype=np.int64)
            else:
                attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
                r = len(dims)
                start, end = attrs.get("start", 0), attrs.get("end", r)
                start = max(0, min(r, start + r if start < 0 else start))
                end = max(0, min(r, end + r if end < 0 else end))
                leaves[cur] = np.asarray(dims[start:end], dtype=np.int64)
            continue
        if id(n) not in in_cone:
            in_cone.add(id(n))
            cone.append(n)
        if len(cone) > _FOLD_MAX_NODES:
            return None
        stack.extend(n.input)
    if not cone:
        return None
    order = {id(n): i for i, n in enumerate(nodes_now)}
    cone.sort(key=lambda n: order[id(n)])
    try:
        from onnx.reference import ReferenceEvaluator

        inits = [numpy_helper.from_array(np.asarray(a), k) for k, a in leaves.items()]
        g = helper.make_graph(list(cone), "fold", [], [helper.make_tensor_value_info(name, onnx.TensorProto.UNDEFINED, None)],
                              inits)
        m = helper.make_model(g, opset_imports=list(model.opset_import))
        m.ir_version = model.ir_version or onnx.IR_VERSION
        (out,) = ReferenceEvaluator(m).run(None, {})
        return np.asarray(out)
    except Exception:
        return None


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
    taken_outside = _model_names(model, skip=node)
    fresh = _Fresh(taken_outside | _model_names_of(branch))
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
    body = [_copy(n) for n in branch.node]
    inits = [_copy(t) for t in branch.initializer]
    for n in body:
        _rename_node(n, mapping)
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


def _model_names_of(graph: "onnx.GraphProto") -> set[str]:
    names: set[str] = set()
    for g in _all_graphs(graph):
        names |= _defined(g)
        for n in g.node:
            if n.name:
                names.add(n.name)
    return names


def _copy(proto: Any) -> Any:
    out = type(proto)()
    out.CopyFrom(proto)
    return out


def _rename_node(node: "onnx.NodeProto", mapping: dict[str, str]) -> None:
    for i, name in enumerate(node.input):
        if name in mapping:
            node.input[i] = mapping[name]
    for i, name in enumerate(node.output):
        if name in mapping:
            node.output[i] = mapping[name]
    for g in _graphs_of(node):
        _rename_refs(g, mapping)


def _rename_refs(graph: "onnx.GraphProto", mapping: dict[str, str]) -> None:
    """Rename reads of outer names inside a nested graph, except names the graph defines itself."""
    inner = {k: v for k, v in mapping.items() if k not in _defined(graph)}
    if not inner:
        return
    for n in graph.node:
        for i, name in enumerate(n.input):
            if name in inner:
                n.input[i] = inner[name]
        for g in _graphs_of(n):
            _rename_refs(g, inner)
    for o in graph.output:
        if o.name in inner:
            o.name = inner[o.name]


def _prune(graph: "onnx.GraphProto") -> None:
    """Drop nodes none of whose outputs is read (repeatedly), then initializers nobody reads."""
    while True:
        uses = _uses(graph)
        keep = [n for n in graph.node if any(o and uses[o] for o in n.output)]
        if len(keep) == len(graph.node):
            break
        graph.ClearField("node")
        graph.node.extend(keep)
    uses = _uses(graph)
    inputs = {vi.name for vi in graph.input}
    inits = [t for t in graph.initializer if uses[t.name] or t.name in inputs]
    if len(inits) != len(graph.initializer):
        graph.ClearField("initializer")
        graph.initializer.extend(inits)


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
