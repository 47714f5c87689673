"""The benchmarks' generated recipes stay valid recipes (the engine benchmark's rotted once when planning
got stricter); their timings are the benchmarks' business, not these tests'."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str) -> Any:
    """benchmarks/NAME.py as a module (the benchmarks are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_the_synthetic_recipe_plans_every_step_for_every_target(tmp_path: Path) -> None:
    (row,) = _load("engine").synthetic_plan(tmp_path)
    assert row[0].startswith("plan a synthetic recipe: 200 steps, 10 targets, 200 nodes"), row


def test_the_compression_benchmark_recipes_validate(tmp_path: Path) -> None:
    """Its recipes (every variant for both models, the bench targets) are recipes edgebuild accepts."""
    import os

    import clikit

    bench = _load("compression")
    bench._load(ROOT / "benchmarks" / "quantization.py", "bench_quantization").write_targets(tmp_path)
    for name, model in bench.MODELS.items():
        recipe = bench.write_recipe(tmp_path, model(tmp_path, windows=20), 0)   # vitals: 20 training windows
        r = clikit.in_process(["validate", str(recipe)], tmp_path, os.environ)
        assert r.code == 0 and "(17 steps, 43 nodes, targets: bench-1t, bench-2t)" in r.out, r.out + r.err
