"""The bundled example, copied for a test that builds it: a build beside the committed recipe would rewrite
recipes/vitals.lock (run writes the lock when a fact changed) and take its pinned `best:` choice.

A test run builds the vitals example from an empty cache once (`cold_vitals`), whichever tests and pytest-xdist
workers need it: test_vitals.py reads that build, and tests that only need its steps done (a report, a locked
build, the local side of a comparison) start from a copy of its cache (`seed_cache`) and publish their own."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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


def cold_vitals(factory: pytest.TempPathFactory) -> Path:
    """The folder of this test run's one build of a copy of the example from an empty cache (recipes/, cache/,
    dist/), made by whichever test asks first; others wait for it. Read it: the one run in it is test_vitals.py's
    no-op rerun, which builds and publishes nothing."""
    base = factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base   # xdist: shared by the run's workers
    work = root / "vitals-cold"
    with open(root / "vitals-cold.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (work / "built").is_file():
            shutil.rmtree(work, ignore_errors=True)
            recipe = vitals_copy(work)
            r = subprocess.run([sys.executable, "-m", "edgebuild", "run", str(recipe), "--cache", str(work / "cache"),
                                "--out", str(work / "dist")], capture_output=True, text=True, cwd=work, timeout=600,
                               env=dict({k: v for k, v in os.environ.items() if k not in ("EDGEBUILD_CACHE", "EDGEBUILD_REMOTE")},
                                        PYTHONPATH=str(ROOT), EDGEBUILD_HOST_GPU="none"))
            assert r.returncode == 0, r.stdout + r.stderr
            (work / "built").write_text(r.stdout)
    return work


def seed_cache(factory: pytest.TempPathFactory, cache: Path) -> Path:
    """`cache` holding every entry of the cold build (its objects only: no-op records and stat caches name the
    cold build's paths); a run of the example with it builds nothing."""
    shutil.copytree(cold_vitals(factory) / "cache" / "objects", cache / "objects")
    return cache
