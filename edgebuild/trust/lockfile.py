"""The lock file's text format: one fact per line, `words... = json`, so a lock diffs well in review.

A fact's path is words separated by single spaces (a word with a space or a quote in it is written as a
JSON string); its value is one JSON value. The last line counts the facts, so a lock cut short at a line
boundary is told from a complete one. Standard library only: `run` reads the lock on every build.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path
from typing import Any

from edgebuild.errors import Location, Problem, UserError

FORMAT = 1
HEADER = ("# edgebuild lock file: written by `edgebuild run`, one fact per line. Commit it and review its diff;\n"
          "# `edgebuild run --locked` fails when the plan differs from it, `--relock` chooses `best:` again.\n")
BARE = re.compile(r"[A-Za-z0-9_.:@/+-]+")
HINT = "a lock is machine-written: delete it and run `edgebuild run RECIPE` to write it again"

Path_ = tuple[str, ...]


def path_for(recipe: Path) -> Path:
    """The lock beside its recipe: recipes/vitals.yaml -> recipes/vitals.lock."""
    return recipe.with_suffix(".lock")


def render(facts: dict[Path_, Any]) -> str:
    """The lock's text, facts in the order given, the count last."""
    lines = [f"{' '.join(map(_word, path))} = {_value(v)}" for path, v in facts.items()]
    return HEADER + "\n".join(lines) + f"\nfacts = {len(lines)}\n"


def write(file: Path, facts: dict[Path_, Any]) -> None:
    """Write atomically: a reader (a concurrent `--locked` run) sees the old lock or the new one."""
    tmp = file.with_name(f".{file.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(render(facts), encoding="utf-8")
    os.replace(tmp, file)


def _word(w: str) -> str:
    return w if BARE.fullmatch(w) else json.dumps(w, ensure_ascii=False)


def _value(v: Any) -> str:
    return json.dumps(v, sort_keys=True, ensure_ascii=False)


class Lock:
    """A parsed lock: its facts in file order and the line of each, for located errors."""

    def __init__(self, file: Path, facts: dict[Path_, Any], lines: dict[Path_, int]):
        self.file, self.facts, self.lines = file, facts, lines

    def at(self, path: Path_) -> Location:
        """Where a fact is written (its line), else the file."""
        return Location(str(self.file), self.lines[path], 1) if path in self.lines else Location(str(self.file))

    def get(self, *path: str, default: Any = None) -> Any:
        return self.facts.get(tuple(path), default)

    def under(self, *prefix: str) -> dict[Path_, Any]:
        """The facts whose path starts with `prefix`, the prefix removed."""
        n = len(prefix)
        return {p[n:]: v for p, v in self.facts.items() if p[:n] == prefix and len(p) > n}


def read(file: Path) -> Lock | None:
    """The lock at `file` (None when there is none); a malformed one is a located error, never a traceback."""
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(Problem(f"cannot read the lock file: {exc}", Location(str(file)), HINT)) from None
    facts: dict[Path_, Any] = {}
    lines: dict[Path_, int] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        path, value = _parse(line, Location(str(file), n, 1))
        if path in facts:
            raise _error(Location(str(file), n, 1), f"`{' '.join(path)}` is written twice (first on line {lines[path]})")
        facts[path], lines[path] = value, n
    _check_ends(file, text, facts, lines)
    return Lock(file, facts, lines)


def _check_ends(file: Path, text: str, facts: dict[Path_, Any], lines: dict[Path_, int]) -> None:
    """The first fact names the format, the last counts the facts: a lock cut short, or another file, fails."""
    first = next(iter(facts), None)
    if first != ("lock",):
        where = Location(str(file), lines[first], 1) if first else Location(str(file), 1, 1)
        raise _error(where, "not an edgebuild lock file: its first fact must be `lock = 1`")
    fmt = facts[("lock",)]
    if not isinstance(fmt, int) or isinstance(fmt, bool):
        raise _error(Location(str(file), lines[first], 8), f"the lock format must be an integer, found {_value(fmt)}")
    if fmt > FORMAT:
        raise UserError(Problem(f"this lock was written by a newer edgebuild (lock format {fmt}); this one reads format "
                                f"{FORMAT}", Location(str(file), lines[first], 8),
                                "upgrade edgebuild to the version that wrote it (see its `edgebuild =` line)"))
    last = list(facts)[-1]
    count = len(facts) - 1
    if last != ("facts",):
        end = len(text.splitlines()) or 1
        raise _error(Location(str(file), end, 1), "the lock ends before its closing `facts = N` line: it was cut short")
    if facts[last] != count:
        raise _error(Location(str(file), lines[last], 9),
                     f"the lock says it holds {_value(facts[last])} facts but holds {count}: lines were removed or added")
    del facts[last]


def _parse(line: str, loc: Location) -> tuple[Path_, Any]:
    """`words... = json` -> (words, value), errors pointing at the column that went wrong."""
    words: list[str] = []
    pos = 0
    while True:
        while pos < len(line) and line[pos] == " ":
            pos += 1
        if pos >= len(line):
            raise _error(_col(loc, pos), "expected `= value` after the fact's name")
        if line[pos] == "=" and words:
            break
        if line[pos] == '"':
            try:
                word, pos = json.JSONDecoder().raw_decode(line, pos)
            except ValueError:
                raise _error(_col(loc, pos), "a quoted word that does not end") from None
        else:
            m = BARE.match(line, pos)
            if m is None:
                raise _error(_col(loc, pos), f"unexpected {line[pos]!r} in a fact's name")
            word, pos = m.group(), m.end()
        words.append(word)
    try:
        value = json.loads(line[pos + 1:])
    except json.JSONDecodeError as exc:   # its column counts from just after the `=`
        raise _error(_col(loc, pos + exc.colno), f"the value is not valid JSON ({exc.msg})") from None
    except ValueError as exc:
        raise _error(_col(loc, pos + 1), f"the value is not valid JSON ({exc})") from None
    return tuple(words), value


def _col(loc: Location, index: int) -> Location:
    return Location(loc.file, loc.line, index + 1)


def _error(loc: Location, message: str) -> UserError:
    return UserError(Problem(f"malformed lock file: {message}", loc, HINT))


def flatten(prefix: Path_, value: Any) -> dict[Path_, Any]:
    """A nested mapping as one fact per leaf (an empty mapping is a leaf), keys sorted."""
    if isinstance(value, dict) and value:
        out: dict[Path_, Any] = {}
        for k in sorted(value, key=str):
            out.update(flatten(prefix + (str(k),), value[k]))
        return out
    return {prefix: value}


def unflatten(facts: dict[Path_, Any]) -> dict[str, Any]:
    """The inverse of flatten (a path that is both a leaf and a prefix keeps the deeper facts)."""
    out: dict[str, Any] = {}
    for path, v in facts.items():
        cur = out
        for k in path[:-1]:
            nxt = cur.get(k)
            if not isinstance(nxt, dict):
                nxt = cur[k] = {}
            cur = nxt
        cur[path[-1]] = v
    return out
