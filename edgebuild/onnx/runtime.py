"""ONNX Runtime as edgebuild uses it inside steps: the one session factory, the one latency sampler and the
paired timing that speed decisions rest on (both under a host-wide timing lock), and the tool logging guards."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from edgebuild.steps.base import StepError

if TYPE_CHECKING:  # pragma: no cover
    import onnx


def sig3(x: float) -> float:
    """`x` rounded to 3 significant digits, so facts print and compare the same on every run."""
    x = float(x)
    if x != x or x in (float("inf"), float("-inf")):
        return x
    return float(f"{x:.3g}")


def session(model: "str | Path | bytes | onnx.ModelProto", optimize: bool = True, threads: int = 1) -> Any:
    """The one way edgebuild opens a model: a CPU InferenceSession with `threads` intra-op threads (one by
    default: the same numbers on every run), ONNX Runtime's logging quiet, graph optimizations on or off."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if not isinstance(model, (str, Path, bytes)):
        model = model.SerializeToString()
    if isinstance(model, Path):
        model = str(model)
    return ort.InferenceSession(model, sess_options=so, providers=["CPUExecutionProvider"])


_timing_depth = 0


@contextlib.contextmanager
def timing_turn() -> Iterator[None]:
    """Hold this host's timing lock: one timing loop at a time across every edgebuild process on the host.

    The quantize steps of one build run side by side (`--jobs`), and a second build may run beside this
    one; two timing loops at once each see the other's load, and on a small host a speed decision would
    rest on an oversubscribed CPU. The lock is a file in the temp folder, held with flock (released by the
    kernel if a process dies); work that is not timing (quantizing, evaluating metrics) still runs in
    parallel. Re-entrant within a process."""
    import fcntl
    import tempfile

    global _timing_depth
    if _timing_depth:
        _timing_depth += 1
        try:
            yield
        finally:
            _timing_depth -= 1
        return
    path = Path(tempfile.gettempdir()) / "edgebuild-timing.lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:   # an unwritable temp folder: time without the lock rather than not at all
        fd = -1
    try:
        if fd >= 0:
            fcntl.flock(fd, fcntl.LOCK_EX)
        _timing_depth = 1
        yield
    finally:
        _timing_depth = 0
        if fd >= 0:
            os.close(fd)   # closing releases the lock


def timings(sess: Any, feed: dict[str, Any], warmup: int = 2, min_runs: int = 5, budget_s: float = 0.25,
            max_runs: int = 2000) -> list[float]:
    """The one latency sampler: `warmup` untimed runs, then the wall time (ms) of single inferences until
    at least `min_runs` are taken and `budget_s` seconds have passed (at most `max_runs`); in this host's
    timing turn (`timing_turn`)."""
    with timing_turn():
        for _ in range(warmup):
            sess.run(None, feed)
        times: list[float] = []
        start = time.perf_counter()
        while len(times) < min_runs or (time.perf_counter() - start < budget_s and len(times) < max_runs):
            t0 = time.perf_counter()
            sess.run(None, feed)
            times.append((time.perf_counter() - t0) * 1000.0)
    return times


def runtime_errors() -> tuple[type[BaseException], ...]:
    """What ONNX Runtime raises on a model it cannot load or run: its own exception classes (which derive
    from Exception alone), plus the RuntimeError/ValueError its Python layer raises. Catch these, not
    Exception, so a bug in edgebuild's own code is not mistaken for a problem with the model."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    names = ("Fail", "InvalidArgument", "NoSuchFile", "NoModel", "EngineError", "RuntimeException", "InvalidProtobuf",
             "ModelLoaded", "NotImplemented", "InvalidGraph", "EPFail")
    found = tuple(c for c in (getattr(state, n, None) for n in names) if isinstance(c, type) and issubclass(c, BaseException))
    return found + (RuntimeError, ValueError)


LOW_QUANTILE = 25   # percentile of each model's timings that speed decisions compare


@dataclass
class Paired:
    """Two models timed interleaved, pair by pair: each one's time, their ratio, and how noisy it was."""

    a_ms: float     # the lower quartile of a's runs, what the ratio is taken from (`_low_ratio`)
    b_ms: float
    ratio: float    # b's time over a's (below 1: b is faster), from each one's lower quartile (`_low_ratio`)
    noise: float    # relative half-width of the ratio's 95 % interval, resampling the pairs (bootstrap)
    spread: float   # interquartile range of the per-pair ratios, relative to their median
    pairs: int

    def facts(self) -> dict[str, Any]:
        return {"ratio": round(self.ratio, 4), "noise": round(self.noise, 4), "spread": round(self.spread, 4),
                "pairs": self.pairs}


