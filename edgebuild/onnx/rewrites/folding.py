"""Constant values the rewrites read: initializers and Constant nodes in scope, and a condition folded from
a small subgraph of constants (and Shape/Size of inputs with fixed dims) by onnx's reference evaluator."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgebuild.onnx.graph import declared_dims
from edgebuild.onnx.rewrites.scopes import defined, graphs_of, is_standard

if TYPE_CHECKING:
    import numpy as np
    import onnx

SCALE_TOL = 1e-5           # relative tolerance on the constants of a pattern (1/6 as float32 etc.)
FOLD_MAX_NODES = 64        # largest subgraph folded_value evaluates to decide a condition
_NONDETERMINISTIC = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli"}


class Constants:
    """Constant values visible in a graph: its initializers that are not graph inputs, its Constant nodes'
    outputs, then the enclosing graphs' constants. Arrays are made only when asked for."""

    def __init__(self, graph: "onnx.GraphProto", outer: "Constants | None" = None,
                 extra: dict[str, "np.ndarray"] | None = None):
        inputs = {vi.name for vi in graph.input}
        self.tensors = {t.name: t for t in graph.initializer if t.name not in inputs}
        self.nodes = {n.output[0]: n for n in graph.node
                      if n.op_type == "Constant" and n.domain in ("", "ai.onnx") and len(n.output) == 1}
        self.local = defined(graph)
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


def scalar(consts: Constants, name: str) -> float | None:
    """The value of a constant holding one number (rank 0 or [1]), else None."""
    v = consts.get(name)
    if v is None or v.size != 1 or v.ndim > 1 or v.dtype.kind not in "fiu":
        return None
    return float(v.reshape(-1)[0])


def close_to(a: float | None, b: float) -> bool:
    """Whether a pattern's constant `a` is `b`, up to float32 rounding (1/6 is not exact)."""
    return a is not None and abs(a - b) <= SCALE_TOL * max(1.0, abs(b))


def folded_value(model: "onnx.ModelProto", graph: "onnx.GraphProto", name: str, consts: Constants,
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
        if n is None or not is_standard(n) or n.op_type in _NONDETERMINISTIC or graphs_of(n):
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
        if len(cone) > FOLD_MAX_NODES:
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
