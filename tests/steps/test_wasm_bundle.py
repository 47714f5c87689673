"""wasm-bundle: the web folder it writes, where onnxruntime-web comes from, and the bundle in a real browser.

Browser tests (marked `browser`) serve bundles with `edgebuild serve` on 127.0.0.1 and open them in
headless Chromium (/usr/bin/chromium), driven over the DevTools protocol on a pipe
(--remote-debugging-pipe; standard library only). Each page writes its result as JSON into
<pre id="result">, which the test reads. The outputs must match Python ONNX Runtime on the same
sample within a per-variant tolerance (TOLERANCE below; see docs/web-bundle.md for why).

Tests that build a bundle need npm and the npm registry (onnxruntime-web is fetched once per
session into a temporary downloads folder, or into $EDGEBUILD_DOWNLOADS when set); they skip
when either is missing.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import shutil
import threading
from functools import partial
from pathlib import Path
from typing import Any, Iterator

import clikit
import numpy as np
import pytest
from browser_kit import Chromium, Served

from edgebuild.steps import kinds
from edgebuild.steps import wasm_bundle as wb
from edgebuild.steps.base import WEB, StepError
from edgebuild.steps.fp16 import Fp16
from edgebuild.steps.int4 import Int4
from edgebuild.steps.quantize_dynamic import QuantizeDynamic
from edgebuild.steps.quantize_static import QuantizeStatic
from edgebuild.steps.wasm_bundle import WasmBundle

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
HAVE_NPM = shutil.which("npm") is not None
HAVE_CHROMIUM = Path(CHROMIUM).exists()

# Largest |browser - Python ONNX Runtime| allowed per variant on the test MLP (outputs of magnitude ~0.1-1).
# FP32, FP16 (float32 inputs/outputs) and INT4 (MatMulNBits, float activations) compute in float in
# both runtimes and differ only by summation order and FMA use (WebAssembly SIMD kernels vs. native
# x86 kernels): 1e-5 is ~50x what was measured (1e-7..2e-7); fp16 and int4 get more room in case a
# runtime computes in half precision or int8 activations. fp16-io has float16 inputs and outputs
# (the loader converts numbers to float16 bits and back). INT8 (dynamic and static QDQ) get a few
# output quantization steps: native ONNX Runtime on an x86 CPU without VNNI multiplies uint8 by int8
# with 16-bit saturating adds (VPMADDUBSW), the WebAssembly kernel does not saturate, so the two
# differ where the native result saturates (measured 6e-3 on an AVX2 host; with `reduce_range`,
# which exists for exactly this, they agree exactly: the int8-rr variant, tolerance 1e-5).
TOLERANCE = {"fp32": 1e-5, "fp16": 1e-3, "fp16-io": 1e-3, "int4": 1e-4, "int8": 2e-2, "int8-rr": 1e-5, "qdq": 2e-2}

needs_npm = pytest.mark.skipif(not HAVE_NPM, reason="npm not found: wasm-bundle fetches onnxruntime-web from the npm registry")


def in_browser(test: Any) -> Any:
    """Mark a test `browser`; skip it without Chromium or npm."""
    test = needs_npm(test)
    test = pytest.mark.skipif(not HAVE_CHROMIUM, reason=f"{CHROMIUM} not found (apt-get install chromium)")(test)
    return pytest.mark.browser(test)


def browser_wasm_target() -> dict[str, Any]:
    from edgebuild.frontend import targets

    return targets.load("browser-wasm", ROOT).data


# --------------------------------------------------------------------------------------------
# the kind itself (no network)

def test_kind_is_registered_and_declares_a_target_specific_web_bundle():
    kind = kinds()["wasm-bundle"]
    assert kind is WasmBundle
    assert kind.gives == WEB and kind.takes == ("onnx",) and kind.target_specific
    assert {"onnx", "onnxruntime"} <= set(kind.tools)
    assert kind.fill_defaults({}) == {"runs": 20, "sample": None, "threads": None, "warmup": 3}
    assert kind.dataset_params == ("sample",)


def test_seeded_sample_follows_the_documented_formula():
    specs = {"a": {"dtype": "float32", "fixed_shape": [1, 3]}, "b": {"dtype": "int64", "fixed_shape": [2]},
             "c": {"dtype": "bool", "fixed_shape": [2]}, "d": {"dtype": "float16", "fixed_shape": [1]}}
    got = wb.seeded_sample(specs, 1234)

    def stream(k: int, n: int) -> list[int]:
        s, out = (1234 ^ ((k + 1) * 0x9E3779B9)) % 2**32, []
        for _ in range(n):
            s = (1664525 * s + 1013904223) % 2**32
            out.append(s >> 8)
        return out

    assert got["a"].dtype == np.float32 and got["a"].shape == (1, 3)
    assert got["a"].ravel().tolist() == [r / 2**23 - 1 for r in stream(0, 3)]
    assert got["b"].dtype == np.int64 and got["b"].tolist() == [r % 10 for r in stream(1, 2)]
    assert got["c"].dtype == np.bool_ and got["c"].tolist() == [bool(r & 1) for r in stream(2, 2)]
    assert got["d"].dtype == np.float16 and got["d"][0] == np.float16(np.float32(stream(3, 1)[0] / 2**23 - 1))
    assert np.abs(got["a"]).max() <= 1


def _recipe(tmp_path: Path, profile_runtimes: str) -> Path:
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "tiny",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(tmp_path / "tiny.onnx"))
    base = (ROOT / "targets" / "browser-wasm.yaml").read_text()
    kiosk = base.replace("name: browser-wasm", "name: kiosk").replace(
        "runtimes:\n  onnxruntime-web: \"1.30\"\n", profile_runtimes)
    (tmp_path / "kiosk.yaml").write_text(kiosk)
    (tmp_path / "r.yaml").write_text(
        "edgebuild: 1\nname: tiny\nmodel:\n  onnx: tiny.onnx\n"
        "targets: [browser-wasm, ./kiosk.yaml, x86-64]\n"
        "steps:\n  web: {use: wasm-bundle}\n  plain: {use: fp16}\n"
        "ship:\n  browser-wasm: [web]\n  kiosk: [web]\n  x86-64: [plain]\n")
    return tmp_path / "r.yaml"


def test_check_wants_onnxruntime_web_on_every_target_that_ships_the_bundle(tmp_path: Path):
    from edgebuild.errors import UserError
    from edgebuild.frontend import recipe

    with pytest.raises(UserError) as err:
        recipe.load(_recipe(tmp_path, "runtimes:\n  onnxruntime: \"1.22\"\n"))
    text = str(err.value.render() if hasattr(err.value, "render") else err.value)
    assert "target 'kiosk' declares no onnxruntime-web runtime" in text
    assert "x86-64" not in text   # it ships `plain`, not the bundle


def test_check_passes_when_the_targets_pin_onnxruntime_web(tmp_path: Path):
    from edgebuild.frontend import recipe

    r = recipe.load(_recipe(tmp_path, "runtimes:\n  onnxruntime-web: \"1.29\"\n"))
    assert r.steps["web"].kind is WasmBundle


# --------------------------------------------------------------------------------------------
# where onnxruntime-web comes from (no network)

def test_downloads_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.delenv("EDGEBUILD_DOWNLOADS", raising=False)
    monkeypatch.delenv("EDGEBUILD_CACHE", raising=False)
    assert wb.downloads_dir() == Path.home() / ".cache" / "edgebuild" / "downloads"
    monkeypatch.setenv("EDGEBUILD_CACHE", str(tmp_path / "c"))
    assert wb.downloads_dir() == tmp_path / "c" / "downloads"
    monkeypatch.setenv("EDGEBUILD_DOWNLOADS", str(tmp_path / "d"))
    assert wb.downloads_dir() == tmp_path / "d"


def test_version_matching():
    assert wb._matches("1.30.0", "1.30") and wb._matches("1.30.12", "1.30")
    assert not wb._matches("1.3.0", "1.30") and not wb._matches("1.31.0", "1.30")
    assert not wb._matches("1.30.0-dev.20250101-abc", "1.30")
    assert wb._matches("1.30.1", "1.30.1") and not wb._matches("1.30.2", "1.30.1")


def _fake_dist(folder: Path, version: str | None) -> Path:
    dist = folder / "dist"
    dist.mkdir(parents=True)
    (dist / "ort.wasm.bundle.min.mjs").write_text('var x="%s";export{}' % (version or "?"))
    (dist / "ort-wasm-simd-threaded.wasm").write_bytes(b"\0asm\1\0\0\0")
    if version:
        (folder / "package.json").write_text(json.dumps({"name": "onnxruntime-web", "version": version}))
    return dist


def test_local_runtime_folder_is_used_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    dist = _fake_dist(tmp_path / "ortweb", "1.30.0")
    monkeypatch.setenv("EDGEBUILD_ORT_WEB", str(dist))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))   # no npm: it must not be needed
    got = wb.fetch_runtime("1.30", logging.getLogger("t"))
    assert got["source"] == "local" and got["version"] == "1.30.0" and got["dir"] == dist
    assert got["files"]["ort-wasm-simd-threaded.wasm"]["bytes"] == 8


def test_local_runtime_files_enter_the_cache_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kit: Any):
    """Another onnxruntime-web build in the EDGEBUILD_ORT_WEB folder must rebuild the bundle, and the
    no-op check must notice the variable changing."""
    kit.build_mlp(tmp_path / "mlp.onnx")
    (tmp_path / "r.yaml").write_text(
        "edgebuild: 1\nname: mlp\nmodel:\n  onnx: mlp.onnx\ntargets: [browser-wasm]\n"
        "steps:\n  web: {use: wasm-bundle}\nship:\n  browser-wasm: [web]\n")
    dist = _fake_dist(tmp_path / "ortweb", "1.30.0")

    def key(**env: str) -> str:
        full = dict(os.environ)
        full.pop("EDGEBUILD_ORT_WEB", None)
        full.update(env)
        r = clikit.in_process(["plan", "r.yaml", "--format", "json"], tmp_path, full)
        assert r.code == 0, r.err
        return next(n["key"] for n in json.loads(r.out)["nodes"] if n["node"] == "web@browser-wasm")

    from_npm, local = key(), key(EDGEBUILD_ORT_WEB=str(dist))
    assert local != from_npm and key(EDGEBUILD_ORT_WEB=str(dist)) == local
    (dist / "ort-wasm-simd-threaded.wasm").write_bytes(b"\0asm\1\0\0\0 another build")
    assert key(EDGEBUILD_ORT_WEB=str(dist)) not in (local, from_npm)


def test_local_runtime_of_another_version_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("EDGEBUILD_ORT_WEB", str(_fake_dist(tmp_path / "ortweb", "1.22.0")))
    with pytest.raises(StepError, match="holds onnxruntime-web 1.22.0, but the target pins 1.30"):
        wb.fetch_runtime("1.30", logging.getLogger("t"))


def test_local_runtime_missing_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("EDGEBUILD_ORT_WEB", str(tmp_path / "empty"))
    with pytest.raises(StepError, match="lacks ort.wasm.bundle.min.mjs, ort-wasm-simd-threaded.wasm"):
        wb.fetch_runtime("1.30", logging.getLogger("t"))


def test_missing_npm_says_how_to_fix_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.delenv("EDGEBUILD_ORT_WEB", raising=False)
    monkeypatch.setenv("EDGEBUILD_DOWNLOADS", str(tmp_path / "dl"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    wb._npm_resolve.cache_clear()
    with pytest.raises(StepError) as err:
        wb.fetch_runtime("1.30", logging.getLogger("t"))
    assert "npm was not found" in err.value.message
    assert "install Node.js/npm" in (err.value.hint or "") and "EDGEBUILD_ORT_WEB=" in (err.value.hint or "")


def _offline_npm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """npm pointed at a closed local port, without retries: every registry request fails at once."""
    monkeypatch.setenv("npm_config_registry", "http://127.0.0.1:9/")
    monkeypatch.setenv("npm_config_fetch_retries", "0")
    monkeypatch.setenv("npm_config_fetch_timeout", "5000")
    monkeypatch.setenv("npm_config_cache", str(tmp_path / "npm-cache"))
    monkeypatch.setenv("npm_config_offline", "false")
    monkeypatch.delenv("EDGEBUILD_ORT_WEB", raising=False)
    wb._npm_resolve.cache_clear()


@needs_npm
def test_unreachable_registry_is_a_clear_step_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    _offline_npm(monkeypatch, tmp_path)
    monkeypatch.setenv("EDGEBUILD_DOWNLOADS", str(tmp_path / "dl"))
    with pytest.raises(StepError) as err:
        wb.fetch_runtime("1.30", logging.getLogger("t"))
    assert "cannot reach the npm registry" in err.value.message
    assert "EDGEBUILD_ORT_WEB" in (err.value.hint or "")


@needs_npm
def test_unreachable_registry_falls_back_to_a_cached_copy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture):
    dl = tmp_path / "dl"
    folder = dl / "onnxruntime-web" / "1.30.7"
    folder.mkdir(parents=True)
    files = {}
    for f, data in {"ort.wasm.bundle.min.mjs": b"export{}", "ort-wasm-simd-threaded.wasm": b"\0asm"}.items():
        (folder / f).write_bytes(data)
        files[f] = wb._file_meta(data)
    (folder / "edgebuild.json").write_text(json.dumps({"version": "1.30.7", "integrity": "sha512-x", "files": files}))
    _offline_npm(monkeypatch, tmp_path)
    monkeypatch.setenv("EDGEBUILD_DOWNLOADS", str(dl))
    with caplog.at_level(logging.WARNING):
        got = wb.fetch_runtime("1.30", logging.getLogger("t"))
    assert got["version"] == "1.30.7" and got["dir"] == folder
    assert "cannot reach the npm registry" in caplog.text


# --------------------------------------------------------------------------------------------
# building bundles (npm registry)

@pytest.fixture(scope="session")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One onnxruntime-web download per test session (or $EDGEBUILD_DOWNLOADS when set)."""
    if not HAVE_NPM:
        pytest.skip("npm not found: wasm-bundle fetches onnxruntime-web from the npm registry")
    path = Path(os.environ.get("EDGEBUILD_DOWNLOADS") or tmp_path_factory.mktemp("downloads"))
    mp = pytest.MonkeyPatch()
    mp.setenv("EDGEBUILD_DOWNLOADS", str(path))
    mp.delenv("EDGEBUILD_ORT_WEB", raising=False)
    wb._npm_resolve.cache_clear()
    try:
        wb.fetch_runtime("1.30", logging.getLogger("edgebuild.test.wasm-bundle"))
    except StepError as exc:
        mp.undo()
        if "cannot reach" in exc.message or "did not finish" in exc.message:
            pytest.skip(f"the npm registry is not reachable: {exc.message}")
        raise
    yield path
    mp.undo()


