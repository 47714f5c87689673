"""Runtime compatibility, checked at plan time: can each target's runtime load what will ship to it?

The facts (operators a runtime lacks, the release that added a contrib operator, precisions a chip
runs slowly) are data: edgebuild/data/runtimes/*.yaml and the target profiles. IR version and opset
limits are enforced where ONNX files are written (plan.py pins them per node).
"""

from __future__ import annotations

from typing import Any

from edgebuild.errors import Problem
from edgebuild.steps.base import ONNX, TENSORRT, WEB

ONNX_RUNTIMES = ("onnxruntime", "onnxruntime-web")


def check(plan: Any) -> tuple[list[Problem], list[Problem]]:
    """(errors, warnings) for every shipped artifact of every selected target."""
    errors: list[Problem] = []
    warnings: list[Problem] = []
    r = plan.recipe
    for t, shipped in plan.ship.items():
        target = r.target(t)
        for i, (sid, nid) in enumerate(shipped):
            where = r.doc.at(r.ship_path(t, i))
            chain = _chain(plan, nid)
            runtime = _runtime_for(target, r.steps[sid].kind.gives)
            if runtime is not None:
                version = target.runtime(runtime)
                for op, why in _missing(runtime, version, _ops_feeding(chain)):
                    errors.append(Problem(f"{t}: {sid} would contain {op} ({why}), which {runtime} {version} cannot load",
                                          where, _suggest(op, runtime)))
            prec = _precision(plan, chain)
            slow = target.data.get("precisions", {}).get("slow", [])
            if prec in slow:
                warnings.append(Problem(f"{t}: {sid} is {prec}, which this hardware runs slower than fp32 "
                                        f"(the profile lists {prec} under precisions.slow)", where,
                                        f"ship a variant in {', '.join(target.data['precisions'].get('fast', []))}",
                                        "warning"))
    return errors, warnings


def _chain(plan: Any, nid: str) -> list[Any]:
    out = []
    cur: str | None = nid
    while cur is not None:
        out.append(plan.nodes[cur])
        cur = plan.nodes[cur].upstream
    return out[::-1]


def _runtime_for(target: Any, gives: str) -> str | None:
    """The runtime that loads an artifact of this kind on the target."""
    if gives == TENSORRT:
        return "tensorrt"
    if gives in (ONNX, WEB):
        order = ("onnxruntime-web", "onnxruntime") if gives == WEB else ("onnxruntime", "onnxruntime-web")
        return next((rt for rt in order if target.runtime(rt)), None)
    return None


def _ops_feeding(chain: list[Any]) -> list[str]:
    """Operators the ONNX model this runtime reads will contain: those emitted along the chain
    (for an engine or a bundle, the chain up to the step that packs the ONNX model)."""
    nodes = chain[:-1] if chain[-1].step.kind.gives != ONNX else chain
    ops: list[str] = []
    for n in nodes:
        ops += n.step.kind.emits(n.step.params)
    return ops


def _missing(runtime: str, version: str | None, ops: list[str]) -> list[tuple[str, str]]:
    from edgebuild.frontend.targets import runtime_file

    if version is None or not ops:
        return []
    facts = runtime_file(runtime)
    out = []
    unsupported = facts.get("unsupported_ops") or {}
    since = facts.get("ops_since") or {}
    for op in dict.fromkeys(ops):
        domain = op.rsplit(".", 1)[0] + ".*" if "." in op else None
        if op in unsupported or (domain and domain in unsupported):
            out.append((op, unsupported.get(op) or unsupported[domain]))
        elif op in since and _v(version) < _v(since[op]):
            out.append((op, f"added in {runtime} {since[op]}"))
    return out


def _v(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in str(version).split(".") if x.isdigit())


def _precision(plan: Any, chain: list[Any]) -> str:
    p = "fp32"
    for n in chain:
        p = n.step.kind.output_precision(n.step.params, p)
    return p


def _suggest(op: str, runtime: str) -> str:
    if runtime == "tensorrt":
        return "for INT8 on TensorRT take the engine from quantize-static with `format: qdq`; for contrib ops use optimize level basic"
    if "MatMulNBits" in op:
        return "ship an int8 or fp16 variant to this target, or raise its onnxruntime version in the profile"
    return "ship another variant to this target"
