"""The step registry finds every kind, and importing it stays cheap (no heavy libraries)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgebuild.steps import kinds
from edgebuild.steps.base import StepKind

ROOT = Path(__file__).resolve().parents[2]
EXPECTED = {"export", "optimize", "quantize-dynamic", "quantize-static", "fp16", "int4"}


def test_registry_lists_every_kind() -> None:
    found = kinds()
    assert EXPECTED <= set(found)
    for name in EXPECTED:
        kind = found[name]
        assert issubclass(kind, StepKind) and kind.name == name
        assert kind.summary
        for pname, spec in kind.params.items():
            assert spec.get("description"), f"{name}.{pname} has no description"
            assert pname in kind.required or "default" in spec, f"{name}.{pname}: optional params need a default"


def test_param_schemas_are_valid_and_accept_their_defaults() -> None:
    jsonschema = __import__("pytest").importorskip("jsonschema")
    for name in EXPECTED:
        kind = kinds()[name]
        jsonschema.Draft202012Validator.check_schema(kind.schema())
        given = {k: "calib" for k in kind.required}
        jsonschema.Draft202012Validator(kind.schema()).validate(kind.fill_defaults(given))


@pytest.mark.slow   # a fresh interpreter
def test_importing_steps_does_not_import_heavy_libraries() -> None:
    code = ("import sys, json, edgebuild.steps as s; k = s.kinds(); "
            "print(json.dumps([m for m in ('onnx', 'onnxruntime', 'torch', 'numpy', 'onnx_ir', 'onnxscript') "
            "if m in sys.modules]))")
    env = {k: v for k, v in os.environ.items() if k != "EDGEBUILD_STEP_MODULES"}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    assert json.loads(out.stdout) == []
