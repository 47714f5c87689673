"""`edgebuild report` and the run summary table.

Fast tests render the fixture manifest (with checks and a `best:` selection) and check, through a
parsed DOM, what a reader sees: the tables' cells, the SVG bars, budget markers and labels, the DAG
and the timings; a manifest without checks, malformed fields and hostile names still render.
Browser tests open the written HTML in headless Chromium (`--dump-dom`) and check the numbers are in
the rendered page and the console stayed silent; one checks that a page that throws IS caught.
"""

from __future__ import annotations

import copy
import io
import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from edgebuild.cli import main
from edgebuild.output import report

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
CHROMIUM = Path("/usr/bin/chromium")


# --- a small DOM for assertions --------------------------------------------------------------

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class El:
    def __init__(self, tag: str, attrs: dict[str, str], parent: "El | None"):
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list["El | str"] = []

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def norm(self) -> str:
        return " ".join(self.text().split())

    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def iter(self) -> Any:
        for c in self.children:
            if isinstance(c, El):
                yield c
                yield from c.iter()

    def find_all(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> list["El"]:
        return [e for e in self.iter() if (tag is None or e.tag == tag) and (cls is None or cls in e.classes())
                and all(e.attrs.get(k) == v for k, v in attrs.items())]

    def find(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> "El":
        found = self.find_all(tag, cls, **attrs)
        assert found, f"no <{tag} class={cls} {attrs}> in <{self.tag} {self.attrs}>"
        return found[0]


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = El("#document", {}, None)
        self.cur = self.root

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        el = El(tag, {k: v or "" for k, v in attrs}, self.cur)
        self.cur.children.append(el)
        if tag not in VOID:
            self.cur = el

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.cur.children.append(El(tag, {k: v or "" for k, v in attrs}, self.cur))

    def handle_endtag(self, tag: str) -> None:
        node: El | None = self.cur
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.cur = node.parent

    def handle_data(self, data: str) -> None:
        self.cur.children.append(data)


def dom(html: str) -> El:
    b = _Builder()
    b.feed(html)
    b.close()
    return b.root


def table_rows(table: El) -> list[dict[str, str]]:
    """Each body row as {column header: cell text}."""
    heads = [th.norm() for th in table.find("thead").find_all("th")]
    return [dict(zip(heads, (td.norm() for td in tr.find_all("td"))))
            for tr in table.find("tbody").find_all("tr")]


def target_section(page: El, name: str) -> El:
    for s in page.find_all("section", cls="target"):
        if s.find("h3").norm().split()[0] == name:
            return s
    raise AssertionError(f"no section for target {name}")


def row_for(rows: list[dict[str, str]], artifact: str) -> dict[str, str]:
    for r in rows:
        if r["artifact"].split()[0] == artifact:
            return r
    raise AssertionError(f"no row for {artifact} in {rows}")


# --- fixtures --------------------------------------------------------------------------------

def load(name: str) -> dict[str, Any]:
    return dict(json.loads((FIXTURES / name).read_text()))


@pytest.fixture
def manifest() -> dict[str, Any]:
    return load("manifest.json")


@pytest.fixture
def build_log() -> dict[str, Any]:
    return load("build-log.json")


@pytest.fixture
def page(manifest: dict[str, Any], build_log: dict[str, Any]) -> El:
    return dom(report.render(manifest, build_log))


def strip_checks(m: dict[str, Any]) -> dict[str, Any]:
    """The fixture as today's `edgebuild run` writes it: no checks, no selection."""
    m = copy.deepcopy(m)
    for t in m["targets"].values():
        t.pop("selection", None)
        for a in t["artifacts"]:
            a.pop("checks", None)
    return m


# --- render(): the header and the tables -------------------------------------------------------

def test_header_names_the_recipe_versions_and_the_measurement_hosts(page: El, manifest: dict[str, Any]) -> None:
    header = page.find("header")
    fields = dict(zip((dt.norm() for dt in header.find_all("dt")), (dd.norm() for dd in header.find_all("dd"))))
    assert page.find("h1").norm() == "doorcam"
    assert fields["recipe"].split()[0] == manifest["recipe"]["sha256"][:12]
    assert fields["edgebuild"].startswith("0.1.0")
    for tool, version in manifest["tools"].items():
        assert f"{tool} {version}" in fields["tools"]
    for host in ("Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz", "Cortex-A76 (Raspberry Pi 5 Model B Rev 1.0)",
                 "ARMv8 Processor rev 1 (v8l) (NVIDIA Jetson Orin Nano Developer Kit)"):
        assert host in fields["measured on"]
    pills = [p.norm() for p in header.find_all("span", cls="pill")]
    assert pills == ["4 targets", "6 artifacts", "4 passed", "1 failed"]


def test_artifact_tables_hold_the_measurements_and_each_check(page: El) -> None:
    x86 = target_section(page, "x86-64")
    assert "fail" in x86.find("h3").norm()
    rows = table_rows(x86.find("table", cls="artifacts"))
    int8 = row_for(rows, "x86-64/int8.onnx")
    assert (int8["format"], int8["precision"], int8["size"]) == ("onnx", "int8", "3.50 MB")
    assert (int8["p50 ms"], int8["p95 ms"]) == ("7.43", "7.95")
    assert (int8["argmax agreement"], int8["cosine"], int8["accuracy drop"]) == ("96.2%", "0.9941", "0.021")
    for sentence in ("✓ p95 latency 7.95 ms ≤ 20.0 ms", "✓ size 3.50 MB ≤ 8.00 MB", "✓ peak memory 122 MB ≤ 4096 MB",
                     "✗ argmax agreement 0.962 < 0.98", "✗ accuracy drop 0.021 > 0.01"):
        assert sentence in int8["checks"]
    qdq = row_for(rows, "x86-64/qdq.onnx")
    assert (qdq["p50 ms"], qdq["p95 ms"], qdq["argmax agreement"], qdq["cosine"]) == ("5.71", "6.24", "99.2%", "0.9991")
    assert "✗" not in qdq["checks"]
    failed_rows = [tr for tr in x86.find("table", cls="artifacts").find("tbody").find_all("tr") if "failed" in tr.classes()]
    assert len(failed_rows) == 1 and "x86-64/int8.onnx" in failed_rows[0].norm()

    jet = table_rows(target_section(page, "jetson-orin-nano").find("table", cls="artifacts"))
    engine = row_for(jet, "jetson-orin-nano/engine.plan")
    assert (engine["format"], engine["precision"], engine["p95 ms"]) == ("tensorrt-engine", "fp16", "3.12")
    assert "fp32 → half → engine@jetson-orin-nano" in engine["artifact"]
    assert "✓ cosine similarity 0.9999 ≥ 0.999" in engine["checks"]      # a second fidelity check, by its "what"

    # a target without checks in a measured manifest: the plain table with sha256; a web bundle's size is
    # what a browser downloads, with that gzip-compressed and the model's own size under it
    wasm = table_rows(target_section(page, "browser-wasm").find("table", cls="artifacts"))
    assert wasm == [{"artifact": "browser-wasm/web fp32 → opt → web@browser-wasm", "format": "web-bundle",
                     "precision": "fp32", "size": "27.97 MB download; 16.28 MB gzip; model 13.64 MB",
                     "sha256": wasm[0]["sha256"], "checks": "no checks"}]
    assert len(wasm[0]["sha256"]) == 12


def test_selection_shows_the_chosen_candidate_and_why_the_others_lost(page: El) -> None:
    pi = target_section(page, "raspberry-pi-5")
    sel = pi.find("div", cls="selection")
    assert "best by latency: chose qdq" in sel.norm()
    rows = {r["candidate"].split()[0]: r for r in table_rows(sel.find("table"))}
    assert rows["int8"] == {"candidate": "int8", "checks": "✗ fail", "p95 latency": "63.1 ms", "size": "3.50 MB",
                            "argmax agreement": "99.1%", "outcome": "failed: p95 latency 63.1 ms > 50 ms"}
    assert rows["qdq"]["candidate"] == "qdq chosen" and rows["qdq"]["p95 latency"] == "41.3 ms"
    assert rows["opt"]["outcome"] == "slower than qdq (47.9 ms vs 41.3 ms)" and rows["opt"]["checks"] == "✓ pass"
    assert (rows["opt"]["size"], rows["opt"]["argmax agreement"]) == ("13.64 MB", "100%")
    art = row_for(table_rows(pi.find("table", cls="artifacts")), "raspberry-pi-5/qdq.onnx")
    assert "chosen" in art["artifact"] and art["p95 ms"] == "41.3" and art["p50 ms"] == "38.2"


def test_selection_by_size_shows_bytes_and_works_without_candidate_checks(manifest: dict[str, Any]) -> None:
    manifest["targets"]["raspberry-pi-5"]["selection"] = {"by": "size", "chosen": "int8", "candidates": [
        {"step": "int8", "passed": True, "value": 3498760, "why": "chosen"},
        {"step": "qdq", "passed": True, "value": 3571204, "why": "larger than int8 (3571204 vs 3498760 bytes)"}]}
    sel = target_section(dom(report.render(manifest)), "raspberry-pi-5").find("div", cls="selection")
    rows = {r["candidate"].split()[0]: r for r in table_rows(sel.find("table"))}
    assert (rows["qdq"]["size"], rows["qdq"]["p95 latency"], rows["qdq"]["argmax agreement"]) == ("3.57 MB", "–", "–")
    assert rows["int8"]["candidate"] == "int8 chosen"


def test_check_sentences_without_what_or_op_fall_back_to_the_check_name() -> None:
    assert report.check_sentence({"check": "latency", "value": 63.1, "limit": 50, "unit": "ms", "passed": False}) \
        == "latency 63.1 ms > 50.0 ms"
    assert report.check_sentence({"check": "fidelity", "value": 0.97, "limit": 0.98, "passed": False}) == "fidelity 0.97 < 0.98"
    assert report.check_sentence({"check": "fidelity", "what": "max abs error", "op": "<=", "value": 0.04, "limit": 0.1,
                                  "passed": True}) == "max abs error 0.04 ≤ 0.1"
    assert report.check_sentence({"check": "size", "value": 3.5, "unit": "MB"}) == "size 3.50 MB"


def test_the_fixture_is_a_valid_manifest(manifest: dict[str, Any]) -> None:
    import jsonschema

    jsonschema.validate(manifest, json.loads((ROOT / "schemas" / "manifest.schema.json").read_text()))


def test_selection_with_nothing_chosen(manifest: dict[str, Any]) -> None:
    sel = manifest["targets"]["raspberry-pi-5"]["selection"]
    sel["chosen"] = None
    for c in sel["candidates"]:
        c.update(passed=False, why="failed: latency 63.1 ms > 50 ms")
    text = target_section(dom(report.render(manifest)), "raspberry-pi-5").find("div", cls="selection").norm()
    assert "no candidate passed its checks" in text


# --- render(): the SVG charts ----------------------------------------------------------------

def bars(page: El, key: str) -> dict[str, El]:
    """The rows of a chart by their label ('x86-64 / int8')."""
    svg = page.find("div", id=f"chart-{key}").find("svg")
    return {g.find("text", cls="label").norm(): g for g in svg.find_all("g", cls="row")}


def test_charts_draw_a_labelled_bar_per_artifact_against_its_budget(page: El) -> None:
    size, lat, fid = bars(page, "size"), bars(page, "latency"), bars(page, "fidelity")
    labels = {"browser-wasm / web", "jetson-orin-nano / half", "jetson-orin-nano / engine", "raspberry-pi-5 / qdq",
              "x86-64 / qdq", "x86-64 / int8"}
    assert set(lat) == set(fid) == labels
    assert set(size) == labels | {"↳ download, all files", "↳ download, gzip"}   # the web bundle's download

    def value(g: El) -> str:
        return g.find("text", cls="value").norm()

    def budget(g: El) -> str:
        return g.find("text", cls="budget-text").norm()

    assert value(size["raspberry-pi-5 / qdq"]) == "3.57 MB (22% of budget)"
    assert budget(size["raspberry-pi-5 / qdq"]) == "budget ≤ 16.0 MB"
    assert value(size["x86-64 / int8"]) == "3.50 MB (44% of budget)" and budget(size["x86-64 / int8"]) == "budget ≤ 8.00 MB"
    assert value(size["browser-wasm / web"]) == "13.64 MB model" and budget(size["browser-wasm / web"]) == "no budget"
    assert value(lat["raspberry-pi-5 / qdq"]) == "41.3 ms" and budget(lat["raspberry-pi-5 / qdq"]) == "budget ≤ 50.0 ms"
    assert value(lat["x86-64 / int8"]) == "7.95 ms" and budget(lat["x86-64 / int8"]) == "budget ≤ 20.0 ms"
    assert lat["browser-wasm / web"].find("text", cls="missing").norm() == "not measured"
    assert value(fid["x86-64 / int8"]) == "0.962" and budget(fid["x86-64 / int8"]) == "budget ≥ 0.98"

    # colours follow the checks, lengths follow the values, budget lines sit where the budget is
    assert "fail" in fid["x86-64 / int8"].find("rect").classes()
    assert "pass" in fid["x86-64 / qdq"].find("rect").classes()
    assert "none" in size["browser-wasm / web"].find("rect").classes()
    w = {k: float(g.find("rect").attrs["width"]) for k, g in lat.items() if g.find_all("rect")}
    assert w["raspberry-pi-5 / qdq"] > w["jetson-orin-nano / half"] > w["x86-64 / qdq"] > w["jetson-orin-nano / engine"]
    assert w["raspberry-pi-5 / qdq"] / w["jetson-orin-nano / half"] == pytest.approx(41.3 / 9.84, rel=0.01)
    x0 = float(lat["x86-64 / qdq"].find("rect").attrs["x"])
    line50 = float(lat["raspberry-pi-5 / qdq"].find("line", cls="budget").attrs["x1"]) - x0
    line20 = float(lat["x86-64 / qdq"].find("line", cls="budget").attrs["x1"]) - x0
    assert line50 / line20 == pytest.approx(50 / 20, rel=0.01)
    assert line50 > w["raspberry-pi-5 / qdq"]            # 41.3 ms is within its 50 ms budget


def size_rows(page: El) -> list[tuple[str, El]]:
    """The size chart's rows in order, by label: a web bundle's download rows follow its model's row."""
    svg = page.find("div", id="chart-size").find("svg")
    return [(g.find("text", cls="label").norm(), g) for g in svg.find_all("g", cls="row")]


def bar_width(g: El) -> float:
    return float(g.find("rect").attrs["width"])


def test_sizes_share_one_linear_axis_while_every_bar_is_visible(page: El) -> None:
    chart = page.find("div", id="chart-size")
    assert chart.find("h3").norm() == "Model and download size"     # 3.5 MB to 28 MB: no need for a log axis
    size = bars(page, "size")
    assert bar_width(size["↳ download, all files"]) / bar_width(size["x86-64 / int8"]) == pytest.approx(27.97 / 3.50, rel=0.01)
    assert [t.norm() for t in chart.find_all("text", cls="tick")][:3] == ["0", "5 MB", "10 MB"]


def test_a_small_model_against_a_large_budget_is_drawn_on_a_log_axis(manifest: dict[str, Any]) -> None:
    # the vitals example: a 23.5 kB model against x86-64's 1024 MB budget, 1:43000
    art = manifest["targets"]["x86-64"]["artifacts"][1]
    art["size"] = 23500
    art["checks"]["measurements"]["size_mb"] = 0.0235
    size_check = next(r for r in art["checks"]["results"] if r["check"] == "size")
    size_check.update(value=0.0235, limit=1024)
    page = dom(report.render(manifest))
    chart = page.find("div", id="chart-size")
    assert chart.find("h3").norm() == "Model and download size, log scale"
    size = bars(page, "size")
    small, large = size["x86-64 / int8"], size["↳ download, all files"]
    assert small.find("text", cls="value").norm() == "23.5 kB (0.0023% of budget)"
    assert bar_width(small) >= 20                                  # visible, not a 1 px sliver
    assert bar_width(small) < bar_width(size["x86-64 / qdq"]) < bar_width(size["browser-wasm / web"]) < bar_width(large)
    # the budgets keep their order, and the small model's is far to the right of its bar
    x0 = float(small.find("rect").attrs["x"])
    mark = {k: float(size[k].find("line", cls="budget").attrs["x1"]) for k in ("x86-64 / int8", "raspberry-pi-5 / qdq")}
    assert x0 + bar_width(small) < mark["raspberry-pi-5 / qdq"] < mark["x86-64 / int8"]
    # decades, in sizes a person reads
    ticks = [t.norm() for t in chart.find_all("text", cls="tick")]
    assert ticks[0] == "10 kB" and {"100 kB", "1 MB", "10 MB", "1 GB"} <= set(ticks)


def test_a_web_bundle_shows_its_download_under_its_model(page: El, manifest: dict[str, Any]) -> None:
    rows = size_rows(page)
    i = [label for label, _ in rows].index("browser-wasm / web")
    (model_label, model), (dl_label, dl), (gz_label, gz) = rows[i:i + 3]
    assert model.find("text", cls="value").norm() == "13.64 MB model"
    assert (dl_label, dl.find("text", cls="value").norm()) == ("↳ download, all files", "27.97 MB")
    assert (gz_label, gz.find("text", cls="value").norm()) == ("↳ download, gzip", "16.28 MB")
    assert "sub" in dl.classes() and "sub" in gz.classes() and "sub" not in model.classes()
    assert "none" in dl.find("rect").classes() and "none" in gz.find("rect").classes()   # the size check is the model's
    assert bar_width(model) < bar_width(gz) < bar_width(dl)
    assert "runtime" in page.find("div", id="chart-size").find("p").norm()

    # with a size budget, the download is drawn against it too: this bundle is over the browser's 25 MB
    art = manifest["targets"]["browser-wasm"]["artifacts"][0]
    art["checks"] = {"passed": True, "measurements": {"size_mb": 13.6429},
                     "results": [{"check": "size", "what": "size", "value": 13.6429, "limit": 25, "unit": "MB",
                                  "op": "<=", "passed": True}]}
    size = bars(dom(report.render(manifest)), "size")
    assert size["browser-wasm / web"].find("text", cls="value").norm() == "13.64 MB model (55% of budget)"
    assert size["↳ download, all files"].find("text", cls="value").norm() == "27.97 MB (112% of budget)"
    assert size["↳ download, all files"].find("text", cls="budget-text").norm() == "budget ≤ 25.0 MB"
    assert "pass" in size["browser-wasm / web"].find("rect").classes()


def test_an_older_web_bundle_manifest_shows_the_folder_as_its_download(manifest: dict[str, Any]) -> None:
    manifest["steps"]["web@browser-wasm"]["facts"] = {"files": 4, "size": 13651408}   # before model and gzip sizes
    manifest["targets"]["browser-wasm"]["artifacts"][0]["size"] = 13651408
    page = dom(report.render(manifest))
    rows = dict(size_rows(page))
    assert rows["browser-wasm / web"].find("text", cls="missing").norm() == "not measured"
    assert rows["↳ download, all files"].find("text", cls="value").norm() == "13.65 MB"
    assert "↳ download, gzip" not in rows
    wasm = table_rows(target_section(page, "browser-wasm").find("table", cls="artifacts"))
    assert wasm[0]["size"] == "13.65 MB download"


def test_budget_shares_never_round_to_a_false_100_percent() -> None:
    assert [report.fmt_share(v, 100) for v in (0.0023, 0.094, 1.5, 57, 99.96, 100, 100.4, 250)] == [
        "0.0023%", "0.094%", "1.5%", "57%", "99.96%", "100%", "100.4%", "250%"]
    assert [report.fmt_size_tick(mb) for mb in (0, 0.0005, 0.01, 2.5, 1000)] == ["0", "500 B", "10 kB", "2.5 MB", "1 GB"]


def test_dag_has_a_node_per_step_in_columns_by_depth(page: El, manifest: dict[str, Any]) -> None:
    svg = page.find("section", id="dag").find("svg")
    nodes = {g.find("text", cls="id").norm(): g for g in svg.find_all("g", cls="node")}
    assert set(nodes) == {"model", "fp32", "half", "int8", "qdq", "opt", "engine", "web"}
    kinds = {k: g.find("text", cls="kind").norm() for k, g in nodes.items()}
    assert kinds["qdq"] == "quantize-static" and kinds["engine"] == "tensorrt @jetson-orin-nano"
    assert nodes["engine"].find("text", cls="extra").norm() == "built 24.9 s"

    def col(k: str) -> float:
        return float(re.match(r"translate\(([\d.]+),", nodes[k].attrs["transform"]).group(1))  # type: ignore[union-attr]

    assert col("model") < col("fp32") < col("half") == col("int8") == col("qdq") == col("opt") < col("engine") == col("web")
    assert len(svg.find_all("path", cls="edge")) == len(manifest["steps"])
    edges = {e.find("title").norm() for e in svg.find_all("path", cls="edge")}
    assert {"model → fp32", "half → engine@jetson-orin-nano", "fp32 → qdq", "opt → web@browser-wasm"} <= edges
    assert "shipped" in nodes["qdq"].classes() and "shipped" not in nodes["fp32"].classes()


def test_timings_table_comes_from_the_build_log(page: El, build_log: dict[str, Any]) -> None:
    sec = page.find("section", id="timings")
    rows = table_rows(sec.find("table"))
    assert [r["node"] for r in rows] == list(build_log["nodes"])
    by = {r["node"]: r for r in rows}
    assert by["engine@jetson-orin-nano"] == {"node": "engine@jetson-orin-nano", "kind": "tensorrt", "status": "built",
                                             "seconds": "24.91"}
    assert by["fp32"]["status"] == "cached" and by["qdq"]["seconds"] == "9.76"
    assert by["check:qdq@x86-64"] == {"node": "check:qdq@x86-64", "kind": "check", "status": "built", "seconds": "1.94"}
    assert [th.norm() for th in sec.find("tfoot").find_all("th")] == ["total", "41.87"]


# --- render(): what must not break it ----------------------------------------------------------

def test_a_manifest_without_checks_still_renders(manifest: dict[str, Any]) -> None:
    m = strip_checks(manifest)
    page = dom(report.render(m, None))
    assert "no measurements in this manifest" in page.find("header").norm()
    rows = table_rows(target_section(page, "x86-64").find("table", cls="artifacts"))
    assert row_for(rows, "x86-64/int8.onnx")["sha256"] == m["targets"]["x86-64"]["artifacts"][1]["sha256"][:12]
    assert "p95 ms" not in rows[0]
    assert len(bars(page, "size")) == 8                  # sizes are known without measuring (+2: the bundle's download)
    assert page.find("div", id="chart-latency").find_all("svg") == []
    assert "No latency measurements" in page.find("div", id="chart-latency").norm()
    assert "No build-log.json" in page.find("section", id="timings").norm()
    assert {g.find("text", cls="id").norm() for g in page.find("section", id="dag").find_all("g", cls="node")} >= {"qdq"}


@pytest.mark.parametrize("m", [
    {"manifest": 1, "targets": {}},
    {"manifest": 1, "name": "x", "targets": {"t": {"artifacts": "nope"}}, "steps": []},
    {"manifest": 1, "name": "x", "targets": {"t": {"artifacts": [{"step": "a", "checks": 5}, 7]}},
     "steps": {"a": {"from": "ghost"}, "b": {"from": "b"}}},
    {"manifest": 1, "name": "x", "targets": {"t": {"selection": {"by": "size", "candidates": [{"step": "a"}, "x"]},
     "artifacts": [{"step": "a", "size": "big", "checks": {
         "measurements": {"latency_ms": {"p95": "fast", "p50": float("nan")}, "fidelity": [], "size_mb": True},
         "results": [{"check": "latency"}, {"check": "weird", "value": 3, "limit": 2, "unit": "J", "passed": False}, None]}}]}}},
])
def test_malformed_or_minimal_manifests_render(m: dict[str, Any]) -> None:
    page = dom(report.render(m, {"nodes": {"a": {"status": "built"}, "b": "x"}, "total_s": "n/a"}))
    assert page.find("h1").norm()


def test_everything_from_the_manifest_is_escaped(manifest: dict[str, Any], build_log: dict[str, Any]) -> None:
    m = copy.deepcopy(manifest)
    m["name"] = "<script>alert(1)</script>"
    m["steps"]["<b>"] = dict(m["steps"]["qdq"], step="<b>", use="<i>x</i>")
    art = copy.deepcopy(m["targets"]["x86-64"]["artifacts"][0])
    art.update(step="<b>", path="x86-64/<b>.onnx", chain=["fp32", "<b>"])
    art["checks"]["host"] = '"><img src=x onerror=alert(1)>'
    m["targets"]["x86-64"]["artifacts"].append(art)
    m["targets"]["raspberry-pi-5"]["selection"]["candidates"][0]["why"] = "<b>failed</b>"
    build_log["nodes"]["<b>"] = {"status": "<b>built</b>", "seconds": 1.0}
    html = report.render(m, build_log)
    page = dom(html)
    assert not page.find_all("b") and not page.find_all("script") and not page.find_all("img")
    assert "&lt;b&gt;" in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert page.find("h1").norm() == "<script>alert(1)</script>"
    assert row_for(table_rows(target_section(page, "x86-64").find("table", cls="artifacts")), "x86-64/<b>.onnx")
    assert "x86-64 / <b>" in bars(page, "latency")
    assert "<b>" in {g.find("text", cls="id").norm() for g in page.find("section", id="dag").find_all("g", cls="node")}


def test_the_page_is_self_contained(page: El) -> None:
    assert not page.find_all("script") and not page.find_all("link") and not page.find_all("img")
    assert all("src" not in e.attrs and "href" not in e.attrs for e in page.iter())
    css = page.find("style").text()
    assert "@import" not in css and "url(" not in css
    assert all(e.attrs.get("marker-end", "url(#").startswith("url(#") for e in page.iter())


# --- the terminal summary --------------------------------------------------------------------

def summary(m: dict[str, Any], targets: list[str] | None = None) -> str:
    from rich.console import Console

    from edgebuild.output.manifest import Manifest
    from edgebuild.output.summary import print_table

    buf = io.StringIO()
    print_table(Manifest.from_dict(m), targets, Console(file=buf, width=200, force_terminal=False, highlight=False))
    return buf.getvalue()


def test_summary_with_checks_shows_measurements_pass_fail_and_the_choice(manifest: dict[str, Any]) -> None:
    out = summary(manifest)
    lines = out.splitlines()

    def row(target: str, name: str) -> str:   # a target's table lists its artifacts by file name
        start = next(i for i, x in enumerate(lines) if x.startswith(target))
        return next(x for x in lines[start:] if x.lstrip().startswith(name))

    line = row("x86-64", "int8.onnx")
    for cell in ("int8", "3.50 MB", "7.43", "7.95", "96.2%", "cos 0.9941", "✗", "argmax agreement 0.962 < 0.98",
                 "accuracy drop 0.021 > 0.01"):
        assert cell in line
    assert "✓" in row("x86-64", "qdq.onnx")
    assert "★ chosen" in row("raspberry-pi-5", "qdq.onnx")
    assert "best by latency: qdq" in out
    assert "int8 (63.1 ms): failed: p95 latency 63.1 ms > 50 ms" in out
    assert "opt (47.9 ms): slower than qdq (47.9 ms vs 41.3 ms)" in out
    assert "no checks" in row("browser-wasm", "web")


def test_summary_without_checks_is_the_plain_table(manifest: dict[str, Any]) -> None:
    m = strip_checks(manifest)
    m["targets"]["x86-64"]["artifacts"][0]["path"] = "x86-64/[b]qdq[/b].onnx"   # not rich markup
    out = summary(m, ["x86-64", "not-a-target"])
    assert "jetson" not in out and "not-a-target" not in out
    header = next(x for x in out.splitlines() if "artifact" in x)
    assert header.split() == ["artifact", "format", "precision", "size", "sha256"]
    line = next(x for x in out.splitlines() if "int8.onnx" in x)
    assert line.split() == ["x86-64/int8.onnx", "onnx", "int8", "3.50", "MB", m["targets"]["x86-64"]["artifacts"][1]["sha256"][:12]]
    assert "x86-64/[b]qdq[/b].onnx" in out


# --- the command -----------------------------------------------------------------------------

@pytest.fixture
def dist(tmp_path: Path) -> Path:
    d = tmp_path / "dist" / "doorcam"
    d.mkdir(parents=True)
    for f in ("manifest.json", "build-log.json"):
        shutil.copy(FIXTURES / f, d / f)
    return d


def test_command_writes_report_html_beside_the_manifest(dist: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(dist / "manifest.json")]) == 0
    html = (dist / "report.html").read_text()
    assert "doorcam" in html and "24.91" in html
    assert str(dist / "report.html") in capsys.readouterr().out
    out = dist.parent / "elsewhere.html"
    assert main(["report", str(dist), "-o", str(out)]) == 0 and out.is_file()


@pytest.mark.parametrize("content, message", [
    (None, "no such manifest"),
    ('{"manifest": 1, "targets": {', "not valid JSON"),
    ('["a list"]', "not an edgebuild manifest"),
])
def test_command_reports_a_bad_manifest_without_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            content: str | None, message: str) -> None:
    path = tmp_path / "manifest.json"
    if content is not None:
        path.write_text(content)
    assert main(["report", str(path)]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "report.html").exists()


