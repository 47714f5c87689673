"""Plan-time checks of the files a recipe names: model, factory, weights, datasets (cold path only)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Any

from edgebuild.errors import Location, Problem


def check_factory(ref: str, base: Path, where: Location) -> tuple[Path | None, list[Problem]]:
    """Resolve "file.py:callable" and check the callable is defined there, without importing it."""
    target, _, attr = ref.rpartition(":")
    if not target.endswith(".py"):
        return None, []  # "pkg.module:callable": importable only at run time
    path = (base / target).resolve()
    if not path.is_file():
        return None, [missing_file("factory file", target, path, where)]
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except SyntaxError as exc:
        shown = (exc.text or "").strip()
        return path, [Problem(f"factory file {target} has a Python syntax error at line {exc.lineno}: {exc.msg}", where,
                              f"fix line {exc.lineno} of {target}" + (f": `{shown}`" if shown else ""))]
    names = _top_level_names(tree)
    head = attr.split(".")[0]
    if head not in names:
        from edgebuild.frontend.validate import did_you_mean
        hint = did_you_mean(head, sorted(names)) or (f"{target} defines: {', '.join(sorted(names))}" if names else None)
        return path, [Problem(f"factory callable '{attr}' not found in {target}", where, hint)]
    return path, []


def missing_file(what: str, shown: str, path: Path, where: Location) -> Problem:
    """"<what> not found: <shown>", or "... is a folder, not a file" when a folder has that name."""
    if path.is_dir():
        return Problem(f"{what} {shown} is a folder, not a file", where,
                       f"{path.resolve()} is a folder: name the file inside it")
    return Problem(f"{what} not found: {shown}", where, f"looked for {path.resolve()}; paths are relative to the recipe")


def _top_level_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def factory_files(ref: str, recipe_dir: Path) -> list[Path]:
    """The source files a factory's output depends on, found by reading, not importing: its module file
    and the local modules that imports, transitively.

    "file.py:callable": the file, and imports resolving under its folder or the recipe's (both are on
    sys.path when the export step imports it). "pkg.module:callable": the module's file, found where
    the export step finds it (the recipe's folder first, then sys.path), and imports resolving inside
    that folder — or, for an installed package, inside the package. Nothing when it cannot be found
    here (the export step then fails with the reason).
    """
    target = ref.rpartition(":")[0]
    recipe_dir = recipe_dir.resolve()
    if target.endswith(".py"):
        path = (recipe_dir / target).resolve()
        return factory_sources(path, [path.parent, recipe_dir]) if path.is_file() else []
    parts = [p for p in target.split(".") if p]
    for base in [recipe_dir, *(Path(p or ".").resolve() for p in sys.path)]:
        for cand in (base.joinpath(*parts).with_suffix(".py"), base.joinpath(*parts, "__init__.py")):
            if parts and cand.is_file():
                root = base if base == recipe_dir else base / parts[0]
                inits = [base.joinpath(*parts[:i], "__init__.py") for i in range(1, len(parts))]
                return sorted(set(factory_sources(cand.resolve(), [root.resolve()]))
                              | {i.resolve() for i in inits if i.is_file()})
    return []


def factory_sources(path: Path, roots: list[Path] | None = None) -> list[Path]:
    """`path` and the local modules it imports, transitively (found by reading, not importing).

    A module counts as local when it resolves to a file under one of `roots` (default: the file's
    folder), e.g. `import layers` or `from .blocks import Res` next to model.py: editing one changes
    what the factory builds.
    """
    roots = [r.resolve() for r in (roots or [path.parent])]
    seen: set[Path] = set()
    todo = [path]
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        try:
            tree = ast.parse(f.read_text(encoding="utf-8"))
        except (OSError, SyntaxError, UnicodeDecodeError):
            continue
        for mod in _imported(tree):
            todo += [c for c in _local_files(roots, f.parent, mod) if c not in seen]
    return sorted(seen)


def _imported(tree: ast.Module) -> list[tuple[int, str]]:
    """(relative level, dotted name) of every import in a module."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(0, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            out.append((node.level, base))
            out += [(node.level, f"{base}.{a.name}" if base else a.name) for a in node.names]
    return out


def _local_files(roots: list[Path], here: Path, mod: tuple[int, str]) -> list[Path]:
    level, name = mod
    base = here
    for _ in range(max(level - 1, 0)):
        base = base.parent
    parts = [p for p in name.split(".") if p]
    out = []
    for start in ([base] if level else roots):
        for i in range(1, len(parts) + 1):
            stem = start.joinpath(*parts[:i])
            for cand in (stem.with_suffix(".py"), stem / "__init__.py"):
                if cand.is_file() and any(r in cand.resolve().parents for r in roots):
                    out.append(cand.resolve())
    return out


def source_role(prefix: str, path: Path, base: Path) -> str:
    """A cache-key role for a source file: its path relative to the recipe's folder (two helpers named
    utils.py in different folders are two sources), or absolute when it lies elsewhere."""
    try:
        return f"{prefix}:{path.resolve().relative_to(base.resolve()).as_posix()}"
    except ValueError:
        return f"{prefix}:{path.resolve().as_posix()}"


LFS_POINTER = b"version https://git-lfs.github.com/spec/"


def is_lfs_pointer(path: Path) -> bool:
    """Whether the file is a Git LFS pointer (a small text file checked out in place of the real one)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(LFS_POINTER)) == LFS_POINTER
    except OSError:
        return False


def lfs_problem(what: str, path: Path, where: Location) -> Problem:
    return Problem(f"{what} is a Git LFS pointer, not the file itself", where,
                   f"fetch the real file with `git lfs pull` (Git LFS must be installed: `git lfs install`); {path.name} "
                   "holds only the pointer text")


def probe_onnx(path: Path) -> dict[str, Any]:
    """Inputs, opset, IR version and external data files of an ONNX model, read without its weights.

    Raises ValueError with a readable reason when the file is not a loadable ONNX model.
    """
    import onnx

    from edgebuild.onnx import graph as onnx_graph

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and friends
        if type(exc).__name__ == "DecodeError":  # its text varies with the protobuf build and says no more
            raise ValueError("not a valid ONNX model (the file does not parse as an ONNX protobuf)") from None
        raise ValueError(f"not a valid ONNX model ({type(exc).__name__}: {str(exc)[:120] or 'cannot parse'})") from None
    if not model.graph.node and not model.graph.output:
        raise ValueError("not a valid ONNX model (the graph is empty)")
    inits = {i.name for i in model.graph.initializer}
    inputs = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        inputs[vi.name] = {"shape": onnx_graph.dims(vi), "dtype": onnx_graph.dtype_name(vi)}
    opset = onnx_graph.default_opset(model)
    external = sorted({e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"})
    return {"inputs": inputs, "opset": opset, "ir_version": model.ir_version,
            "outputs": [o.name for o in model.graph.output], "external": external}


def check_dataset(name: str, path: Path, inputs: dict[str, dict[str, Any]], where: Location) -> list[Problem]:
    """The dataset exists, is an .npz, and has one array per model input with a fitting dtype and shape."""
    from edgebuild.frontend import datasets

    try:
        arrays = datasets.inspect(path)
    except FileNotFoundError:
        return [missing_file(f"dataset '{name}'", path.name, path, where)]
    except Exception as exc:
        if is_lfs_pointer(path):
            return [lfs_problem(f"dataset '{name}' ({path.name})", path, where)]
        return [Problem(f"dataset '{name}' is not a readable .npz file: {exc}", where,
                        "write it with numpy.savez(path, **{input_name: array, 'labels': labels})")]
    problems = []
    counts: dict[str, int] = {}
    for inp, spec in inputs.items():
        if inp not in arrays:
            have = ", ".join(sorted(arrays)) or "no arrays"
            problems.append(Problem(f"dataset '{name}' has no array for model input '{inp}' (it has: {have})", where,
                                    "save one array per model input, named after the input"))
            continue
        shape, dtype = arrays[inp]
        counts[inp] = shape[0] if shape else 0
        want = spec.get("dtype", "float32")
        if dtype != want:
            problems.append(Problem(f"dataset '{name}': array '{inp}' has dtype {dtype}, model input '{inp}' takes {want}",
                                    where, f"convert it with array.astype('{want}') before saving"))
        problems += _shape_problems(name, inp, shape, spec["shape"], want, where)
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"'{k}' {v}" for k, v in counts.items())
        problems.append(Problem(f"dataset '{name}': the input arrays hold different numbers of samples ({listed})", where,
                                "every array holds the same samples along its first axis: sample i of each belongs together"))
    problems += _shared_dim_problems(name, {k: arrays[k][0] for k in counts}, inputs, where)
    if "labels" in arrays and counts and arrays["labels"][0][:1] != (min(counts.values()),):
        problems.append(Problem(f"dataset '{name}': 'labels' has {arrays['labels'][0][0] if arrays['labels'][0] else 0} rows "
                                f"but the inputs have {min(counts.values())} samples", where,
                                "save one label per sample: labels of shape [N] for N samples"))
    return problems


def _shared_dim_problems(name: str, shapes: dict[str, tuple[int, ...]], inputs: dict[str, Any],
                         where: Location) -> list[Problem]:
    """Inputs that share a symbolic dim (input_ids and attention_mask: [batch, seq]) must get the same size
    for it from the dataset, or the model fails inside ONNX Runtime with a bare shape error."""
    from edgebuild.frontend import datasets
    from edgebuild.onnx import graph as onnx_graph

    seen: dict[str, tuple[str, int]] = {}
    problems = []
    for inp, shape in shapes.items():
        want = inputs[inp]["shape"]
        sample = datasets.sample_shape(shape, want)
        if len(sample) != len(want):
            continue
        for dim, size in zip(want, sample):
            if not isinstance(dim, str) or dim == onnx_graph.UNNAMED:   # each unnamed dim is free, not shared
                continue
            if dim in seen and seen[dim][1] != size:
                other, other_size = seen[dim]
                problems.append(Problem(f"dataset '{name}': inputs '{other}' and '{inp}' share the dim '{dim}' but their "
                                        f"samples give it {other_size} and {size}", where,
                                        f"pad or cut both arrays to the same '{dim}' size"))
            seen.setdefault(dim, (inp, size))
    return problems


def _dims(dims: list[Any]) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


def _shapes_that_fit(want: list[Any]) -> str:
    if want and isinstance(want[0], str):
        return f"{_dims(['N', *want[1:]])} (each sample fed as a batch of one)"
    return f"{_dims(['N', *want])} (fed row by row)" + (f" or {_dims(['N', *want[1:]])}" if want[:1] == [1] else "")


def _override_hint(inp: str, want: list[Any], dtype: str) -> str:
    """For a fixed first dim: the `model.inputs` override that makes it a batch dim, ready to paste."""
    if want and isinstance(want[0], int):
        spec = f"shape: {_dims(['batch', *want[1:]])}" + (f", dtype: {dtype}" if dtype != "float32" else "")
        return (f"; or, to feed one sample at a time, make the first dim symbolic: add under `model:` in the recipe\n"
                f"  inputs:\n    {_yaml_key(inp)}: {{{spec}}}")
    return ""


def _yaml_key(name: str) -> str:
    """`name` as a YAML mapping key: plain when it is safe, quoted otherwise (ONNX names like "input:0")."""
    import json
    import re

    return name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", name) else json.dumps(name)


def _shape_problems(name: str, inp: str, shape: tuple[int, ...], want: list[Any], dtype: str,
                    where: Location) -> list[Problem]:
    # samples lie along the first axis: fed as batches of one (array[i:i+1]) when the array has the input's
    # rank, row by row (array[i]) when it has one axis more (see edgebuild.frontend.datasets)
    from edgebuild.frontend import datasets

    if len(shape) == 0 or shape[0] == 0:
        return [Problem(f"dataset '{name}': array '{inp}' holds no samples", where)]
    sample = datasets.sample_shape(shape, want)
    if len(sample) != len(want) or any(isinstance(w, int) and w != s for w, s in zip(want, sample)):
        shown = "[" + ", ".join(str(w) for w in want) + "]"
        how = "array[i:i+1]" if sample[:1] == (1,) and len(sample) == len(shape) else "array[i]"
        return [Problem(f"dataset '{name}': array '{inp}' has shape {list(shape)}; each sample fed as {how} "
                        f"has shape {list(sample)}, which does not fit the input shape {shown}", where,
                        f"samples go along the first axis: an array of shape {_shapes_that_fit(want)}"
                        f"{_override_hint(inp, want, dtype)}")]
    return []
