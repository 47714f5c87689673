"""distill: a real student trained on a real teacher's soft targets: smaller, exported like the recipe's
model, the same bytes twice, soft loss alone without labels, and a located error for a misfit student."""

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
from edgebuild.steps.distill import Distill  # noqa: E402
from edgebuild.steps.prune import Prune  # noqa: E402


@pytest.fixture(scope="module")
def recipe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return torchkit.recipe_dir(tmp_path_factory.mktemp("recipe"))


def _run(kit: Any, recipe: Path, out: Path, params: dict[str, Any], kind: Any = Distill,
         input_dir: Path | None = None, step_id: str = "small") -> tuple[dict[str, Any], Any]:
    ctx = kit.make_ctx(kind, out, params, source=torchkit.source(recipe), inputs=torchkit.INPUTS,
                       data=torchkit.data(recipe), recipe_dir=recipe, step_id=step_id)
    ctx.input_dir = input_dir
    return kind().run(ctx), ctx


PARAMS = {"student": "models.py:student", "data": "train", "epochs": 3, "batch": 16, "eval": "eval"}


def test_the_student_learns_from_the_teacher_and_exports(kit, recipe: Path, tmp_path: Path) -> None:
    facts, ctx = _run(kit, recipe, tmp_path / "d", PARAMS)
    assert facts["params"]["student"] < facts["params"]["teacher"] / 5
    assert facts["labels"] is True and len(facts["loss"]) == 3 and facts["loss"][-1] < facts["loss"][0]
    assert facts["agreement"]["data"] == "eval" and 0 <= facts["agreement"]["value"] <= 1
    assert set(facts["accuracy"]) == {"data", "teacher", "student"}
    student = torch_modules.load_saved(ctx, tmp_path / "d")
    assert type(student).__name__ == "Small"
    exported, _ = _run(kit, recipe, tmp_path / "onnx", {}, kind=Export, input_dir=tmp_path / "d", step_id="fp32")
    assert exported["outputs"] == {"output": ["batch", 4]}


def test_the_same_key_gives_the_same_bytes(kit, recipe: Path, tmp_path: Path) -> None:
    a, _ = _run(kit, recipe, tmp_path / "a", PARAMS)
    b, _ = _run(kit, recipe, tmp_path / "b", PARAMS)
    assert a == b and torchkit.digest(tmp_path / "a") == torchkit.digest(tmp_path / "b")


def test_without_labels_the_soft_loss_alone_trains(kit, recipe: Path, tmp_path: Path) -> None:
    facts, _ = _run(kit, recipe, tmp_path / "soft", dict(PARAMS, data="unlabelled", eval=None))
    assert facts["labels"] is False and facts["agreement"]["data"] == "unlabelled"
    assert "accuracy" not in facts


def test_a_pruned_teacher_and_a_pruned_student(kit, recipe: Path, tmp_path: Path) -> None:
    """prune -> distill -> prune: each step rebuilds its input from the one before (factory + saved changes)."""
    _run(kit, recipe, tmp_path / "p", {"amount": 0.5}, kind=Prune, step_id="pruned")
    _run(kit, recipe, tmp_path / "d", dict(PARAMS, epochs=1), input_dir=tmp_path / "p")
    facts, ctx = _run(kit, recipe, tmp_path / "pp", {"amount": 0.5, "round_to": 4}, kind=Prune, input_dir=tmp_path / "d")
    assert facts["channels"]["conv"] == [4, 8]
    assert torch_modules.load_saved(ctx, tmp_path / "pp").conv.out_channels == 4


def test_a_student_whose_outputs_do_not_match_is_located(kit, recipe: Path, tmp_path: Path) -> None:
    with pytest.raises(StepError) as info:
        _run(kit, recipe, tmp_path / "x", dict(PARAMS, student="models.py:three_classes"))
    err = info.value
    assert err.message == "the student's outputs [[2, 3]] do not match the teacher's [[2, 4]] on a batch of 2"
    assert err.recipe_path == ("steps", "small", "with", "student") and "same number of classes" in (err.hint or "")


def test_the_student_files_enter_the_key(tmp_path: Path) -> None:
    (tmp_path / "student.py").write_text("import layers\n\ndef build():\n    return layers.Net()\n")
    (tmp_path / "layers.py").write_text("class Net: ...\n")
    files = Distill.source_files({"student": "student.py:build"}, tmp_path)
    assert sorted(p.name for p in files.values()) == ["layers.py", "student.py"]
