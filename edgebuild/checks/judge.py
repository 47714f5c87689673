"""`checks:` and `best:` selection: what to measure, whether a measured artifact keeps its promises,
and which candidate ships when a target asks for the best one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from edgebuild.errors import Problem
from edgebuild.steps.base import ONNX, WEB

if TYPE_CHECKING:   # the recipe stage imports this module: the engine's are imported where they are used
    from edgebuild.engine.cache import Cache
    from edgebuild.engine.execute import Outcome
    from edgebuild.engine.plan import Plan
    from edgebuild.frontend.recipe import Recipe
    from edgebuild.frontend.targets import Target

UNITS = {"latency": "ms", "size": "MB", "memory": "MB", "fidelity": "", "accuracy": ""}


def wanted(recipe: Recipe) -> bool:
    """Whether shipped ONNX artifacts get measurement nodes at all."""
    return bool(recipe.checks) or bool(recipe.best)


def check_recipe(r: Recipe) -> list[Problem]:
    """Plan-time checks of `checks:` and `best:` beyond the schema: datasets, labels, candidates."""
    from edgebuild.frontend.validate import did_you_mean

    problems = []
    for name in ("fidelity", "accuracy"):
        cfg = r.checks.get(name)
        if cfg is None:
            continue
        ds = cfg["data"]
        where = r.doc.at(("checks", name, "data"))
        if ds not in r.data:
            hint = did_you_mean(ds, list(r.data)) or (f"datasets here: {', '.join(r.data)}" if r.data else "declare it under `data:`")
            problems.append(Problem(f"checks.{name} uses dataset '{ds}', which is not declared under `data:`", where, hint))
        elif name == "accuracy" and "labels" not in _arrays(r.data[ds]):
            problems.append(Problem(f"checks.accuracy needs labels, but dataset '{ds}' has no 'labels' array", where,
                                    "save the dataset with a `labels` array (one label per sample), or use `fidelity` instead"))
    fid = r.checks.get("fidelity") or {}
    if "metric" in fid or "min" in fid or "max" in fid:
        from edgebuild.checks import metrics

        for message, key, fix in metrics.goal_problems(fid, r.dir):
            problems.append(Problem(f"checks.fidelity: {message}", r.doc.at(("checks", "fidelity", key)), fix))
    for t, by in r.best.items():
        for i, sid in enumerate(r.ship[t]):
            if sid in r.steps and r.steps[sid].kind.gives != ONNX:
                problems.append(Problem(f"best: candidate '{sid}' gives a {r.steps[sid].kind.gives}, which edgebuild cannot "
                                        "measure on this host", r.doc.at(r.ship_path(t, i)), "list only steps that give ONNX models"))
    return problems


def _arrays(path: Any) -> dict[str, Any]:
    from edgebuild.frontend import datasets

    try:
        return datasets.inspect(path)
    except Exception:
        return {}


def measure_params(r: Recipe, target: Target) -> dict[str, Any]:
    """Parameters of the measurement node of one artifact on one target (what enters its cache key)."""
    fid, acc, lat = r.checks.get("fidelity") or {}, r.checks.get("accuracy") or {}, r.checks.get("latency") or {}
    import os

    # never more threads than this host has cores: oversubscribed timings say nothing about the device
    return {"threads": min(target.threads, os.cpu_count() or 1), "warmup": lat.get("warmup", 10), "runs": lat.get("runs", 100),
            "fidelity_data": fid.get("data") or acc.get("data"), "fidelity_samples": fid.get("samples"),
            "fidelity_metric": fid.get("metric"), "accuracy_data": acc.get("data"),
            **({"where": "device"} if lat.get("where") == "device" else {})}


@dataclass
class Result:
    check: str
    value: float | None       # None: could not be measured (then it fails)
    limit: float
    unit: str
    passed: bool
    what: str = ""            # e.g. "p95 latency", "argmax agreement"
    op: str = "<="            # how value must compare with limit
    origin: str = ""          # where the limit is set, e.g. "checks.latency.p95_ms"

    def describe(self) -> str:
        """'p95 latency 63.1 ms > 50 ms' for a failure, with <= / >= when it passed."""
        bad = {"<=": ">", ">=": "<"}[self.op]
        unit = f" {self.unit}" if self.unit else ""
        if self.value is None:
            return f"{self.what} cannot be measured (limit {self.op} {self.limit:g}{unit})"
        return f"{self.what} {self.value:g}{unit} {self.op if self.passed else bad} {self.limit:g}{unit}"

    def as_dict(self) -> dict[str, Any]:
        return {"check": self.check, "what": self.what, "value": self.value, "limit": self.limit, "unit": self.unit,
                "op": self.op, "passed": self.passed}


def evaluate(r: Recipe, target: Target, size_bytes: int, facts: dict[str, Any], size_what: str = "size") -> list[Result]:
    """Compare one artifact's measurements with the recipe's checks and the target's budgets (`size_bytes`:
    what a device receives: the model, or for a web bundle every file a visitor downloads)."""
    budgets, c, out = target.data.get("budgets", {}), r.checks, []

    def add(check: str, what: str, value: float | None, limit: float | None, unit: str = "", op: str = "<=",
            origin: str = "") -> None:
        if limit is not None:
            ok = value is not None and (value <= limit if op == "<=" else value >= limit)
            out.append(Result(check, value, limit, unit, ok, what, op, origin))

    def budget(check: str, key: str, budget_key: str) -> tuple[float | None, str]:
        """A limit from `checks:`, else from the target's budgets, and where it was set."""
        if c[check].get(key) is not None:
            return c[check][key], f"checks.{check}.{key}"
        return budgets.get(budget_key), f"budgets.{budget_key} in the {target.name} profile"

    if "latency" in c and facts.get("latency_ms"):   # None for a web bundle: its latency is the browser's
        limit, origin = budget("latency", "p95_ms", "latency_p95_ms")
        add("latency", "p95 latency", facts["latency_ms"]["p95"], limit, "ms", origin=origin)
    if "size" in c:
        limit, origin = budget("size", "max_mb", "model_size_mb")
        add("size", size_what, round(size_bytes / 1e6, 4), limit, "MB", origin=origin)
    if "memory" in c:
        limit, origin = budget("memory", "max_mb", "memory_mb")
        add("memory", "peak memory", facts["memory_mb"], limit, "MB", origin=origin)
    fid, cf = facts.get("fidelity", {}), c.get("fidelity") or {}
    if "argmax_agreement" in fid:
        add("fidelity", "argmax agreement", fid["argmax_agreement"], cf.get("min_agreement"), op=">=")
    elif fid:   # the first float output is not a [batch, classes] score vector: argmax means nothing there
        add("fidelity", "argmax agreement (the first float output is not one score per class; use "
            "checks.fidelity.metric, e.g. decision@0.5 on OUTPUT[...])", None, cf.get("min_agreement"), op=">=")
    if "cosine" in fid:
        add("fidelity", "cosine similarity", fid["cosine"], cf.get("min_cosine"), op=">=")
        add("fidelity", "max abs error", fid["max_abs_error"], cf.get("max_abs_error"))
    elif fid:   # no float output of the same shape in both models: a numeric limit cannot pass
        none = " (no float output has the same shape in both models)"
        add("fidelity", "cosine similarity" + none, None, cf.get("min_cosine"), op=">=")
        add("fidelity", "max abs error" + none, None, cf.get("max_abs_error"))
    if "metric" in fid and "metric" in cf:
        key, limit = ("min", cf["min"]) if "min" in cf else ("max", cf.get("max"))
        add("fidelity", fid["metric"]["spec"], fid["metric"]["value"], limit, op=">=" if key == "min" else "<=")
    if "accuracy" in facts:
        add("accuracy", "accuracy drop", facts["accuracy"]["drop"], (c.get("accuracy") or {}).get("max_drop"))
    return out


