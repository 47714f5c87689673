"""Stage 4: the whole DAG before anything runs: nodes, their cache keys, and why each will run."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from functools import lru_cache
from pathlib import Path
from typing import Any

from edgebuild.engine import codedeps
from edgebuild.engine.digest import StatCache, sha256_json
from edgebuild.errors import Problem, UserError
from edgebuild.frontend.recipe import Recipe, StepSpec
from edgebuild.frontend.targets import Target
from edgebuild.steps.base import ONNX, PYTORCH, TENSORRT, WEB, StepKind

PACKAGE = Path(__file__).resolve().parents[1]   # the edgebuild package: the code a step's key covers
CHECK = "check:"   # a measurement node's step id is its artifact's, after this prefix


class Word(str, Enum):
    """A fixed set of words that stays a plain string wherever it goes: JSON, the manifest, the build log and
    printed lines show the word itself (`str()` and f-strings too, not `Status.BUILT`)."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class Planned(Word):
    """What planning decided for a node: its entry is in the cache, it will run, or this host cannot build it."""

    CACHED = "cached"
    RUN = "run"
    DEFERRED = "deferred"


def node_id(step_id: str, target: str | None = None) -> str:
    """A node's id: the step id, with `@target` for a node of one target (`qdq@x86-64`)."""
    return f"{step_id}@{target}" if target else step_id


def split_node_id(text: str) -> tuple[str, str | None]:
    """(step id, target or None) of a node id (or of `STEP@TARGET` as a user writes it)."""
    step, at, target = text.partition("@")
    return step, (target if at else None)


def check_id(step_id: str, target: str) -> str:
    """The id of the measurement node of a shipped step's artifact on a target (`check:qdq@x86-64`)."""
    return node_id(CHECK + step_id, target)


class Why(Enum):
    """The kinds of reason a node will run (or not): `plan` and `explain` print the text, a program can match
    the code."""

    NEVER_BUILT = "never-built"        # no build of this node is remembered
    MISSING = "missing"                # the key did not change, but its entry is not in the cache
    CHANGED = "changed"                # something in the key material changed (the text says what)
    FORCED = "forced"                  # --force STEP
    DEFERRED = "deferred"              # this host cannot build it (the text says why, and where to build it)
    ON_DEVICE = "on-device"            # a `where: device` measurement, routed to the device's Dask workers
    ON_CLUSTER = "on-cluster"          # deferred here, but a connected Dask worker can build it


FIXED_TEXT = {Why.NEVER_BUILT: "never built", Why.MISSING: "output missing from the cache",
              Why.FORCED: "forced with --force", Why.ON_DEVICE: "measured on the device",
              Why.ON_CLUSTER: "built on the cluster"}


@dataclass(frozen=True)
class Reason:
    """Why a node will run: a code from `Why` and the sentence a person reads (`str()` gives the sentence)."""

    code: Why
    text: str

    @classmethod
    def of(cls, code: Why, text: str | None = None) -> Reason:
        """A reason with its fixed sentence, or `text` for the codes whose sentence varies."""
        return cls(code, text if text is not None else FIXED_TEXT[code])

    def __str__(self) -> str:
        return self.text


@dataclass
class Node:
    """One unit of work: a step, for one target where the step depends on the target."""

    id: str
    step: StepSpec
    target: Target | None
    upstream: str | None
    consumers: list[str]
    ir_version: int
    max_opset: int
    refs: dict[str, str] = field(default_factory=dict)   # extra inputs: role -> node id (e.g. the FP32 reference)
    kind_ref: str | None = None                           # "module:Class" of an internal step kind (measurements)
    material: dict[str, Any] = field(default_factory=dict)
    key: str = ""
    status: Planned = Planned.RUN
    reasons: list[Reason] = field(default_factory=list)
    deferred: str | None = None    # why this host cannot build it (it must be built on a matching host)
    optional: bool = False         # only `best:` candidates need it: its failure loses a candidate, not the build


@dataclass
class Plan:
    recipe: Recipe
    nodes: dict[str, Node]                        # in topological order
    ship: dict[str, list[tuple[str, str]]]        # target -> [(step id, node id)]
    selected: list[str]                           # target names this run builds
    warnings: list[Problem] = field(default_factory=list)

    def order(self) -> list[Node]:
        return list(self.nodes.values())

    def command_for(self, target: str) -> str:
        """The command that builds a target's deferred artifacts on a matching host."""
        import shlex

        return f"edgebuild run {shlex.quote(str(self.recipe.doc.file))} --target {shlex.quote(target)}"


