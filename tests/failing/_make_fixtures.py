"""Write the small support files the failing-recipe cases share into _fixtures/ (deterministic).

Run once after changing it: `.venv/bin/python tests/failing/_make_fixtures.py`; the outputs are
committed so the tests need neither this script nor torch to set up. Every file stays a few KB.
"""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "_fixtures"


def tiny_onnx(path: Path) -> None:
    """y = Relu(x @ w): x float32 [batch, 4], a constant w [4, 2] (so quantize steps have work), opset 17."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.linspace(-1, 1, 8, dtype=np.float32).reshape(4, 2), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])], "tiny",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgebuild-tests")
    m.ir_version = 8
    onnx.save(m, str(path))


def weights(good: Path, wrong: Path) -> None:
    import torch

    spec = importlib.util.spec_from_file_location("_fixture_model", OUT / "model.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(0)
    torch.save(mod.build().state_dict(), good)
    # saved from a different net: fc is 3 -> 2 instead of 4 -> 2, and an extra layer
    torch.save({"fc.weight": torch.zeros(2, 3), "fc.bias": torch.zeros(2), "head.weight": torch.zeros(2, 2)}, wrong)


def datasets() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 4)).astype(np.float32)
    np.savez(OUT / "data.npz", x=x)
    np.savez(OUT / "data-float64.npz", x=x.astype(np.float64))
    np.savez(OUT / "data-no-x.npz", input=x)
    np.savez(OUT / "data-wrong-shape.npz", x=rng.standard_normal((8, 3, 4)).astype(np.float32))


def main() -> None:
    OUT.mkdir(exist_ok=True)
    tiny_onnx(OUT / "tiny.onnx")
    (OUT / "corrupt.onnx").write_bytes(random.Random(0).randbytes(512))
    (OUT / "lfs-pointer.onnx").write_text(
        "version https://git-lfs.github.com/spec/v1\n"
        "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
        "size 21049\n")
    weights(OUT / "weights.pt", OUT / "weights-wrong.pt")
    datasets()
    for f in sorted(OUT.iterdir()):
        if f.is_file():
            print(f"{f.relative_to(HERE)}: {f.stat().st_size} bytes")


if __name__ == "__main__":
    main()
