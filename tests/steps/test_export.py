"""export: a real PyTorch factory exported, checked against ONNX Runtime, and its failures located."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgebuild.steps.base import StepError
from edgebuild.steps.export import FACTORY, WEIGHTS, Export

torch = pytest.importorskip("torch")

MODEL_PY = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, out=2):
        super().__init__()
        self.conv = nn.Conv1d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm1d(4)
        self.fc = nn.Linear(4, out)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean(dim=2))


class Two(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(x), x.sum(dim=1)


class Named(Two):
    def forward(self, x):
        return {"logits": self.fc(x), "total": x.sum(dim=1)}


class Noisy(Two):
    def forward(self, x):
        return self.fc(x) + torch.rand_like(self.fc(x))   # random ops cannot match across runtimes


class Det(nn.Module):
    def forward(self, x):
        return torch.linalg.det(x)


def build():
    return Net()


def det():
    return Det()


def build_wide():
    return Net(out=3)


def two():
    return Two()


def named():
    return Named()


def noisy():
    return Noisy()


def broken():
    raise ValueError("the config says 17 layers")


def not_a_module():
    return 42
'''

INPUTS = {"x": {"shape": ["batch", 1, 16], "dtype": "float32"}}
VEC = {"x": {"shape": ["batch", 8], "dtype": "float32"}}


@pytest.fixture
def recipe_dir(tmp_path: Path) -> Path:
    d = tmp_path / "recipe"
    d.mkdir()
    (d / "model.py").write_text(textwrap.dedent(MODEL_PY))
    return d


def _weights(recipe_dir: Path, name: str = "weights.pt", **kw) -> Path:
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"_w_{name.replace('.', '_')}", recipe_dir / "model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(7)
    net = mod.Net(**kw)
    with torch.no_grad():   # non-trivial BatchNorm statistics, so folding them into the conv matters
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 2.0)
    path = recipe_dir / name
    torch.save(net.state_dict(), path)
    return path


def _ctx(kit, tmp_path: Path, recipe_dir: Path, factory: str = "model.py:build", weights: Path | None = None,
         params: dict | None = None, inputs: dict | None = None, **kw):
    return kit.make_ctx(Export, tmp_path / "out", params, source={"pytorch": {"factory": factory, "weights": weights}},
                        inputs=inputs or INPUTS, recipe_dir=recipe_dir, step_id="fp32", **kw)


def test_export_matches_pytorch_and_pins_ir(kit, tmp_path: Path, recipe_dir: Path) -> None:
    ctx = _ctx(kit, tmp_path, recipe_dir, weights=_weights(recipe_dir), ir_version=8, max_opset=17)
    facts = Export().run(ctx)
    model = onnx.load(str(ctx.output_model))
    assert model.ir_version <= 8
    assert model.producer_name == "edgebuild"
    assert facts["opset"] == 17 and facts["samples"] == 4
    assert facts["max_abs_diff"] <= 1e-4
    assert facts["inputs"] == {"x": {"shape": ["batch", 1, 16], "dtype": "float32"}}
    assert facts["outputs"] == {"output": ["batch", 2]}
    # the batch dim is dynamic: ONNX Runtime runs batch 3 and matches PyTorch with the weights loaded
    net = _load_net(recipe_dir, _weights(recipe_dir, "again.pt"))
    x = np.random.default_rng(0).standard_normal((3, 1, 16)).astype(np.float32)
    (got,) = kit.run_ort(ctx.output_model, {"x": x})
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)


def _load_net(recipe_dir: Path, weights: Path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("_check_net", recipe_dir / "model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    net = mod.Net()
    net.load_state_dict(torch.load(weights, weights_only=True))
    return net.eval()


def test_export_is_byte_identical(kit, tmp_path: Path, recipe_dir: Path) -> None:
    w = _weights(recipe_dir)
    a = _ctx(kit, tmp_path / "a", recipe_dir, weights=w)
    b = _ctx(kit, tmp_path / "b", recipe_dir, weights=w)
    fa, fb = Export().run(a), Export().run(b)
    assert a.output_model.read_bytes() == b.output_model.read_bytes()
    assert fa == fb


def test_export_without_weights_is_seeded(kit, tmp_path: Path, recipe_dir: Path) -> None:
    a = _ctx(kit, tmp_path / "a", recipe_dir, params={"opset": 13})
    b = _ctx(kit, tmp_path / "b", recipe_dir, params={"opset": 13})
    Export().run(a)
    Export().run(b)
    assert a.output_model.read_bytes() == b.output_model.read_bytes()
    assert onnx.load(str(a.output_model)).opset_import[0].version == 13


def test_output_names_follow_the_module(kit, tmp_path: Path, recipe_dir: Path) -> None:
    ctx = _ctx(kit, tmp_path / "t", recipe_dir, factory="model.py:two", inputs=VEC)
    assert list(Export().run(ctx)["outputs"]) == ["output_0", "output_1"]
    ctx = _ctx(kit, tmp_path / "n", recipe_dir, factory="model.py:named", inputs=VEC)
    assert Export().run(ctx)["outputs"] == {"logits": ["batch", 3], "total": ["batch"]}


def test_samples_from_a_dataset(kit, tmp_path: Path, recipe_dir: Path) -> None:
    data = tmp_path / "calib.npz"
    np.savez(data, x=np.random.default_rng(3).standard_normal((3, 1, 16)).astype(np.float32))
    ctx = _ctx(kit, tmp_path, recipe_dir, params={"data": "calib", "samples": 8}, data={"calib": data})
    assert Export().run(ctx)["samples"] == 3
    ctx = _ctx(kit, tmp_path / "x", recipe_dir, params={"data": "nope"}, data={"calib": data})
    with pytest.raises(StepError) as e:
        Export().run(ctx)
    assert e.value.recipe_path == ("steps", "fp32", "with", "data")


def test_difference_above_tolerance_is_located(kit, tmp_path: Path, recipe_dir: Path) -> None:
    ctx = _ctx(kit, tmp_path, recipe_dir, factory="model.py:noisy", inputs=VEC)
    with pytest.raises(StepError, match="differ from PyTorch") as e:
        Export().run(ctx)
    assert e.value.recipe_path == ("steps", "fp32", "with", "tolerance")


def test_factory_that_raises(kit, tmp_path: Path, recipe_dir: Path) -> None:
    with pytest.raises(StepError, match="raised ValueError: the config says 17 layers") as e:
        Export().run(_ctx(kit, tmp_path, recipe_dir, factory="model.py:broken"))
    assert e.value.recipe_path == FACTORY


@pytest.mark.parametrize("factory,message", [
    ("model.py:not_a_module", "returned int, not a torch.nn.Module"),
    ("model.py:nothing_here", "factory callable 'nothing_here' not found in model.py"),
    ("missing.py:build", "factory file not found: missing.py"),
    ("no_such_pkg.models:build", "factory module 'no_such_pkg.models' not found"),
])
def test_factory_problems(kit, tmp_path: Path, recipe_dir: Path, factory: str, message: str) -> None:
    with pytest.raises(StepError, match=message) as e:
        Export().run(_ctx(kit, tmp_path, recipe_dir, factory=factory))
    assert e.value.recipe_path == FACTORY


def test_factory_with_a_relative_import(kit, tmp_path: Path, recipe_dir: Path) -> None:
    """`from .helpers import X` in a factory file works: the file is loaded inside a package of its folder."""
    sub = recipe_dir / "nets"
    sub.mkdir()
    (sub / "helpers.py").write_text("WIDTH = 8\n")
    (sub / "net.py").write_text(textwrap.dedent(MODEL_PY) + "\nfrom .helpers import WIDTH\nassert WIDTH == 8\n")
    facts = Export().run(_ctx(kit, tmp_path, recipe_dir, factory="nets/net.py:build"))
    assert facts["outputs"] == {"output": ["batch", 2]}


def test_factory_from_a_package(kit, tmp_path: Path, recipe_dir: Path) -> None:
    pkg = recipe_dir / "netpkg_for_export_test"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(textwrap.dedent(MODEL_PY))
    facts = Export().run(_ctx(kit, tmp_path, recipe_dir, factory="netpkg_for_export_test.nets:build"))
    assert facts["outputs"] == {"output": ["batch", 2]}


def test_weights_that_do_not_fit(kit, tmp_path: Path, recipe_dir: Path) -> None:
    wide = _weights(recipe_dir, "wide.pt", out=3)
    with pytest.raises(StepError, match=r"shape mismatch.*fc\.weight \(file \[3, 4\], model \[2, 4\]\)") as e:
        Export().run(_ctx(kit, tmp_path, recipe_dir, weights=wide))
    assert e.value.recipe_path == WEIGHTS
    state = torch.load(_weights(recipe_dir), weights_only=True)
    state["extra.bias"] = state.pop("fc.bias")
    partial = recipe_dir / "partial.pt"
    torch.save(state, partial)
    with pytest.raises(StepError, match=r"1 missing key\(s\): fc\.bias; 1 unexpected key\(s\): extra\.bias") as e:
        Export().run(_ctx(kit, tmp_path, recipe_dir, weights=partial))
    assert e.value.recipe_path == WEIGHTS
    assert "DataParallel" not in (e.value.hint or "")


def test_weights_hints_for_data_parallel_keys_and_pickled_models(kit, tmp_path: Path, recipe_dir: Path) -> None:
    state = torch.load(_weights(recipe_dir), weights_only=True)
    torch.save({f"module.{k}": v for k, v in state.items()}, recipe_dir / "dp.pt")
    with pytest.raises(StepError) as e:
        Export().run(_ctx(kit, tmp_path, recipe_dir, weights=recipe_dir / "dp.pt"))
    assert "'module.' prefix of a DataParallel" in (e.value.hint or "")
    torch.save(torch.nn.Linear(2, 2), recipe_dir / "whole.pt")   # the module itself, pickled
    with pytest.raises(StepError) as e:
        Export().run(_ctx(kit, tmp_path, recipe_dir, weights=recipe_dir / "whole.pt"))
    assert "whole pickled model" in (e.value.hint or "") and "\x1b[" not in e.value.message


def test_weights_that_are_not_a_state_dict(kit, tmp_path: Path, recipe_dir: Path) -> None:
    junk = recipe_dir / "junk.pt"
    junk.write_bytes(b"definitely not a torch file")
    with pytest.raises(StepError, match="cannot load weights junk.pt") as e:
        Export().run(_ctx(kit, tmp_path, recipe_dir, weights=junk))
    assert e.value.recipe_path == WEIGHTS
    ckpt = recipe_dir / "ckpt.pt"
    torch.save({"state_dict": {}, "epoch": 3}, ckpt)
    with pytest.raises(StepError, match="not a state_dict") as e:
        Export().run(_ctx(kit, tmp_path, recipe_dir, weights=ckpt))
    assert "state_dict" in (e.value.hint or "")


def test_opset_above_target_limit(kit, tmp_path: Path, recipe_dir: Path) -> None:
    with pytest.raises(StepError, match="opset 19") as e:
        Export().run(_ctx(kit, tmp_path, recipe_dir, params={"opset": 19}, max_opset=17))
    assert e.value.recipe_path == ("steps", "fp32", "with", "opset")


def test_op_missing_from_the_opset_points_at_opset(kit, tmp_path: Path, recipe_dir: Path) -> None:
    ctx = _ctx(kit, tmp_path, recipe_dir, factory="model.py:det", params={"opset": 9},
               inputs={"x": {"shape": ["batch", 3, 3], "dtype": "float32"}})
    with pytest.raises(StepError, match="could not export the model to ONNX opset 9.*added in version 11") as e:
        Export().run(ctx)
    assert e.value.recipe_path == ("steps", "fp32", "with", "opset")