@lru_cache(maxsize=None)
def tool_version(dist: str) -> str:
    """A distribution's version from its metadata; the tool itself is not imported. A local version label
    (torch's `+cpu`, `+cu126`) names a build of the same release for other hardware, whose code writes the
    same bytes: it is left out, so a laptop and a CI runner share keys (and a lock)."""
    from edgebuild.engine import dists

    v = dists.version(dist)
    return v.partition("+")[0] if v else "not installed"


def code_digest(modules: list[Path], code_files: tuple[str, ...], stats: StatCache, root: Path = PACKAGE) -> str:
    """Digest of the code these modules run: each one and every module of the package at `root` it imports,
    directly or not, lazily or not (codedeps), plus `code_files` (templates, data) relative to `root`."""
    files = {f: d for m in modules for f, d in codedeps.closure(m, root, stats).items()}
    files.update({root / f: stats.digest(root / f) for f in code_files})
    return sha256_json(sorted(files.values()))


def step_code_digest(step: StepSpec, stats: StatCache, reads_source: bool = False) -> str:
    """The code digest of a step's kind; with the worker's normalization of the recipe's ONNX model
    (onnx/source.py) when the step reads that model."""
    modules = [Path(sys.modules[step.kind.__module__].__file__ or "")]
    if reads_source:
        modules.append(PACKAGE / "onnx" / "source.py")
    return code_digest(modules, step.kind.code_files, stats)


def build(recipe: Recipe, stats: StatCache, only: list[str] | None = None) -> Plan:
    """Plan the nodes the selected targets need (all recipe targets when `only` is empty)."""
    names = [t.name for t in recipe.targets]
    selected = only or names
    needs = {t: _needed(recipe, recipe.ship.get(t, [])) for t in names}
    specific = {sid: _target_specific(recipe, sid) for sid in recipe.steps}
    nodes: dict[str, Node] = {}
    problems: list[Problem] = []
    for sid in _topo(recipe):
        users = [t for t in names if sid in needs[t]]
        chosen = [t for t in selected if sid in needs[t]]
        if specific[sid]:
            for t in chosen:
                nodes[node_id(sid, t)] = _node(recipe, sid, recipe.target(t), [t], specific, problems)
        elif chosen:
            nodes[sid] = _node(recipe, sid, None, users, specific, problems)
    if problems:
        raise UserError(problems)
    plan = Plan(recipe, nodes, {}, selected)
    for t in selected:
        plan.ship[t] = [(sid, node_id(sid, t if specific[sid] else None)) for sid in recipe.ship.get(t, [])]
    _add_measurements(plan)
    _mark_optional(plan)
    from edgebuild.engine import compat

    errors, warnings = compat.check(plan)
    if errors:
        raise UserError(errors)
    plan.warnings += warnings
    unused = [sid for sid in recipe.steps if not any(sid in needs[t] for t in names)]
    for sid in unused:
        plan.warnings.append(Problem(f"step '{sid}' is not shipped to any target, nor used by a shipped step: it is not built",
                                     recipe.doc.at(("steps", sid), key=True), "add it to `ship:` or remove it", "warning"))
    codes: dict[tuple[type[StepKind], bool], str] = {}   # code digests, once per kind in a plan
    for n in plan.nodes.values():
        _key(recipe, n, plan.nodes, stats, codes)
    _defer(plan)
    return plan


def _defer(plan: Plan) -> None:
    """Mark nodes this host cannot build (and what depends on them) as deferred, with the reason."""
    for n in plan.order():
        up = plan.nodes[n.upstream] if n.upstream else None
        if up is not None and up.deferred:
            n.deferred = f"its input {up.id} is deferred ({up.deferred})"
        elif n.target is not None:
            n.deferred = n.step.kind().deferral(n.target)


