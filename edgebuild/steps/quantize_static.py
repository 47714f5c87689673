"""quantize-static: int8 weights and activations, activation ranges calibrated on a recipe dataset.

Calibration runs ONNX Runtime's calibrator over the dataset's first `samples` samples, fed as
batches of one through CalibrationDataReaders, CHUNK samples per pass (bounded memory). The ranges
then go to onnxruntime.quantization.quantize_static through its calibration cache file, which is
also how the histogram methods get settings quantize_static does not pass on (entropy bins).
The list of op types is passed sorted: ONNX Runtime's own default is built from a set, whose
order changes with PYTHONHASHSEED.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import tempfile
from pathlib import Path
from typing import Any, Iterator

from edgebuild.steps.base import PlanContext, RunContext, StepError, StepKind

_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
# ORT's entropy default (128 bins, 128 quantized bins) has a single candidate threshold: plain min/max.
# 512 bins give the KL search 193 candidates at ~0.2 s per tensor (2048, as TensorRT uses, costs ~1 s).
_CALIBRATOR_OPTIONS: dict[str, dict[str, Any]] = {
    "minmax": {},
    "entropy": {"num_bins": 512, "num_quantized_bins": 128},
    "percentile": {"num_bins": 2048, "percentile": 99.999, "symmetric": True},
}
CHUNK = 16   # samples per calibration pass


class QuantizeStatic(StepKind):
    name = "quantize-static"
    version = 1
    summary = "Quantize weights and activations to int8, calibrating activation ranges on a dataset."
    params = {
        "data": {"type": "string", "description": "Recipe dataset (under `data:`) to calibrate on."},
        "samples": {"type": "integer", "minimum": 1, "default": 200,
                    "description": "Calibrate on the first N samples of the dataset (all of them when it has fewer)."},
        "method": {"enum": ["minmax", "entropy", "percentile"], "default": "minmax",
                   "description": "How activation ranges are chosen: `minmax` (observed min/max), `entropy` "
                                  "(KL-divergence threshold) or `percentile` (99.999th percentile of |x|)."},
        "format": {"enum": ["qdq", "qoperator"], "default": "qdq",
                   "description": "`qdq`: QuantizeLinear/DequantizeLinear pairs around float ops (portable; runtimes fuse "
                                  "them); `qoperator`: integer ops (QLinearConv, QLinearMatMul...)."},
        "per_channel": {"type": "boolean", "default": False,
                        "description": "Quantize weights per output channel (more accurate for convolutions)."},
        "activation_type": {"enum": ["uint8", "int8"], "default": "uint8",
                            "description": "Integer type of quantized activations."},
        "weight_type": {"enum": ["int8", "uint8"], "default": "int8",
                        "description": "Integer type of quantized weights."},
    }
    required = ("data",)
    precision = "int8"
    tools = ("onnx", "onnxruntime")
    dataset_params = ("data",)

    @classmethod
    def emits(cls, params: dict[str, Any]) -> tuple[str, ...]:
        if params.get("format") == "qoperator":
            return ("QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul")
        return ("QuantizeLinear", "DequantizeLinear")

    def check(self, ctx: PlanContext) -> None:
        p = ctx.params   # the dataset name itself is checked by the recipe stage for every dataset_params entry
        if p.get("activation_type") == "int8" and p.get("weight_type") == "uint8":
            ctx.error("int8 activations with uint8 weights is not a combination ONNX Runtime quantizes",
                      param="weight_type", hint="use `weight_type: int8`, or `activation_type: uint8`")

    def run(self, ctx: RunContext) -> dict[str, Any]:
        from edgebuild import datasets
        from edgebuild.steps import _onnx

        with _onnx.keep_root_logging():
            from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
            from onnxruntime.quantization.calibrate import save_tensors_data
            from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

        p = ctx.params
        name = p["data"]
        if name not in ctx.data:
            raise StepError(f"dataset '{name}' is not declared under `data:`", recipe_path=("steps", ctx.step_id, "with", "data"))
        path = Path(ctx.data[name])
        model = _onnx.load(ctx.input_model)
        inputs = _onnx.input_names(model)
        try:
            arrays = datasets.inspect(path)
        except (OSError, ValueError) as exc:
            raise StepError(f"cannot read dataset '{name}': {exc}", recipe_path=("data", name)) from None
        missing = [i for i in inputs if i not in arrays]
        if missing:
            raise StepError(f"dataset '{name}' has no array for model input(s) {', '.join(missing)} "
                            f"(it has: {', '.join(arrays) or 'no arrays'})", recipe_path=("data", name),
                            hint="save one array per model input, named after the input")
        available = datasets.count(path, inputs)
        n = min(int(p["samples"]), available)
        if n == 0:
            raise StepError(f"dataset '{name}' holds no samples", recipe_path=("data", name))
        ctx.log.info("calibrating on %d of %d sample(s) of dataset '%s' with %s", n, available, name, p["method"])

        method = getattr(CalibrationMethod, _METHODS[p["method"]])
        fmt = QuantFormat.QDQ if p["format"] == "qdq" else QuantFormat.QOperator
        ops = sorted(set(QDQRegistry) | set(QLinearOpsRegistry))
        with tempfile.TemporaryDirectory(prefix="edgebuild-qstatic-") as tmp:
            src, dst, cache = Path(tmp) / "input.onnx", Path(tmp) / "quantized.onnx", Path(tmp) / "ranges.json"
            src.write_bytes(model.SerializeToString(deterministic=True))
            printed = io.StringIO()
            try:
                with contextlib.redirect_stdout(printed), _onnx.quiet_quantizer_logs():   # calibrators print progress
                    ranges = _calibrate(src, Path(tmp) / "augmented.onnx", ops, method, p["method"],
                                        _cast(datasets.feeds(path, inputs, limit=n), _onnx.graph_inputs(model)))
                    save_tensors_data(ranges, cache)
                    quantize_static(
                        str(src), str(dst), calibration_data_reader=None, calibration_cache_path=str(cache),
                        quant_format=fmt, op_types_to_quantize=ops, per_channel=bool(p["per_channel"]),
                        reduce_range=False, calibrate_method=method,
                        activation_type=QuantType.QUInt8 if p["activation_type"] == "uint8" else QuantType.QInt8,
                        weight_type=QuantType.QInt8 if p["weight_type"] == "int8" else QuantType.QUInt8)
            except StepError:
                raise
            except Exception as exc:
                raise StepError(f"ONNX Runtime's static quantizer failed: {type(exc).__name__}: {str(exc).strip()[:400]}") from None
            finally:
                for line in printed.getvalue().splitlines():
                    if line.strip():
                        ctx.log.debug("calibrator: %s", line.strip())
            out = _onnx.load(dst)
        size_before = _onnx.file_size(ctx.input_model)
        counts = _onnx.count_ops(out)
        if not any(k in counts for k in _onnx.INT8_OPS):
            raise StepError("nothing was quantized: the model has no op ONNX Runtime quantizes statically",
                            hint="static quantization targets Conv, MatMul, Gemm and friends")
        size_after = _onnx.save(out, ctx.output_model, ctx.ir_version, ctx.max_opset)
        _onnx.check_loads(ctx.output_model, "quantized")
        ctx.log.info("size %d -> %d bytes; ops: %s", size_before, size_after, ", ".join(f"{k} x{v}" for k, v in counts.items()))
        return {"samples": n, "method": p["method"], "format": p["format"], "ops": counts,
                "size_before": size_before, "size_after": size_after}


def _cast(feeds: Iterator[dict[str, Any]], specs: dict[str, dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Float samples in the model's float input type (e.g. float16 inputs after an fp16 step)."""
    for feed in feeds:
        out = {}
        for k, v in feed.items():
            want = specs.get(k, {}).get("dtype", "")
            out[k] = v.astype(want) if want.startswith("float") and v.dtype.kind == "f" and v.dtype.name != want else v
        yield out


def _calibrate(model: Path, augmented: Path, ops: list[str], method: Any, name: str, feeds: Iterator[dict[str, Any]]) -> Any:
    """Activation ranges from the samples, collected CHUNK samples at a time.

    quantize_static would hold every calibrated tensor of every sample in memory at once (the
    histogram methods do); feeding chunks bounds that. Min/max ranges merge exactly across chunks;
    histograms merge by widening with the same bin width, deterministically.
    """
    from onnxruntime.quantization import CalibrationDataReader
    from onnxruntime.quantization.calibrate import create_calibrator

    class Chunk(CalibrationDataReader):
        def __init__(self, items: list[dict[str, Any]]) -> None:
            self._it = iter(items)

        def get_next(self) -> dict[str, Any] | None:
            return next(self._it, None)

    calibrator = create_calibrator(model, ops, augmented_model_path=str(augmented), calibrate_method=method,
                                   extra_options=_CALIBRATOR_OPTIONS[name])
    while True:
        chunk = list(itertools.islice(feeds, CHUNK))
        if not chunk:
            break
        calibrator.collect_data(Chunk(chunk))
    return calibrator.compute_data()


KIND = QuantizeStatic
