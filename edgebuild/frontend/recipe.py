"""Stage 3: turn a loaded, schema-valid recipe into `Recipe`, checking what the schema cannot."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgebuild.errors import Problem, UserError
from edgebuild.frontend import loader, sources, validate
from edgebuild.frontend import targets as targets_mod
from edgebuild.steps.base import ONNX, PYTORCH, StepKind

FORMAT = 1


@dataclass
class StepSpec:
    """One entry of the recipe's `steps:`."""

    id: str
    use: str
    kind: type[StepKind]
    source: str | None            # the step id in `from`, None for the recipe's model
    params: dict[str, Any]        # with defaults filled in


@dataclass
class Recipe:
    """A checked recipe: every path resolved, every reference known to exist."""

    file: Path
    doc: loader.Document
    name: str
    model_kind: str                               # PYTORCH or ONNX
    model: dict[str, Any]                         # {"onnx": Path} or {"pytorch": {"factory": str, "weights": Path|None}}
    inputs: dict[str, dict[str, Any]]
    data: dict[str, Path]
    targets: list[targets_mod.Target]
    steps: dict[str, StepSpec]
    ship: dict[str, list[str]]                    # target -> step ids shipped, or the candidates of `best:`
    best: dict[str, str] = field(default_factory=dict)            # target -> `by` (latency|size) where ship says best:
    checks: dict[str, Any] = field(default_factory=dict)          # the recipe's `checks:` section
    source_files: dict[str, Path] = field(default_factory=dict)   # role -> file whose content enters keys
    model_facts: dict[str, Any] = field(default_factory=dict)     # probe of an ONNX source

    @property
    def dir(self) -> Path:
        return self.file.parent

    def target(self, name: str) -> targets_mod.Target:
        return next(t for t in self.targets if t.name == name)

    def ship_path(self, target: str, i: int) -> tuple[Any, ...]:
        """Recipe path of the i-th step id shipped to a target (inside `best:` for a selection)."""
        return ("ship", target, "best", i) if target in self.best else ("ship", target, i)

    def users(self, step_id: str) -> list[targets_mod.Target]:
        """Targets that ship this step or a step built from it."""
        out = []
        for t in self.targets:
            for sid in self.ship.get(t.name, []):
                cur: str | None = sid
                while cur is not None and cur != step_id:
                    cur = self.steps[cur].source if cur in self.steps else None
                if cur == step_id:
                    out.append(t)
                    break
        return out

    def output_kind(self, step_id: str | None) -> str:
        return self.model_kind if step_id is None else self.steps[step_id].kind.gives


def load(path: str | Path) -> Recipe:
    """Load, validate and check a recipe; raise UserError listing every problem found."""
    file = Path(path)
    doc = loader.load(file, display=str(path))
    _check_format(doc)
    _raise(validate.check(doc, validate.schema("recipe")))
    # Checks that do not need each other's results report together, so one run shows all they find
    # (UserError prints them in line order). A step of an unknown kind is left out of `steps`: the graph
    # and ship checks would call it an unknown step, so they wait until every kind is known.
    steps, step_problems = _steps(doc)
    try:
        recipe = _build(file.resolve(), doc, steps)
    except UserError as exc:
        raise UserError(step_problems + exc.problems) from None
    found = step_problems or (_check_graph(recipe) + _check_ship(recipe))
    _raise(found + _check_sources(recipe))
    from edgebuild.checks import judge  # both need the graph and the files checked: datasets read, `from` acyclic

    _raise(_check_steps(recipe) + judge.check_recipe(recipe))
    return recipe


def _raise(problems: list[Problem]) -> None:
    if problems:
        raise UserError(problems)


