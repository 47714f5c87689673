"""Task metrics: how close a candidate model's outputs are to a reference model's, as one number.

A metric compares `reference` and `candidate`, each a dict output name -> array stacked over samples
(axis 0 is the sample, the rest is the model output's own shape, e.g. [N, 84, 8400]). `data` is the
dataset those outputs came from: array name -> array (model inputs, and `labels` when it has them).

Spec (a string, e.g. the `metric:` of a quantize step's `accuracy:` goal)::

    NAME[@ARG] [on OUTPUT[INDEX]]      a built-in metric, optionally on one output or a slice of it
    path/to/file.py:function            a user metric, the file relative to the recipe

Built-in metrics (`on OUTPUT[INDEX]` selects what they see: `on det[:, 4:]` is output `det` without its
first four channels; the index is numpy basic indexing over the stacked array, axis 0 = samples)::

    cosine              cosine similarity of all (selected) outputs, flattened             higher is better
                        ("all": every float output, when the model has one; integer
                        outputs such as class ids are left out)
    max_abs_error       largest |reference - candidate| over all (selected) outputs        lower is better
    mean_abs_error      mean |reference - candidate|                                       lower is better
    argmax              share of rows whose argmax over the last axis agrees               higher is better
                        (first output unless `on` names one)
    topK  (e.g. top5)   share of rows whose reference argmax is in the candidate's top K   higher is better
    iou@T               intersection over union of the maps thresholded at T (> T),        higher is better
                        per sample, averaged (two empty maps: 1)
    decision@T          the decisions `value > T` kept: min(share of reference positives   higher is better
                        the candidate keeps positive, share of reference negatives it keeps
                        negative); a candidate that loses every positive scores 0 however
                        many negatives it keeps

A user metric is `score(reference, candidate, data) -> float`, higher is better (return the negated
error for an error measure).

Goals: a higher-is-better metric takes `min: <value>` (the metric must be at least that); a
lower-is-better metric (the two error metrics) takes `max: <value>` (at most that). `direction()` tells
which; `goal_problems()` checks a goal at plan time.

This module is imported at plan time: numpy is imported inside the functions that compute.
"""

from __future__ import annotations

import ast
import math
import re
from pathlib import Path
from typing import Any, Callable

HIGHER = "higher"   # higher is better: goals say `min:`
LOWER = "lower"     # lower is better (errors): goals say `max:`

# name -> (takes a threshold argument, direction, summary)
BUILTINS: dict[str, tuple[bool, str, str]] = {
    "cosine": (False, HIGHER, "cosine similarity of all outputs"),
    "max_abs_error": (False, LOWER, "largest absolute difference"),
    "mean_abs_error": (False, LOWER, "mean absolute difference"),
    "argmax": (False, HIGHER, "argmax agreement over the last axis"),
    "topk": (True, HIGHER, "reference argmax within the candidate's top K (written topK, e.g. top5)"),
    "iou": (True, HIGHER, "IoU of maps thresholded at T (iou@T)"),
    "decision": (True, HIGHER, "decisions value > T kept (decision@T)"),
}
USER = "user"   # parse() name of a user metric; its arg is (file, function)

_SPEC = re.compile(r"^\s*(?P<metric>[^\s]+?)(?:\s+on\s+(?P<output>[^\s\[]+)(?P<index>\[.*\])?)?\s*$")
_USER = re.compile(r"^(?P<file>.+\.py):(?P<func>[A-Za-z_][A-Za-z0-9_]*)$")


class MetricError(ValueError):
    """A metric spec that cannot be parsed or evaluated (its message is for the user)."""


