"""The worker processes: a step that takes its process down, the build log's timings, and the fork
server keeping away from edgebuild's output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from enginekit import BASIC, Project


def test_worker_that_dies_is_reported_and_the_build_goes_on(project: Project) -> None:
    project.write(BASIC.replace("c: {use: fake-copy, with: {tag: C}}", "c: {use: fake-fail, with: {how: die}}"))
    r = project.edgebuild("run", "recipe.yaml", "--jobs", "1", "--keep-going")
    assert r.code == 1
    assert "step 'c' (fake-fail) failed: the step's worker process died (exit code 3)" in r.err
    assert "some output before failing" in r.err            # what it printed before dying is shown
    assert sorted(set(project.ran())) == ["a", "b", "c", "p"]  # the workers after it still run
    assert (project.root / "dist" / "tiny" / "test-cpu" / "b.onnx").exists()


def test_worker_killed_by_a_signal_names_it(project: Project) -> None:
    project.write(BASIC.replace("c: {use: fake-copy, with: {tag: C}}", "c: {use: fake-fail, with: {how: segv}}"))
    r = project.edgebuild("run", "recipe.yaml", "--jobs", "1")
    assert r.code == 1
    assert "step 'c' (fake-fail) failed: the step's worker process died (killed by SIGSEGV)" in r.err


def test_build_log_says_when_each_step_started_and_how_long_its_work_took(project: Project) -> None:
    project.write(BASIC.replace("a: {use: fake-copy, with: {tag: A}}", "a: {use: fake-copy, with: {tag: A, sleep: 0.3}}"))
    assert project.edgebuild("run", "recipe.yaml", "--jobs", "1").code == 0
    nodes = json.loads((project.root / "dist" / "tiny" / "build-log.json").read_text())["nodes"]
    a, b = nodes["a"], nodes["b"]
    assert a["work_seconds"] >= 0.3 and a["seconds"] >= a["work_seconds"]
    assert b["started_s"] >= a["started_s"] + a["seconds"]   # b takes a's output: it starts after a ends
    assert all(n["status"] == "built" and n["started_s"] is not None for n in nodes.values())


def test_fork_server_does_not_hold_edgebuild_output(project: Project) -> None:
    """A CI runner reading edgebuild's output through a pipe gets end-of-file when edgebuild exits:
    the long-lived fork server it starts must not keep the pipe open (its stdout/stderr are /dev/null)."""
    project.write(BASIC)
    code = """if True:
        import os
        from edgebuild.cli import main
        rc = main(['run', 'recipe.yaml'])
        servers = []
        for pid in filter(str.isdigit, os.listdir('/proc')):
            try:   # a process may end between the listing and the reading
                ppid = open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()[1]
                if ppid == str(os.getpid()) and b'forkserver' in open(f'/proc/{pid}/cmdline', 'rb').read():
                    servers.append((os.readlink(f'/proc/{pid}/fd/1'), os.readlink(f'/proc/{pid}/fd/2')))
            except OSError:
                pass
        print(rc, servers)
    """
    r = subprocess.run([sys.executable, "-c", code], cwd=project.root, env=project.env(), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "0 [('/dev/null', '/dev/null')]"


def test_tool_versions_come_from_installed_metadata_without_importlib_metadata(tmp_path: Path, monkeypatch) -> None:
    import importlib.metadata

    from edgebuild import dists

    for name in ("onnx", "onnxruntime", "numpy", "PyYAML", "pyyaml", "onnx-ir", "onnx_ir", "jsonschema"):
        assert dists.version(name) == importlib.metadata.version(name), name
        meta = dists.metadata_file(name)
        assert meta is not None and meta.is_file() and f"Version: {dists.version(name)}" in meta.read_text()
    assert dists.version("surely-not-installed-dist") is None
    assert dists.metadata_file("surely-not-installed-dist") is None
    # older installs: NAME-VERSION-pyX.Y.egg-info folders, and folders named without a version
    (tmp_path / "old_tool-1.2.3-py3.11.egg-info").mkdir()
    (tmp_path / "old_tool-1.2.3-py3.11.egg-info" / "PKG-INFO").write_text("Metadata-Version: 1.1\nName: old-tool\nVersion: 1.2.3\n")
    (tmp_path / "dev_tool.egg-info").mkdir()
    (tmp_path / "dev_tool.egg-info" / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: dev-tool\nVersion: 4.5.dev0\n\nbody\n")
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    assert dists.version("Old-Tool") == "1.2.3"
    assert dists.version("dev.tool") == "4.5.dev0"
    assert dists.metadata_file("dev-tool") == tmp_path / "dev_tool.egg-info" / "PKG-INFO"


def test_captured_log_drops_colour_codes_and_folds_repeated_lines() -> None:
    from edgebuild.commands.run import log_tail

    text = "INFO start\n" + "WARNING traced\n" * 5 + "\x1b[1;31mE: bad node\x1b[m\nERROR failed\n"
    assert log_tail(text) == ["INFO start", "WARNING traced", "(the line above 4 more times)", "E: bad node",
                              "ERROR failed"]
    assert log_tail("a\nb\nc\n", lines=2) == ["b", "c"]
