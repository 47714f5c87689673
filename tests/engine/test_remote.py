"""The shared remote cache, with real stores: a folder, and S3 through s3fs against moto's S3 server on
127.0.0.1. Two "machines" are two local caches and output folders sharing one remote."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import s3kit
from enginekit import BASIC, Project

MACHINES = ("m1", "m2", "m3")


def build(p: Project, machine: str, remote: str, *extra: str, env: dict[str, str | None] | None = None,
          recipe: str = "recipe.yaml"):
    """`edgebuild run` as one machine: its own cache and output folder."""
    return p.edgebuild("run", recipe, "--cache", f"{machine}/cache", "--out", f"{machine}/dist", "--remote", remote,
                       *extra, env=env)


def dist(p: Project, machine: str) -> dict[str, bytes]:
    root = p.root / machine / "dist" / "tiny"
    return {f.relative_to(root).as_posix(): f.read_bytes() for f in sorted(root.rglob("*"))
            if f.is_file() and f.name != "build-log.json"}


def keys(p: Project, machine: str) -> dict[str, str]:
    m = json.loads((p.root / machine / "dist" / "tiny" / "manifest.json").read_text())
    return {nid: s["key"] for nid, s in m["steps"].items()}


def warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("warning:")]


def no_traceback(r) -> None:
    assert "Traceback" not in r.err and "internal error" not in r.err, r.err


@pytest.fixture(scope="module")
def s3() -> Iterator[s3kit.ThreadedServer]:
    server = s3kit.ThreadedServer()
    yield server
    server.stop()


# a folder remote ----------------------------------------------------------------------------------------

def test_a_second_machine_runs_no_step_and_publishes_the_same_bytes(project: Project) -> None:
    project.write(BASIC)
    remote = str(project.root / "shared")
    r = build(project, "m1", remote)
    assert r.code == 0, r.err
    assert project.ran() == ["a", "b", "c", "p", "p"]
    assert "remote: 0 downloaded (0.0 MB), 5 uploaded (0.0 MB)" in r.out
    r = build(project, "m2", remote)
    assert r.code == 0, r.err
    assert project.ran() == []
    assert "remote: 5 downloaded (0.0 MB), 0 uploaded (0.0 MB)" in r.out and warnings(r.err) == []
    assert dist(project, "m2") == dist(project, "m1")
    log = json.loads((project.root / "m2" / "dist" / "tiny" / "build-log.json").read_text())
    assert {n["status"] for n in log["nodes"].values()} == {"cached"}


def test_every_entry_on_the_remote_is_committed_by_its_entry_json(project: Project) -> None:
    project.write(BASIC)
    remote = project.root / "shared"
    assert build(project, "m1", str(remote)).code == 0
    for key in keys(project, "m1").values():
        entry = remote / "objects" / key[:2] / key
        meta = json.loads((entry / "entry.json").read_text())
        assert meta["key"] == key and set(meta["files"]) == {"model.onnx"}
        local = project.root / "m1" / "cache" / "objects" / key[:2] / key
        assert (entry / "entry.json").read_bytes() == (local / "entry.json").read_bytes()
        assert (entry / "model.onnx").read_bytes() == (local / "model.onnx").read_bytes()
    assert not list((remote / "claims").glob("*")), "claims are released after each upload"


@pytest.mark.parametrize("damage", ["truncated", "flipped"])
def test_a_damaged_remote_object_is_rebuilt_never_published(project: Project, damage: str) -> None:
    project.write(BASIC)
    remote = project.root / "shared"
    assert build(project, "m1", str(remote)).code == 0
    project.ran()
    key = keys(project, "m1")["b"]
    model = remote / "objects" / key[:2] / key / "model.onnx"
    data = model.read_bytes()
    model.write_bytes(data[: len(data) // 2] if damage == "truncated" else data[:-1] + bytes([data[-1] ^ 0xFF]))
    r = build(project, "m2", str(remote))
    assert r.code == 0, r.err
    assert project.ran() == ["b"]
    [w] = warnings(r.err)
    assert f"remote cache entry {key}: model.onnx" in w and "ignored" in w
    assert dist(project, "m2") == dist(project, "m1")   # the rebuilt model, not the damaged one
    assert model.read_bytes() != data, "the remote entry is left as it is: an existing entry is never overwritten"
    assert "4 downloaded" in r.out and "1 already there" in r.out and "1 rejected" in r.out


def test_an_entry_json_that_lies_about_its_files_is_rejected(project: Project) -> None:
    project.write(BASIC)
    remote = project.root / "shared"
    assert build(project, "m1", str(remote)).code == 0
    project.ran()
    key = keys(project, "m1")["c"]
    entry = remote / "objects" / key[:2] / key / "entry.json"
    meta = json.loads(entry.read_text())
    meta["files"]["../../../escaped.onnx"] = meta["files"].pop("model.onnx")
    entry.write_text(json.dumps(meta))
    r = build(project, "m2", str(remote))
    assert r.code == 0 and project.ran() == ["c"]
    assert "names a file outside the entry" in warnings(r.err)[0]
    assert not list(project.root.rglob("escaped.onnx"))


def test_an_entry_without_entry_json_is_invisible_then_completed(project: Project) -> None:
    """A writer killed mid-upload: its files are there, its commit marker is not, its claim went stale."""
    project.write(BASIC)
    remote = project.root / "shared"
    assert build(project, "m1", str(remote)).code == 0
    project.ran()
    key = keys(project, "m1")["c"]
    entry = remote / "objects" / key[:2] / key
    (entry / "entry.json").unlink()
    (entry / "model.onnx").write_bytes(b"half a mod")
    (remote / "claims").mkdir(exist_ok=True)
    (remote / "claims" / f"{key}.json").write_text(json.dumps({"by": "killed:1", "at": time.time() - 3600}))
    r = build(project, "m2", str(remote))
    assert r.code == 0 and warnings(r.err) == []
    assert project.ran() == ["c"]
    assert "1 uploaded" in r.out
    assert json.loads((entry / "entry.json").read_text())["key"] == key
    r = build(project, "m3", str(remote))
    assert r.code == 0 and project.ran() == [] and warnings(r.err) == []
    assert dist(project, "m3") == dist(project, "m1")


def test_a_fresh_claim_means_another_writer_is_uploading(project: Project) -> None:
    project.write(BASIC)
    remote = project.root / "shared"
    plan = json.loads(project.edgebuild("plan", "recipe.yaml", "--format", "json").out)
    key_of_c = next(n["key"] for n in plan["nodes"] if n["node"] == "c")
    (remote / "claims").mkdir(parents=True)
    (remote / "claims" / f"{key_of_c}.json").write_text(json.dumps({"by": "other:1", "at": time.time()}))
    r = build(project, "m1", str(remote))
    assert r.code == 0 and "4 uploaded" in r.out and "1 already there" in r.out
    assert not (remote / "objects" / key_of_c[:2] / key_of_c).exists()


def test_read_only_uploads_nothing(project: Project) -> None:
    project.write(BASIC)
    remote = project.root / "shared"
    remote.mkdir()
    r = build(project, "m1", str(remote), "--remote-read-only")
    assert r.code == 0 and "0 uploaded" in r.out
    assert list(remote.rglob("*")) == []
    assert build(project, "m2", str(remote)).code == 0   # a trusted writer fills it
    project.ran()
    before = sorted(p for p in remote.rglob("*"))
    r = build(project, "m3", str(remote), "--remote-read-only")
    assert r.code == 0 and project.ran() == [] and "5 downloaded" in r.out
    assert sorted(p for p in remote.rglob("*")) == before


def test_a_no_op_run_never_touches_the_remote(project: Project) -> None:
    project.write(BASIC)
    remote = project.root / "shared"
    assert build(project, "m1", str(remote)).code == 0
    os.rename(remote, project.root / "gone")   # a remote that is not there any more
    r = build(project, "m1", str(remote))
    assert r.code == 0 and "up to date" in r.out and r.err == ""
    assert not remote.exists()


@pytest.mark.slow
def test_a_no_op_run_with_a_remote_imports_no_remote_library(project: Project, s3: s3kit.ThreadedServer) -> None:
    """A fresh interpreter: the up-to-date check imports neither fsspec, s3fs, botocore nor edgebuild's remote."""
    import subprocess
    import sys

    project.write(BASIC)
    bucket = s3kit.make_bucket(s3.endpoint)
    env = dict(project.env(s3kit.aws_env(s3.endpoint)), EDGEBUILD_REMOTE=f"s3://{bucket}/c")
    assert project.edgebuild("run", "recipe.yaml", env=env).code == 0
    code = ("import sys; from edgebuild.cli import main; rc = main(['run', 'recipe.yaml']); "
            "heavy = sorted(m for m in ('fsspec', 's3fs', 'botocore', 'aiohttp', 'edgebuild.engine.remote', 'edgebuild.engine.stores') "
            "if m in sys.modules); print('HEAVY', heavy, rc)")
    out = subprocess.run([sys.executable, "-c", code], cwd=project.root, env=env, capture_output=True, text=True)
    assert "HEAVY [] 0" in out.stdout, out.stdout + out.stderr


