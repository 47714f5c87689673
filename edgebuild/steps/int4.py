"""int4: weight-only 4-bit quantization of MatMul weights into MatMulNBits (onnxruntime.quantization).

Each constant MatMul weight is quantized in blocks of `block_size` values along its input (K) axis,
one scale (and, when asymmetric, one zero point) per block; activations stay float. Weights exported
as `Constant` nodes become initializers first, and Gemm nodes with constant weights (PyTorch Linear on
2-D inputs) are rewritten as MatMul + Add, since the quantizer only handles MatMul. MatMulNBits is an ONNX Runtime contrib op (com.microsoft): the output
runs on ONNX Runtime (CPU, CUDA, WebGPU), not on other runtimes.
"""

from __future__ import annotations

from typing import Any

from edgebuild.steps.base import RunContext, StepError, StepKind, tool_errors

BLOCK_SIZES = [16, 32, 64, 128, 256]


class Int4(StepKind):
    name = "int4"
    version = 2
    summary = "Quantize MatMul weights to 4 bits (MatMulNBits, ONNX Runtime); activations stay float."
    params = {
        "block_size": {"enum": BLOCK_SIZES, "default": 32,
                       "description": "Weights per quantization block along the input axis (a power of two, 16 to 256); "
                                      "smaller blocks are more accurate and slightly larger."},
        "symmetric": {"type": "boolean", "default": True,
                      "description": "Symmetric quantization (no zero points); false adds a zero point per block."},
        "accuracy_level": {"enum": [None, 0, 1, 2, 3, 4], "default": None,
                           "description": "MatMulNBits accuracy_level: the minimum precision of the activations inside the "
                                          "kernel (0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8); unset leaves it to the runtime."},
    }
    precision = "int4"
    tools = ("onnx", "onnxruntime", "onnx_ir")

    @classmethod
    def emits(cls, params: dict[str, Any]) -> tuple[str, ...]:
        return ("com.microsoft.MatMulNBits",)

    def run(self, ctx: RunContext) -> dict[str, Any]:
        import logging

        from edgebuild.onnx import graph as onnx_graph
        from edgebuild.onnx import runtime as onnx_runtime
        from edgebuild.onnx.rewrites.gemm_as_matmul import constant_matmuls, gemm_to_matmul

        with onnx_runtime.keep_root_logging():
            from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer
            from onnxruntime.quantization.quant_utils import QuantFormat

        p = ctx.params
        from edgebuild.onnx.quantize import preprocess

        model = onnx_graph.load(ctx.input_model)
        size_before = onnx_graph.file_size(ctx.input_model)
        pre = preprocess.weights_as_initializers(model, ctx.log)   # weights exported as Constant nodes
        converted = gemm_to_matmul(model)
        if converted:
            ctx.log.info("rewrote %d Gemm node(s) with constant weights as MatMul + Add", converted)
        candidates = constant_matmuls(model)
        if candidates == 0:
            raise StepError(
                "no MatMul with constant weights to quantize: INT4 weight-only quantization would leave the model unchanged",
                hint="int4 targets transformer and MLP models whose weights sit in MatMul/Gemm (Linear layers); "
                     "for convolutional models use quantize-static or fp16")
        ctx.log.info("quantizing %d MatMul weight(s) to 4 bits: block_size=%d, symmetric=%s, accuracy_level=%s",
                     candidates, p["block_size"], p["symmetric"], p["accuracy_level"])
        config = DefaultWeightOnlyQuantConfig(block_size=int(p["block_size"]), is_symmetric=bool(p["symmetric"]),
                                              accuracy_level=p["accuracy_level"], quant_format=QuantFormat.QOperator,
                                              op_types_to_quantize=("MatMul",), bits=4)
        quiet = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
        level = quiet.level
        quiet.setLevel(logging.WARNING)   # it logs two INFO lines per node
        try:
            with tool_errors("INT4 quantization failed"):
                quantizer = MatMulNBitsQuantizer(model, algo_config=config)
                quantizer.process()
        finally:
            quiet.setLevel(level)
        out = quantizer.model.model
        ops = onnx_graph.count_ops(out)
        if not ops.get("MatMulNBits"):
            raise StepError(
                "no MatMul with constant weights to quantize: INT4 weight-only quantization would leave the model unchanged",
                hint="int4 targets transformer and MLP models whose weights sit in MatMul/Gemm (Linear layers)")
        size_after = onnx_graph.save(out, ctx.output_model, ctx.ir_version, ctx.max_opset)
        onnx_runtime.check_loads(ctx.output_model, "int4")
        ctx.log.info("size %d -> %d bytes; %d MatMulNBits node(s)", size_before, size_after, ops["MatMulNBits"])
        return {"quantized": ops["MatMulNBits"], "gemm_rewritten": converted, "ops": ops, "preprocess": pre,
                "size_before": size_before, "size_after": size_after}


KIND = Int4
