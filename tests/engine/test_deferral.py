"""TensorRT routing: engines build only where GPU and TensorRT match the target; elsewhere they are deferred."""

from __future__ import annotations

import json

import enginekit
from enginekit import Project

RECIPE = """
    edgebuild: 1
    name: tiny
    model:
      onnx: tiny.onnx
    targets: [cpu.yaml, gpu.yaml]
    steps:
      a: {use: fake-copy, with: {tag: A}}
      engine: {use: tensorrt, from: a, with: {precision: fp16}}
    ship:
      test-cpu: [a]
      test-gpu: [engine, a]
"""


def test_engine_is_deferred_on_a_host_without_gpu(project: Project) -> None:
    project.write(RECIPE)
    plan = project.edgebuild("plan", "recipe.yaml", "--format", "json")
    nodes = {n["node"]: n for n in json.loads(plan.out)["nodes"]}
    assert nodes["engine@test-gpu"]["status"] == "deferred"
    assert nodes["engine@test-gpu"]["reasons"] == ["needs sm_87 with TensorRT 10.3; this host has no CUDA GPU"]
    r = project.edgebuild("run", "recipe.yaml")
    assert r.code == 0, r.err
    assert "build it on a matching host with: edgebuild run recipe.yaml --target test-gpu" in r.err
    m = json.loads((project.root / "dist" / "tiny" / "manifest.json").read_text())
    gpu = m["targets"]["test-gpu"]
    assert [a["step"] for a in gpu["artifacts"]] == ["a"]
    assert gpu["deferred"] == [{"step": "engine", "format": "tensorrt-engine", "chain": ["a", "engine@test-gpu"],
                                "reason": "needs sm_87 with TensorRT 10.3; this host has no CUDA GPU",
                                "command": "edgebuild run recipe.yaml --target test-gpu"}]
    assert "engine@test-gpu" not in m["steps"]


def test_strict_turns_a_deferral_into_a_failure(project: Project) -> None:
    project.write(RECIPE)
    assert project.edgebuild("run", "recipe.yaml").code == 0
    r = project.edgebuild("run", "recipe.yaml", "--strict")   # also after a no-op
    assert r.code == 1
    assert "recipe.yaml:11:3: error: test-gpu: engine (tensorrt-engine) is deferred" in r.err
    assert "Traceback" not in r.err


def test_reasons_name_the_mismatch(project: Project, monkeypatch) -> None:
    project.write(RECIPE)
    for gpu, trt, why in [("7.5", "10.3", "this host's GPU is sm_75"), ("8.7", "none", "TensorRT is not installed"),
                          ("8.7", "10.13", "this host has TensorRT 10.13")]:
        monkeypatch.setenv("EDGEBUILD_HOST_GPU", gpu)
        monkeypatch.setenv("EDGEBUILD_HOST_TENSORRT", trt)
        out = project.edgebuild("plan", "recipe.yaml").out
        assert "deferred  engine@test-gpu" in out and why in out, out


def test_a_matching_host_runs_the_step(project: Project, monkeypatch) -> None:
    # Host detection says sm_87 + TensorRT 10.3, so the engine is planned to build here. TensorRT
    # itself is not installed on this machine, so the real build then fails, at the step's line.
    monkeypatch.setenv("EDGEBUILD_HOST_GPU", "8.7")
    monkeypatch.setenv("EDGEBUILD_HOST_TENSORRT", "10.3")
    project.write(RECIPE)
    out = project.edgebuild("plan", "recipe.yaml").out
    assert "will run  engine@test-gpu" in out
    r = project.edgebuild("run", "recipe.yaml")
    assert r.code == 1
    assert "step 'engine@test-gpu' (tensorrt) failed: cannot import tensorrt" in r.err


def test_engine_key_depends_on_the_target_gpu(project: Project) -> None:
    project.write(RECIPE)
    before = {n["node"]: n["key"] for n in json.loads(project.edgebuild("plan", "recipe.yaml", "--format", "json").out)["nodes"]}
    gpu = (project.root / "gpu.yaml").read_text().replace('compute_capability: "8.7"', 'compute_capability: "7.2"')
    (project.root / "gpu.yaml").write_text(gpu)
    after = {n["node"]: n["key"] for n in json.loads(project.edgebuild("plan", "recipe.yaml", "--format", "json").out)["nodes"]}
    assert before["a"] == after["a"] and before["engine@test-gpu"] != after["engine@test-gpu"]


def test_a_host_that_gains_tensorrt_or_a_gpu_is_no_longer_up_to_date(project: Project) -> None:
    """The no-op check must not keep saying "up to date" for a deferred engine once the host could build
    it: it compares the host's TensorRT (from package metadata) and GPU facts with the last build's."""
    import os

    project.write(RECIPE)
    site = project.root / "site"
    plain = {"EDGEBUILD_HOST_TENSORRT": None}   # detect TensorRT from package metadata, as on a real host
    assert project.edgebuild("run", "recipe.yaml", env=plain).code == 0
    r = project.edgebuild("run", "recipe.yaml", env=plain)
    assert "up to date" in r.out and "this host has no CUDA GPU" in r.err

    (site / "tensorrt-10.3.0.dist-info").mkdir(parents=True)   # TensorRT gets installed
    (site / "tensorrt-10.3.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: tensorrt\nVersion: 10.3.0\n")
    with_trt = dict(plain, PYTHONPATH=os.pathsep.join([str(site), str(enginekit.TESTS), str(enginekit.TESTS.parent)]))
    r = project.edgebuild("run", "recipe.yaml", env=with_trt)
    assert r.code == 0 and "up to date" not in r.out, r.out
    assert "needs sm_87 with TensorRT 10.3; this host has no CUDA GPU" in r.err   # planned again, GPU still missing
    assert "up to date" in project.edgebuild("run", "recipe.yaml", env=with_trt).out

    r = project.edgebuild("run", "recipe.yaml", env=dict(with_trt, EDGEBUILD_HOST_GPU="7.2"))   # another host's GPU
    assert "up to date" not in r.out and "this host's GPU is sm_72" in r.err