def test_measurement_keys_take_the_host_hardware_class(project: Project) -> None:
    project.write(BASIC + "    checks: {size: {max_mb: 1}}\n")

    def plan_keys(cpu: str) -> dict[str, str]:
        r = project.edgebuild("plan", "recipe.yaml", "--format", "json", env={"EDGEBUILD_HOST_CPU": cpu})
        assert r.code == 0, r.err
        return {n["node"]: n["key"] for n in json.loads(r.out)["nodes"]}

    laptop, runner = plan_keys("Laptop CPU"), plan_keys("CI runner CPU")
    checks = {n for n in laptop if n.startswith("check:")}
    assert checks and all(laptop[n] != runner[n] for n in checks)
    assert all(laptop[n] == runner[n] for n in laptop if n not in checks)
    from edgebuild.engine.plan import diff

    assert diff({"host": {"cpu": "Laptop CPU", "cores": 8}}, {"host": {"cpu": "CI runner CPU", "cores": 8}}) == [
        'measured on another kind of host (cpu: "Laptop CPU" → "CI runner CPU")']


def test_a_carried_state_travels_through_the_remote(project: Project) -> None:
    """What TensorRT's timing cache does: a step starts from the state the last build of it left, on this
    machine or, through the remote, on another."""
    recipe = BASIC.replace("c: {use: fake-copy, with: {tag: C}}", "c: {use: fake-stateful, with: {tag: C}}")
    project.write(recipe)
    remote = str(project.root / "shared")
    assert build(project, "m1", remote).code == 0
    assert json.loads((project.root / "m1" / "dist" / "tiny" / "manifest.json").read_text())["steps"]["c"]["facts"] == {"seen": []}
    project.write(recipe.replace("tag: C", "tag: C2"))   # a new key: built again, on another machine
    r = build(project, "m2", remote)
    assert r.code == 0 and "c" in project.ran()
    assert json.loads((project.root / "m2" / "dist" / "tiny" / "manifest.json").read_text())["steps"]["c"]["facts"] == {"seen": [1]}
    ref = json.loads((project.root / "shared" / "refs" / "fake-counter" / "v1.json").read_text())
    count = project.root / "shared" / "objects" / ref["key"][:2] / ref["key"] / "count"
    assert count.read_text() == "2"
    assert project.edgebuild("cache", "gc", "--cache", "m2/cache", "--all").code == 0   # --all: refs too
    project.write(recipe.replace("tag: C", "tag: C3"))
    assert build(project, "m2", remote).code == 0
    facts = json.loads((project.root / "m2" / "dist" / "tiny" / "manifest.json").read_text())["steps"]["c"]["facts"]
    assert facts == {"seen": [2]}


