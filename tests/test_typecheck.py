"""Type checks: the package with mypy, and the TensorRT step against NVIDIA's tensorrt-stubs (TensorRT itself is not installable here)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow   # each check is a mypy process of several seconds

ROOT = Path(__file__).resolve().parent.parent
STUBS = ROOT / ".stubs"

CONFIG = """
[mypy]
strict = True
[mypy-tensorrt.*,tensorrt_bindings.*]
ignore_errors = True
"""


@pytest.fixture(scope="module")
def stubs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (STUBS / "tensorrt_bindings" / "tensorrt.pyi").is_file():
        pytest.skip("tensorrt-stubs not installed in .stubs/ (scripts/setup-tests.sh installs them)")
    out = tmp_path_factory.mktemp("stubs")
    for pkg in ("tensorrt", "tensorrt_bindings"):
        shutil.copytree(STUBS / pkg, out / pkg)
    # tensorrt-stubs 10.13.0.35.1 has two syntax errors: parameters named `in`, and a parameter without a
    # default after defaulted ones. Renaming/defaulting them changes no type that the step relies on.
    pyi = out / "tensorrt_bindings" / "tensorrt.pyi"
    text = re.sub(r"([(,] )in: ", r"\1in_: ", pyi.read_text())
    pyi.write_text(text.replace("channel_axis: int) -> IScaleLayer", "channel_axis: int = ...) -> IScaleLayer"))
    (out / "mypy.ini").write_text(CONFIG)
    return out


def mypy(stubs: Path, target: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(stubs / "mypy.ini"), "--no-incremental",
                           str(target)], cwd=ROOT, capture_output=True, text=True, env={"MYPYPATH": str(stubs),
                                                                                         "PATH": "/usr/bin:/bin"})


def test_tensorrt_step_type_checks_against_the_stubs(stubs: Path) -> None:
    r = mypy(stubs, ROOT / "edgebuild" / "steps" / "tensorrt.py")
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_stubs_are_really_consulted(stubs: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import tensorrt as trt\n\nb = trt.Builder(trt.Logger(trt.Logger.WARNING))\n"
                   "b.build_serialized_network_typo(None)\n")
    r = mypy(stubs, bad)
    assert r.returncode == 1 and "has no attribute \"build_serialized_network_typo\"" in r.stdout


def test_the_whole_package_type_checks() -> None:
    """mypy over edgebuild/ with the project's configuration (pyproject.toml)."""
    r = subprocess.run([sys.executable, "-m", "mypy", "edgebuild"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
