"""The smaller subcommands: targets, steps, validate, cache."""

from __future__ import annotations

import json

from enginekit import BASIC, Project, Result


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


# -- errors a user can cause from the command line: `error: what` and a hint, exit 1, no traceback -----------

def _user_error(r: Result, *needles: str) -> None:
    assert r.code == 1 and "Traceback" not in r.err, r.err
    for needle in needles:
        assert needle in r.err, r.err
    assert "\n  hint: " in r.err, r.err


def test_usage_errors_exit_1_with_the_usage_line_and_a_hint(project: Project) -> None:
    project.write(BASIC)
    r = project.edgebuild("plan", "--format", "xml", "recipe.yaml")
    _user_error(r, "usage: edgebuild plan", "error: argument --format: invalid choice: 'xml'")
    _user_error(project.edgebuild("run"), "usage: edgebuild run", "error: the following arguments are required: recipe")


def test_serve_port_out_of_range_is_a_usage_error(project: Project) -> None:
    for port in ("99999", "-1", "http"):
        _user_error(project.edgebuild("serve", ".", "--port", port), f"error: argument --port: '{port}' is not a TCP port")


def test_jobs_below_one_is_a_usage_error(project: Project) -> None:
    project.write(BASIC)
    _user_error(project.edgebuild("run", "recipe.yaml", "--jobs", "-3", "--force", "a"),
                "error: argument --jobs/-j: '-3' is not a number of jobs")
    assert project.ran() == []


def test_recipe_path_that_is_a_directory(project: Project) -> None:
    (project.root / "sub").mkdir()
    _user_error(project.edgebuild("run", "sub"), "error: cannot read sub: it is a directory")


def test_output_and_cache_folders_that_cannot_be_created(project: Project) -> None:
    project.write(BASIC)
    (project.root / "file").write_text("a file where a folder should go\n")
    r = project.edgebuild("run", "recipe.yaml", "--out", "file/dist")
    _user_error(r, "error: cannot create the output folder file/dist/tiny: Not a directory", "--out DIR")
    assert (project.root / "file").is_file()
    assert project.ran() == []   # found before anything was built
    r = project.edgebuild("run", "recipe.yaml", "--cache", "file/cache")
    _user_error(r, f"error: cannot create the cache folder {project.root / 'file' / 'cache'}", "--cache DIR")
    assert project.ran() == [] and not (project.root / "dist").exists()


def test_step_id_longer_than_64_characters_is_a_located_error(project: Project) -> None:
    for n, ok in ((64, True), (65, False)):
        sid = "s" * n
        project.write(BASIC.replace(" c:", f" {sid}:").replace("[c, p]", f"[{sid}, p]"))
        r = project.edgebuild("validate", "recipe.yaml")
        if ok:
            assert r.code == 0, r.err
        else:
            assert r.code == 1 and "Traceback" not in r.err, r.err
            assert "recipe.yaml:9:3: error: name 'sssssssssssssssssssssss" in r.err, r.err
            assert "in steps is 65 characters long, more than 64" in r.err and "hint: a step id becomes" in r.err


def test_anchors_and_aliases_share_step_parameters(project: Project) -> None:
    project.write(BASIC.replace("with: {tag: B}", "with: &shared {tag: B}").replace("with: {tag: C}", "with: *shared"))
    r = project.edgebuild("run", "recipe.yaml")
    assert r.code == 0, r.err
    assert project.ran() == ["a", "b", "c", "p", "p"]
    steps = json.loads((project.root / "dist" / "tiny" / "manifest.json").read_text())["steps"]
    assert steps["c"]["params"]["tag"] == steps["b"]["params"]["tag"] == "B"