def parse(spec: str) -> tuple[str, Any]:
    """(name, arg) of a metric spec, without its `on ...` selection; MetricError when it is not one.

    "cosine" -> ("cosine", None); "top5" -> ("topk", 5); "iou@0.5" -> ("iou", 0.5);
    "decision@0.5 on det[:, 4:]" -> ("decision", 0.5); "metrics/score.py:f1" -> ("user", ("metrics/score.py", "f1")).
    """
    metric, _output, _index = _split(spec)
    user = _USER.match(metric)
    if user:
        return USER, (user["file"], user["func"])
    name, _, arg_text = metric.partition("@")
    top = re.fullmatch(r"top(\d+)", name)
    if top:
        if arg_text:
            raise MetricError(f"metric '{metric}': topK takes no @ argument (write e.g. `top5`)")
        k = int(top[1])
        if k < 1:
            raise MetricError(f"metric '{metric}': K must be at least 1")
        return "topk", k
    if name not in BUILTINS or name == "topk":
        hint = _did_you_mean(name)
        raise MetricError(f"unknown metric '{metric}'" + (f" (did you mean '{hint}'?)" if hint else "")
                          + f"; metrics: {', '.join(_names())}, or path/to/file.py:function")
    takes_arg = BUILTINS[name][0]
    if takes_arg and not arg_text:
        raise MetricError(f"metric '{name}' needs a threshold: write `{name}@0.5`")
    if not takes_arg and arg_text:
        raise MetricError(f"metric '{name}' takes no @ argument")
    if not takes_arg:
        return name, None
    try:
        value = float(arg_text)
    except ValueError:
        raise MetricError(f"metric '{metric}': the threshold '{arg_text}' is not a number") from None
    if not math.isfinite(value):
        raise MetricError(f"metric '{metric}': the threshold must be a finite number")
    return name, value


def selection(spec: str) -> tuple[str | None, tuple[Any, ...] | None]:
    """(output name, index) that `on OUTPUT[INDEX]` selects; (None, None) when the spec has no `on`."""
    _metric, output, index = _split(spec)
    return output, (_parse_index(index) if index else None)


def direction(spec: str) -> str:
    """HIGHER (goals say `min:`) or LOWER (error metrics; goals say `max:`)."""
    name, _ = parse(spec)
    return HIGHER if name == USER else BUILTINS[name][1]


def goal_problems(goal: dict[str, Any], recipe_dir: Path | None = None) -> list[tuple[str, str, str | None]]:
    """Plan-time problems of a goal {metric, min | max}: (message, key it is about, hint), none when fine.

    Checks the spec parses, that exactly one bound is given and that it is the one the metric's
    direction takes, and, for a user metric, that the file exists and defines the function (read with
    `ast`, not imported).
    """
    spec = goal.get("metric")
    if not isinstance(spec, str):
        return [("the goal names no metric", "metric", f"metrics: {', '.join(_names())}, or path/to/file.py:function")]
    try:
        name, arg = parse(spec)
        selection(spec)
    except MetricError as exc:
        return [(str(exc), "metric", None)]
    out: list[tuple[str, str, str | None]] = []
    want = "min" if direction(spec) == HIGHER else "max"
    other = "max" if want == "min" else "min"
    if other in goal and want not in goal:
        kind = "an error (lower is better)" if want == "max" else "higher-is-better"
        out.append((f"metric '{spec}' is {kind}: its goal is `{want}:`, not `{other}:`", other,
                    f"write `{want}: {goal[other]}`"))
    elif other in goal:
        out.append((f"give one bound for metric '{spec}': `{want}:`", other, f"drop `{other}:`"))
    elif want not in goal:
        out.append((f"the goal for metric '{spec}' has no bound", "metric", f"add `{want}: <value>`"))
    if name == USER and recipe_dir is not None:
        file, func = arg
        problem = _user_file_problem(Path(recipe_dir) / file, func, shown=file)
        if problem:
            out.append((problem, "metric", None))
    return out


def bound(goal: dict[str, Any]) -> tuple[str, float]:
    """("min" | "max", value) of a checked goal."""
    for key in ("min", "max"):
        if key in goal and goal[key] is not None:
            return key, float(goal[key])
    raise MetricError("the goal has no `min:` or `max:`")


def meets(value: float, goal: dict[str, Any]) -> bool:
    """Whether a metric value meets the goal's bound (NaN never does)."""
    key, limit = bound(goal)
    if value != value:
        return False
    return value >= limit if key == "min" else value <= limit


def user_file(spec: str, recipe_dir: Path) -> Path | None:
    """The file of a user metric spec (resolved against the recipe folder); None for a built-in."""
    try:
        name, arg = parse(spec)
    except MetricError:
        return None
    return (Path(recipe_dir) / arg[0]) if name == USER else None


