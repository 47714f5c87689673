"""The bundled example's committed lock: it matches the recipe's plan (what CI's `run --locked` checks), and
a build from it in an empty cache reproduces itself byte for byte (`verify --rebuild`, slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "vitals.yaml"


def test_the_committed_lock_matches_the_plan(tmp_path: Path) -> None:
    """A change to a step kind's code, a tool version or the recipe changes the plan: then CI's
    `edgebuild run recipes/vitals.yaml --locked` fails, and this test says so first."""
    from edgebuild.engine import plan
    from edgebuild.engine.digest import StatCache
    from edgebuild.frontend import recipe
    from edgebuild.trust import lock, lockfile

    os.environ.setdefault("EDGEBUILD_HOST_GPU", "none")
    p = plan.build(recipe.load(RECIPE), StatCache(tmp_path / "stat.json"))
    committed = lockfile.read(lockfile.path_for(RECIPE))
    assert committed is not None
    problems = lock.compare(committed, lock.plan_facts(p))
    assert not problems, ("recipes/vitals.lock is out of date; run `edgebuild run recipes/vitals.yaml`, review the "
                          "lock's diff and commit it:\n" + "\n".join(x.render() for x in problems))


@pytest.mark.slow   # a cold rebuild of the example
def test_a_locked_build_of_vitals_reproduces_itself(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The locked run starts from the steps of the test run's cold build (examplekit); `verify --rebuild` builds
    every artifact again in an empty cache of its own."""
    from examplekit import seed_cache

    env = dict(os.environ, PYTHONPATH=str(ROOT), EDGEBUILD_HOST_GPU="none")
    env.pop("EDGEBUILD_REMOTE", None)

    def edgebuild(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "edgebuild", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)

    before = (ROOT / "recipes" / "vitals.lock").read_bytes()
    r = edgebuild("run", str(RECIPE), "--locked", "--cache", str(seed_cache(tmp_path_factory, tmp_path / "cache")))
    assert r.returncode == 0, r.stderr
    assert (ROOT / "recipes" / "vitals.lock").read_bytes() == before   # --locked never writes the lock
    manifest = json.loads((tmp_path / "dist" / "vitals" / "manifest.json").read_text())
    locked = {line.split(" = ")[0].split()[1]: json.loads(line.split(" = ")[1])
              for line in before.decode().splitlines() if line.startswith("target ") and " chosen = " in line}
    assert {t: manifest["targets"][t]["selection"]["chosen"] for t in locked} == locked
    r = edgebuild("verify", "dist/vitals/manifest.json", "--rebuild")   # the recipe named by provenance.json
    assert r.returncode == 0, r.stdout + r.stderr
    rebuilt = [x for x in r.stdout.splitlines() if "identical: byte for byte" in x]
    assert len(rebuilt) == sum(1 for t in manifest["targets"].values() for a in t["artifacts"]
                               if a.get("reproducible", True))
