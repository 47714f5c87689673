"""The engine benchmark's synthetic recipe stays a valid recipe (it rotted once when planning got
stricter); its timing is the benchmark's business, not this test's."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_synthetic_recipe_plans_every_step_for_every_target(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("engine_benchmark", ROOT / "benchmarks" / "engine.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    (row,) = bench.synthetic_plan(tmp_path)
    assert row[0].startswith("plan a synthetic recipe: 200 steps, 10 targets, 200 nodes"), row