def evaluate(metric_spec: str, reference: dict[str, Any], candidate: dict[str, Any], data: dict[str, Any] | None,
             recipe_dir: Path | str | None) -> float:
    """The metric's value for these stacked outputs (see the module docstring for each metric)."""
    name, arg = parse(metric_spec)
    if name == USER:
        func = _load_user(Path(recipe_dir or ".") / arg[0], arg[1])
        try:
            value = func(reference, candidate, data if data is not None else {})
        except Exception as exc:
            raise MetricError(f"user metric {arg[0]}:{arg[1]} failed: {type(exc).__name__}: {exc}") from None
        try:
            return float(value)
        except (TypeError, ValueError):
            raise MetricError(f"user metric {arg[0]}:{arg[1]} returned {type(value).__name__}, not a number") from None
    import numpy as np

    missing = [k for k in reference if k not in candidate]
    if missing:
        raise MetricError(f"the candidate has no output {', '.join(missing)}")
    output, index = selection(metric_spec)
    if output is not None:
        if output not in reference:
            raise MetricError(f"metric '{metric_spec}': no output '{output}' (outputs: {', '.join(reference)})")
        names = [output]
    elif name in ("argmax", "topk"):
        names = [next(iter(reference))]
    else:   # every float output: an integer output (a class id, an index) has no meaningful error or cosine
        names = [k for k in reference if np.asarray(reference[k]).dtype.kind == "f"] or list(reference)
    ref = [_as_float(np, reference[k]) for k in names]
    cand = [_as_float(np, candidate[k]) for k in names]
    for k, r, c in zip(names, ref, cand):
        if r.shape != c.shape:
            raise MetricError(f"output '{k}' has shape {list(c.shape)} in the candidate, {list(r.shape)} in the reference")
    if index is not None:
        try:
            ref, cand = [ref[0][index]], [cand[0][index]]
        except IndexError as exc:
            raise MetricError(f"metric '{metric_spec}': {exc}") from None
    return float(_BUILTIN_FUNCS[name](np, ref, cand, arg))


# -- built-ins ---------------------------------------------------------------------------------------

def _flat(np: Any, arrays: list[Any]) -> Any:
    return np.concatenate([np.ravel(a) for a in arrays]) if arrays else np.zeros(0)


def _per_sample(np: Any, arrays: list[Any]) -> Any:
    """[N, D]: each sample's values of every array, side by side (arrays of rank 0 count as one sample)."""
    rows = [a.reshape(a.shape[0], -1) if a.ndim else a.reshape(1, 1) for a in arrays]
    n = {r.shape[0] for r in rows}
    if len(n) > 1:
        raise MetricError(f"outputs disagree on the number of samples ({sorted(n)}): select one with `on OUTPUT`")
    return np.concatenate(rows, axis=1)


def _cosine(np: Any, ref: list[Any], cand: list[Any], _arg: Any) -> float:
    r, c = _flat(np, ref), _flat(np, cand)
    nr, nc = float(np.linalg.norm(r)), float(np.linalg.norm(c))
    if nr == 0.0 and nc == 0.0:
        return 1.0
    if nr == 0.0 or nc == 0.0:
        return 0.0
    return float(r @ c) / (nr * nc)


def _max_abs(np: Any, ref: list[Any], cand: list[Any], _arg: Any) -> float:
    d = np.abs(_flat(np, ref) - _flat(np, cand))
    return float(d.max()) if d.size else 0.0


def _mean_abs(np: Any, ref: list[Any], cand: list[Any], _arg: Any) -> float:
    d = np.abs(_flat(np, ref) - _flat(np, cand))
    return float(d.mean()) if d.size else 0.0


def _rows(np: Any, a: Any, what: str) -> Any:
    if a.ndim < 1 or a.shape[-1] < 2:
        raise MetricError(f"{what} needs an output whose last axis has two or more entries (shape {list(a.shape)})")
    return a.reshape(-1, a.shape[-1])


def _argmax(np: Any, ref: list[Any], cand: list[Any], _arg: Any) -> float:
    r, c = _rows(np, ref[0], "argmax"), _rows(np, cand[0], "argmax")
    return float(np.mean(r.argmax(-1) == c.argmax(-1))) if len(r) else 1.0


def _topk(np: Any, ref: list[Any], cand: list[Any], k: int) -> float:
    r, c = _rows(np, ref[0], f"top{k}"), _rows(np, cand[0], f"top{k}")
    if k >= r.shape[-1]:
        return 1.0
    want = r.argmax(-1)
    top = np.argpartition(-c, k - 1, axis=-1)[:, :k]
    return float(np.mean(np.any(top == want[:, None], axis=-1))) if len(r) else 1.0


