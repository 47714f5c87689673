"""`run --executor` and `edgebuild worker` without a cluster: what each host advertises, routing decisions against
the workers a scheduler reports, and every bad input as a one-line error with a hint (exit 1, no traceback)."""

from __future__ import annotations

import time

import pytest
import s3kit
from enginekit import BASIC, Project

from edgebuild.engine import cluster
from edgebuild.errors import UserError

GPU_RECIPE = """
    edgebuild: 1
    name: tiny
    model:
      onnx: tiny.onnx
    targets: [cpu.yaml, gpu.yaml]
    steps:
      a: {use: fake-where, with: {tag: A}}
      g: {use: fake-gpu, from: a}
    ship:
      test-cpu: [a]
      test-gpu: [a, g]
"""
CLUSTER_STEPS = {"EDGEBUILD_STEP_MODULES": "fakesteps,clustersteps"}


def one_error(r) -> str:
    """The error line; the run exited 1 without a traceback."""
    assert r.code == 1, (r.out, r.err)
    assert "Traceback" not in r.err and "internal error" not in r.err, r.err
    [line] = [x for x in r.err.splitlines() if x.startswith("error:")]
    assert "\n  hint: " in r.err
    return line


@pytest.mark.parametrize("executor, message", [
    ("127.0.0.1:8786", "it has no scheme: write dask://HOST:PORT"),
    ("spark://h:7077", "spark:// is not an executor edgebuild knows (dask:// is)"),
    ("dask://", "it names no host"),
    ("dask://h:port", "'port' is not a port number"),
    ("dask://h:99999", "'99999' is not a port number"),
    ("dask://h:8786/x", "a scheduler address has no path"),
])
def test_a_malformed_executor_is_a_user_error(project: Project, executor: str, message: str) -> None:
    project.write(BASIC)
    line = one_error(project.edgebuild("run", "recipe.yaml", "--executor", executor, "--remote", "shared"))
    assert line == f"error: --executor {executor!r} is malformed: {message}"


def test_a_malformed_executor_from_the_environment_is_the_same_error(project: Project) -> None:
    project.write(BASIC)
    r = project.edgebuild("run", "recipe.yaml", "--remote", "shared", env={"EDGEBUILD_EXECUTOR": "dask:/h"})
    assert "is malformed: it has no scheme" in one_error(r)


def test_the_executor_needs_a_remote_cache(project: Project) -> None:
    project.write(BASIC)
    r = project.edgebuild("run", "recipe.yaml", "--executor", "dask://127.0.0.1:1", env={"EDGEBUILD_REMOTE": None})
    assert one_error(r).startswith("error: --executor dask://127.0.0.1:1 needs a remote cache that every worker can reach")
    assert "hint: add --remote s3://bucket/prefix" in r.err
    assert project.ran() == [] and not (project.root / "dist").exists()
    r = project.edgebuild("run", "recipe.yaml", "--executor", "dask://h", "--remote", "shared", "--remote-read-only")
    assert "cannot be used with --remote-read-only" in one_error(r)


def test_an_empty_executor_builds_here(project: Project) -> None:
    project.write(BASIC)
    r = project.edgebuild("run", "recipe.yaml", env={"EDGEBUILD_EXECUTOR": ""})
    assert r.code == 0, r.err
    assert project.ran() == ["a", "b", "c", "p", "p"]


def test_an_unreachable_scheduler_is_exit_1_within_the_timeout(project: Project) -> None:
    project.write(BASIC)
    port = s3kit.free_port()   # nothing listens there
    t0 = time.monotonic()
    r = project.edgebuild("run", "recipe.yaml", "--executor", f"dask://127.0.0.1:{port}", "--executor-timeout", "2",
                          "--remote", str(project.root / "shared"))
    assert time.monotonic() - t0 < 60   # a bound for a hung build, not a timing assert: the timeout is 2 s
    assert one_error(r).startswith(f"error: cannot reach the Dask scheduler at tcp://127.0.0.1:{port}")
    assert "hint: start one with `dask scheduler`" in r.err
    assert project.ran() == []


def test_a_build_with_deferred_artifacts_is_no_no_op_for_a_cluster(project: Project) -> None:
    """Built here first, the GPU step deferred; then with --executor, which may have a GPU worker: the build runs
    (here it reaches for the scheduler), it does not say "up to date"."""
    project.write(GPU_RECIPE)
    remote = str(project.root / "shared")
    r = project.edgebuild("run", "recipe.yaml", "--remote", remote, env=CLUSTER_STEPS)
    assert r.code == 0 and "g (onnx) was not built here" in r.err
    assert "up to date" in project.edgebuild("run", "recipe.yaml", "--remote", remote, env=CLUSTER_STEPS).out
    port = s3kit.free_port()
    r = project.edgebuild("run", "recipe.yaml", "--remote", remote, "--executor", f"dask://127.0.0.1:{port}",
                          "--executor-timeout", "1", env=CLUSTER_STEPS)
    assert "cannot reach the Dask scheduler" in one_error(r)


