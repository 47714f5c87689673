"""Step kinds for the Dask cluster tests: each says which worker ran it, and one needs a GPU (`cuda-sm87` for a
target with compute capability 8.7) that no test host has, so only a worker advertising it can build it.

Loaded with EDGEBUILD_STEP_MODULES=fakesteps,clustersteps; a run appends `STEP WORKER` to $EDGEBUILD_TEST_RUNS,
the worker being $EDGEBUILD_TEST_WORKER (set per worker process by the tests), or "client".
"""

from __future__ import annotations

import os
import time
from typing import Any

from edgebuild.steps.base import RunContext, StepKind


class Where(StepKind):
    name = "fake-where"
    summary = "Copies its input, after `sleep` seconds, and says which worker ran it (tests only)."
    params = {"tag": {"type": "string", "default": "", "description": "bytes appended to the model"},
              "sleep": {"type": "number", "default": 0, "description": "seconds to wait, once started"}}
    tools = ()

    def run(self, ctx: RunContext) -> dict[str, Any]:
        runs = os.environ.get("EDGEBUILD_TEST_RUNS")
        if runs:
            with open(runs, "a") as f:
                f.write(f"{ctx.step_id} {os.environ.get('EDGEBUILD_TEST_WORKER', 'client')}\n")
        time.sleep(ctx.params["sleep"])
        data = ctx.input_model.read_bytes() + ctx.params["tag"].encode()
        if ctx.target is not None:
            data += ctx.target["name"].encode()
        ctx.output_model.write_bytes(data)
        return {"bytes": len(data)}


class NeedsGpu(Where):
    """Built per target, only where the target's GPU is: like the `tensorrt` step, without TensorRT."""

    name = "fake-gpu"
    summary = "Like fake-where, but needs the target's CUDA GPU (cuda-smNN) (tests only)."
    target_specific = True

    @classmethod
    def resources(cls, params: dict[str, Any], target: Any) -> dict[str, float]:
        cc = str((target.data.get("accelerator") or {}).get("compute_capability", "0"))
        return {f"cuda-sm{cc.replace('.', '')}": 1.0}

    def deferral(self, target: Any) -> str | None:
        from edgebuild.engine import hostinfo

        cc = str((target.data.get("accelerator") or {}).get("compute_capability", "0"))
        g = hostinfo.gpu()
        return None if g is not None and g.compute_capability == cc else f"needs sm_{cc.replace('.', '')}; this host has none"


KINDS = [Where, NeedsGpu]
