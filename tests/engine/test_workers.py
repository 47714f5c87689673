"""The runners: worker processes (a step that takes its process down, the fork server keeping away from
edgebuild's output and leaving nothing in $TMPDIR), the in-process runner (the step's output in its log,
the user's imports forgotten), and the build log's timings."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from enginekit import BASIC, Project


@pytest.mark.slow
def test_worker_that_dies_is_reported_and_the_build_goes_on(project: Project) -> None:
    project.write(BASIC.replace("c: {use: fake-copy, with: {tag: C}}", "c: {use: fake-fail, with: {how: die}}"))
    r = project.edgebuild_process("run", "recipe.yaml", "--jobs", "1", "--keep-going")
    assert r.code == 1
    assert "step 'c' (fake-fail) failed: the step's worker process died (exit code 3)" in r.err
    assert "some output before failing" in r.err            # what it printed before dying is shown
    assert sorted(set(project.ran())) == ["a", "b", "c", "p"]  # the workers after it still run
    assert (project.root / "dist" / "tiny" / "test-cpu" / "b.onnx").exists()


@pytest.mark.slow
def test_worker_killed_by_a_signal_names_it(project: Project) -> None:
    project.write(BASIC.replace("c: {use: fake-copy, with: {tag: C}}", "c: {use: fake-fail, with: {how: segv}}"))
    r = project.edgebuild_process("run", "recipe.yaml", "--jobs", "1")
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


@pytest.mark.slow
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


def _started(project: Project, step: str, proc: subprocess.Popen[str]) -> None:
    """Wait until `step` has begun to run (fakesteps notes it in the runs log)."""
    deadline = time.monotonic() + 120
    while not (project.runs.exists() and step in project.runs.read_text().split()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["built", "all cached", "failed", "worker killed", "interrupted"])
def test_a_build_leaves_the_temp_folder_as_it_found_it(project: Project, tmp_path_factory: pytest.TempPathFactory,
                                                       how: str) -> None:
    """The fork server's socket lives in a pymp-* folder in $TMPDIR that multiprocessing removes only when
    the interpreter tears down, which `edgebuild` skips: it is removed on every way out of a build."""
    a = {"built": "a: {use: fake-copy, with: {tag: A}}", "all cached": "a: {use: fake-copy, with: {tag: A}}",
         "failed": "a: {use: fake-fail, with: {how: user}}",
         "worker killed": "a: {use: fake-fail, with: {how: segv}}",
         "interrupted": "a: {use: fake-copy, with: {tag: A, sleep: 30}}"}[how]
    project.write(BASIC.replace("a: {use: fake-copy, with: {tag: A}}", a))
    tmp = tmp_path_factory.mktemp("tmpdir")
    env = project.env({"TMPDIR": str(tmp)})
    if how == "interrupted":   # Ctrl-C: SIGINT to edgebuild, its fork server and its workers
        proc = subprocess.Popen([sys.executable, "-m", "edgebuild", "run", "recipe.yaml"], cwd=project.root, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        _started(project, "a", proc)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130 and "interrupted" in err, err
    else:
        if how == "all cached":   # planned for another --out, nothing to run: edgebuild exits while the fork
            assert project.edgebuild("run", "recipe.yaml", "--out", "first").code == 0   # server still loads
        r = project.edgebuild_process("run", "recipe.yaml", env={"TMPDIR": str(tmp)})
        assert r.code == (0 if how in ("built", "all cached") else 1), r.err
        assert "Traceback" not in r.err and (how != "all cached" or "5 cached" in r.out), r.out + r.err
    # onnxruntime's library keeps an id in $TMPDIR/.ses, made on its first import and reused ever after
    assert sorted(p.name for p in tmp.iterdir() if p.name != ".ses") == []


def test_in_process_steps_log_to_their_log_file_not_to_edgebuilds_output(project: Project) -> None:
    project.write(BASIC.replace("c: {use: fake-copy, with: {tag: C}}", "c: {use: fake-fail, with: {how: crash}}"))
    r = project.edgebuild("run", "recipe.yaml", "--keep-going")
    assert r.code == 1
    assert "some output before failing" in r.err and "RuntimeError: boom" in r.err   # c's captured log, shown
    assert "copied" not in r.out + r.err                                             # a's log record stays in a's log
    logs = [e.parent / "log.txt" for e in (project.root / ".edgebuild" / "cache" / "objects").rglob("entry.json")
            if json.loads(e.read_text())["node"] == "a"]
    assert len(logs) == 1 and logs[0].read_text().startswith("INFO copied "), [p.read_text() for p in logs]


def test_the_runner_is_chosen_by_environment(project: Project) -> None:
    project.write(BASIC)
    r = project.edgebuild("run", "recipe.yaml", env={"EDGEBUILD_RUNNER": "threads"})
    assert r.code == 1 and "error: EDGEBUILD_RUNNER=threads: there is no such runner" in r.err, r.err
    assert "hint: use forkserver or inprocess" in r.err and project.ran() == []


@pytest.mark.slow
def test_both_runners_build_the_same(project: Project) -> None:
    project.write(BASIC)
    assert project.edgebuild("run", "recipe.yaml", "--out", "here").code == 0
    r = project.edgebuild_process("run", "recipe.yaml", "--out", "there", "--cache", "other")
    assert r.code == 0, r.err
    assert (project.root / "here" / "tiny" / "manifest.json").read_text() == \
        (project.root / "there" / "tiny" / "manifest.json").read_text()


def test_in_process_jobs_forget_what_they_imported_from_folders_they_added(tmp_path: Path) -> None:
    """A PyTorch factory's folder goes on sys.path and its modules into sys.modules: in a worker process that
    ends with the step; in-process, both are put back, so the next build imports the files as they are then."""
    from edgebuild.engine import runners

    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "layers_for_this_test.py").write_text("W = 1\n")
    path = list(sys.path)
    with runners._imports_forgotten():
        sys.path.insert(0, str(tmp_path / "user"))
        import colorsys  # noqa: F401   (the standard library's, from a folder already on sys.path)

        import layers_for_this_test  # noqa: F401
    assert sys.path == path and "layers_for_this_test" not in sys.modules and "colorsys" in sys.modules


def test_tool_versions_come_from_installed_metadata_without_importlib_metadata(tmp_path: Path, monkeypatch) -> None:
    import importlib.metadata

    from edgebuild.engine import dists

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
