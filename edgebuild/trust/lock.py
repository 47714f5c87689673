"""What a recipe's lock file holds and how `run` uses it (the text format is lockfile.py).

The lock holds what review should see change: edgebuild's and the tools' versions, every node's key and
key material, what each target ships, the `best:` choice with the evidence it won on, the digests of
reproducible artifacts and the release number. It holds nothing of the host that wrote it, so CI on
another machine can build `--locked` from it: a measurement node's key takes the measuring CPU and its
thread count capped at that CPU's cores, so measurements are locked by their material without those
facts and without a key; the evidence of a choice names its host but is never compared.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgebuild.errors import Problem, UserError
from edgebuild.trust import lockfile
from edgebuild.trust.lockfile import Lock, Path_

if TYPE_CHECKING:
    from edgebuild.checks.judge import Verdict
    from edgebuild.output.manifest import Manifest

HOST_PARAMS = ("threads",)   # a measurement's threads: the target's, capped at this host's cores
SHIPPED = ("target", "artifact", "release")


def plan_facts(plan: Any) -> dict[Path_, Any]:
    """The facts a plan fixes before anything runs: versions, every node, what each target ships."""
    from edgebuild import __version__
    from edgebuild.engine.plan import tool_version

    r = plan.recipe
    facts: dict[Path_, Any] = {("edgebuild",): __version__, ("recipe", "format"): r.doc.data.get("edgebuild")}
    for d in sorted({d for n in plan.order() if not n.deferred for d in n.step.kind.tools}):
        facts[("tool", d)] = tool_version(d)
    for n in plan.order():
        if not n.step.kind.host_specific and not n.deferred:
            facts[("node", n.id, "key")] = n.key
        facts.update(lockfile.flatten(("node", n.id), node_material(n)))
    for t in sorted(x.name for x in r.targets):
        facts[("target", t, "ship")] = list(r.ship.get(t, []))
        if t in r.best:
            facts[("target", t, "best")] = r.best[t]
    return facts


def node_material(n: Any) -> dict[str, Any]:
    """A node's key material as the lock writes it: inputs by node id (their keys are locked on their own
    lines, so one change upstream is one changed line per node, not a cascade of digests), and without
    what a host-specific node takes from the host. A node this host defers (a TensorRT engine) is locked
    without its key and tool versions: it is built on its device, with the device's tools."""
    m = dict(n.material, upstream=n.upstream)
    if n.deferred:
        m.pop("tools", None)
    if n.refs:
        m["refs"] = dict(sorted(n.refs.items()))
    if n.step.kind.host_specific:
        m.pop("host", None)
        m["params"] = {k: v for k, v in m["params"].items() if k not in HOST_PARAMS}
    return m


def compare(lock: Lock, planned: dict[Path_, Any]) -> list[Problem]:
    """`--locked`: every way the plan differs from the lock, located at the lock's line, with the reasons
    `explain` gives (a dataset changed, a parameter, a tool version)."""
    old = {p: v for p, v in lock.facts.items() if p[0] in ("edgebuild", "recipe", "tool", "node")
           or (p[0] == "target" and p[2:] in (("ship",), ("best",)))}
    problems = [Problem(f"--locked: {_name(p)} {_show(old[p])} -> {_show(planned[p])}", lock.at(p))
                for p in old if p[0] != "node" and p in planned and old[p] != planned[p]]
    # a tool on one side only belongs to a node deferred on the other host: its node's facts say the rest
    problems += [Problem(f"--locked: {_name(p)} is new: {_show(planned[p])}", None) for p in planned
                 if p[0] not in ("node", "tool") and p not in old]
    problems += _node_problems(lock, old, planned)
    return problems


def _node_problems(lock: Lock, old: dict[Path_, Any], new: dict[Path_, Any]) -> list[Problem]:
    from edgebuild.engine.plan import diff

    before, after = _nodes(old), _nodes(new)
    out = []
    for nid in after:
        if nid not in before:
            out.append(Problem(f"--locked: step {nid} is not in the lock (a new step or target)", None))
            continue
        a, b = _comparable(before[nid], after[nid])
        if a == b:
            continue
        reasons = [x for x in diff(a, b) if x != "output missing from the cache"]
        up = after[nid].get("upstream")
        if up and before.get(up, {}).get("key") != after.get(up, {}).get("key"):
            reasons.append(f"its input {up} changed")
        where = lock.at(("node", nid, "key")) if ("node", nid, "key") in lock.lines else lock.at(("node", nid, "kind"))
        out.append(Problem(f"--locked: {nid}: {'; '.join(reasons) or 'its key changed'}", where))
    out += [Problem(f"--locked: step {nid} is in the lock but no longer in the plan", lock.at(("node", nid, "kind")))
            for nid in before if nid not in after]
    return out


def _nodes(facts: dict[Path_, Any]) -> dict[str, dict[str, Any]]:
    return lockfile.unflatten({p[1:]: v for p, v in facts.items() if p[0] == "node"})


