"""The recipe's lock file: written by `run`, checked by `run --locked`, pinning `best:` choices, and read
back as located errors when it is malformed (fake step kinds, the CLI in this process)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from enginekit import BASIC, Project

LAYERS = """
    edgebuild: 1
    name: tiny
    model:
      onnx: tiny.onnx
    data: {calib: calib.npz}
    targets: [cpu.yaml]
    steps:
      a: {use: fake-layers, with: {data: calib}}
      b: {use: fake-layers}
    ship:
      test-cpu: SHIP
"""


def layers(project: Project, ship: str = "[a]", checks: str = "") -> Path:
    np.savez(project.root / "calib.npz", x=np.ones((4, 4), np.float32))
    tool(project, "1.0")
    return project.write(LAYERS.replace("SHIP", ship) + checks)


def tool(project: Project, version: str) -> None:
    """An installed distribution the fake-layers kind names in its `tools` (a real dist-info folder on the
    path: the version is read from it exactly as onnxruntime's is)."""
    site = project.root / "site"
    for old in site.glob("*.dist-info"):
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    info = site / f"edgebuild_test_tool-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: edgebuild-test-tool\nVersion: {version}\n")


def env(project: Project, **extra: str) -> dict[str, str | None]:
    base = project.env()
    return dict(extra, PYTHONPATH=base["PYTHONPATH"] + ":" + str(project.root / "site"))


def lock_text(project: Project) -> str:
    return (project.root / "recipe.lock").read_text()


def test_a_build_writes_a_lock_and_a_rebuild_leaves_it_byte_identical(project: Project) -> None:
    project.write(BASIC)
    r = project.edgebuild("run", "recipe.yaml")
    assert r.code == 0, r.err
    assert "lock: wrote recipe.lock (release 1)" in r.err
    first = lock_text(project)
    assert 'node b key = "' in first and 'node p@test-gpu upstream = "a"' in first
    assert 'target test-cpu ship = ["b", "p"]' in first and re.search(r'^artifact test-cpu/b.onnx = "[0-9a-f]{64}"$', first, re.M)
    assert project.edgebuild("run", "recipe.yaml", "--force", "a").code == 0   # rebuilt, same facts
    assert project.edgebuild("run", "recipe.yaml").code == 0                   # a no-op
    assert lock_text(project) == first
    from edgebuild.trust import lockfile

    lock = lockfile.read(project.root / "recipe.lock")
    assert lock is not None and lockfile.render(lock.facts) == first   # parse and render: the same text


def test_locked_fails_on_a_changed_parameter_naming_it_and_builds_nothing(project: Project) -> None:
    project.write(BASIC)
    assert project.edgebuild("run", "recipe.yaml").code == 0
    project.ran()
    project.write(BASIC.replace("tag: B", "tag: X"))
    r = project.edgebuild("run", "recipe.yaml", "--locked")
    assert r.code == 1 and "Traceback" not in r.err
    line = next(i for i, x in enumerate(lock_text(project).splitlines(), 1) if x.startswith("node b key"))
    assert f'recipe.lock:{line}:1: error: --locked: b: params.tag: "B" → "X"' in r.err, r.err
    assert "nothing was built" in r.err and "to update the lock" in r.err
    assert project.ran() == [] and not (project.root / "dist" / "tiny" / "test-cpu" / "b.onnx").read_bytes().endswith(b"X")
    r = project.edgebuild("run", "recipe.yaml")   # without --locked: built, and the lock follows, saying why
    assert r.code == 0 and 'lock: 1 key changed (b: params.tag: "B" → "X")' in r.err, r.err
    assert project.edgebuild("run", "recipe.yaml", "--locked", "--force", "b").code == 0


def test_locked_fails_on_changed_calibration_data_and_on_a_new_tool_version(project: Project) -> None:
    layers(project)
    assert project.edgebuild("run", "recipe.yaml", env=env(project)).code == 0
    assert 'tool edgebuild-test-tool = "1.0"' in lock_text(project)
    project.ran()
    np.savez(project.root / "calib.npz", x=np.zeros((4, 4), np.float32))
    r = project.edgebuild("run", "recipe.yaml", "--locked", env=env(project))
    assert r.code == 1 and "error: --locked: a: data calib changed" in r.err, r.err
    assert project.ran() == []
    np.savez(project.root / "calib.npz", x=np.ones((4, 4), np.float32))
    tool(project, "2.0")
    r = project.edgebuild("run", "recipe.yaml", "--locked", env=env(project))
    assert r.code == 1 and "error: --locked: edgebuild-test-tool 1.0 -> 2.0" in r.err, r.err
    assert project.ran() == []
    r = project.edgebuild("run", "recipe.yaml", env=env(project))   # the upgrade, reviewed: the lock follows
    assert r.code == 0 and "lock: 1 key changed (edgebuild-test-tool 1.0 -> 2.0)" in r.err, r.err


def test_locked_without_a_lock_and_locked_with_relock_are_user_errors(project: Project) -> None:
    project.write(BASIC)
    r = project.edgebuild("run", "recipe.yaml", "--locked")
    assert r.code == 1 and "--locked: there is no lock file recipe.lock" in r.err and "Traceback" not in r.err
    r = project.edgebuild("run", "recipe.yaml", "--locked", "--relock")
    assert r.code == 1 and "contradict" in r.err