def test_tensorrt_timing_cache_is_named_by_the_gpu_and_tensorrt_release(project: Project) -> None:
    from edgebuild.engine import hostinfo
    from edgebuild.steps.tensorrt import TensorRT

    def name(gpu: str, trt: str) -> str | None:
        os.environ.update(EDGEBUILD_HOST_GPU=gpu, EDGEBUILD_HOST_TENSORRT=trt)
        hostinfo.gpu.cache_clear()
        hostinfo.tensorrt_version.cache_clear()
        return TensorRT.state_name({"name": "jetson-orin-nano"})

    saved = {k: os.environ.get(k) for k in ("EDGEBUILD_HOST_GPU", "EDGEBUILD_HOST_TENSORRT")}
    try:
        assert name("8.7", "10.3") == "tensorrt-timing/sm87-trt10.3"
        assert name("8.9", "10.3") == "tensorrt-timing/sm89-trt10.3"
        assert name("8.7", "8.6") == "tensorrt-timing/sm87-trt8.6"
        assert name("none", "10.3") is None and name("8.7", "none") is None
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        hostinfo.gpu.cache_clear()
        hostinfo.tensorrt_version.cache_clear()


def test_gc_drops_remote_entries_no_build_used_since(project: Project) -> None:
    project.write(BASIC)
    remote = project.root / "shared"
    assert build(project, "m1", str(remote)).code == 0
    old = time.time() - 40 * 86400
    for f in remote.rglob("*"):
        os.utime(f, (old, old))
    # a later build of one target reads a, b and p@test-cpu: they stay; c and p@test-gpu are dropped
    assert build(project, "m2", str(remote), "--target", "test-cpu").code == 0
    k = keys(project, "m1")
    r = project.edgebuild("cache", "gc", "--remote", str(remote), "--older-than", "30d")
    assert r.code == 0, r.err
    assert "removed 2 entries" in r.out and "kept 3" in r.out
    left = {p.name for p in (remote / "objects").glob("*/*")}
    assert left == {k["a"], k["b"], k["p@test-cpu"]}
    assert not [p for p in (remote / "access").rglob("*.json") if p.stat().st_mtime < old + 1]


