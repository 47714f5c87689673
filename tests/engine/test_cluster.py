"""Builds across machines on Dask on a cluster the module shares (clusterkit.py): where steps run, what is deferred,
a client that goes away; the tests whose machines die start their own (test_cluster_failures.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import s3kit
from clusterkit import CLIENT_S, XAVIER, Cluster, client_env, dist, no_traceback, ran, recipe, run, started
from enginekit import Project

pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Two workers with the default step runner (the fork server): one plain, one advertising the GPU that the
    `fake-gpu` step needs for test-gpu and being the test-gpu device."""
    c = Cluster(tmp_path_factory.mktemp("cluster"), ("plain",), ("gpu", "--resources", "cuda-sm87=1,device-test-gpu=1"),
                runner="forkserver")
    yield c
    c.stop()




def test_a_gpu_step_runs_only_on_the_worker_that_has_the_gpu(project: Project, shared: Cluster) -> None:
    project.write(recipe())
    bucket = s3kit.make_bucket(shared.s3.endpoint)
    ran(shared)
    r = run(project, shared, bucket)
    assert r.returncode == 0, r.stderr
    no_traceback(r)
    steps = ran(shared)
    assert ("g", "gpu") in steps and [s for s in steps if s[0] == "g"] == [("g", "gpu")]
    assert sorted(s for s, _ in steps) == ["a", "b", "g"]   # b serves both targets: one build
    assert f"dask: 2 worker(s) at {shared.scheduler.address}" in r.stderr
    assert "g@test-gpu  [fake-gpu]" in r.stderr and "on " in r.stderr and "(gpu)" in r.stderr
    manifest = json.loads((project.root / "laptop" / "dist" / "tiny" / "manifest.json").read_text())
    assert manifest["steps"]["g@test-gpu"]["facts"]["built_on"]   # the host that built it
    assert "deferred" not in manifest["targets"]["test-gpu"]
    log = json.loads((project.root / "laptop" / "dist" / "tiny" / "build-log.json").read_text())
    assert log["nodes"]["g@test-gpu"]["worker"].endswith("(gpu)")
    # another machine without the executor, sharing the remote: nothing runs, the same bytes (but the GPU step,
    # which a host without the GPU defers as before)
    r2 = subprocess.run([sys.executable, "-m", "edgebuild", "run", "recipe.yaml", "--remote", f"s3://{bucket}/cache",
                         "--cache", "ci/cache", "--out", "ci/dist"], cwd=project.root, env=client_env(project, shared),
                        capture_output=True, text=True, timeout=CLIENT_S)
    assert r2.returncode == 0, r2.stderr
    assert ran(shared) == []
    laptop = dist(project, "laptop")
    assert "test-gpu/g.onnx" in laptop
    assert dist(project, "ci") == {k: v for k, v in laptop.items() if k != "test-gpu/g.onnx"}
    assert "2 downloaded" in r2.stdout


def test_a_step_no_worker_can_take_is_deferred_with_the_worker_command(project: Project, shared: Cluster) -> None:
    (project.root / "xavier.yaml").write_text(XAVIER)
    project.write(recipe(xavier=True))
    bucket = s3kit.make_bucket(shared.s3.endpoint)
    ran(shared)
    r = run(project, shared, bucket)
    assert r.returncode == 0, r.stderr
    no_traceback(r)
    manifest = json.loads((project.root / "laptop" / "dist" / "tiny" / "manifest.json").read_text())
    assert [a["path"] for a in manifest["targets"]["test-gpu"]["artifacts"]] == ["test-gpu/b.onnx", "test-gpu/g.onnx"]
    [deferred] = manifest["targets"]["test-xavier"]["deferred"]
    assert deferred["step"] == "g" and "cuda-sm72" in deferred["reason"]
    assert ("warning: test-xavier: g (onnx) was not built here: needs cuda-sm72: none of the 2 worker(s) connected "
            f"to {shared.scheduler.address} offers cuda-sm72; on a host that has it, run "
            f"`edgebuild worker {shared.scheduler.address} --resources cuda-sm72=1`") in r.stderr
    strict = run(project, shared, bucket, "--strict")
    assert strict.returncode == 1 and "cuda-sm72" in strict.stderr


def test_a_latency_measured_on_the_device_runs_on_the_devices_worker(project: Project, shared: Cluster) -> None:
    project.write("""
        edgebuild: 1
        name: tiny
        model:
          onnx: tiny.onnx
        targets: [cpu.yaml, gpu.yaml]
        steps:
          a: {use: fake-where}
        ship:
          test-cpu: [a]
          test-gpu: [a]
        checks:
          latency: {where: device, runs: 10, warmup: 1}
    """)
    bucket = s3kit.make_bucket(shared.s3.endpoint)
    r = run(project, shared, bucket)
    assert r.returncode == 0, r.stderr
    no_traceback(r)
    log = json.loads((project.root / "laptop" / "dist" / "tiny" / "build-log.json").read_text())
    assert log["nodes"]["check:a@test-gpu"].get("worker", "").endswith("(gpu)"), (log, r.stderr)
    assert "worker" not in log["nodes"]["check:a@test-cpu"]   # no test-cpu device: measured here, and said so
    assert "warning: check:a@test-cpu: checks.latency.where is device, but test-cpu is measured on this host" in r.stderr
    assert "recipe.yaml:12:" in r.stderr   # located at checks.latency.where
    manifest = json.loads((project.root / "laptop" / "dist" / "tiny" / "manifest.json").read_text())
    [gpu_art] = manifest["targets"]["test-gpu"]["artifacts"]
    [cpu_art] = manifest["targets"]["test-cpu"]["artifacts"]
    assert gpu_art["checks"]["measured_on"] and "measured_on" not in cpu_art["checks"]   # which host timed it


