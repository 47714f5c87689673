"""The step kinds edgebuild knows: one module per kind in this package, found at run time.

A step module names its kind with a module-level ``KIND = TheClass``. Modules whose name starts
with "_" (shared helpers) and ``base`` are not step kinds. Importing a step module must stay cheap:
heavy libraries (onnx, onnxruntime, torch, numpy) are imported inside ``run()`` only, so planning a
build never pays for them.

Extra step kinds can come from other importable modules named in ``EDGEBUILD_STEP_MODULES``
(comma-separated); such a module lists its kinds as ``KIND = Cls`` or ``KINDS = [Cls, ...]``.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from functools import lru_cache

from edgebuild.steps.base import StepKind

__all__ = ["kinds", "StepKind"]


@lru_cache(maxsize=None)
def _discover() -> tuple[tuple[str, type[StepKind]], ...]:
    found: dict[str, type[StepKind]] = {}
    where: dict[str, str] = {}
    modules = [f"{__name__}.{i.name}" for i in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name)
               if not i.name.startswith("_") and i.name != "base"]
    modules += [m.strip() for m in os.environ.get("EDGEBUILD_STEP_MODULES", "").split(",") if m.strip()]
    for module_name in modules:
        module = importlib.import_module(module_name)
        declared = getattr(module, "KINDS", None) or [getattr(module, "KIND", None)]
        for kind in declared:
            if not (isinstance(kind, type) and issubclass(kind, StepKind) and getattr(kind, "name", None)):
                continue
            if kind.name in found:
                raise RuntimeError(f"step kind '{kind.name}' is defined twice: in {where[kind.name]} and {module_name}")
            found[kind.name] = kind
            where[kind.name] = module_name
    return tuple(sorted(found.items()))


def kinds() -> dict[str, type[StepKind]]:
    """Step kind name -> class, for every step module of this package (sorted by name)."""
    return dict(_discover())
