"""The shipped hardware target profiles and the runtime support facts they rely on.

Every profile must validate against schemas/target.schema.json, name only runtime versions the
facts tables know, and agree with itself and with those tables; a few hardware facts are pinned.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ROOT / "targets"
SCHEMA_PATH = ROOT / "schemas" / "target.schema.json"
RUNTIMES = ROOT / "edgebuild" / "data" / "runtimes"
RUNTIME_NAMES = ("onnxruntime", "onnxruntime-web", "tensorrt")

REQUIRED_PROFILES = {
    "jetson-orin-nano", "jetson-agx-orin", "jetson-xavier-nx", "jetson-nano",
    "raspberry-pi-5", "raspberry-pi-4", "browser-wasm", "x86-64", "nvidia-t4",
}
PROFILE_FILES = sorted(TARGETS.glob("*.yaml"))
VERSION = re.compile(r"^\d+\.\d+$")


def _vkey(v: str) -> tuple[int, int]:
    major, minor = v.split(".")
    return int(major), int(minor)


def _minor(v: str) -> str:
    return ".".join(v.split(".")[:2])


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def validator(schema: dict[str, Any]) -> Draft202012Validator:
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


@pytest.fixture(scope="module")
def facts() -> dict[str, dict[str, Any]]:
    return {rt: _load(RUNTIMES / f"{rt}.yaml") for rt in RUNTIME_NAMES}


@pytest.fixture(scope="module")
def profiles() -> dict[str, dict[str, Any]]:
    return {p.stem: _load(p) for p in PROFILE_FILES}


def _errors(validator: Draft202012Validator, data: Any) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path)) or '<top>'}: {e.message}" for e in validator.iter_errors(data)]


# ---------------------------------------------------------------- the schema itself


def test_schema_is_valid_draft_2020_12(schema: dict[str, Any]) -> None:
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


def _object_schemas(node: Any, path: str = "#"):
    if isinstance(node, dict):
        t = node.get("type")
        if t == "object" or (isinstance(t, list) and "object" in t):
            yield path, node
        for k, v in node.items():
            yield from _object_schemas(v, f"{path}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _object_schemas(v, f"{path}/{i}")


def test_schema_is_closed_and_described_everywhere(schema: dict[str, Any]) -> None:
    objects = list(_object_schemas(schema))
    assert len(objects) >= 6
    for path, obj in objects:
        assert obj.get("additionalProperties") is False, f"{path} must set additionalProperties: false"
        for key, prop in obj.get("properties", {}).items():
            assert prop.get("description"), f"{path}/properties/{key} has no description"


# ---------------------------------------------------------------- every profile


def test_the_required_profiles_exist() -> None:
    missing = REQUIRED_PROFILES - {p.stem for p in PROFILE_FILES}
    assert not missing, f"missing target profiles: {sorted(missing)}"


@pytest.mark.parametrize("path", PROFILE_FILES, ids=lambda p: p.stem)
def test_profile_validates_against_schema(path: Path, validator: Draft202012Validator) -> None:
    data = _load(path)
    assert not _errors(validator, data)


@pytest.mark.parametrize("path", PROFILE_FILES, ids=lambda p: p.stem)
def test_profile_file_name_is_its_name(path: Path) -> None:
    assert _load(path)["name"] == path.stem


@pytest.mark.parametrize("path", PROFILE_FILES, ids=lambda p: p.stem)
def test_profile_points_editors_at_the_schema(path: Path) -> None:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first == "# yaml-language-server: $schema=../schemas/target.schema.json"


@pytest.mark.parametrize("path", PROFILE_FILES, ids=lambda p: p.stem)
def test_profile_writes_every_top_level_key(path: Path, schema: dict[str, Any]) -> None:
    # "use null where not applicable": accelerator is written out even when there is none
    assert set(_load(path)) == set(schema["properties"])


@pytest.mark.parametrize("path", PROFILE_FILES, ids=lambda p: p.stem)
def test_profile_runtime_versions_are_in_the_facts_tables(path: Path, facts: dict[str, dict[str, Any]]) -> None:
    for rt, version in _load(path)["runtimes"].items():
        assert isinstance(version, str), f"{rt} version must be a quoted string, got {version!r}"
        assert version in facts[rt]["versions"], f"{path.stem}: no support facts for {rt} {version}"


@pytest.mark.parametrize("path", PROFILE_FILES, ids=lambda p: p.stem)
def test_profile_is_self_consistent(path: Path, facts: dict[str, dict[str, Any]]) -> None:
    p = _load(path)
    cpu, acc, rts, formats = p["cpu"], p["accelerator"], p["runtimes"], p["formats"]
    assert cpu["threads"] <= cpu["cores"]
    assert "fp32" in p["precisions"]["fast"]
    assert not set(p["precisions"]["fast"]) & set(p["precisions"]["slow"])
    assert p["budgets"].get("memory_mb", 0) <= p["memory_mb"]
    # artifact formats follow the runtimes present
    assert ("tensorrt-engine" in formats) == ("tensorrt" in rts)
    assert ("web-bundle" in formats) == ("onnxruntime-web" in rts)
    assert ("onnxruntime-web" in rts) == (cpu["arch"] == "wasm32")
    if "onnx" in formats:
        assert "onnxruntime" in rts or "onnxruntime-web" in rts
    # TensorRT needs a CUDA GPU that this TensorRT release still supports
    if "tensorrt" in rts:
        assert acc is not None and acc["kind"] == "cuda"
        minimum = facts["tensorrt"]["versions"][rts["tensorrt"]].get("min_compute_capability")
        if minimum is not None:
            assert _vkey(acc["compute_capability"]) >= _vkey(minimum), (
                f"TensorRT {rts['tensorrt']} needs sm >= {minimum}, {path.stem} is {acc['compute_capability']}")
    # ISA features belong to the architecture
    arm, x86, wasm = {"neon", "fp16", "dotprod", "i8mm", "bf16", "sve", "sve2"}, \
        {"sse4.2", "avx", "avx2", "fma", "f16c", "vnni", "avx512", "avx512-vnni", "avx512-bf16", "avx512-fp16", "amx"}, \
        {"simd128", "relaxed-simd"}
    allowed = {"aarch64": arm, "armv7l": arm, "x86_64": x86, "wasm32": wasm}[cpu["arch"]]
    assert set(cpu["features"]) <= allowed, f"{path.stem}: {set(cpu['features']) - allowed} is not an {cpu['arch']} feature"
    if "avx512-vnni" in cpu["features"]:
        assert "avx512" in cpu["features"]


def test_profile_names_are_unique(profiles: dict[str, dict[str, Any]]) -> None:
    names = [p["name"] for p in profiles.values()]
    assert len(names) == len(set(names))


# ---------------------------------------------------------------- the validator rejects bad profiles


@pytest.fixture()
def good(profiles: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return copy.deepcopy(profiles["jetson-orin-nano"])


@pytest.mark.parametrize("break_it", [
    lambda p: p.pop("budgets"),
    lambda p: p.__setitem__("colour", "green"),
    lambda p: p["cpu"].__setitem__("arch", "arm64"),
    lambda p: p["cpu"].__setitem__("speed_ghz", 1.5),
    lambda p: p["cpu"]["features"].append("avx3"),
    lambda p: p["runtimes"].__setitem__("tensorrt", "10"),
    lambda p: p["runtimes"].__setitem__("onnxruntime", 1.2),
    lambda p: p["runtimes"].__setitem__("tflite", "2.16"),
    lambda p: p["formats"].append("tflite"),
    lambda p: p["formats"].clear(),
    lambda p: p["precisions"]["fast"].append("fp8"),
    lambda p: p["budgets"].__setitem__("latency_p95_ms", 0),
    lambda p: p["budgets"].__setitem__("model_size_mb", -5),
    lambda p: p["budgets"].__setitem__("energy_mj", 3),
    lambda p: p["accelerator"].__setitem__("compute_capability", "sm_87"),
    lambda p: p["accelerator"].pop("memory_shared"),
    lambda p: p.__setitem__("name", "Jetson Orin Nano"),
    lambda p: p.__setitem__("memory_mb", "8 GB"),
], ids=["missing-budgets", "unknown-key", "bad-arch", "unknown-cpu-key", "bad-feature", "version-without-minor",
        "version-not-string", "unknown-runtime", "bad-format", "no-formats", "bad-precision", "zero-latency",
        "negative-size", "unknown-budget", "bad-compute-capability", "accelerator-missing-key", "bad-name",
        "memory-not-integer"])
def test_schema_rejects(good: dict[str, Any], validator: Draft202012Validator, break_it) -> None:
    assert not _errors(validator, good)
    break_it(good)
    assert _errors(validator, good)


def test_schema_accepts_a_cpu_only_profile_with_null_accelerator_and_no_budgets(
        good: dict[str, Any], validator: Draft202012Validator) -> None:
    good.update(accelerator=None, budgets={}, runtimes={"onnxruntime": "1.20"}, formats=["onnx"])
    assert not _errors(validator, good)


# ---------------------------------------------------------------- the runtime facts tables


@pytest.mark.parametrize("rt", RUNTIME_NAMES)
def test_facts_table_shape(rt: str, facts: dict[str, dict[str, Any]]) -> None:
    table = facts[rt]
    assert table["runtime"] == rt
    assert str(table["source"]).startswith("https://")
    versions = table["versions"]
    assert versions
    for version, row in versions.items():
        assert isinstance(version, str) and VERSION.match(version), f"{rt}: version key {version!r} must be a quoted \"MAJOR.MINOR\""
        allowed = {"onnx", "max_ir", "max_opset"} | ({"min_compute_capability"} if rt == "tensorrt" else set())
        assert set(row) <= allowed and {"onnx", "max_ir", "max_opset"} <= set(row), f"{rt} {version}: {sorted(row)}"
        assert isinstance(row["onnx"], str) and re.match(r"^\d+\.\d+(\.\d+)?$", row["onnx"])
        assert isinstance(row["max_ir"], int) and 3 <= row["max_ir"] <= 14
        assert isinstance(row["max_opset"], int) and 7 <= row["max_opset"] <= 28
        if "min_compute_capability" in row:
            assert VERSION.match(row["min_compute_capability"])


@pytest.mark.parametrize("rt", RUNTIME_NAMES)
def test_facts_never_go_backwards(rt: str, facts: dict[str, dict[str, Any]]) -> None:
    rows = sorted(facts[rt]["versions"].items(), key=lambda kv: _vkey(kv[0]))
    for (v1, a), (v2, b) in zip(rows, rows[1:]):
        assert b["max_ir"] >= a["max_ir"], f"{rt} {v2} loads a lower IR than {v1}"
        assert b["max_opset"] >= a["max_opset"], f"{rt} {v2} loads a lower opset than {v1}"
        assert _vkey(_minor(b["onnx"])) >= _vkey(_minor(a["onnx"])), f"{rt} {v2} bundles an older ONNX than {v1}"


def test_facts_opset_and_ir_match_the_onnx_release() -> None:
    """The (IR, opset) of each row never exceeds what its ONNX release defines."""
    onnx_helper = pytest.importorskip("onnx.helper")
    release = {}
    for name, ir, opset, *_ in onnx_helper.VERSION_TABLE:
        release[name] = release[_minor(name)] = (ir, opset)
    for rt in RUNTIME_NAMES:
        for version, row in _load(RUNTIMES / f"{rt}.yaml")["versions"].items():
            ir, opset = release[row["onnx"]]
            assert row["max_ir"] <= ir, f"{rt} {version}: IR {row['max_ir']} is newer than ONNX {row['onnx']} (IR {ir})"
            assert row["max_opset"] <= opset, f"{rt} {version}: opset {row['max_opset']} > ONNX {row['onnx']} ({opset})"


def test_facts_cover_the_required_version_ranges(facts: dict[str, dict[str, Any]]) -> None:
    ort = facts["onnxruntime"]["versions"]
    web = facts["onnxruntime-web"]["versions"]
    trt = facts["tensorrt"]["versions"]
    assert {f"1.{m}" for m in range(10, 33)} <= set(ort)
    assert {f"1.{m}" for m in range(17, 33)} <= set(web)
    assert {"8.0", "8.2", "8.4", "8.5", "8.6"} | {f"10.{m}" for m in range(0, 14)} <= set(trt)


def test_onnxruntime_web_limits_equal_native_limits(facts: dict[str, dict[str, Any]]) -> None:
    ort = facts["onnxruntime"]["versions"]
    for version, row in facts["onnxruntime-web"]["versions"].items():
        assert (row["max_ir"], row["max_opset"]) == (ort[version]["max_ir"], ort[version]["max_opset"]), version


@pytest.mark.parametrize("version,onnx,ir,opset", [
    ("1.10", "1.10", 8, 15),     # compatibility table
    ("1.16", "1.14.1", 9, 19),
    ("1.18", "1.16", 10, 21),
    ("1.20", "1.16.1", 10, 21),
    ("1.23", "1.18", 11, 23),    # measured
    ("1.31", "1.21", 13, 26),    # measured: rejects IR 14
    ("1.32", "1.23", 14, 28),    # measured: loads IR 14 up to opset 28
])
def test_onnxruntime_known_rows(facts: dict[str, dict[str, Any]], version: str, onnx: str, ir: int, opset: int) -> None:
    assert facts["onnxruntime"]["versions"][version] == {"onnx": onnx, "max_ir": ir, "max_opset": opset}


@pytest.mark.parametrize("version,opset", [("8.0", 13), ("8.2", 13), ("8.4", 17), ("8.5", 17), ("8.6", 17), ("10.0", 20)])
def test_tensorrt_documented_opsets(facts: dict[str, dict[str, Any]], version: str, opset: int) -> None:
    assert facts["tensorrt"]["versions"][version]["max_opset"] == opset


def test_tensorrt_10_dropped_old_gpus(facts: dict[str, dict[str, Any]]) -> None:
    trt = facts["tensorrt"]["versions"]
    nano = (5, 3)
    assert _vkey(trt["8.2"]["min_compute_capability"]) <= nano
    for version, row in trt.items():
        if _vkey(version) >= (9, 0) and "min_compute_capability" in row:
            assert _vkey(row["min_compute_capability"]) > nano, f"TensorRT {version} must not claim sm_53"
        if _vkey(version) >= (10, 5):
            assert row["min_compute_capability"] == "7.5", f"TensorRT {version}: Volta was removed in 10.5"


def test_installed_onnxruntime_matches_its_row(facts: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    """The row for the onnxruntime installed here agrees with what it actually loads."""
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    version = ".".join(ort.__version__.split(".")[:2])
    row = facts["onnxruntime"]["versions"].get(version)
    if row is None:
        pytest.skip(f"no row for the installed onnxruntime {ort.__version__}")
    ort.set_default_logger_severity(3)

    def loads(ir: int, opset: int) -> bool:
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
        graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir)
        path = tmp_path / f"ir{ir}_op{opset}.onnx"
        onnx.save(model, str(path))
        try:
            ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            return True
        except Exception:
            return False

    assert loads(row["max_ir"], 13)
    assert not loads(row["max_ir"] + 1, 13)
    assert loads(7, row["max_opset"])
    assert not loads(7, row["max_opset"] + 1)


# ---------------------------------------------------------------- hardware facts


def test_jetson_nano_facts(profiles: dict[str, dict[str, Any]], facts: dict[str, dict[str, Any]]) -> None:
    p = profiles["jetson-nano"]
    assert p["accelerator"]["compute_capability"] == "5.3"
    assert p["runtimes"]["tensorrt"] == "8.2"
    assert p["runtimes"]["onnxruntime"] == "1.11"
    assert p["precisions"]["fast"] == ["fp32", "fp16"] and "int8" in p["precisions"]["slow"]
    assert p["memory_mb"] == 4096 and p["accelerator"]["memory_shared"] is True
    assert facts["tensorrt"]["versions"]["8.2"]["max_opset"] == 13


@pytest.mark.parametrize("name", ["jetson-orin-nano", "jetson-agx-orin"])
def test_orin_facts(profiles: dict[str, dict[str, Any]], name: str) -> None:
    p = profiles[name]
    assert p["accelerator"]["compute_capability"] == "8.7"
    assert p["runtimes"]["tensorrt"] == "10.3"
    assert p["accelerator"]["memory_shared"] is True
    assert {"fp16", "int8"} <= set(p["precisions"]["fast"])


def test_xavier_nx_facts(profiles: dict[str, dict[str, Any]]) -> None:
    p = profiles["jetson-xavier-nx"]
    assert p["accelerator"]["compute_capability"] == "7.2"
    assert p["runtimes"]["tensorrt"] == "8.5"


def test_t4_facts(profiles: dict[str, dict[str, Any]]) -> None:
    p = profiles["nvidia-t4"]
    assert p["accelerator"]["compute_capability"] == "7.5"
    assert p["accelerator"]["memory_shared"] is False
    assert _vkey(p["runtimes"]["tensorrt"]) >= (10, 3)
    assert set(p["precisions"]["fast"]) == {"fp32", "fp16", "int8"}
    assert "bf16" not in p["precisions"]["fast"]  # no BF16 tensor cores before Ampere


def test_browser_wasm_facts(profiles: dict[str, dict[str, Any]]) -> None:
    p = profiles["browser-wasm"]
    assert p["cpu"]["arch"] == "wasm32"
    assert p["runtimes"] == {"onnxruntime-web": "1.30"}
    assert p["formats"] == ["web-bundle", "onnx"]
    assert p["accelerator"] is None
    assert p["budgets"]["model_size_mb"] <= 50


def test_raspberry_pi_facts(profiles: dict[str, dict[str, Any]]) -> None:
    pi5, pi4 = profiles["raspberry-pi-5"], profiles["raspberry-pi-4"]
    assert "dotprod" in pi5["cpu"]["features"]        # Cortex-A76
    assert "dotprod" not in pi4["cpu"]["features"]    # Cortex-A72 is Armv8.0
    for p in (pi4, pi5):
        assert p["accelerator"] is None and p["formats"] == ["onnx"]


def test_x86_64_facts(profiles: dict[str, dict[str, Any]]) -> None:
    p = profiles["x86-64"]
    assert p["cpu"]["arch"] == "x86_64"
    assert {"avx2", "avx512-vnni"} <= set(p["cpu"]["features"])
    assert p["runtimes"] == {"onnxruntime": "1.31"}


def test_a_custom_profile_with_more_threads_than_cores_is_a_located_error(tmp_path: Path) -> None:
    from edgebuild.errors import UserError
    from edgebuild.frontend import targets

    text = (Path(__file__).resolve().parents[1] / "targets" / "x86-64.yaml").read_text()
    (tmp_path / "box.yaml").write_text(text.replace("threads: 8", "threads: 64"))
    with pytest.raises(UserError) as err:
        targets.load("box.yaml", tmp_path)
    rendered = err.value.render()
    assert re.search(r"box\.yaml:\d+:\d+: error: cpu\.threads is 64, more than the 8 cores the profile declares", rendered)
    with pytest.raises(UserError, match="is a folder, not a file"):
        targets.load("./", tmp_path)