def test_cache_push_uploads_what_an_offline_build_made(project: Project) -> None:
    project.write(BASIC)
    remote = project.root / "shared"
    assert project.edgebuild("run", "recipe.yaml").code == 0   # offline: no remote
    r = project.edgebuild("cache", "push", "recipe.yaml", "--remote", str(remote))
    assert r.code == 0, r.err
    assert "5 uploaded" in r.out
    r = project.edgebuild("cache", "push", "recipe.yaml", "--remote", str(remote))
    assert "0 uploaded" in r.out and "5 already there" in r.out
    project.ran()
    assert build(project, "m2", str(remote)).code == 0 and project.ran() == []


def test_cache_info_shows_the_remote_and_the_last_builds_traffic(project: Project) -> None:
    project.write(BASIC)
    remote = str(project.root / "shared")
    assert build(project, "m1", remote).code == 0
    r = project.edgebuild("cache", "info", "--cache", "m1/cache")
    assert f"remote: {remote}" in r.out
    assert "last build (" in r.out and "0 downloaded (0.0 MB), 5 uploaded (0.0 MB)" in r.out
    r = project.edgebuild("cache", "info", "--cache", "elsewhere")
    assert "remote: none" in r.out


# bad input: one line and a hint, never a traceback ------------------------------------------------------

@pytest.mark.parametrize("url, message", [
    ("s3://", "names no bucket"),
    ("s3:/bucket/x", "'s3:' is not followed by //"),
    ("file://relative/path", "absolute path"),
    ("nosuch://bucket/x", "unknown scheme nosuch://"),
    ("https://example.com/cache", "https:// cannot hold a cache"),
    ("gs://bucket/cache", "gs:// needs a package that is not installed"),   # gcsfs is no dependency of edgebuild's
    (" ", "it is empty"),
])
def test_a_bad_remote_url_is_a_user_error(project: Project, url: str, message: str) -> None:
    project.write(BASIC)
    r = project.edgebuild("run", "recipe.yaml", "--remote", url)
    assert r.code == 1, r.err
    no_traceback(r)
    errors = [line for line in r.err.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0], r.err
    assert "hint:" in r.err
    assert project.ran() == []


