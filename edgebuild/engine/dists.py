"""Installed distributions, found by their `NAME-VERSION.dist-info` folders on sys.path.

The planner needs the versions of the tools its steps use (they go into cache keys) and their METADATA
files (the no-op check watches them), without importing the tools. importlib.metadata answers that too,
but importing it costs ~25-60 ms (it pulls in the email parser) and each answer parses a METADATA file;
a listing of each sys.path folder, taken once, is enough: installers name the metadata folder after the
distribution and its version.
"""

from __future__ import annotations

import os
import re
import sys
from functools import lru_cache
from pathlib import Path


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


@lru_cache(maxsize=None)
def _installed(folder: str) -> dict[str, tuple[str, Path]]:
    """normalized name → (version, metadata file) for one sys.path entry: wheels' NAME-VERSION.dist-info
    folders and older installs' NAME-VERSION[-pyX.Y].egg-info folders or files."""
    found: dict[str, tuple[str, Path]] = {}
    try:
        entries = sorted(os.listdir(folder))
    except OSError:
        return found
    for entry in entries:
        for suffix, meta in ((".dist-info", "METADATA"), (".egg-info", "PKG-INFO")):
            if entry.endswith(suffix):
                name, _, version = entry[: -len(suffix)].partition("-")
                path = Path(os.path.abspath(folder)) / entry
                path = path / meta if path.is_dir() else path
                if path.is_file():
                    found.setdefault(_norm(name), (version.split("-py")[0] or _version_in(path), path))
    return found


def _version_in(metadata: Path) -> str:
    """The Version: header of a metadata file (for folders named without their version)."""
    with metadata.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("Version:"):
                return line.split(":", 1)[1].strip()
            if not line.strip():
                break
    return "unknown"


def _find(dist: str) -> tuple[str, Path] | None:
    key = _norm(dist)
    for folder in sys.path:
        hit = _installed(folder or ".").get(key)
        if hit is not None:
            return hit
    return None


def version(dist: str) -> str | None:
    """The installed version of a distribution, or None when it is not installed."""
    hit = _find(dist)
    return hit[0] if hit else None


def metadata_file(dist: str) -> Path | None:
    """The metadata file of an installed distribution (an upgrade replaces it), or None."""
    hit = _find(dist)
    return hit[1] if hit else None


def release(v: str) -> tuple[int, ...]:
    """A version's release numbers, as packaging.version reads it ("1.30.0-dev.20250101" -> (1, 30, 0));
    () when it is not a version. The one version parser: sorting and prefix matches use it."""
    from packaging.version import InvalidVersion, Version

    try:
        return Version(v).release
    except InvalidVersion:
        return ()
