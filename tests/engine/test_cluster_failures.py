"""Machines that die mid-build on Dask: a worker killed mid-step, the scheduler killed, a step that kills every
worker it runs on. Each test starts its own cluster (clusterkit.py) and stops it, also when it fails."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import s3kit
from clusterkit import CLIENT_S, Cluster, client_env, no_traceback, recipe, started
from enginekit import Project

pytestmark = pytest.mark.slow

def test_a_worker_killed_mid_step_is_replaced_by_another(project: Project, tmp_path: Path) -> None:
    project.write(recipe(sleep=6))
    c = Cluster(tmp_path / "c", ("w1",), ("w2",))
    try:
        bucket = s3kit.make_bucket(c.s3.endpoint)
        client = subprocess.Popen([sys.executable, "-m", "edgebuild", "run", "recipe.yaml", "--executor", c.executor,
                                   "--remote", f"s3://{bucket}/cache"], cwd=project.root, env=client_env(project, c),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            first = started(c, "b", client)
            assert first, "step b never started"
            c.workers[first[0]].kill()   # the machine dies, its step with it
            out, err = client.communicate(timeout=CLIENT_S)
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()
        assert client.returncode == 0, err
        assert "Traceback" not in err
        runs = [tuple(x.split()) for x in (c.folder / "runs.log").read_text().splitlines()]
        b_runs = [w for s, w in runs if s == "b"]
        assert b_runs[0] == first[0] and b_runs[-1] != first[0] and len(b_runs) == 2
        assert (project.root / "dist" / "tiny" / "test-cpu" / "b.onnx").is_file()
    finally:
        c.stop()


def test_the_scheduler_killed_mid_build_is_exit_1_and_finished_work_is_kept(project: Project, tmp_path: Path) -> None:
    project.write(recipe(sleep=30))
    c = Cluster(tmp_path / "c", ("w1",))
    try:
        bucket = s3kit.make_bucket(c.s3.endpoint)
        client = subprocess.Popen([sys.executable, "-m", "edgebuild", "run", "recipe.yaml", "--executor", c.executor,
                                   "--remote", f"s3://{bucket}/cache", "--cache", "laptop/cache"], cwd=project.root,
                                  env=client_env(project, c), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            started(c, "b", client)
            c.scheduler.kill()
            out, err = client.communicate(timeout=CLIENT_S)
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()
        assert client.returncode == 1, err
        assert "Traceback" not in err and "internal error" not in err, err
        assert f"the Dask scheduler at {c.scheduler.address} went away" in err
        objects = s3kit.objects(c.s3.endpoint, bucket)
        committed = {k.split("/")[3] for k in objects if k.endswith("/entry.json")}
        assert len(committed) >= 1   # step a, finished before the scheduler went, is on the remote
        local = list((project.root / "laptop" / "cache" / "objects").glob("*/*/entry.json"))
        assert {e.parent.name for e in local} <= committed and local
    finally:
        c.stop()


def test_a_step_that_kills_every_worker_it_runs_on_fails_after_three(project: Project, tmp_path: Path) -> None:
    """A step that ends its worker's process (in-process runner: the Dask worker's own) is tried again on a
    restarted worker, and fails the build with the reason after Dask's third loss; never a hang or a traceback."""
    project.write("""
        edgebuild: 1
        name: tiny
        model:
          onnx: tiny.onnx
        targets: [cpu.yaml]
        steps:
          a: {use: fake-fail, with: {how: die}}
        ship:
          test-cpu: [a]
    """)
    c = Cluster(tmp_path / "c", ("w1",))
    try:
        bucket = s3kit.make_bucket(c.s3.endpoint)
        r = subprocess.run([sys.executable, "-m", "edgebuild", "run", "recipe.yaml", "--executor", c.executor,
                            "--remote", f"s3://{bucket}/cache"], cwd=project.root, env=client_env(project, c),
                           capture_output=True, text=True, timeout=CLIENT_S)
    finally:
        c.stop()
    assert r.returncode == 1, r.stderr
    no_traceback(r)
    assert "step 'a' (fake-fail) failed: its worker died 3 times while running it (the last: w1 at tcp://127.0.0.1:" in r.stderr, r.stderr