def _check_format(doc: loader.Document) -> None:
    data = doc.data
    if data is None:
        raise UserError(Problem("the recipe is empty", doc.at(()),
                                "start it with `edgebuild: 1`, then name, model, targets, steps and ship"))
    if not isinstance(data, dict):
        raise UserError(Problem("a recipe must be a mapping of keys (edgebuild, name, model, targets, steps, ship), "
                                f"found {validate.found(data)}", doc.at(()), "write `key: value` lines, starting with `edgebuild: 1`"
                                + ("; not `- ` list items" if isinstance(data, list) else "")))
    if "edgebuild" not in data:
        raise UserError(Problem("missing recipe format version `edgebuild: 1`", doc.at(()),
                                "add `edgebuild: 1` as the first line of the recipe"))
    version = data["edgebuild"]
    if not isinstance(version, int) or isinstance(version, bool):
        raise UserError(Problem(f"the recipe format version must be the integer {FORMAT}, found {validate.found(version)}",
                                doc.at(("edgebuild",)), f"write `edgebuild: {FORMAT}`, without quotes"))
    if version != FORMAT:
        raise UserError(Problem(f"unsupported recipe format {version}: this edgebuild reads format {FORMAT}",
                                doc.at(("edgebuild",)), f"write `edgebuild: {FORMAT}`, or upgrade edgebuild"))


def _steps(doc: loader.Document) -> tuple[dict[str, StepSpec], list[Problem]]:
    from edgebuild.steps import kinds

    known = kinds()
    out, problems = {}, []
    for sid, spec in doc.data["steps"].items():
        use = spec["use"]
        if use not in known:
            hint = validate.did_you_mean(use, sorted(known)) or f"known step kinds: {', '.join(sorted(known))}"
            problems.append(Problem(f"unknown step kind '{use}' in steps.{sid}", doc.at(("steps", sid, "use")), hint))
            continue
        kind = known[use]
        given = spec.get("with", {}) or {}
        problems += validate.check(doc, kind.schema(), ("steps", sid, "with"), given)
        out[sid] = StepSpec(sid, use, kind, spec.get("from"), kind.fill_defaults(given))
    return out, problems


def _build(file: Path, doc: loader.Document, steps: dict[str, StepSpec]) -> Recipe:
    data, base = doc.data, file.parent
    problems: list[Problem] = []
    tlist = []
    for i, ref in enumerate(data["targets"]):
        try:
            tlist.append(targets_mod.load(ref, base, doc.at(("targets", i))))
        except UserError as exc:
            problems += exc.problems
    _raise(problems)
    names = [t.name for t in tlist]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        _raise([Problem(f"two targets are named '{sorted(dup)[0]}'", doc.at(("targets",)), "give each profile its own name")])
    model = data["model"]
    kind = PYTORCH if "pytorch" in model else ONNX
    resolved: dict[str, Any]
    if kind == ONNX:
        resolved = {"onnx": base / model["onnx"]}
    else:
        w = model["pytorch"].get("weights")
        resolved = {"pytorch": {"factory": model["pytorch"]["factory"], "weights": base / w if w else None}}
    data_sets = {k: base / v for k, v in (data.get("data") or {}).items()}
    inputs = {k: {"shape": v["shape"], "dtype": v.get("dtype", "float32")} for k, v in (model.get("inputs") or {}).items()}
    ship = {t: (v["best"] if isinstance(v, dict) else v) for t, v in data["ship"].items()}
    best = {t: v.get("by", "latency") for t, v in data["ship"].items() if isinstance(v, dict)}
    return Recipe(file, doc, data["name"], kind, resolved, inputs, data_sets, tlist, steps, ship, best,
                  dict(data.get("checks") or {}))