@dataclass
class Measured:
    """One artifact's measurements on one target and what the checks made of them."""

    host: str                          # the CPU it was measured on
    measured_on: str | None            # the Dask worker's host name, on a cluster
    measurements: dict[str, Any]       # the measure step's facts, with the sizes in MB
    results: list[Result]
    size: int                          # bytes a device receives: what the size check and `best: size` compare

    @property
    def passed(self) -> bool:
        return all(x.passed for x in self.results)

    @property
    def failed(self) -> list[Result]:
        return [x for x in self.results if not x.passed]

    def as_dict(self) -> dict[str, Any]:
        """The artifact's `checks` in the manifest."""
        return {"host": self.host, **({"measured_on": self.measured_on} if self.measured_on else {}),
                "measurements": self.measurements, "results": [x.as_dict() for x in self.results],
                "passed": self.passed}


@dataclass
class Candidate:
    """A `best:` candidate as the selection compares it (`failures`: why it did not pass, as sentences)."""

    step: str
    passed: bool
    failures: list[str] = field(default_factory=list)
    latency: float | None = None       # p95 ms
    size: int | None = None            # bytes
    relative: float | None = None      # its time over the FP32 reference's, timed in interleaved pairs


@dataclass
class Choice:
    """What the selection says about one candidate: the value it was compared by and why it won or lost."""

    step: str
    passed: bool
    value: float | None
    unit: str
    why: str

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.step, "passed": self.passed, "value": self.value, "unit": self.unit, "why": self.why}


