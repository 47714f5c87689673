"""Planner, cache, executor and publisher, end to end through the CLI, with instant fake steps (run in this
process, except where a test is about processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from enginekit import BASIC, TESTS, Project


def first_error(stderr: str) -> str:
    return next(line for line in stderr.splitlines() if ": error: " in line)


def manifest(p: Project) -> dict:
    return json.loads((p.root / "dist" / "tiny" / "manifest.json").read_text())


def test_build_publishes_every_target_with_a_manifest(project: Project) -> None:
    project.write(BASIC)
    r = project.edgebuild("run", "recipe.yaml")
    assert r.code == 0, r.err
    assert project.ran() == ["a", "b", "c", "p", "p"]   # p once per target, a once for both
    dist = project.root / "dist" / "tiny"
    assert (dist / "test-cpu" / "b.onnx").read_bytes().endswith(b"AB")
    assert (dist / "test-gpu" / "p.onnx").read_bytes().endswith(b"Atest-gpu")
    m = manifest(project)
    arts = {a["path"]: a for t in m["targets"].values() for a in t["artifacts"]}
    assert set(arts) == {"test-cpu/b.onnx", "test-cpu/p.onnx", "test-gpu/c.onnx", "test-gpu/p.onnx"}
    assert arts["test-cpu/b.onnx"]["chain"] == ["a", "b"]
    assert arts["test-gpu/p.onnx"]["chain"] == ["a", "p@test-gpu"]
    assert m["steps"]["p@test-cpu"]["facts"] == {"threads": 2}
    assert all(len(s["key"]) == 64 for s in m["steps"].values())


def test_manifest_is_deterministic_across_caches(project: Project) -> None:
    project.write(BASIC)
    assert project.edgebuild("run", "recipe.yaml", "--cache", "c1").code == 0
    first = (project.root / "dist" / "tiny" / "manifest.json").read_bytes()
    assert project.edgebuild("run", "recipe.yaml", "--cache", "c2").code == 0
    assert (project.root / "dist" / "tiny" / "manifest.json").read_bytes() == first
    assert b"/tmp" not in first and b"time" not in first


def test_rerun_is_a_no_op(project: Project) -> None:
    project.write(BASIC)
    assert project.edgebuild("run", "recipe.yaml").code == 0
    project.ran()
    r = project.edgebuild("run", "recipe.yaml")
    assert r.code == 0 and "up to date" in r.out
    assert project.ran() == []


@pytest.mark.slow
def test_no_op_run_imports_no_heavy_library(project: Project) -> None:
    project.write(BASIC)
    assert project.edgebuild("run", "recipe.yaml").code == 0
    code = ("import sys; from edgebuild.cli import main; rc = main(['run', 'recipe.yaml']); "
            "heavy = sorted(m for m in ('torch', 'onnx', 'onnxruntime', 'tensorrt', 'jsonschema', 'yaml', 'numpy', 'rich') "
            "if m in sys.modules); print('HEAVY', heavy, rc)")
    out = subprocess.run([sys.executable, "-c", code], cwd=project.root, env=project.env(), capture_output=True,
                         text=True).stdout
    assert "HEAVY [] 0" in out, out


def test_changing_a_param_reruns_that_step_and_its_dependents(project: Project) -> None:
    project.write(BASIC)
    assert project.edgebuild("run", "recipe.yaml").code == 0
    project.ran()
    project.write(BASIC.replace("tag: A", "tag: Z"))
    assert project.edgebuild("run", "recipe.yaml").code == 0
    assert project.ran() == ["a", "b", "p", "p"]        # c does not take from a
    project.write(BASIC.replace("tag: A", "tag: Z").replace("tag: C", "tag: Y"))
    assert project.edgebuild("run", "recipe.yaml").code == 0
    assert project.ran() == ["c"]


def test_explain_names_what_changed(project: Project) -> None:
    project.write(BASIC)
    assert project.edgebuild("run", "recipe.yaml").code == 0
    project.write(BASIC.replace("tag: B", "tag: BB"))
    r = project.edgebuild("explain", "recipe.yaml", "b")
    assert r.code == 0
    assert 'params.tag: "B" → "BB"' in r.out
    r = project.edgebuild("explain", "recipe.yaml", "a")
    assert "up to date" in r.out


def test_profile_edits_rebuild_only_what_they_change(project: Project) -> None:
    """A target's description and budgets do not change artifacts (checks read budgets after the build):
    editing them rebuilds nothing; editing its CPU rebuilds its target-specific steps, and explain says
    which field changed."""
    project.write(BASIC)
    assert project.edgebuild("run", "recipe.yaml").code == 0
    project.ran()
    profile = project.root / "cpu.yaml"
    text = profile.read_text()
    profile.write_text(text.replace("A CPU-only test device", "Another words").replace("latency_p95_ms: 50", "latency_p95_ms: 40"))
    r = project.edgebuild("run", "recipe.yaml")
    assert r.code == 0 and project.ran() == []
    profile.write_text(text.replace("threads: 2", "threads: 1"))
    r = project.edgebuild("explain", "recipe.yaml", "p@test-cpu")
    assert "target.cpu.threads: 2 → 1" in r.out, r.out
    assert project.edgebuild("run", "recipe.yaml").code == 0
    assert project.ran() == ["p"]


def test_changed_model_file_reruns_steps_that_take_it(project: Project) -> None:
    project.write(BASIC)
    assert project.edgebuild("run", "recipe.yaml").code == 0
    project.ran()

    import onnx
    m = onnx.load(str(project.root / "tiny.onnx"))
    m.doc_string = "changed"
    onnx.save(m, str(project.root / "tiny.onnx"))
    r = project.edgebuild("plan", "recipe.yaml")
    assert "model changed" in r.out
    assert project.edgebuild("run", "recipe.yaml").code == 0
    assert project.ran() == ["a", "b", "c", "p", "p"]


def test_touching_files_without_changing_them_stays_a_no_op(project: Project) -> None:
    project.write(BASIC)
    assert project.edgebuild("run", "recipe.yaml").code == 0
    project.ran()
    for f in ("recipe.yaml", "tiny.onnx", "cpu.yaml"):
        os.utime(project.root / f, None)
    assert project.edgebuild("run", "recipe.yaml").code == 0
    assert project.ran() == []


def test_failed_step_points_at_the_recipe_and_caches_nothing(project: Project) -> None:
    project.write(BASIC.replace("b: {use: fake-copy, from: a, with: {tag: B}}", "b: {use: fake-fail, from: a, with: {how: user}}"))
    r = project.edgebuild("run", "recipe.yaml")
    assert r.code == 1
    first = first_error(r.err)
    assert first == "recipe.yaml:8:44: error: step 'b' (fake-fail) failed: the model is not good enough"
    assert "Traceback" not in r.err
    assert not (project.root / "dist" / "tiny" / "test-cpu").exists()
    objects = list((project.root / ".edgebuild" / "cache" / "objects").rglob("entry.json"))
    metas = [json.loads(o.read_text())["node"] for o in objects]
    assert "b" not in metas
    assert not list((project.root / ".edgebuild" / "cache" / "tmp").iterdir())


def test_crashing_step_shows_its_captured_log(project: Project) -> None:
    project.write(BASIC.replace("c: {use: fake-copy, with: {tag: C}}", "c: {use: fake-fail, with: {how: crash}}"))
    r = project.edgebuild("run", "recipe.yaml", "--jobs", "1")
    assert r.code == 1
    assert "step 'c' (fake-fail) failed: RuntimeError: boom" in r.err
    assert "some output before failing" in r.err
    assert first_error(r.err).startswith("recipe.yaml:9:3: error:")


def test_an_exception_in_edgebuilds_own_code_is_a_bug_not_a_step_failure(project: Project) -> None:
    project.write(BASIC.replace("c: {use: fake-copy, with: {tag: C}}", "c: {use: fake-fail, with: {how: bug}}"))
    r = project.edgebuild("run", "recipe.yaml", "--jobs", "1")
    assert r.code == 2
    assert "step 'c' hit a bug in edgebuild" in r.err and "this is a bug in edgebuild" in r.err
    assert "Traceback" in r.err and "in sig3" in r.err and "TypeError" in r.err   # the worker's traceback
    assert "failed: " not in r.err   # not dressed up as a step failure the user should fix
    assert not [p for p in (project.root / "dist").rglob("*") if p.is_file()]   # nothing published
    metas = [json.loads(o.read_text())["node"] for o in (project.root / ".edgebuild" / "cache" / "objects").rglob("entry.json")]
    assert "c" not in metas


def test_keep_going_builds_what_does_not_depend_on_the_failure(project: Project) -> None:
    project.write(BASIC.replace("c: {use: fake-copy, with: {tag: C}}", "c: {use: fake-fail, with: {how: user}}"))
    r = project.edgebuild("run", "recipe.yaml", "--keep-going")
    assert r.code == 1
    assert (project.root / "dist" / "tiny" / "test-cpu" / "b.onnx").exists()
    assert not (project.root / "dist" / "tiny" / "test-gpu").exists()
    assert "test-cpu" in manifest(project)["targets"]


def test_corrupt_cache_entry_is_reported_and_rebuilt(project: Project) -> None:
    project.write(BASIC)
    assert project.edgebuild("run", "recipe.yaml").code == 0
    project.ran()
    entry = next(e for e in (project.root / ".edgebuild" / "cache" / "objects").rglob("entry.json")
                 if json.loads(e.read_text())["node"] == "c")
    (entry.parent / "model.onnx").write_bytes(b"garbage")
    r = project.edgebuild("run", "recipe.yaml")
    assert r.code == 0, r.err
    assert "corrupt" in r.err
    assert project.ran() == ["c"]
    assert (project.root / "dist" / "tiny" / "test-gpu" / "c.onnx").read_bytes().endswith(b"C")


def test_force_reruns_a_cached_step(project: Project) -> None:
    project.write(BASIC)
    assert project.edgebuild("run", "recipe.yaml").code == 0
    project.ran()
    assert project.edgebuild("run", "recipe.yaml", "--force", "c").code == 0
    assert project.ran() == ["c"]


def test_target_selection_builds_only_that_target(project: Project) -> None:
    project.write(BASIC)
    r = project.edgebuild("run", "recipe.yaml", "--target", "test-gpu")
    assert r.code == 0, r.err
    assert project.ran() == ["a", "c", "p"]
    assert list(manifest(project)["targets"]) == ["test-gpu"]
    r = project.edgebuild("run", "recipe.yaml", "--target", "test-cpu")
    assert project.ran() == ["b", "p"]
    assert list(manifest(project)["targets"]) == ["test-cpu", "test-gpu"]


@pytest.mark.slow
def test_two_processes_on_one_cache_build_each_key_once(project: Project) -> None:
    project.write(BASIC.replace("tag: A}", "tag: A, sleep: 1}"))
    env = dict(os.environ, EDGEBUILD_STEP_MODULES="fakesteps", EDGEBUILD_TEST_RUNS=str(project.runs),
               PYTHONPATH=os.pathsep.join([str(TESTS), str(TESTS.parent)]))
    cmd = [sys.executable, "-m", "edgebuild", "run", "recipe.yaml", "--json"]
    procs = [subprocess.Popen(cmd + ["--out", f"out{i}"], cwd=project.root, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert project.ran() == ["a", "b", "c", "p", "p"]


def test_plan_formats(project: Project) -> None:
    project.write(BASIC)
    r = project.edgebuild("plan", "recipe.yaml", "--format", "json")
    nodes = {n["node"]: n for n in json.loads(r.out)["nodes"]}
    assert set(nodes) == {"a", "b", "c", "p@test-cpu", "p@test-gpu"}
    assert nodes["b"]["status"] == "will run" and nodes["b"]["reasons"] == ["never built"]
    assert "digraph" in project.edgebuild("plan", "recipe.yaml", "--format", "dot").out


def test_each_target_records_the_recipe_it_was_built_from(project: Project) -> None:
    """After a `--target` run on an edited recipe, the manifest says which targets are from which recipe."""
    project.write(BASIC)
    assert project.edgebuild("run", "recipe.yaml").code == 0
    old = manifest(project)["recipe"]["sha256"]
    project.write(BASIC.replace("tag: C", "tag: CC"))
    assert project.edgebuild("run", "recipe.yaml", "--target", "test-gpu").code == 0
    m = manifest(project)
    assert m["recipe"]["sha256"] != old
    assert m["targets"]["test-gpu"]["recipe_sha256"] == m["recipe"]["sha256"]
    assert m["targets"]["test-cpu"]["recipe_sha256"] == old


def test_explain_step_at_target_for_a_step_shared_by_all_targets(project: Project) -> None:
    project.write(BASIC)
    assert project.edgebuild("run", "recipe.yaml").code == 0
    r = project.edgebuild("explain", "recipe.yaml", "a@test-cpu")
    assert r.code == 0 and "a does not depend on the target" in r.out and "a: up to date" in r.out
