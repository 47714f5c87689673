"""A step's run() in its own process, its output captured in a log file.

The executor forks workers from a fork server that has already imported edgebuild and the libraries
most steps need (numpy, onnx, onnxruntime), so a step starts in milliseconds instead of paying for a
new interpreter and those imports each time; `python -m edgebuild.engine.worker JOB.json` runs one job in a
fresh interpreter (for debugging a step by hand). `run_job` is the job itself, without the process: the
in-process runner (runners.py) calls it with the step's output sent to its log by other means.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

LOG_FORMAT = "%(levelname)s %(message)s"


def main(job_file: str) -> int:
    """Run one job in this worker process, whose stderr is the step's log: every logger's records from INFO
    up go there."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=LOG_FORMAT)
    return run_job(job_file)


def run_job(job_file: str) -> int:
    """Run the step a job file describes and write the job's result file; 0 when the step succeeded, 1 when
    it failed. Where its output and log records go is the caller's choice."""
    job = json.loads(Path(job_file).read_text())
    result: dict[str, Any]
    log = logging.getLogger(f"edgebuild.step.{job['step_id']}")
    t0 = time.perf_counter()
    try:
        result = {"ok": True, "info": _run(job, log)}
    except Exception as exc:  # every failure goes back to the parent, which decides how to show it
        from edgebuild.steps.base import StepError

        if isinstance(exc, StepError):
            log.error("%s", exc.message)
            result = {"ok": False, "message": exc.message, "hint": exc.hint,
                      "recipe_path": list(exc.recipe_path) if exc.recipe_path else None}
        else:
            from edgebuild.steps.base import raised_by_edgebuild

            trace = traceback.format_exc()
            print(trace, file=sys.stderr, end="")
            # raised inside a tool library (onnx, onnxruntime, torch) on the user's model: the step failed;
            # raised by edgebuild's own code: a bug, which the run reports with this traceback and exit 2
            result = {"ok": False, "message": f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]}", "hint": None,
                      "recipe_path": None, "bug": trace if raised_by_edgebuild(exc) else None}
    result["seconds"] = time.perf_counter() - t0   # the step's own work, heavy imports included
    Path(job["result"]).write_text(json.dumps(result, sort_keys=True))
    sys.stdout.flush()
    sys.stderr.flush()
    return 0 if result["ok"] else 1


def _run(job: dict[str, Any], log: logging.Logger) -> dict[str, Any]:
    from edgebuild.steps import kinds
    from edgebuild.steps.base import RunContext

    kind = _kind(job) if job.get("kind_ref") else _builtin(job["use"]) or kinds()[job["use"]]
    source, inputs, normalized = job["source"], job["inputs"], None
    if "onnx" in source and inputs and (job["input_dir"] is None or job.get("kind_ref")):
        # The recipe's ONNX model as model.inputs describes it (fixed inputs made constants, the If they
        # decide inlined, declared dims overridden), written into this step's scratch folder. Internal
        # kinds with an upstream get it too: a measurement compares with ctx.source as the reference.
        from edgebuild.onnx import source as onnx_source

        scratch = Path(job["out_dir"]).parent / "source.onnx"
        normalized = onnx_source.normalize(source["onnx"], inputs, scratch)
        if normalized is not None:
            log.info("the recipe's model normalized to model.inputs: %s", json.dumps(normalized, sort_keys=True))
            source = {**source, "onnx": str(scratch)}
        inputs = {k: v for k, v in inputs.items() if "value" not in v}   # fixed inputs are no longer fed
    ctx = RunContext(
        step_id=job["step_id"], params=job["params"],
        input_dir=Path(job["input_dir"]) if job["input_dir"] else None,
        source=source, inputs=inputs,
        data={k: Path(v) for k, v in job["data"].items()},
        out_dir=Path(job["out_dir"]), ir_version=job["ir_version"], max_opset=job["max_opset"],
        target=job["target"], recipe_dir=Path(job["recipe_dir"]), log=log,
        refs={k: Path(v) for k, v in job.get("refs", {}).items()},
        cache_dir=Path(job["cache_dir"]) if job.get("cache_dir") else None,
        state_in=[Path(p) for p in job.get("state_in", [])],
        state_out=Path(job["state_out"]) if job.get("state_out") else None,
    )
    info = kind().run(ctx)
    if normalized and job["input_dir"] is None:   # this step's input is the normalized recipe model: say what changed
        info = {**(info or {}), "source": normalized}
    return json.loads(json.dumps(info or {}, sort_keys=True))   # JSON-clean, deterministic order


def _builtin(use: str) -> Any:
    """A shipped kind, imported alone (its module is named after it): skips importing every step module."""
    import importlib

    try:
        module = importlib.import_module(f"edgebuild.steps.{use.replace('-', '_')}")
    except ImportError:
        return None
    kind = getattr(module, "KIND", None)
    return kind if kind is not None and getattr(kind, "name", None) == use else None


def _kind(job: dict[str, Any]) -> Any:
    """An internal step kind (not usable in recipes), named as "module:Class"."""
    import importlib

    module, _, cls = job["kind_ref"].partition(":")
    return getattr(importlib.import_module(module), cls)


PRELOAD = ["edgebuild.engine._server", "edgebuild.engine.worker", "edgebuild.steps", "edgebuild.onnx.graph", "edgebuild.frontend.datasets",
           "numpy", "onnx", "onnxruntime"]


def serve_one(conn: Any) -> None:
    """Entry point of a forked worker: wait for one job on the pipe, run it with fds 0-2 sent to the job's
    log, report the exit code once the result and log are written, exit without interpreter teardown."""
    try:
        job_file, log_file = conn.recv()
    except (EOFError, OSError):   # not needed after all
        os._exit(0)
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    code = 1
    try:
        code = main(job_file)
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            conn.send(code)
        finally:
            os._exit(code)


if __name__ == "__main__":
    code = main(sys.argv[1])
    logging.shutdown()
    # The result is written and the output flushed: skip interpreter teardown, which for torch and
    # onnxruntime (thread pools, many modules) costs a few hundred ms per step for nothing.
    os._exit(code)
