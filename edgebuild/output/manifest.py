"""The manifest as data: what `publish` writes to dist/<name>/manifest.json, and what `run`'s table, `report` and
`verify` read back through `load`, which checks it against schemas/manifest.schema.json first.

`to_dict()` gives the keys in the order edgebuild has always written them, so the same build writes the same
bytes; keys a reader does not know (an entry written by another edgebuild) are kept in `extra` and written back.
The open parts (a step's facts, an artifact's `checks`, a target's `selection`) stay plain JSON values.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMAT = 1
FILE = "manifest.json"


def _extra(d: dict[str, Any], known: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in known}


@dataclass
class Artifact:
    """One published file (or folder) of a target, and the chain of nodes that made it."""

    step: str
    path: str                          # relative to the manifest's folder: <target>/<name>
    format: str                        # onnx | tensorrt-engine | web-bundle
    precision: str
    sha256: str                        # of the file; of the file digests for a folder
    size: int
    chain: list[str]                   # node ids from the model to this artifact
    files: dict[str, str] | None = None         # a folder: each file's path inside it -> sha256
    reproducible: bool | None = None            # False: a rebuild gives other bytes (written only then)
    checks: dict[str, Any] | None = None        # measurements and check results (judge.Measured.as_dict)
    extra: dict[str, Any] = field(default_factory=dict)

    KEYS = ("step", "path", "format", "precision", "sha256", "size", "chain", "files", "reproducible", "checks")

    @property
    def is_reproducible(self) -> bool:
        return self.reproducible is not False

    @property
    def passed(self) -> bool | None:
        """Whether its checks passed; None when it has none."""
        p = (self.checks or {}).get("passed")
        return p if isinstance(p, bool) else None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"step": self.step, "path": self.path, "format": self.format, "precision": self.precision,
                             "sha256": self.sha256, "size": self.size, "chain": self.chain}
        if self.files is not None:
            d["files"] = self.files
        if self.reproducible is not None:
            d["reproducible"] = self.reproducible
        if self.checks is not None:
            d["checks"] = self.checks
        return {**d, **self.extra}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Artifact:
        return cls(d["step"], d["path"], d["format"], d["precision"], d["sha256"], d["size"], list(d["chain"]),
                   d.get("files"), d.get("reproducible"), d.get("checks"), _extra(d, cls.KEYS))


@dataclass
class Deferred:
    """A shipped artifact this host could not build, and the command that builds it on one that can."""

    step: str
    format: str
    chain: list[str]
    reason: str
    command: str

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "format": self.format, "chain": self.chain, "reason": self.reason,
                "command": self.command}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Deferred:
        return cls(d["step"], d["format"], list(d["chain"]), d["reason"], d["command"])


@dataclass
class Target:
    """What one target got: its profile's fingerprint, its artifacts, and the `best:` selection when it has one."""

    profile: str                       # the profile's name
    profile_sha256: str
    artifacts: list[Artifact]
    deferred: list[Deferred] = field(default_factory=list)
    recipe_sha256: str | None = None   # the recipe it was built from (a `--target` run keeps the other targets)
    selection: dict[str, Any] | None = None     # judge.Selection.as_dict, with each candidate's checks
    extra: dict[str, Any] = field(default_factory=dict)

    KEYS = ("profile", "artifacts", "deferred", "recipe_sha256", "selection")

    @property
    def chosen(self) -> str | None:
        """The step a `best:` selection chose, if any."""
        c = (self.selection or {}).get("chosen")
        return str(c) if c is not None else None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"profile": {"name": self.profile, "sha256": self.profile_sha256},
                             "artifacts": [a.to_dict() for a in self.artifacts]}
        if self.deferred:
            d["deferred"] = [x.to_dict() for x in self.deferred]
        if self.recipe_sha256 is not None:
            d["recipe_sha256"] = self.recipe_sha256
        if self.selection is not None:
            d["selection"] = self.selection
        return {**d, **self.extra}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Target:
        return cls(d["profile"]["name"], d["profile"]["sha256"], [Artifact.from_dict(a) for a in d["artifacts"]],
                   [Deferred.from_dict(x) for x in d.get("deferred", [])], d.get("recipe_sha256"), d.get("selection"),
                   _extra(d, cls.KEYS))


