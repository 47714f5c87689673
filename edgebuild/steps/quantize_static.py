"""quantize-static: int8 weights and activations, activation ranges calibrated on a recipe dataset.

Calibration (edgebuild/onnx/quantize/calibration.py) runs ONNX Runtime's calibrator over the dataset's
first `samples` samples, fed as batches of one through CalibrationDataReaders, CHUNK samples per pass
(bounded memory), once per calibration method. The ranges
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

import functools
import tempfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgebuild.onnx import runtime as onnx_runtime
from edgebuild.onnx.quantize import accuracy_param, layers, mixed_ranges, preprocess, sensitivity, target_types
from edgebuild.onnx.quantize.calibration import METHODS, Calibrations, Samples
from edgebuild.onnx.quantize.search import AccuracySearch, Config, Goal
from edgebuild.steps.base import PlanContext, RunContext, StepError, StepKind, tool_errors

if TYPE_CHECKING:  # pragma: no cover
    import onnx

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
        "range_mixing": {"type": ["number", "null"], "exclusiveMinimum": 1, "default": mixed_ranges.RATIO,
                         "description": "Keep in float a Concat (or Where) whose inputs' calibrated ranges differ by more "
                                        "than this factor, and the output head after it (box coordinates next to class "
                                        "scores: one 8-bit scale rounds every score to 0). null: quantize them too."},
        "accuracy": accuracy_param.accuracy_schema("calibration methods, per-channel weights and nodes kept in float"),
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
        return target_types.uses_auto(params, ("activation_type", "weight_type", "per_channel")) or bool(params.get("accuracy"))

    @classmethod
    def resolve(cls, params: dict[str, Any], target: dict[str, Any]) -> dict[str, Any]:
        return target_types.resolved(params, target)

    @classmethod
    def source_files(cls, params: dict[str, Any], recipe_dir: Path) -> dict[str, Path]:
        return accuracy_param.metric_source_files(params, recipe_dir)

    def check(self, ctx: PlanContext) -> None:
        p = ctx.params   # the dataset name itself is checked by the recipe stage for every dataset_params entry
        if p.get("weight_type") == "uint8":
            auto = p.get("activation_type") == "auto"
            acts = ([target_types.auto_types(getattr(t, "data", None)).activation_type for t in ctx.targets]
                    if auto else [p.get("activation_type")])
            if "int8" in acts:
                ctx.error("int8 activations with uint8 weights is not a combination ONNX Runtime quantizes"
                          + (" (`activation_type: auto` is int8 on an Arm64 target)" if auto else ""),
                          param="weight_type", hint="use `weight_type: int8`, or `activation_type: uint8`")
        accuracy_param.check_accuracy(ctx)

    def run(self, ctx: RunContext) -> dict[str, Any]:
        from edgebuild.onnx import graph as onnx_graph

        p = ctx.params
        if p["data"] not in ctx.data:
            raise StepError(f"dataset '{p['data']}' is not declared under `data:`",
                            recipe_path=("steps", ctx.step_id, "with", "data"))
        model = onnx_graph.load(ctx.input_model)
        samples = _checked_samples(p["data"], Path(ctx.data[p["data"]]), onnx_graph.input_names(model), int(p["samples"]))
        types = _checked_types(ctx)
        prep = preprocess.prepare(model, p, types.per_channel, ctx.max_opset, ctx.log)
        types.per_channel = types.per_channel and prep.per_channel
        preprocess.name_nodes(prep.model)
        with tempfile.TemporaryDirectory(prefix="edgebuild-qstatic-") as tmp:
            quantizer = _Quantizer.create(ctx, prep.model, types, samples, Path(tmp))
            mixing, base_excluded = _range_mixing(ctx, prep.model, quantizer.calibrations.get(p["method"])[1])
            if p.get("accuracy"):
                result = _searched(ctx, prep, quantizer, mixing, base_excluded)
            else:
                result = _quantized_once(ctx, prep.model, quantizer, base_excluded)
        return _saved(ctx, result, types, prep, mixing, bool(quantizer.bias_adjust))


@dataclass
class _Result:
    """The quantized model and the settings that made it (the step's own, or the accuracy search's choice)."""
    model: Any
    method: str
    per_channel: bool
    op_types: str
    excluded: tuple[str, ...]
    samples: int
    accuracy: dict[str, Any] | None = None


@dataclass
class _Quantizer:
    """quantize_static on one pre-processed model with the step's types; `build` is what the accuracy search
    calls for each candidate."""
    src: Path
    dst: Path
    calibrations: Calibrations
    op_sets: dict[str, list[str]]   # "all": every op ONNX Runtime quantizes statically, "weighted": WEIGHTED_OPS
    params: dict[str, Any]
    types: target_types.Types
    log: Any
    # {"QDQDisableWeightAdjustForInt32Bias": True} once ONNX Runtime's int32-bias adjustment failed on this model
    bias_adjust: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(cls, ctx: RunContext, model: "onnx.ModelProto", types: target_types.Types, samples: Samples,
               folder: Path) -> "_Quantizer":
        """Write `model` where quantize_static reads it; nothing is calibrated yet."""
        from edgebuild.onnx import graph as onnx_graph

        with onnx_runtime.keep_root_logging():
            from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

        every_op = sorted(set(QDQRegistry) | set(QLinearOpsRegistry))
        src = folder / "input.onnx"
        src.write_bytes(model.SerializeToString(deterministic=True))
        calibrations = Calibrations(src, folder, samples, onnx_graph.graph_inputs(model), every_op, ctx.log)
        op_sets = {"all": every_op, "weighted": [o for o in WEIGHTED_OPS if o in every_op]}
        return cls(src, folder / "quantized.onnx", calibrations, op_sets, ctx.params, types, ctx.log)

    def build(self, method_name: str | None, per_channel: bool, op_set: str | None, excluded: tuple[str, ...]) -> Any:
        """The quantized model with these settings, or None when no weight was quantized."""
        from edgebuild.onnx import graph as onnx_graph

        method_name = method_name or self.params["method"]
        op_list = self.op_sets[op_set or self.params["op_types"]]
        cache, _ranges = self.calibrations.get(method_name)
        with tool_errors("ONNX Runtime's static quantizer failed"), onnx_runtime.quiet_quantizer_logs():
            try:
                self._quantize(cache, method_name, op_list, per_channel, excluded)
            except ValueError as exc:
                # ONNX Runtime widens a weight's scale where its bias would not fit int32; that code
                # assumes a 1-D bias and fails on others (a [1, N] Gemm bias in per-channel mode).
                # Without the widening the bias is quantized as is: correct unless a bias is huge.
                if self.bias_adjust or not _in_bias_adjustment(exc):
                    raise
                self.log.warning("ONNX Runtime's int32-bias scale adjustment failed on this model (%s); "
                                 "quantizing without it", exc)
                self.bias_adjust["QDQDisableWeightAdjustForInt32Bias"] = True
                self._quantize(cache, method_name, op_list, per_channel, excluded)
        out = onnx_graph.load(self.dst)
        return out if layers.quantized_nodes(out) else None

    def _quantize(self, cache: Path, method_name: str, op_list: list[str], per_channel: bool,
                  excluded: tuple[str, ...]) -> None:
        with onnx_runtime.keep_root_logging():
            from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        qtype = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
        fmt = QuantFormat.QDQ if self.params["format"] == "qdq" else QuantFormat.QOperator
        quantize_static(
            str(self.src), str(self.dst), calibration_data_reader=None, calibration_cache_path=str(cache),
            quant_format=fmt, op_types_to_quantize=op_list, per_channel=bool(per_channel),
            reduce_range=self.types.reduce_range, calibrate_method=getattr(CalibrationMethod, METHODS[method_name]),
            activation_type=qtype[self.types.activation_type], weight_type=qtype[self.types.weight_type],
            nodes_to_exclude=sorted(excluded), extra_options=dict(self.bias_adjust))


def _checked_samples(name: str, path: Path, inputs: list[str], samples: int) -> Samples:
    """The calibration dataset, checked against the model's inputs before anything is quantized."""
    from edgebuild.frontend import datasets

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
    n = min(samples, available)
    if n == 0:
        raise StepError(f"dataset '{name}' holds no samples", recipe_path=("data", name))
    return Samples(name, path, inputs, n, available)


