"""The bundled example, copied for a test that builds it: a build beside the committed recipe would rewrite
recipes/vitals.lock (run writes the lock when a fact changed) and take its pinned `best:` choice."""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def vitals_copy(work: Path) -> Path:
    """recipes/vitals.yaml and its folder under `work/recipes/`, without the lock; the copy's recipe path."""
    dest = work / "recipes"
    shutil.copytree(ROOT / "recipes" / "vitals", dest / "vitals")
    shutil.copy(ROOT / "recipes" / "vitals.yaml", dest / "vitals.yaml")
    return dest / "vitals.yaml"


def digits_copy(work: Path) -> Path:
    """recipes/digits.yaml and its folder under `work/recipes/` (without train.py's cache); the copy's recipe path."""
    dest = work / "recipes"
    shutil.copytree(ROOT / "recipes" / "digits", dest / "digits", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "recipes" / "digits.yaml", dest / "digits.yaml")
    return dest / "digits.yaml"
