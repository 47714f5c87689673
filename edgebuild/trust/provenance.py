"""`dist/<name>/provenance.json`: SLSA provenance of a build, as an in-toto Statement v1.

Other supply-chain tools read this shape (in-toto, SLSA verifiers, registries): subjects are every
published file with its sha256; the SLSA v1 predicate names the recipe, the resolved dependencies
(model, weights, datasets, factory and metric files with their digests, tool versions) and the builder.
Deterministic like the manifest: no timestamps, paths relative to the folder edgebuild ran from.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgebuild.engine.digest import sha256_file

if TYPE_CHECKING:
    from edgebuild.engine.plan import Plan
    from edgebuild.output.manifest import Manifest

STATEMENT = "https://in-toto.io/Statement/v1"
SLSA = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://edgebuild.dev/buildtypes/recipe/v1"
BUILDER = "https://edgebuild.dev/builder/edgebuild"
NAME = "provenance.json"


def published_files(out: Path, manifest: Manifest) -> dict[str, Path]:
    """Every file a build published, by its path in the output folder: the manifest and each artifact's
    files (a folder's one by one)."""
    files = {"manifest.json": out / "manifest.json"}
    for entry in manifest.targets.values():
        for a in entry.artifacts:
            p = out / a.path
            if p.is_dir():
                files.update({f.relative_to(out).as_posix(): f for f in sorted(p.rglob("*")) if f.is_file()})
            else:
                files[a.path] = p
    return dict(sorted(files.items()))


def statement(out: Path, plan: Plan, manifest: Manifest) -> dict[str, Any]:
    """The in-toto Statement of this build."""
    from edgebuild import __version__

    subjects = [{"name": name, "digest": {"sha256": sha256_file(p)}} for name, p in published_files(out, manifest).items()]
    r = plan.recipe
    external: dict[str, Any] = {"recipe": {"path": _rel(r.file), "digest": {"sha256": manifest.recipe_sha256}},
                                "targets": sorted(manifest.targets)}
    if manifest.release is not None:
        external["release"] = manifest.release
    predicate = {
        "buildDefinition": {"buildType": BUILD_TYPE, "externalParameters": external,
                            "resolvedDependencies": _dependencies(plan, manifest)},
        "runDetails": {"builder": {"id": BUILDER, "version": {"edgebuild": __version__}}},
    }
    return {"_type": STATEMENT, "subject": subjects, "predicateType": SLSA, "predicate": predicate}


def _dependencies(plan: Plan, manifest: Manifest) -> list[dict[str, Any]]:
    """Source files (by role, with their digests) and tools (as package URLs with versions)."""
    r = plan.recipe
    files = dict(r.source_files)
    for n in plan.order():
        files.update(n.step.kind.source_files(n.step.params, r.dir))
    deps = [{"name": role, "uri": f"file:{_rel(p)}", "digest": {"sha256": sha256_file(p)}}
            for role, p in sorted(files.items())]
    deps += [{"name": tool, "uri": f"pkg:pypi/{tool}@{version}"} for tool, version in sorted(manifest.tools.items())]
    return deps


def _rel(p: Path) -> str:
    try:
        return os.path.relpath(p)
    except ValueError:   # another drive (Windows): the absolute path
        return str(p)



def write(out: Path, plan: Plan, manifest: Manifest) -> dict[str, Any]:
    """Write provenance.json beside the manifest; returns the statement."""
    st = statement(out, plan, manifest)
    tmp = out / f".{NAME}.tmp"
    tmp.write_text(json.dumps(st, indent=2) + "\n")
    os.replace(tmp, out / NAME)
    return st
