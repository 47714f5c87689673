"""`edgebuild report`: one self-contained HTML page for a published manifest.

The page is rendered from `manifest.json` alone (plus `build-log.json` beside it when present):
header, per-target tables with the measurements and checks, inline-SVG bar charts against the
budgets, the build DAG, and step timings. No JavaScript, no external resources.

Geometry for the SVG charts is computed here; the template only places elements, with jinja2's
autoescape on, so every name that comes from a recipe is escaped.

Only the standard library is imported at module level: `edgebuild.output.summary` shares the formatters.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgebuild.output.manifest import Manifest

CHECK_ORDER = ("latency", "size", "memory", "fidelity", "accuracy")
HIGHER_IS_BETTER = {"fidelity"}


# --- reading a manifest defensively -----------------------------------------------------------

def get(d: Any, *keys: str) -> Any:
    """d[k1][k2]..., or None as soon as a level is missing or is not a dict."""
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def num(x: Any) -> float | None:
    """x as a finite float, or None (bools, strings, NaN and missing values are not numbers here)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    f = float(x)
    return f if math.isfinite(f) else None


def text(x: Any) -> str:
    return "" if x is None else str(x)


# --- formatting numbers the way a person reads them -------------------------------------------

def fmt_ms(v: Any) -> str:
    """Milliseconds with fewer decimals as the value grows (0.123, 1.23, 12.3, 123)."""
    f = num(v)
    if f is None:
        return "–"
    digits = 3 if abs(f) < 1 else 2 if abs(f) < 10 else 1 if abs(f) < 100 else 0
    return f"{f:.{digits}f}"


fmt_mb = fmt_ms   # megabytes read the same way


def fmt_bytes(n: Any) -> str:
    f = num(n)
    if f is None:
        return "–"
    if f >= 1e9:
        return f"{f / 1e9:.2f} GB"
    if f >= 1e5:
        return f"{f / 1e6:.2f} MB"
    if f >= 1e3:
        return f"{f / 1e3:.1f} kB"
    return f"{int(f)} B"


def fmt_size_tick(mb: float) -> str:
    """A size axis tick, given in MB, in the unit that reads best: '0', '10 kB', '2.5 MB', '1 GB'."""
    b = mb * 1e6
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if b >= scale * (1 - 1e-9):
            return f"{fmt_plain(b / scale)} {unit}"
    return f"{fmt_plain(b)} B" if b > 0 else "0"


def fmt_share(value: float, limit: float) -> str:
    """value as a percentage of limit, with two significant digits below 10 %: '57%', '1.5%', '0.0023%'."""
    p = value / limit * 100 if limit > 0 else math.inf
    if not math.isfinite(p):
        return "–"
    digits = 0 if p >= 10 or p == 0 else 1 - math.floor(math.log10(p))
    while digits < 4 and p != 100 and round(p, digits) == 100:   # never "100%" for a hair over or under
        digits += 1
    return f"{p:.{digits}f}%"


def fmt_ratio(v: Any, digits: int = 4) -> str:
    """A value in [0, 1] such as a cosine: never rounded up to 1 unless it is exactly 1."""
    f = num(v)
    if f is None:
        return "–"
    while digits < 8 and f != 1.0 and round(f, digits) == 1.0:
        digits += 1
    return f"{f:.{digits}f}"


def fmt_pct(v: Any) -> str:
    """A fraction as a percentage, 0.9962 -> '99.62%'; never shows 100% for less than 1."""
    f = num(v)
    if f is None:
        return "–"
    p = f * 100
    digits = 2
    while digits < 6 and f != 1.0 and round(p, digits) == 100.0:
        digits += 1
    s = f"{p:.{digits}f}".rstrip("0").rstrip(".")
    return f"{s}%"


def fmt_plain(v: Any) -> str:
    """A number with no unit: short, trailing zeros trimmed."""
    f = num(v)
    if f is None:
        return "–"
    if f == int(f) and abs(f) < 1e9:
        return str(int(f))
    if abs(f) < 1:
        return f"{f:.4f}".rstrip("0").rstrip(".")
    return f"{f:.4g}"