@dataclass
class Step:
    """How one node whose output a published artifact depends on was made."""

    step: str
    use: str
    upstream: str | None               # "from": the input node; None for the recipe's model
    target: str | None
    key: str
    params: dict[str, Any]
    onnx_limits: dict[str, Any] | None
    facts: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)

    KEYS = ("step", "use", "from", "target", "key", "params", "onnx_limits", "facts")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"step": self.step, "use": self.use, "from": self.upstream, "target": self.target,
                             "key": self.key, "params": self.params}
        if self.onnx_limits is not None:
            d["onnx_limits"] = self.onnx_limits
        d["facts"] = self.facts
        return {**d, **self.extra}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Step:
        return cls(d["step"], d["use"], d["from"], d["target"], d["key"], d["params"], d.get("onnx_limits"), d["facts"],
                   _extra(d, cls.KEYS))


@dataclass
class Manifest:
    """What a build published: deterministic (no timestamps, no absolute paths), so the same build writes the
    same bytes."""

    name: str
    recipe_file: str
    recipe_sha256: str
    edgebuild: str
    tools: dict[str, str]              # distribution -> version
    sources: dict[str, dict[str, str]]           # role -> {"path" (relative to the recipe), "sha256"}
    targets: dict[str, Target] = field(default_factory=dict)
    steps: dict[str, Step] = field(default_factory=dict)
    release: int | None = None         # only grows; `verify --min-release N` refuses an older build

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"manifest": FORMAT, "name": self.name,
                             "recipe": {"file": self.recipe_file, "sha256": self.recipe_sha256},
                             "edgebuild": self.edgebuild, "tools": self.tools, "sources": self.sources}
        if self.release is not None:
            d["release"] = self.release
        d["targets"] = {t: v.to_dict() for t, v in self.targets.items()}
        d["steps"] = {n: s.to_dict() for n, s in self.steps.items()}
        return d

    def text(self) -> str:
        """The file's content."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        """A manifest from JSON that `problems` found nothing wrong with."""
        return cls(d["name"], d["recipe"]["file"], d["recipe"]["sha256"], d["edgebuild"], dict(d["tools"]),
                   dict(d["sources"]), {t: Target.from_dict(v) for t, v in d["targets"].items()},
                   {n: Step.from_dict(s) for n, s in d["steps"].items()}, d.get("release"))


def problems(data: Any) -> list[str]:
    """What makes `data` no manifest of this format, each as 'at FIELD: what is wrong' (empty: it is one)."""
    # jsonschema is imported only where a manifest is read back
    from jsonschema import Draft202012Validator

    from edgebuild.frontend.validate import schema

    validator = Draft202012Validator(schema("manifest"))
    errors = sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
    return [f"at {_field(tuple(e.absolute_path))}: {e.message}" for e in errors]


def _field(path: tuple[Any, ...]) -> str:
    """targets.x86-64.artifacts[0].size"""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "the top level"


def load(path: Path) -> Manifest:
    """The manifest at `path` (or in that folder), checked against its schema; every way it can be unusable
    is a UserError that names the file and, for a manifest that is not valid, the field."""
    from edgebuild.errors import Location, Problem, UserError

    if path.is_dir():
        path = path / FILE
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(Problem(f"{path}: no such manifest", None,
                                "build first with `edgebuild run RECIPE`; it writes dist/<name>/manifest.json")) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(Problem(f"{path}: cannot read the manifest: {exc}")) from None
    try:
        data = json.loads(raw)
    except ValueError as exc:
        line, col = getattr(exc, "lineno", 0), getattr(exc, "colno", 0)
        raise UserError(Problem(f"not valid JSON: {getattr(exc, 'msg', exc)}", Location(str(path), line, col),
                                "it was changed or cut short since `edgebuild run` wrote it; publish it again")) from None
    if not isinstance(data, dict) or "manifest" not in data or not isinstance(data.get("targets"), dict):
        raise UserError(Problem(f"{path}: not an edgebuild manifest (no 'manifest' format number or no 'targets')",
                                None, "pass the manifest.json that `edgebuild run` wrote in dist/<name>/"))
    wrong = problems(data)
    if wrong:
        shown = "; ".join(wrong[:3]) + (f"; and {len(wrong) - 3} more" if len(wrong) > 3 else "")
        raise UserError(Problem(f"{path}: not a valid edgebuild manifest (format {FORMAT}): {shown}", None,
                                "it was edited or written by another edgebuild: publish it again with `edgebuild run`"))
    return Manifest.from_dict(data)


def read_previous(path: Path) -> Manifest | None:
    """The manifest a build replaces, or None when there is none or it is not valid (then nothing is kept)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return Manifest.from_dict(data) if isinstance(data, dict) and not problems(data) else None
