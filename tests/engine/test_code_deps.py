"""A step's code digest covers every edgebuild module its kind runs, found from its imports (edgebuild.engine.codedeps):
edits are made to a copy of the package, never to the real files."""

from __future__ import annotations

import modulefinder
import shutil
import sys
from pathlib import Path

import pytest

from edgebuild.checks.measure import Measure
from edgebuild.engine import codedeps, plan
from edgebuild.engine.digest import StatCache
from edgebuild.steps import kinds
from edgebuild.steps.base import StepKind

KINDS: dict[str, type[StepKind]] = {name: k for name, k in {**kinds(), "measure": Measure}.items()
                                    if Path(sys.modules[k.__module__].__file__ or "").resolve().is_relative_to(plan.PACKAGE)}


def copy_package(dest: Path) -> Path:
    root = dest / "edgebuild"
    shutil.copytree(plan.PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def module_file(kind: type[StepKind], root: Path) -> Path:
    """The kind's module in the package copy at `root`."""
    return root / Path(sys.modules[kind.__module__].__file__ or "").resolve().relative_to(plan.PACKAGE)


def digests(root: Path, stats: StatCache) -> dict[str, str]:
    return {name: plan.code_digest([module_file(k, root)], k.code_files, stats, root) for name, k in KINDS.items()}


def found_by_modulefinder(kind: type[StepKind], root: Path) -> set[Path]:
    """The package's modules Python's own modulefinder sees `kind`'s module import (it reads the bytecode of
    nested functions too), as files: an independent check of codedeps' reading of import statements."""
    finder = modulefinder.ModuleFinder(path=[str(root.parent)])   # nothing else is found: third-party modules are skipped
    finder.import_hook(kind.__module__)
    files = {name: getattr(m, "__file__", None) for name, m in finder.modules.items()}
    return {Path(f).resolve() for name, f in files.items() if f and name.split(".")[0] == root.name}


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_package(tmp_path_factory.mktemp("pkg"))


@pytest.fixture(scope="module")
def reach(package: Path) -> dict[str, set[Path]]:
    """Kind name -> the files of the package copy its module imports, according to modulefinder."""
    return {name: found_by_modulefinder(k, package) for name, k in KINDS.items()}


def test_every_kind_has_a_module_in_the_package() -> None:
    assert {"optimize", "quantize-static", "wasm-bundle", "measure"} <= set(KINDS)


def test_the_closure_is_what_modulefinder_finds(package: Path, reach: dict[str, set[Path]], tmp_path: Path) -> None:
    stats = StatCache(tmp_path / "stat.json")
    for name, k in KINDS.items():
        assert set(codedeps.closure(module_file(k, package), package, stats)) == reach[name], name


def test_editing_rewrite_changes_optimize(tmp_path: Path) -> None:
    """The stale key this fixes: optimize calls onnx/rewrites lazily, and no hand-kept list named it. Only the
    rewrite modules a kind imports are in its key: editing Gemm->MatMul leaves optimize's key alone."""
    root = copy_package(tmp_path)
    stats = StatCache(tmp_path / "stat.json")
    before = digests(root, stats)
    with open(root / "onnx" / "rewrites" / "hardswish_fusion.py", "a") as f:
        f.write("# edited\n")
    after = digests(root, stats)
    assert before["optimize"] != after["optimize"]
    assert before["tensorrt"] == after["tensorrt"]   # it does not use onnx/rewrites
    with open(root / "onnx" / "rewrites" / "gemm_as_matmul.py", "a") as f:
        f.write("# edited\n")
    again = digests(root, stats)
    assert again["quantize-dynamic"] != after["quantize-dynamic"]
    assert again["optimize"] == after["optimize"]


def test_exactly_the_kinds_that_import_a_module_change_when_it_changes(package: Path, reach: dict[str, set[Path]],
                                                                       tmp_path: Path) -> None:
    """Every module of the package (and every template a kind names) edited in turn: the kinds whose digest
    changes are those whose modules import it, directly or not."""
    stats = StatCache(tmp_path / "stat.json")
    data = sorted({package / f for k in KINDS.values() for f in k.code_files})   # templates
    assert data and all(f.suffix != ".py" for f in data)
    before = digests(package, stats)
    for f in sorted(package.rglob("*.py")) + data:
        with open(f, "a") as out:
            out.write("\n# edited\n")
        after = digests(package, stats)
        changed = {name for name in KINDS if after[name] != before[name]}
        users = {name for name, files in reach.items() if f.resolve() in files}
        users |= {name for name, k in KINDS.items() if f in [package / c for c in k.code_files]}
        assert changed == users, f.relative_to(package)
        before = after
    assert {"optimize"} <= {name for name, files in reach.items() if package.resolve() / "onnx" / "rewrites" / "hardswish_fusion.py" in files}
    assert not any(package.resolve() / "cli.py" in files for files in reach.values())


def test_imports_are_remembered_by_content_across_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = copy_package(tmp_path)
    stats = StatCache(tmp_path / "stat.json")
    first = codedeps.closure(root / "steps" / "optimize.py", root, stats)
    assert (tmp_path / "imports.json").is_file()
    # as in a new process, nothing in memory: unchanged files are not parsed again, an edited one is
    monkeypatch.setattr(codedeps, "_refs", {})
    monkeypatch.setattr(codedeps, "_stored", {})
    codedeps._deps.cache_clear()
    parsed: list[bytes] = []
    real = codedeps.parse

    def counted(source: bytes) -> list[codedeps.Ref]:
        parsed.append(source)
        return real(source)

    monkeypatch.setattr(codedeps, "parse", counted)
    assert codedeps.closure(root / "steps" / "optimize.py", root, StatCache(tmp_path / "stat.json")) == first
    assert parsed == []
    (root / "onnx" / "rewrites" / "__init__.py").write_text((root / "onnx" / "rewrites" / "__init__.py").read_text() + "\nfrom edgebuild import cli\n")
    again = codedeps.closure(root / "steps" / "optimize.py", root, StatCache(tmp_path / "stat.json"))
    assert len(parsed) == 2 and root / "cli.py" in again   # the edited file, and the module it now imports


def test_relative_and_function_level_imports(tmp_path: Path) -> None:
    root = tmp_path.resolve() / "edgebuild"
    for name, text in {"__init__.py": "", "a.py": "def f():\n    from .b import x\n    from . import c\n",
                       "b.py": "import numpy\nx = 1\n", "c.py": "from ..outside import y\n",
                       "sub/__init__.py": "", "sub/d.py": "def g():\n    from ..a import f\n",
                       "e.py": "import os\n"}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    got = codedeps.closure(root / "sub" / "d.py", root, StatCache(tmp_path / "stat.json"))
    assert [str(f.relative_to(root)) for f in got] == ["__init__.py", "a.py", "b.py", "c.py", "sub/__init__.py", "sub/d.py"]


def test_a_step_reading_the_recipes_onnx_model_covers_its_normalization(tmp_path: Path) -> None:
    """The worker rewrites the recipe's ONNX model to model.inputs (onnx/source.py, onnx/rewrites/) before a
    step that reads it runs: that code is in such a step's digest."""
    from edgebuild.frontend.recipe import StepSpec

    trt = KINDS["tensorrt"]
    spec = StepSpec("engine", "tensorrt", trt, None, trt.fill_defaults({}))
    stats = StatCache(tmp_path / "stat.json")
    source = plan.PACKAGE / "onnx" / "source.py"
    assert plan.PACKAGE / "onnx" / "rewrites" / "if_inlining.py" in codedeps.closure(source, plan.PACKAGE, stats)
    assert source not in codedeps.closure(module_file(trt, plan.PACKAGE), plan.PACKAGE, stats)
    reading = plan.step_code_digest(spec, stats, reads_source=True)
    assert reading == plan.code_digest([module_file(trt, plan.PACKAGE), source], (), stats)
    assert reading != plan.step_code_digest(spec, stats)