def _check_graph(r: Recipe) -> list[Problem]:
    """Every `from` exists and gives what the step takes; no cycles."""
    problems = []
    for sid, s in r.steps.items():
        if s.source is not None and s.source not in r.steps:
            hint = validate.did_you_mean(s.source, list(r.steps)) or f"steps here: {', '.join(r.steps)}"
            problems.append(Problem(f"step '{sid}' takes its model from unknown step '{s.source}'",
                                    r.doc.at(("steps", sid, "from")), hint))
    if problems:
        return problems
    for sid in r.steps:
        cycle = _cycle_from(r, sid)
        if cycle:
            return [Problem(f"steps form a cycle: {' -> '.join(cycle)}", r.doc.at(("steps", cycle[0], "from")),
                            "one step in the cycle must take the recipe's model or another step")]
    for sid, s in r.steps.items():
        got = r.output_kind(s.source)
        if got not in s.kind.takes:
            origin = f"step '{s.source}' ({r.steps[s.source].use}) gives" if s.source else "the recipe's model is"
            fits = [o for o, spec in r.steps.items() if o != sid and spec.kind.gives in s.kind.takes]
            if fits:
                hint = f"take it from a step that gives {_kinds(s.kind.takes)}: add `from: {fits[0]}`"
            elif got == PYTORCH:
                hint = "add an export step (`use: export`) and take this step `from:` it"
            else:
                hint = f"take it from a step that gives {_kinds(s.kind.takes)}"
            problems.append(Problem(f"step '{sid}' ({s.use}) takes {_kinds(s.kind.takes)}, but {origin} {_kinds([got])}",
                                    r.doc.at(("steps", sid, "from" if s.source else "use")), hint))
            continue
        have = _precision_of(r, s.source)
        if s.kind.takes_precisions is not None and s.source is not None and have is not None \
                and have not in s.kind.takes_precisions:
            fits = [o for o, spec in r.steps.items() if o != sid and spec.kind.gives in s.kind.takes
                    and _precision_of(r, o) in (*s.kind.takes_precisions, None)]
            problems.append(Problem(
                f"step '{sid}' ({s.use}) converts {' or '.join(s.kind.takes_precisions)} models, but step "
                f"'{s.source}' ({r.steps[s.source].use}) gives {have}",
                r.doc.at(("steps", sid, "from")),
                f"take it from a float model: `from: {fits[0]}`" if fits else "take it from the export step or the recipe's model"))
    return problems


def _precision_of(r: Recipe, sid: str | None) -> str | None:
    """The precision a step's output has, following `from` to the recipe's model (None: the recipe's model,
    whose precision is not known before a step reads it)."""
    chain = []
    while sid is not None:
        chain.append(sid)
        sid = r.steps[sid].source
    precision: str | None = None
    for step_id in reversed(chain):
        s = r.steps[step_id]
        precision = s.kind.output_precision(s.params, precision or "fp32") if (s.kind.precision or precision) else None
    return precision


KIND_NAMES = {ONNX: "an ONNX model", PYTORCH: "a PyTorch model", "tensorrt-engine": "a TensorRT engine",
              "web-bundle": "a web bundle"}


def _kinds(kinds: Any) -> str:
    """Model kinds in words: "an ONNX model", "a PyTorch model or an ONNX model"."""
    return " or ".join(KIND_NAMES.get(k, f"a {k}") for k in kinds)


def _cycle_from(r: Recipe, start: str) -> list[str]:
    seen, cur = [start], r.steps[start].source
    while cur is not None:
        if cur in seen:
            return seen[seen.index(cur):] + [cur]
        seen.append(cur)
        cur = r.steps[cur].source
    return []


def _check_ship(r: Recipe) -> list[Problem]:
    problems = []
    names = [t.name for t in r.targets]
    for tname, ids in r.ship.items():
        if tname not in names:
            hint = validate.did_you_mean(tname, names) or (f"add it to `targets` (now: {', '.join(names)}), "
                                                           "or remove it from `ship`")
            problems.append(Problem(f"ship names target '{tname}', which is not in `targets`", r.doc.at(("ship", tname), key=True), hint))
            continue
        target = r.target(tname)
        for i, sid in enumerate(ids):
            if sid not in r.steps:
                hint = validate.did_you_mean(sid, list(r.steps)) or f"steps here: {', '.join(r.steps)}"
                problems.append(Problem(f"ship.{tname} names unknown step '{sid}'", r.doc.at(r.ship_path(tname, i)), hint))
                continue
            gives = r.steps[sid].kind.gives
            if gives not in target.formats:
                problems.append(Problem(f"step '{sid}' gives {_kinds([gives])}, which target '{tname}' cannot load "
                                        f"(it loads: {', '.join(target.formats)})", r.doc.at(r.ship_path(tname, i)),
                                        "ship a step whose output this target loads, or check the target profile's `formats`"))
    return problems