@pytest.mark.parametrize("resources, message", [
    ("cuda-sm87", "'cuda-sm87' has no '=N' (a count)"),
    ("=1", "'=1' has no name before '='"),
    ("gpu=many", "'many' in 'gpu=many' is not a count"),
    ("gpu=-1", "'-1' in 'gpu=-1' is not a count"),
    ("cuda sm87=1", "'cuda' has no '=N' (a count)"),
    ("b@d=1", "'b@d' is not a resource name"),
    (",", "it is empty"),
])
def test_bad_worker_resources_are_user_errors(project: Project, resources: str, message: str) -> None:
    r = project.edgebuild("worker", "tcp://127.0.0.1:8786", "--resources", resources, "--print")
    assert one_error(r).startswith(f"error: --resources {resources!r}: {message}")
    assert "hint: --resources takes NAME=N pairs" in r.err


@pytest.mark.parametrize("address, message", [
    ("udp://h:1", "udp:// is not supported"),
    ("tcp://h:x", "is malformed: 'x' is not a port number"),
])
def test_a_bad_scheduler_address_is_a_user_error(project: Project, address: str, message: str) -> None:
    assert message in one_error(project.edgebuild("worker", address, "--print"))


def test_bad_worker_and_wait_numbers_are_usage_errors(project: Project) -> None:
    r = project.edgebuild("worker", "tcp://h:1", "--nthreads", "0")
    assert r.code == 1 and "is not a number of threads" in r.err and "Traceback" not in r.err
    project.write(BASIC)
    r = project.edgebuild("run", "recipe.yaml", "--wait", "soon")
    assert r.code == 1 and "'soon' is not a number of seconds" in r.err


def test_a_worker_advertises_what_routing_detects(project: Project) -> None:
    r = project.edgebuild("worker", "tcp://laptop:8786", "--print",
                          env={"EDGEBUILD_HOST_GPU": "8.7", "EDGEBUILD_HOST_TENSORRT": "10.3",
                               "EDGEBUILD_HOST_MODEL": "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super"})
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert {"cuda-sm87=1", "tensorrt-10.3=1", "device-jetson-orin-nano=1"} <= set(lines)
    assert any(x.startswith("arch-") for x in lines)
    assert "distributed.cli.dask_worker tcp://laptop:8786" in lines[-1] and "--preload edgebuild.engine.cluster_task" in lines[-1]


def test_worker_resources_add_to_and_override_what_is_detected(project: Project) -> None:
    r = project.edgebuild("worker", "laptop", "--print", "--resources", "cuda-sm87=2,device-raspberry-pi-5=1",
                          env={"EDGEBUILD_HOST_GPU": "8.7", "EDGEBUILD_HOST_MODEL": "none"})
    assert r.code == 0, r.err
    assert "cuda-sm87=2" in r.out.splitlines() and "device-raspberry-pi-5=1" in r.out.splitlines()
    assert "tcp://laptop:8786" in r.out
    r = project.edgebuild("worker", "laptop", "--print", "--resources", "cuda-sm87=0", env={"EDGEBUILD_HOST_GPU": "8.7"})
    assert "cuda-sm87" not in r.out


@pytest.mark.parametrize("model, profile", [
    ("Raspberry Pi 5 Model B Rev 1.0", "raspberry-pi-5"),
    ("Raspberry Pi 4 Model B Rev 1.4", "raspberry-pi-4"),
    ("NVIDIA Jetson Orin Nano Developer Kit", "jetson-orin-nano"),
    ("NVIDIA Jetson Nano Developer Kit", "jetson-nano"),
    ("NVIDIA Jetson AGX Orin Developer Kit", "jetson-agx-orin"),
    ("QEMU Virtual Machine", None),
])
def test_a_board_is_named_by_the_profile_its_model_string_spells(model: str, profile: str | None) -> None:
    assert cluster.device_profile(model) == profile


