"""Runtime compatibility at plan time: what a target's runtime cannot load is an error at the ship line."""

from __future__ import annotations

import pytest
from enginekit import Project, tiny_onnx


@pytest.fixture(autouse=True)
def opset13(project: Project) -> None:
    tiny_onnx(project.root / "tiny.onnx", opset=13)   # within every runtime's limits here

RECIPE = """
    edgebuild: 1
    name: tiny
    model:
      onnx: tiny.onnx
    targets: [cpu.yaml, gpu.yaml, jetson-nano]
    steps:
      dyn: {use: quantize-dynamic}
      w4: {use: int4}
      half: {use: fp16}
      ext: {use: optimize, with: {level: extended}}
      engine: {use: tensorrt, from: SOURCE}
    ship:
      test-cpu: [half]
      test-gpu: [engine]
      jetson-nano: [NANO]
"""


def recipe(source: str = "half", nano: str = "half") -> str:
    return RECIPE.replace("SOURCE", source).replace("NANO", nano)


def first_error(err: str) -> str:
    return next(line for line in err.splitlines() if ": error: " in line)


def test_dynamic_int8_cannot_feed_tensorrt(project: Project) -> None:
    project.write(recipe(source="dyn"))
    r = project.edgebuild("validate", "recipe.yaml")
    assert r.code == 1
    assert first_error(r.err) == ("recipe.yaml:14:14: error: test-gpu: engine would contain MatMulInteger (an integer "
                                  "matmul from dynamic quantization), which tensorrt 10.3 cannot load")
    assert "quantize-static with `format: qdq`" in r.err


def test_contrib_ops_cannot_feed_tensorrt(project: Project) -> None:
    project.write(recipe(source="ext"))
    r = project.edgebuild("validate", "recipe.yaml")
    assert "engine would contain com.microsoft.* (an ONNX Runtime contrib operator" in r.err


def test_int4_needs_a_runtime_with_matmulnbits(project: Project) -> None:
    project.write(recipe(nano="w4"))
    r = project.edgebuild("validate", "recipe.yaml")
    assert first_error(r.err) == ("recipe.yaml:15:17: error: jetson-nano: w4 would contain com.microsoft.MatMulNBits "
                                  "(added in onnxruntime 1.17), which onnxruntime 1.11 cannot load")


def test_slow_precision_is_a_warning_not_an_error(project: Project) -> None:
    project.write(recipe())
    r = project.edgebuild("validate", "recipe.yaml")
    assert r.code == 0, r.err
    assert ("recipe.yaml:13:14: warning: test-cpu: half is fp16, which this hardware runs slower than fp32 "
            "(the profile lists fp16 under precisions.slow)") in r.err


def test_opset_limits_follow_the_runtime_that_reads_the_artifact(project: Project) -> None:
    # Shipped as ONNX to jetson-nano, onnxruntime 1.11 reads the model (opset <= 16); inside an engine
    # for jetson-nano, TensorRT 8.2's parser does (opset <= 13). An opset-14 model passes the first only.
    tiny_onnx(project.root / "tiny.onnx", opset=17)
    project.write(recipe())
    r = project.edgebuild("validate", "recipe.yaml")
    assert "recipe.yaml:4:9: error: the ONNX model uses opset 17, but target jetson-nano (onnxruntime 1.11) loads opset 16 at most" in r.err
    tiny_onnx(project.root / "tiny.onnx", opset=14)
    assert project.edgebuild("validate", "recipe.yaml").code == 0
    project.write(recipe().replace("test-gpu: [engine]", "test-gpu: [half]").replace("jetson-nano: [half]", "jetson-nano: [engine]"))
    r = project.edgebuild("validate", "recipe.yaml")
    assert "target jetson-nano (tensorrt 8.2) loads opset 13 at most" in r.err
