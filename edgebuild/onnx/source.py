"""Normalize the recipe's ONNX model to what the recipe's `model.inputs` says, before a step reads it.

A recipe may declare dims that differ from the graph's (a fixed `[10, 3, 32, 32]` on a fully
convolutional model, made `[1, 3, h, w]`) and fix inputs to constants (`value:`, e.g. a sample
rate the model branches on). `normalize()` applies, in order, from edgebuild/onnx/rewrites/:
`initializer_inputs.fix_inputs` (fixed inputs become initializers), `if_inlining.inline_constant_if`
(an If on a now-constant condition becomes its branch, so quantizers see the branch's nodes),
`declared_shapes.override_input_dims` (declared dims rewritten, output dims re-inferred or left
symbolic). Called by the worker for steps that read the recipe's model; imports onnx only when called.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgebuild.steps.base import StepError


def normalize(source_path: str | Path, inputs: dict[str, dict[str, Any]], out_path: str | Path) -> dict[str, Any] | None:
    """Write the recipe's model normalized to `inputs` at `out_path`; return facts of what changed, or None
    (nothing written) when the graph already matches: no `value` given and no declared dim differs.

    `inputs`: the recipe's model.inputs (name -> {"shape", "dtype", optional "value"}). Symbolic dims
    match any symbolic dim (names are not compared); names that are not graph inputs are ignored
    (the recipe check reports them). Facts: "fixed" (name -> value), "if_inlined" (count), "inputs"
    and "outputs" (name -> {"declared": dims before, "now": dims after}) for shapes that changed.
    """
    import onnx

    from edgebuild.onnx import graph as onnx_graph
    from edgebuild.onnx.graph import declared_dims
    from edgebuild.onnx.rewrites.declared_shapes import override_input_dims, refresh_shapes
    from edgebuild.onnx.rewrites.if_inlining import inline_constant_if
    from edgebuild.onnx.rewrites.initializer_inputs import fix_inputs

    source_path, out_path = Path(source_path), Path(out_path)
    try:   # weights in external files are read only once there is something to do
        model = onnx.load(str(source_path), load_external_data=False)
    except Exception:
        model = onnx_graph.load(source_path)   # raises the StepError that says why
    graph = model.graph
    inits = {t.name for t in graph.initializer}
    declared = {vi.name: vi for vi in graph.input if vi.name not in inits}
    values: dict[str, Any] = {}
    dims: dict[str, dict[str, Any]] = {}
    for name, spec in inputs.items():
        vi = declared.get(name)
        if vi is None:
            continue
        if "value" in spec:
            values[name] = _array(name, spec, vi)
        elif _differs(declared_dims(vi), list(spec.get("shape", []))):
            dims[name] = {"shape": list(spec["shape"])}
    if not values and not dims:
        return None
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in onnx_graph.iter_initializers(model)):
        from onnx.external_data_helper import load_external_data_for_model

        load_external_data_for_model(model, str(source_path.parent))
    inputs_before = {n: declared_dims(declared[n]) for n in dims}
    outputs_before = {o.name: declared_dims(o) for o in graph.output}
    facts: dict[str, Any] = {}
    if values:
        fix_inputs(model, values)
        facts["fixed"] = {n: _plain(inputs[n]["value"]) for n in sorted(values)}
        inlined = inline_constant_if(model)
        if inlined:
            facts["if_inlined"] = inlined
    if dims:
        override_input_dims(model, dims)
    elif values:
        refresh_shapes(model)   # a fixed input (or an inlined branch) can change what the outputs are
    now_inputs = {vi.name: declared_dims(vi) for vi in model.graph.input}
    changed_inputs = {n: {"declared": _shown(inputs_before[n]), "now": _shown(now_inputs.get(n))}
                      for n in sorted(inputs_before) if inputs_before[n] != now_inputs.get(n)}
    if changed_inputs:
        facts["inputs"] = changed_inputs
    changed_outputs = {o.name: {"declared": _shown(outputs_before.get(o.name)), "now": _shown(declared_dims(o))}
                       for o in model.graph.output if outputs_before.get(o.name) != declared_dims(o)}
    if changed_outputs:
        facts["outputs"] = dict(sorted(changed_outputs.items()))
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise StepError(f"the recipe's model, normalized to model.inputs, does not pass the ONNX checker: {str(exc).strip()[:400]}",
                        hint="this is likely a bug in edgebuild's source normalization; remove `value:` or the "
                             "overridden dims from model.inputs to build from the model as it is",
                        recipe_path=("model", "inputs")) from None
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_bytes(model.SerializeToString(deterministic=True))
    return facts


def _differs(graph_dims: list[int | str] | None, recipe_dims: list[int | str]) -> bool:
    """Whether the recipe's dims say something other than the graph's: a fixed dim differs, or is
    fixed on one side and symbolic on the other, or the rank differs. Symbolic names are not compared."""
    if graph_dims is None:
        return True
    if len(graph_dims) != len(recipe_dims):
        return True
    for g, r in zip(graph_dims, recipe_dims):
        if isinstance(g, int) != isinstance(r, int) or (isinstance(g, int) and g != r):
            return True
    return False


def _array(name: str, spec: dict[str, Any], vi: Any) -> Any:
    """The recipe's `value` for an input as a numpy array of the input's element type and the recipe's shape."""
    import numpy as np
    import onnx

    elem = vi.type.tensor_type.elem_type or onnx.TensorProto.FLOAT
    where = ("model", "inputs", name, "value")
    try:
        arr = np.asarray(spec["value"], dtype=onnx.helper.tensor_dtype_to_np_dtype(elem))
    except (TypeError, ValueError) as exc:
        raise StepError(f"model.inputs.{name}.value does not convert to the input's element type: {exc}",
                        recipe_path=where) from None
    shape = spec.get("shape")
    if shape is not None and all(isinstance(d, int) for d in shape):
        size = int(np.prod(shape, dtype=np.int64))
        if arr.size != size:
            raise StepError(f"model.inputs.{name}.value holds {arr.size} element(s); its shape {list(shape)} holds {size}",
                            recipe_path=where)
        arr = arr.reshape(shape)
    return arr


