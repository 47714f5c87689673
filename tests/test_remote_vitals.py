"""The bundled example shared through S3 (moto's server on 127.0.0.1): a second machine, with an empty cache
of its own, runs no step and publishes the same bytes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import s3kit

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow   # vitals built end to end by `python -m edgebuild`


def machine(work: Path, name: str, url: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    from examplekit import vitals_copy

    vitals_copy(work / name)   # each machine its own clone (without the lock: the committed one is never written)
    return subprocess.run([sys.executable, "-m", "edgebuild", "run", "recipes/vitals.yaml",
                           "--cache", str(work / name / "cache"), "--out", str(work / name / "dist"), "--remote", url],
                          capture_output=True, text=True, timeout=600, env=env, cwd=work / name)


def published(work: Path, name: str) -> dict[str, bytes]:
    root = work / name / "dist" / "vitals"
    return {f.relative_to(root).as_posix(): f.read_bytes() for f in sorted(root.rglob("*"))
            if f.is_file() and f.name != "build-log.json"}


def test_a_second_machine_builds_vitals_from_the_remote_alone(tmp_path: Path) -> None:
    server = s3kit.ThreadedServer()
    try:
        bucket = s3kit.make_bucket(server.endpoint)
        env = dict(os.environ, PYTHONPATH=str(ROOT), EDGEBUILD_HOST_GPU="none", **s3kit.aws_env(server.endpoint))
        env.pop("EDGEBUILD_CACHE", None)
        first = machine(tmp_path, "m1", f"s3://{bucket}/cache", env)
        assert first.returncode == 0, first.stderr
        second = machine(tmp_path, "m2", f"s3://{bucket}/cache", env)
        assert second.returncode == 0, second.stderr
    finally:
        server.stop()
    uploaded = re.search(r"remote: 0 downloaded \(0\.0 MB\), (\d+) uploaded \(([\d.]+) MB\)", first.stdout)
    assert uploaded and int(uploaded[1]) >= 12, first.stdout   # every step and measurement, once per key
    log = json.loads((tmp_path / "m2" / "dist" / "vitals" / "build-log.json").read_text())
    statuses = {nid: n["status"] for nid, n in log["nodes"].items()}
    assert set(statuses.values()) <= {"cached", "deferred"}, statuses   # no step ran on the second machine
    assert f"remote: {uploaded[1]} downloaded ({uploaded[2]} MB), 0 uploaded" in second.stdout, second.stdout
    assert [w for w in second.stderr.splitlines() if w.startswith("warning: remote")] == []
    # the same host class measured both, so the manifests are identical, measurements included
    assert published(tmp_path, "m2") == published(tmp_path, "m1")