@dataclass
class Selection:
    """A `best:` target's choice: by what, which step (None: no candidate passed), and every candidate's record."""

    by: str
    chosen: str | None
    candidates: list[Choice]
    locked: bool = False               # the lock's choice, not this build's timings

    def as_dict(self, checks: dict[str, Measured] | None = None) -> dict[str, Any]:
        """The target's `selection` in the manifest; with `checks`, each candidate's measurements beside it."""
        rows = [c.as_dict() for c in self.candidates]
        if checks is not None:
            rows = [dict(row, checks=checks[c.step].as_dict() if c.step in checks else None)
                    for row, c in zip(rows, self.candidates)]
        return {"by": self.by, "chosen": self.chosen, "candidates": rows, **({"locked": True} if self.locked else {})}


@dataclass
class Verdict:
    """What the checks said about one target: per artifact its measurements and results, and the selection."""

    artifacts: dict[str, Measured]     # step id -> its measurements and check results
    failures: list[Problem]
    selection: Selection | None = None
    ship: list[str] | None = None               # step ids to publish (None: all shipped ones)
    lost: dict[str, str] = field(default_factory=dict)   # `best:` candidate -> why it was not measured


def judge(plan: Plan, cache: Cache, outcomes: dict[str, Outcome], pinned: dict[str, str] | None = None) -> dict[str, Verdict]:
    """Evaluate the measurement nodes of every selected target; pick the best candidate where asked, or take
    the choice `pinned` (target -> step: the lock's) and fail when it no longer passes."""
    from edgebuild.engine.plan import check_id

    r, out, pinned = plan.recipe, {}, pinned or {}
    if not wanted(r):
        return {}
    for t, shipped in plan.ship.items():
        v = Verdict({}, [])
        for sid, nid in shipped:
            mid = check_id(sid, t)
            o = outcomes.get(mid)
            if mid not in plan.nodes or o is None or not o.status.done:
                why = _not_measured(outcomes.get(nid), o, nid) if mid in plan.nodes else None
                if why:
                    v.lost[sid] = why
                continue
            v.artifacts[sid] = _measured(plan, cache, r.target(t), nid, o)
        if t in r.best:
            _select(r, t, v, pinned.get(t))
        else:
            for sid, a in v.artifacts.items():
                for x in a.failed:
                    v.failures.append(Problem(f"{t}: {sid}: {x.describe()} (measured on host: {a.host})",
                                              r.doc.at(("checks", x.check), key=True), _hint(x)))
        out[t] = v
    return out


def _measured(plan: Plan, cache: Cache, target: Target, nid: str, o: Outcome) -> Measured:
    """One artifact's measurement node's facts, with its sizes, against the checks and the target's budgets."""
    facts = dict(o.info)
    host = facts.pop("host", "unknown")
    measured_on = facts.pop("built_on", None)   # the Dask worker's host name, on a cluster
    files = cache.meta(plan.nodes[nid].key)["files"]
    web = plan.nodes[nid].step.kind.gives == WEB   # a visitor downloads the runtime with the model
    size = sum(f["size"] for f in files.values()) if web else files["model.onnx"]["size"]
    results = evaluate(plan.recipe, target, size, facts, "download size" if web else "size")
    model_mb = round(files["model.onnx"]["size"] / 1e6, 4)
    measurements = dict(facts, size_mb=model_mb, **({"download_mb": round(size / 1e6, 4)} if web else {}))
    return Measured(host, measured_on, measurements, results, size)


def _not_measured(step: Outcome | None, measure: Outcome | None, node: str) -> str | None:
    """Why a candidate has no measurements: its step failed or was not run, or its measurement failed."""
    from edgebuild.engine.execute import Status

    for o, what in ((step, f"step '{node}'"), (measure, "its measurement")):
        if o is not None and o.status == Status.FAILED:
            return f"{what} failed: {o.message}"
        if o is not None and o.status == Status.SKIPPED:
            return f"{what} was not run: {o.message.removeprefix('not run: ')}"
    return None


def _select(r: Recipe, t: str, v: Verdict, pin: str | None = None) -> None:
    order = r.ship[t]
    cands = [Candidate(sid, a.passed, [x.describe() for x in a.failed], a.measurements["latency_ms"]["p95"], a.size,
                       (a.measurements["latency_ms"].get("vs_reference") or {}).get("ratio"))
             for sid, a in v.artifacts.items()]
    cands += [Candidate(sid, False, [why]) for sid, why in v.lost.items()]
    cands.sort(key=lambda c: order.index(c.step) if c.step in order else len(order))
    chosen, records = select(r.best[t], cands)
    if pin is not None:
        chosen, records = _pinned(r, t, v, pin, chosen, cands, records)
    v.selection = Selection(r.best[t], chosen, records, locked=pin is not None)
    v.ship = [chosen] if chosen else []
    if pin is None and chosen is None and cands:
        lines = "; ".join(f"{c.step}: {', '.join(c.failures)}" for c in cands)
        v.failures.append(Problem(f"{t}: no candidate passes every check ({lines})", r.doc.at(("ship", t, "best"), key=True),
                                  "loosen a limit in `checks:`, or add a candidate (another quantization, or the FP32 model)"))