def _comparable(a: dict[str, Any], b: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two lock-form materials without their keys; without their tools too when either side has no key
    (a node deferred on one of the two hosts: its tools are those of the host that builds it)."""
    drop = {"key", "tools"} if "key" not in a or "key" not in b else {"key"}
    return {k: v for k, v in a.items() if k not in drop}, {k: v for k, v in b.items() if k not in drop}


def _name(path: Path_) -> str:
    return {("edgebuild",): "edgebuild", ("recipe", "format"): "recipe format"}.get(path, " ".join(
        path[1:] if path[0] == "tool" else path))


def _show(v: Any) -> str:
    import json

    return v if isinstance(v, str) else json.dumps(v)


def summary(old: Lock | None, new: dict[Path_, Any], file: Path) -> str:
    """One line for a rewritten lock: `lock: 3 keys changed (onnxruntime 1.23.2 -> 1.24.0)`."""
    if old is None:
        return f"lock: wrote {file} (release {new[('release',)]})"
    keys = {p for p in set(old.facts) | set(new) if p[0] == "node" and p[-1] == "key"}
    changed = sorted(p[1] for p in keys if old.facts.get(p) != new.get(p))
    causes = [f"{' '.join(p[1:])} {old.facts[p]} -> {new[p]}" for p in new
              if p[0] in ("tool", "edgebuild") and p in old.facts and old.facts[p] != new[p]]
    if not causes and changed:
        causes = [c.message.removeprefix("--locked: ") for c in _node_problems(old, old.facts, new)][:3]
    choices = [f"{p[1]} now ships {new[p]}" for p in new if p[0] == "target" and p[2:] == ("chosen",)
               and old.facts.get(p) != new[p]]
    what = f"{len(changed)} key{'s' if len(changed) != 1 else ''} changed" if changed else f"{file} updated"
    why = "; ".join(causes + choices)
    return f"lock: {what}" + (f" ({why})" if why else "")


class Session:
    """The lock during one `run`: read (and, with --locked, checked) before anything builds; the `best:`
    choices it pins; the release number; rewritten after publishing when a fact changed."""

    def __init__(self, args: Any, plan: Any, cache: Any, out: Path):
        self.off = bool(getattr(args, "lock_off", False))   # `verify --rebuild` builds without the recipe's lock
        self.locked, self.relock = bool(getattr(args, "locked", False)), bool(getattr(args, "relock", False))
        self.file = lockfile.path_for(args.recipe)
        self.lock = None if self.off else lockfile.read(self.file)
        if self.locked and self.lock is None:
            raise UserError(Problem(f"--locked: there is no lock file {self.file}", None,
                                    f"run `edgebuild run {args.recipe}` once to write it, and commit it"))
        if self.lock is not None:
            _not_newer(self.lock)
        self.full = plan if set(plan.selected) == {t.name for t in plan.recipe.targets} else _full(plan, cache)
        self.planned = plan_facts(self.full)
        if self.locked and self.lock is not None:
            problems = compare(self.lock, self.planned)
            if problems:
                problems.append(Problem(f"the plan differs from {self.file}; nothing was built", None,
                                        f"if the change is intended, run `edgebuild run {args.recipe}` to update "
                                        "the lock, review its diff and commit it", "note"))
                raise UserError(problems)
        self.choices = dict(getattr(args, "pinned", None) or {}) or self._locked_choices()
        self.release_arg: int | None = getattr(args, "release", None)
        self.floor = max(self._locked_release(), _published_release(out))
        if self.release_arg is not None and self.release_arg < self.floor:
            raise UserError(Problem(f"--release {self.release_arg} is older than release {self.floor}, the lock's or "
                                    "the last published one: a release number only grows", None,
                                    f"give --release {self.floor} or more"))

    def _locked_choices(self) -> dict[str, str]:
        """Each `best:` target's locked choice, while its candidates and `by` are as locked (a changed
        question is answered again); none with --relock."""
        if self.lock is None or self.relock or self.off:
            return {}
        out = {}
        for p, step in self.lock.facts.items():
            if p[0] == "target" and p[2:] == ("chosen",):
                t = p[1]
                same = all(self.lock.get("target", t, k) == self.planned.get(("target", t, k)) for k in ("ship", "best"))
                if same and step in self.planned.get(("target", t, "ship"), []):
                    out[t] = step
        return out

    def _locked_release(self) -> int:
        v = self.lock.get("release", default=0) if self.lock is not None else 0
        return v if isinstance(v, int) and not isinstance(v, bool) else 0

    def release(self, verdicts: dict[str, Verdict]) -> int:
        """The manifest's release: --release N (never below the last one), else the lock's, one more when
        what a target ships changed (a shipped step's key, a `best:` choice)."""
        if self.release_arg is not None:
            return self.release_arg
        if self.locked or self.off or (self.lock is not None and
                                        _shipping(self.lock.facts) == _shipping(self._facts(verdicts, None))):
            return max(self.floor, 1)
        return self.floor + 1

    def finish(self, manifest: Manifest, verdicts: dict[str, Verdict]) -> None:
        """After publishing: under --locked, warn about artifacts whose bytes differ from the lock's;
        otherwise write the lock when a fact changed, and say so in one line."""
        if self.off:
            return
        new = self._facts(verdicts, manifest)
        if self.locked:
            for p, digest in new.items():
                if p[0] == "artifact" and self.lock is not None and self.lock.facts.get(p) not in (None, digest):
                    print(f"warning: {p[1]} is not byte-identical to the one locked in {self.file} (a step that "
                          "calibrates on this CPU can round differently; `edgebuild verify --rebuild` checks that "
                          "this host reproduces its own build)", file=sys.stderr)
            return
        if self.lock is not None and lockfile.render(new) == lockfile.render(self.lock.facts):
            return
        lockfile.write(self.file, new)
        print(summary(self.lock, new, self.file), file=sys.stderr)

    def _facts(self, verdicts: dict[str, Verdict], manifest: Manifest | None) -> dict[Path_, Any]:
        """Every fact of the lock this build would write, in the lock's order."""
        facts: dict[Path_, Any] = {("lock",): lockfile.FORMAT}
        planned = dict(self.planned)
        facts.update((p, planned.pop(p)) for p in list(planned) if p[0] in ("edgebuild", "recipe"))
        facts[("release",)] = (manifest.release if manifest.release is not None else 1) if manifest is not None else 0
        facts.update((p, v) for p, v in planned.items() if p[0] in ("tool", "node"))
        for t in sorted(x.name for x in self.full.recipe.targets):
            facts.update((p, v) for p, v in planned.items() if p[:2] == ("target", t))
            facts.update(self._choice(t, verdicts))
        if manifest is not None:
            for entry in manifest.targets.values():
                for a in entry.artifacts:
                    if a.is_reproducible:
                        facts[("artifact", a.path)] = a.sha256
        return facts

    def _choice(self, t: str, verdicts: dict[str, Verdict]) -> dict[Path_, Any]:
        """A `best:` target's choice and evidence: kept from the lock while it holds, else this build's."""
        if t not in self.full.recipe.best:
            return {}
        v = verdicts.get(t)
        if self.lock is not None and t in self.choices and self.lock.get("target", t, "chosen") == self.choices[t]:
            return {p: val for p, val in self.lock.facts.items() if p[:2] == ("target", t)
                    and p[2] in ("chosen", "evidence")}
        sel = v.selection if v is not None else None
        if v is None or sel is None or sel.chosen is None:
            return {}
        out: dict[Path_, Any] = {("target", t, "chosen"): sel.chosen}
        measured = v.artifacts.get(sel.chosen)
        if measured is not None and measured.host:
            out[("target", t, "evidence", "host")] = measured.host
        for c in sel.candidates:
            value = c.value
            out[("target", t, "evidence", c.step)] = {
                "passed": c.passed, "unit": c.unit,
                "value": float(f"{value:.4g}") if isinstance(value, float) else value}
        return out


def _shipping(facts: dict[Path_, Any]) -> dict[str, list[tuple[str, Any]]]:
    """What each target ships, by the keys of the nodes that make it: a change here is a new release."""
    from edgebuild.engine.plan import node_id

    out = {}
    for p, steps in facts.items():
        if p[0] == "target" and p[2:] == ("ship",):
            t = p[1]
            chosen = str(facts.get(("target", t, "chosen")))
            shipped: list[str] = [chosen] if ("target", t, "best") in facts else steps
            out[t] = [(s, facts.get(("node", node_id(s, t), "key"), facts.get(("node", s, "key")))) for s in shipped]
    return out


def _full(plan: Any, cache: Any) -> Any:
    """The plan of every target: a `--target` run still locks the whole recipe."""
    from edgebuild.engine import plan as plan_mod

    return plan_mod.build(plan.recipe, cache.stats, None)


def _not_newer(lock: Lock) -> None:
    """A lock written by a newer edgebuild is not rewritten (or trusted) by an older one."""
    from edgebuild import __version__
    from edgebuild.engine.dists import release

    v = lock.get("edgebuild")
    if not isinstance(v, str):
        raise UserError(Problem(f"malformed lock file: `edgebuild` must be a version string, found {_show(v)}",
                                lock.at(("edgebuild",)), lockfile.HINT))
    if release(v) > release(__version__):
        raise UserError(Problem(f"this lock was written by edgebuild {v}, newer than this one ({__version__})",
                                lock.at(("edgebuild",)), f"upgrade edgebuild to {v} or later"))


def _published_release(out: Path) -> int:
    """The release of the manifest already in the output folder: a new build never goes below it."""
    import json

    try:
        v = json.loads((out / "manifest.json").read_text()).get("release", 0)
    except (OSError, ValueError, AttributeError):
        return 0
    return v if isinstance(v, int) and not isinstance(v, bool) else 0
