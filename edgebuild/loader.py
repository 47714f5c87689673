"""Stage 1: read a YAML file into plain data plus a location for every key and value."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from edgebuild.errors import Location, Problem, UserError

try:  # the C loader composes several times faster; fall back where libyaml is missing
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

Path_ = tuple[Any, ...]


@dataclass
class Document:
    """A loaded YAML file: its data and where each key (and its value) was written."""

    file: str
    data: Any
    keys: dict[Path_, Location]
    values: dict[Path_, Location]

    def at(self, path: Path_, key: bool = False) -> Location:
        """The location of the value at `path` (or of its key), falling back to the nearest parent."""
        table = self.keys if key else self.values
        p = tuple(path)
        while p:
            if p in table:
                return table[p]
            if p in self.values:
                return self.values[p]
            p = p[:-1]
        return self.values.get((), Location(self.file, 1, 1))


def load(path: str | Path, display: str | None = None) -> Document:
    """Parse `path`; a syntax error or a duplicate key is a located UserError."""
    name = display or str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(Problem(f"file not found: {name}", hint="check the path; it is relative to where you run edgebuild"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(Problem(f"cannot read {name}: {exc}", hint="save it as a UTF-8 text file"
                                if isinstance(exc, UnicodeDecodeError) else None))
    return loads(text, name)


def loads(text: str, name: str) -> Document:
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        raise UserError(_syntax_problem(exc, text, name)) from None
    doc = Document(name, None, {}, {})
    if node is None:
        doc.values[()] = Location(name, 1, 1)
        return doc
    doc.data = _convert(node, (), doc)
    return doc


def _syntax_problem(exc: yaml.MarkedYAMLError, text: str, name: str) -> Problem:
    """A YAML syntax error where the parser noticed it, naming where the construct it was in began."""
    mark = exc.problem_mark or exc.context_mark
    loc = Location(name, mark.line + 1, mark.column + 1) if mark else Location(name)
    lines = text.splitlines()
    char = ""
    if mark and mark.line < len(lines) and mark.column < len(lines[mark.line]):
        char = lines[mark.line][mark.column]
    if char == "\t":
        return Problem("YAML syntax error: a tab character where YAML expects indentation or a token", loc,
                       "YAML indents with spaces only: replace the tab with spaces")
    what = exc.problem or "invalid YAML"
    hint = "check indentation, colons and quotes on this line and the one above"
    if what == "found character that cannot start any token" and char:
        what = f"found character {char!r} that cannot start any token"
        hint = f"quote a value that starts with {char!r}: write it in single or double quotes"
    ctx = exc.context_mark
    if exc.context and ctx and mark and (ctx.line, ctx.column) != (mark.line, mark.column):
        what += f" ({exc.context} that starts at line {ctx.line + 1}, column {ctx.column + 1})"
        if ctx.line != mark.line:
            hint = f"check lines {ctx.line + 1} to {mark.line + 1}: indentation, colons, quotes and closing brackets"
    return Problem(f"YAML syntax error: {what}", loc, hint)


def _loc(doc: Document, node: yaml.Node) -> Location:
    return Location(doc.file, node.start_mark.line + 1, node.start_mark.column + 1)


def _convert(node: yaml.Node, path: Path_, doc: Document) -> Any:
    doc.values[path] = _loc(doc, node)
    if isinstance(node, yaml.MappingNode):
        return _mapping(node, path, doc)
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, path + (i,), doc) for i, item in enumerate(node.value)]
    return _scalar(node, doc)


def _mapping(node: yaml.MappingNode, path: Path_, doc: Document) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            raise UserError(Problem("a mapping key must be a plain value", _loc(doc, key_node)))
        if key_node.tag == "tag:yaml.org,2002:merge":  # checked first: the scalar constructor rejects it unclearly
            raise UserError(Problem("YAML merge keys (<<) are not supported in recipes", _loc(doc, key_node),
                                    "write the keys out; recipes are read by people and diffed"))
        key = _scalar(key_node, doc)
        if key in out:
            first = doc.keys[path + (key,)]
            raise UserError(Problem(f"duplicate key '{key}'", _loc(doc, key_node),
                                    f"'{key}' is already set at line {first.line}; keep one of them"))
        doc.keys[path + (key,)] = _loc(doc, key_node)
        out[key] = _convert(value_node, path + (key,), doc)
    return out


def _scalar(node: yaml.Node, doc: Document) -> Any:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    except yaml.constructor.ConstructorError as exc:
        raise UserError(Problem(f"invalid value: {exc.problem}", _loc(doc, node),
                                "recipes take plain YAML values: remove the `!tag` before it, or quote the value"))
    finally:
        loader.dispose()
