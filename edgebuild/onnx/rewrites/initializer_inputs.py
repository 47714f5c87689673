"""Graph inputs and initializers: initializers also listed as inputs stop being inputs
(`drop_initializer_inputs`), inputs the recipe fixes become initializers (`fix_inputs`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgebuild.onnx.graph import declared_dims

if TYPE_CHECKING:
    import onnx


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
