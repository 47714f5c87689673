"""Datasets: shapes and dtypes from .npy headers without loading arrays; batch-of-one feeds."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgebuild.frontend import datasets


def test_inspect_reads_shapes_and_dtypes(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((5, 3, 8), np.float32), ids=np.zeros((5, 7), np.int64), labels=np.arange(5))
    got = datasets.inspect(path)
    assert got == {"ids": ((5, 7), "int64"), "labels": ((5,), "int64"), "x": ((5, 3, 8), "float32")}


def test_inspect_does_not_load_arrays(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "big.npz"
    np.savez_compressed(path, x=np.zeros((2000, 1000), np.float32), m=np.zeros((2000,), np.bool_))

    def boom(*a, **k):
        raise AssertionError("inspect must not load arrays")

    monkeypatch.setattr(np, "load", boom)
    monkeypatch.setattr(np.lib.format, "read_array", boom)
    assert datasets.inspect(path) == {"m": ((2000,), "bool"), "x": ((2000, 1000), "float32")}


@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
def test_inspect_reads_every_npy_header_version(tmp_path: Path, version: tuple[int, int]) -> None:
    path = tmp_path / "v.npz"
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ones((4, 2), np.float16), version=version)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x.npy", buf.getvalue())
    assert datasets.inspect(path) == {"x": ((4, 2), "float16")}


def test_inspect_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        datasets.inspect(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_text("not a zip")
    with pytest.raises(ValueError, match="zip"):
        datasets.inspect(bad)
    notnpy = tmp_path / "notnpy.npz"
    with zipfile.ZipFile(notnpy, "w") as zf:
        zf.writestr("x.npy", b"hello world, not an array")
    with pytest.raises(ValueError):
        datasets.inspect(notnpy)


def test_feeds_yields_batches_of_one(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    x = np.arange(24, dtype=np.float32).reshape(6, 4)
    y = np.arange(6, dtype=np.int64).reshape(6, 1)
    np.savez(path, x=x, y=y, labels=np.arange(6))
    got = list(datasets.feeds(path, ["x", "y"]))
    assert len(got) == 6
    assert set(got[0]) == {"x", "y"}
    assert got[2]["x"].shape == (1, 4) and got[2]["x"].dtype == np.float32
    np.testing.assert_array_equal(got[2]["x"], x[2:3])
    np.testing.assert_array_equal(got[5]["y"], y[5:6])
    assert all(f["x"].flags["C_CONTIGUOUS"] for f in got)


def test_feeds_limit_and_missing_input(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((10, 2), np.float32))
    assert len(list(datasets.feeds(path, ["x"], limit=3))) == 3
    assert len(list(datasets.feeds(path, ["x"], limit=50))) == 10
    with pytest.raises(KeyError, match="no array for input"):
        list(datasets.feeds(path, ["x", "mask"]))


def test_feeds_fortran_order_arrays_are_contiguous(tmp_path: Path) -> None:
    path = tmp_path / "f.npz"
    x = np.asfortranarray(np.random.default_rng(0).standard_normal((3, 4, 5)).astype(np.float32))
    np.savez(path, x=x)
    got = list(datasets.feeds(path, ["x"]))
    assert got[1]["x"].flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(got[1]["x"], x[1:2])


def test_count_and_labels(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, a=np.zeros((7, 2), np.float32), b=np.zeros((5, 2), np.float32), labels=np.arange(5))
    assert datasets.count(path, ["a", "b"]) == 5
    np.testing.assert_array_equal(datasets.load_labels(path), np.arange(5))
    nolabels = tmp_path / "n.npz"
    np.savez(nolabels, a=np.zeros((2, 2), np.float32))
    assert datasets.load_labels(nolabels) is None


def test_feeds_rows_to_an_input_without_a_batch_dim(tmp_path: Path) -> None:
    """[N, 32] feeds an input [32] row by row, and an input [batch, 32] as batches of one."""
    path = tmp_path / "d.npz"
    x = np.arange(3 * 32, dtype=np.float32).reshape(3, 32)
    np.savez(path, x=x, grid=np.zeros((3, 4, 32), np.float32))
    rows = list(datasets.feeds(path, {"x": {"shape": [32]}, "grid": {"shape": [4, 32]}}))
    assert [f["x"].shape for f in rows] == [(32,)] * 3 and [f["grid"].shape for f in rows] == [(4, 32)] * 3
    assert np.array_equal(rows[1]["x"], x[1])
    batched = list(datasets.feeds(path, {"x": {"shape": ["batch", 32]}}))
    assert [f["x"].shape for f in batched] == [(1, 32)] * 3
    assert datasets.sample_shape((3, 32), [32]) == (32,) and datasets.sample_shape((3, 32), ["batch", 32]) == (1, 32)
    assert datasets.sample_shape((3, 5, 32), ["batch", 32]) == (1, 5, 32)   # a symbolic first dim is the batch


def test_a_model_without_a_batch_dim_quantizes_and_is_measured(tmp_path: Path) -> None:
    """A fixed-shape model (input [32], no batch dim) gets calibrated and checked from an [N, 32] dataset."""
    import json
    import os

    import clikit
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((32, 8)).astype(np.float32), "w")
    g = helper.make_graph([helper.make_node("Unsqueeze", ["x", "axes"], ["x2"]),
                           helper.make_node("MatMul", ["x2", "w"], ["y"])], "nobatch",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [32])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
                          [w, numpy_helper.from_array(np.array([0], np.int64), "axes")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(tmp_path / "m.onnx"))
    np.savez(tmp_path / "calib.npz", x=rng.standard_normal((40, 32)).astype(np.float32))
    (tmp_path / "r.yaml").write_text("edgebuild: 1\nname: nb\nmodel: {onnx: m.onnx}\ndata: {calib: calib.npz}\n"
                                     "targets: [x86-64]\nsteps:\n  qdq: {use: quantize-static, with: {data: calib}}\n"
                                     "ship:\n  x86-64: [qdq]\nchecks:\n  fidelity: {data: calib, min_cosine: 0.95}\n")
    r = clikit.in_process(["run", "r.yaml"], tmp_path, os.environ)
    assert r.code == 0, r.err
    m = json.loads((tmp_path / "dist" / "nb" / "manifest.json").read_text())
    fid = m["targets"]["x86-64"]["artifacts"][0]["checks"]["measurements"]["fidelity"]
    assert fid["samples"] == 40 and fid["cosine"] > 0.95


def test_nan_in_an_input_array_is_named(tmp_path: Path) -> None:
    x = np.zeros((5, 3), np.float32)
    x[2, 1] = np.nan
    np.savez(tmp_path / "d.npz", x=x, ids=np.zeros((5, 3), np.int64))
    assert datasets.nan_problem(tmp_path / "d.npz", ["x", "ids"]) == \
        "array 'x' of d.npz holds NaN values (1 of 5 samples, the first at index 2)"
    np.savez(tmp_path / "ok.npz", x=np.full((5, 3), np.inf, np.float32))   # inf is a value (an attention mask's -inf)
    assert datasets.nan_problem(tmp_path / "ok.npz", ["x"]) is None
