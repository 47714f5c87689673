"""The smaller subcommands: targets, steps, validate, cache."""

from __future__ import annotations

import json

from enginekit import BASIC, Project


def test_targets_lists_and_shows_profiles(project: Project) -> None:
    r = project.edgebuild("targets")
    names = [line.split()[0] for line in r.out.splitlines()]
    for name in ("jetson-orin-nano", "jetson-nano", "raspberry-pi-5", "browser-wasm", "x86-64", "nvidia-t4"):
        assert name in names
    r = project.edgebuild("targets", "jetson-orin-nano")
    assert 'compute_capability: "8.7"' in r.out and "IR <= 10" in r.out
    r = project.edgebuild("targets", "raspbery-pi-5")
    assert r.code == 1 and "did you mean 'raspberry-pi-5'?" in r.err


def test_steps_lists_every_kind_with_described_parameters(project: Project) -> None:
    r = project.edgebuild("steps")
    for kind in ("export", "optimize", "quantize-dynamic", "quantize-static", "fp16", "int4", "tensorrt"):
        assert f"\n{kind}  (" in "\n" + r.out
    schemas = json.loads(project.edgebuild("steps", "--json").out)
    for kind, schema in schemas.items():
        assert schema["additionalProperties"] is False
        for name, spec in schema["properties"].items():
            assert spec.get("description"), f"{kind}.{name} has no description"


def test_validate_reports_ok_without_building(project: Project) -> None:
    project.write(BASIC)
    r = project.edgebuild("validate", "recipe.yaml")
    assert r.code == 0 and "recipe.yaml: ok" in r.out
    assert not (project.root / "dist").exists() and project.ran() == []


def test_cache_info_and_gc(project: Project) -> None:
    project.write(BASIC)
    assert project.edgebuild("run", "recipe.yaml").code == 0
    info = project.edgebuild("cache", "info", "--cache", ".edgebuild/cache").out
    assert "entries: 5" in info and "used by a recipe's last build: 5" in info
    assert "removed 0 entries" in project.edgebuild("cache", "gc", "--cache", ".edgebuild/cache").out
    project.write(BASIC.replace("tag: C", "tag: D"))
    assert project.edgebuild("run", "recipe.yaml").code == 0
    project.ran()
    assert "removed 1 entries" in project.edgebuild("cache", "gc", "--cache", ".edgebuild/cache").out  # the old c
    r = project.edgebuild("run", "recipe.yaml", "--force", "cc")
    assert r.code == 1 and "error: --force cc: no step 'cc' in recipe.yaml" in r.err and "did you mean 'c'?" in r.err
    (project.root / "recipe.yaml").touch()   # not a no-op: replan, hit the cache for every node
    (project.root / ".edgebuild" / "cache" / "plans").rename(project.root / "plans.old")
    assert project.edgebuild("run", "recipe.yaml").code == 0
    assert project.ran() == []      # gc kept everything the last build uses
