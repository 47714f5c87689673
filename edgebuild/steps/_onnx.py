"""ONNX helpers shared by the step kinds; called inside run() only (this module imports onnx lazily).

`save()` is the one way a step writes its model: it pins the IR version to what every consumer's
runtime accepts, refuses an opset above the consumers' limit, runs the ONNX checker, and writes
the same bytes for the same model (no tool versions, deterministic serialization).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from edgebuild.steps.base import StepError

if TYPE_CHECKING:  # pragma: no cover
    import onnx

PRODUCER = "edgebuild"
TWO_GB = 2**31

# Element types (TensorProto enum values) that need a minimum IR version.
_DTYPE_MIN_IR = {
    17: 9, 18: 9, 19: 9, 20: 9,   # FLOAT8E4M3FN, FLOAT8E4M3FNUZ, FLOAT8E5M2, FLOAT8E5M2FNUZ
    21: 10, 22: 10,               # UINT4, INT4
    23: 11,                       # FLOAT4E2M1
}
_DTYPE_NAMES = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64",
                9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 16: "bfloat16",
                21: "uint4", 22: "int4"}

# Op types that mark a quantized graph.
INT8_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger",
                      "ConvInteger", "QLinearConv", "QLinearMatMul", "QLinearAdd", "QLinearMul",
                      "QGemm", "DynamicQuantizeMatMul", "QAttention"})
INT4_OPS = frozenset({"MatMulNBits", "GatherBlockQuantized"})


def load(path: str | Path) -> "onnx.ModelProto":
    """Load a model with its external data; a file that is not an ONNX model is a StepError."""
    import onnx

    try:
        return onnx.load(str(path))
    except FileNotFoundError:
        raise StepError(f"model file not found: {path}") from None
    except Exception as exc:  # protobuf DecodeError and friends
        raise StepError(f"cannot read ONNX model {path}: {type(exc).__name__}: {str(exc)[:200]}") from None


def default_opset(model: "onnx.ModelProto") -> int:
    """The model's default-domain ("" / "ai.onnx") opset; 0 when it imports none."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def save(model: "onnx.ModelProto", path: str | Path, ir_version: int, max_opset: int,
         opset_path: tuple[Any, ...] | None = None) -> int:
    """Check `model` and write it to `path` as one file; return the number of bytes written.

    - IR version: lowered to `ir_version` when the model's is higher (onnx 1.23 writes IR 14,
      which ONNX Runtime 1.31 and onnxruntime-web 1.30 reject). A model whose opset or element
      types need a higher IR version than that is a StepError.
    - Opset: a default-domain opset above `max_opset` is a StepError; `opset_path` is the recipe
      key to blame (e.g. the export step's `opset`).
    - Nodes in topological order in every graph (`topo_sort`), then the ONNX checker must pass.
    - Opset imports of domains no node uses are dropped (ONNX Runtime's optimizer imports every
      domain it knows, e.g. ai.onnx.ml 5, which would demand a newer IR version).
    - Deterministic bytes: producer "edgebuild" with no version, deterministic serialization.
    """
    import onnx

    prune_opset_imports(model)
    opset = default_opset(model)
    if opset > max_opset:
        raise StepError(
            f"the model uses ONNX opset {opset}, but the runtimes of the targets it is built for load opset {max_opset} at most",
            hint=f"set `opset: {max_opset}` (or lower) on the export step, or take this step from a model exported at that opset",
            recipe_path=opset_path)
    need = _min_ir_version(model)
    if need > ir_version:
        raise StepError(
            f"the model needs ONNX IR version {need} (for its opset or element types), but the targets' runtimes "
            f"load IR version {ir_version} at most",
            hint="lower the export opset, or drop the target whose runtime is older from this step's consumers",
            recipe_path=opset_path)
    for g in iter_graphs(model.graph):   # a tool may leave a node before one it reads from (the checker refuses)
        topo_sort(g)
    model.ir_version = min(model.ir_version or ir_version, ir_version)
    model.producer_name = PRODUCER
    model.producer_version = ""
    size = model.ByteSize()
    if size >= TWO_GB:
        raise StepError(f"the model is {size / 2**30:.1f} GiB: models over 2 GB (external data) are not supported yet")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx.checker.ValidationError, or a C++ error for odd graphs
        raise StepError(f"the output model does not pass the ONNX checker: {str(exc).strip()[:500]}",
                        hint="this is likely a bug in the tool this step runs; try other parameters or an earlier step") from None
    data = model.SerializeToString(deterministic=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return len(data)


def prune_opset_imports(model: "onnx.ModelProto") -> None:
    """Drop opset imports of domains that no node (in any graph or local function) uses."""
    used = {"", "ai.onnx"}
    for n in iter_nodes(model):
        used.add(n.domain)
    for f in model.functions:
        for n in f.node:
            used.add(n.domain)
    keep = [o for o in model.opset_import if o.domain in used]
    if len(keep) != len(model.opset_import):
        del model.opset_import[:]
        model.opset_import.extend(keep)


def _min_ir_version(model: "onnx.ModelProto") -> int:
    import onnx.helper

    need = onnx.helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    for t in iter_initializers(model):
        need = max(need, _DTYPE_MIN_IR.get(t.data_type, 0))
    return need


def iter_graphs(graph: "onnx.GraphProto") -> Iterator["onnx.GraphProto"]:
    """`graph` and every subgraph (If/Loop/Scan bodies) inside it."""
    import onnx

    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from iter_graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from iter_graphs(g)


def iter_nodes(model: "onnx.ModelProto") -> Iterator["onnx.NodeProto"]:
    for g in iter_graphs(model.graph):
        yield from g.node


def iter_initializers(model: "onnx.ModelProto") -> Iterator["onnx.TensorProto"]:
    for g in iter_graphs(model.graph):
        yield from g.initializer


def count_ops(model: "onnx.ModelProto") -> dict[str, int]:
    """Op type -> number of nodes (subgraphs included), sorted by op type."""
    return dict(sorted(Counter(n.op_type for n in iter_nodes(model)).items()))


def node_count(model: "onnx.ModelProto") -> int:
    return sum(1 for _ in iter_nodes(model))


def initializer_dtypes(model: "onnx.ModelProto") -> dict[str, int]:
    """Element type name -> number of initializers of that type, sorted by name."""
    c = Counter(_DTYPE_NAMES.get(t.data_type, str(t.data_type)) for t in iter_initializers(model))
    return dict(sorted(c.items()))


def precision_of(model: "onnx.ModelProto") -> str:
    """The model's numeric precision as edgebuild names it: "int4", "int8", "fp16" or "fp32".

    Quantization ops decide first (any weight-only 4-bit op -> int4, any 8-bit quantization op -> int8);
    otherwise the floating-point type holding most initializer bytes.
    """
    ops = {n.op_type for n in iter_nodes(model)}
    if ops & INT4_OPS or any(t.data_type in (21, 22) for t in iter_initializers(model)):
        return "int4"
    if ops & INT8_OPS:
        return "int8"
    fp16 = fp32 = 0
    for t in iter_initializers(model):
        n = 1
        for d in t.dims:
            n *= d
        if t.data_type == 10:
            fp16 += n
        elif t.data_type == 1:
            fp32 += n
    return "fp16" if fp16 > fp32 else "fp32"


# An unnamed dim: no dim_param, an empty one, or a negative dim_value (exporters write -1). Each one is a
# free dim of its own: two of them never have to agree, unlike two dims with the same name.
UNNAMED = "?"


def declared_dims(value_info: Any) -> list[int | str] | None:
    """The one reader of declared shapes: recipe-style dims (ints for fixed dims, names for symbolic
    ones, UNNAMED for unnamed ones), or None when no shape (not even the rank) is declared."""
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return None
    out: list[int | str] = []
    for d in t.shape.dim:
        if d.HasField("dim_value") and d.dim_value >= 0:
            out.append(int(d.dim_value))
        else:
            out.append(d.dim_param or UNNAMED)
    return out


def dims(value_info: Any) -> list[int | str]:
    """`declared_dims`, with no dims when no shape is declared."""
    return declared_dims(value_info) or []


def dtype_name(value_info: Any) -> str:
    t = value_info.type.tensor_type.elem_type
    return _DTYPE_NAMES.get(t, str(t))


def graph_inputs(model: "onnx.ModelProto") -> dict[str, dict[str, Any]]:
    """Input name -> {"shape", "dtype"} for the graph's real inputs (not initializers), in graph order."""
    inits = {t.name for t in model.graph.initializer}
    return {vi.name: {"shape": dims(vi), "dtype": dtype_name(vi)} for vi in model.graph.input if vi.name not in inits}


def graph_outputs(model: "onnx.ModelProto") -> dict[str, list[int | str]]:
    """Output name -> shape, in graph order."""
    return {vi.name: dims(vi) for vi in model.graph.output}


def file_size(path: str | Path) -> int:
    """The bytes of a model: its file and the external data files its tensors point at (a model exported
    with `save_as_external_data` keeps its weights beside the .onnx file)."""
    import onnx

    size = os.stat(path).st_size
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:
        return size
    files = {e.value for t in _all_tensors(model) if t.data_location == onnx.TensorProto.EXTERNAL
             for e in t.external_data if e.key == "location"}
    base = Path(path).parent
    return size + sum(os.stat(base / f).st_size for f in sorted(files) if (base / f).is_file())


def _all_tensors(model: "onnx.ModelProto") -> Iterator[Any]:
    """Initializers and constant-node tensors of the graph and its subgraphs."""
    import onnx

    def walk(g: Any) -> Iterator[Any]:
        yield from g.initializer
        for n in g.node:
            for a in n.attribute:
                if a.type == onnx.AttributeProto.TENSOR:
                    yield a.t
                elif a.type == onnx.AttributeProto.GRAPH:
                    yield from walk(a.g)
                elif a.type == onnx.AttributeProto.GRAPHS:
                    for sg in a.graphs:
                        yield from walk(sg)

    return walk(model.graph)


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


def input_names(model: "onnx.ModelProto") -> list[str]:
    return list(graph_inputs(model))


def gemm_to_matmul(model: "onnx.ModelProto") -> int:
    """Rewrite Gemm nodes whose B is a constant 2-D float initializer as MatMul (+ Add for C).

    alpha and transB are folded into a new weight initializer, beta into a new bias, so tools that
    only quantize MatMul (dynamic int8 MatMulInteger, INT4 MatMulNBits) see these weights too.
    Gemm with transA=1 is left alone. Returns the number of nodes rewritten (main graph only).
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    taken = {t.name for t in graph.initializer} | {v.name for v in graph.input} | {
        o for n in graph.node for o in n.output}

    def fresh(base: str) -> str:
        name, i = base, 1
        while name in taken:
            name, i = f"{base}_{i}", i + 1
        taken.add(name)
        return name

    new_nodes, rewritten = [], 0
    for node in graph.node:
        if node.op_type != "Gemm" or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
            new_nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        b = inits.get(node.input[1])
        if (attrs.get("transA", 0) or b is None or len(b.dims) != 2
                or b.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)):
            new_nodes.append(node)
            continue
        c_name = node.input[2] if len(node.input) > 2 and node.input[2] else ""
        c = inits.get(c_name) if c_name else None
        beta = float(attrs.get("beta", 1.0))
        if c_name and c is None and beta != 1.0:
            new_nodes.append(node)   # a computed C scaled by beta: leave as Gemm
            continue
        w = numpy_helper.to_array(b)
        if attrs.get("transB", 0):
            w = w.T
        alpha = float(attrs.get("alpha", 1.0))
        if alpha != 1.0:
            w = w * np.asarray(alpha, dtype=w.dtype)
        w_name = fresh(f"{b.name}_matmul")
        graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(w), w_name))
        base = node.name or node.output[0]
        out = node.output[0]
        if c_name:
            mm_out = fresh(f"{out}_matmul")
            new_nodes.append(helper.make_node("MatMul", [node.input[0], w_name], [mm_out], name=f"{base}_MatMul"))
            bias = c_name
            if c is not None and beta != 1.0:
                arr = numpy_helper.to_array(c)
                bias = fresh(f"{c_name}_scaled")
                graph.initializer.append(numpy_helper.from_array(arr * np.asarray(beta, dtype=arr.dtype), bias))
            new_nodes.append(helper.make_node("Add", [mm_out, bias], [out], name=f"{base}_Add"))
        else:
            new_nodes.append(helper.make_node("MatMul", [node.input[0], w_name], [out], name=f"{base}_MatMul"))
        rewritten += 1
    if rewritten:
        graph.ClearField("node")
        graph.node.extend(new_nodes)
        used = {i for n in iter_nodes(model) for i in n.input} | {o.name for o in graph.output}
        keep = [t for t in graph.initializer if t.name in used]
        graph.ClearField("initializer")
        graph.initializer.extend(keep)
        gi = [v for v in graph.input if v.name not in inits or v.name in used]
        if len(gi) != len(graph.input):
            graph.ClearField("input")
            graph.input.extend(gi)
    return rewritten


def constant_matmuls(model: "onnx.ModelProto") -> int:
    """Number of MatMul nodes whose B is a float initializer of rank 2 (or rank > 2 with leading 1s)."""
    import onnx

    count = 0
    for g in iter_graphs(model.graph):
        inits = {t.name: t for t in g.initializer}
        for n in g.node:
            if n.op_type != "MatMul" or len(n.input) < 2:
                continue
            t = inits.get(n.input[1])
            if t is None or t.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
                continue
            if len(t.dims) == 2 or (len(t.dims) > 2 and all(d == 1 for d in t.dims[:-2])):
                count += 1
    return count


def topo_sort(graph: "onnx.GraphProto") -> bool:
    """Order `graph`'s nodes so each comes after the nodes it reads from (stable: keeps the original
    order where it is already valid). Some converters append nodes at the end; the ONNX checker
    requires sorted graphs. Returns True when the order changed; a cycle leaves the graph as is.
    """
    import heapq

    nodes = list(graph.node)
    producer = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    deps: list[set[int]] = []
    for i, n in enumerate(nodes):
        names = set(n.input) | _subgraph_reads(n)
        deps.append({producer[x] for x in names if x in producer and producer[x] != i})
    users: list[list[int]] = [[] for _ in nodes]
    for i, d in enumerate(deps):
        for j in d:
            users[j].append(i)
    waiting = [len(d) for d in deps]
    ready = [i for i, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for u in users[i]:
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(ready, u)
    if len(order) != len(nodes) or order == list(range(len(nodes))):
        return False
    graph.ClearField("node")
    graph.node.extend(nodes[i] for i in order)
    return True


def _subgraph_reads(node: Any) -> set[str]:
    import onnx

    out: set[str] = set()
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for g in graphs:
            for sg in iter_graphs(g):
                for n in sg.node:
                    out.update(n.input)
    return out