def test_a_locked_best_choice_holds_when_the_timings_flip(project: Project) -> None:
    layers(project, "{best: [a, b], by: latency}")
    first = project.edgebuild("run", "recipe.yaml", env=env(project, EDGEBUILD_TEST_LAYERS='{"a": 1, "b": 24}'))
    assert first.code == 0, first.err
    assert 'target test-cpu chosen = "a"' in lock_text(project)
    locked = lock_text(project)
    # the same keys, built again in an empty cache, where a is now the slow one
    flipped = env(project, EDGEBUILD_TEST_LAYERS='{"a": 24, "b": 1}')
    r = project.edgebuild("run", "recipe.yaml", "--locked", "--cache", "other", env=flipped)
    assert r.code == 0, r.err
    sel = json.loads((project.root / "dist" / "tiny" / "manifest.json").read_text())["targets"]["test-cpu"]["selection"]
    assert sel["chosen"] == "a" and sel["locked"] is True
    why = {c["step"]: c["why"] for c in sel["candidates"]}
    assert why == {"a": "chosen (locked)", "b": "not chosen: the lock holds a; this build's timings would choose b"}
    assert "is not byte-identical to the one locked" in r.err   # a's bytes changed; the choice did not
    assert lock_text(project) == locked                         # --locked never writes the lock
    r = project.edgebuild("run", "recipe.yaml", "--relock", "--cache", "other", env=flipped)
    assert r.code == 0 and 'target test-cpu chosen = "b"' in lock_text(project), r.err
    assert "test-cpu now ships b" in r.err


def test_a_locked_choice_that_now_fails_a_check_fails_the_build(project: Project) -> None:
    layers(project, "{best: [a, b], by: latency}", "    checks:\n      size: {max_mb: 1}\n")
    assert project.edgebuild("run", "recipe.yaml", env=env(project, EDGEBUILD_TEST_LAYERS='{"a": 1, "b": 1}')).code == 0
    pin = re.search(r'^target test-cpu chosen = "(\w+)"$', lock_text(project), re.M)[1]   # a tie: whichever timed faster
    other = {"a": "b", "b": "a"}[pin]
    r = project.edgebuild("run", "recipe.yaml", "--locked", "--cache", "other",
                          env=env(project, EDGEBUILD_TEST_LAYERS=f'{{"{pin}": 24, "{other}": 1}}'))
    assert r.code == 1, r.err
    assert f"error: test-cpu: the locked choice {pin} fails now: size" in r.err and "> 1 MB" in r.err
    assert "--relock" in r.err                                  # never a silent switch to the other one


def test_the_lock_holds_nothing_of_the_host(project: Project) -> None:
    """CI builds --locked on another machine: measurement keys take the CPU and its cores, the lock does not."""
    layers(project, "{best: [a, b], by: latency}")
    assert project.edgebuild("run", "recipe.yaml", env=env(project)).code == 0
    text = lock_text(project)
    assert "node check:a@test-cpu kind" in text and "node check:a@test-cpu key" not in text
    assert not re.search(r"^node check:.* (host|params threads) ", text, re.M)
    r = project.edgebuild("run", "recipe.yaml", "--locked", env=env(project, EDGEBUILD_HOST_CPU="Another CPU 9000"))
    assert r.code == 0, r.err                                   # measured again on "another host", still locked
    assert "built  check:a@test-cpu" in r.out + r.err


def test_a_target_run_keeps_the_other_targets_facts(project: Project) -> None:
    project.write(BASIC)
    assert project.edgebuild("run", "recipe.yaml").code == 0
    before = lock_text(project)
    assert project.edgebuild("run", "recipe.yaml", "--target", "test-gpu", "--force", "c").code == 0
    assert lock_text(project) == before


def test_the_release_grows_with_what_ships_and_never_goes_back(project: Project) -> None:
    project.write(BASIC)
    assert project.edgebuild("run", "recipe.yaml").code == 0
    manifest = project.root / "dist" / "tiny" / "manifest.json"
    assert json.loads(manifest.read_text())["release"] == 1
    project.write(BASIC.replace("tag: B", "tag: X"))
    assert project.edgebuild("run", "recipe.yaml").code == 0
    assert json.loads(manifest.read_text())["release"] == 2 and "release = 2" in lock_text(project)
    r = project.edgebuild("run", "recipe.yaml", "--release", "1")
    assert r.code == 1 and "--release 1 is older than release 2" in r.err
    assert project.edgebuild("run", "recipe.yaml", "--release", "7").code == 0
    assert json.loads(manifest.read_text())["release"] == 7 and "release = 7" in lock_text(project)


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("facts = ", "fcts = "), "ends before its closing `facts = N` line"),
    (lambda t: t[: t.index("node b key") + 20], "the value is not valid JSON"),
    (lambda t: "\n".join(t.splitlines()[:-3]) + "\n" + t.splitlines()[-1] + "\n", "lines were removed or added"),
    (lambda t: t.replace("node b kind =", "node b kind = = "), "the value is not valid JSON"),
    (lambda t: t.replace("node c kind", "node c {kind"), "unexpected '{' in a fact's name"),
    (lambda t: t.replace("lock = 1", "lock = 2"), "written by a newer edgebuild (lock format 2)"),
    (lambda t: t.replace('edgebuild = "0.1.0"', 'edgebuild = "99.0"'), "written by edgebuild 99.0, newer than this one"),
    (lambda t: "<<<<<<< HEAD\n" + t, "unexpected '<' in a fact's name"),
])
def test_a_malformed_lock_is_a_located_error(project: Project, edit, message: str) -> None:  # type: ignore[no-untyped-def]
    project.write(BASIC)
    assert project.edgebuild("run", "recipe.yaml").code == 0
    lock = project.root / "recipe.lock"
    lock.write_text(edit(lock.read_text()))
    for args in (("run", "recipe.yaml", "--force", "a"), ("run", "recipe.yaml", "--locked", "--force", "a")):
        r = project.edgebuild(*args)
        assert r.code == 1 and "Traceback" not in r.err, r.err
        first = r.err.splitlines()[0]
        assert re.match(r"recipe\.lock:\d+:\d+: error: ", first) and message in first, r.err
        assert "hint: " in r.err
