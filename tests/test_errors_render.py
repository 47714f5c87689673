"""Fast unit tests of how errors are located and shown: the renderer, the YAML loader, schema checks."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from edgebuild.errors import EdgebuildError, Location, Problem, UserError, in_order
from edgebuild.frontend import loader, validate

RECIPE = textwrap.dedent("""\
    edgebuild: 1
    name: tiny
    model:
      onnx: tiny.onnx
    targets: [x86-64]
    steps:
      int8: {use: quantize-dynamic}
    ship:
      x86-64: [int8]
    """)


def _write(tmp_path: Path, text: str, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _problems(text: str, name: str = "recipe.yaml") -> list[Problem]:
    return validate.check(loader.loads(text, name), validate.schema("recipe"))


def _user_error(text: str, name: str = "recipe.yaml") -> Problem:
    with pytest.raises(UserError) as info:
        loader.loads(text, name)
    assert len(info.value.problems) == 1
    return info.value.problems[0]


# -- the renderer ------------------------------------------------------------------------------

def test_render_shows_the_source_line_and_a_caret_under_the_column(tmp_path: Path) -> None:
    path = _write(tmp_path, RECIPE)
    col = RECIPE.splitlines()[6].index("quantize-dynamic") + 1
    text = Problem("unknown step kind", Location(str(path), 7, col), "did you mean 'fp16'?").render()
    head, src, caret, hint = text.splitlines()
    assert head == f"{path}:7:{col}: error: unknown step kind"
    assert src == "    7 |   int8: {use: quantize-dynamic}"
    assert caret.index("^") == src.index("quantize-dynamic")
    assert caret.rstrip().endswith("^") and set(caret.replace("|", "").replace("^", "")) == {" "}
    assert hint == "  hint: did you mean 'fp16'?"


def test_render_caret_at_column_one_and_wide_line_numbers(tmp_path: Path) -> None:
    path = _write(tmp_path, "x\n" * 120 + "bad: 1\n")
    _head, src, caret = Problem("oops", Location(str(path), 121, 1)).render().splitlines()
    assert src == "  121 | bad: 1"
    assert caret.index("^") == src.index("bad")


def test_render_without_a_line_or_a_readable_file_shows_no_excerpt(tmp_path: Path) -> None:
    assert Problem("no such target", None, "did you mean 'x86-64'?").render().splitlines() == [
        "error: no such target", "  hint: did you mean 'x86-64'?"]
    assert Problem("gone", Location(str(tmp_path / "missing.yaml"), 3, 2)).render() == f"{tmp_path}/missing.yaml:3:2: error: gone"
    short = _write(tmp_path, "a: 1\n", "short.yaml")
    assert Problem("past the end", Location(str(short), 9, 1)).render() == f"{short}:9:1: error: past the end"


def test_an_error_renders_every_problem_in_order() -> None:
    err = EdgebuildError([Problem("first", Location("r.yaml")), Problem("second", Location("r.yaml"), severity="note")])
    assert err.render().splitlines() == ["r.yaml: error: first", "r.yaml: note: second"]
    assert str(UserError("plain", hint="h")) == "plain"


def test_problems_are_sorted_by_file_line_and_column_unlocated_last() -> None:
    found = [Problem("step kind", Location("r.yaml", 12, 15)), Problem("flag"),
             Problem("profile", Location("t.yaml", 2, 1)), Problem("factory", Location("r.yaml", 5, 14)),
             Problem("whole file", Location("r.yaml")), Problem("same line", Location("r.yaml", 5, 3)),
             Problem("note", severity="note"), Problem("factory again", Location("r.yaml", 5, 14))]
    # files in the order they were first found; in a file, by line and column, a problem without a line after
    # the located ones; problems without a location last; ties keep the order they were found in
    assert [p.message for p in in_order(found)] == [
        "same line", "factory", "factory again", "step kind", "whole file", "profile", "flag", "note"]
    err = UserError(found)
    assert [p.message for p in err.problems] == [p.message for p in in_order(found)]
    assert str(err) == "same line" and err.render().startswith("r.yaml:5:3: error: same line")


def test_a_recipe_with_problems_in_several_checks_reports_them_all_in_line_order(tmp_path: Path) -> None:
    from edgebuild.frontend import recipe

    path = _write(tmp_path, textwrap.dedent("""\
        edgebuild: 1
        name: tiny
        model:
          pytorch: {factory: nope.py:build}
          inputs:
            x: {shape: [batch, 4], dtype: float32}
        targets: [x86-64]
        steps:
          fp32: {use: export}
          int8: {use: quantize-dynamc, from: fp32}
        ship:
          x86-64: [int8]
        """))
    with pytest.raises(UserError) as info:
        recipe.load(path)
    # the step kind is checked before the files, but the factory's line comes first
    assert [(p.loc.line if p.loc else 0, p.message) for p in info.value.problems] == [
        (4, "factory file not found: nope.py"), (10, "unknown step kind 'quantize-dynamc' in steps.int8")]


# -- the loader --------------------------------------------------------------------------------

def test_loader_records_where_each_key_and_value_is() -> None:
    doc = loader.loads(RECIPE, "recipe.yaml")
    assert doc.at(("steps", "int8"), key=True) == Location("recipe.yaml", 7, 3)
    assert doc.at(("steps", "int8", "use")) == Location("recipe.yaml", 7, 15)
    assert doc.at(("ship", "x86-64", 0)) == Location("recipe.yaml", 9, 12)
    # a path the file does not have falls back to its nearest parent that it does have
    assert doc.at(("steps", "int8", "with", "data")) == doc.at(("steps", "int8"))


def test_yaml_syntax_error_is_located_and_names_where_the_construct_began() -> None:
    p = _user_error(RECIPE.replace("targets: [x86-64]", "targets: [x86-64"))
    assert (p.loc.line, p.loc.col) == (6, 6)
    assert "did not find expected ',' or ']'" in p.message and "starts at line 5, column 10" in p.message
    assert p.hint and "5 to 6" in p.hint


def test_tab_indentation_says_tab() -> None:
    p = _user_error(RECIPE.replace("  onnx:", "\tonnx:"))
    assert (p.loc.line, p.loc.col) == (4, 1)
    assert "tab" in p.message and p.hint and "spaces" in p.hint


def test_duplicate_key_points_at_the_second_and_names_the_first() -> None:
    p = _user_error(RECIPE.replace("  int8: {use: quantize-dynamic}", "  int8:\n    use: fp16\n    use: fp16"))
    assert p.message == "duplicate key 'use'"
    assert (p.loc.line, p.loc.col) == (9, 5)
    assert p.hint and "line 8" in p.hint


def test_merge_keys_are_refused_by_name() -> None:
    p = _user_error(RECIPE + "x: &a {b: 1}\ny:\n  <<: *a\n")
    assert "merge keys" in p.message and (p.loc.line, p.loc.col) == (12, 3)


# -- schema checks -----------------------------------------------------------------------------

def test_all_schema_errors_of_a_file_are_reported_at_once_in_line_order() -> None:
    text = (RECIPE.replace("name: tiny", "name: tiny\ndescripton: a typo")
            .replace("  onnx: tiny.onnx", "  onnx: tiny.onnx\n  imputs: {x: {shape: [1, 4]}}")
            .replace("{use: quantize-dynamic}", "{use: quantize-dynamic, form: x}"))
    problems = _problems(text)
    assert [p.message for p in problems] == [
        "unknown key 'descripton' in the top level",
        "unknown key 'imputs' in model",
        "unknown key 'form' in steps.int8",
    ]
    assert [(p.loc.line, p.loc.col) for p in problems] == [(3, 1), (6, 3), (9, 33)]
    assert [p.hint for p in problems] == ["did you mean 'description'?", "did you mean 'inputs'?", "did you mean 'from'?"]


def test_a_misspelled_required_key_is_one_error_not_two() -> None:
    problems = _problems(RECIPE.replace("steps:", "stpes:"))
    assert [p.message for p in problems] == ["unknown key 'stpes' in the top level"]
    assert problems[0].hint == "did you mean 'steps'?"
    # with no look-alike, the missing key is reported
    assert [p.message for p in _problems(RECIPE.replace("ship:\n  x86-64: [int8]\n", ""))] == [
        "missing required key 'ship' in the top level"]


def test_either_branch_errors_describe_the_branch_that_fits() -> None:
    text = RECIPE.replace("  onnx: tiny.onnx", "  onnx: tiny.onnx\n  inputs:\n    x: {shape: [0, 4.5]}")
    problems = _problems(text)
    assert [p.message for p in problems] == [
        "model.inputs.x.shape.0 must be >= 1, found 0",
        "model.inputs.x.shape.1 must be an integer or a string, found number 4.5",
    ]


def test_invalid_names_are_explained_in_words_with_a_suggestion() -> None:
    [p] = _problems(RECIPE.replace("name: tiny", "name: Tiny Model"))
    assert p.message.startswith('name: "Tiny Model" is not a valid value (expected lower-case letters')
    assert p.hint == "did you mean 'tiny-model'?"
    [p] = _problems(RECIPE.replace("  int8: {use", "  int8 model: {use"))
    assert p.message.startswith("invalid name 'int8 model' in steps: expected letters")
    assert (p.loc.line, p.loc.col) == (7, 3) and p.hint == "did you mean 'int8-model'?"


def test_model_source_both_or_neither() -> None:
    [both] = _problems(RECIPE.replace("  onnx: tiny.onnx", "  onnx: tiny.onnx\n  pytorch: {factory: m.py:build}"))
    assert "both `onnx` and `pytorch`" in both.message and (both.loc.line, both.loc.col) == (5, 3)
    [neither] = _problems(RECIPE.replace("  onnx: tiny.onnx", "  inputs: {x: {shape: [1]}}"))
    assert "no source" in neither.message and (neither.loc.line, neither.loc.col) == (3, 1)


def test_control_characters_in_the_excerpt_are_shown_escaped(tmp_path) -> None:
    from edgebuild.errors import Location, Problem

    f = tmp_path / "r.yaml"
    f.write_text("name: x\ndescription: \x1b[31mred\x07\n")
    out = Problem("bad character", Location(str(f), 2, 14)).render()
    assert "\x1b" not in out and "\x07" not in out
    assert "description: \\x1b[31mred\\x07" in out