def _plain(value: Any) -> Any:
    """A value as plain JSON data (numbers, lists)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value.item() if hasattr(value, "item") else value   # numpy scalars -> Python numbers


def _shown(dims: list[int | str] | None) -> list[int | str] | None:
    return None if dims is None else list(dims)


def declares_shape(path: Path, name: str) -> bool:
    """Whether the ONNX graph declares a shape (a rank, maybe 0) for input `name`; the probe shows an
    undeclared shape and a scalar the same way, so this reads the graph again (rarely needed)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    vi = next((v for v in model.graph.input if v.name == name), None)
    return vi is not None and vi.type.tensor_type.HasField("shape")


_INT_RANGES = {"int8": (-2**7, 2**7 - 1), "uint8": (0, 2**8 - 1), "int32": (-2**31, 2**31 - 1), "int64": (-2**63, 2**63 - 1)}


def value_problem(value: Any, shape: list[Any], dtype: str) -> str | None:
    """Why a fixed `value` does not fit an input of this shape and dtype, or None when it does."""
    flat: list[Any] = []

    def walk(v: Any) -> bool:   # False when nested lists are ragged
        if isinstance(v, list):
            if not v:
                return False
            kinds = {isinstance(x, list) for x in v}
            if len(kinds) != 1:
                return False
            if isinstance(v[0], list) and len({len(x) for x in v}) != 1:
                return False
            return all(walk(x) for x in v)
        flat.append(v)
        return True

    if not walk(value):
        return "is ragged: nested lists must all have the same length"
    if any(isinstance(d, str) for d in shape):
        return f"needs fixed dims, but the shape [{', '.join(str(d) for d in shape)}] has symbolic ones"
    size = 1
    for d in shape:
        size *= d
    if len(flat) != size:
        return f"holds {len(flat)} element(s), but the shape [{', '.join(str(d) for d in shape)}] holds {size}"
    if dtype == "bool":
        if not all(isinstance(x, bool) or x in (0, 1) for x in flat):
            return "must be true/false (or 0/1) for a bool input"
    elif dtype in _INT_RANGES:
        lo, hi = _INT_RANGES[dtype]
        if not all(isinstance(x, int) and not isinstance(x, bool) and lo <= x <= hi for x in flat):
            return f"must be whole numbers in [{lo}, {hi}] for an {dtype} input"
    elif dtype.startswith("float") or dtype == "bfloat16":
        if any(isinstance(x, bool) for x in flat):
            return f"must be numbers for a {dtype} input"
    return None