def _checked_types(ctx: RunContext) -> target_types.Types:
    """The step's types with `auto` resolved for its target, refusing the pair ONNX Runtime cannot quantize."""
    types = target_types.resolve_types(ctx.params, ctx.target)
    if types.activation_type == "int8" and types.weight_type == "uint8":
        raise StepError("int8 activations with uint8 weights is not a combination ONNX Runtime quantizes",
                        hint="use `weight_type: int8`, or `activation_type: uint8`",
                        recipe_path=("steps", ctx.step_id, "with", "weight_type"))
    ctx.log.info("types: activations %s, weights %s, per_channel=%s, reduce_range=%s (%s)", types.activation_type,
                 types.weight_type, types.per_channel, types.reduce_range, types.reason)
    return types


def _range_mixing(ctx: RunContext, model: "onnx.ModelProto", ranges: Any) -> tuple[list[dict[str, Any]], tuple[str, ...]]:
    """The range-mixing nodes found from the step's own calibration `ranges` (logged), and the nodes kept in
    float for them (none with `range_mixing: null`)."""
    p = ctx.params
    spans = mixed_ranges.tensor_spans(model, ranges)
    mixing = mixed_ranges.range_mixing(model, spans, p["range_mixing"] or mixed_ranges.RATIO)
    base_excluded = tuple(sorted({m for g in mixing for m in g["keep_fp32"]})) if p["range_mixing"] else ()
    for g in mixing:
        what = ("; kept in float: " + ", ".join(g["keep_fp32"]) if p["range_mixing"] and g["keep_fp32"]
                else "; a layer with weights reads it: left to the quantizer" if not g["head"] else "")
        ctx.log.info("range mixing: %s joins tensors whose ranges differ %gx (%s)%s", g["node"], g["ratio"],
                     ", ".join(f"{v:g}" for v in g["input_ranges"]), what)
    return mixing, base_excluded


