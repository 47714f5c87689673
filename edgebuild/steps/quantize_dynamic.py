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

import functools
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgebuild.onnx import runtime as onnx_runtime
from edgebuild.onnx.quantize import accuracy_param, layers, preprocess, sensitivity, target_types
from edgebuild.onnx.quantize.search import AccuracySearch, Config, Goal
from edgebuild.steps.base import PlanContext, RunContext, StepError, StepKind, tool_errors

if TYPE_CHECKING:  # pragma: no cover
    import onnx

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
        "accuracy": accuracy_param.accuracy_schema("per-channel weights and nodes kept in float"),
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
        return target_types.uses_auto(params, ("weight_type", "reduce_range")) or bool(params.get("accuracy"))

    @classmethod
    def resolve(cls, params: dict[str, Any], target: dict[str, Any]) -> dict[str, Any]:
        return target_types.resolved(params, target, dynamic=True)

    @classmethod
    def source_files(cls, params: dict[str, Any], recipe_dir: Path) -> dict[str, Path]:
        return accuracy_param.metric_source_files(params, recipe_dir)

    def check(self, ctx: PlanContext) -> None:
        accuracy_param.check_accuracy(ctx)

    def run(self, ctx: RunContext) -> dict[str, Any]:
        from edgebuild.onnx import graph as onnx_graph

        p = ctx.params
        model = onnx_graph.load(ctx.input_model)
        types = target_types.resolve_types(p, ctx.target, dynamic=True)
        prep = preprocess.prepare(model, p, types.per_channel, ctx.max_opset, ctx.log)
        types.per_channel = types.per_channel and prep.per_channel
        op_types, converted = _op_types(ctx, prep.model)
        preprocess.name_nodes(prep.model)
        ctx.log.info("quantizing %s weights to %s (per_channel=%s, reduce_range=%s; %s)", ", ".join(op_types),
                     types.weight_type, types.per_channel, types.reduce_range, types.reason)
        with tempfile.TemporaryDirectory(prefix="edgebuild-qdyn-") as tmp:
            quantizer = _Quantizer.create(prep.model, op_types, types, Path(tmp))
            if p.get("accuracy"):
                result = _searched(ctx, prep, quantizer)
            else:
                result = _quantized_once(ctx, prep.model, quantizer)
        return _saved(ctx, result, types, prep, converted)


@dataclass
class _Result:
    """The quantized model and the settings that made it (the step's own, or the accuracy search's choice)."""
    model: Any
    per_channel: bool
    excluded: tuple[str, ...]
    accuracy: dict[str, Any] | None = None


@dataclass
class _Quantizer:
    """quantize_dynamic on one pre-processed model with the step's types; `build` is what the accuracy search
    calls for each candidate."""
    src: Path
    dst: Path
    op_types: list[str]
    types: target_types.Types

    @classmethod
    def create(cls, model: "onnx.ModelProto", op_types: list[str], types: target_types.Types, folder: Path) -> "_Quantizer":
        """Write `model` where quantize_dynamic reads it."""
        src = folder / "input.onnx"
        src.write_bytes(model.SerializeToString(deterministic=True))
        return cls(src, folder / "quantized.onnx", op_types, types)

    def build(self, _method: str | None, per_channel: bool, _ops: str | None, excluded: tuple[str, ...]) -> Any:
        """The quantized model, or None when no weight was quantized."""
        from edgebuild.onnx import graph as onnx_graph

        with onnx_runtime.keep_root_logging():
            from onnxruntime.quantization import QuantType, quantize_dynamic

        wtype = QuantType.QInt8 if self.types.weight_type == "int8" else QuantType.QUInt8
        with tool_errors("ONNX Runtime's dynamic quantizer failed", hint="try `preprocess: true`, or limit `op_types`"), \
                onnx_runtime.quiet_quantizer_logs():
            quantize_dynamic(str(self.src), str(self.dst), op_types_to_quantize=self.op_types,
                             per_channel=bool(per_channel), reduce_range=self.types.reduce_range,
                             weight_type=wtype, nodes_to_exclude=sorted(excluded))
        out = onnx_graph.load(self.dst)
        return out if layers.quantized_nodes(out) else None


