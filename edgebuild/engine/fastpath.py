"""The no-op check: a record of the last good build, trusted while every file it names is unchanged.

This module imports only the standard library: a fully cached run must not pay for yaml,
jsonschema, onnx or onnxruntime. The record lists every file whose content entered the plan
(recipe, target profiles, model, weights, datasets, edgebuild's own code, tool metadata) with
(size, mtime_ns, sha256), every cache entry the plan uses, every published file, the environment
variables that change a plan, and what this host offers for GPU builds (so installing TensorRT or
plugging a GPU in ends "up to date" for a recipe whose engine was deferred).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def record_path(cache_root: Path, recipe: Path, out: Path | None, targets: list[str]) -> Path:
    ident = json.dumps([str(recipe.resolve()), str(out.resolve()) if out else None, sorted(targets)])
    return cache_root / "plans" / f"{hashlib.sha256(ident.encode()).hexdigest()}.json"


# Environment variables whose value changes a plan: extra step kinds, the host overrides (GPU, TensorRT,
# CPU model), the local onnxruntime-web files.
PLAN_ENV = ("EDGEBUILD_STEP_MODULES", "EDGEBUILD_HOST_GPU", "EDGEBUILD_HOST_TENSORRT", "EDGEBUILD_ORT_WEB",
            "EDGEBUILD_HOST_CPU")


def conditions() -> dict[str, Any]:
    """The environment and host facts a plan depends on beyond files, gathered without running anything
    (no nvidia-smi): those variables, where nvidia-smi is, the NVIDIA driver's GPU list, a Jetson's
    device-tree model and the installed TensorRT version."""
    from edgebuild.engine import dists

    def listing(folder: str) -> list[str] | None:
        try:
            return sorted(os.listdir(folder))
        except OSError:
            return None

    def text(path: str) -> str | None:
        try:
            with open(path, "rb") as f:
                return f.read(256).decode(errors="replace").strip("\x00 \n")
        except OSError:
            return None

    smi = [d for d in os.environ.get("PATH", "").split(os.pathsep)
           if d and os.access(os.path.join(d, "nvidia-smi"), os.X_OK)]
    return {"env": {k: os.environ.get(k) for k in PLAN_ENV},
            "host": {"nvidia-smi": smi[0] if smi else None, "gpus": listing("/proc/driver/nvidia/gpus"),
                     "jetson": text("/proc/device-tree/model"),
                     "tensorrt": next((v for v in map(dists.version, ("tensorrt", "tensorrt-cu12", "tensorrt-cu11",
                                                                      "tensorrt_libs")) if v), None)}}


def up_to_date(record_file: Path) -> dict[str, Any] | None:
    """The record if nothing it depends on changed, else None (then the full planner runs)."""
    try:
        rec = json.loads(record_file.read_text())
    except (OSError, ValueError):
        return None
    if rec.get("conditions") != conditions():
        return None
    for path, (size, mtime, digest) in rec["watched"].items():
        if not _same(path, size, mtime, digest):
            return None
    for path, (size, mtime) in rec["outputs"].items():
        try:
            st = os.stat(path)
        except OSError:
            return None
        if st.st_size != size or st.st_mtime_ns != mtime:
            return None
    return dict(rec)


def _same(path: str, size: int, mtime: int, digest: str) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    if st.st_size != size:
        return False
    if st.st_mtime_ns == mtime:
        return True
    h = hashlib.sha256()   # touched but maybe not changed: compare content
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest() == digest


def stamp_outputs(paths: list[Path]) -> dict[str, list[int]]:
    out = {}
    for p in paths:
        st = os.stat(p)
        out[str(p)] = [st.st_size, st.st_mtime_ns]
    return out


def write(record_file: Path, record: dict[str, Any]) -> None:
    record_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = record_file.with_name(f"{record_file.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, record_file)