def _add_measurements(plan: Plan) -> None:
    """One measurement node per shipped ONNX artifact (or web bundle) and target, when the recipe has checks
    or `best:`."""
    from edgebuild.checks import judge
    from edgebuild.checks.measure import MEASURE_REF, Measure

    r = plan.recipe
    if not judge.wanted(r):
        return
    for t, shipped in plan.ship.items():
        target = r.target(t)
        for sid, nid in shipped:
            gives = r.steps[sid].kind.gives
            if gives not in (ONNX, WEB):
                continue
            # a web bundle's model.onnx is checked like any ONNX artifact, except its latency: the
            # browser's, which its demo page measures, not Python ONNX Runtime's
            params = Measure.fill_defaults(dict(judge.measure_params(r, target), latency=gives == ONNX))
            spec = StepSpec(CHECK + sid, "measure", Measure, sid, params)
            refs = {"reference": _reference(plan, nid)} if r.model_kind == PYTORCH else {}
            up = plan.nodes[nid]
            mid = check_id(sid, t)
            plan.nodes[mid] = Node(mid, spec, target, nid, [t], up.ir_version, up.max_opset, refs=refs,
                                   kind_ref=MEASURE_REF)


def _mark_optional(plan: Plan) -> None:
    """Nodes that only `best:` selections need are optional: when one fails, its candidate loses (the
    manifest says why) and the build goes on; what a target ships directly, and its checks, is required."""
    required: set[str] = set()
    todo = [nid for t, shipped in plan.ship.items() if t not in plan.recipe.best
            for sid, n in shipped for nid in (n, check_id(sid, t)) if nid in plan.nodes]
    while todo:
        nid = todo.pop()
        if nid not in required:
            required.add(nid)
            node = plan.nodes[nid]
            todo += [d for d in [node.upstream, *node.refs.values()] if d]
    for node in plan.nodes.values():
        node.optional = node.id not in required


def _root(plan: Plan, node_id: str) -> str:
    """The first node of a chain: for a PyTorch model, the export whose output is the FP32 reference."""
    while plan.nodes[node_id].upstream is not None:
        node_id = plan.nodes[node_id].upstream  # type: ignore[assignment]
    return node_id


def _reference(plan: Plan, node_id: str) -> str:
    """The FP32 reference of a PyTorch recipe's artifact: the export of the recipe's own model. A chain that
    starts with steps changing the model (prune, distill) is compared with the model it started from, so an
    accuracy drop or a speed-up is the whole chain's: an export of the recipe's model already planned, else
    one added for the purpose."""
    root = _root(plan, node_id)
    if plan.nodes[root].step.kind.gives != PYTORCH:
        return root
    for n in plan.nodes.values():
        if n.upstream is None and n.kind_ref is None and n.step.kind.takes == (PYTORCH,) and n.step.kind.gives == ONNX:
            return n.id
    from edgebuild.steps.export import Export

    first = next(n for n in _chain(plan, node_id) if plan.nodes[n].step.kind.gives == ONNX)
    up = plan.nodes[first]
    params = Export.fill_defaults({"opset": min(Export.params["opset"]["default"], up.max_opset)})
    node = Node("reference:fp32", StepSpec("reference:fp32", Export.name, Export, None, params), None, None, [],
                up.ir_version, up.max_opset)
    plan.nodes[node.id] = node
    return node.id


def _chain(plan: Plan, node_id: str) -> list[str]:
    """The nodes from the first of a chain to `node_id`."""
    out = [node_id]
    while plan.nodes[out[-1]].upstream is not None:
        out.append(plan.nodes[out[-1]].upstream)  # type: ignore[arg-type]
    return out[::-1]


def _needed(recipe: Recipe, shipped: list[str]) -> set[str]:
    out: set[str] = set()
    for sid in shipped:
        cur: str | None = sid
        while cur is not None and cur not in out:
            out.add(cur)
            cur = recipe.steps[cur].source
    return out


def _target_specific(recipe: Recipe, sid: str) -> bool:
    s = recipe.steps[sid]
    return s.kind.is_target_specific(s.params) or (s.source is not None and _target_specific(recipe, s.source))


def _topo(recipe: Recipe) -> list[str]:
    order: list[str] = []

    def visit(sid: str) -> None:
        if sid in order:
            return
        src = recipe.steps[sid].source
        if src is not None:
            visit(src)
        order.append(sid)

    for sid in recipe.steps:
        visit(sid)
    return order


