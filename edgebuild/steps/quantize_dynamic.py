"""quantize-dynamic: int8 weights, activations quantized at run time (no calibration data).

Uses onnxruntime.quantization.quantize_dynamic. ONNX Runtime's dynamic quantizer does not handle
Gemm, so Gemm nodes with constant weights (PyTorch Linear layers on 2-D inputs) are first rewritten
as MatMul + Add; their weights are then quantized like any MatMul.

Around that call (edgebuild/onnx/quantize/ has the details): `preprocess` turns Constant nodes
into initializers and folds constant subgraphs first (ONNX Runtime only quantizes initializer
weights: otherwise it quantizes nothing, or quantizes the weights again at every run); an output
with no integer weight is an error; `auto` types follow the target's CPU; `accuracy:` searches
per-channel weights and nodes kept in float until a metric goal is met, and requires the result to
be faster than FP32 with the target's threads (dynamic int8 convolutions usually are not: use
quantize-static for conv nets).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from edgebuild.onnx import quantize as onnx_quantize
from edgebuild.steps.base import PlanContext, RunContext, StepError, StepKind, tool_errors

# onnxruntime.quantization.registry.IntegerOpsRegistry (ORT 1.32), plus Gemm (rewritten as MatMul).
DYNAMIC_OPS = ["Attention", "Conv", "EmbedLayerNormalization", "Gather", "Gemm", "LSTM", "MatMul", "Transpose"]


class QuantizeDynamic(StepKind):
    name = "quantize-dynamic"
    version = 4
    summary = "Quantize weights to int8 ahead of time and activations at run time (no calibration data needed)."
    params = {
        "weight_type": {"enum": ["int8", "uint8", "auto"], "default": "int8",
                        "description": "Integer type of the quantized weights (activations are uint8 at run time). "
                                       "`auto`: from the target's CPU (int8 on every CPU edgebuild knows)."},
        "per_channel": {"type": "boolean", "default": False,
                        "description": "Quantize weights per output channel (more accurate, slightly larger); with "
                                       "`accuracy:`, per-channel weights are tried too when the goal is missed."},
        "op_types": {"type": ["array", "null"], "items": {"enum": DYNAMIC_OPS}, "minItems": 1, "uniqueItems": True,
                     "default": None,
                     "description": "Op types to quantize; unset: every op type ONNX Runtime quantizes dynamically, "
                                    f"plus Gemm ({', '.join(DYNAMIC_OPS)}). Gemm with constant weights is rewritten "
                                    "as MatMul + Add first (ONNX Runtime's dynamic quantizer skips Gemm)."},
        "reduce_range": {"enum": [False, True, "auto"], "default": False,
                         "description": "Quantize weights to 7 bits: avoids saturation on x86 CPUs with AVX2/AVX-512 "
                                        "but without VNNI. `auto`: on exactly those targets."},
        "preprocess": {"type": "boolean", "default": True,
                       "description": "Before quantizing, turn Constant nodes into initializers, fold constant "
                                      "subgraphs and infer shapes, so weights exported as constants are quantized too."},
        "accuracy": onnx_quantize.accuracy_schema("per-channel weights and nodes kept in float"),
    }
    precision = "int8"
    takes_precisions = ("fp32",)
    tools = ("onnx", "onnxruntime")
    dataset_params = ("accuracy.data",)

    @classmethod
    def emits(cls, params: dict[str, Any]) -> tuple[str, ...]:
        return ("DynamicQuantizeLinear", "MatMulInteger", "ConvInteger")

    @classmethod
    def is_target_specific(cls, params: dict[str, Any]) -> bool:
        return onnx_quantize.uses_auto(params, ("weight_type", "reduce_range")) or bool(params.get("accuracy"))

    @classmethod
    def resolve(cls, params: dict[str, Any], target: dict[str, Any]) -> dict[str, Any]:
        return onnx_quantize.resolved(params, target, dynamic=True)

    @classmethod
    def source_files(cls, params: dict[str, Any], recipe_dir: Path) -> dict[str, Path]:
        return onnx_quantize.metric_source_files(params, recipe_dir)

    def check(self, ctx: PlanContext) -> None:
        onnx_quantize.check_accuracy(ctx)

    def run(self, ctx: RunContext) -> dict[str, Any]:
        from edgebuild.onnx import graph as onnx_graph
        from edgebuild.onnx import runtime as onnx_runtime
        from edgebuild.onnx.rewrites.gemm_as_matmul import gemm_to_matmul

        with onnx_runtime.keep_root_logging():
            from onnxruntime.quantization import QuantType, quantize_dynamic

        p = ctx.params
        model = onnx_graph.load(ctx.input_model)
        size_before = onnx_graph.file_size(ctx.input_model)
        types = onnx_quantize.resolve_types(p, ctx.target, dynamic=True)
        pre: dict[str, Any] | None = None
        if p["preprocess"]:
            model, pre = onnx_quantize.preprocess(model, ctx.log)
        opset: dict[str, Any] | None = None
        can_per_channel = True
        if types.per_channel or p.get("accuracy"):
            model, can_per_channel, opset = onnx_quantize.per_channel_opset(model, types.per_channel, ctx.max_opset, ctx.log)
            types.per_channel = types.per_channel and can_per_channel
        op_types = sorted(p["op_types"]) if p.get("op_types") else sorted(DYNAMIC_OPS)
        converted = 0
        if "Gemm" in op_types:
            converted = gemm_to_matmul(model)
            if converted:
                ctx.log.info("rewrote %d Gemm node(s) with constant weights as MatMul + Add", converted)
            op_types = sorted(set(op_types) - {"Gemm"} | {"MatMul"})
        onnx_quantize.name_nodes(model)
        ctx.log.info("quantizing %s weights to %s (per_channel=%s, reduce_range=%s; %s)", ", ".join(op_types),
                     types.weight_type, types.per_channel, types.reduce_range, types.reason)
        wtype = QuantType.QInt8 if types.weight_type == "int8" else QuantType.QUInt8

        with tempfile.TemporaryDirectory(prefix="edgebuild-qdyn-") as tmp:
            src, dst = Path(tmp) / "input.onnx", Path(tmp) / "quantized.onnx"
            src.write_bytes(model.SerializeToString(deterministic=True))

            def build(_method: str | None, per_channel: bool, _ops: str | None, excluded: tuple[str, ...]) -> Any:
                """The quantized model, or None when no weight was quantized."""
                with tool_errors("ONNX Runtime's dynamic quantizer failed", hint="try `preprocess: true`, or limit `op_types`"), \
                        onnx_runtime.quiet_quantizer_logs():
                    quantize_dynamic(str(src), str(dst), op_types_to_quantize=op_types,
                                     per_channel=bool(per_channel), reduce_range=types.reduce_range,
                                     weight_type=wtype, nodes_to_exclude=sorted(excluded))
                out = onnx_graph.load(dst)
                return out if onnx_quantize.quantized_nodes(out) else None

            def why_nothing() -> str:
                return f"{onnx_quantize.nothing_quantized(model, op_types)}, so nothing was quantized"

            accuracy: dict[str, Any] | None = None
            per_channel_used = types.per_channel
            excluded: tuple[str, ...] = ()
            if p.get("accuracy"):
                goal = onnx_quantize.Goal.from_params(p["accuracy"])
                configs: list[onnx_quantize.Config] = [(None, types.per_channel, None)]
                if can_per_channel:
                    configs.append((None, not types.per_channel, None))
                candidates = [nd.name for nd in model.graph.node if nd.op_type in op_types]

                def ranking(quantized: Any) -> list[list[str]]:
                    feeds = onnx_quantize.sensitivity_feeds(Path(ctx.data[goal.data]), model)
                    return onnx_quantize.rank_units(model, quantized, candidates, feeds, [], ctx.log)

                search = onnx_quantize.AccuracySearch(ctx, goal, ctx.input_model, build, configs, (), ranking, why_nothing)
                chosen, accuracy = search.run()
                out, per_channel_used, excluded = chosen.model, chosen.per_channel, chosen.excluded
            else:
                out = build(None, types.per_channel, None, ())
                if out is None:
                    raise StepError(f"no node was quantized: {why_nothing()}",
                                    hint="dynamic quantization helps models dominated by MatMul/Gemm/Conv/LSTM weights; "
                                         "check `op_types`, and keep `preprocess: true` for weights exported as Constant nodes",
                                    recipe_path=("steps", ctx.step_id, "with", "op_types") if p.get("op_types") else None)
        ops = onnx_graph.count_ops(out)
        quantized = onnx_quantize.quantized_nodes(out)
        size_after = onnx_graph.save(out, ctx.output_model, ctx.ir_version, ctx.max_opset)
        onnx_runtime.check_loads(ctx.output_model, "quantized",
                          hint="try `weight_type: uint8`, or limit `op_types` to MatMul")
        ctx.log.info("size %d -> %d bytes; %d node(s) with int8 weights; ops: %s", size_before, size_after, len(quantized),
                     ", ".join(f"{k} x{v}" for k, v in ops.items()))
        facts: dict[str, Any] = {
            "ops": ops, "gemm_rewritten": converted, "size_before": size_before, "size_after": size_after,
            "types": types.facts(), "per_channel": per_channel_used, "preprocess": pre if pre is not None else False,
            "quantized_nodes": len(quantized), "fp32_nodes": list(excluded)}
        if opset:
            facts["opset"] = opset
        if accuracy is not None:
            facts["accuracy"] = accuracy
        return facts


KIND = QuantizeDynamic
