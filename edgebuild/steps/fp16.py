"""fp16: convert float32 weights and compute to float16 (onnxruntime.transformers.float16).

Weights exported as `Constant` nodes (or behind constant subgraphs) become initializers first, as
in the quantize steps, so they are converted too.

Ops ONNX Runtime keeps in float32 for accuracy (its converter's default block list, e.g. Resize,
Range, some reductions) stay float32 behind Cast nodes. With `keep_io_types` the model's inputs
and outputs stay float32, so callers feed and read the same arrays as before.
"""

from __future__ import annotations

from typing import Any

from edgebuild.steps.base import RunContext, StepError, StepKind, tool_errors


class Fp16(StepKind):
    name = "fp16"
    version = 2
    summary = "Convert float32 weights and computation to float16 (half the size; fast on GPUs and NPUs with fp16)."
    params = {
        "keep_io_types": {"type": "boolean", "default": True,
                          "description": "Keep float32 model inputs and outputs (Cast nodes convert at the edges); "
                                         "false makes the inputs and outputs float16 as well."},
    }
    precision = "fp16"
    takes_precisions = ("fp32",)
    tools = ("onnx", "onnxruntime")

    def run(self, ctx: RunContext) -> dict[str, Any]:
        import warnings

        from edgebuild.onnx import graph as onnx_graph
        from edgebuild.onnx import runtime as onnx_runtime

        with onnx_runtime.keep_root_logging():
            from onnxruntime.transformers.float16 import convert_float_to_float16

        from edgebuild.onnx.quantize import preprocess

        model = onnx_graph.load(ctx.input_model)
        size_before = onnx_graph.file_size(ctx.input_model)
        pre = preprocess.weights_as_initializers(model, ctx.log)   # weights exported as Constant nodes
        before = onnx_graph.initializer_dtypes(model)
        if not before.get("float32"):
            raise StepError("the model has no float32 weights to convert",
                            hint="fp16 converts a float32 model; take this step from an fp32 model (e.g. the export step)")
        keep = bool(ctx.params["keep_io_types"])
        ctx.log.info("converting float32 to float16 (keep_io_types=%s)", keep)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with tool_errors("float16 conversion failed"):
                out = convert_float_to_float16(model, keep_io_types=keep)
        for w in caught:   # e.g. weights clipped to the float16 range
            ctx.log.warning("converter: %s", str(w.message).strip())
        onnx_graph.topo_sort(out.graph)   # the converter appends the input Casts after the nodes that read them
        size_after = onnx_graph.save(out, ctx.output_model, ctx.ir_version, ctx.max_opset)
        onnx_runtime.check_loads(ctx.output_model, "float16")
        after = onnx_graph.initializer_dtypes(out)
        ctx.log.info("size %d -> %d bytes; initializers by type: %s", size_before, size_after, after)
        return {"initializers": after, "keep_io_types": keep, "preprocess": pre, "size_before": size_before,
                "size_after": size_after}


KIND = Fp16
