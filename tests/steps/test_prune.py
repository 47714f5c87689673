"""prune: real Torch-Pruning on a tiny residual CNN: fewer channels for real, an export that takes the
result, the same bytes twice, and located errors for what a user can get wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torchkit

from edgebuild.steps.base import StepError
from edgebuild.steps.export import Export

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")

from edgebuild.pytorch import modules as torch_modules  # noqa: E402
from edgebuild.steps.prune import Prune  # noqa: E402


@pytest.fixture(scope="module")
def recipe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return torchkit.recipe_dir(tmp_path_factory.mktemp("recipe"))


def _run(kit: Any, recipe: Path, out: Path, params: dict[str, Any], factory: str = "models.py:build",
         kind: Any = Prune, input_dir: Path | None = None, step_id: str = "pruned") -> tuple[dict[str, Any], Any]:
    ctx = kit.make_ctx(kind, out, params, source=torchkit.source(recipe, factory), inputs=torchkit.INPUTS,
                       data=torchkit.data(recipe), recipe_dir=recipe, step_id=step_id)
    ctx.input_dir = input_dir
    return kind().run(ctx), ctx


def _error(kit: Any, recipe: Path, tmp_path: Path, params: dict[str, Any], **kw: Any) -> StepError:
    with pytest.raises(StepError) as info:
        _run(kit, recipe, tmp_path / "out", params, **kw)
    return info.value


def test_half_the_channels_go_and_the_model_really_shrinks(kit, recipe: Path, tmp_path: Path) -> None:
    facts, ctx = _run(kit, recipe, tmp_path / "out", {"amount": 0.5})
    model = torch_modules.load_saved(ctx, tmp_path / "out")
    # the residual block's add stays consistent: the stem and both block convs lose the same channels
    assert [model.stem.out_channels, model.block.conv1.out_channels, model.block.conv2.out_channels] == [8, 8, 8]
    assert model.block.conv1.weight.shape == (8, 8, 3, 3) and model.block.bn2.num_features == 8
    assert model.head.weight.shape == (16, 8, 3, 3)
    assert model.fc.weight.shape == (4, 16)          # the classifier keeps its 4 classes
    assert model(torch.zeros(3, 1, 8, 8)).shape == (3, 4)
    assert facts["params"]["after"] < 0.35 * facts["params"]["before"]
    assert facts["macs"]["after"] < 0.35 * facts["macs"]["before"]
    assert facts["channels"]["stem"] == [8, 16] and facts["channels"]["fc"] == [4, 4]
    assert facts["kept_whole"] == ["fc"]
    # what was saved is a plain state_dict: loading it runs no pickled code
    state = torch.load(tmp_path / "out" / "model.pt", weights_only=True)
    assert state["stem.weight"].shape == (8, 1, 3, 3)


def test_export_takes_the_pruned_model_and_its_onnx_is_smaller(kit, recipe: Path, tmp_path: Path) -> None:
    _run(kit, recipe, tmp_path / "pruned", {"amount": 0.5})
    for name, up in (("full", None), ("small", tmp_path / "pruned")):
        facts, _ = _run(kit, recipe, tmp_path / name, {}, kind=Export, input_dir=up, step_id="fp32")
        assert facts["outputs"] == {"output": ["batch", 4]}
    full, small = (tmp_path / n / "model.onnx" for n in ("full", "small"))
    assert small.stat().st_size < 0.5 * full.stat().st_size
    import onnx

    convs = [i for i in onnx.load(str(small)).graph.initializer if len(i.dims) == 4]
    assert sorted(i.dims[0] for i in convs) == [8, 8, 8, 16]


def test_fine_tuning_reports_its_loss_curve_and_accuracy_and_repeats_byte_for_byte(kit, recipe: Path, tmp_path: Path) -> None:
    params = {"amount": 0.5, "steps": 2, "fine_tune": {"data": "train", "epochs": 2, "batch": 16}, "eval": "eval"}
    facts, _ = _run(kit, recipe, tmp_path / "a", params)
    again, _ = _run(kit, recipe, tmp_path / "b", params)
    assert len(facts["fine_tune_loss"]) == 4    # 2 epochs after each of 2 rounds
    assert set(facts["accuracy"]) == {"data", "before", "after"} and facts["accuracy"]["data"] == "eval"
    assert facts == again
    assert torchkit.digest(tmp_path / "a") == torchkit.digest(tmp_path / "b")
    other, _ = _run(kit, recipe, tmp_path / "c", dict(params, seed=1))
    assert torchkit.digest(tmp_path / "c")["model.pt"] != torchkit.digest(tmp_path / "a")["model.pt"]


def test_taylor_importance_ranks_with_gradients_of_the_training_data(kit, recipe: Path, tmp_path: Path) -> None:
    facts, _ = _run(kit, recipe, tmp_path / "t", {"amount": 0.5, "importance": "taylor",
                                                   "fine_tune": {"data": "train", "epochs": 1}})
    assert facts["channels"]["stem"] == [8, 16]


def test_unstructured_only_zeroes_weights_and_says_it_will_not_be_faster(kit, recipe: Path, tmp_path: Path) -> None:
    facts, ctx = _run(kit, recipe, tmp_path / "u", {"amount": 0.5, "mode": "unstructured",
                                                     "fine_tune": {"data": "train", "epochs": 1}})
    model = torch_modules.load_saved(ctx, tmp_path / "u")
    assert model.stem.out_channels == 16 and facts["params"]["after"] == facts["params"]["before"]
    assert 0.49 <= facts["sparsity"] <= 0.51     # zeros survive fine-tuning
    assert float((model.stem.weight == 0).float().mean()) >= 0.45
    assert "not faster" in facts["warning"]


def test_an_unknown_ignore_name_is_located_with_the_closest_module(kit, recipe: Path, tmp_path: Path) -> None:
    err = _error(kit, recipe, tmp_path, {"amount": 0.5, "ignore": ["head", "stemm"]})
    assert err.message == "ignore: 'stemm' is not a module of the model"
    assert err.hint == "did you mean 'stem'?"
    assert err.recipe_path == ("steps", "pruned", "with", "ignore", 1)


def test_ignored_layers_keep_their_channels(kit, recipe: Path, tmp_path: Path) -> None:
    facts, _ = _run(kit, recipe, tmp_path / "i", {"amount": 0.5, "ignore": ["head"]})
    assert facts["channels"]["head"] == [32, 32] and facts["kept_whole"] == ["fc", "head"]


def test_a_forward_with_a_hard_coded_channel_count_is_a_located_error(kit, recipe: Path, tmp_path: Path) -> None:
    err = _error(kit, recipe, tmp_path, {"amount": 0.5}, factory="models.py:hard_coded")
    assert err.message.startswith("the pruned model no longer runs: RuntimeError:")
    assert err.recipe_path == ("steps", "pruned") and "ignore:" in (err.hint or "")


def test_a_training_set_without_the_model_inputs_is_located(kit, recipe: Path, tmp_path: Path) -> None:
    err = _error(kit, recipe, tmp_path, {"amount": 0.5, "fine_tune": {"data": "wrong-input"}})
    assert err.message == "dataset 'wrong-input' has no array for model input(s) x (it has: image, labels)"
    assert err.recipe_path == ("steps", "pruned", "with", "fine_tune", "data")


def test_nested_fine_tune_defaults_enter_the_key() -> None:
    assert Prune.fill_defaults({"amount": 0.3, "fine_tune": {"data": "train"}})["fine_tune"] == \
        {"batch": 32, "data": "train", "epochs": 3, "lr": 0.001, "optimizer": "adam"}