def test_vitals_built_on_the_cluster_publishes_the_bytes_of_a_local_build(tmp_path: Path, shared: Cluster,
                                                                         tmp_path_factory: pytest.TempPathFactory) -> None:
    from examplekit import seed_cache, vitals_copy

    recipe_path = vitals_copy(tmp_path)
    env = dict(os.environ, EDGEBUILD_HOST_GPU="none", EDGEBUILD_HOST_TENSORRT="none")
    env.pop("EDGEBUILD_CACHE", None)

    def build(machine: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "edgebuild", "run", str(recipe_path), "--cache", f"{machine}/cache",
                               "--out", f"{machine}/dist", *extra], cwd=tmp_path, env=dict(env, **s3kit.aws_env(
                                   shared.s3.endpoint)), capture_output=True, text=True, timeout=CLIENT_S * 2)

    seed_cache(tmp_path_factory, tmp_path / "local" / "cache")   # the local build: the test run's cold build's steps
    local = build("local")
    assert local.returncode == 0, local.stderr
    bucket = s3kit.make_bucket(shared.s3.endpoint)
    r = build("laptop", "--executor", shared.executor, "--remote", f"s3://{bucket}/cache")
    assert r.returncode == 0, r.stderr
    no_traceback(r)
    assert " on " in r.stderr and ("(plain)" in r.stderr or "(gpu)" in r.stderr)   # steps built by the workers

    def files(machine: str) -> dict[str, bytes]:
        root = tmp_path / machine / "dist" / "vitals"
        return {f.relative_to(root).as_posix(): f.read_bytes() for f in sorted(root.rglob("*")) if f.is_file()
                and f.name not in ("build-log.json", "manifest.json", "provenance.json", "report.html")}

    here, there = files("local"), files("laptop")
    assert here.keys() == there.keys() and len(here) > 5
    assert [k for k in here if here[k] != there[k]] == []
    m = json.loads((tmp_path / "laptop" / "dist" / "vitals" / "manifest.json").read_text())
    built_on = {nid: s["facts"].get("built_on") for nid, s in m["steps"].items()}
    assert all(built_on.values()), built_on


def test_a_client_killed_mid_build_leaves_what_the_workers_finished(project: Project, shared: Cluster) -> None:
    project.write(recipe(sleep=4).replace("tag: A", "tag: killed"))
    bucket = s3kit.make_bucket(shared.s3.endpoint)
    ran(shared)
    argv = [sys.executable, "-m", "edgebuild", "run", "recipe.yaml", "--executor", shared.executor, "--remote",
            f"s3://{bucket}/cache", "--cache", "laptop/cache", "--out", "laptop/dist"]
    client = subprocess.Popen(argv, cwd=project.root, env=client_env(project, shared, TMPDIR=str(project.root)),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        started(shared, "b", client)
        client.kill()   # Ctrl-C would be polite; a laptop closing its lid is not
    finally:
        client.kill()
        client.wait()
    assert [s for s, _ in ran(shared)] in (["a", "b"], ["a", "b", "g"])
    time.sleep(5)   # b, already running on its worker, finishes and is uploaded without its client
    r = run(project, shared, bucket)
    assert r.returncode == 0, r.stderr
    assert "a" not in [s for s, _ in ran(shared)]   # taken from the remote, not built again


@pytest.mark.skipif(not os.environ.get("EDGEBUILD_TEST_JETSON_SCHEDULER"),
                    reason="needs a Dask scheduler with an `edgebuild worker` on a Jetson Orin Nano (JetPack 6.1): set "
                           "EDGEBUILD_TEST_JETSON_SCHEDULER=dask://HOST:8786 and EDGEBUILD_TEST_REMOTE=s3://...")
def test_a_jetson_worker_builds_the_vitals_engine(tmp_path: Path) -> None:
    """On a network with a Jetson: the engine is built there, nothing is deferred (see the README's commands)."""
    from examplekit import vitals_copy

    recipe_path = vitals_copy(tmp_path)
    r = subprocess.run([sys.executable, "-m", "edgebuild", "run", str(recipe_path), "--executor",
                        os.environ["EDGEBUILD_TEST_JETSON_SCHEDULER"], "--remote", os.environ["EDGEBUILD_TEST_REMOTE"],
                        "--strict"], cwd=tmp_path, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "dist" / "vitals" / "manifest.json").read_text())
    engine = m["steps"]["engine@jetson-orin-nano"]
    assert engine["facts"]["compute_capability"] == "8.7" and engine["facts"]["built_on"]


def test_wait_gives_a_worker_time_to_join(project: Project, shared: Cluster) -> None:
    (project.root / "xavier.yaml").write_text(XAVIER)
    project.write(recipe(xavier=True).replace("tag: A", "tag: waited"))
    bucket = s3kit.make_bucket(shared.s3.endpoint)
    ran(shared)
    argv = [sys.executable, "-m", "edgebuild", "run", "recipe.yaml", "--executor", shared.executor, "--remote",
            f"s3://{bucket}/cache", "--wait", "120"]
    client = subprocess.Popen(argv, cwd=project.root, env=client_env(project, shared), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        shared.add("xavier", "--resources", "cuda-sm72=1")   # joins while the client waits
        out, err = client.communicate(timeout=CLIENT_S)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    assert client.returncode == 0, err
    assert ("g", "xavier") in ran(shared)
    manifest = json.loads((project.root / "dist" / "tiny" / "manifest.json").read_text())
    assert "deferred" not in manifest["targets"]["test-xavier"]