def _quantized_once(ctx: RunContext, model: "onnx.ModelProto", quantizer: _Quantizer,
                    base_excluded: tuple[str, ...]) -> _Result:
    """The step's own settings, without an accuracy goal."""
    p = ctx.params
    per_channel = quantizer.types.per_channel
    out = quantizer.build(p["method"], per_channel, None, base_excluded)
    if out is None:
        why = layers.nothing_quantized(model, quantizer.op_sets[p["op_types"]], base_excluded)
        raise StepError(f"no node was quantized: {why}",
                        hint="static quantization targets Conv, MatMul, Gemm and friends with constant "
                             "weights; keep `preprocess: true` for weights exported as Constant nodes")
    return _Result(out, p["method"], per_channel, p["op_types"], base_excluded, quantizer.calibrations.samples.n)


def _search_configs(p: dict[str, Any], per_channel: bool, can_per_channel: bool) -> list[Config]:
    """The settings the search tries: the step's own, the other op set, the other per-channel setting, then the
    other calibration methods with either op set (per channel: more accurate for convolutions whatever the method)."""
    other = "all" if p["op_types"] == "weighted" else "weighted"
    configs: list[Config] = [(p["method"], per_channel, p["op_types"]), (p["method"], per_channel, other)]
    if can_per_channel:
        configs.append((p["method"], not per_channel, p["op_types"]))
    configs += [(m, can_per_channel, o) for m in _SEARCH_METHODS if m != p["method"] for o in (p["op_types"], other)]
    return configs


def _searched(ctx: RunContext, prep: preprocess.Prepared, quantizer: _Quantizer, mixing: list[dict[str, Any]],
              base_excluded: tuple[str, ...]) -> _Result:
    """The accuracy search's choice; sensitivity is measured on the calibration samples."""
    p, model = ctx.params, prep.model
    configs = _search_configs(p, quantizer.types.per_channel, prep.per_channel)
    calib_feeds = sensitivity.sensitivity_feeds(quantizer.calibrations.samples.path, model)
    candidates = [nd.name for nd in model.graph.node if nd.op_type in quantizer.op_sets["all"]]
    ranking = functools.partial(sensitivity.rank_units, model, candidates=candidates, feeds=calib_feeds, mixing=mixing,
                                log=ctx.log)
    why_nothing = functools.partial(layers.nothing_quantized, model, quantizer.op_sets[p["op_types"]], base_excluded)
    chosen, accuracy = AccuracySearch(ctx, Goal.from_params(p["accuracy"]), ctx.input_model, quantizer.build, configs,
                                      base_excluded, ranking, why_nothing).run()
    return _Result(chosen.model, chosen.method or p["method"], chosen.per_channel, chosen.ops or p["op_types"],
                   chosen.excluded, quantizer.calibrations.samples.n, accuracy)


def _saved(ctx: RunContext, result: _Result, types: target_types.Types, prep: preprocess.Prepared,
           mixing: list[dict[str, Any]], bias_adjust_failed: bool) -> dict[str, Any]:
    """Write the quantized model, check it loads, and return the step's facts."""
    from edgebuild.onnx import graph as onnx_graph

    p, out = ctx.params, result.model
    size_before = onnx_graph.file_size(ctx.input_model)
    counts = onnx_graph.count_ops(out)
    quantized = layers.quantized_nodes(out)
    size_after = onnx_graph.save(out, ctx.output_model, ctx.ir_version, ctx.max_opset)
    onnx_runtime.check_loads(ctx.output_model, "quantized")
    ctx.log.info("size %d -> %d bytes; %d node(s) with int8 weights; ops: %s", size_before, size_after,
                 len(quantized), ", ".join(f"{k} x{v}" for k, v in counts.items()))
    facts: dict[str, Any] = {
        "samples": result.samples, "method": result.method, "op_types": result.op_types, "format": p["format"],
        "per_channel": result.per_channel, "types": types.facts(),
        "preprocess": prep.preprocess if prep.preprocess is not None else False,
        "quantized_nodes": len(quantized), "range_mixing": mixing, "fp32_nodes": list(result.excluded),
        "ops": counts, "size_before": size_before, "size_after": size_after}
    if prep.opset:
        facts["opset"] = prep.opset
    if bias_adjust_failed:
        facts["int32_bias_scale_adjustment"] = False   # ONNX Runtime's failed on this model: see the log
    if result.accuracy is not None:
        facts["accuracy"] = result.accuracy
    return facts


def _in_bias_adjustment(exc: BaseException) -> bool:
    """Whether `exc` comes from ONNX Runtime's int32-bias scale adjustment (see `_Quantizer.build`)."""
    return any(f.name.startswith("_adjust_weight") for f in traceback.extract_tb(exc.__traceback__))


KIND = QuantizeStatic
