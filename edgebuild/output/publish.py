"""Stage 6: copy shipped outputs to dist/<name>/<target>/ and write the deterministic manifest."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgebuild import __version__
from edgebuild.engine.cache import Cache, folder_error, make_folder
from edgebuild.engine.digest import StatCache
from edgebuild.engine.execute import Outcome, Status
from edgebuild.engine.plan import Plan, tool_version
from edgebuild.output.manifest import (
    FILE,
    Artifact,
    Deferred,
    Manifest,
    Step,
    Target,
    read_previous,
)
from edgebuild.steps.base import ONNX

if TYPE_CHECKING:
    from edgebuild.checks.judge import Verdict

OUT_HINT = "--out DIR must be a folder edgebuild can create and write to (default: dist/)"


def out_dir(plan: Plan, out: Path | None) -> Path:
    """<out>/<name>/, where out defaults to dist/ in the working directory."""
    return (out or Path("dist")) / plan.recipe.name


def publish(plan: Plan, cache: Cache, outcomes: dict[str, Outcome], out: Path,
            verdicts: dict[str, Verdict] | None = None, published: list[str] | None = None,
            release: int | None = None) -> Manifest:
    """Publish every selected target whose artifacts all built and passed their checks; return the manifest.

    A target that failed keeps what its last good build published (folder and manifest entry). The
    targets published now are appended to `published`.
    """
    verdicts = verdicts or {}
    make_folder(out, "output folder", OUT_HINT)
    previous = read_previous(out / FILE)
    before = previous.targets if previous is not None else {}
    manifest = _header(plan, out, cache.stats)
    manifest.release = release   # rollback protection: `verify --min-release N` refuses an older build (lock.py)
    kept = {t: v for t, v in before.items() if t not in plan.selected and t in [x.name for x in plan.recipe.targets]}
    manifest.targets = dict(kept)
    manifest.steps = {k: v for k, v in (previous.steps if previous is not None else {}).items() if _still_used(k, kept)}
    for tname, shipped in plan.ship.items():
        v = verdicts.get(tname)
        if v is not None and v.ship is not None:
            shipped = [(sid, nid) for sid, nid in shipped if sid in v.ship]
        built = all(outcomes.get(nid) and outcomes[nid].status in (Status.CACHED, Status.BUILT, Status.DEFERRED)
                    for _, nid in shipped)
        if not built or not shipped or (v is not None and v.failures):
            if tname in before:
                manifest.targets[tname] = before[tname]
            continue
        entry = _publish_target(plan, cache, out, tname, shipped)
        entry.recipe_sha256 = manifest.recipe_sha256   # a `--target` run leaves the others as they were
        if v is not None:
            for a in entry.artifacts:
                if a.step in v.artifacts:
                    a.checks = v.artifacts[a.step].as_dict()
            if v.selection is not None:
                entry.selection = v.selection.as_dict(v.artifacts)
        manifest.targets[tname] = entry
        if published is not None:
            published.append(tname)
        for _, nid in shipped:
            for cid in _chain(plan, nid):
                if not plan.nodes[cid].deferred:
                    manifest.steps[cid] = _step_entry(plan, cid, outcomes)
    manifest.steps = dict(sorted(manifest.steps.items()))
    manifest.targets = dict(sorted(manifest.targets.items()))
    _write_text(out / FILE, manifest.text())
    return manifest


def _still_used(node_id: str, kept: dict[str, Target]) -> bool:
    return any(node_id in a.chain for t in kept.values() for a in t.artifacts)


def _header(plan: Plan, out: Path, stats: StatCache) -> Manifest:
    r = plan.recipe
    tools = sorted({d for n in plan.nodes.values() for d in n.step.kind.tools})
    return Manifest(r.name, r.file.name, stats.digest(r.file), __version__, {d: tool_version(d) for d in tools},
                    {role: {"path": os.path.relpath(p, r.dir), "sha256": stats.digest(p)}
                     for role, p in sorted(r.source_files.items())})


def _chain(plan: Plan, node_id: str) -> list[str]:
    chain: list[str] = []
    cur: str | None = node_id
    while cur is not None:
        chain.append(cur)
        cur = plan.nodes[cur].upstream
    return chain[::-1]


def _step_entry(plan: Plan, node_id: str, outcomes: dict[str, Outcome]) -> Step:
    n = plan.nodes[node_id]
    return Step(n.step.id, n.step.use, n.upstream, n.target.name if n.target else None, n.key, n.step.params,
                n.material["onnx_limits"], outcomes[node_id].info)


def _precision(plan: Plan, chain: list[str]) -> str:
    p = "fp32"
    for nid in chain:
        n = plan.nodes[nid]
        p = n.step.kind.output_precision(n.step.params, p)
    return p


def _publish_target(plan: Plan, cache: Cache, out: Path, tname: str, shipped: list[tuple[str, str]]) -> Target:
    stage = out / f".{tname}.staging-{uuid.uuid4().hex[:8]}"
    try:
        stage.mkdir()
    except OSError as exc:
        raise folder_error("write to", out, "output folder", exc, OUT_HINT) from None
    artifacts, deferred = [], []
    try:
        for sid, nid in shipped:
            node = plan.nodes[nid]
            if node.deferred:
                deferred.append(Deferred(sid, node.step.kind.gives, _chain(plan, nid), node.deferred,
                                         plan.command_for(tname)))
                continue
            artifacts.append(_copy_artifact(plan, cache, stage, tname, sid, nid))
        _swap(stage, out / tname)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    t = plan.recipe.target(tname)
    return Target(t.name, t.fingerprint, artifacts, deferred)


def _copy_artifact(plan: Plan, cache: Cache, stage: Path, tname: str, sid: str, nid: str) -> Artifact:
    """Copy one shipped node's output into the target's staging folder: an ONNX model as <step>.onnx, any other
    output (an engine, a web bundle) as a folder named after the step."""
    node = plan.nodes[nid]
    entry = cache.entry(node.key)
    files = cache.meta(node.key)["files"]
    gives = node.step.kind.gives
    if gives == ONNX:
        name = f"{sid}.onnx"
        shutil.copyfile(entry / "model.onnx", stage / name)
        digest, size = files["model.onnx"]["sha256"], files["model.onnx"]["size"]
    else:
        name = sid
        shutil.copytree(entry, stage / name, ignore=shutil.ignore_patterns("entry.json", "log.txt"))
        digest, size = _tree_digest(files), sum(f["size"] for f in files.values())
    chain = _chain(plan, nid)
    return Artifact(sid, f"{tname}/{name}", gives, _precision(plan, chain), digest, size, chain,
                    # per file, so `edgebuild verify` names the one that changed
                    files={k: v["sha256"] for k, v in sorted(files.items())} if gives != ONNX else None,
                    # e.g. TensorRT engines: a rebuild gives other bytes
                    reproducible=None if node.step.kind.reproducible else False)


def _tree_digest(files: dict[str, Any]) -> str:
    from edgebuild.engine.digest import sha256_json
    return sha256_json({k: v["sha256"] for k, v in files.items()})


def _swap(new: Path, dest: Path) -> None:
    """Replace dest by new with two renames: readers see the old folder or the new one, never half."""
    old = dest.with_name(f".{dest.name}.old-{uuid.uuid4().hex[:8]}")
    if dest.exists():
        os.rename(dest, old)
    os.rename(new, dest)
    shutil.rmtree(old, ignore_errors=True)


def _write_text(path: Path, text: str) -> None:
    """Write through a temporary file and a rename: a reader sees the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_build_log(out: Path, plan: Plan, outcomes: dict[str, Outcome], t0: float) -> None:
    """Timings and cache hits of this build: useful, but not deterministic, so kept out of the manifest.

    Per node: when it was taken up (seconds since the command started), how long it took in all and how
    long the step's own run() took in its worker (the rest is edgebuild's: forking, caching)."""
    import platform
    import time

    from edgebuild.checks.measure import host_cpu
    log = {"host": host_cpu(), "python": platform.python_version(), "total_s": round(time.perf_counter() - t0, 3),
           "nodes": {nid: {"status": o.status, "started_s": round(max(o.started - t0, 0.0), 3) if o.started else None,
                           "seconds": round(o.seconds, 3), "work_seconds": round(o.work_seconds, 3),
                           **({"worker": o.worker, "dispatch_seconds": round(o.dispatch_seconds, 4)} if o.worker else {})}
                     for nid, o in outcomes.items()}}
    _write_text(out / "build-log.json", json.dumps(log, indent=2, sort_keys=False) + "\n")