def test_routing_defers_what_no_connected_worker_offers(project: Project) -> None:
    """The plan as `run --executor` routes it, against the workers a scheduler would report."""
    from edgebuild.commands._common import load_plan

    project.write(GPU_RECIPE)
    import os

    old = dict(os.environ)
    os.environ.update(CLUSTER_STEPS, EDGEBUILD_HOST_GPU="none")
    try:
        from edgebuild import steps
        from edgebuild.engine import hostinfo

        steps._discover.cache_clear()
        hostinfo.gpu.cache_clear()
        plan, _ = load_plan(project.root / "recipe.yaml", project.root / "cache", None)
        assert plan.nodes["g@test-gpu"].deferred   # this host has no GPU
        address = "tcp://sched:8786"
        plain = {"w1": {"resources": {"arch-x86_64": 1.0}, "host": "a", "name": "w1"}}
        assert cluster._mark(plan, plain, address) == 1
        why = plan.nodes["g@test-gpu"].deferred
        assert why == ("needs cuda-sm87: none of the 1 worker(s) connected to tcp://sched:8786 offers cuda-sm87; "
                       "on a host that has it, run `edgebuild worker tcp://sched:8786 --resources cuda-sm87=1`")
        gpu = dict(plain, w2={"resources": {"cuda-sm87": 1.0}, "host": "b", "name": "w2"})
        assert cluster._mark(plan, gpu, address) == 0
        assert plan.nodes["g@test-gpu"].deferred is None and plan.nodes["g@test-gpu"].status == "run"
    finally:
        os.environ.clear()
        os.environ.update(old)
        steps._discover.cache_clear()
        hostinfo.gpu.cache_clear()


def test_a_tensorrt_node_asks_for_its_targets_gpu_and_tensorrt() -> None:
    from pathlib import Path

    from edgebuild.frontend import targets
    from edgebuild.steps.tensorrt import TensorRT

    t = targets.load("jetson-orin-nano", Path.cwd())
    assert TensorRT.resources(TensorRT.fill_defaults({}), t) == {"cuda-sm87": 1.0, "tensorrt-10.3": 1.0}


def test_parse_helpers_take_the_forms_users_write() -> None:
    assert cluster.parse_executor("dask://10.0.0.5") == "tcp://10.0.0.5:8786"
    assert cluster.parse_executor("dask://laptop.local:9000/") == "tcp://laptop.local:9000"
    assert cluster.parse_executor("local") is None
    assert cluster.parse_scheduler("10.0.0.5:8786") == "tcp://10.0.0.5:8786"
    assert cluster.parse_resources("a=1 b=2,c=0.5") == {"a": 1.0, "b": 2.0, "c": 0.5}
    with pytest.raises(UserError):
        cluster.parse_resources("")


def test_a_worker_refuses_a_node_keyed_with_other_code_or_tools(tmp_path) -> None:
    """What `cluster_task` checks before building: the client's key material against this worker's code."""
    from edgebuild.engine import cluster_task, plan
    from edgebuild.engine.cache import Cache
    from edgebuild.steps.fp16 import KIND

    cache = Cache(tmp_path / "cache")
    job = {"source": {"onnx": "/x/model.onnx"}, "kind_ref": None}
    here = plan.code_digest([plan.PACKAGE / "steps" / "fp16.py"], KIND.code_files, cache.stats)
    spec = {"use": "fp16", "input_key": "k" * 64, "job": job,
            "material": {"code": here, "tools": {"onnx": plan.tool_version("onnx"), "tensorrt": "not installed"}}}
    assert cluster_task._other_code(spec, cache) is None
    spec["material"]["tools"]["onnx"] = "0.0.1"
    assert cluster_task._other_code(spec, cache) == f"onnx {plan.tool_version('onnx')} here, 0.0.1 on the client"
    spec["material"] = {"code": "0" * 64, "tools": {}}
    assert cluster_task._other_code(spec, cache).startswith("the code of step kind fp16 differs")


def test_the_dask_benchmarks_recipe_plans_49_nodes(project: Project) -> None:
    """benchmarks/dask_overhead.py's synthetic recipe stays a valid recipe (its timing is the benchmark's business)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "dask_overhead.py"
    spec = importlib.util.spec_from_file_location("dask_benchmark", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    recipe_path = bench.write_recipe(project.root, "t")
    r = project.edgebuild("plan", recipe_path.name, "--format", "json", env=CLUSTER_STEPS)
    assert r.code == 0, r.err
    import json

    assert len(json.loads(r.out)["nodes"]) == 49


def test_worker_print_needs_no_scheduler_and_a_worker_does(project: Project) -> None:
    """`edgebuild worker --print` shows what this host would advertise before there is a scheduler to join."""
    r = project.edgebuild("worker", "--print", "--resources", "device-raspberry-pi-5=1")
    assert r.code == 0, r.err
    assert "device-raspberry-pi-5=1" in r.out.splitlines() and "tcp://SCHEDULER:8786" in r.out
    assert "needs the scheduler's address" in one_error(project.edgebuild("worker"))
