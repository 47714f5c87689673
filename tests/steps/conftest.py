"""Helpers for step-kind tests: a RunContext factory and tiny real models built in-process."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgebuild.steps.base import RunContext, StepKind


def make_ctx(kind: type[StepKind], out_dir: Path, params: dict[str, Any] | None = None, *,
             model: Path | None = None, source: dict[str, Any] | None = None,
             inputs: dict[str, dict[str, Any]] | None = None, data: dict[str, Path] | None = None,
             ir_version: int = 10, max_opset: int = 21, recipe_dir: Path | None = None,
             step_id: str = "step") -> RunContext:
    """A RunContext for `kind` with its parameter defaults filled in.

    `model` is the input ONNX file (passed as the recipe's onnx source); `source` overrides it
    (e.g. {"pytorch": {...}} for export).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    if source is None:
        source = {"onnx": str(model)} if model is not None else {}
    return RunContext(
        step_id=step_id,
        params=kind.fill_defaults(params or {}),
        input_dir=None,
        source=source,
        inputs=inputs or {},
        data=data or {},
        out_dir=out_dir,
        ir_version=ir_version,
        max_opset=max_opset,
        target=None,
        recipe_dir=recipe_dir or out_dir,
        log=logging.getLogger(f"edgebuild.test.{kind.name}"),
    )


def run_ort(path: Path, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feed)


def _save(model: Any, path: Path) -> Path:
    import onnx

    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def build_mlp(path: Path, gemm: bool = False, opset: int = 17, seed: int = 0) -> Path:
    """x[batch, 64] -> 128 -> ReLU -> 32: MatMul + Add (or Gemm with transB=1 when `gemm`)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((64, 128)) * 0.1).astype(np.float32)
    b1 = (rng.standard_normal(128) * 0.1).astype(np.float32)
    w2 = (rng.standard_normal((128, 32)) * 0.1).astype(np.float32)
    b2 = (rng.standard_normal(32) * 0.1).astype(np.float32)
    if gemm:
        inits = [numpy_helper.from_array(w1.T.copy(), "w1"), numpy_helper.from_array(b1, "b1"),
                 numpy_helper.from_array(w2.T.copy(), "w2"), numpy_helper.from_array(b2, "b2")]
        nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1", transB=1),
                 helper.make_node("Relu", ["h"], ["r"], name="relu"),
                 helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], name="fc2", transB=1)]
    else:
        inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"),
                 numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(b2, "b2")]
        nodes = [helper.make_node("MatMul", ["x", "w1"], ["h0"], name="mm1"),
                 helper.make_node("Add", ["h0", "b1"], ["h"], name="add1"),
                 helper.make_node("Relu", ["h"], ["r"], name="relu"),
                 helper.make_node("MatMul", ["r", "w2"], ["y0"], name="mm2"),
                 helper.make_node("Add", ["y0", "b2"], ["y"], name="add2")]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 32])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="test")
    model.ir_version = 8
    return _save(model, path)


def build_cnn(path: Path, opset: int = 17, seed: int = 0) -> Path:
    """x[batch, 3, 16, 16] -> Conv 8 -> ReLU -> Conv 16 -> ReLU -> GlobalAveragePool -> Flatten -> Gemm 10."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    c1 = (rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32)
    c1b = (rng.standard_normal(8) * 0.1).astype(np.float32)
    c2 = (rng.standard_normal((16, 8, 3, 3)) * 0.2).astype(np.float32)
    c2b = (rng.standard_normal(16) * 0.1).astype(np.float32)
    fc = (rng.standard_normal((10, 16)) * 0.3).astype(np.float32)
    fcb = (rng.standard_normal(10) * 0.1).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in
             [(c1, "c1"), (c1b, "c1b"), (c2, "c2"), (c2b, "c2b"), (fc, "fc"), (fcb, "fcb")]]
    nodes = [helper.make_node("Conv", ["x", "c1", "c1b"], ["a1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "c2", "c2b"], ["a2"], name="conv2", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a2"], ["r2"], name="relu2"),
             helper.make_node("GlobalAveragePool", ["r2"], ["p"], name="gap"),
             helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fc", "fcb"], ["y"], name="fc", transB=1)]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="test")
    model.ir_version = 8
    return _save(model, path)


@pytest.fixture(scope="session")
def kit():
    """The helpers above, for test modules (conftest is not importable by name: tests/engine has one too)."""
    import types

    return types.SimpleNamespace(make_ctx=make_ctx, run_ort=run_ort, build_mlp=build_mlp, build_cnn=build_cnn,
                                 save=_save)


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("models")
    return {"mlp": build_mlp(d / "mlp.onnx"), "mlp_gemm": build_mlp(d / "mlp_gemm.onnx", gemm=True),
            "cnn": build_cnn(d / "cnn.onnx")}


@pytest.fixture(scope="session")
def cnn_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """32 calibration samples for the CNN (input `x`, labels)."""
    path = tmp_path_factory.mktemp("data") / "calib.npz"
    rng = np.random.default_rng(1)
    np.savez(path, x=rng.standard_normal((32, 3, 16, 16)).astype(np.float32), labels=rng.integers(0, 10, 32))
    return path


@pytest.fixture(scope="session")
def mlp_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "mlp.npz"
    rng = np.random.default_rng(2)
    np.savez(path, x=rng.standard_normal((32, 64)).astype(np.float32))
    return path
