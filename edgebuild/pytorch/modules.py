"""PyTorch models inside steps: the recipe's factory and weights, and the module a pytorch step writes.

A step that changes a model's architecture (`prune` removes channels; `distill` trains another factory's
model) writes `model.pt`, a plain state_dict that `torch.load(weights_only=True)` reads, and
`module.json`, which says how to rebuild the module: the factory to call and the layer attributes that
differ from what it builds (`{"features.0": {"out_channels": 8}}`). Loading calls the factory, sets those
attributes, resizes every parameter and buffer to the saved shapes and loads the state_dict strictly, so no
pickled code is ever unpickled and `export` (or another pytorch step) takes the result like the recipe's
own model.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import sys
import traceback
import types
from pathlib import Path
from typing import Any

from edgebuild.steps.base import RunContext, StepError

FACTORY = ("model", "pytorch", "factory")
WEIGHTS = ("model", "pytorch", "weights")
MODULE_FORMAT = 1


def load(ctx: RunContext) -> Any:
    """The model a pytorch step takes, in eval mode: the upstream step's saved module, or the recipe's."""
    if ctx.input_dir is None:
        return build_module(ctx)
    return load_saved(ctx, ctx.input_dir)


def factory_of(ctx: RunContext) -> tuple[str, tuple[Any, ...]]:
    """The factory that builds the architecture of the model this step takes, and where the recipe names it."""
    if ctx.input_dir is None:
        return str((ctx.source.get("pytorch") or {}).get("factory") or ""), FACTORY
    spec = json.loads((ctx.input_dir / "module.json").read_text())
    return spec["factory"], tuple(spec["factory_at"])


def save(out_dir: Path, module: Any, factory: str, at: tuple[Any, ...], base: Any) -> None:
    """Write `module` as model.pt + module.json; `base` is a module the factory builds (its attributes are
    what the saved changes are measured against)."""
    import torch

    changes = {}
    plain = dict(base.named_modules())
    for name, m in module.named_modules():
        if name not in plain:
            raise StepError(f"the model gained a module '{name}' its factory does not build",
                            hint="edgebuild saves architectures as changes to the factory's layers")
        diff = {k: _jsonable(v) for k, v in _attributes(m).items() if _attributes(plain[name]).get(k, v) != v}
        if diff:
            changes[name] = dict(sorted(diff.items()))
    spec = {"format": MODULE_FORMAT, "factory": factory, "factory_at": list(at), "changes": changes}
    state = {k: v.detach().clone().contiguous() for k, v in module.state_dict().items()}
    torch.save(state, str(out_dir / "model.pt"))
    (out_dir / "module.json").write_text(json.dumps(spec, indent=1, sort_keys=True) + "\n")


def load_saved(ctx: RunContext, folder: Path) -> Any:
    """Rebuild the module a pytorch step saved in `folder` (see the module doc), in eval mode."""
    import torch

    spec = json.loads((folder / "module.json").read_text())
    module = from_factory(ctx, spec["factory"], tuple(spec["factory_at"]))
    modules = dict(module.named_modules())
    for name, attrs in spec["changes"].items():
        for k, v in attrs.items():
            old = getattr(modules[name], k, None)
            setattr(modules[name], k, tuple(v) if isinstance(old, tuple) and isinstance(v, list) else v)
    state = torch.load(str(folder / "model.pt"), map_location="cpu", weights_only=True)
    for key, tensor in state.items():
        owner, _, leaf = key.rpartition(".")
        m = module.get_submodule(owner)
        current = getattr(m, leaf)
        if tuple(current.shape) != tuple(tensor.shape):
            if isinstance(current, torch.nn.Parameter):
                setattr(m, leaf, torch.nn.Parameter(torch.empty_like(tensor), requires_grad=current.requires_grad))
            else:
                m._buffers[leaf] = torch.empty_like(tensor)
    module.load_state_dict(state, strict=True)
    return module.eval()


_PLAIN = (bool, int, float, str, type(None))


def _attributes(m: Any) -> dict[str, Any]:
    """A layer's plain settings (channel counts, kernel sizes, groups...): what pruning changes besides tensors."""
    return {k: v for k, v in vars(m).items() if not k.startswith("_") and k != "training" and
            (isinstance(v, _PLAIN) or (isinstance(v, (tuple, list)) and all(isinstance(x, _PLAIN) for x in v)))}


def _jsonable(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def flatten(out: Any) -> list[Any]:
    """A model's output tensors in order (a tensor, or nested tuples/lists/dicts of them)."""
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in flatten(v)]
    return [t for v in out for t in flatten(v)]


# -- the module --------------------------------------------------------------------------------

def build_module(ctx: RunContext) -> Any:
    """The recipe's model: its factory's module with the recipe's weights loaded, in eval mode."""
    src = ctx.source.get("pytorch") or {}
    module = from_factory(ctx, str(src.get("factory") or ""), FACTORY)
    weights = src.get("weights")
    if weights:
        wpath = Path(weights)
        _load_weights(ctx, module, wpath if wpath.is_absolute() else Path(ctx.recipe_dir) / wpath)
    module.eval()
    return module