@dataclass
class _Ranking:
    """The accuracy search's exclusion units (`sensitivity.rank_units`), sensitivity measured on the goal's
    dataset: read when the search first ranks, once it has checked that dataset."""
    ctx: RunContext
    model: "onnx.ModelProto"
    candidates: list[str]
    data: str   # the goal's dataset name

    def __call__(self, quantized: Any) -> list[list[str]]:
        feeds = sensitivity.sensitivity_feeds(Path(self.ctx.data[self.data]), self.model)
        return sensitivity.rank_units(self.model, quantized, self.candidates, feeds, [], self.ctx.log)


def _op_types(ctx: RunContext, model: "onnx.ModelProto") -> tuple[list[str], int]:
    """The op types to quantize, and how many Gemm nodes became MatMul + Add first (ONNX Runtime's dynamic
    quantizer skips Gemm)."""
    from edgebuild.onnx.rewrites.gemm_as_matmul import gemm_to_matmul

    p = ctx.params
    op_types = sorted(p["op_types"]) if p.get("op_types") else sorted(DYNAMIC_OPS)
    converted = 0
    if "Gemm" in op_types:
        converted = gemm_to_matmul(model)
        if converted:
            ctx.log.info("rewrote %d Gemm node(s) with constant weights as MatMul + Add", converted)
        op_types = sorted(set(op_types) - {"Gemm"} | {"MatMul"})
    return op_types, converted


def _why_nothing(model: "onnx.ModelProto", op_types: list[str]) -> str:
    return f"{layers.nothing_quantized(model, op_types)}, so nothing was quantized"


def _quantized_once(ctx: RunContext, model: "onnx.ModelProto", quantizer: _Quantizer) -> _Result:
    """The step's own settings, without an accuracy goal."""
    p = ctx.params
    out = quantizer.build(None, quantizer.types.per_channel, None, ())
    if out is None:
        raise StepError(f"no node was quantized: {_why_nothing(model, quantizer.op_types)}",
                        hint="dynamic quantization helps models dominated by MatMul/Gemm/Conv/LSTM weights; "
                             "check `op_types`, and keep `preprocess: true` for weights exported as Constant nodes",
                        recipe_path=("steps", ctx.step_id, "with", "op_types") if p.get("op_types") else None)
    return _Result(out, quantizer.types.per_channel, ())


def _searched(ctx: RunContext, prep: preprocess.Prepared, quantizer: _Quantizer) -> _Result:
    """The accuracy search's choice: the step's per-channel setting, then the other one, then nodes in float."""
    goal = Goal.from_params(ctx.params["accuracy"])
    per_channel = quantizer.types.per_channel
    configs: list[Config] = [(None, per_channel, None)]
    if prep.per_channel:
        configs.append((None, not per_channel, None))
    candidates = [nd.name for nd in prep.model.graph.node if nd.op_type in quantizer.op_types]
    why_nothing = functools.partial(_why_nothing, prep.model, quantizer.op_types)
    chosen, accuracy = AccuracySearch(ctx, goal, ctx.input_model, quantizer.build, configs, (),
                                      _Ranking(ctx, prep.model, candidates, goal.data), why_nothing).run()
    return _Result(chosen.model, chosen.per_channel, chosen.excluded, accuracy)


def _saved(ctx: RunContext, result: _Result, types: target_types.Types, prep: preprocess.Prepared,
           converted: int) -> dict[str, Any]:
    """Write the quantized model, check it loads, and return the step's facts."""
    from edgebuild.onnx import graph as onnx_graph

    out = result.model
    size_before = onnx_graph.file_size(ctx.input_model)
    ops = onnx_graph.count_ops(out)
    quantized = layers.quantized_nodes(out)
    size_after = onnx_graph.save(out, ctx.output_model, ctx.ir_version, ctx.max_opset)
    onnx_runtime.check_loads(ctx.output_model, "quantized",
                             hint="try `weight_type: uint8`, or limit `op_types` to MatMul")
    ctx.log.info("size %d -> %d bytes; %d node(s) with int8 weights; ops: %s", size_before, size_after, len(quantized),
                 ", ".join(f"{k} x{v}" for k, v in ops.items()))
    facts: dict[str, Any] = {
        "ops": ops, "gemm_rewritten": converted, "size_before": size_before, "size_after": size_after,
        "types": types.facts(), "per_channel": result.per_channel,
        "preprocess": prep.preprocess if prep.preprocess is not None else False,
        "quantized_nodes": len(quantized), "fp32_nodes": list(result.excluded)}
    if prep.opset:
        facts["opset"] = prep.opset
    if result.accuracy is not None:
        facts["accuracy"] = result.accuracy
    return facts


KIND = QuantizeDynamic
