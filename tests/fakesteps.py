"""Step kinds for engine tests: instant, observable, and able to fail on demand.

Loaded through EDGEBUILD_STEP_MODULES=fakesteps (with tests/ on PYTHONPATH). Each run appends a
line to $EDGEBUILD_TEST_RUNS so tests can count exactly which steps ran.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from edgebuild.steps.base import RunContext, StepError, StepKind


def _count(ctx: RunContext) -> None:
    log = os.environ.get("EDGEBUILD_TEST_RUNS")
    if log:
        with open(log, "a") as f:
            f.write(f"{ctx.step_id}\n")


class Copy(StepKind):
    name = "fake-copy"
    summary = "Copies its input model and appends a tag (tests only)."
    params = {"tag": {"type": "string", "default": "", "description": "bytes appended to the model"},
              "sleep": {"type": "number", "default": 0, "description": "seconds to wait first"}}
    tools = ()

    def run(self, ctx: RunContext) -> dict[str, Any]:
        _count(ctx)
        time.sleep(ctx.params["sleep"])
        data = ctx.input_model.read_bytes() + ctx.params["tag"].encode()
        ctx.output_model.write_bytes(data)
        ctx.log.info("copied %d bytes", len(data))
        return {"bytes": len(data)}


class Fail(StepKind):
    name = "fake-fail"
    summary = ("Fails: with a StepError (how=user), an exception from outside edgebuild, as a tool library raises "
               "(how=crash), one from edgebuild's own code (how=bug) or by ending its process (how=die) (tests only).")
    params = {"how": {"enum": ["user", "crash", "bug", "die", "segv"], "default": "user", "description": "how to fail"}}
    tools = ()

    def run(self, ctx: RunContext) -> dict[str, Any]:
        _count(ctx)
        print("some output before failing")
        if ctx.params["how"] == "die":   # like a native library calling exit(): no result, no clean exit
            sys.stdout.flush()
            os._exit(3)
        if ctx.params["how"] == "segv":   # like a crash inside onnxruntime
            import signal

            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGSEGV)
        if ctx.params["how"] == "user":
            raise StepError("the model is not good enough", hint="try harder", recipe_path=("steps", ctx.step_id, "with", "how"))
        if ctx.params["how"] == "bug":   # edgebuild's own code given what it does not take: a TypeError in it
            from edgebuild.onnx import runtime as onnx_runtime

            onnx_runtime.sig3(None)  # type: ignore[arg-type]
        raise RuntimeError("boom")


class PerTarget(StepKind):
    name = "fake-per-target"
    summary = "Writes the target's name into the model (tests only)."
    target_specific = True
    tools = ()

    def run(self, ctx: RunContext) -> dict[str, Any]:
        _count(ctx)
        assert ctx.target is not None
        ctx.output_model.write_bytes(ctx.input_model.read_bytes() + ctx.target["name"].encode())
        return {"threads": ctx.target["cpu"]["threads"]}


class Stateful(StepKind):
    """Carries a state across builds, as TensorRT does its timing cache: reads the count it left last time
    (here, or from the remote cache), writes count + 1."""

    name = "fake-stateful"
    summary = "Copies its input and counts its builds in a carried state (tests only)."
    params = {"tag": {"type": "string", "default": "", "description": "bytes appended to the model"}}
    tools = ()

    @classmethod
    def state_name(cls, target: dict[str, Any] | None) -> str | None:
        return "fake-counter/v1"

    def run(self, ctx: RunContext) -> dict[str, Any]:
        _count(ctx)
        seen = sorted(int((d / "count").read_text()) for d in ctx.state_in if (d / "count").is_file())
        assert ctx.state_out is not None
        (ctx.state_out / "count").write_text(str(max(seen, default=0) + 1))
        ctx.output_model.write_bytes(ctx.input_model.read_bytes() + ctx.params["tag"].encode())
        return {"seen": seen}


class Layers(StepKind):
    """An ONNX model whose cost the test decides after planning: $EDGEBUILD_TEST_LAYERS (JSON, step id ->
    number of 256x256 MatMul layers) is read when the step runs and is not in its key, so a test can make
    the same keys build a fast model once and a slow one the next time: timings that flip, measured for real."""

    name = "fake-layers"
    summary = "Writes a MatMul chain as deep as $EDGEBUILD_TEST_LAYERS says for this step (tests only)."
    params = {"data": {"type": ["string", "null"], "default": None, "description": "a dataset whose content enters the key"}}
    dataset_params = ("data",)
    tools = ("edgebuild-test-tool",)

    def run(self, ctx: RunContext) -> dict[str, Any]:
        import json

        import numpy as np
        import onnx
        from onnx import TensorProto, helper, numpy_helper

        _count(ctx)
        depth = int(json.loads(os.environ.get("EDGEBUILD_TEST_LAYERS", "{}")).get(ctx.step_id, 1))
        rng = np.random.default_rng(0)
        weights = [rng.standard_normal((4, 256))] + [rng.standard_normal((256, 256)) / 16 for _ in range(depth)]
        weights.append(rng.standard_normal((256, 4)))
        names = ["x"] + [f"h{i}" for i in range(len(weights) - 1)] + ["y"]
        nodes = [helper.make_node("MatMul", [names[i], f"w{i}"], [names[i + 1]]) for i in range(len(weights))]
        g = helper.make_graph(nodes, "layers", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
                              [numpy_helper.from_array(w.astype(np.float32), f"w{i}") for i, w in enumerate(weights)])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        onnx.save(m, str(ctx.output_model))
        return {"layers": depth}


KINDS = [Copy, Fail, PerTarget, Stateful, Layers]