def _iou(np: Any, ref: list[Any], cand: list[Any], t: float) -> float:
    r, c = _per_sample(np, ref) > t, _per_sample(np, cand) > t
    inter = np.logical_and(r, c).sum(axis=1)
    union = np.logical_or(r, c).sum(axis=1)
    ious = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return float(ious.mean()) if ious.size else 1.0


def _decision(np: Any, ref: list[Any], cand: list[Any], t: float) -> float:
    r, c = _flat(np, ref) > t, _flat(np, cand) > t
    pos, neg = int(r.sum()), int((~r).sum())
    kept_pos = float(np.logical_and(r, c).sum()) / pos if pos else 1.0
    kept_neg = float(np.logical_and(~r, ~c).sum()) / neg if neg else 1.0
    return min(kept_pos, kept_neg)


_BUILTIN_FUNCS: dict[str, Callable[..., float]] = {
    "cosine": _cosine, "max_abs_error": _max_abs, "mean_abs_error": _mean_abs, "argmax": _argmax,
    "topk": _topk, "iou": _iou, "decision": _decision,
}


# -- helpers -----------------------------------------------------------------------------------------

def _split(spec: str) -> tuple[str, str | None, str | None]:
    if not isinstance(spec, str) or not spec.strip():
        raise MetricError("the metric is empty")
    m = _SPEC.match(spec)
    if not m:
        raise MetricError(f"cannot read metric '{spec}': write NAME[@ARG] [on OUTPUT[INDEX]] or path/to/file.py:function")
    metric, output, index = m["metric"], m["output"], m["index"]
    if output is not None and _USER.match(metric):
        raise MetricError(f"metric '{spec}': a user metric sees every output; `on` is for built-in metrics")
    return metric, output, index


def _parse_index(text: str) -> tuple[Any, ...]:
    """numpy basic indexing from text such as "[:, 4:]" or "[..., 0]" (ints, slices, ...; nothing else)."""
    inner = text.strip()[1:-1]
    out: list[Any] = []
    for part in inner.split(","):
        part = part.strip()
        if part == "...":
            out.append(Ellipsis)
            continue
        if ":" in part:
            bits = part.split(":")
            if len(bits) > 3:
                raise MetricError(f"bad slice '{part}' in {text}")
            try:
                nums = [int(b) if b.strip() else None for b in bits]
            except ValueError:
                raise MetricError(f"bad slice '{part}' in {text}: only integers") from None
            out.append(slice(*nums))
            continue
        try:
            out.append(int(part))
        except ValueError:
            raise MetricError(f"bad index '{part}' in {text}: integers, slices (a:b:c) and ... only") from None
    return tuple(out)


def _as_float(np: Any, a: Any) -> Any:
    a = np.asarray(a)
    return a.astype(np.float64) if a.dtype != np.float64 else a


def _names() -> list[str]:
    return ["cosine", "max_abs_error", "mean_abs_error", "argmax", "topK (e.g. top5)", "iou@T", "decision@T"]


def _did_you_mean(name: str) -> str | None:
    import difflib

    match = difflib.get_close_matches(name, [n for n in BUILTINS if n != "topk"] + ["top5"], n=1)
    return match[0] if match else None


def _user_file_problem(path: Path, func: str, shown: str) -> str | None:
    """What is wrong with a user metric file, read with `ast` (not imported); `shown`: the path as the recipe writes it."""
    if not path.is_file():
        return f"metric file not found: {shown}"
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (SyntaxError, UnicodeDecodeError, ValueError) as exc:
        return f"metric file {shown} does not parse: {exc}"
    names = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    names |= {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    names |= {a.asname or a.name for n in tree.body if isinstance(n, ast.ImportFrom) for a in n.names}
    if func not in names:
        return f"metric file {shown} defines no function '{func}'"
    return None


def _load_user(path: Path, func: str) -> Callable[..., Any]:
    import importlib.util

    if not path.is_file():
        raise MetricError(f"metric file not found: {path}")
    module_name = f"edgebuild_user_metric_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise MetricError(f"cannot load metric file {path}")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise MetricError(f"metric file {path} failed to import: {type(exc).__name__}: {exc}") from None
    f = getattr(module, func, None)
    if not callable(f):
        raise MetricError(f"metric file {path} defines no function '{func}'")
    return f
