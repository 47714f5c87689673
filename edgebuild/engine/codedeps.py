"""The modules of a package that a module runs: its import closure, read with `ast`.

A step's cache key covers the code its kind runs. That is the kind's module and every module of the
package it imports, directly or through others, at module level or inside a function (steps import
lazily, in `run()`), plus the packages' `__init__.py` that importing them runs. Every `import`
statement counts (one under `if TYPE_CHECKING:` too), `importlib` calls do not; modules outside the
package (numpy, onnx) enter the key through the kind's `tools` instead.

Parsing is the slow part (about 0.1 s for the modules vitals' steps use, on a 2-core VM), so each file's
imports are kept by its content digest: in memory for the process, and in `imports.json` beside the stat
cache, so a plan parses only files whose content it has not seen before.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path

from edgebuild.engine.digest import StatCache

Ref = tuple[int, str, tuple[str, ...]]   # one import statement: (relative level, module, names imported from it)

_refs: dict[str, list[Ref]] = {}         # file content sha256 -> its import statements, for this process
_stored: dict[Path, set[str]] = {}       # memo file -> the digests it holds (as read, written or tried here)


def closure(module: Path, root: Path, stats: StatCache) -> dict[Path, str]:
    """`module` and every module of the package folder `root` (named like its package) that importing
    it and calling its functions can run, each with its content digest, in path order; a module outside
    `root` gets only what it imports from the package by absolute name."""
    root = root.resolve()
    memo = stats.file.with_name("imports.json")
    if memo not in _stored:
        _stored[memo] = _load(memo)
    seen: dict[Path, str] = {}
    todo = [module.resolve()]
    while todo:
        f = todo.pop()
        if f not in seen:
            seen[f] = stats.digest(f)
            todo += _deps(f, seen[f], root)
    if not _stored[memo].issuperset(seen.values()):
        _save(memo, stats, set(seen.values()))
    return dict(sorted(seen.items()))


def parse(source: bytes) -> list[Ref]:
    """Every import statement of a module's source, however deeply nested (a file that does not parse has
    none: its content still enters the key, and importing it fails anyway)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    out: list[Ref] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(0, a.name, ()) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            out.append((node.level, node.module or "", tuple(a.name for a in node.names)))
    return out


def _imports(file: Path, digest: str) -> list[Ref]:
    refs = _refs.get(digest)
    if refs is None:
        source = file.read_bytes()
        refs = parse(source)
        if hashlib.sha256(source).hexdigest() == digest:   # not rewritten since it was hashed
            _refs[digest] = refs
    return refs


@lru_cache(maxsize=None)
def _deps(file: Path, digest: str, root: Path) -> tuple[Path, ...]:
    """The package's files that importing `file` (with this content) runs: the `__init__.py` of the package
    it is in and the modules its import statements name, each with its parent packages."""
    modules, names = _package(root)
    name = names.get(file, ())   # () outside the package
    package = name if file.name == "__init__.py" else name[:-1]   # where its relative imports start
    wanted = [name[:-1]]   # its package (of an __init__.py: the enclosing one) runs first
    for level, module, imported in _imports(file, digest):
        if level == 0:
            target = tuple(module.split("."))
        elif level <= len(package):   # relative: within the package (none for a module outside it)
            target = package[:len(package) - level + 1] + (tuple(module.split(".")) if module else ())
        else:
            continue
        if target[0] == root.name:
            wanted += [target[:i] for i in range(1, len(target) + 1)]
            wanted += [target + (n,) for n in imported if n != "*"]   # `from pkg import module`
    return tuple(modules[n] for n in dict.fromkeys(wanted) if n in modules)   # not there: a function, a class


@lru_cache(maxsize=None)
def _package(root: Path) -> tuple[dict[tuple[str, ...], Path], dict[Path, tuple[str, ...]]]:
    """Dotted name -> file of every module of the package at `root` (a package: its `__init__.py`), and
    back; listed once per process, as Python's own finders do."""
    out: dict[tuple[str, ...], Path] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        name = (root.name,) + Path(folder).relative_to(root).parts
        for f in files:
            if f == "__init__.py":
                out[name] = Path(folder, f)   # a package comes before a module of the same name
            elif f.endswith(".py"):
                out.setdefault(name + (f[:-3],), Path(folder, f))
    return out, {f: n for n, f in out.items()}


def _load(memo: Path) -> set[str]:
    """Read a memo file into this process's memory; the digests it holds."""
    try:
        data = json.loads(memo.read_text())
        for digest, refs in data.items():
            _refs.setdefault(digest, [(int(lv), str(m), tuple(map(str, ns))) for lv, m, ns in refs])
    except (OSError, ValueError, TypeError, AttributeError):   # absent or damaged: parse again
        return set()
    return set(data)


def _save(memo: Path, stats: StatCache, used: set[str]) -> None:
    """Write the imports of every content the stat cache still knows (older versions of files drop out);
    nothing when the cache folder does not exist (yet) or is read-only: those files are parsed again."""
    live = {e[2] for e in stats.entries.values() if isinstance(e, list) and len(e) > 2}
    data = {d: refs for d, refs in sorted(_refs.items()) if d in live}
    _stored[memo] |= used   # a failed write is not retried in this process
    tmp = memo.with_name(f"{memo.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data))
        os.replace(tmp, memo)
    except OSError:
        return
    _stored[memo] |= set(data)
