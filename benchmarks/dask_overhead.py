"""What building on a Dask cluster costs per node (`run --executor dask://...`), against the local executor.

A synthetic recipe of many small steps (a copy step and two per-target steps for each of 24 targets: 49
nodes that each take milliseconds) is built cold by the local executor, then on a real `dask scheduler` with
1, 2 and 3 `edgebuild worker` processes on 127.0.0.1, the remote cache being moto's S3 server (its own
process). Per node it reads `build-log.json`: the dispatch overhead (the Dask task's round trip from the
client beyond the time the task spent on the worker: scheduling, the scheduler's messages, the result) and
the whole overhead beyond the step's own work (that plus the remote-cache traffic on the worker and the
client's download of the entry). Each round uses fresh caches and a fresh bucket, with keys of its own.

    .venv/bin/python benchmarks/dask_overhead.py          # about 3 minutes on a 2-core machine
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "engine")]
PY = sys.executable
TARGETS = 24


def write_recipe(work: Path, salt: str) -> Path:
    from enginekit import tiny_onnx

    tiny_onnx(work / "tiny.onnx")
    profile = (ROOT / "tests" / "engine" / "targets" / "test-cpu.yaml").read_text()
    names = [f"box-{i:02d}" for i in range(TARGETS)]
    for n in names:
        (work / f"{n}.yaml").write_text(profile.replace("name: test-cpu", f"name: {n}"))
    lines = ["edgebuild: 1", "name: synthetic", "model: {onnx: tiny.onnx}",
             f"targets: [{', '.join(f'{n}.yaml' for n in names)}]", "steps:",
             f"  a: {{use: fake-where, with: {{tag: {salt}}}}}",
             "  p: {use: fake-per-target, from: a}", "  q: {use: fake-per-target, from: p}", "ship:"]
    lines += [f"  {n}: [q]" for n in names]
    path = work / f"synthetic-{salt}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def build(work: Path, recipe: Path, env: dict[str, str], *extra: str) -> tuple[float, dict[str, dict[str, float]]]:
    t0 = time.perf_counter()
    r = subprocess.run([PY, "-m", "edgebuild", "run", recipe.name, "--cache", f"c-{recipe.stem}", "--out",
                        f"d-{recipe.stem}", *extra], cwd=work, env=env, capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"build failed:\n{r.stderr[-3000:]}")
    log = json.loads((work / f"d-{recipe.stem}" / "synthetic" / "build-log.json").read_text())
    return wall, log["nodes"]


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.0f} ms" if values else "-"


def bare_round_trip(address: str) -> tuple[str, ...]:
    """Dask's own floor on this machine: a trivial task's round trip from a client, one at a time (median of 30)."""
    import operator

    from distributed import Client

    with Client(address, set_as_default=False) as client:
        client.submit(operator.add, 0, 0, pure=False).result()
        times = []
        for i in range(30):
            t0 = time.perf_counter()
            client.submit(operator.add, i, 1, pure=False).result()
            times.append(time.perf_counter() - t0)
    return ("for scale: a bare Dask task (operator.add), 30 one at a time", "1", "-", "-", ms(times), "-", "-")


def main() -> None:
    import daskkit
    import s3kit

    work = Path(tempfile.mkdtemp(prefix="eb-dask-bench-"))
    base = dict(os.environ, EDGEBUILD_STEP_MODULES="fakesteps,clustersteps",
                PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), str(ROOT)]),
                EDGEBUILD_HOST_GPU="none", EDGEBUILD_HOST_TENSORRT="none", EDGEBUILD_HOST_MODEL="none")
    rows = []
    wall, nodes = build(work, write_recipe(work, "local"), base)
    over = [n["seconds"] - n["work_seconds"] for n in nodes.values() if n["status"] == "built"]
    rows.append(("local (fork server)", "-", f"{wall:.1f} s", len(over), "-", "-", ms(over)))
    s3 = s3kit.ProcessServer()
    env = dict(base, **s3kit.aws_env(s3.endpoint))
    procs: list[daskkit.Proc] = []
    try:
        sched = daskkit.Scheduler(work)
        procs.append(sched)
        for k in (1, 2, 3):
            procs.append(daskkit.Worker(sched, f"w{k}", work, dict(daskkit.worker_env(env, work / "runs.log"),
                                                                    EDGEBUILD_RUNNER="forkserver")))
            time.sleep(2)   # let the new worker's fork server finish preloading, as a long-lived worker would have
            if k == 1:
                rows.append(bare_round_trip(sched.address))
            runs: list[tuple[str, tuple[str, ...]]] = [("s3", ("--jobs", "1")), ("folder", ("--jobs", "1"))] if k == 1 else []
            runs.append(("s3", ()))
            for store, extra in runs:   # with --jobs 1 one node at a time: its round trip is all overhead, no queueing
                salt = f"k{k}{store}{'serial' if extra else ''}"
                remote = f"s3://{s3kit.make_bucket(s3.endpoint)}/cache" if store == "s3" else str(work / f"remote-{salt}")
                wall, nodes = build(work, write_recipe(work, salt), env, "--executor",
                                    sched.address.replace("tcp", "dask"), "--remote", remote, *extra)
                built = [n for n in nodes.values() if n["status"] == "built" and "worker" in n]
                what = f"dask, {'S3 (moto)' if store == 's3' else 'folder'} remote"
                if extra:
                    dispatch = sorted(n["dispatch_seconds"] for n in built)
                    over = [n["seconds"] - n["work_seconds"] for n in built]
                    p90 = f"{dispatch[int(0.9 * (len(dispatch) - 1))] * 1000:.0f} ms" if dispatch else "-"
                    rows.append((f"{what}, --jobs 1", str(k), f"{wall:.1f} s", len(built), ms(dispatch), p90, ms(over)))
                else:
                    rows.append((what, str(k), f"{wall:.1f} s", len(built), "-", "-", "-"))
    finally:
        for p in reversed(procs):
            p.kill()
        s3.kill()
    print(f"synthetic recipe: {TARGETS} targets, {1 + 2 * TARGETS} nodes of a few ms each; "
          f"{os.cpu_count()} cores; {time.strftime('%Y-%m-%d')}\n")
    print("| executor | workers | wall (cold build) | nodes built | dispatch overhead per node, median | p90 | "
          "overhead beyond the step's work per node, median |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(str(x) for x in row) + " |")


if __name__ == "__main__":
    main()
