"""The bundled example end to end: build, no-op rerun without heavy imports, artifacts that work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow   # a real model built end to end by `python -m edgebuild`, and a fresh interpreter's imports


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example built from an empty cache, from a copy without its lock: `best:` chooses by this build's timings
    (the committed lock's pinned choice is test_vitals_lock.py's). The test run's one cold build (examplekit)."""
    from examplekit import cold_vitals

    return cold_vitals(tmp_path_factory)


def test_manifest_matches_its_schema_and_the_files(built: Path) -> None:
    import hashlib

    import jsonschema

    dist = built / "dist" / "vitals"
    m = json.loads((dist / "manifest.json").read_text())
    jsonschema.validate(m, json.loads((ROOT / "schemas" / "manifest.schema.json").read_text()))
    assert set(m["targets"]) == {"raspberry-pi-5", "jetson-orin-nano", "x86-64", "browser-wasm"}
    for t in m["targets"].values():
        for a in t["artifacts"]:
            if a["format"] != "onnx":
                continue
            data = (dist / a["path"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == a["sha256"] and len(data) == a["size"]
    assert m["steps"]["fp32"]["facts"]["max_abs_diff"] <= 1e-4


def test_artifacts_keep_the_task_and_respect_the_ir_pin(built: Path) -> None:
    import numpy as np
    import onnx
    import onnxruntime as ort

    ev = np.load(ROOT / "recipes" / "vitals" / "eval.npz")
    m = json.loads((built / "dist" / "vitals" / "manifest.json").read_text())
    paths = [a["path"] for t in m["targets"].values() for a in t["artifacts"] if a["format"] == "onnx"]
    assert {"jetson-orin-nano/half.onnx", "x86-64/qdq.onnx"} <= set(paths)
    for rel in paths:
        path = built / "dist" / "vitals" / rel
        assert onnx.load(str(path), load_external_data=False).ir_version <= 10   # Orin's ORT 1.20 reads IR 10
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        logits = sess.run(None, {"ecg": ev["ecg"]})[0]
        acc = float((logits.argmax(1) == ev["labels"]).mean())
        assert acc >= 0.95, (rel, acc)


def test_checks_measure_every_artifact_and_pick_the_fastest_candidate(built: Path) -> None:
    m = json.loads((built / "dist" / "vitals" / "manifest.json").read_text())
    pi = m["targets"]["raspberry-pi-5"]
    sel = pi["selection"]
    assert sel["by"] == "latency" and [c["step"] for c in sel["candidates"]] == ["int8", "qdq", "fp32"]
    from edgebuild.checks.judge import TIE

    passing = [c for c in sel["candidates"] if c["passed"]]   # in the order of best:
    fastest = min(c["value"] for c in passing)
    first_of_the_fastest = next(c for c in passing if c["value"] <= fastest * (1 + TIE))
    assert sel["chosen"] == first_of_the_fastest["step"] and [a["step"] for a in pi["artifacts"]] == [sel["chosen"]]
    for c in sel["candidates"]:
        meas = c["checks"]["measurements"]
        assert meas["latency_ms"]["p50"] <= meas["latency_ms"]["p95"] <= meas["latency_ms"]["p99"]
        assert meas["fidelity"]["samples"] == 500 and meas["accuracy"]["reference"] >= 0.95
        assert c["why"] == "chosen" or c["why"].startswith(("slower than", "as fast as", "failed:"))
        versus = meas["latency_ms"]["vs_reference"]   # the FP32 export is the reference: 1x, not timed against itself
        assert (versus == {"ratio": 1.0, "noise": 0.0, "spread": 0.0, "pairs": 0, "itself": True}) == (c["step"] == "fp32")
        assert c["step"] == "fp32" or versus["pairs"] >= 20
    web = m["targets"]["browser-wasm"]["artifacts"][0]["checks"]   # the bundle's model.onnx, but not its latency
    assert web["passed"] and {r["check"] for r in web["results"]} == {"size", "fidelity", "accuracy"}
    assert web["measurements"]["latency_ms"] is None and web["measurements"]["fidelity"]["samples"] == 500
    x86 = m["targets"]["x86-64"]["artifacts"][0]["checks"]
    assert x86["passed"] and {r["check"] for r in x86["results"]} == {"latency", "size", "fidelity", "accuracy"}
    assert x86["host"] and x86["measurements"]["latency_ms"]["threads"] >= 1


def test_no_op_rerun_builds_nothing_and_imports_no_heavy_library(built: Path) -> None:
    code = ("import sys; from edgebuild.cli import main; rc = main(['run', sys.argv[1], '--cache', sys.argv[2], "
            "'--out', sys.argv[3]]); print('HEAVY', [m for m in ('torch', 'onnx', 'onnxruntime', 'tensorrt', 'numpy', "
            "'jsonschema', 'yaml') if m in sys.modules], rc)")
    r = subprocess.run([sys.executable, "-c", code, str(built / "recipes" / "vitals.yaml"), str(built / "cache"),
                        str(built / "dist")], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(ROOT), EDGEBUILD_HOST_GPU="none"))   # as `built` ran
    assert "up to date" in r.stdout and "HEAVY [] 0" in r.stdout, r.stdout + r.stderr


@pytest.mark.browser
def test_the_vitals_web_bundle_runs_in_chromium(built: Path) -> None:
    import shutil

    from browser_kit import HAVE_CHROMIUM, Chromium, Served

    bundle = built / "dist" / "vitals" / "browser-wasm" / "web"
    if not bundle.is_dir():
        pytest.skip("the web bundle was not built (npm or its registry unreachable)")
    if not HAVE_CHROMIUM or shutil.which("npm") is None:
        pytest.skip("needs /usr/bin/chromium")
    served, chromium = Served(bundle), Chromium()
    try:
        r = chromium.result(served.url + "index.html", timeout=90)
    finally:
        chromium.close()
        served.stop()
    assert r["ok"] is True and r["crossOriginIsolated"] is True, r
    assert r["max_abs_diff_all"] <= 2e-2          # QDQ INT8 in the browser vs Python ONNX Runtime
    assert r["ortVersion"].startswith("1.30.") and r["ms"] > 0
    assert chromium.console == [] or all(not c.startswith("exception") for c in chromium.console)


def test_the_jetson_engine_is_deferred_with_the_command_to_build_it(built: Path) -> None:
    m = json.loads((built / "dist" / "vitals" / "manifest.json").read_text())
    d = m["targets"]["jetson-orin-nano"]["deferred"]
    assert [x["step"] for x in d] == ["engine"] and "needs sm_87 with TensorRT 10.3" in d[0]["reason"]
    assert d[0]["command"].endswith("vitals.yaml --target jetson-orin-nano")


def test_targets_whose_auto_types_resolve_alike_share_one_build(built: Path) -> None:
    """x86-64 (VNNI) and browser-wasm both resolve `auto` to U8S8 per-channel: one key, one build; the Pi
    (Arm64: S8S8) gets its own."""
    nodes = json.loads((built / "dist" / "vitals" / "build-log.json").read_text())["nodes"]
    assert sorted([nodes["qdq@x86-64"]["status"], nodes["qdq@browser-wasm"]["status"]]) == ["built", "cached"]
    assert nodes["qdq@raspberry-pi-5"]["status"] == "built"
    plan = subprocess.run([sys.executable, "-m", "edgebuild", "plan", str(built / "recipes" / "vitals.yaml"),
                           "--cache", str(built / "cache")], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(ROOT), EDGEBUILD_HOST_GPU="none"))
    line = next(x for x in plan.stdout.splitlines() if " qdq@x86-64 " in x)
    assert "cached" in line and "shared with qdq@browser-wasm" in line
