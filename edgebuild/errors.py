"""Error types and their GCC-style rendering: user errors (exit 1) carry a recipe location."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Location:
    """A point in a source file; line and col are 1-based, 0 means unknown."""

    file: str
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        if self.line:
            return f"{self.file}:{self.line}:{self.col}"
        return self.file


@dataclass
class Problem:
    """One thing wrong with the user's input: where, what, and how to fix it."""

    message: str
    loc: Location | None = None
    hint: str | None = None
    severity: str = "error"

    def render(self, color: bool = False) -> str:
        where = f"{self.loc}: " if self.loc else ""
        lines = [f"{where}{self.severity}: {self.message}"]
        lines += _source_excerpt(self.loc)
        if self.hint:   # a hint's later lines (a YAML snippet to paste) line up under its first
            first, *rest = self.hint.split("\n")
            lines.append(f"  hint: {first}")
            lines += [f"        {line}" for line in rest]
        return "\n".join(lines)


def in_order(problems: list[Problem]) -> list[Problem]:
    """Problems in the order a reader fixes them: by file, then line, then column.

    Files keep the order in which their first problem was found (the recipe before a target profile it
    names, `edgebuild validate a.yaml b.yaml` in the order given). Within a file, a problem without a line
    (one about the file as a whole) follows the located ones; problems without any location (a command-line
    flag, the closing note of a failed build) come last. The sort is stable: problems at the same place, and
    the unlocated ones, keep the order in which they were found.
    """
    files: dict[str, int] = {}
    for p in problems:
        if p.loc is not None:
            files.setdefault(p.loc.file, len(files))

    def key(p: Problem) -> tuple[int, bool, int, int]:
        if p.loc is None:
            return len(files), False, 0, 0
        return files[p.loc.file], p.loc.line <= 0, p.loc.line, p.loc.col

    return sorted(problems, key=key)


def strip_ansi(text: str) -> str:
    """`text` without terminal colour codes (ONNX Runtime and torch put them in their messages)."""
    import re

    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)


def _source_excerpt(loc: Location | None) -> list[str]:
    """The offending line with a caret under the column, when the file can be read."""
    if loc is None or loc.line <= 0:
        return []
    try:
        text = Path(loc.file).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    if loc.line > len(text):
        return []
    # control characters are shown escaped: printed raw, an ESC recolours the terminal and a BEL beeps
    src = "".join(c if c == "\t" or c.isprintable() else f"\\x{ord(c):02x}" for c in text[loc.line - 1])
    gutter = f"{loc.line:>5} | "
    caret = " " * (len(gutter) - 2) + "| " + " " * max(loc.col - 1, 0) + "^"
    return [gutter + src, caret]


class EdgebuildError(Exception):
    """Base of every error edgebuild reports without a traceback (exit 1)."""

    def __init__(self, problems: list[Problem] | Problem | str, hint: str | None = None):
        if isinstance(problems, str):
            problems = [Problem(problems, hint=hint)]
        elif isinstance(problems, Problem):
            problems = [problems]
        # every command prints its problems through here (validate, plan, run): in line order, whatever
        # order the checks found them in
        self.problems: list[Problem] = in_order(problems)
        super().__init__(self.problems[0].message if self.problems else "error")

    def render(self) -> str:
        return "\n".join(p.render() for p in self.problems)


class UserError(EdgebuildError):
    """Bad input: a recipe, a target profile, a dataset, a command-line flag."""


@dataclass
class StepFailure:
    """What a failed step reports back: the node, its message, its log, and where to look."""

    node: str
    message: str
    log: str = ""
    loc: Location | None = None
    hint: str | None = None
    extra: list[Problem] = field(default_factory=list)


class BuildFailed(EdgebuildError):
    """One or more steps or checks failed; their problems are already located."""


def error_at(loc: Location | None, message: str, hint: str | None = None) -> UserError:
    """Shorthand for a single located user error."""
    return UserError(Problem(message, loc, hint))


class StepBug(Exception):
    """A step's worker died of an exception raised by edgebuild's own code: a bug, reported with the
    worker's traceback and exit code 2, never as a step failure the user should fix."""

    def __init__(self, node: str, trace: str):
        super().__init__(f"step '{node}' hit a bug in edgebuild")
        self.node = node
        self.trace = trace
