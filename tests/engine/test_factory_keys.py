"""The export step's cache key covers everything that decides what a PyTorch factory builds: the
callable named, and every local source file it imports, wherever the recipe finds them (read from the
plan: nothing is built)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import clikit

ROOT = Path(__file__).resolve().parents[2]

RECIPE = """edgebuild: 1
name: fk
model:
  pytorch: {factory: "FACTORY"}
  inputs:
    x: {shape: [batch, 8], dtype: float32}
targets: [x86-64]
steps:
  fp32: {use: export}
ship:
  x86-64: [fp32]
"""


def plan(root: Path) -> clikit.Result:
    return clikit.in_process(["plan", "recipe.yaml", "--format", "json"], root, dict(os.environ, PYTHONPATH=str(ROOT)))


def key(root: Path, factory: str) -> str:
    (root / "recipe.yaml").write_text(RECIPE.replace("FACTORY", factory))
    r = plan(root)
    assert r.code == 0, r.err
    return next(n["key"] for n in json.loads(r.out)["nodes"] if n["node"] == "fp32")


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_the_callable_named_is_in_the_key(tmp_path: Path) -> None:
    write(tmp_path / "model.py", "def small():\n    pass\n\ndef large():\n    pass\n")
    assert key(tmp_path, "model.py:small") != key(tmp_path, "model.py:large")


def test_a_package_module_factory_tracks_its_files(tmp_path: Path) -> None:
    write(tmp_path / "mylib" / "__init__.py", "")
    write(tmp_path / "mylib" / "net.py", "from mylib import blocks\nW = 4\ndef build():\n    pass\n")
    write(tmp_path / "mylib" / "blocks.py", "K = 1\n")
    before = key(tmp_path, "mylib.net:build")
    write(tmp_path / "mylib" / "net.py", "from mylib import blocks\nW = 6\ndef build():\n    pass\n")
    after_net = key(tmp_path, "mylib.net:build")
    write(tmp_path / "mylib" / "blocks.py", "K = 2\n")
    assert len({before, after_net, key(tmp_path, "mylib.net:build")}) == 3


def test_helpers_beside_the_recipe_and_same_named_helpers_are_tracked(tmp_path: Path) -> None:
    write(tmp_path / "common.py", "W = 4\n")
    write(tmp_path / "models" / "net.py", "import common\nfrom a import utils as ua\nfrom b import utils as ub\n"
                                          "def build():\n    pass\n")
    for d in ("a", "b"):
        write(tmp_path / "models" / d / "__init__.py", "")
        write(tmp_path / "models" / d / "utils.py", "X = 1\n")
    keys = [key(tmp_path, "models/net.py:build")]
    for f in ("common.py", "models/a/utils.py", "models/b/utils.py"):
        write(tmp_path / f, (tmp_path / f).read_text() + "# changed\n")
        keys.append(key(tmp_path, "models/net.py:build"))
    assert len(set(keys)) == 4   # each edit changes the key
    r = plan(tmp_path)
    sources = next(n for n in json.loads(r.out)["nodes"] if n["node"] == "fp32")
    assert r.code == 0 and sources["key"] == keys[-1]
