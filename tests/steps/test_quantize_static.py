"""quantize-static: calibrated int8, close to fp32, byte-identical across runs, plan-time checks."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgebuild.steps.base import PlanContext, StepError
from edgebuild.steps.quantize_static import QuantizeStatic


def _x(n: int = 4) -> np.ndarray:
    return np.random.default_rng(5).standard_normal((n, 3, 16, 16)).astype(np.float32)


def _close_to_fp32(kit, fp32: Path, int8: Path, x: np.ndarray, tol: float) -> float:
    (want,) = kit.run_ort(fp32, {"x": x})
    (got,) = kit.run_ort(int8, {"x": x})
    err = float(np.max(np.abs(got - want)))
    assert err <= tol * float(np.max(np.abs(want))), err
    return err


def test_qdq_model_is_close_to_fp32(kit, tmp_path: Path, models, cnn_data: Path) -> None:
    ctx = kit.make_ctx(QuantizeStatic, tmp_path, {"data": "calib"}, model=models["cnn"], data={"calib": cnn_data})
    facts = QuantizeStatic().run(ctx)
    model = onnx.load(str(ctx.output_model))
    assert model.ir_version <= ctx.ir_version
    ops = facts["ops"]
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0
    assert facts["samples"] == 32 and facts["method"] == "minmax" and facts["format"] == "qdq"
    assert facts["size_after"] < facts["size_before"]
    assert ctx.output_model.stat().st_size == facts["size_after"]
    # int8 error stays within 5% of the output range on calibration-like inputs
    _close_to_fp32(kit, models["cnn"], ctx.output_model, _x(), tol=0.05)


def test_quantize_static_is_byte_deterministic(kit, tmp_path: Path, models, cnn_data: Path) -> None:
    params = {"data": "calib", "per_channel": True}
    a = kit.make_ctx(QuantizeStatic, tmp_path / "a", params, model=models["cnn"], data={"calib": cnn_data})
    b = kit.make_ctx(QuantizeStatic, tmp_path / "b", params, model=models["cnn"], data={"calib": cnn_data})
    fa, fb = QuantizeStatic().run(a), QuantizeStatic().run(b)
    assert a.output_model.read_bytes() == b.output_model.read_bytes()
    assert fa == fb


def test_qoperator_format_uses_integer_ops(kit, tmp_path: Path, models, cnn_data: Path) -> None:
    ctx = kit.make_ctx(QuantizeStatic, tmp_path, {"data": "calib", "format": "qoperator", "samples": 8},
                       model=models["cnn"], data={"calib": cnn_data})
    facts = QuantizeStatic().run(ctx)
    assert facts["ops"].get("QLinearConv") == 2 and facts["samples"] == 8
    _close_to_fp32(kit, models["cnn"], ctx.output_model, _x(), tol=0.05)


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_histogram_methods_with_batch_of_one_feeds(kit, tmp_path: Path, models, mlp_data: Path, method: str) -> None:
    minmax = kit.make_ctx(QuantizeStatic, tmp_path / "minmax", {"data": "d", "samples": 16},
                          model=models["mlp"], data={"d": mlp_data})
    QuantizeStatic().run(minmax)
    ctx = kit.make_ctx(QuantizeStatic, tmp_path / method, {"data": "d", "samples": 16, "method": method},
                       model=models["mlp"], data={"d": mlp_data})
    facts = QuantizeStatic().run(ctx)
    assert facts["method"] == method and facts["ops"]["QuantizeLinear"] > 0
    # a histogram method picks different ranges than min/max (ORT's default entropy settings would not)
    assert ctx.output_model.read_bytes() != minmax.output_model.read_bytes()
    x = np.random.default_rng(9).standard_normal((4, 64)).astype(np.float32)
    (want,) = kit.run_ort(models["mlp"], {"x": x})
    (got,) = kit.run_ort(ctx.output_model, {"x": x})
    # entropy clips rare large activations on purpose: judge the typical error, not the worst one
    assert float(np.mean(np.abs(got - want))) <= 0.1 * float(np.mean(np.abs(want)))


def test_dataset_without_the_model_input(kit, tmp_path: Path, models) -> None:
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, image=_x(2))
    ctx = kit.make_ctx(QuantizeStatic, tmp_path / "o", {"data": "calib"}, model=models["cnn"], data={"calib": wrong})
    with pytest.raises(StepError, match="no array for model input.*x.*it has: image") as e:
        QuantizeStatic().run(ctx)
    assert e.value.recipe_path == ("data", "calib")


def _plan_ctx(params: dict, data: dict) -> PlanContext:
    doc = types.SimpleNamespace(at=lambda path, key=False: None)
    recipe = types.SimpleNamespace(data=data, doc=doc)
    return PlanContext("int8", QuantizeStatic.fill_defaults(params), recipe, "onnx", [])


def test_check_reports_a_bad_type_combination() -> None:
    # an undeclared dataset is reported by the recipe stage for every kind (tests/failing covers it)
    ctx = _plan_ctx({"data": "calib"}, {"calib": Path("calib.npz")})
    QuantizeStatic().check(ctx)
    assert ctx.problems == []
    ctx = _plan_ctx({"data": "calib", "activation_type": "int8", "weight_type": "uint8"}, {"calib": Path("c.npz")})
    QuantizeStatic().check(ctx)
    assert len(ctx.problems) == 1 and "uint8 weights" in ctx.problems[0].message