def fmt_value(v: Any, unit: Any) -> str:
    """A check value with its unit: '12.4 ms', '0.021 MB', '0.996'."""
    if unit == "ms":
        return f"{fmt_ms(v)} ms"
    if unit == "MB":
        return f"{fmt_mb(v)} MB"
    s = fmt_plain(v)
    return f"{s} {unit}" if unit else s


def check_sentence(r: dict[str, Any]) -> str:
    """'p95 latency 12.4 ms ≤ 50.0 ms' for a check that passed, 'p95 latency 63.1 ms > 50.0 ms' for one that failed.

    Named by the result's "what" (else its "check"); compared by its "op" (else: fidelity is a minimum,
    everything else a maximum).
    """
    name = text(r.get("what")) or text(r.get("check")) or "check"
    unit = r.get("unit") or ""
    if num(r.get("limit")) is None:
        return f"{name} {fmt_value(r.get('value'), unit)}"
    ok = r.get("passed") is not False
    at_least = r.get("op") == ">=" if r.get("op") in ("<=", ">=") else r.get("check") in HIGHER_IS_BETTER
    op = ("≥" if ok else "<") if at_least else ("≤" if ok else ">")
    return f"{name} {fmt_value(r.get('value'), unit)} {op} {fmt_value(r.get('limit'), unit)}"


def check_results(art: dict[str, Any]) -> list[dict[str, Any]]:
    rs = get(art, "checks", "results")
    out = [r for r in rs if isinstance(r, dict)] if isinstance(rs, list) else []
    rank = {c: i for i, c in enumerate(CHECK_ORDER)}
    return sorted(out, key=lambda r: rank.get(text(r.get("check")), len(rank)))


def result_for(art: dict[str, Any], check: str, what: str | None = None) -> dict[str, Any] | None:
    """The first result of this check; with `what`, the one that says so (or, failing that, one that says nothing)."""
    rs = [r for r in check_results(art) if r.get("check") == check]
    if what is not None:
        rs = [r for r in rs if r.get("what") == what] or [r for r in rs if not r.get("what")]
    return rs[0] if rs else None


def passed(art: dict[str, Any]) -> bool | None:
    """True/False when the artifact was checked, None when it has no checks."""
    p = get(art, "checks", "passed")
    if isinstance(p, bool):
        return p
    rs = check_results(art)
    if rs:
        return all(r.get("passed") is True for r in rs)
    return None


def artifact_size_mb(art: dict[str, Any]) -> float | None:
    mb = num(get(art, "checks", "measurements", "size_mb"))
    if mb is not None:
        return mb
    b = num(art.get("size"))
    return b / 1e6 if b is not None else None


def step_facts(manifest: dict[str, Any], art: dict[str, Any]) -> dict[str, Any]:
    """The facts of the step that made an artifact: the manifest's entry for the last node of its chain."""
    chain = art.get("chain")
    node = chain[-1] if isinstance(chain, list) and chain else art.get("step")
    facts = get(manifest, "steps", text(node), "facts")
    return facts if isinstance(facts, dict) else {}


def bundle_sizes(manifest: dict[str, Any], art: dict[str, Any]) -> dict[str, float | None] | None:
    """A web bundle's sizes in bytes, None for other artifacts: its `model` (model.onnx), the `download` (every
    file of the bundle folder, the onnxruntime-web runtime included: what a visitor fetches) and `gzip`, the
    download gzip-compressed as a server sends it. Any may be None: older manifests record only the folder."""
    if art.get("format") != "web-bundle":
        return None
    facts = step_facts(manifest, art)
    model = num(get(facts, "model", "bytes"))
    measured = num(get(art, "checks", "measurements", "size_mb"))
    if model is None and measured is not None:
        model = measured * 1e6
    download = num(facts.get("total_bytes"))
    return {"model": model, "download": download if download is not None else num(art.get("size")),
            "gzip": num(facts.get("total_gzip_bytes"))}