def _check_sources(r: Recipe) -> list[Problem]:
    """Model, factory, weights and datasets exist and fit each other; fills source_files and inputs."""
    doc, problems = r.doc, []
    if r.model_kind == ONNX:
        problems += _check_onnx_source(r)
    else:
        pt = r.model["pytorch"]
        fpath, probs = sources.check_factory(pt["factory"], r.dir, doc.at(("model", "pytorch", "factory")))
        problems += probs
        if not probs:
            for f in sources.factory_files(pt["factory"], r.dir):
                r.source_files[sources.source_role("factory", f, r.dir)] = f
        w, shown, w_at = pt["weights"], doc.data["model"]["pytorch"].get("weights"), doc.at(("model", "pytorch", "weights"))
        if w is not None:
            if not w.is_file():
                problems.append(sources.missing_file("weights file", shown, w, w_at))
            elif sources.is_lfs_pointer(w):
                problems.append(sources.lfs_problem(f"weights file {shown}", w, w_at))
            else:
                r.source_files["weights"] = w
        for n, spec in (doc.data["model"].get("inputs") or {}).items():
            if isinstance(spec, dict) and "value" in spec:
                problems.append(Problem(f"model.inputs.{n}.value fixes an input of a pytorch model; only an ONNX model's "
                                        "inputs can be fixed", doc.at(("model", "inputs", n, "value"), key=True),
                                        "give the value in the factory (e.g. a default argument), or build from the exported ONNX model"))
        if not r.inputs:
            problems.append(Problem("a pytorch model needs `inputs:` (name, shape and dtype of each input)",
                                    doc.at(("model",), key=True), "add e.g. `inputs: {x: {shape: [batch, 3, 224, 224], dtype: float32}}`"))
    if problems:
        return problems
    for name, path in r.data.items():
        fed = {k: v for k, v in r.inputs.items() if "value" not in v}   # inputs fixed by `value` are not fed
        probs = sources.check_dataset(name, path, fed, doc.at(("data", name)))
        problems += probs
        if not probs:
            r.source_files[f"data:{name}"] = path
    return problems


