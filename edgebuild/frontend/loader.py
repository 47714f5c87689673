"""Stage 1: read a YAML file into plain data plus a location for every key and value."""

from __future__ import annotations

import re
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
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise UserError(Problem(f"file not found: {name}", hint="check the path; it is relative to where you run edgebuild"))
    except IsADirectoryError:
        raise UserError(Problem(f"cannot read {name}: it is a directory, not a file", None,
                                "give the path of a YAML file, e.g. a recipe.yaml in that folder")) from None
    except OSError as exc:
        raise UserError(Problem(f"cannot read {name}: {exc.strerror or exc}", None,
                                "check that the file exists and that you may read it")) from None
    return loads(_decode(data, name), name)


def _decode(data: bytes, name: str) -> str:
    """UTF-8 bytes as text with the line ends Python's text mode gives; anything else a located error."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise UserError(Problem("the file is UTF-16 text; edgebuild reads YAML files in UTF-8", Location(name, 1, 1),
                                "save the file as UTF-8 (the editor's encoding setting, or `iconv -f utf-16 -t utf-8`)"))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[:exc.start].decode("utf-8")   # exc.start is the first byte that is not UTF-8
        line, col = _line_col(before, len(before))
        bad = data[exc.start:exc.start + 1].hex()
        raise UserError(Problem(f"the file is not UTF-8 text: byte 0x{bad} is not valid UTF-8 here ({exc.reason})",
                                Location(name, line, col),
                                "save the file as UTF-8 (the editor's encoding setting; `iconv -f latin1 -t utf-8` "
                                "converts a Latin-1 file)")) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


# Line breaks as YAML counts them (CR LF is one); a byte-order mark takes no column.
_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")
# What the YAML reader refuses: control characters but tab and line breaks, surrogates, U+FFFE and U+FFFF.
_NON_PRINTABLE = re.compile("[^\x09\x0A\x0D\x20-\x7E\x85\xA0-\uD7FF\uE000-\uFFFD\U00010000-\U0010ffff]")
_CONTROL_NAMES = {0x00: "NUL", 0x07: "BEL", 0x08: "BS", 0x0B: "VT", 0x0C: "FF", 0x1B: "ESC", 0x7F: "DEL"}


def _line_col(text: str, pos: int) -> tuple[int, int]:
    """1-based line and column of character `pos` of `text`."""
    line, start = 1, 0
    for m in _BREAK.finditer(text, 0, pos):
        line, start = line + 1, m.end()
    col = pos - start + 1
    if line == 1 and text.startswith("\ufeff") and pos > 0:
        col -= 1
    return line, col


def _reader_problem(exc: yaml.reader.ReaderError, text: str, name: str) -> Problem:
    """A character YAML does not allow, where it is (libyaml reports a byte offset, found again here)."""
    m = _NON_PRINTABLE.search(text)
    pos = m.start() if m else len(text.encode("utf-8")[:exc.position].decode("utf-8", "ignore"))
    char = ord(text[pos]) if m else exc.character
    code = f"U+{char:04X}" + (f" ({_CONTROL_NAMES[char]})" if char in _CONTROL_NAMES else "")
    shown = f"^{chr(char + 64)}" if char < 0x20 else ("^?" if char == 0x7F else None)
    hint = "delete it: most editors do not show it" + (f" (`cat -v` shows it as {shown})" if shown else "")
    hint += "; YAML allows no control characters but tab and line breaks"
    return Problem(f"character {code} is not allowed in a YAML file", Location(name, *_line_col(text, pos)), hint)


def loads(text: str, name: str) -> Document:
    try:
        node = yaml.compose(text, Loader=_Loader)
        if node is not None and "*" in text:
            _check_aliases(text, name)
    except yaml.MarkedYAMLError as exc:
        raise UserError(_syntax_problem(exc, text, name)) from None
    except yaml.reader.ReaderError as exc:
        raise UserError(_reader_problem(exc, text, name)) from None
    doc = Document(name, None, {}, {})
    if node is None:
        doc.values[()] = Location(name, 1, 1)
        return doc
    doc.data = _convert(node, (), doc)
    return doc


# The most values (mappings, lists, keys and scalars) a file may expand to once its aliases are copied in:
# far above any recipe, far below what a "billion laughs" of nested aliases makes.
MAX_VALUES = 100_000


def _check_aliases(text: str, name: str) -> None:
    """Count the values the file expands to, a `*alias` counting the whole value its `&anchor` marks, and
    refuse the alias that takes the count past MAX_VALUES, or one inside the value it names (a cycle);
    from the parser's events, before anything walks the expanded data."""
    sizes: dict[str, int] = {}                 # anchor -> values its value expands to, once closed
    open_: list[tuple[str | None, int]] = []    # collections being read: their anchor, the count at their start
    total = 0
    for ev in yaml.parse(text, Loader=_Loader):
        if isinstance(ev, yaml.AliasEvent):
            loc = Location(name, ev.start_mark.line + 1, ev.start_mark.column + 1)
            if ev.anchor not in sizes:
                raise UserError(Problem(f"the alias *{ev.anchor} is inside the value &{ev.anchor} marks, so it "
                                        "would contain itself", loc, f"write the value out here, or move &{ev.anchor} "
                                        "to a value that does not contain this alias"))
            total += sizes[ev.anchor]
            if total > MAX_VALUES:
                raise UserError(Problem(f"the alias *{ev.anchor} takes the file past {MAX_VALUES:,} values "
                                        "once aliases are copied in", loc,
                                        "each alias copies the whole value of its anchor, so aliases of values that "
                                        "hold aliases multiply; use them for shared step parameters, not nested copies"))
        elif isinstance(ev, yaml.ScalarEvent):
            total += 1
            if ev.anchor is not None:
                sizes[ev.anchor] = 1
        elif isinstance(ev, yaml.CollectionStartEvent):
            total += 1
            if ev.anchor is not None:
                sizes.pop(ev.anchor, None)
            open_.append((ev.anchor, total))
        elif isinstance(ev, yaml.CollectionEndEvent):
            anchor, start = open_.pop()
            if anchor is not None:
                sizes[anchor] = total - start + 1


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