def test_command_reports_an_unwritable_output(dist: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(dist / "manifest.json"), "-o", str(dist / "no" / "such" / "dir.html")]) == 1
    err = capsys.readouterr().err
    assert "cannot write the report" in err and "Traceback" not in err


# --- in a real browser ----------------------------------------------------------------------

CONSOLE = re.compile(r"CONSOLE[(:]|Uncaught")


@pytest.fixture
def chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.skip(f"headless Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    return CHROMIUM


def open_in_chromium(html: Path, tmp: Path) -> tuple[str, list[str]]:
    """The DOM after load, and the page's console messages (chromium logs them to stderr)."""
    profile = tmp / f"chromium-profile-{html.stem}"
    r = subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
                        "--dump-dom", html.resolve().as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "<html" in r.stdout, f"chromium dumped no DOM: {r.stderr[-3000:]}"
    return r.stdout, [line for line in r.stderr.splitlines() if CONSOLE.search(line)]


@pytest.mark.browser
def test_the_browser_check_catches_a_page_that_throws(chromium: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><body><p>broken</p><script>throw new Error("x")</script></body></html>')
    good = tmp_path / "good.html"
    good.write_text("<!DOCTYPE html><html><body><p>fine</p></body></html>")
    _, errors = open_in_chromium(bad, tmp_path)
    assert any("Uncaught Error: x" in e for e in errors), errors
    dumped, errors = open_in_chromium(good, tmp_path)
    assert errors == [] and "fine" in dumped


def visible_text(page: El) -> str:
    """The page's text nodes, one space between them (cells and blocks stay apart)."""
    def texts(e: El) -> Any:
        for c in e.children:
            if isinstance(c, str):
                yield c
            else:
                yield from texts(c)
    return " ".join(" ".join(texts(page.find("body"))).split())


@pytest.mark.browser
def test_fixture_report_in_chromium(chromium: Path, dist: Path, tmp_path: Path, manifest: dict[str, Any]) -> None:
    out = report.write(dist / "manifest.json")
    dumped, errors = open_in_chromium(out, tmp_path)
    assert errors == [], errors
    page = dom(dumped)
    text = visible_text(page)
    # what a person reads: header, table cells, check verdicts, the choice, chart labels, DAG, timings
    for s in ("doorcam", manifest["recipe"]["sha256"][:12], "onnxruntime 1.32.0", "Intel(R) Xeon(R) Gold 6338",
              "41.3", "38.2", "7.95", "96.2%", "0.9941", "0.021", "✗ argmax agreement 0.962 < 0.98",
              "failed: p95 latency 63.1 ms > 50 ms", "slower than qdq (47.9 ms vs 41.3 ms)",
              "3.57 MB", "budget ≤ 50.0 ms", "budget ≥ 0.98", "engine@jetson-orin-nano", "24.91", "41.87"):
        assert s in text, s
    # the browser kept the inline SVG: bars with their numbers, budget lines, DAG nodes
    lat = bars(page, "latency")
    assert lat["raspberry-pi-5 / qdq"].find("text", cls="value").norm() == "41.3 ms"
    assert len(page.find("div", id="chart-size").find_all("rect")) == 8      # 6 artifacts, the bundle's 2 downloads
    assert len(page.find("div", id="chart-latency").find_all("line", cls="budget")) == 5
    assert len(page.find("section", id="dag").find_all("g", cls="node")) == 8


@pytest.fixture(scope="module")
def vitals(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch", reason="building the vitals example needs torch")
    from examplekit import seed_cache, vitals_copy

    work = tmp_path_factory.mktemp("vitals-report")   # steps from the test run's cold build: publishing is this run's
    r = subprocess.run([sys.executable, "-m", "edgebuild", "run", str(vitals_copy(work)),
                        "--cache", str(seed_cache(tmp_path_factory, work / "cache")), "--out", str(work / "dist")],
                       capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=work)
    assert r.returncode == 0, r.stderr
    return work / "dist" / "vitals"


@pytest.mark.slow
@pytest.mark.browser
def test_vitals_report_in_chromium(chromium: Path, vitals: Path, tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "edgebuild", "report", str(vitals / "manifest.json")],
                       capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = vitals / "report.html"
    assert out.is_file()
    dumped, errors = open_in_chromium(out, tmp_path)
    assert errors == [], errors
    page = dom(dumped)
    text = visible_text(page)
    m = json.loads((vitals / "manifest.json").read_text())
    log = json.loads((vitals / "build-log.json").read_text())
    assert m["name"] in text and m["recipe"]["sha256"][:12] in text
    lat = bars(page, "latency")
    for tname, t in m["targets"].items():
        rows = table_rows(target_section(page, tname).find("table", cls="artifacts"))
        for a in t["artifacts"]:
            row = row_for(rows, a["path"])
            size = a["size"]   # tens of kB for the models, 14 MB for the web bundle (its runtime)
            shown = f"{size / 1e6:.2f} MB" if size >= 1e5 else f"{size / 1e3:.1f} kB"
            if a["format"] == "web-bundle":   # the download, then that gzip-compressed and the model's size
                facts = m["steps"][a["chain"][-1]]["facts"]
                assert row["size"] == (f"{shown} download; {facts['total_gzip_bytes'] / 1e6:.2f} MB gzip; "
                                       f"model {facts['model']['bytes'] / 1e3:.1f} kB")
                assert facts["total_bytes"] == size
            else:
                assert row["size"] == shown
            assert (row["format"], row["precision"]) == (a["format"], a["precision"])
            assert f"{tname} / {a['step']}" in bars(page, "size")
            if "checks" not in a:
                assert row["sha256"] == a["sha256"][:12]
                continue
            meas = a["checks"]["measurements"]
            assert a["checks"]["host"] in text
            if meas["latency_ms"] is None:   # a web bundle: its latency is the browser's, not measured here
                assert row["p50 ms"] == row["p95 ms"] == "–"
            else:
                assert shows(row["p50 ms"], meas["latency_ms"]["p50"]) and shows(row["p95 ms"], meas["latency_ms"]["p95"])
            assert shows(row["cosine"], meas["fidelity"]["cosine"])
            assert shows(row["argmax agreement"].rstrip("%"), meas["fidelity"]["argmax_agreement"] * 100)
            assert shows(row["accuracy drop"], meas["accuracy"]["drop"])
            assert row["checks"].count("✓") == sum(r["passed"] for r in a["checks"]["results"])
            assert row["checks"].count("✗") == sum(not r["passed"] for r in a["checks"]["results"])
            for r in a["checks"]["results"]:
                assert r["what"] in row["checks"]
            if meas["latency_ms"] is not None:
                assert shows(lat[f"{tname} / {a['step']}"].find("text", cls="value").norm().removesuffix(" ms"),
                             meas["latency_ms"]["p95"])
        if "selection" in t:
            sel = target_section(page, tname).find("div", cls="selection").norm()
            assert f"chose {t['selection']['chosen']}" in sel
            for c in t["selection"]["candidates"]:
                assert c["why"] in sel
    nodes = {g.find("text", cls="id").norm() for g in page.find("section", id="dag").find_all("g", cls="node")}
    assert nodes == {s["step"] for s in m["steps"].values()} | {"model"}
    timings = {r["node"]: r for r in table_rows(page.find("section", id="timings").find("table"))}
    for nid, n in log["nodes"].items():
        assert timings[nid]["status"] == n["status"] and timings[nid]["seconds"] == f"{n['seconds']:.2f}"


def shows(cell: str, value: float) -> bool:
    """The cell is the value, rounded to the digits it shows."""
    digits = len(cell.split(".")[1]) if "." in cell else 0
    return abs(float(cell) - value) <= 0.5 * 10 ** -digits + 1e-12