def _check_onnx_source(r: Recipe) -> list[Problem]:
    path, where, shown = r.model["onnx"], r.doc.at(("model", "onnx")), r.doc.data["model"]["onnx"]
    if not path.is_file():
        return [sources.missing_file("model file", shown, path, where)]
    if sources.is_lfs_pointer(path):
        return [sources.lfs_problem(f"model file {shown}", path, where)]
    try:
        facts = sources.probe_onnx(path)
    except ValueError as exc:
        return [Problem(f"cannot read ONNX model {shown}: {exc}", where,
                        "re-export the model; check the file was not truncated, or written in another format")]
    r.model_facts = facts
    r.source_files["model"] = path
    for ext in facts["external"]:
        r.source_files[f"model-data:{ext}"] = path.parent / ext
    # model.inputs of an ONNX model overrides what the graph declares, input by input; inputs it leaves out
    # keep the graph's declaration. Rules:
    # - dims may differ from the graph's (a wrong fixed dim, a fixed dim made symbolic): the worker rewrites
    #   the graph's declaration (edgebuild.onnx.source), and output dims are re-inferred;
    # - the rank may not: an input declared with rank R is read by ops that expect rank R, so another rank is
    #   almost surely a typo. Only an input declared without any shape (unknown rank) takes any rank;
    # - the dtype is the graph's: when given it must match (edgebuild does not insert casts); when left out it
    #   is taken from the graph, not defaulted to float32;
    # - `value` fixes an input to a constant: it needs fixed dims holding exactly the value's elements, and
    #   numbers of the input's dtype. The entry stays in r.inputs (with its value: the worker needs it, and it
    #   enters the cache key); what edgebuild feeds from datasets is the entries without `value`.
    from edgebuild.onnx import source as onnx_source

    problems: list[Problem] = []
    declared = facts["inputs"]
    given = (r.doc.data.get("model") or {}).get("inputs") or {}
    if not given:
        r.inputs = declared
        return problems
    names = ", ".join(declared) or "none"
    merged: dict[str, dict[str, Any]] = {}
    for name, spec in given.items():
        at = ("model", "inputs", name)
        if name not in declared:
            fixing = isinstance(spec, dict) and "value" in spec
            what = f"model.inputs.{name}.value fixes '{name}'" if fixing else f"model.inputs names '{name}'"
            problems.append(Problem(f"{what}, which is not an input of the ONNX model (its inputs: {names})",
                                    r.doc.at(at, key=True),
                                    validate.did_you_mean(name, list(declared))
                                    or "name the model's inputs as the graph does, or leave out `inputs:` to read them from it"))
            continue
        graph = declared[name]
        shape = list(spec["shape"])
        if len(shape) != len(graph["shape"]) and (graph["shape"] or onnx_source.declares_shape(path, name)):
            shown = "[" + ", ".join(str(d) for d in graph["shape"]) + "]"
            problems.append(Problem(f"model.inputs.{name}.shape has rank {len(shape)}, but the ONNX model declares '{name}' "
                                    f"with rank {len(graph['shape'])}: {shown}", r.doc.at(at + ("shape",)),
                                    f"override the dims, not the rank (a name makes a dim symbolic, e.g. "
                                    f"[{', '.join(['n'] + [str(d) for d in graph['shape'][1:]])}]); the graph's ops "
                                    f"expect rank {len(graph['shape'])}"))
        dtype = graph["dtype"]
        if "dtype" in spec and spec["dtype"] != dtype:
            problems.append(Problem(f"model.inputs.{name}.dtype is {spec['dtype']}, but the ONNX model's input '{name}' "
                                    f"takes {dtype}", r.doc.at(at + ("dtype",)),
                                    f"write `dtype: {dtype}` or leave it out (edgebuild does not change an input's element type)"))
        entry: dict[str, Any] = {"shape": shape, "dtype": dtype}
        if "value" in spec:
            why = onnx_source.value_problem(spec["value"], shape, dtype)
            if why:
                problems.append(Problem(f"model.inputs.{name}.value {why}", r.doc.at(at + ("value",)),
                                        "give a number for a single-element input, or nested lists that fill `shape`"))
            entry["value"] = spec["value"]
        merged[name] = entry
    if not problems:
        r.inputs = {n: merged.get(n, declared[n]) for n in declared}   # graph order; unlisted inputs as declared
    return problems


def _check_steps(r: Recipe) -> list[Problem]:
    """Dataset references in step parameters, then each kind's own plan-time checks."""
    from edgebuild.steps.base import PlanContext

    problems = []
    for sid, s in r.steps.items():
        unknown = []
        for path, ds in s.kind.datasets(s.params).items():
            if ds not in r.data:
                hint = validate.did_you_mean(ds, list(r.data)) or (f"datasets here: {', '.join(r.data)}" if r.data else "declare it under `data:`")
                unknown.append(Problem(f"step '{sid}' uses dataset '{ds}', which is not declared under `data:`",
                                       r.doc.at(("steps", sid, "with", *path)), hint))
        if unknown:  # the kind's own checks assume its datasets exist: they would report the same again
            problems += unknown
            continue
        input_kind = r.output_kind(s.source)
        ctx = PlanContext(sid, s.params, r, input_kind, r.users(sid))
        s.kind().check(ctx)
        problems += ctx.problems
    return problems
