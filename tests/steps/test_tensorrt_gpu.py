"""The real TensorRT build: runs only where TensorRT imports and a CUDA GPU is present (marker `gpu`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgebuild.steps.tensorrt import TensorRT

trt = pytest.importorskip("tensorrt")
pytestmark = pytest.mark.gpu
if not hasattr(trt, "Builder"):
    pytest.skip("the tensorrt module here is only type stubs", allow_module_level=True)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_builds_an_engine_with_a_batch_profile(kit, models, tmp_path: Path, precision: str) -> None:
    from edgebuild.engine import hostinfo

    if hostinfo.gpu() is None:
        pytest.skip("no CUDA GPU on this host")
    ctx = kit.make_ctx(TensorRT, tmp_path / "out", {"precision": precision, "max_batch": 4}, model=models["mlp"])
    ctx.state_out = tmp_path / "state"
    ctx.state_out.mkdir()
    info = TensorRT().run(ctx)
    engine = tmp_path / "out" / "model.engine"
    assert engine.stat().st_size > 0
    meta = json.loads((tmp_path / "out" / "engine.json").read_text())
    assert meta["precision"] == precision and meta["reproducible"] is False
    first = next(iter(meta["profile"].values()))
    assert first["max"][0] == 4 and first["min"][0] == 1
    timing = tmp_path / "state" / "timing.cache"
    assert timing.stat().st_size > 0, "timing cache not kept"
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    assert runtime.deserialize_cuda_engine(engine.read_bytes()) is not None
    assert info["tensorrt"] == trt.__version__


def test_a_second_build_starts_from_the_timing_cache(kit, models, tmp_path: Path) -> None:
    """The carried state: a build given the first one's timing cache merges it, and the cache does not shrink."""
    from edgebuild.engine import hostinfo

    if hostinfo.gpu() is None:
        pytest.skip("no CUDA GPU on this host")
    first = tmp_path / "first"
    first.mkdir()
    ctx = kit.make_ctx(TensorRT, tmp_path / "out1", {"precision": "fp16"}, model=models["mlp"])
    ctx.state_out = first
    TensorRT().run(ctx)
    second = tmp_path / "second"
    second.mkdir()
    ctx = kit.make_ctx(TensorRT, tmp_path / "out2", {"precision": "fp16"}, model=models["mlp"])
    ctx.state_in, ctx.state_out = [first], second
    TensorRT().run(ctx)
    assert (second / "timing.cache").stat().st_size >= (first / "timing.cache").stat().st_size