def paired_latency(a: Any, b: Any, feed: dict[str, Any], budget_s: float = 1.0, min_pairs: int = 20,
                   max_pairs: int = 5000, settled: Callable[[Paired], bool] | None = None,
                   max_s: float = 0.0) -> Paired:
    """Time sessions `a` and `b` on `feed` in alternating order (a b, b a, ...), one pair after another.

    A busy host (another build beside this one, a noisy neighbour on a VM) slows both runs of a pair
    alike, so the ratio within a pair is steadier than two latencies timed seconds apart; the ratio of
    the two lower quartiles is what speed decisions use. With `settled`, timing goes on past `budget_s`,
    a budget at a time, until `settled(result)` says the decision is clear or `max_s` have passed: a
    loaded host gets more pairs rather than a decision taken on noise."""
    feeds = (_fit_feed(a, feed), _fit_feed(b, feed))
    ta: list[float] = []
    tb: list[float] = []
    with timing_turn():
        for sess, f in zip((a, b), feeds):   # warm-up: first runs allocate and pick kernels
            sess.run(None, f)
            sess.run(None, f)
        start = time.perf_counter()
        while True:
            _time_pairs(a, b, feeds, ta, tb, time.perf_counter() + budget_s, min_pairs, max_pairs)
            out = _paired(ta, tb)
            if (settled is None or len(ta) >= max_pairs or time.perf_counter() - start >= max_s
                    or settled(out)):
                return out


def _time_pairs(a: Any, b: Any, feeds: tuple[dict[str, Any], dict[str, Any]], ta: list[float], tb: list[float],
                deadline: float, min_pairs: int, max_pairs: int) -> None:
    while len(ta) < min_pairs or (time.perf_counter() < deadline and len(ta) < max_pairs):
        order = (0, 1) if len(ta) % 2 == 0 else (1, 0)
        got = [0.0, 0.0]
        for i in order:
            t0 = time.perf_counter()
            (a, b)[i].run(None, feeds[i])
            got[i] = time.perf_counter() - t0
        ta.append(got[0] * 1000.0)
        tb.append(got[1] * 1000.0)


def _paired(ta: list[float], tb: list[float]) -> Paired:
    import numpy as np

    a, b = np.array(ta), np.array(tb)
    ratios = b / np.maximum(a, 1e-9)
    med = float(np.median(ratios))
    spread = float(np.percentile(ratios, 75) - np.percentile(ratios, 25)) / med if med > 0 else 0.0
    ratio = _low_ratio(a, b)
    # how far the estimate moves when the pairs are resampled (seeded: the same timings, the same noise)
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(a), size=(200, len(a)))
    boot = np.array([_low_ratio(a[i], b[i]) for i in picks])
    lo, hi = np.percentile(boot, [2.5, 97.5])
    noise = float(hi - lo) / 2 / ratio if ratio > 0 else 0.0
    # the times reported are those the ratio is taken from, so a report never shows the faster model slower
    qa, qb = (float(np.percentile(x, LOW_QUANTILE)) for x in (a, b))
    return Paired(qa, qb, ratio, noise, spread, len(ratios))


def _low_ratio(a: Any, b: Any) -> float:
    """b's time over a's, from the lower quartile of each: a busy host only ever adds time, and mostly to
    some runs, so the fast runs of each model say what it costs; the median would move with the load."""
    import numpy as np

    qa = float(np.percentile(a, LOW_QUANTILE))
    return float(np.percentile(b, LOW_QUANTILE)) / qa if qa > 0 else 0.0


def _fit_feed(sess: Any, feed: dict[str, Any]) -> dict[str, Any]:
    """`feed` with float arrays cast to the session's float input types (an fp16 model's float16 inputs)."""
    import numpy as np

    types = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}
    out = dict(feed)
    for i in sess.get_inputs():
        want = types.get(i.type)
        v = feed.get(i.name)
        if want is not None and v is not None and v.dtype.kind == "f" and v.dtype != want:
            out[i.name] = v.astype(want)
    return out


def check_loads(path: str | Path, what: str, hint: str | None = None) -> Any:
    """Open `path` in ONNX Runtime (CPU); a model it rejects is a StepError. Returns the session.

    Logged first: when ONNX Runtime crashes on the model (it happens, in its graph optimizers), the
    step's log then ends with what was being done."""
    logging.getLogger("edgebuild.step").info("checking that ONNX Runtime loads the %s model", what)
    try:
        return session(path)
    except Exception as exc:
        raise StepError(f"ONNX Runtime cannot load the {what} model: {str(exc).strip()[:400]}", hint=hint) from None


@contextlib.contextmanager
def keep_root_logging() -> Iterator[None]:
    """Undo `logging.basicConfig()` calls made while importing a tool (some ORT modules do this)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for h in list(root.handlers):
            if h not in handlers:
                root.removeHandler(h)
        root.setLevel(level)


class _DropNoise(logging.Filter):
    """ONNX Runtime's quantizers log advice to the root logger that does not apply here."""

    NOISE = ("Please consider to run pre-processing", "Please consider pre-processing",
             "Quantization parameters for tensor")

    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        return not msg.startswith(self.NOISE)


@contextlib.contextmanager
def quiet_quantizer_logs() -> Iterator[None]:
    """Drop ONNX Runtime quantization's root-logger noise (pre-processing advice, per-tensor INFO lines)."""
    root = logging.getLogger()
    f = _DropNoise()
    root.addFilter(f)
    try:
        yield
    finally:
        root.removeFilter(f)
