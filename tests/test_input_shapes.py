"""Declared input shapes as real exports write them: unnamed dims (`?`, an empty dim_param, -1) are each a
free dim of their own, and a fixed batch is refused with the `inputs:` override to paste."""

from __future__ import annotations

import os
from pathlib import Path

import clikit
import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper, numpy_helper

from edgebuild.frontend import sources

RECIPE = """edgebuild: 1
name: shapes
model: {onnx: model.onnx}
data: {calib: calib.npz}
targets: [x86-64]
steps:
  qdq: {use: quantize-static, with: {data: calib}}
ship:
  x86-64: [qdq]
"""


def _conv_model(path: Path, dims: list) -> Path:
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
    for d, want in zip(x.type.tensor_type.shape.dim, dims):
        if want == "":
            d.ClearField("dim_param")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "g", [x],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _edgebuild(folder: Path, *args: str) -> clikit.Result:
    return clikit.in_process(list(args), folder, os.environ)


def test_every_unnamed_dim_is_read_the_same_way(tmp_path: Path) -> None:
    probed = sources.probe_onnx(_conv_model(tmp_path / "m.onnx", [-1, 3, "", ""]))
    assert probed["inputs"]["x"] == {"shape": ["?", 3, "?", "?"], "dtype": "float32"}


def test_unnamed_dims_take_different_sizes(tmp_path: Path) -> None:
    # a PaddleOCR-style [-1, 3, ?, ?] input fed 48 x 192 samples: the two unnamed dims are not one shared dim
    _conv_model(tmp_path / "model.onnx", [-1, 3, "", ""])
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(1).standard_normal((8, 3, 48, 192)).astype(np.float32))
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    done = _edgebuild(tmp_path, "run", "recipe.yaml", "--cache", "cache", "--out", "dist")
    assert done.code == 0, done.err
    assert (tmp_path / "dist" / "shapes" / "x86-64" / "qdq.onnx").is_file()


def test_fixed_batch_hint_is_an_override_to_paste(tmp_path: Path) -> None:
    _conv_model(tmp_path / "model.onnx", [10, 3, 32, 32])
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(1).standard_normal((8, 3, 32, 32)).astype(np.float32))
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    refused = _edgebuild(tmp_path, "validate", "recipe.yaml")
    assert refused.code == 1 and "Traceback" not in refused.err
    assert "does not fit the input shape [10, 3, 32, 32]" in refused.err
    lines = refused.err.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "inputs:")
    snippet = "\n".join(line[8:] for line in lines[start:start + 2])   # the hint's lines are indented by 8
    override = yaml.safe_load(snippet)
    assert override == {"inputs": {"x": {"shape": ["batch", 3, 32, 32]}}}
    recipe = yaml.safe_load(RECIPE)
    recipe["model"].update(override)
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    accepted = _edgebuild(tmp_path, "validate", "recipe.yaml")
    assert accepted.code == 0, accepted.err
