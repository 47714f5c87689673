"""The cluster the Dask tests build on, for real: a `dask scheduler` process and `edgebuild worker` processes on
127.0.0.1 (daskkit.py), sharing moto's S3 server as the remote cache; each worker has its own cache folder, as a
machine would. The client is `python -m edgebuild run --executor dask://...`. Every process is stopped by the
fixture or test that started it, also when the test fails."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import daskkit
import s3kit
from enginekit import Project

RECIPE = """
    edgebuild: 1
    name: tiny
    model:
      onnx: tiny.onnx
    targets: [cpu.yaml, gpu.yaml{extra}]
    steps:
      a: {{use: fake-where, with: {{tag: A}}}}
      b: {{use: fake-where, from: a, with: {{tag: B, sleep: {sleep}}}}}
      g: {{use: fake-gpu, from: a}}
    ship:
      test-cpu: [b]
      test-gpu: [b, g]{ship}
"""
XAVIER = "name: test-xavier\n" + (Path(__file__).parent / "targets" / "test-gpu.yaml").read_text() \
    .replace("name: test-gpu\n", "").replace('compute_capability: "8.7"', 'compute_capability: "7.2"')
CLIENT_S = 240   # no build here takes a tenth of it; a hung client fails the test instead of the suite


def recipe(sleep: float = 0, xavier: bool = False) -> str:
    return RECIPE.format(sleep=sleep, extra=", xavier.yaml" if xavier else "",
                         ship="\n      test-xavier: [g]" if xavier else "")


class Cluster:
    """The S3 server, a scheduler and workers; stop() ends them all."""

    def __init__(self, folder: Path, *workers: tuple[str, ...], runner: str = "inprocess"):
        self.folder, self.runner = folder, runner
        folder.mkdir(parents=True, exist_ok=True)
        self.s3 = s3kit.ThreadedServer()
        self.env = dict(os.environ, **s3kit.aws_env(self.s3.endpoint))
        self.procs: list[daskkit.Proc] = []
        self.workers: dict[str, daskkit.Worker] = {}
        try:
            self.scheduler = daskkit.Scheduler(folder)
            self.procs.append(self.scheduler)
            for name, *extra in workers:
                self.add(name, *extra)
        except BaseException:
            self.stop()
            raise

    def add(self, name: str, *extra: str) -> daskkit.Worker:
        # TMPDIR: what a worker killed on purpose leaves there (its fork server's socket folder) stays in the test's
        env = dict(daskkit.worker_env(self.env, self.folder / "runs.log"), EDGEBUILD_RUNNER=self.runner,
                   TMPDIR=str(self.folder))
        w = daskkit.Worker(self.scheduler, name, self.folder, env, *extra)
        self.procs.append(w)
        self.workers[name] = w
        return w

    @property
    def executor(self) -> str:
        return self.scheduler.address.replace("tcp://", "dask://")

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()
        self.s3.stop()


def client_env(p: Project, c: Cluster, **extra: str) -> dict[str, str]:
    env = p.env(dict(s3kit.aws_env(c.s3.endpoint), EDGEBUILD_STEP_MODULES="fakesteps,clustersteps",
                     EDGEBUILD_TEST_RUNS=str(c.folder / "runs.log"), **extra))
    return env


def run(p: Project, c: Cluster, bucket: str, *args: str, machine: str = "laptop") -> subprocess.CompletedProcess[str]:
    """`edgebuild run` on the cluster from one "machine" (its own cache and output folder)."""
    return subprocess.run([sys.executable, "-m", "edgebuild", "run", "recipe.yaml", "--executor", c.executor,
                           "--remote", f"s3://{bucket}/cache", "--cache", f"{machine}/cache", "--out", f"{machine}/dist",
                           *args], cwd=p.root, env=client_env(p, c), capture_output=True, text=True, timeout=CLIENT_S)


def ran(c: Cluster) -> list[tuple[str, str]]:
    """(step, worker) of every step run since the last call."""
    log = c.folder / "runs.log"
    if not log.exists():
        return []
    lines = [tuple(x.split()) for x in log.read_text().splitlines() if x.strip()]
    log.unlink()
    return sorted(lines)  # type: ignore[arg-type]


def started(c: Cluster, step: str, client: subprocess.Popen) -> list[str]:  # type: ignore[type-arg]
    """The workers that have started `step` (from runs.log, which is left in place), once one has; waits while
    the client runs, at most CLIENT_S (empty if it never started)."""
    log, deadline = c.folder / "runs.log", time.monotonic() + CLIENT_S
    while True:
        lines = log.read_text().splitlines() if log.exists() else []
        workers = [x.split()[1] for x in lines if x.startswith(f"{step} ")]
        if workers or time.monotonic() >= deadline or client.poll() is not None:
            return workers
        time.sleep(0.1)


def dist(p: Project, machine: str) -> dict[str, bytes]:
    root = p.root / machine / "dist" / "tiny"
    return {f.relative_to(root).as_posix(): f.read_bytes() for f in sorted(root.rglob("*")) if f.is_file()
            and f.name not in ("build-log.json", "manifest.json", "provenance.json")}


def no_traceback(r: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
