"""The no-op check: a record of the last good build, trusted while every file it names is unchanged.

This module imports only the standard library: a fully cached run must not pay for yaml,
jsonschema, onnx or onnxruntime. The record lists every file whose content entered the plan
(recipe, target profiles, model, weights, datasets, edgebuild's own code, tool metadata) with
(size, mtime_ns, sha256), every cache entry the plan uses, and every published file.
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


def up_to_date(record_file: Path) -> dict[str, Any] | None:
    """The record if nothing it depends on changed, else None (then the full planner runs)."""
    try:
        rec = json.loads(record_file.read_text())
    except (OSError, ValueError):
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
