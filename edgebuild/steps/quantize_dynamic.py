"""quantize-dynamic: int8 weights, activations quantized at run time (no calibration data).

Uses onnxruntime.quantization.quantize_dynamic. ONNX Runtime's dynamic quantizer does not handle
Gemm, so Gemm nodes with constant weights (PyTorch Linear layers on 2-D inputs) are first rewritten
as MatMul + Add; their weights are then quantized like any MatMul.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from edgebuild.steps.base import RunContext, StepError, StepKind

# onnxruntime.quantization.registry.IntegerOpsRegistry (ORT 1.32), plus Gemm (rewritten as MatMul).
DYNAMIC_OPS = ["Attention", "Conv", "EmbedLayerNormalization", "Gather", "Gemm", "LSTM", "MatMul", "Transpose"]


class QuantizeDynamic(StepKind):
    name = "quantize-dynamic"
    version = 1
    summary = "Quantize weights to int8 ahead of time and activations at run time (no calibration data needed)."
    params = {
        "weight_type": {"enum": ["int8", "uint8"], "default": "int8",
                        "description": "Integer type of the quantized weights."},
        "per_channel": {"type": "boolean", "default": False,
                        "description": "Quantize weights per output channel (more accurate, slightly larger)."},
        "op_types": {"type": ["array", "null"], "items": {"enum": DYNAMIC_OPS}, "minItems": 1, "uniqueItems": True,
                     "default": None,
                     "description": "Op types to quantize; unset: every op type ONNX Runtime quantizes dynamically, "
                                    f"plus Gemm ({', '.join(DYNAMIC_OPS)}). Gemm with constant weights is rewritten "
                                    "as MatMul + Add first (ONNX Runtime's dynamic quantizer skips Gemm)."},
        "reduce_range": {"type": "boolean", "default": False,
                         "description": "Quantize weights to 7 bits: can avoid saturation on x86 CPUs without VNNI."},
    }
    precision = "int8"
    tools = ("onnx", "onnxruntime")

    @classmethod
    def emits(cls, params: dict[str, Any]) -> tuple[str, ...]:
        return ("DynamicQuantizeLinear", "MatMulInteger", "ConvInteger")

    def run(self, ctx: RunContext) -> dict[str, Any]:
        from edgebuild.steps import _onnx

        with _onnx.keep_root_logging():
            from onnxruntime.quantization import QuantType, quantize_dynamic

        p = ctx.params
        model = _onnx.load(ctx.input_model)
        size_before = _onnx.file_size(ctx.input_model)
        op_types = sorted(p["op_types"]) if p.get("op_types") else sorted(DYNAMIC_OPS)
        converted = 0
        if "Gemm" in op_types:
            converted = _onnx.gemm_to_matmul(model)
            if converted:
                ctx.log.info("rewrote %d Gemm node(s) with constant weights as MatMul + Add", converted)
            op_types = sorted(set(op_types) - {"Gemm"} | {"MatMul"})
        ctx.log.info("quantizing %s weights to %s (per_channel=%s, reduce_range=%s)", ", ".join(op_types),
                     p["weight_type"], p["per_channel"], p["reduce_range"])
        with tempfile.TemporaryDirectory(prefix="edgebuild-qdyn-") as tmp:
            src, dst = Path(tmp) / "input.onnx", Path(tmp) / "quantized.onnx"
            src.write_bytes(model.SerializeToString(deterministic=True))
            try:
                with _onnx.quiet_quantizer_logs():
                    quantize_dynamic(str(src), str(dst), op_types_to_quantize=op_types,
                                     per_channel=bool(p["per_channel"]), reduce_range=bool(p["reduce_range"]),
                                     weight_type=QuantType.QInt8 if p["weight_type"] == "int8" else QuantType.QUInt8)
            except Exception as exc:
                raise StepError(f"ONNX Runtime's dynamic quantizer failed: {type(exc).__name__}: {str(exc).strip()[:400]}") from None
            out = _onnx.load(dst)
        ops = _onnx.count_ops(out)
        if _int8_weights(out) <= _int8_weights(model):
            raise StepError(f"nothing was quantized: the model has no {', '.join(op_types)} node with constant weights",
                            hint="dynamic quantization helps models dominated by MatMul/Gemm/Conv/LSTM weights; "
                                 "check `op_types`",
                            recipe_path=("steps", ctx.step_id, "with", "op_types") if p.get("op_types") else None)
        size_after = _onnx.save(out, ctx.output_model, ctx.ir_version, ctx.max_opset)
        _onnx.check_loads(ctx.output_model, "quantized",
                          hint="try `weight_type: uint8`, or limit `op_types` to MatMul")
        ctx.log.info("size %d -> %d bytes; ops: %s", size_before, size_after,
                     ", ".join(f"{k} x{v}" for k, v in ops.items()))
        return {"ops": ops, "gemm_rewritten": converted, "size_before": size_before, "size_after": size_after}


def _int8_weights(model: Any) -> int:
    """Number of uint8/int8 initializers (quantized weights), subgraphs included."""
    from edgebuild.steps import _onnx

    return sum(1 for t in _onnx.iter_initializers(model) if t.data_type in (2, 3))


KIND = QuantizeDynamic
