"""Stage 2: check loaded YAML against a JSON Schema; every error located, all reported at once."""

from __future__ import annotations

import difflib
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from edgebuild.errors import Problem, in_order
from edgebuild.frontend.loader import Document

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"


@lru_cache(maxsize=None)
def schema(name: str) -> dict[str, Any]:
    """A JSON Schema shipped in schemas/ by file stem ("recipe", "target", "manifest")."""
    return json.loads((SCHEMAS / f"{name}.schema.json").read_text())


def dotted(path: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in path) if path else "the top level"


def did_you_mean(word: str, options: list[str]) -> str | None:
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


def check(doc: Document, schema_: dict[str, Any], prefix: tuple[Any, ...] = (), instance: Any = None) -> list[Problem]:
    """Validate `instance` (default: the whole document) found at `prefix`; return located problems."""
    from jsonschema import Draft202012Validator  # 65 ms to import: only when a recipe is (re)validated

    value = doc.data if instance is None else instance
    validator = Draft202012Validator(schema_)
    problems: list[Problem] = []
    for err in validator.iter_errors(value):
        problems.extend(_problems(doc, err, prefix))
    return _dedupe(in_order(problems))


def _dedupe(problems: list[Problem]) -> list[Problem]:
    seen: set[tuple[str, str]] = set()
    out = []
    for p in problems:
        k = (str(p.loc), p.message)
        if k not in seen:
            seen.add(k)
            out.append(p)
    return out


def _problems(doc: Document, err: Any, prefix: tuple[Any, ...]) -> list[Problem]:
    path = prefix + tuple(err.absolute_path)
    where = dotted(path)
    kind = err.validator
    if kind == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        extra = [k for k in err.instance if k not in allowed]
        out = []
        for key in extra:
            hint = did_you_mean(key, allowed) or (f"allowed keys here: {', '.join(allowed)}" if allowed else None)
            out.append(Problem(f"unknown key '{key}' in {where}", doc.at(path + (key,), key=True), hint))
        return out
    if kind == "required":
        missing = err.message.split("'")[1] if "'" in err.message else err.message
        props = err.schema.get("properties", {})
        if err.schema.get("additionalProperties") is False and isinstance(err.instance, dict) and any(
                did_you_mean(k, [missing]) for k in err.instance if k not in props):
            return []  # a misspelling of it is reported as an unknown key, with "did you mean"
        desc = props.get(missing, {}).get("description")
        return [Problem(f"missing required key '{missing}' in {where}", doc.at(path, key=True), desc)]
    if kind == "oneOf" and path[-1:] == ("model",) and isinstance(err.instance, dict):
        given = [k for k in ("onnx", "pytorch") if k in err.instance]
        if len(given) == 2:
            return [Problem("the model names both `onnx` and `pytorch`; it must name exactly one source",
                            doc.at(path + ("pytorch",), key=True), "keep either `onnx:` or `pytorch:`")]
        return [Problem("the model names no source: it needs `onnx` or `pytorch`", doc.at(path, key=True),
                        "add `onnx: path/to/model.onnx` or `pytorch: {factory: file.py:build}`")]
    if "propertyNames" in err.relative_schema_path:  # jsonschema reports the name's own error, at the mapping
        if err.validator == "maxLength":
            return [Problem(f"name '{_clip(str(err.instance))}' in {where} is {len(str(err.instance))} characters long, "
                            f"more than {err.validator_value}", doc.at(path + (err.instance,), key=True),
                            "a step id becomes part of file names: keep it short")]
        what = _pattern_text(err.schema["pattern"]) if err.validator == "pattern" else err.message
        return [Problem(f"invalid name '{err.instance}' in {where}: {what}",
                        doc.at(path + (err.instance,), key=True), _suggest(str(err.instance), err.schema.get("pattern")))]
    if kind in ("anyOf", "oneOf") and err.context:
        fitting = [c for c in err.context if c.validator != "type" or c.relative_path]
        if fitting:  # a branch of the instance's type: say what is wrong inside it
            branch = fitting[0].relative_schema_path[0]
            out = [p for c in fitting if c.relative_schema_path[0] == branch for p in _problems(doc, c, prefix)]
            for p in out:
                p.hint = p.hint or _hint(err)
            return out
        types = [t for c in err.context for t in ([c.validator_value] if isinstance(c.validator_value, str) else c.validator_value)]
        return [Problem(f"{where} must be {_article(list(dict.fromkeys(types)))}, found {found(err.instance)}",
                        doc.at(path), _hint(err))]
    return [Problem(_describe(err, where), doc.at(path), _hint(err))]


