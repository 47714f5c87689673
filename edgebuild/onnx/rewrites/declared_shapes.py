"""Declared shapes: input dims the recipe overrides (`override_input_dims`), and every other declared
shape made to agree by dropping stale value_info and re-inferring the outputs (`refresh_shapes`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgebuild.onnx.graph import declared_dims
from edgebuild.onnx.rewrites.scopes import all_graphs

if TYPE_CHECKING:
    import onnx


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
    for g in all_graphs(model.graph):
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
