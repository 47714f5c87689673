"""The shared remote cache: a CI cold start (fresh local cache, warm remote) against a fully cold local build
of recipes/vitals.yaml, the remote's own cost, and what uploading costs a cold build. Prints a table.

The remote is S3 as moto's standalone server serves it on 127.0.0.1 (its own process, on this machine's
cores too), reached through s3fs with AWS_ENDPOINT_URL, as a CI runner reaches its bucket.

Run: .venv/bin/python benchmarks/remote_cache.py   (from the repository root; about two minutes)
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
ROUNDS = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_s3() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([PY, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("moto's server did not start")


def env_for(endpoint: str) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT), EDGEBUILD_HOST_GPU="none", AWS_ENDPOINT_URL=endpoint,
                AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
                AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)


def make_bucket(endpoint: str) -> str:
    import boto3

    name = f"bench-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bench",
                 aws_secret_access_key="bench").create_bucket(Bucket=name)
    return name


def copy_example(work: Path) -> None:
    """The example in the temporary folder: builds beside the committed recipe would rewrite its lock."""
    shutil.copytree(ROOT / "recipes" / "vitals", work / "recipes" / "vitals")
    shutil.copy(ROOT / "recipes" / "vitals.yaml", work / "recipes" / "vitals.yaml")


def build(work: Path, env: dict[str, str], remote: str | None) -> dict[str, Any]:
    """One `edgebuild run` of vitals with a fresh local cache: its wall time and its JSON summary."""
    cache = work / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    args = [PY, "-m", "edgebuild", "run", "recipes/vitals.yaml", "--cache", str(cache), "--out", str(work / "dist"),
            "--json", "--relock"] + (["--remote", remote] if remote else [])
    t0 = time.perf_counter()
    r = subprocess.run(args, cwd=work, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"edgebuild run failed:\n{r.stderr}")
    nodes = json.loads((work / "dist" / "vitals" / "build-log.json").read_text())["nodes"]
    return {"wall": wall, "summary": json.loads(r.stdout), "built": sum(n["status"] == "built" for n in nodes.values())}


def noop(work: Path, env: dict[str, str], remote: str) -> float:
    times = []
    for _ in range(10):
        t0 = time.perf_counter()
        subprocess.run([PY, "-m", "edgebuild", "run", "recipes/vitals.yaml", "--cache", str(work / "cache"), "--out",
                        str(work / "dist"), "--remote", remote], cwd=work, capture_output=True, env=env, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    subprocess.run([PY, "-m", "compileall", "-q", str(ROOT / "edgebuild")], check=True)
    proc, endpoint = start_s3()
    env = env_for(endpoint)
    cold, upload, ci = [], [], []
    try:
        with tempfile.TemporaryDirectory(prefix="eb-remote-bench-") as tmp:
            work = Path(tmp)
            copy_example(work)
            build(work, env, None)   # warm the OS file cache and the bytecode before timing anything
            for _ in range(ROUNDS):   # interleaved, so a busy moment of the shared machine hits all three alike
                url = f"s3://{make_bucket(endpoint)}/edgebuild-cache"
                cold.append(build(work, env, None))
                upload.append(build(work, env, url))    # a cold build writing to an empty remote
                ci.append(build(work, env, url))        # CI cold start: fresh local cache, the remote warm
            noop_s = noop(work, env, url)
    finally:
        proc.kill()
    print_table(cold, upload, ci, noop_s)


def med(runs: list[dict[str, Any]], f: Any) -> float:
    return statistics.median(f(r) for r in runs)


def print_table(cold: list[dict[str, Any]], upload: list[dict[str, Any]], ci: list[dict[str, Any]],
                noop_s: float) -> None:
    def rng(runs: list[dict[str, Any]]) -> str:
        return f"{min(r['wall'] for r in runs):.2f}-{max(r['wall'] for r in runs):.2f} s"

    remote = lambda r: r["summary"]["remote"]   # noqa: E731
    cold_s, ci_s, up_s = med(cold, lambda r: r["wall"]), med(ci, lambda r: r["wall"]), med(upload, lambda r: r["wall"])
    over = [u["wall"] / c["wall"] - 1 for u, c in zip(upload, cold)]
    rows = [
        (f"fully cold local build of vitals, no remote (wall, median of {ROUNDS})", f"{cold_s:.2f} s ({rng(cold)})", ""),
        ("CI cold start: fresh local cache, warm remote (wall)", f"{ci_s:.2f} s ({rng(ci)})", ""),
        ("  speed-up", f"{cold_s / ci_s:.1f}x", "goal >= 5x"),
        ("  steps run", f"{max(r['built'] for r in ci)} (of {cold[0]['built']})", "0"),
        ("  entries / MB downloaded", f"{remote(ci[0])['downloaded']} / {remote(ci[0])['downloaded_bytes'] / 1e6:.1f} MB", ""),
        ("  the remote's own cost: lookups, downloads and digest checks (summed over the build's threads)",
         f"{med(ci, lambda r: remote(r)['fetch_s']):.2f} s", ""),
        ("    of which the digest checks", f"{med(ci, lambda r: remote(r)['verify_s']) * 1000:.0f} ms", ""),
        ("cold build writing to an empty remote (wall)", f"{up_s:.2f} s ({rng(upload)})", ""),
        ("  entries / MB uploaded", f"{remote(upload[0])['uploaded']} / {remote(upload[0])['uploaded_bytes'] / 1e6:.1f} MB", ""),
        ("  run waiting for the uploads at the end", f"{med(upload, lambda r: remote(r)['wait_s']) * 1000:.0f} ms", ""),
        ("  upload overhead vs the cold local build (per round, median)",
         f"{statistics.median(over):+.1%} ({', '.join(f'{o:+.1%}' for o in over)})", "goal <= 10 %"),
        ("no-op rerun with --remote set (new process, median of 10)", f"{noop_s * 1000:.0f} ms", "<= 100 ms, no network"),
    ]
    print("| measure | value | goal |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