def from_factory(ctx: RunContext, ref: str, at: tuple[Any, ...]) -> Any:
    """The module a factory ("file.py:callable" or "pkg.module:callable") returns, seeded so that a factory
    that initializes weights randomly gives the same weights (and bytes) every run; errors point at `at`."""
    import random

    import numpy as np
    import torch

    factory = _load_factory(ref, Path(ctx.recipe_dir), at)
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    try:
        module = factory()
    except Exception as exc:
        ctx.log.error("the factory raised:\n%s", traceback.format_exc())
        raise StepError(f"factory {ref} raised {type(exc).__name__}: {short(exc)}", recipe_path=at,
                        hint="run the factory in Python to see the full traceback (also in this step's log)") from None
    if not isinstance(module, torch.nn.Module):
        raise StepError(f"factory {ref} returned {type(module).__name__}, not a torch.nn.Module", recipe_path=at,
                        hint="the factory must return the model (an nn.Module instance), e.g. `return MyNet()`")
    return module


def _load_factory(ref: str, recipe_dir: Path, at: tuple[Any, ...] = FACTORY) -> Any:
    target, sep, attr = ref.rpartition(":")
    if not sep or not target or not attr:
        raise StepError(f"factory '{ref}' is not \"file.py:callable\" or \"package.module:callable\"", recipe_path=at)
    recipe_dir = recipe_dir.resolve()
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_absolute():
            path = recipe_dir / path
        path = path.resolve()
        if not path.is_file():
            raise StepError(f"factory file not found: {target}", recipe_path=at,
                            hint=f"looked for {path}; paths are relative to the recipe")
        _on_path(recipe_dir, path.parent)
        # the file is loaded as a module of a package made of its folder, so both plain imports of its
        # neighbours (`import layers`, the folder is on sys.path) and relative ones (`from .layers import W`) work
        package = f"_edgebuild_factory_{hashlib.sha256(str(path.parent).encode()).hexdigest()[:12]}"
        if package not in sys.modules:
            pkg = types.ModuleType(package)
            pkg.__path__ = [str(path.parent)]
            sys.modules[package] = pkg
        module_name = f"{package}.{path.stem}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise StepError(f"cannot import factory file {target}", recipe_path=at)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = mod
        where = target
        try:
            spec.loader.exec_module(mod)
        except Exception as exc:
            sys.modules.pop(module_name, None)
            raise StepError(f"importing factory file {target} raised {type(exc).__name__}: {short(exc)}",
                            recipe_path=at) from None
    else:
        _on_path(recipe_dir)
        where = target
        try:
            mod = importlib.import_module(target)
        except ModuleNotFoundError as exc:
            raise StepError(f"factory module '{target}' not found ({short(exc)})", recipe_path=at,
                            hint="install the package, or name a file: \"model.py:build\" (relative to the recipe)") from None
        except Exception as exc:
            raise StepError(f"importing factory module {target} raised {type(exc).__name__}: {short(exc)}",
                            recipe_path=at) from None
    obj: Any = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise StepError(f"factory callable '{attr}' not found in {where}", recipe_path=at)
        obj = getattr(obj, part)
    if not callable(obj):
        raise StepError(f"factory '{attr}' in {where} is a {type(obj).__name__}, not a callable", recipe_path=at)
    return obj


def _on_path(*dirs: Path) -> None:
    for d in reversed(dirs):
        s = str(d)
        if s not in sys.path:
            sys.path.insert(0, s)


def _load_weights(ctx: RunContext, module: Any, path: Path) -> None:
    import torch

    shown = path.name
    if not path.is_file():
        raise StepError(f"weights file not found: {path}", recipe_path=WEIGHTS)
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        pickled = "weights_only" in str(exc) or "Unsupported global" in str(exc)
        raise StepError(f"cannot load weights {shown} with torch.load(weights_only=True): {type(exc).__name__}: {short(exc)}",
                        recipe_path=WEIGHTS,
                        hint=("it looks like a whole pickled model (torch.save(model)), which edgebuild does not unpickle: "
                              "save its state_dict instead: torch.save(model.state_dict(), path)") if pickled else
                        "save a plain state_dict: torch.save(model.state_dict(), path)") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        nested = [k for k in ("state_dict", "model_state_dict", "model") if isinstance(state, dict) and k in state]
        hint = (f"it looks like a checkpoint; save its '{nested[0]}' entry on its own" if nested
                else "save a plain state_dict: torch.save(model.state_dict(), path)")
        raise StepError(f"weights {shown} is not a state_dict (a dict of tensor name -> tensor)", recipe_path=WEIGHTS, hint=hint)
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k} (file {list(state[k].shape)}, model {list(own[k].shape)})"
                  for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {_listing(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {_listing(unexpected)}")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatch(es): {_listing(mismatched)}")
        prefixed = bool(unexpected) and all(k.startswith("module.") for k in unexpected) and \
            {k.removeprefix("module.") for k in unexpected} >= set(missing)
        raise StepError(f"weights {shown} do not fit the model the factory builds: " + "; ".join(parts), recipe_path=WEIGHTS,
                        hint=("the keys carry the 'module.' prefix of a DataParallel/DistributedDataParallel wrapper: "
                              "save model.module.state_dict(), or strip the prefix from the keys") if prefixed else
                        "check the weights were saved from this model (same architecture and constructor arguments)")
    try:
        module.load_state_dict(state, strict=True)
    except Exception as exc:
        raise StepError(f"weights {shown} do not fit the model: {short(exc)}", recipe_path=WEIGHTS) from None
    ctx.log.info("loaded %d tensors from %s", len(state), shown)


def _listing(items: list[str], n: int = 4) -> str:
    head = ", ".join(items[:n])
    return head + (f", ... and {len(items) - n} more" if len(items) > n else "")


def short(exc: BaseException, n: int = 300) -> str:
    from edgebuild.errors import strip_ansi

    s = strip_ansi(str(exc)).strip().splitlines()
    text = " ".join(x.strip() for x in s[:4]) if s else ""
    return (text[:n] + "...") if len(text) > n else (text or "(no message)")