def _bundle_detail(sizes: dict[str, float | None] | None) -> str:
    """The note under a web bundle's size in the tables: that it is the download, gzip-compressed, and the
    model's share. It wraps between its parts only (no-break spaces inside them), to keep the column narrow."""
    if sizes is None:
        return ""
    parts = ["download"]
    if sizes["gzip"] is not None:
        parts.append(f"{fmt_bytes(sizes['gzip'])} gzip")
    if sizes["model"] is not None:
        parts.append(f"model {fmt_bytes(sizes['model'])}")
    return "; ".join(part.replace(" ", "\u00a0") for part in parts)


def has_checks(manifest: dict[str, Any]) -> bool:
    return any(isinstance(a, dict) and isinstance(a.get("checks"), dict)
               for t in targets_of(manifest).values() for a in artifacts_of(t))


def targets_of(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    ts = manifest.get("targets")
    return {str(k): v for k, v in ts.items() if isinstance(v, dict)} if isinstance(ts, dict) else {}


def artifacts_of(target: dict[str, Any]) -> list[dict[str, Any]]:
    arts = target.get("artifacts")
    return [a for a in arts if isinstance(a, dict)] if isinstance(arts, list) else []


def selection_of(target: dict[str, Any]) -> dict[str, Any] | None:
    s = target.get("selection")
    return s if isinstance(s, dict) else None


def chosen_step(target: dict[str, Any]) -> str | None:
    s = selection_of(target)
    c = s.get("chosen") if s else None
    return str(c) if c is not None else None


# --- the view model ---------------------------------------------------------------------------

def _artifact_row(art: dict[str, Any], chosen: str | None, bundle: dict[str, float | None] | None) -> dict[str, Any]:
    m = get(art, "checks", "measurements") or {}
    lat = get(m, "latency_ms") or {}
    fid = get(m, "fidelity") or {}
    acc = get(m, "accuracy") or {}
    results = [{"check": text(r.get("check")), "passed": r.get("passed") is True,
                "sentence": check_sentence(r)} for r in check_results(art)]
    drop = num(get(acc, "drop"))
    acc_detail = ""
    if num(get(acc, "reference")) is not None and num(get(acc, "candidate")) is not None:
        acc_detail = f"{fmt_plain(acc['reference'])} → {fmt_plain(acc['candidate'])}"
        if get(acc, "data"):
            acc_detail += f" on {text(acc['data'])}"
    fid_detail = ""
    if get(fid, "samples") is not None or get(fid, "data"):
        fid_detail = f"{fmt_plain(get(fid, 'samples'))} samples of {text(get(fid, 'data')) or 'data'}"
        if num(get(fid, "max_abs_error")) is not None:
            fid_detail += f"; max |error| {fmt_plain(fid['max_abs_error'])}"
    runs = num(get(lat, "runs"))
    threads = num(get(lat, "threads"))
    lat_detail = ", ".join(x for x in (f"{int(runs)} runs" if runs is not None else "",
                                       f"{int(threads)} threads" if threads is not None else "",
                                       f"p99 {fmt_ms(lat['p99'])} ms" if num(get(lat, "p99")) is not None else "")
                           if x)
    step = text(art.get("step"))
    return {
        "step": step,
        "path": text(art.get("path")) or step,
        "format": text(art.get("format")) or "–",
        "precision": text(art.get("precision")) or "–",
        "size": fmt_bytes(art.get("size")),
        "size_detail": _bundle_detail(bundle),
        "sha": text(art.get("sha256"))[:12],
        "chain": " → ".join(text(c) for c in art.get("chain", []) if c is not None)
                 if isinstance(art.get("chain"), list) else "",
        "p50": fmt_ms(get(lat, "p50")),
        "p95": fmt_ms(get(lat, "p95")),
        "lat_detail": lat_detail,
        "memory": fmt_mb(get(m, "memory_mb")),
        "agreement": fmt_pct(get(fid, "argmax_agreement")),
        "cosine": fmt_ratio(get(fid, "cosine")),
        "fid_detail": fid_detail,
        "drop": fmt_plain(drop) if drop is not None else "–",
        "acc_detail": acc_detail,
        "results": results,
        "passed": passed(art),
        "chosen": chosen is not None and step == chosen,
    }


def fmt_selection_value(value: Any, by: Any, unit: Any = None) -> str:
    """A candidate's selection value: p95 milliseconds when chosen by latency, its time over the FP32
    reference's when the candidates were timed in pairs against it (unit "x reference"), bytes when chosen
    by size."""
    if num(value) is None:
        return "–"
    if unit == "x reference":
        return f"{value:.3g}x the reference's time"
    if by == "latency":
        return f"{fmt_ms(value)} ms"
    if by == "size":
        return fmt_bytes(value)
    return fmt_plain(value)


def _selection_view(sel: dict[str, Any] | None) -> dict[str, Any] | None:
    if sel is None:
        return None
    by = text(sel.get("by")) or "?"
    chosen = sel.get("chosen")
    cands = []
    for c in sel.get("candidates", []) if isinstance(sel.get("candidates"), list) else []:
        if not isinstance(c, dict):
            continue
        step = text(c.get("step"))
        m = get(c, "checks", "measurements")
        p95, size_mb = get(m, "latency_ms", "p95"), num(get(m, "size_mb"))
        value = c.get("value") if c.get("unit") != "x reference" else None   # the p95 column shows milliseconds
        cands.append({"step": step, "passed": c.get("passed") is True,
                      "p95": fmt_selection_value(value if by == "latency" and num(value) is not None else p95, "latency"),
                      "size": fmt_selection_value(value if by == "size" and num(value) is not None else
                                                  (size_mb * 1e6 if size_mb is not None else None), "size"),
                      "agreement": fmt_pct(get(m, "fidelity", "argmax_agreement")),
                      "why": text(c.get("why")) or ("chosen" if step == chosen else ""),
                      "chosen": chosen is not None and step == text(chosen)})
    return {"by": by, "chosen": text(chosen) if chosen is not None else None, "candidates": cands}


def _target_view(manifest: dict[str, Any], name: str, t: dict[str, Any]) -> dict[str, Any]:
    chosen = chosen_step(t)
    rows = [_artifact_row(a, chosen, bundle_sizes(manifest, a)) for a in artifacts_of(t)]
    states = [r["passed"] for r in rows if r["passed"] is not None]
    status = None if not states else all(states)
    return {"name": name, "profile": text(get(t, "profile", "name")) or name,
            "profile_sha": text(get(t, "profile", "sha256"))[:12], "rows": rows,
            "measured": any(r["results"] or r["p95"] != "–" or r["agreement"] != "–" for r in rows),
            "status": status, "selection": _selection_view(selection_of(t))}


def _nice_max(v: float) -> float:
    """A round number at or above v (the right end of a chart's axis): 1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8 x 10^k."""
    if v <= 0:
        return 1.0
    k = 10 ** math.floor(math.log10(v))
    for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if m * k >= v * (1 - 1e-9):
            return float(round(m * k, 12))
    return 10.0 * k


def _ticks(lo: float, top: float) -> list[float]:
    """Round tick values from lo to top, four to seven of them."""
    span = top - lo
    if span <= 0:
        return [lo]
    k = 10 ** math.floor(math.log10(span / 5))
    step = next(m * k for m in (1, 2, 2.5, 5, 10) if span / (m * k) <= 6)
    first = math.ceil(lo / step - 1e-9)
    out = []
    i = first
    while i * step <= top + step * 1e-9:
        out.append(round(i * step, 12))
        i += 1
    return out


def _log_ticks(lo: float, top: float) -> list[float]:
    """Tick values of a log axis: each power of ten from lo to top, with 2 and 5 times it over a short axis
    and 3 times it over a middling one, so ticks stay round and about as far apart as on a linear axis."""
    decades = math.log10(top / lo)
    steps = (1, 2, 5) if decades <= 2 else (1, 3) if decades <= 4 else (1,)
    out = []
    for k in range(math.floor(math.log10(lo)), math.ceil(math.log10(top)) + 1):
        out += [v for v in (float(f"{m}e{k}") for m in steps) if lo * (1 - 1e-9) <= v <= top * (1 + 1e-9)]
    return out


# A chart is linear from 0 while its largest value (a budget, often) is at most LOG_SPAN times its smallest:
# then the smallest bar is still about 8 px of the 440. Beyond that (a 23 kB model against a 1 GB budget is
# 1:43000) small bars would vanish, and the axis is logarithmic, from a power of ten at or below half the
# smallest value, so the smallest bar is at least a third of a decade long.
LOG_SPAN = 50


def _axis(values: list[float]) -> tuple[float, float, bool]:
    """(from, to, log) of a chart's axis for these values (bars and budgets)."""
    positive = [v for v in values if v > 0]
    if positive and max(positive) / min(positive) > LOG_SPAN:
        return 10.0 ** math.floor(math.log10(min(positive) / 2)), _nice_max(max(positive) * 1.1), True
    return 0.0, _nice_max(max(values) * 1.05 if values else 1.0), False


CHART_LABEL_W = 230   # left column: "target / step"
CHART_BAR_W = 440     # the bars' area
CHART_RIGHT_W = 170   # right column: "budget ≤ 50 ms"
ROW_H = 26
BAR_H = 16


def _chart(key: str, title: str, rows: list[dict[str, Any]], higher_is_better: bool,
           fmt: Any, tick_fmt: Any, axis: tuple[float, float] | None = None,
           limit_fmt: Any = None, note: str = "") -> dict[str, Any]:
    """Horizontal bars, one per artifact, each with its own budget marker (budgets are per target).

    A row may carry its own `text` (the number shown by the bar) and be a `sub` row: a second measure of
    the artifact above it (a web bundle's download). Without a fixed `axis` the scale is chosen by `_axis`.
    """
    values = [v for r in rows for v in (r["value"], r["limit"]) if v is not None]
    lo, top, log = (*axis, False) if axis is not None else _axis(values)
    x0 = CHART_LABEL_W

    def x_of(v: float) -> float:
        v = min(max(v, lo), top)
        if log:
            at = math.log10(v / lo) / math.log10(top / lo)
        else:
            at = (v - lo) / (top - lo) if top > lo else 0.0
        return round(x0 + at * CHART_BAR_W, 2)

    top_pad = 22
    bars = []
    y = top_pad
    for r in rows:
        v, lim = r["value"], r["limit"]
        bar: dict[str, Any] = {"label": r["label"], "title": r["title"], "y": y, "bar_y": y + (ROW_H - BAR_H) / 2,
                               "text_y": y + ROW_H / 2 + 4, "x0": x0, "measured": v is not None,
                               "sub": bool(r.get("sub"))}
        if v is not None:
            w = max(x_of(v) - x0, 1.0)
            label = r.get("text") or fmt(v)
            bar.update(w=round(w, 2), value_text=label)
            # the number goes after the bar, unless it would run into the budget marker or off the bars'
            # area: then inside the bar's end, in white
            est = 7.2 * len(label) + 10
            end = x0 + w
            clash = lim is not None and end - 2 < x_of(lim) < end + est
            if (clash or end + est > x0 + CHART_BAR_W) and w > est:
                bar.update(value_x=round(end - 5, 2), value_anchor="end", value_inside=True)
            elif clash and lim is not None:
                bar.update(value_x=round(x_of(lim) + 5, 2), value_anchor="start", value_inside=False)
            else:
                bar.update(value_x=round(end + 4, 2), value_anchor="start", value_inside=False)
            state = r["passed"]
            bar["cls"] = "pass" if state is True else "fail" if state is False else "none"
        if lim is not None:
            op = "≥" if higher_is_better else "≤"
            bar.update(limit_x=x_of(lim), limit_text=f"budget {op} {(limit_fmt or fmt)(lim)}")
        bars.append(bar)
        y += ROW_H
    ticks = [{"x": x_of(t), "label": tick_fmt(t)} for t in (_log_ticks(lo, top) if log else _ticks(lo, top))]
    return {"key": key, "title": f"{title}, log scale" if log else title, "note": note, "bars": bars,
            "ticks": ticks, "axis_y": y + 4, "tick_text_y": y + 18,
            "width": CHART_LABEL_W + CHART_BAR_W + CHART_RIGHT_W, "height": y + 24,
            "right_x": CHART_LABEL_W + CHART_BAR_W + 10, "top_pad": top_pad, "axis_from": lo,
            "any_measured": any(b["measured"] for b in bars)}


def _fidelity_axis(rows: list[dict[str, Any]]) -> tuple[float, float]:
    """0..1, or zoomed to the top when every value and limit is high (0.962 and 0.98 look alike on 0..1)."""
    vals = [v for r in rows for v in (r["value"], r["limit"]) if v is not None]
    if not vals or min(vals) < 0.5 or max(vals) > 1:
        return 0.0, max([1.0] + vals)
    lo = math.floor((min(vals) - 0.01) * 20) / 20     # a multiple of 0.05 below the smallest
    return max(lo, 0.0), 1.0


def _size_rows(manifest: dict[str, Any], art: dict[str, Any], base: dict[str, Any]) -> list[dict[str, Any]]:
    """An artifact's rows in the size chart, in MB: its size against the budget; for a web bundle, its model
    (what the size check measures), then what a visitor downloads: every file, and that gzip-compressed."""
    r = result_for(art, "size")
    limit, state = num(get(r, "limit")), get(r, "passed") if r else None

    def row(mb: float | None, what: str = "", **extra: Any) -> dict[str, Any]:
        shown = None
        if mb is not None:
            shown = fmt_bytes(mb * 1e6) + what
            if limit is not None:
                shown += f" ({fmt_share(mb, limit)} of budget)"
        return {**base, "value": mb, "limit": limit, "passed": state, "text": shown, **extra}

    sizes = bundle_sizes(manifest, art)
    if sizes is None:
        return [row(artifact_size_mb(art))]
    mb = {k: v / 1e6 if v is not None else None for k, v in sizes.items()}
    rows = [row(mb["model"], " model")]
    title = f"{base['title']}: the files a browser downloads, the onnxruntime-web runtime included"
    if mb["download"] is not None:
        rows.append(row(mb["download"], label="↳ download, all files", title=title, sub=True, passed=None))
    if mb["gzip"] is not None:
        rows.append(row(mb["gzip"], label="↳ download, gzip", title=title + ", gzip-compressed", sub=True, passed=None))
    return rows


def _charts(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    size_rows, lat_rows, fid_rows = [], [], []
    for tname, t in targets_of(manifest).items():
        for a in artifacts_of(t):
            step = text(a.get("step"))
            base = {"target": tname, "label": f"{tname} / {step}", "title": text(a.get("path")) or step}
            size_rows += _size_rows(manifest, a, base)
            r = result_for(a, "latency")
            p95 = num(get(a, "checks", "measurements", "latency_ms", "p95"))
            lat_rows.append(dict(base, value=p95 if p95 is not None else num(get(r, "value")),
                                 limit=num(get(r, "limit")), passed=get(r, "passed") if r else None))
            r = result_for(a, "fidelity", "argmax agreement")
            agree = num(get(a, "checks", "measurements", "fidelity", "argmax_agreement"))
            fid_rows.append(dict(base, value=agree if agree is not None else num(get(r, "value")),
                                 limit=num(get(r, "limit")), passed=get(r, "passed") if r else None))
    fid_axis = _fidelity_axis(fid_rows)
    fid_title = "Fidelity (argmax agreement with the fp32 model)"
    if fid_axis[0] > 0:
        fid_title += f", axis from {fmt_plain(fid_axis[0])}"
    bundles = any(r.get("sub") for r in size_rows)
    size_note = ("A web bundle's first row is its model, which the size check measures; the rows under it are "
                 "what a browser downloads (grey: not checked): every file of the bundle, the onnxruntime-web "
                 "runtime included, and that gzip-compressed." if bundles else "")
    return [
        _chart("size", "Model and download size" if bundles else "Model size", size_rows, False,
               lambda v: fmt_bytes(v * 1e6), fmt_size_tick,
               limit_fmt=lambda v: f"{fmt_mb(v)} MB", note=size_note),
        _chart("latency", "Latency p95 (ms)", lat_rows, False, lambda v: f"{fmt_ms(v)} ms", lambda v: f"{fmt_plain(v)} ms"),
        _chart("fidelity", fid_title, fid_rows, True, fmt_plain, fmt_plain, axis=fid_axis),
    ]


NODE_W = 168
NODE_H = 46
COL_GAP = 64
ROW_GAP = 18


def _dag(manifest: dict[str, Any], build_log: dict[str, Any] | None) -> dict[str, Any] | None:
    """Nodes are the manifest's steps plus the model; columns by depth from the model."""
    steps = manifest.get("steps")
    if not isinstance(steps, dict) or not steps:
        return None
    entries = {str(k): (v if isinstance(v, dict) else {}) for k, v in steps.items()}
    parent: dict[str, str] = {}
    for nid, e in entries.items():
        f = e.get("from")
        parent[nid] = str(f) if f is not None and str(f) in entries else "model"
    depth: dict[str, int] = {"model": 0}

    def depth_of(nid: str, seen: tuple[str, ...] = ()) -> int:
        if nid in depth:
            return depth[nid]
        if nid in seen:                    # a cycle in a hand-edited manifest: break it
            return 1
        d = depth_of(parent[nid], seen + (nid,)) + 1
        depth[nid] = d
        return d

    for nid in entries:
        depth_of(nid)
    shipped: dict[str, list[str]] = {}
    for tname, t in targets_of(manifest).items():
        for a in artifacts_of(t):
            chain = a.get("chain")
            last = chain[-1] if isinstance(chain, list) and chain else a.get("step")
            if last is not None:
                shipped.setdefault(str(last), []).append(tname)
    timings = get(build_log, "nodes") if build_log else None
    cols: dict[int, list[str]] = {}
    pos: dict[str, tuple[float, float]] = {}
    order: dict[str, int] = {"model": 0}
    for nid in sorted(depth, key=lambda n: (depth[n], n)):
        cols.setdefault(depth[nid], []).append(nid)
    for d in sorted(cols):
        cols[d].sort(key=lambda n: (order.get(parent.get(n, ""), 0), n))
        for i, nid in enumerate(cols[d]):
            order[nid] = i
            pos[nid] = (12 + d * (NODE_W + COL_GAP), 12 + i * (NODE_H + ROW_GAP))
    nodes = []
    for nid, (x, y) in pos.items():
        if nid == "model":
            label, kind, extra, title = "model", "source", "", "the recipe's model"
        else:
            e = entries[nid]
            label = text(e.get("step")) or nid
            kind = text(e.get("use"))
            extra = ""
            if e.get("target"):
                kind += f" @{text(e.get('target'))}"
            tm = get(timings, nid) if isinstance(timings, dict) else None
            if isinstance(tm, dict):
                secs = num(tm.get("seconds"))
                status = text(tm.get("status"))
                extra = f"{status} {secs:.1f} s" if secs is not None and status != "cached" else status
            title = f"{nid}: {kind}" + (f"; shipped to {', '.join(shipped[nid])}" if nid in shipped else "")
        nodes.append({"id": nid, "label": _clip(label, 22), "kind": _clip(kind, 26), "extra": extra, "title": title,
                      "x": x, "y": y, "w": NODE_W, "h": NODE_H, "shipped": nid in shipped, "model": nid == "model"})
    edges = []
    for nid, p in parent.items():
        (x1, y1), (x2, y2) = pos[p], pos[nid]
        sx, sy, ex, ey = x1 + NODE_W, y1 + NODE_H / 2, x2 - 6, y2 + NODE_H / 2
        mid = (sx + ex) / 2
        edges.append({"d": f"M{sx:g},{sy:g} C{mid:g},{sy:g} {mid:g},{ey:g} {ex:g},{ey:g}", "src": p, "dst": nid})
    width = 24 + (max(cols) + 1) * (NODE_W + COL_GAP) - COL_GAP
    height = 24 + max(len(c) for c in cols.values()) * (NODE_H + ROW_GAP) - ROW_GAP
    return {"nodes": nodes, "edges": edges, "width": width, "height": height}


def _clip(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def _timings(manifest: dict[str, Any], build_log: dict[str, Any] | None) -> dict[str, Any] | None:
    if not isinstance(build_log, dict) or not isinstance(build_log.get("nodes"), dict):
        return None
    nodes: dict[str, Any] = build_log["nodes"]
    steps = manifest.get("steps") if isinstance(manifest.get("steps"), dict) else {}
    rows = []
    for nid, n in nodes.items():
        if not isinstance(n, dict):
            continue
        secs = num(n.get("seconds"))
        kind = text(get(steps, str(nid), "use")) or ("check" if str(nid).startswith("check:") else "")
        rows.append({"node": str(nid), "kind": kind, "status": text(n.get("status")) or "–",
                     "seconds": f"{secs:.2f}" if secs is not None else "–"})
    total = num(build_log.get("total_s"))
    return {"rows": rows, "total": f"{total:.2f}" if total is not None else None,
            "host": text(build_log.get("host")), "python": text(build_log.get("python")),
            "built": sum(1 for r in rows if r["status"] == "built"),
            "cached": sum(1 for r in rows if r["status"] == "cached")}


def view(manifest: dict[str, Any], build_log: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything the template shows, as strings and coordinates."""
    targets = [_target_view(manifest, n, t) for n, t in targets_of(manifest).items()]
    hosts = sorted({text(get(a, "checks", "host")) for t in targets_of(manifest).values() for a in artifacts_of(t)
                    if get(a, "checks", "host")})
    tools: dict[str, Any] = manifest["tools"] if isinstance(manifest.get("tools"), dict) else {}
    checked = [r["passed"] for t in targets for r in t["rows"] if r["passed"] is not None]
    return {
        "name": text(manifest.get("name")) or "(unnamed)",
        "recipe_file": text(get(manifest, "recipe", "file")),
        "recipe_sha": text(get(manifest, "recipe", "sha256"))[:12],
        "recipe_sha_full": text(get(manifest, "recipe", "sha256")),
        "version": text(manifest.get("edgebuild")) or "?",
        "manifest_format": text(manifest.get("manifest")),
        "tools": [(str(k), text(v)) for k, v in sorted(tools.items())],
        "hosts": hosts,
        "targets": targets,
        "n_artifacts": sum(len(t["rows"]) for t in targets),
        "n_passed": sum(1 for p in checked if p),
        "n_failed": sum(1 for p in checked if not p),
        "measured": bool(checked) or any(t["measured"] for t in targets),
        "charts": _charts(manifest),
        "dag": _dag(manifest, build_log),
        "timings": _timings(manifest, build_log),
    }


# --- rendering and writing --------------------------------------------------------------------

def _env() -> Any:
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("edgebuild", "templates"),
                              autoescape=True, undefined=jinja2.StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True)


def render(manifest: Manifest | dict[str, Any], build_log: dict[str, Any] | None = None) -> str:
    """The report as one HTML document (a string): of a manifest `manifest.load` read and checked, or of its
    JSON as a dict (the view reads a dict defensively: a hand-made one renders too)."""
    if not isinstance(manifest, dict):
        manifest = manifest.to_dict()
    return str(_env().get_template("report.html.j2").render(r=view(manifest, build_log)))


def load_build_log(manifest_path: Path) -> dict[str, Any] | None:
    """build-log.json beside the manifest, or None when it is absent or unreadable (it is optional)."""
    p = (manifest_path if manifest_path.is_dir() else manifest_path.parent) / "build-log.json"
    try:
        log = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return log if isinstance(log, dict) else None


def default_output(manifest_path: Path) -> Path:
    return (manifest_path if manifest_path.is_dir() else manifest_path.parent) / "report.html"


def write(manifest_path: Path | str, out_path: Path | str | None = None) -> Path:
    """Render the manifest at manifest_path (and its build log) to out_path; return the path written."""
    import os
    import uuid

    from edgebuild.errors import Problem, UserError
    from edgebuild.output.manifest import load

    manifest_path = Path(manifest_path)
    html = render(load(manifest_path), load_build_log(manifest_path))
    out = Path(out_path) if out_path is not None else default_output(manifest_path)
    if out.is_dir():
        out = out / "report.html"
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(html, encoding="utf-8")
        os.replace(tmp, out)
    except OSError as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise UserError(Problem(f"{out}: cannot write the report: {exc.strerror or exc}")) from None
    return out
