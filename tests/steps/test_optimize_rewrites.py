"""optimize: edgebuild's own rewrites before ONNX Runtime's optimizer (initializer inputs dropped,
hard-swish fused, PRelu as Max): what they change, that results stay the same, and (slow) that the
optimized models run faster than without them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper as H
from onnx import numpy_helper as NH

from edgebuild.onnx import graph as onnx_graph
from edgebuild.onnx import runtime as onnx_runtime
from edgebuild.steps.optimize import Optimize

OFF = {"drop_initializer_inputs": False, "fuse": False, "prelu_as_max": False}


def _net(path: Path, kit: Any, act: str, *, init_inputs: bool = False, bn: bool = False, channels: int = 16,
         size: int = 32, layers: int = 4, seed: int = 0) -> Path:
    """x[1, 3, size, size] -> (Conv [-> BatchNorm] -> activation) x layers -> GlobalAveragePool.

    act: "hardswish" (decomposed: x * Clip(x + 3, 0, 6) / 6), "prelu" (per-channel slopes in [0, 1]) or "relu".
    init_inputs: every initializer also listed as a graph input, as exporters before IR 4 wrote them.
    """
    rng = np.random.default_rng(seed)
    inits: list[Any] = []
    nodes: list[Any] = []

    def c(name: str, value: Any) -> str:
        inits.append(NH.from_array(np.asarray(value, dtype=np.float32), name))
        return name

    if act == "hardswish":
        c("three", 3.0), c("zero", 0.0), c("six", 6.0)
    cur, cin = "x", 3
    for i in range(layers):
        nodes.append(H.make_node("Conv", [cur, c(f"w{i}", rng.standard_normal((channels, cin, 3, 3)) * 0.3),
                                          c(f"b{i}", rng.standard_normal(channels) * 0.1)], [f"conv{i}"], pads=[1, 1, 1, 1]))
        x = f"conv{i}"
        if bn:
            nodes.append(H.make_node("BatchNormalization", [x, c(f"g{i}", rng.uniform(0.5, 1.5, channels)),
                                                            c(f"be{i}", rng.standard_normal(channels) * 0.1),
                                                            c(f"mu{i}", rng.standard_normal(channels) * 0.1),
                                                            c(f"var{i}", rng.uniform(0.5, 2, channels))], [f"bn{i}"]))
            x = f"bn{i}"
        y = f"act{i}"
        if act == "hardswish":
            nodes += [H.make_node("Add", [x, "three"], [f"a{i}"]), H.make_node("Clip", [f"a{i}", "zero", "six"], [f"r{i}"]),
                      H.make_node("Mul", [x, f"r{i}"], [f"m{i}"]), H.make_node("Div", [f"m{i}", "six"], [y])]
        elif act == "prelu":
            nodes.append(H.make_node("PRelu", [x, c(f"s{i}", rng.uniform(0, 0.5, (channels, 1, 1)))], [y]))
        else:
            nodes.append(H.make_node("Relu", [x], [y]))
        cur, cin = y, channels
    nodes.append(H.make_node("GlobalAveragePool", [cur], ["y"]))
    inputs = [H.make_tensor_value_info("x", TP.FLOAT, [1, 3, size, size])]
    if init_inputs:
        inputs += [H.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in inits]
    g = H.make_graph(nodes, "net", inputs, [H.make_tensor_value_info("y", TP.FLOAT, [1, channels, 1, 1])], inits)
    m = H.make_model(g, opset_imports=[H.make_opsetid("", 17)])
    m.ir_version = 8
    return kit.save(m, path)


def _feed(size: int = 32, seed: int = 1) -> dict[str, np.ndarray]:
    return {"x": (np.random.default_rng(seed).standard_normal((1, 3, size, size)) * 2).astype(np.float32)}


def _optimize(kit: Any, src: Path, out: Path, **params: Any) -> tuple[dict[str, Any], onnx.ModelProto]:
    ctx = kit.make_ctx(Optimize, out, params, model=src)
    facts = Optimize().run(ctx)
    return facts, onnx.load(str(ctx.output_model))


def _ops(model: onnx.ModelProto) -> dict[str, int]:
    return onnx_graph.count_ops(model)


def test_initializer_inputs_are_dropped_so_batchnorm_folds_and_hardswish_fuses(kit, tmp_path: Path) -> None:
    src = _net(tmp_path / "det.onnx", kit, "hardswish", init_inputs=True, bn=True)
    n_inits = len(onnx.load(str(src)).graph.initializer)
    facts, model = _optimize(kit, src, tmp_path / "on")
    assert facts["rewrites"] == {"drop_initializer_inputs": n_inits, "fuse_hardswish": 4}
    assert [vi.name for vi in model.graph.input] == ["x"]
    ops = _ops(model)
    assert "BatchNormalization" not in ops                               # folded into the convs
    assert not {"Clip", "Div", "Add"} & set(ops)                          # HardSwish, run by ORT as HardSigmoid + Mul
    assert ops.get("HardSigmoid", 0) + ops.get("HardSwish", 0) == 4
    off_facts, off = _optimize(kit, src, tmp_path / "off", **OFF)
    assert "rewrites" not in off_facts
    assert _ops(off)["BatchNormalization"] == 4 and _ops(off)["Clip"] == 4   # ORT alone cannot touch them
    assert facts["nodes_after"] < off_facts["nodes_after"]
    for seed in (1, 2):
        feed = _feed(seed=seed)
        np.testing.assert_allclose(kit.run_ort(tmp_path / "on" / "model.onnx", feed)[0], kit.run_ort(src, feed)[0],
                                   rtol=1e-5, atol=1e-5)


def test_prelu_becomes_max_and_keeps_results(kit, tmp_path: Path) -> None:
    src = _net(tmp_path / "prelu.onnx", kit, "prelu")
    facts, model = _optimize(kit, src, tmp_path / "on")
    assert facts["rewrites"] == {"prelu_to_max": 4}
    assert "PRelu" not in _ops(model) and _ops(model)["Max"] == 4
    feed = _feed()
    np.testing.assert_allclose(kit.run_ort(tmp_path / "on" / "model.onnx", feed)[0], kit.run_ort(src, feed)[0],
                               rtol=1e-5, atol=1e-5)
    facts, model = _optimize(kit, src, tmp_path / "off", prelu_as_max=False)
    assert "rewrites" not in facts and _ops(model)["PRelu"] == 4


def test_each_rewrite_can_be_turned_off(kit, tmp_path: Path) -> None:
    src = _net(tmp_path / "det.onnx", kit, "hardswish", init_inputs=True)
    facts, model = _optimize(kit, src, tmp_path / "nofuse", fuse=False)
    assert set(facts["rewrites"]) == {"drop_initializer_inputs"} and "Clip" in _ops(model)
    facts, model = _optimize(kit, src, tmp_path / "nodrop", drop_initializer_inputs=False)
    assert "rewrites" not in facts                    # the constants are inputs: nothing to fuse either
    assert len(model.graph.input) > 1


def test_defaults_and_version() -> None:
    d = Optimize.fill_defaults({})
    assert d == {"drop_initializer_inputs": True, "fuse": True, "level": "basic", "prelu_as_max": True}
    assert Optimize.version >= 2
    for name in ("drop_initializer_inputs", "fuse", "prelu_as_max"):
        assert Optimize.params[name]["description"]


def test_a_model_with_nothing_to_rewrite_reports_no_rewrites(kit, tmp_path: Path, models) -> None:
    facts, _ = _optimize(kit, models["cnn"], tmp_path / "cnn")
    assert set(facts) == {"level", "nodes_before", "nodes_after"}


# -- speed (slow): the optimized model against the same step with the rewrites off ----------------


def _median_ms(sessions: list[Any], feed: dict[str, np.ndarray], blocks: int = 30, per_block: int = 20) -> list[float]:
    """Median time per run of each session, timed in interleaved blocks (fair under drifting load)."""
    times: list[list[float]] = [[] for _ in sessions]
    for s in sessions:
        for _ in range(30):
            s.run(None, feed)
    for _ in range(blocks):
        for i, s in enumerate(sessions):
            t = time.perf_counter()
            for _ in range(per_block):
                s.run(None, feed)
            times[i].append((time.perf_counter() - t) / per_block * 1e3)
    return [float(np.median(t)) for t in times]


@pytest.mark.slow
@pytest.mark.parametrize("case", ["initializer_inputs", "hardswish", "prelu"])
def test_rewrites_make_the_optimized_model_faster(kit, tmp_path: Path, case: str) -> None:
    """Both outputs are loaded as a target would load them (ONNX Runtime's default optimization level,
    one thread); 600 timed runs each, interleaved. The measured ratio is printed (-s to see it)."""
    if case == "initializer_inputs":
        src = _net(tmp_path / "m.onnx", kit, "hardswish", init_inputs=True, bn=True)
        on = {"fuse": False, "prelu_as_max": False}
    elif case == "hardswish":
        src = _net(tmp_path / "m.onnx", kit, "hardswish")
        on = {"drop_initializer_inputs": False, "prelu_as_max": False}
    else:
        src = _net(tmp_path / "m.onnx", kit, "prelu")
        on = {"drop_initializer_inputs": False, "fuse": False}
    facts, _ = _optimize(kit, src, tmp_path / "on", **on)
    assert facts.get("rewrites")
    _optimize(kit, src, tmp_path / "off", **OFF)
    sessions = [onnx_runtime.session(tmp_path / "off" / "model.onnx"), onnx_runtime.session(tmp_path / "on" / "model.onnx")]
    feed = _feed()
    off_ms, on_ms = _median_ms(sessions, feed)
    print(f"\n{case}: without rewrites {off_ms:.3f} ms, with {on_ms:.3f} ms: {off_ms / on_ms:.2f}x")
    assert on_ms < off_ms
