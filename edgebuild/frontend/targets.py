"""Hardware target profiles: find, load, validate, fingerprint, and the runtime limits they imply."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from edgebuild.errors import Location, Problem, UserError
from edgebuild.frontend import loader, validate

TARGETS_DIR = Path(__file__).resolve().parents[1] / "targets"
RUNTIMES_DIR = Path(__file__).resolve().parents[1] / "data" / "runtimes"


@dataclass
class Target:
    """One loaded profile. `fingerprint` hashes its content (not its comments or key order)."""

    name: str
    file: Path
    data: dict[str, Any]

    @property
    def fingerprint(self) -> str:
        canon = json.dumps(self.data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()

    # Fields that never change an artifact: prose, and the budgets `checks:` compare measurements with
    # (checks are evaluated after the build, from cached measurements).
    NOT_IN_KEYS = ("description", "budgets")

    @property
    def key_data(self) -> dict[str, Any]:
        """What a target-specific step's cache key takes from the profile: all of it but NOT_IN_KEYS."""
        return {k: v for k, v in sorted(self.data.items()) if k not in self.NOT_IN_KEYS}

    @property
    def threads(self) -> int:
        return int(self.data["cpu"]["threads"])

    @property
    def formats(self) -> list[str]:
        return list(self.data["formats"])

    def runtime(self, name: str) -> str | None:
        return self.data.get("runtimes", {}).get(name)

    def onnx_limits(self, runtimes: set[str] | None = None) -> tuple[int, int, str]:
        """(max IR version, max opset, the runtime that sets the opset limit) over this target's runtimes
        (only those in `runtimes` when given: the ones that will read the model)."""
        ir, opset, why = 99, 999, "no declared limit"
        for rt, version in sorted(self.data.get("runtimes", {}).items()):
            if runtimes is not None and rt not in runtimes:
                continue
            facts = runtime_facts(rt).get(version)
            if facts is None:
                continue  # reported by validation when the profile is loaded
            ir = min(ir, int(facts.get("max_ir", ir)))
            if int(facts.get("max_opset", opset)) < opset:
                opset, why = int(facts["max_opset"]), f"{rt} {version}"
        return ir, opset, why


@lru_cache(maxsize=None)
def runtime_file(runtime: str) -> dict[str, Any]:
    """The support facts of one runtime, from edgebuild/data/runtimes/<runtime>.yaml ({} if unknown)."""
    path = RUNTIMES_DIR / f"{runtime}.yaml"
    return dict(loader.load(path).data) if path.exists() else {}


def runtime_facts(runtime: str) -> dict[str, dict[str, Any]]:
    """Limits per version ("MAJOR.MINOR" -> {max_ir, max_opset, ...}) of one runtime."""
    return {str(k): v for k, v in runtime_file(runtime).get("versions", {}).items()}


def available() -> list[str]:
    """Names of the profiles shipped with edgebuild."""
    return sorted(p.stem for p in TARGETS_DIR.glob("*.yaml"))


def is_path(ref: str) -> bool:
    return "/" in ref or ref.endswith((".yaml", ".yml"))


def resolve(ref: str, base: Path) -> Path:
    """The profile file a recipe's `targets:` entry names: a shipped name or a path relative to the recipe."""
    return (base / ref).resolve() if is_path(ref) else TARGETS_DIR / f"{ref}.yaml"


def load(ref: str, base: Path, where: Location | None = None) -> Target:
    """Load and validate one profile; unknown names and bad profiles are located UserErrors."""
    path = resolve(ref, base)
    if path.is_dir():
        raise UserError(Problem(f"target profile {ref} is a folder, not a file", where,
                                f"name a profile file in it (e.g. {ref.rstrip('/')}/my-board.yaml), or a shipped "
                                f"target: {', '.join(available())}"))
    if not path.exists():
        if is_path(ref):
            raise UserError(Problem(f"target profile file not found: {ref}", where,
                                    f"looked for {path}; paths are relative to the recipe"))
        close = validate.did_you_mean(ref, available())
        hint = f"{close} Or give a path to your own profile file" if close else \
            f"known targets: {', '.join(available())}; or give a path to your own profile file"
        raise UserError(Problem(f"unknown target '{ref}'", where, hint))
    shown = os.path.normpath(os.path.join(os.path.dirname(where.file), ref)) if (is_path(ref) and where) else str(path)
    doc = loader.load(path, display=shown if is_path(ref) else f"targets/{ref}.yaml")
    problems = validate.check(doc, validate.schema("target")) if isinstance(doc.data, dict) else [
        Problem("a target profile must be a mapping", doc.at(()))]
    if not problems:
        problems = _check_runtimes(doc) + _check_cpu(doc)
    if problems:
        raise UserError(problems)
    return Target(doc.data["name"], path, doc.data)


def _check_runtimes(doc: loader.Document) -> list[Problem]:
    out = []
    for rt, version in doc.data.get("runtimes", {}).items():
        known = runtime_facts(rt)
        if known and version not in known:
            out.append(Problem(f"edgebuild has no support facts for {rt} {version}", doc.at(("runtimes", rt)),
                               f"known versions: {', '.join(sorted(known, key=_vkey))}"))
    return out


def _check_cpu(doc: loader.Document) -> list[Problem]:
    cpu = doc.data["cpu"]
    if int(cpu["threads"]) > int(cpu["cores"]):
        return [Problem(f"cpu.threads is {cpu['threads']}, more than the {cpu['cores']} cores the profile declares",
                        doc.at(("cpu", "threads")), f"use at most cpu.cores ({cpu['cores']}) inference threads")]
    return []


def _vkey(v: str) -> tuple[int, ...]:
    from edgebuild.engine import dists

    return dists.release(v)