READER = {ONNX: ("onnxruntime", "onnxruntime-web"), TENSORRT: ("tensorrt",), WEB: ("onnxruntime-web",)}


def readers(recipe: Recipe, sid: str, target: str) -> set[str]:
    """Runtimes of a target that will read what this step writes: the runtime of every shipped artifact
    built from it (an ONNX file read by ONNX Runtime, the ONNX inside an engine read by TensorRT's parser)."""
    t = recipe.target(target)
    out: set[str] = set()
    for shipped in recipe.ship.get(target, []):
        cur: str | None = shipped
        while cur is not None and cur != sid:
            cur = recipe.steps[cur].source
        if cur == sid:
            gives = recipe.steps[shipped].kind.gives
            out.update(rt for rt in READER.get(gives, ()) if t.runtime(rt))
    return out


def _node(recipe: Recipe, sid: str, target: Target | None, users: list[str],
          specific: dict[str, bool], problems: list[Problem]) -> Node:
    step = recipe.steps[sid]
    ir, opset, why = 99, 999, ""
    for t in users:
        t_ir, t_opset, t_why = recipe.target(t).onnx_limits(readers(recipe, sid, t))
        ir = min(ir, t_ir)
        if t_opset < opset:
            opset, why = t_opset, f"{t} ({t_why})"
    want = step.params.get("opset") if step.kind.gives == "onnx" else None
    if isinstance(want, int) and want > opset:
        problems.append(Problem(f"step '{sid}' exports opset {want}, but target {why} loads opset {opset} at most",
                                recipe.doc.at(("steps", sid, "with", "opset")), f"use `opset: {opset}` or lower"))
    if step.source is None and recipe.model_facts.get("opset", 0) > opset:
        problems.append(Problem(f"the ONNX model uses opset {recipe.model_facts['opset']}, but target {why} loads opset {opset} at most",
                                recipe.doc.at(("model", "onnx")), "re-export the model at a lower opset"))
    upstream = None
    if step.source is not None:
        upstream = node_id(step.source, target.name if specific[step.source] and target else None)
    return Node(node_id(sid, target.name if target else None), step, target, upstream, users, ir, opset)


def _key(recipe: Recipe, node: Node, nodes: dict[str, Node], stats: StatCache,
         codes: dict[tuple[type[StepKind], bool], str]) -> None:
    """Everything that changes the output bytes goes into the material; the key is its full sha256."""
    step = node.step
    # the worker normalizes the recipe's ONNX model (model.inputs) for the steps that read it (worker._run)
    code = (step.kind, "onnx" in recipe.model and (node.upstream is None or node.kind_ref is not None))
    if code not in codes:
        codes[code] = step_code_digest(step, stats, code[1])
    m: dict[str, Any] = {
        "kind": step.use,
        "kind_version": step.kind.version,
        "code": codes[code],
        "params": step.params,
        "upstream": nodes[node.upstream].key if node.upstream else None,
        "onnx_limits": {"ir_version": node.ir_version, "max_opset": node.max_opset},
        "tools": {d: tool_version(d) for d in step.kind.tools},
        "target": _target_material(node),
        "sources": {},
    }
    if step.kind.host_specific:
        from edgebuild.engine import hostinfo

        m["host"] = hostinfo.cpu_class()
    if node.refs:
        m["refs"] = {role: nodes[nid].key for role, nid in sorted(node.refs.items())}
    elif node.kind_ref is not None and "model" in recipe.source_files:
        m["sources"]["model"] = stats.digest(recipe.source_files["model"])   # the reference is the ONNX source
    if step.source is None:
        m["model_inputs"] = recipe.inputs
        if "pytorch" in recipe.model:   # which callable builds the model, not only the files it lives in
            m["factory"] = recipe.model["pytorch"]["factory"]
        m["sources"] = {role: stats.digest(p) for role, p in sorted(recipe.source_files.items())
                        if not role.startswith("data:")}
    for ds in step.kind.datasets(step.params).values():
        m["sources"][f"data:{ds}"] = stats.digest(recipe.data[ds])
    for role, path in sorted(step.kind.source_files(step.params, recipe.dir).items()):
        m["sources"][role] = stats.digest(path)
    node.material = m
    node.key = sha256_json(m)


