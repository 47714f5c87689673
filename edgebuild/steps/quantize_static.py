"""quantize-static: int8 weights and activations, activation ranges calibrated on a recipe dataset.

Calibration runs ONNX Runtime's calibrator over the dataset's first `samples` samples, fed as
batches of one through CalibrationDataReaders, CHUNK samples per pass (bounded memory). The ranges
then go to onnxruntime.quantization.quantize_static through its calibration cache file, which is
also how the histogram methods get settings quantize_static does not pass on (entropy bins).
The list of op types is passed sorted: ONNX Runtime's own default is built from a set, whose
order changes with PYTHONHASHSEED.

Around that call (edgebuild/onnx/quantize/ has the details):
- `preprocess`: Constant nodes become initializers, constant subgraphs are folded, shapes inferred;
- a model older than opset 13 is converted to opset 13 when per-channel weights may be used (their
  DequantizeLinear `axis` needs it), or quantized per tensor when the converter cannot (facts: `opset`);
- `auto` types follow the target's CPU (U8S8 on x86-64, S8S8 on Arm64, ...), so the step is built
  once per target;
- range-mixing nodes (a Concat of box coordinates and class scores) stay in float, with the output
  head after them;
- an output with no quantized weight is an error, not the input model in disguise;
- `accuracy:` measures a metric against the FP32 model on a dataset and searches calibration
  methods, per-channel weights and nodes kept in float until the goal is met, then requires the
  result to be faster than FP32 with the target's threads.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import tempfile
from pathlib import Path
from typing import Any, Iterator

from edgebuild.onnx import quantize as onnx_quantize
from edgebuild.steps.base import PlanContext, RunContext, StepError, StepKind, tool_errors

_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
# ORT's entropy default (128 bins, 128 quantized bins) has a single candidate threshold: plain min/max.
# 512 bins give the KL search 193 candidates at ~0.2 s per tensor (2048, as TensorRT uses, costs ~1 s).
_CALIBRATOR_OPTIONS: dict[str, dict[str, Any]] = {
    "minmax": {},
    "entropy": {"num_bins": 512, "num_quantized_bins": 128},
    "percentile": {"num_bins": 2048, "percentile": 99.999, "symmetric": True},
}
CHUNK = 16   # samples per calibration pass
# Calibration methods the accuracy search tries after the step's own, in this order.
_SEARCH_METHODS = ("percentile", "entropy", "minmax")
# the ops with weights: where int8 kernels (MLAS's QGEMM and int8 convolutions) save time
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


class QuantizeStatic(StepKind):
    name = "quantize-static"
    version = 6
    summary = "Quantize weights and activations to int8, calibrating activation ranges on a dataset."
    params = {
        "data": {"type": "string", "description": "Recipe dataset (under `data:`) to calibrate on."},
        "samples": {"type": "integer", "minimum": 1, "default": 200,
                    "description": "Calibrate on the first N samples of the dataset (all of them when it has fewer)."},
        "method": {"enum": ["minmax", "entropy", "percentile"], "default": "minmax",
                   "description": "How activation ranges are chosen: `minmax` (observed min/max), `entropy` "
                                  "(KL-divergence threshold) or `percentile` (99.999th percentile of |x|). With "
                                  "`accuracy:`, the other methods are tried too when this one misses the goal."},
        "format": {"enum": ["qdq", "qoperator"], "default": "qdq",
                   "description": "`qdq`: QuantizeLinear/DequantizeLinear pairs around float ops (portable; runtimes fuse "
                                  "them); `qoperator`: integer ops (QLinearConv, QLinearMatMul...)."},
        "per_channel": {"enum": ["auto", True, False], "default": "auto",
                        "description": "Quantize weights per output channel (more accurate for convolutions). `auto`: "
                                       "as the target's int8 kernels favour (per channel on every CPU edgebuild knows)."},
        "activation_type": {"enum": ["auto", "uint8", "int8"], "default": "auto",
                            "description": "Integer type of quantized activations. `auto`: from the target's CPU: uint8 "
                                           "on x86-64 (its fast kernels are U8S8; int8 activations have no fast x86 "
                                           "kernel), on WebAssembly and 32-bit Arm; int8 on Arm64 (SDOT/SMMLA S8S8 "
                                           "kernels). On x86-64 without VNNI, `auto` also quantizes weights to 7 bits "
                                           "(reduce_range) against VPMADDUBSW saturation."},
        "weight_type": {"enum": ["auto", "int8", "uint8"], "default": "int8",
                        "description": "Integer type of quantized weights. `auto`: from the target's CPU (int8 on every "
                                       "CPU edgebuild knows)."},
        "op_types": {"enum": ["weighted", "all"], "default": "weighted",
                     "description": "Which ops get quantized activations. `weighted`: the layers with weights (Conv, "
                                    "ConvTranspose, MatMul, Gemm), which is where int8 kernels save time; the ops between "
                                    "them stay float. `all`: every op ONNX Runtime can quantize (its default: Add, Mul, "
                                    "Concat, Resize, Softmax...), longer int8 chains but each one rounded to 8 bits, which "
                                    "breaks LayerNorm, attention and hard-swish arithmetic. With `accuracy:`, the other "
                                    "set is tried too when this one misses the goal."},
        "preprocess": {"type": "boolean", "default": True,
                       "description": "Before quantizing, turn Constant nodes into initializers, fold constant "
                                      "subgraphs and infer shapes, so weights exported as constants are quantized too."},
        "range_mixing": {"type": ["number", "null"], "exclusiveMinimum": 1, "default": onnx_quantize.RATIO,
                         "description": "Keep in float a Concat (or Where) whose inputs' calibrated ranges differ by more "
                                        "than this factor, and the output head after it (box coordinates next to class "
                                        "scores: one 8-bit scale rounds every score to 0). null: quantize them too."},
        "accuracy": onnx_quantize.accuracy_schema("calibration methods, per-channel weights and nodes kept in float"),
    }
    required = ("data",)
    precision = "int8"
    takes_precisions = ("fp32",)
    tools = ("onnx", "onnxruntime")
    dataset_params = ("data", "accuracy.data")

    @classmethod
    def emits(cls, params: dict[str, Any]) -> tuple[str, ...]:
        if params.get("format") == "qoperator":
            return ("QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul")
        return ("QuantizeLinear", "DequantizeLinear")

    @classmethod
    def is_target_specific(cls, params: dict[str, Any]) -> bool:
        return onnx_quantize.uses_auto(params, ("activation_type", "weight_type", "per_channel")) or bool(params.get("accuracy"))

    @classmethod
    def resolve(cls, params: dict[str, Any], target: dict[str, Any]) -> dict[str, Any]:
        return onnx_quantize.resolved(params, target)

    @classmethod
    def source_files(cls, params: dict[str, Any], recipe_dir: Path) -> dict[str, Path]:
        return onnx_quantize.metric_source_files(params, recipe_dir)

    def check(self, ctx: PlanContext) -> None:
        p = ctx.params   # the dataset name itself is checked by the recipe stage for every dataset_params entry
        if p.get("weight_type") == "uint8":
            auto = p.get("activation_type") == "auto"
            acts = ([onnx_quantize.auto_types(getattr(t, "data", None)).activation_type for t in ctx.targets]
                    if auto else [p.get("activation_type")])
            if "int8" in acts:
                ctx.error("int8 activations with uint8 weights is not a combination ONNX Runtime quantizes"
                          + (" (`activation_type: auto` is int8 on an Arm64 target)" if auto else ""),
                          param="weight_type", hint="use `weight_type: int8`, or `activation_type: uint8`")
        onnx_quantize.check_accuracy(ctx)

    def run(self, ctx: RunContext) -> dict[str, Any]:
        from edgebuild.frontend import datasets
        from edgebuild.onnx import graph as onnx_graph
        from edgebuild.onnx import runtime as onnx_runtime

        with onnx_runtime.keep_root_logging():
            from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
            from onnxruntime.quantization.calibrate import save_tensors_data
            from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

        p = ctx.params
        name = p["data"]
        if name not in ctx.data:
            raise StepError(f"dataset '{name}' is not declared under `data:`", recipe_path=("steps", ctx.step_id, "with", "data"))
        path = Path(ctx.data[name])
        model = onnx_graph.load(ctx.input_model)
        inputs = onnx_graph.input_names(model)
        try:
            arrays = datasets.inspect(path)
        except (OSError, ValueError) as exc:
            raise StepError(f"cannot read dataset '{name}': {exc}", recipe_path=("data", name)) from None
        missing = [i for i in inputs if i not in arrays]
        if missing:
            raise StepError(f"dataset '{name}' has no array for model input(s) {', '.join(missing)} "
                            f"(it has: {', '.join(arrays) or 'no arrays'})", recipe_path=("data", name),
                            hint="save one array per model input, named after the input")
        nan = datasets.nan_problem(path, inputs)
        if nan:
            raise StepError(f"dataset '{name}': {nan}", recipe_path=("data", name),
                            hint="calibration needs real values: drop those samples or fill the gaps before saving")
        available = datasets.count(path, inputs)
        n = min(int(p["samples"]), available)
        if n == 0:
            raise StepError(f"dataset '{name}' holds no samples", recipe_path=("data", name))

        types = onnx_quantize.resolve_types(p, ctx.target)
        if types.activation_type == "int8" and types.weight_type == "uint8":
            raise StepError("int8 activations with uint8 weights is not a combination ONNX Runtime quantizes",
                            hint="use `weight_type: int8`, or `activation_type: uint8`",
                            recipe_path=("steps", ctx.step_id, "with", "weight_type"))
        ctx.log.info("types: activations %s, weights %s, per_channel=%s, reduce_range=%s (%s)", types.activation_type,
                     types.weight_type, types.per_channel, types.reduce_range, types.reason)
        pre: dict[str, Any] | None = None
        if p["preprocess"]:
            model, pre = onnx_quantize.preprocess(model, ctx.log)
        opset: dict[str, Any] | None = None
        can_per_channel = True
        if types.per_channel or p.get("accuracy"):   # the search tries per-channel weights too
            model, can_per_channel, opset = onnx_quantize.per_channel_opset(model, types.per_channel, ctx.max_opset, ctx.log)
            types.per_channel = types.per_channel and can_per_channel
        onnx_quantize.name_nodes(model)
        specs = onnx_graph.graph_inputs(model)
        every_op = sorted(set(QDQRegistry) | set(QLinearOpsRegistry))
        op_sets = {"all": every_op, "weighted": [o for o in WEIGHTED_OPS if o in every_op]}
        ops = op_sets[p["op_types"]]
        fmt = QuantFormat.QDQ if p["format"] == "qdq" else QuantFormat.QOperator
        qtype = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}

        with tempfile.TemporaryDirectory(prefix="edgebuild-qstatic-") as tmp:
            src, dst = Path(tmp) / "input.onnx", Path(tmp) / "quantized.onnx"
            src.write_bytes(model.SerializeToString(deterministic=True))
            caches: dict[str, tuple[Path, Any]] = {}

            def calibrated(method_name: str) -> tuple[Path, Any]:
                """(calibration cache file, ranges) for a method, calibrating once per method."""
                if method_name not in caches:
                    ctx.log.info("calibrating on %d of %d sample(s) of dataset '%s' with %s", n, available, name, method_name)
                    cache = Path(tmp) / f"ranges-{method_name}.json"
                    printed = io.StringIO()
                    try:
                        with tool_errors("ONNX Runtime's calibrator failed"), contextlib.redirect_stdout(printed), \
                                onnx_runtime.quiet_quantizer_logs():   # calibrators print progress
                            ranges = _calibrate(src, Path(tmp) / f"augmented-{method_name}.onnx", every_op,
                                                getattr(CalibrationMethod, _METHODS[method_name]), method_name,
                                                onnx_quantize.cast_feeds(datasets.feeds(path, {k: specs.get(k, {}) for k in inputs},
                                                                                    limit=n), specs))
                            save_tensors_data(ranges, cache)
                    finally:
                        for line in printed.getvalue().splitlines():
                            if line.strip():
                                ctx.log.debug("calibrator: %s", line.strip())
                    caches[method_name] = (cache, ranges)
                return caches[method_name]

            bias_adjust: dict[str, Any] = {}

            def build(method_name: str | None, per_channel: bool, op_set: str | None, excluded: tuple[str, ...]) -> Any:
                """The quantized model with these settings, or None when no weight was quantized."""
                method_name = method_name or p["method"]
                op_list = op_sets[op_set or p["op_types"]]
                cache, _ranges = calibrated(method_name)

                def quantize(extra: dict[str, Any]) -> None:
                    quantize_static(
                        str(src), str(dst), calibration_data_reader=None, calibration_cache_path=str(cache),
                        quant_format=fmt, op_types_to_quantize=op_list, per_channel=bool(per_channel),
                        reduce_range=types.reduce_range, calibrate_method=getattr(CalibrationMethod, _METHODS[method_name]),
                        activation_type=qtype[types.activation_type], weight_type=qtype[types.weight_type],
                        nodes_to_exclude=sorted(excluded), extra_options=extra)

                with tool_errors("ONNX Runtime's static quantizer failed"), onnx_runtime.quiet_quantizer_logs():
                    try:
                        quantize(dict(bias_adjust))
                    except ValueError as exc:
                        # ONNX Runtime widens a weight's scale where its bias would not fit int32; that code
                        # assumes a 1-D bias and fails on others (a [1, N] Gemm bias in per-channel mode).
                        # Without the widening the bias is quantized as is: correct unless a bias is huge.
                        if bias_adjust or not _in_bias_adjustment(exc):
                            raise
                        ctx.log.warning("ONNX Runtime's int32-bias scale adjustment failed on this model (%s); "
                                        "quantizing without it", exc)
                        bias_adjust["QDQDisableWeightAdjustForInt32Bias"] = True
                        quantize(dict(bias_adjust))
                out = onnx_graph.load(dst)
                return out if onnx_quantize.quantized_nodes(out) else None

            spans = onnx_quantize.tensor_spans(model, calibrated(p["method"])[1])
            mixing = onnx_quantize.range_mixing(model, spans, p["range_mixing"] or onnx_quantize.RATIO)
            base_excluded = tuple(sorted({m for g in mixing for m in g["keep_fp32"]})) if p["range_mixing"] else ()
            for g in mixing:
                what = ("; kept in float: " + ", ".join(g["keep_fp32"]) if p["range_mixing"] and g["keep_fp32"]
                        else "; a layer with weights reads it: left to the quantizer" if not g["head"] else "")
                ctx.log.info("range mixing: %s joins tensors whose ranges differ %gx (%s)%s", g["node"], g["ratio"],
                             ", ".join(f"{v:g}" for v in g["input_ranges"]), what)

            def why_nothing() -> str:
                return onnx_quantize.nothing_quantized(model, ops, base_excluded)

            accuracy: dict[str, Any] | None = None
            method_used, per_channel_used, ops_used, excluded = p["method"], types.per_channel, p["op_types"], base_excluded
            if p.get("accuracy"):
                # the step's own settings, the other per-channel setting, then the other calibration methods
                # (per channel: more accurate for convolutions whatever the method)
                # (the step's own settings, the other op set, the other per-channel setting, then the other
                # calibration methods with either op set: per channel, more accurate for convolutions whatever the method)
                other = "all" if p["op_types"] == "weighted" else "weighted"
                configs: list[onnx_quantize.Config] = [(p["method"], types.per_channel, p["op_types"]),
                                                   (p["method"], types.per_channel, other)]
                if can_per_channel:
                    configs.append((p["method"], not types.per_channel, p["op_types"]))
                configs += [(m, can_per_channel, o) for m in _SEARCH_METHODS if m != p["method"] for o in (p["op_types"], other)]
                calib_feeds = onnx_quantize.sensitivity_feeds(path, model)
                candidates = [nd.name for nd in model.graph.node if nd.op_type in every_op]

                def ranking(quantized: Any) -> list[list[str]]:
                    return onnx_quantize.rank_units(model, quantized, candidates, calib_feeds, mixing, ctx.log)

                search = onnx_quantize.AccuracySearch(ctx, onnx_quantize.Goal.from_params(p["accuracy"]), ctx.input_model,
                                                  build, configs, base_excluded, ranking, why_nothing)
                chosen, accuracy = search.run()
                out = chosen.model
                method_used, per_channel_used, excluded = chosen.method or p["method"], chosen.per_channel, chosen.excluded
                ops_used = chosen.ops or p["op_types"]
            else:
                out = build(p["method"], types.per_channel, None, base_excluded)
                if out is None:
                    raise StepError(f"no node was quantized: {why_nothing()}",
                                    hint="static quantization targets Conv, MatMul, Gemm and friends with constant "
                                         "weights; keep `preprocess: true` for weights exported as Constant nodes")
        size_before = onnx_graph.file_size(ctx.input_model)
        counts = onnx_graph.count_ops(out)
        quantized = onnx_quantize.quantized_nodes(out)
        size_after = onnx_graph.save(out, ctx.output_model, ctx.ir_version, ctx.max_opset)
        onnx_runtime.check_loads(ctx.output_model, "quantized")
        ctx.log.info("size %d -> %d bytes; %d node(s) with int8 weights; ops: %s", size_before, size_after,
                     len(quantized), ", ".join(f"{k} x{v}" for k, v in counts.items()))
        facts: dict[str, Any] = {
            "samples": n, "method": method_used, "op_types": ops_used, "format": p["format"], "per_channel": per_channel_used,
            "types": types.facts(), "preprocess": pre if pre is not None else False,
            "quantized_nodes": len(quantized), "range_mixing": mixing, "fp32_nodes": list(excluded),
            "ops": counts, "size_before": size_before, "size_after": size_after}
        if opset:
            facts["opset"] = opset
        if bias_adjust:
            facts["int32_bias_scale_adjustment"] = False   # ONNX Runtime's failed on this model: see the log
        if accuracy is not None:
            facts["accuracy"] = accuracy
        return facts


def _in_bias_adjustment(exc: BaseException) -> bool:
    """Whether `exc` comes from ONNX Runtime's int32-bias scale adjustment (see `build` in `run`)."""
    import traceback

    return any(f.name.startswith("_adjust_weight") for f in traceback.extract_tb(exc.__traceback__))


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
