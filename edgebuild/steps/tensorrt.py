"""tensorrt: build a serialized TensorRT engine from an ONNX model, on a host that matches the target.

Engines are not portable across GPUs or TensorRT versions, so this step is target-specific (the
target's compute capability and TensorRT version are in its key) and runs only where the host's GPU
and TensorRT match; elsewhere the planner defers it with the reason and the command to run on a
matching host. INT8 uses explicit quantization: the input must be a QDQ model (quantize-static with
format: qdq); TensorRT's implicit INT8 calibrators are deprecated since 10.1. Engines are not
byte-reproducible: two builds of the same inputs can pick different kernels.

Kernel timings are kept: the step starts from the timing cache of this GPU and TensorRT release (a cache
entry under a ref, StepKind.state_name, which a remote cache shares between hosts of the same kind) and
leaves the grown cache behind for the next build.

Written against the TensorRT Python API (Builder, OnnxParser, BuilderConfig, optimization profile,
timing cache, build_serialized_network) and type-checked with the tensorrt-stubs package.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from edgebuild.steps.base import ONNX, TENSORRT, RunContext, StepError, StepKind

if TYPE_CHECKING:
    import tensorrt as trt


TIMING_CACHE = "timing.cache"


class TensorRT(StepKind):
    name = "tensorrt"
    version = 1
    summary = "Build a TensorRT engine for the target's GPU (deferred to a matching host when this one is not)."
    params = {
        "precision": {"enum": ["fp32", "fp16", "int8"], "default": "fp16",
                      "description": "Kernel precision. int8 needs a QDQ input (quantize-static, format: qdq): "
                                     "explicit quantization; fp16 lets TensorRT pick fp16 kernels where faster."},
        "workspace_mb": {"type": "integer", "minimum": 16, "default": 1024,
                         "description": "Largest scratch memory TensorRT may use while choosing kernels (MB)."},
        "min_batch": {"type": "integer", "minimum": 1, "default": 1,
                      "description": "Smallest batch of the optimization profile (the first symbolic dim of each input)."},
        "opt_batch": {"type": "integer", "minimum": 1, "default": 1,
                      "description": "Batch the kernels are tuned for."},
        "max_batch": {"type": "integer", "minimum": 1, "default": 8,
                      "description": "Largest batch the engine accepts; keep it small on memory-bound devices."},
        "version_compatible": {"type": "boolean", "default": False,
                               "description": "Build a version-compatible engine (TensorRT >= 8.6) that later TensorRT "
                                              "runtimes of the same major version can load, at some speed cost."},
    }
    takes = (ONNX,)
    gives = TENSORRT
    tools = ("tensorrt",)
    target_specific = True
    reproducible = False

    @classmethod
    def output_precision(cls, params: dict[str, Any], input_precision: str) -> str:
        return str(params["precision"])

    def check(self, ctx: Any) -> None:
        p = ctx.params
        if not p["min_batch"] <= p["opt_batch"] <= p["max_batch"]:
            ctx.error(f"batch range must satisfy min_batch <= opt_batch <= max_batch, found "
                      f"{p['min_batch']} / {p['opt_batch']} / {p['max_batch']}", param="opt_batch")
        for t in ctx.targets:
            if not t.runtime("tensorrt") or not (t.data.get("accelerator") or {}).get("compute_capability"):
                ctx.error(f"target '{t.name}' declares no TensorRT runtime and CUDA GPU; a TensorRT engine cannot run there",
                          hint="ship this step only to targets with `runtimes.tensorrt` and an `accelerator`")

    @classmethod
    def state_name(cls, target: dict[str, Any] | None) -> str | None:
        """The timing cache belongs to one GPU (SM) and TensorRT release: a cache from another is rejected by
        TensorRT, or worse, misleads it. The step runs only where the host matches its target, so the host's
        facts name it."""
        from edgebuild.engine import dists, hostinfo

        g = hostinfo.gpu()
        version = next((v for v in map(dists.version, ("tensorrt", "tensorrt-cu12", "tensorrt-cu11", "tensorrt_libs"))
                        if v), None) or hostinfo.tensorrt_version()
        if g is None or version is None:
            return None
        return f"tensorrt-timing/sm{g.compute_capability.replace('.', '')}-trt{version}"

    def deferral(self, target: Any) -> str | None:
        from edgebuild.engine import hostinfo

        acc = target.data.get("accelerator") or {}
        return hostinfo.tensorrt_mismatch(acc.get("compute_capability"), target.runtime("tensorrt"))

    @classmethod
    def resources(cls, params: dict[str, Any], target: Any) -> dict[str, float]:
        """The GPU (SM) and TensorRT release of the target: the same facts deferral() checks on this host."""
        cc = (target.data.get("accelerator") or {}).get("compute_capability")
        trt = target.runtime("tensorrt")
        return {**({f"cuda-sm{str(cc).replace('.', '')}": 1.0} if cc else {}), **({f"tensorrt-{trt}": 1.0} if trt else {})}

    def run(self, ctx: RunContext) -> dict[str, Any]:
        try:
            import tensorrt as trt
        except ImportError as exc:
            raise StepError(f"cannot import tensorrt: {exc}",
                            hint="run this step on the target (or a host with its GPU and TensorRT version)") from None
        if not hasattr(trt, "Builder"):   # e.g. only the tensorrt-stubs package is installed
            raise StepError("cannot import tensorrt: the `tensorrt` module here is not TensorRT (type stubs only?)",
                            hint="install TensorRT's Python package, or run this step on the target")
        p = ctx.params
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network = builder.create_network(_network_flags(trt))
        parser = trt.OnnxParser(network, logger)
        model_bytes = ctx.input_model.read_bytes()
        if p["precision"] == "int8" and b"QuantizeLinear" not in model_bytes:
            raise StepError("precision int8 needs a QDQ model (explicit quantization), but the input has no QuantizeLinear",
                            hint="take this step from a quantize-static step with `format: qdq`")
        if not parser.parse(model_bytes, str(ctx.input_model)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise StepError(f"TensorRT's ONNX parser rejected the model: {errors}",
                            hint="check the opset against this TensorRT version; contrib ops (optimize level extended, int4) do not parse")
        config = builder.create_builder_config()
        _set_workspace(trt, config, p["workspace_mb"] << 20)
        if p["precision"] in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)
        if p["precision"] == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
        if p["version_compatible"]:
            config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
        profile_info = _profile(trt, builder, network, config, p)
        if not config.set_timing_cache(_timing_cache(config, ctx), False):
            ctx.log.warning("TensorRT refused the timing cache; the kernels are timed from scratch")
            config.set_timing_cache(config.create_timing_cache(b""), False)
        ctx.log.info("building a %s engine with TensorRT %s", p["precision"], trt.__version__)
        engine = builder.build_serialized_network(network, config)
        if engine is None:
            raise StepError("TensorRT could not build an engine (see the log above)")
        (ctx.out_dir / "model.engine").write_bytes(bytes(memoryview(engine)))
        if ctx.state_out is not None:   # this GPU's next engine build (here, or on a host sharing the remote) starts from it
            (ctx.state_out / TIMING_CACHE).write_bytes(bytes(memoryview(config.get_timing_cache().serialize())))
        info = {"tensorrt": trt.__version__, "compute_capability": _device_cc(), "precision": p["precision"],
                "profile": profile_info, "bindings": _bindings(network), "version_compatible": p["version_compatible"],
                "workspace_mb": p["workspace_mb"], "reproducible": False}
        (ctx.out_dir / "engine.json").write_text(json.dumps(info, indent=2, sort_keys=True))
        return info


def _network_flags(trt: Any) -> int:
    if int(trt.__version__.split(".")[0]) >= 10:
        return 0   # networks are always explicit-batch in TensorRT 10
    return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)


def _set_workspace(trt: Any, config: "trt.IBuilderConfig", size: int) -> None:
    if hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, size)
    else:  # TensorRT 8.2 (Jetson Nano, JetPack 4.6)
        setattr(config, "max_workspace_size", size)


def _profile(trt: Any, builder: "trt.Builder", network: "trt.INetworkDefinition",
             config: "trt.IBuilderConfig", p: dict[str, Any]) -> dict[str, Any]:
    """One optimization profile: the first dynamic dim of each input is the batch; others must be fixed."""
    profile = builder.create_optimization_profile()
    out = {}
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = _dims(tensor.shape)
        dyn = [k for k, d in enumerate(shape) if d < 0]
        if len(dyn) > 1:
            raise StepError(f"input '{tensor.name}' has {len(dyn)} dynamic dims {shape}; the tensorrt step sets only "
                            "the batch dim", hint="fix the other dims in the recipe's model.inputs (or re-export with fixed shapes)")
        lo, mid, hi = (list(shape) for _ in range(3))
        for k in dyn:
            lo[k], mid[k], hi[k] = p["min_batch"], p["opt_batch"], p["max_batch"]
        profile.set_shape(tensor.name, trt.Dims(lo), trt.Dims(mid), trt.Dims(hi))
        out[tensor.name] = {"min": lo, "opt": mid, "max": hi}
    config.add_optimization_profile(profile)
    return out


def _bindings(network: "trt.INetworkDefinition") -> list[dict[str, Any]]:
    rows = []
    for i in range(network.num_inputs):
        t = network.get_input(i)
        rows.append({"name": t.name, "mode": "input", "dtype": str(t.dtype), "shape": _dims(t.shape)})
    for i in range(network.num_outputs):
        t = network.get_output(i)
        rows.append({"name": t.name, "mode": "output", "dtype": str(t.dtype), "shape": _dims(t.shape)})
    return rows


def _dims(d: "trt.Dims") -> list[int]:
    return [int(d[k]) for k in range(len(d))]


def _device_cc() -> str:
    from edgebuild.engine import hostinfo

    g = hostinfo.gpu()
    return g.compute_capability if g else "unknown"


def _timing_cache(config: "trt.IBuilderConfig", ctx: RunContext) -> "trt.ITimingCache":
    """The timing cache to start from: the latest ones of this GPU and TensorRT version (this cache's and the
    remote's, merged when they differ), so kernels timed by an earlier build, here or on another host of the
    same kind, are not timed again. A cache TensorRT cannot read is skipped."""
    timing = config.create_timing_cache(b"")
    for folder in ctx.state_in:
        f = folder / TIMING_CACHE
        if not f.is_file():
            continue
        other = config.create_timing_cache(f.read_bytes())
        if other is None or not timing.combine(other, False):
            ctx.log.warning("skipped the timing cache %s: TensorRT could not merge it", f)
        else:
            ctx.log.info("starting from the timing cache in %s", folder.name)
    return timing


KIND = TensorRT