def _target_material(node: Node) -> dict[str, Any] | None:
    """What a target-specific step's key takes from its target: the values the kind resolves from the
    profile (so targets that resolve alike share a key, and so one build), else the profile itself."""
    step = node.step
    if node.target is None or not step.kind.is_target_specific(step.params):
        return None
    resolved = step.kind.resolve(step.params, node.target.data)
    return {"resolved": resolved} if resolved is not None else node.target.key_data


def shared_with(plan: Plan, node: Node) -> list[str]:
    """Other nodes of the plan with this node's key: the same step for targets that resolve alike."""
    return [n.id for n in plan.order() if n.key == node.key and n.id != node.id]


def mark(plan: Plan, cached: Callable[[str], bool], history: dict[str, Any], force: set[str] | None = None) -> None:
    """Mark each node cached, deferred or will-run, with its reasons (`history`: node id -> the key material of
    its last build; `cached(key)`: whether the cache holds that entry)."""
    for n in plan.order():
        forced = force is not None and n.step.id in force
        if n.deferred:
            n.status, n.reasons = Planned.DEFERRED, [Reason.of(Why.DEFERRED, n.deferred)]
        elif cached(n.key) and not forced:
            n.status, n.reasons = Planned.CACHED, []
        else:
            n.status = Planned.RUN
            n.reasons = [Reason.of(Why.FORCED)] if forced else changes(history.get(n.id), n.material)


def changes(old: dict[str, Any] | None, new: dict[str, Any]) -> list[Reason]:
    """Why a node's key changed, from the material of its last build."""
    if old is None:
        return [Reason.of(Why.NEVER_BUILT)]
    out: list[str] = []
    _diff(old, new, (), out)
    return [Reason.of(Why.CHANGED, x) for x in out] or [Reason.of(Why.MISSING)]


def diff(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """Human reasons why a node's key changed, from the material of its last build."""
    return [r.text for r in changes(old, new)]


def _diff(a: Any, b: Any, path: tuple[str, ...], out: list[str]) -> None:
    if a == b:
        return
    head = path[0] if path else ""
    if head == "sources" and len(path) == 2:
        role = path[1]
        what = role.replace("data:", "data ") if role.startswith("data:") else role.replace("factory:", "factory source ")
        out.append(f"{what} {'changed' if a is not None and b is not None else ('added' if a is None else 'removed')}")
        return
    if head == "upstream":
        out.append("its input changed (upstream step was rebuilt)")
        return
    if head == "refs" and len(path) == 2:
        out.append(f"its {path[1]} model changed (that step was rebuilt)")
        return
    if head == "code":
        out.append("edgebuild's code for this step kind changed")
        return
    if head == "host" and len(path) == 2:
        out.append(f"measured on another kind of host ({path[1]}: {_show(a)} → {_show(b)})")
        return
    if head == "target" and len(path) == 1 and not (isinstance(a, dict) and isinstance(b, dict)):
        out.append("the target profile changed")
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            _diff(a.get(k), b.get(k), path + (str(k),), out)
        return
    out.append(f"{'.'.join(path)}: {_show(a)} → {_show(b)}")


def _show(v: Any) -> str:
    import json
    return "(unset)" if v is None else json.dumps(v)


def watched_files(plan: Plan) -> list[Path]:
    """Every file whose content went into this plan: the no-op check trusts the plan while they stand."""
    r = plan.recipe
    pkg = PACKAGE
    files = [r.file] + [t.file for t in r.targets] + list(r.source_files.values())
    files += sorted(pkg.rglob("*.py")) + sorted((pkg / "schemas").glob("*.json")) + sorted((pkg / "templates").glob("*"))
    files += sorted((pkg / "data").rglob("*.yaml"))
    files += sorted({Path(sys.modules[n.step.kind.__module__].__file__ or "") for n in plan.nodes.values()})
    files += sorted({f for n in plan.nodes.values() for f in n.step.kind.source_files(n.step.params, r.dir).values()})
    for d in sorted({d for n in plan.nodes.values() for d in n.step.kind.tools}):
        meta = _metadata_file(d)
        if meta is not None:
            files.append(meta)
    return files


def _metadata_file(dist: str) -> Path | None:
    """The METADATA file of an installed distribution: an upgrade replaces it, which the no-op check sees."""
    from edgebuild.engine import dists

    return dists.metadata_file(dist)