# Patterns of the shipped schemas, in words; others are shown as the regular expression.
PATTERNS = {
    "^[a-z0-9][a-z0-9._-]*$": "lower-case letters, digits, '.', '_' and '-', starting with a letter or digit",
    "^[A-Za-z_][A-Za-z0-9_-]*$": "letters, digits, '_' and '-', starting with a letter or '_'",
    "^[A-Za-z_][A-Za-z0-9_]*$": "letters, digits and '_', starting with a letter or '_'",
    "^[^:]+:[A-Za-z_][A-Za-z0-9_.]*$": "\"file.py:callable\" or \"package.module:callable\"",
}


def _pattern_text(pattern: str | None) -> str:
    return f"expected {PATTERNS[pattern]}" if pattern in PATTERNS else f"expected to match {pattern}"


def _suggest(value: str, pattern: str | None) -> str | None:
    """A fix for a value that breaks a name pattern, when a simple rewrite of it matches."""
    if not pattern:
        return None
    for cand in (value.strip().replace(" ", "-"), value.strip().lower().replace(" ", "-")):
        if cand != value and re.search(pattern, cand):
            return f"did you mean '{cand}'?"
    return None


def _short(err: Any) -> str:
    ctx = getattr(err, "context", None) or []
    return ctx[0].message if ctx else err.message


def found(value: Any) -> str:
    """A found value as messages show it: its YAML kind, and the value itself when it is a scalar."""
    kind = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "mapping",
            type(None): "null"}.get(type(value), type(value).__name__)
    shown = json.dumps(value) if not isinstance(value, (dict, list)) else kind
    return f"{kind} {shown}" if shown != kind else kind


def _describe(err: Any, where: str) -> str:
    kind, s, v = err.validator, err.schema, err.instance
    if kind == "type":
        return f"{where} must be {_article(s['type'])}, found {found(v)}"
    if kind == "enum":
        return f"{where} must be one of {', '.join(json.dumps(e) for e in s['enum'])}, found {found(v)}"
    if kind == "const":
        return f"{where} must be {json.dumps(s['const'])}, found {found(v)}"
    if kind == "pattern":
        return f"{where}: {json.dumps(v)} is not a valid value ({_pattern_text(s['pattern'])})"
    if kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        sym = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}[kind]
        return f"{where} must be {sym} {s[kind]}, found {json.dumps(v)}"
    if kind in ("minItems", "minProperties"):
        return f"{where} must not be empty"
    if kind == "uniqueItems":
        return f"{where} lists the same item twice"
    if kind == "minLength":
        return f"{where} must not be empty"
    if kind == "maxLength":
        return f"{where} is {len(v)} characters long, more than {s['maxLength']}: '{_clip(v)}'"
    if kind in ("anyOf", "oneOf"):
        return f"{where}: {found(v)} is not valid here ({_short(err)})"
    return f"{where}: {err.message}"


def _clip(text: str, n: int = 24) -> str:
    return text if len(text) <= n else text[:n] + "..."


def _hint(err: Any) -> str | None:
    if err.validator == "maxLength":
        return "it becomes part of file and folder names: keep it short"
    if err.validator == "enum" and isinstance(err.instance, str):
        return did_you_mean(err.instance, [str(e) for e in err.schema["enum"]])
    if err.validator == "pattern" and isinstance(err.instance, str):
        return _suggest(err.instance, err.schema.get("pattern")) or err.schema.get("description")
    return err.schema.get("description")


def _article(t: Any) -> str:
    if isinstance(t, list):
        return " or ".join(_article(x) for x in t)
    names = {"object": "a mapping", "array": "a list", "string": "a string", "integer": "an integer",
             "number": "a number", "boolean": "true or false", "null": "null"}
    return names.get(t, t)
