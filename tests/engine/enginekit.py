"""A tiny project for engine tests: a real ONNX model, fake step kinds, and the CLI run on it."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import clikit
from clikit import Result

__all__ = ["BASIC", "HERE", "TESTS", "Project", "Result", "tiny_onnx"]

TESTS = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent


def tiny_onnx(path: Path, opset: int = 17) -> None:
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "tiny",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.save(m, str(path))


class Project:
    def __init__(self, root: Path):
        self.root = root
        self.runs = root / "runs.log"
        tiny_onnx(root / "tiny.onnx")
        (root / "cpu.yaml").write_text((HERE / "targets" / "test-cpu.yaml").read_text())
        (root / "gpu.yaml").write_text((HERE / "targets" / "test-gpu.yaml").read_text())

    def write(self, body: str, name: str = "recipe.yaml") -> Path:
        path = self.root / name
        path.write_text(textwrap.dedent(body).lstrip())
        return path

    def edgebuild(self, *args: str, env: dict[str, str | None] | None = None) -> Result:
        """Run the CLI in this process, from the project folder, with steps run in-process; `env` adds to
        (or, with None values, removes from) its environment."""
        return clikit.in_process(list(args), self.root, self.env(env))

    def edgebuild_process(self, *args: str, env: dict[str, str | None] | None = None) -> Result:
        """Run the CLI as a user would: `python -m edgebuild` in a new process, steps in workers forked
        from its fork server (tests using it are marked slow)."""
        return clikit.in_subprocess(list(args), self.root, self.env(env))

    def env(self, extra: dict[str, str | None] | None = None) -> dict[str, str]:
        """The environment edgebuild runs with in these tests: the fake step kinds, no GPU detection."""
        base = dict(os.environ, EDGEBUILD_STEP_MODULES="fakesteps", EDGEBUILD_TEST_RUNS=str(self.runs),
                    PYTHONPATH=os.pathsep.join([str(TESTS), str(TESTS.parent)]))
        base.pop("EDGEBUILD_CACHE", None)
        for k in ("EDGEBUILD_HOST_GPU", "EDGEBUILD_HOST_TENSORRT"):
            if k not in os.environ:
                base[k] = "none"   # never detect a real GPU: these tests are about routing
        for k, v in (extra or {}).items():
            if v is None:
                base.pop(k, None)
            else:
                base[k] = v
        return base

    def ran(self) -> list[str]:
        """Step ids that ran since the last call (and forget them)."""
        if not self.runs.exists():
            return []
        lines = self.runs.read_text().split()
        self.runs.unlink()
        return sorted(lines)


BASIC = """
    edgebuild: 1
    name: tiny
    model:
      onnx: tiny.onnx
    targets: [cpu.yaml, gpu.yaml]
    steps:
      a: {use: fake-copy, with: {tag: A}}
      b: {use: fake-copy, from: a, with: {tag: B}}
      c: {use: fake-copy, with: {tag: C}}
      p: {use: fake-per-target, from: a}
    ship:
      test-cpu: [b, p]
      test-gpu: [c, p]
"""