def test_s3_without_s3fs_names_the_extra_to_install(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    project.write(BASIC)
    import importlib
    import sys

    loaded = importlib.import_module("fsspec.registry")._registry   # the module (fsspec.registry is a mapping)
    monkeypatch.setitem(sys.modules, "s3fs", None)   # as if s3fs were not installed: its import fails
    for scheme in ("s3", "s3a"):   # and fsspec has not kept the class from an earlier test's import
        monkeypatch.delitem(loaded, scheme, raising=False)
    r = project.edgebuild("run", "recipe.yaml", "--remote", "s3://bucket/cache")
    assert r.code == 1
    no_traceback(r)
    assert "s3:// needs a package that is not installed" in r.err and "pip install 'edgebuild[s3]'" in r.err


def test_an_unwritable_folder_costs_one_warning(project: Project) -> None:
    project.write(BASIC)
    (project.root / "afile").write_text("a file, where the remote's folder should be")
    r = build(project, "m1", str(project.root / "afile" / "cache"))
    assert r.code == 0, r.err
    no_traceback(r)
    [w] = warnings(r.err)
    assert "remote cache" in w and "Not a directory" in w and "the build goes on with the local cache" in w
    assert project.ran() == ["a", "b", "c", "p", "p"]
    assert (project.root / "m1" / "dist" / "tiny" / "manifest.json").is_file()
    r = build(project, "m2", str(project.root / "afile" / "cache"), "--remote-required")
    assert r.code == 1 and "could not be used" in r.err and project.ran() == []
    no_traceback(r)


def test_bad_remote_options_are_usage_errors(project: Project) -> None:
    project.write(BASIC)
    r = project.edgebuild("run", "recipe.yaml", "--remote", "x", "--remote-timeout", "0")
    assert r.code == 1 and "not a number of seconds" in r.err
    r = project.edgebuild("cache", "gc", "--remote", str(project.root / "shared"), "--older-than", "a month")
    assert r.code == 1 and "is not an age" in r.err and "30d" in r.err
    r = project.edgebuild("cache", "gc", "--remote", str(project.root / "shared"))
    assert r.code == 1 and "needs --older-than" in r.err
    r = project.edgebuild("cache", "push", env={"EDGEBUILD_REMOTE": None})
    assert r.code == 1 and "needs the recipe" in r.err
    r = project.edgebuild("cache", "push", "recipe.yaml", env={"EDGEBUILD_REMOTE": None})
    assert r.code == 1 and "no build of recipe.yaml" in r.err


# S3, through s3fs, against moto's server -------------------------------------------------------------

def test_two_machines_share_an_s3_bucket(project: Project, s3: s3kit.ThreadedServer) -> None:
    project.write(BASIC)
    bucket = s3kit.make_bucket(s3.endpoint)
    env = s3kit.aws_env(s3.endpoint)
    r = build(project, "m1", f"s3://{bucket}/team/cache", env=env)
    assert r.code == 0, r.err
    assert "5 uploaded" in r.out and warnings(r.err) == []
    project.ran()
    r = build(project, "m2", f"s3://{bucket}/team/cache", env=env)
    assert r.code == 0, r.err
    assert project.ran() == [] and "5 downloaded" in r.out and warnings(r.err) == []
    assert dist(project, "m2") == dist(project, "m1")
    stored = s3kit.objects(s3.endpoint, bucket)
    k = keys(project, "m1")["b"]
    assert f"team/cache/objects/{k[:2]}/{k}/entry.json" in stored
    assert not [o for o in stored if "/claims/" in o]


def test_a_flipped_s3_object_is_rebuilt(project: Project, s3: s3kit.ThreadedServer) -> None:
    import boto3

    project.write(BASIC)
    bucket = s3kit.make_bucket(s3.endpoint)
    env = s3kit.aws_env(s3.endpoint)
    assert build(project, "m1", f"s3://{bucket}/c", env=env).code == 0
    project.ran()
    k = keys(project, "m1")["a"]
    path = f"c/objects/{k[:2]}/{k}/model.onnx"
    data = s3kit.objects(s3.endpoint, bucket)[path]
    boto3.client("s3", endpoint_url=s3.endpoint, region_name="us-east-1", aws_access_key_id="testing",
                 aws_secret_access_key="testing").put_object(Bucket=bucket, Key=path, Body=bytes([data[0] ^ 1]) + data[1:])
    r = build(project, "m2", f"s3://{bucket}/c", env=env)
    assert r.code == 0 and project.ran() == ["a"]
    [w] = warnings(r.err)
    assert k in w and "model.onnx does not match its sha256" in w
    assert dist(project, "m2") == dist(project, "m1")


def test_a_missing_bucket_costs_one_warning(project: Project, s3: s3kit.ThreadedServer) -> None:
    project.write(BASIC)
    r = build(project, "m1", "s3://no-such-bucket/cache", env=s3kit.aws_env(s3.endpoint))
    assert r.code == 0 and project.ran() == ["a", "b", "c", "p", "p"]
    [w] = warnings(r.err)
    assert "does not exist" in w
    no_traceback(r)


@pytest.mark.slow   # two builds of ~1.5 s each: botocore's connection retries
def test_an_unreachable_endpoint_costs_one_warning_and_little_time(project: Project) -> None:
    project.write(BASIC)
    t0 = time.monotonic()
    r = build(project, "m1", "s3://bucket/cache", env=s3kit.aws_env(f"http://127.0.0.1:{s3kit.free_port()}"))
    assert r.code == 0, r.err
    [w] = warnings(r.err)
    assert "unreachable" in w and "AWS_ENDPOINT_URL" in r.err
    assert time.monotonic() - t0 < 15
    no_traceback(r)
    r = build(project, "m2", "s3://bucket/cache", "--remote-required",
              env=s3kit.aws_env(f"http://127.0.0.1:{s3kit.free_port()}"))
    assert r.code == 1 and "could not be used: it is unreachable" in r.err
    no_traceback(r)


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts connections and never answers (a hung endpoint)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    yield s.getsockname()[1]
    s.close()


@pytest.mark.slow
def test_a_remote_that_never_answers_costs_at_most_the_timeout(project: Project, silent_server: int) -> None:
    project.write(BASIC)
    t0 = time.monotonic()
    r = build(project, "m1", "s3://bucket/cache", "--remote-timeout", "2",
              env=s3kit.aws_env(f"http://127.0.0.1:{silent_server}"))
    took = time.monotonic() - t0
    assert r.code == 0, r.err
    [w] = warnings(r.err)
    assert "did not answer in time" in w or "--remote-timeout" in w, w
    assert took < 6, took
    assert project.ran() == ["a", "b", "c", "p", "p"]


# real processes: a server killed, credentials refused, two clients at once -------------------------------

@pytest.mark.slow
def test_the_s3_server_killed_mid_build_costs_one_warning(project: Project, tmp_path: Path) -> None:
    project.write(BASIC.replace("b: {use: fake-copy, from: a, with: {tag: B}}",
                                "b: {use: fake-copy, from: a, with: {tag: B, sleep: 1.5}}"))
    server = s3kit.ProcessServer()
    try:
        bucket = s3kit.make_bucket(server.endpoint)

        def kill_when_b_starts() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if project.runs.exists() and "b" in project.runs.read_text().split():
                    server.kill()
                    return
                time.sleep(0.02)

        killer = threading.Thread(target=kill_when_b_starts)
        killer.start()
        r = build(project, "m1", f"s3://{bucket}/c", "--jobs", "1", env=s3kit.aws_env(server.endpoint))
        killer.join()
    finally:
        server.kill()
    assert r.code == 0, r.err
    no_traceback(r)
    assert len(warnings(r.err)) == 1 and "unreachable" in warnings(r.err)[0], r.err
    assert sorted(project.ran()) == ["a", "b", "c", "p", "p"]
    assert {"manifest.json", "test-cpu/b.onnx", "test-cpu/p.onnx", "test-gpu/c.onnx", "test-gpu/p.onnx"} <= set(dist(project, "m1"))


@pytest.mark.slow
def test_refused_credentials_cost_one_warning(project: Project, tmp_path: Path) -> None:
    project.write(BASIC)
    server = s3kit.ProcessServer({"INITIAL_NO_AUTH_ACTION_COUNT": "0"})   # moto checks keys against its IAM
    try:
        env = s3kit.aws_env(server.endpoint, key="AKIAWRONGWRONGWRONG1")
        r = build(project, "m1", "s3://bucket/cache", env=env)
        assert r.code == 0, r.err
        [w] = warnings(r.err)
        assert "refused access" in w and "AWS_PROFILE" in r.err
        no_traceback(r)
        r = build(project, "m2", "s3://bucket/cache", "--remote-required", env=env)
        assert r.code == 1 and "could not be used: it refused access" in r.err
    finally:
        server.kill()


@pytest.mark.slow
def test_two_clients_building_at_once_upload_each_key_once(project: Project, s3: s3kit.ThreadedServer) -> None:
    project.write(BASIC.replace("tag: A}", "tag: A, sleep: 0.5}").replace("tag: C}", "tag: C, sleep: 0.5}"))
    bucket = s3kit.make_bucket(s3.endpoint)
    env = s3kit.aws_env(s3.endpoint)
    results: dict[str, dict] = {}

    def client(machine: str) -> None:
        r = project.edgebuild_process("run", "recipe.yaml", "--cache", f"{machine}/cache", "--out", f"{machine}/dist",
                                      "--remote", f"s3://{bucket}/c", "--json", env=env)
        assert r.code == 0, r.err
        results[machine] = json.loads(r.out)["remote"]

    threads = [threading.Thread(target=client, args=(m,)) for m in ("m1", "m2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(results) == {"m1", "m2"}
    distinct = len(set(keys(project, "m1").values()))
    uploaded = results["m1"]["uploaded"] + results["m2"]["uploaded"]
    downloaded = results["m1"]["downloaded"] + results["m2"]["downloaded"]
    committed = [k for k in s3kit.objects(s3.endpoint, bucket) if k.endswith("/entry.json")]
    # every key was built by at least one client and is committed; a key uploaded twice would make the sum larger
    assert uploaded == distinct == len(committed), (results, committed)
    assert downloaded + uploaded + results["m1"]["present"] + results["m2"]["present"] == 2 * distinct, results
    project.ran()
    r = build(project, "m3", f"s3://{bucket}/c", env=env)
    assert r.code == 0 and project.ran() == [] and warnings(r.err) == []