def _pinned(r: Recipe, t: str, v: Verdict, pin: str, fastest: str | None, cands: list[Candidate],
            records: list[Choice]) -> tuple[str | None, list[Choice]]:
    """The lock's choice instead of today's timings: never a silent switch, so a locked choice that fails a
    check fails the target (the others' failures and timings are recorded, not acted on)."""
    cand = next((c for c in cands if c.step == pin), None)
    if cand is None or not cand.passed:
        why = ", ".join(cand.failures) if cand else "it was not measured"
        v.failures.append(Problem(f"{t}: the locked choice {pin} fails now: {why}", r.doc.at(("ship", t, "best"), key=True),
                                  "fix what broke it, or choose again with `edgebuild run RECIPE --relock` "
                                  "and commit the new lock"))
        return None, [replace(x, why=f"locked choice, failed: {why}") if x.step == pin else x for x in records]
    out = []
    for x in records:
        if x.step == pin:
            out.append(replace(x, why="chosen (locked)"))
        elif x.passed:
            today = f"; this build's timings would choose {fastest}" if fastest != pin else ""
            out.append(replace(x, why=f"not chosen: the lock holds {pin}{today}"))
        else:
            out.append(x)
    return pin, out


def _hint(x: Result) -> str:
    return {"latency": "measured on this host with the target's thread count; ship a faster variant (static INT8 for conv nets) "
                       f"or raise the limit ({x.origin})",
            "size": f"ship a smaller variant (INT8, INT4) or raise the limit ({x.origin})",
            "memory": f"ship a smaller variant or raise the limit ({x.origin})",
            "fidelity": "this variant drifts from the FP32 reference: try quantize-static with more calibration samples, "
                        "per_channel: true, or another method",
            "accuracy": "this variant loses accuracy: try another quantization, or ship the FP32 model"}[x.check]


# Latencies within this fraction of the fastest candidate's count as a tie: run-to-run spread of a p95
# on a busy host is several percent, and a choice that flips between two builds is worse than none.
TIE = 0.05


def select(by: str, candidates: list[Candidate]) -> tuple[str | None, list[Choice]]:
    """Pick the best passing candidate by latency or size; say for each why it lost.

    Candidates come in the order of the recipe's `best:` list. By latency, the relative times (over the FP32
    reference's, timed in interleaved pairs) are compared when every passing candidate has one (a busy host
    moved both sides of each pair alike), else the p95s; candidates within TIE of the fastest are equally fast
    and the one listed first wins (the recipe's order is the user's preference); sizes are exact.
    """
    passing = [c for c in candidates if c.passed]
    paired = by == "latency" and bool(passing) and all(c.relative for c in passing)
    if paired:
        return _select_by(candidates, passing, lambda c: c.relative, lambda x: f"{x:.3g}x the reference's time",
                          unit="x reference")
    if by == "latency":
        return _select_by(candidates, passing, lambda c: c.latency, lambda x: f"{x:.3g} ms", unit="ms")
    return _select_by(candidates, passing, lambda c: c.size, lambda x: f"{x} bytes", tie=0.0, unit="bytes")


def _select_by(candidates: list[Candidate], passing: list[Candidate], key: Callable[[Candidate], Any],
               show: Callable[[Any], str], tie: float = TIE, unit: str = "ms") -> tuple[str | None, list[Choice]]:
    fastest = min(passing, key=key) if passing else None
    best = next(c for c in passing if key(c) <= key(fastest) * (1 + tie)) if fastest is not None else None
    out = []
    for c in candidates:
        value = key(c)
        if best is not None and c.step == best.step:
            why = "chosen"
        elif not c.passed:
            why = "failed: " + "; ".join(c.failures)
        else:
            assert best is not None and fastest is not None
            versus = f"({show(value)} vs {show(key(best))})"
            if not tie:
                why = f"larger than {best.step} {versus}"
            elif value <= key(fastest) * (1 + tie):
                why = f"as fast as {best.step} within {tie:.0%} {versus}, which comes first in best:"
            else:
                why = f"slower than {best.step} {versus}"
        out.append(Choice(c.step, c.passed, value, unit, why))
    return (best.step if best else None), out
