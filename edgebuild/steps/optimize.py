"""optimize: ONNX Runtime graph optimizations (constant folding, fusions), saved offline as a new model."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from edgebuild.steps.base import RunContext, StepError, StepKind


class Optimize(StepKind):
    name = "optimize"
    version = 1
    summary = "Apply ONNX Runtime graph optimizations offline (constant folding, redundant node removal, fusions)."
    params = {
        "level": {
            "enum": ["basic", "extended"], "default": "basic",
            "description": "ONNX Runtime optimization level. `basic`: semantics-preserving rewrites in standard ONNX ops "
                           "(constant folding, redundant node elimination, Conv+BatchNorm fusion), portable to any runtime. "
                           "`extended`: adds fusions into ONNX Runtime contrib ops (com.microsoft, e.g. FusedConv, Gelu, "
                           "LayerNormalization variants) chosen for its CPU provider, so the file is tied to ONNX Runtime; "
                           "fine for onnxruntime targets, not for other runtimes (TensorRT, other engines).",
        },
    }
    tools = ("onnx", "onnxruntime")

    @classmethod
    def emits(cls, params: dict[str, Any]) -> tuple[str, ...]:
        return ("com.microsoft.*",) if params.get("level") == "extended" else ()

    def run(self, ctx: RunContext) -> dict[str, Any]:
        import onnxruntime as ort

        from edgebuild.steps import _onnx

        level = ctx.params["level"]
        before = _onnx.load(ctx.input_model)
        nodes_before = _onnx.node_count(before)
        so = ort.SessionOptions()
        so.graph_optimization_level = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                                       "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED}[level]
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        ctx.log.info("optimizing with ONNX Runtime %s at level %s", ort.__version__, level)
        with tempfile.TemporaryDirectory(prefix="edgebuild-optimize-") as tmp:
            out = Path(tmp) / "optimized.onnx"
            so.optimized_model_filepath = str(out)
            try:
                ort.InferenceSession(str(ctx.input_model), sess_options=so, providers=["CPUExecutionProvider"])
            except Exception as exc:
                raise StepError(f"ONNX Runtime cannot load the input model: {str(exc).strip()[:400]}") from None
            model = _onnx.load(out)
        nodes_after = _onnx.node_count(model)
        _onnx.save(model, ctx.output_model, ctx.ir_version, ctx.max_opset)
        ctx.log.info("nodes: %d -> %d", nodes_before, nodes_after)
        return {"level": level, "nodes_before": nodes_before, "nodes_after": nodes_after}


KIND = Optimize
