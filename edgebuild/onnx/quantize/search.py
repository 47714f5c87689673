"""The accuracy-aware search: quantize candidates (calibration method, per-channel, op set, nodes kept in
float) until one meets the recipe's goal on a dataset, then check it is faster than FP32.

`AccuracySearch` keeps the candidate that meets the goal with the fewest nodes kept in float, within a
fixed budget of quantizations. A candidate meets the goal when it does both with Q/DQ simulated in float
and on the build host's fused int8 kernels at the target's thread count, which is how `checks:` will run it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edgebuild.onnx import graph as onnx_graph
from edgebuild.onnx import runtime as onnx_runtime
from edgebuild.onnx.quantize.layers import quantized_nodes
from edgebuild.onnx.quantize.running import cast_feeds, latency_ms, outputs
from edgebuild.onnx.quantize.speed import SETTLE_S, decided, required_gain
from edgebuild.onnx.quantize.target_types import threads_for
from edgebuild.steps.base import RunContext, StepError

MAX_QUANTIZATIONS = 16


ACCURACY_SAMPLES = 200


@dataclass
class Goal:
    data: str
    metric: str
    limit: dict[str, float]         # {"min": x} or {"max": x}
    samples: int
    faster: bool

    @classmethod
    def from_params(cls, acc: dict[str, Any]) -> "Goal":
        limit = {k: float(acc[k]) for k in ("min", "max") if acc.get(k) is not None}
        return cls(acc["data"], acc["metric"], limit, int(acc.get("samples") or ACCURACY_SAMPLES),
                   bool(acc.get("faster", True)))

    def text(self) -> str:
        key, value = next(iter(self.limit.items()))
        return f"{self.metric} {'>=' if key == 'min' else '<='} {value:.10g}"

    def show(self, x: float) -> str:
        """A metric value with enough digits to tell it from the goal (0.99999 is not "1" next to 0.9999999)."""
        limit = next(iter(self.limit.values()))
        for digits in (4, 6, 8, 10):
            if f"{x:.{digits}g}" != f"{limit:.{digits}g}":
                return f"{x:.{digits}g}"
        return f"{x:.10g}"


@dataclass
class Candidate:
    method: str | None
    per_channel: bool
    excluded: tuple[str, ...]
    ops: str | None = None   # quantize-static's op set ("weighted", "all"); None for dynamic
    model: Any = None
    quantized: int = 0
    metric: float = float("nan")      # the worse of the two below: what the search ranks and the goal gates
    simulated: float = float("nan")   # Q/DQ simulated in float (no graph optimizations): host-independent
    kernels: float = float("nan")     # ONNX Runtime's fused int8 kernels on the build host, the target's threads
    ms: float = float("nan")
    meets: bool = False
    note: str = ""

    def facts(self) -> dict[str, Any]:

        out: dict[str, Any] = {}
        if self.method is not None:
            out["method"] = self.method
        if self.ops is not None:
            out["op_types"] = self.ops
        out.update(per_channel=self.per_channel, excluded=len(self.excluded), quantized_nodes=self.quantized,
                   metric=onnx_runtime.sig3(self.metric) if self.metric == self.metric else None,
                   simulated=onnx_runtime.sig3(self.simulated) if self.simulated == self.simulated else None,
                   kernels=onnx_runtime.sig3(self.kernels) if self.kernels == self.kernels else None,
                   ms=round(self.ms, 3) if self.ms == self.ms else None, meets=self.meets)
        if self.note:
            out["note"] = self.note
        return out


Config = tuple["str | None", bool, "str | None"]   # (method, per_channel, op set): one setting the search tries


def _speedup(pair: onnx_runtime.Paired) -> float:
    return 1.0 / pair.ratio if pair.ratio > 0 else 0.0


def _ops_text(ops: str | None) -> str:
    return f" op_types={ops}" if ops else ""


@dataclass
class AccuracySearch:
    """Quantize, measure the goal's metric against the FP32 model, and search until it is met.

    `build(method, per_channel, ops, excluded)` returns the quantized ModelProto (None when it quantized
    nothing). `configs` lists (method, per_channel, ops) settings, the step's own first. `ranking(model)` gives
    the exclusion units in the order to keep them in float (each unit a list of node names), from a
    quantized candidate. Candidates that meet the goal are compared by how many nodes they keep in
    float (fewer is faster), then by metric; the search stops at MAX_QUANTIZATIONS.
    """

    ctx: RunContext
    goal: Goal
    fp32_model: Path
    build: Callable[[str | None, bool, str | None, tuple[str, ...]], Any]
    configs: list[Config]
    base_excluded: tuple[str, ...]
    ranking: Callable[[Any], list[list[str]]]
    why_nothing: Callable[[], str] = lambda: "ONNX Runtime's quantizer left every node in float"
    tried: list[Candidate] = field(default_factory=list)

    def run(self) -> tuple[Candidate, dict[str, Any]]:
        self._load_data()
        self.threads = threads_for(self.ctx.target)
        self.fp32_sess = onnx_runtime.session(self.fp32_model, threads=self.threads)
        # the reference: FP32 without graph optimizations, the same numbers on every host. Candidates are
        # scored against it simulated (host-independent) and on this host's int8 kernels (`_try`), so the
        # bytes picked depend on the build host only where its kernels and the simulation disagree about the
        # goal; the facts name that host
        self.ref = outputs(onnx_runtime.session(self.fp32_model, optimize=False), self.feeds)
        first, chosen = self._meet_goal()
        # a careful comparison when it decides the outcome, a quick one when it is only reported
        faster = self.goal.faster
        pair = onnx_runtime.paired_latency(self.fp32_sess, onnx_runtime.session(chosen.model, threads=self.threads),
                                           self.timing_feed, budget_s=1.5 if faster else 0.2,
                                           settled=decided if faster else None, max_s=SETTLE_S)
        facts = self._facts(first, chosen, pair)
        if faster:
            self._check_faster(chosen, pair)
        return chosen, facts

    def _meet_goal(self) -> tuple[Candidate, Candidate]:
        """The step's own setting first; when it misses the goal, the search. (first, chosen), or the error
        saying what the best of the tries reached."""
        ctx, goal = self.ctx, self.goal
        first = self._try(*self.configs[0], self.base_excluded)
        if first is None or first.model is None:
            raise StepError(f"no node was quantized: {self.why_nothing()}",
                            hint="check the model has Conv/MatMul/Gemm nodes with constant weights, and `preprocess: true`")
        chosen = first if first.meets else None
        if chosen is None:
            ctx.log.info("accuracy goal %s not met (%s = %.4g): searching", goal.text(), goal.metric, first.metric)
            chosen = self._search()
        if chosen is None:
            best = max((c for c in self.tried if c.metric == c.metric), key=lambda c: self._score(c.metric), default=first)
            raise StepError(
                f"the accuracy goal {goal.text()} on dataset '{goal.data}' is not met: the best of {len(self.tried)} "
                f"quantization(s) reached {goal.show(best.metric)} ({best.method or 'dynamic'}, per_channel={best.per_channel}, "
                f"{'op_types=' + best.ops + ', ' if best.ops else ''}"
                f"{len(best.excluded)} node(s) in float); the first reached {goal.show(first.metric)}",
                hint="lower the goal, calibrate on more representative samples, or let `best:` pick another variant",
                recipe_path=("steps", ctx.step_id, "with", "accuracy"))
        return first, chosen

    def _facts(self, first: Candidate, chosen: Candidate, pair: onnx_runtime.Paired) -> dict[str, Any]:
        from edgebuild.engine import hostinfo

        goal = self.goal
        fp32_ms, q_ms, speedup = pair.a_ms, pair.b_ms, _speedup(pair)
        facts = {
            "data": goal.data, "metric": goal.metric, "goal": {k: v for k, v in goal.limit.items()},
            "samples": self.n, "before": onnx_runtime.sig3(first.metric), "after": onnx_runtime.sig3(chosen.metric),
            "fp32_nodes": list(chosen.excluded), "threads": self.threads,
            "simulated": onnx_runtime.sig3(chosen.simulated), "kernels": onnx_runtime.sig3(chosen.kernels),
            "kernels_host": {k: v for k, v in hostinfo.cpu_class().items() if k in ("cpu", "isa")},
            "latency_ms": {"fp32": round(fp32_ms, 3), "quantized": round(q_ms, 3), "speedup": round(speedup, 2),
                           **({"required_speedup": round(1 + required_gain(pair.noise), 2)} if goal.faster else {}),
                           "pairs": pair.pairs, "noise": round(pair.noise, 4), "spread": round(pair.spread, 4)},
            "search": [c.facts() for c in self.tried],
        }
        self.ctx.log.info("chosen: %s=%.4g with %d node(s) in float; latency FP32 %.3f ms, quantized %.3f ms, speed-up "
                          "%.2fx over %d interleaved pairs (±%.1f%%; %d thread(s))", goal.metric, chosen.metric,
                          len(chosen.excluded), fp32_ms, q_ms, speedup, pair.pairs, 100 * pair.noise, self.threads)
        return facts

    def _check_faster(self, chosen: Candidate, pair: onnx_runtime.Paired) -> None:
        """`accuracy: {faster: true}`: the quantized model must be measurably faster than FP32."""
        gain, speedup, goal = required_gain(pair.noise), _speedup(pair), self.goal
        if speedup >= 1 + gain:
            return
        raise StepError(
            f"the quantized model meets {goal.text()} ({goal.show(chosen.metric)}) but is not faster than FP32 with "
            f"{self.threads} thread(s): {pair.b_ms:.3f} ms vs {pair.a_ms:.3f} ms, a speed-up of {speedup:.2f}x where at "
            f"least {1 + gain:.2f}x counts as faster ({pair.pairs} interleaved pairs, ±{pair.noise:.1%}; "
            f"{len(chosen.excluded)} node(s) kept in float)",
            hint="int8 pays off for conv/matmul-heavy models on CPUs with fast int8 kernels; try the other "
                 "quantization step, or set `accuracy: {faster: false}` to keep it anyway",
            recipe_path=("steps", self.ctx.step_id, "with", "accuracy"))

    # -- internals

    def _load_data(self) -> None:
        import numpy as np

        from edgebuild.frontend import datasets

        ctx, goal = self.ctx, self.goal
        if goal.data not in ctx.data:
            raise StepError(f"dataset '{goal.data}' is not declared under `data:`",
                            recipe_path=("steps", ctx.step_id, "with", "accuracy", "data"))
        path = Path(ctx.data[goal.data])
        model = onnx_graph.load(self.fp32_model)
        specs = onnx_graph.graph_inputs(model)
        names = list(specs)
        try:
            arrays = datasets.inspect(path)
        except (OSError, ValueError) as exc:
            raise StepError(f"cannot read dataset '{goal.data}': {exc}", recipe_path=("data", goal.data)) from None
        missing = [i for i in names if i not in arrays]
        if missing:
            raise StepError(f"dataset '{goal.data}' has no array for model input(s) {', '.join(missing)} "
                            f"(it has: {', '.join(arrays) or 'no arrays'})", recipe_path=("data", goal.data))
        self.n = min(goal.samples, datasets.count(path, names))
        if self.n == 0:
            raise StepError(f"dataset '{goal.data}' holds no samples", recipe_path=("data", goal.data))
        self.feeds = list(cast_feeds(datasets.feeds(path, {k: specs[k] for k in names}, limit=self.n), specs))
        self.timing_feed = self.feeds[0]
        with np.load(path, allow_pickle=False) as npz:
            self.data = {k: npz[k][: self.n] if npz[k].ndim else npz[k] for k in npz.files}

    def _score(self, value: float) -> float:
        """Higher is better whatever the metric's direction (NaN worst)."""
        if value != value:
            return -math.inf
        return value if "min" in self.goal.limit else -value

    def _try(self, method: str | None, per_channel: bool, ops: str | None, excluded: tuple[str, ...]) -> Candidate | None:
        from edgebuild.checks import metrics

        if len(self.tried) >= MAX_QUANTIZATIONS:
            return None
        excluded = tuple(sorted(set(excluded)))
        for c in self.tried:
            if (c.method, c.per_channel, c.ops, c.excluded) == (method, per_channel, ops, excluded):
                return c
        cand = Candidate(method, per_channel, excluded, ops)
        self.tried.append(cand)
        try:
            model = self.build(method, per_channel, ops, excluded)
        except StepError as exc:
            if len(self.tried) == 1:   # the step's own settings: their failure is the step's
                raise
            # another method the search tries (e.g. percentile calibration on a model whose attention mask
            # puts -inf into a tensor) is a candidate that missed, not the end of the search
            cand.note = f"failed: {exc.message}"
            self.ctx.log.warning("candidate %s per_channel=%s%s float=%d failed: %s", method or "dynamic", per_channel,
                                 _ops_text(ops), len(excluded), exc.message)
            return cand
        if model is None:
            cand.note = "no node quantized"
            self.ctx.log.info("candidate %s per_channel=%s%s float=%d: no node quantized", method, per_channel, _ops_text(ops),
                              len(excluded))
            return cand
        cand.model = model
        cand.quantized = len(quantized_nodes(model))
        # scored twice: with Q/DQ simulated in float (the same on every host), and as the runtime runs it here,
        # fused int8 kernels and the target's threads (what `checks:` measures; without VNNI, or on Arm, the
        # kernels round and saturate where the simulation does not); a candidate meets the goal when both do
        fused = onnx_runtime.session(model, threads=self.threads)
        cand.simulated = self._metric(onnx_runtime.session(model, optimize=False))
        cand.kernels = self._metric(fused)
        cand.metric = min(cand.simulated, cand.kernels, key=self._score)
        cand.meets = metrics.meets(cand.simulated, self.goal.limit) and metrics.meets(cand.kernels, self.goal.limit)
        cand.ms = latency_ms(fused, self.timing_feed, budget_s=0.1)
        self.ctx.log.info("candidate %s per_channel=%s%s float=%d: %s=%.4g simulated, %.4g on this host's kernels (%s), "
                          "%.3f ms", method or "dynamic", per_channel, _ops_text(ops), len(excluded), self.goal.metric,
                          cand.simulated, cand.kernels, "meets" if cand.meets else "misses", cand.ms)
        return cand

    def _metric(self, sess: Any) -> float:
        from edgebuild.checks import metrics

        try:
            got = outputs(sess, self.feeds)
            return metrics.evaluate(self.goal.metric, self.ref, got, self.data, self.ctx.recipe_dir)
        except metrics.MetricError as exc:
            raise StepError(f"metric '{self.goal.metric}': {exc}",
                            recipe_path=("steps", self.ctx.step_id, "with", "accuracy", "metric")) from None

    def _best(self, cands: list[Candidate]) -> Candidate | None:
        ok = [c for c in cands if c.meets and c.model is not None]
        if not ok:
            return None
        return min(ok, key=lambda c: (len(c.excluded), -self._score(c.metric), self.tried.index(c)))

    def _search(self) -> Candidate | None:
        # 1. other calibration methods / per-channel settings, with the step's own float nodes
        for method, pc, ops in self.configs[1:]:
            if self._try(method, pc, ops, self.base_excluded) is None:
                break
        found = self._best(self.tried)
        if found is not None:
            return found
        # 2. keep the most sensitive nodes in float, on the best configuration so far
        base = max((c for c in self.tried if c.model is not None), key=lambda c: self._score(c.metric))
        units = [u for u in self.ranking(base.model) if not set(u) <= set(self.base_excluded)]
        if not units:
            return None
        ks, k = [], 1
        while k < len(units):
            ks.append(k)
            k *= 2
        ks.append(len(units))
        lo, hi = 0, None
        results: dict[int, Candidate] = {}
        for k in ks:
            excl = tuple(self.base_excluded) + tuple(n for u in units[:k] for n in u)
            c = self._try(base.method, base.per_channel, base.ops, excl)
            if c is None:
                break
            results[k] = c
            if c.meets and c.model is not None:
                hi = k
                break
            if c.model is None:   # everything in float: nothing more to keep
                break
            lo = k
        if hi is None:
            return None
        while hi - lo > 1:   # fewer nodes in float, by bisection, while the budget lasts
            mid = (lo + hi) // 2
            excl = tuple(self.base_excluded) + tuple(n for u in units[:mid] for n in u)
            c = self._try(base.method, base.per_channel, base.ops, excl)
            if c is None:
                break
            results[mid] = c
            if c.meets and c.model is not None:
                hi = mid
            else:
                lo = mid
        return results[hi]
