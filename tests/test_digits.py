"""The digits example (recipes/digits.yaml): pruning, distillation and quantization in one recipe. It plans,
and, built end to end from a copy, ships a compressed model per target that keeps the teacher's accuracy."""

from __future__ import annotations

import json
import os
from pathlib import Path

import clikit
import pytest
from examplekit import ROOT, digits_copy

CANDIDATES = ["student-int8", "student-fp32", "pruned-int8", "pruned-fp32", "fp32"]


def test_the_recipe_validates_and_plans_every_technique(tmp_path: Path) -> None:
    recipe = digits_copy(tmp_path)
    r = clikit.in_process(["plan", str(recipe), "--format", "json", "--cache", str(tmp_path / "cache")],
                          tmp_path, os.environ)
    assert r.code == 0, r.err
    kinds = {n["use"] for n in json.loads(r.out)["nodes"]}
    assert {"prune", "distill", "export", "quantize-static", "wasm-bundle"} <= kinds
    assert not (tmp_path / "recipes" / "digits.lock").exists()   # planning writes nothing beside the recipe


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The manifest of a cold build of a copy (a build beside the committed recipe would write its lock)."""
    work = tmp_path_factory.mktemp("digits")
    r = clikit.in_subprocess(["run", str(digits_copy(work)), "--cache", str(work / "cache"), "--out", str(work / "dist")],
                             work, dict(os.environ, PYTHONPATH=str(ROOT), EDGEBUILD_HOST_GPU="none"), timeout=900)
    assert r.code == 0, r.out + r.err
    manifest: dict = json.loads((work / "dist" / "digits" / "manifest.json").read_text())
    manifest["_dist"] = str(work / "dist" / "digits")
    manifest["_facts"] = _facts(work)
    return manifest


def _facts(work: Path) -> dict:
    """Every step's facts, shipped or not (the manifest has only the shipped chains'): from its cache entry."""
    r = clikit.in_process(["plan", str(work / "recipes" / "digits.yaml"), "--format", "json", "--cache",
                           str(work / "cache")], work, os.environ)
    assert r.code == 0, r.err
    keys = {n["node"]: n["key"] for n in json.loads(r.out)["nodes"]}
    entry = lambda k: json.loads((work / "cache" / "objects" / k[:2] / k / "entry.json").read_text())  # noqa: E731
    return {node: entry(k)["info"] for node, k in keys.items() if node in ("pruned", "student")}


@pytest.mark.slow
def test_pruning_removes_half_the_channels_and_keeps_the_classifier(built: dict) -> None:
    facts = built["_facts"]["pruned"]
    assert facts["mode"] == "structured" and facts["kept_whole"] == ["fc"] and facts["channels"]["fc"] == [10, 10]
    assert facts["channels"]["stem.0"] == [24, 48] and facts["channels"]["stage3.1.conv2"] == [96, 192]
    assert facts["macs"]["after"] < 0.3 * facts["macs"]["before"]
    assert len(facts["fine_tune_loss"]) == 3 and facts["accuracy"]["after"] >= 0.985


@pytest.mark.slow
def test_the_student_is_a_fraction_of_the_teacher_and_learns_its_task(built: dict) -> None:
    facts = built["_facts"]["student"]
    assert facts["params"]["student"] * 20 < facts["params"]["teacher"]
    assert facts["labels"] is True and facts["accuracy"]["student"] >= 0.985 and facts["agreement"]["value"] >= 0.98


@pytest.mark.slow
def test_each_cpu_target_ships_a_compressed_model_within_a_point_of_the_teacher(built: dict) -> None:
    import numpy as np
    import onnxruntime as ort

    ev = np.load(ROOT / "recipes" / "digits" / "eval.npz")
    for target in ("raspberry-pi-5", "x86-64"):
        t = built["targets"][target]
        sel = t["selection"]
        assert sel["by"] == "latency" and [c["step"] for c in sel["candidates"]] == CANDIDATES
        assert sel["chosen"] != "fp32"   # the teacher is 5-30x slower than every compressed variant
        (art,) = t["artifacts"]
        assert art["step"] == sel["chosen"] and art["checks"]["passed"]
        assert art["checks"]["measurements"]["accuracy"]["drop"] <= 0.01
        sess = ort.InferenceSession(str(Path(built["_dist"]) / art["path"]), providers=["CPUExecutionProvider"])
        acc = float((sess.run(None, {"image": ev["image"]})[0].argmax(1) == ev["labels"]).mean())
        assert acc >= 0.985, (target, art["path"], acc)


@pytest.mark.slow
def test_the_browser_gets_the_student_in_a_checked_web_bundle(built: dict) -> None:
    (art,) = built["targets"]["browser-wasm"]["artifacts"]
    assert art["step"] == "web" and art["chain"] == ["student", "student-fp32", "web@browser-wasm"] and art["checks"]["passed"]
    assert (Path(built["_dist"]) / "browser-wasm" / "web" / "model.onnx").is_file()
