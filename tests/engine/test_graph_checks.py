"""Plan-time checks of how steps chain: a converter given a model it cannot convert is refused at its
`from:` line, before anything runs."""

from __future__ import annotations

from enginekit import Project

RECIPE = """
    edgebuild: 1
    name: tiny
    model:
      onnx: tiny.onnx
    targets: [cpu.yaml]
    steps:
      opt: {use: optimize}
      int8: {use: quantize-dynamic, from: opt}
      half: {use: fp16, from: int8}
    ship:
      test-cpu: [half]
"""


def test_fp16_from_an_int8_model_is_refused_at_plan_time(project: Project) -> None:
    project.write(RECIPE)
    r = project.edgebuild("validate", "recipe.yaml")
    assert r.code == 1 and "Traceback" not in r.err
    first = next(line for line in r.err.splitlines() if ": error: " in line)
    assert first == ("recipe.yaml:9:27: error: step 'half' (fp16) converts fp32 models, but step 'int8' "
                     "(quantize-dynamic) gives int8")
    assert "hint: take it from a float model: `from: opt`" in r.err


def test_quantizing_a_float_chain_is_fine(project: Project) -> None:
    project.write(RECIPE.replace("half: {use: fp16, from: int8}", "half: {use: fp16, from: opt}"))
    assert project.edgebuild("validate", "recipe.yaml").code == 0


def test_an_integer_parameter_written_as_a_float_has_the_same_key() -> None:
    from edgebuild.steps.export import Export
    from edgebuild.steps.quantize_static import QuantizeStatic

    assert Export.fill_defaults({"opset": 17.0}) == Export.fill_defaults({"opset": 17})
    assert isinstance(QuantizeStatic.fill_defaults({"samples": 100.0, "data": "c"})["samples"], int)