def bundle(kit: Any, model: Path, out: Path, params: dict[str, Any] | None = None,
           data: dict[str, Path] | None = None) -> tuple[Path, dict[str, Any]]:
    ctx = kit.make_ctx(WasmBundle, out, params, model=model, data=data, ir_version=10, max_opset=21)
    ctx.target = browser_wasm_target()
    return out, WasmBundle().run(ctx)


@pytest.fixture(scope="module")
def variants(kit: Any, mlp_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The test MLP as FP32 and as the outputs of the int8 (dynamic), qdq (static), fp16 and int4 steps."""
    d = tmp_path_factory.mktemp("variants")
    fp32 = kit.build_mlp(d / "fp32.onnx")
    out = {"fp32": fp32}
    for name, kind, params, data in [("int8", QuantizeDynamic, {}, None),
                                     ("int8-rr", QuantizeDynamic, {"reduce_range": True}, None),
                                     ("qdq", QuantizeStatic, {"data": "calib"}, {"calib": mlp_data}),
                                     ("fp16", Fp16, {}, None),
                                     ("fp16-io", Fp16, {"keep_io_types": False}, None),
                                     ("int4", Int4, {"block_size": 32}, None)]:
        ctx = kit.make_ctx(kind, d / name, params, model=fp32, data=data)
        kind().run(ctx)
        out[name] = ctx.output_model
    return out


@pytest.fixture(scope="module")
def bundles(downloads: Path, kit: Any, variants: dict[str, Path],
            tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, Any]]]:
    """A bundle per variant, side by side under one folder (served once)."""
    root = tmp_path_factory.mktemp("site")
    built = {name: bundle(kit, path, root / name, {"runs": 5}) for name, path in variants.items()}
    built["threads2"] = bundle(kit, variants["fp32"], root / "threads2", {"threads": 2, "runs": 5})
    return built


def test_bundle_holds_model_runtime_loader_page_and_headers(bundles: dict[str, Any]):
    out, facts = bundles["fp32"]
    names = sorted(p.name for p in out.iterdir())
    assert names == ["_headers", "edgebuild-model.mjs", "index.html", "model.onnx",
                     "ort-wasm-simd-threaded.wasm", "ort.wasm.bundle.min.mjs"]
    rt = facts["runtime"]
    assert rt["package"] == "onnxruntime-web" and rt["pinned"] == "1.30" and rt["source"] == "npm"
    assert re.fullmatch(r"1\.30\.\d+", rt["version"]) and rt["integrity"].startswith("sha512-")
    assert set(rt["files"]) == {"ort.wasm.bundle.min.mjs", "ort-wasm-simd-threaded.wasm"}
    assert 10e6 < rt["bytes"] < 18e6, "the plain WASM runtime is about 14 MB (the JSEP/WebGPU build is 28 MB)"
    assert facts["model"]["bytes"] == (out / "model.onnx").stat().st_size
    assert 0 < facts["model"]["gzip_bytes"] < facts["model"]["bytes"]
    assert facts["files"] == {p.name: p.stat().st_size for p in out.iterdir()}
    assert facts["total_bytes"] == sum(facts["files"].values())
    assert facts["total_gzip_bytes"] < facts["total_bytes"] / 2
    assert facts["inputs"] == {"x": {"dtype": "float32", "shape": ["batch", 64], "fixed_shape": [1, 64],
                                     "feed_shape": [1, 64]}}
    assert facts["outputs"] == {"y": {"dtype": "float32", "shape": ["batch", 32], "fixed_shape": [1, 32]}}
    assert facts["sample"] == {"source": "seeded", "seed": 1234}
    assert facts["threads"] == 1 and facts["warmup"] == 3 and facts["runs"] == 5   # browser-wasm: cpu.threads 1
    headers = (out / "_headers").read_text()
    assert "Cross-Origin-Opener-Policy: same-origin" in headers and "Cross-Origin-Embedder-Policy: require-corp" in headers
    loader = (out / "edgebuild-model.mjs").read_text()
    assert "import * as ort from './ort.wasm.bundle.min.mjs'" in loader
    assert '"name": "x"' in loader and '"shape": [1, 64]' in loader and "export async function predict" in loader
    assert f'ORT_VERSION = "{rt["version"]}"' in loader
    page = (out / "index.html").read_text()
    assert '<pre id="result"></pre>' in page and 'id="expected"' in page
    assert bundles["threads2"][1]["threads"] == 2


def test_bundle_is_deterministic(bundles: dict[str, Any], kit: Any, variants: dict[str, Path], tmp_path: Path):
    out, facts = bundle(kit, variants["fp32"], tmp_path / "again", {"runs": 5})
    assert facts == bundles["fp32"][1]
    for p in out.iterdir():
        assert p.read_bytes() == (bundles["fp32"][0] / p.name).read_bytes(), p.name


def _embedded(page: str, element_id: str) -> str:
    m = re.search(rf'<script type="application/json" id="{element_id}">(.*?)</script>', page)
    assert m, f"no #{element_id} in the page"
    return m.group(1)


def test_sample_comes_from_the_first_dataset_that_has_every_input(downloads: Path, kit: Any, variants: dict[str, Path],
                                                                  mlp_data: Path, tmp_path: Path):
    other = tmp_path / "other.npz"
    np.savez(other, z=np.zeros((3, 5), np.float32))
    out, facts = bundle(kit, variants["fp32"], tmp_path / "b", data={"other": other, "calib": mlp_data})
    assert facts["sample"] == {"source": "dataset", "dataset": "calib", "index": 0}
    page = (out / "index.html").read_text()
    sample = json.loads(_embedded(page, "sample"))
    x = np.frombuffer(base64.b64decode(sample["inputs"]["x"]["b64"]), np.float32).reshape(sample["inputs"]["x"]["dims"])
    assert np.array_equal(x, np.load(mlp_data)["x"][0:1])
    expected = json.loads(_embedded(page, "expected"))
    y = np.frombuffer(base64.b64decode(expected["y"]["b64"]), np.float64)
    assert np.allclose(y, kit.run_ort(variants["fp32"], {"x": x})[0].ravel(), atol=1e-6)


def test_sample_param_must_name_a_dataset_with_every_input(downloads: Path, kit: Any, variants: dict[str, Path],
                                                           tmp_path: Path):
    other = tmp_path / "other.npz"
    np.savez(other, z=np.zeros((3, 5), np.float32))
    with pytest.raises(StepError, match="dataset 'other' has no array for model input"):
        bundle(kit, variants["fp32"], tmp_path / "b", {"sample": "other"}, data={"other": other})


def test_edgebuild_run_publishes_the_bundle_as_a_folder(downloads: Path, kit: Any, tmp_path: Path):
    kit.build_mlp(tmp_path / "mlp.onnx")
    (tmp_path / "r.yaml").write_text(
        "edgebuild: 1\nname: mlp\nmodel:\n  onnx: mlp.onnx\ntargets: [browser-wasm]\n"
        "steps:\n  web: {use: wasm-bundle, with: {runs: 3}}\nship:\n  browser-wasm: [web]\n")
    env = dict(os.environ, EDGEBUILD_DOWNLOADS=str(downloads))
    env.pop("EDGEBUILD_ORT_WEB", None)
    r = clikit.in_process(["run", "r.yaml", "--cache", str(tmp_path / "cache")], tmp_path, env)
    assert r.code == 0, r.out + r.err
    web = tmp_path / "dist" / "mlp" / "browser-wasm" / "web"
    assert sorted(p.name for p in web.iterdir()) == ["_headers", "edgebuild-model.mjs", "index.html", "model.onnx",
                                                     "ort-wasm-simd-threaded.wasm", "ort.wasm.bundle.min.mjs"]
    manifest = json.loads((tmp_path / "dist" / "mlp" / "manifest.json").read_text())
    art = manifest["targets"]["browser-wasm"]["artifacts"][0]
    assert art["format"] == "web-bundle" and art["path"] == "browser-wasm/web" and art["precision"] == "fp32"
    facts = manifest["steps"]["web@browser-wasm"]["facts"]
    assert facts["runtime"]["pinned"] == "1.30" and facts["runtime"]["version"].startswith("1.30.")
    assert art["size"] == facts["total_bytes"]


# --------------------------------------------------------------------------------------------
# in a real browser

@pytest.fixture(scope="module")
def chromium():
    if not HAVE_CHROMIUM:
        pytest.skip(f"{CHROMIUM} not found (apt-get install chromium)")
    c = Chromium()
    yield c
    c.close()


@pytest.fixture(scope="module")
def site(bundles: dict[str, Any]):
    root = next(iter(bundles.values()))[0].parent
    s = Served(root)
    yield s.url
    s.stop()


def _reference(model: Path, kit: Any, facts: dict[str, Any]) -> dict[str, np.ndarray]:
    """Python ONNX Runtime on the page's sample (the seeded input, rebuilt from the documented formula),
    with graph optimizations off like the expected outputs the page embeds (see wasm_bundle.py)."""
    feeds = wb.seeded_sample(facts["inputs"], facts["sample"]["seed"])
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    return {o.name: v for o, v in zip(sess.get_outputs(), sess.run(None, feeds))}


@pytest.mark.parametrize("variant", ["fp32", "int8", "int8-rr", "qdq", "fp16", "fp16-io", "int4"])
@in_browser
def test_browser_matches_python_onnxruntime(variant: str, chromium: Chromium, site: str, bundles: dict[str, Any],
                                            variants: dict[str, Path], kit: Any, record_property: Any):
    out, facts = bundles[variant]
    r = chromium.result(f"{site}{variant}/index.html")
    assert r["ok"], f"page failed: {r.get('error')}; console: {chromium.console[-5:]}"
    want = _reference(variants[variant], kit, facts)
    got = np.asarray(r["outputs"]["y"], dtype=np.float64).reshape(r["dims"]["y"])
    assert got.shape == want["y"].shape == (1, 32)
    diff = float(np.abs(got - want["y"]).max())
    record_property(f"max_abs_diff_{variant}", diff)
    print(f"{variant}: max |browser - python| = {diff:.3g} (tolerance {TOLERANCE[variant]:g}); "
          f"median {r['ms']:.3f} ms over {r['runs']} runs, {r['threads']} thread(s)")
    assert diff <= TOLERANCE[variant], f"{variant}: browser and Python ONNX Runtime differ by {diff:.3g}"
    # the page's own comparison with the expected outputs it embeds agrees
    assert r["max_abs_diff"]["y"] == pytest.approx(diff, rel=1e-6, abs=1e-12)
    assert r["runs"] == 5 and r["ms"] >= 0 and r["ortVersion"] == facts["runtime"]["version"]
    assert r["threads"] == 1 and r["sample"] == "seeded(1234)"


@in_browser
def test_edgebuild_serve_makes_the_page_cross_origin_isolated_with_two_threads(chromium: Chromium, site: str,
                                                                             bundles: dict[str, Any]):
    r = chromium.result(f"{site}threads2/index.html")
    assert r["ok"], r
    assert r["crossOriginIsolated"] is True
    assert r["threads"] == 2 and r["requestedThreads"] == 2 and r["warnings"] == []
    assert r["max_abs_diff_all"] <= TOLERANCE["fp32"]


class _PlainHandler:
    """Python's http.server without the isolation headers (what a naive static host does)."""

    @staticmethod
    def serve(directory: Path):
        import http.server

        class H(http.server.SimpleHTTPRequestHandler):
            extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                              ".mjs": "text/javascript", ".wasm": "application/wasm"}

            def log_message(self, *a: Any) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(H, directory=str(directory)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


@in_browser
def test_without_the_headers_the_loader_falls_back_to_one_thread_and_says_so(chromium: Chromium,
                                                                            bundles: dict[str, Any]):
    out, _ = bundles["threads2"]
    server = _PlainHandler.serve(out)
    try:
        r = chromium.result(f"http://127.0.0.1:{server.server_address[1]}/index.html")
    finally:
        server.shutdown()
        server.server_close()
    assert r["ok"], r
    assert r["crossOriginIsolated"] is False
    assert r["threads"] == 1 and r["requestedThreads"] == 2
    assert any("not cross-origin isolated" in w for w in r["warnings"])
    assert any("not cross-origin isolated" in line for line in chromium.console), chromium.console
    assert r["max_abs_diff_all"] <= TOLERANCE["fp32"]


@in_browser
def test_page_runs_the_dataset_sample(chromium: Chromium, downloads: Path, kit: Any, variants: dict[str, Path],
                                      mlp_data: Path, tmp_path: Path):
    out, facts = bundle(kit, variants["fp32"], tmp_path / "ds", {"runs": 3}, data={"calib": mlp_data})
    s = Served(out)
    try:
        r = chromium.result(f"{s.url}index.html")
    finally:
        s.stop()
    assert r["ok"], r
    assert r["sample"] == "calib[0]"
    want = kit.run_ort(variants["fp32"], {"x": np.load(mlp_data)["x"][0:1]})[0]
    assert np.abs(np.asarray(r["outputs"]["y"]).reshape(want.shape) - want).max() <= TOLERANCE["fp32"]


@in_browser
def test_page_reports_a_failure_in_result(chromium: Chromium, bundles: dict[str, Any], tmp_path: Path):
    broken = tmp_path / "broken"
    shutil.copytree(bundles["fp32"][0], broken)
    (broken / "model.onnx").write_bytes(b"not a model")
    s = Served(broken)
    try:
        r = chromium.result(f"{s.url}index.html")
    finally:
        s.stop()
    assert r["ok"] is False and r["error"]
