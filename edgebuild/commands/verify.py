"""`edgebuild verify MANIFEST`: the published files against the manifest, the signatures against a public
key, the release against a floor, and (--rebuild) a rebuild from nothing against what was published."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgebuild.commands._trust import release_number


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("manifest", type=Path, help="a build's manifest.json (or the folder that holds it)")
    p.add_argument("--key", type=Path, metavar="PUB.pem", help="verify the signatures with this public key")
    p.add_argument("--min-release", type=release_number, metavar="N", help="refuse a build whose release is below N")
    p.add_argument("--rebuild", action="store_true",
                   help="build the recipe again from scratch in a temporary cache and compare the artifacts")
    p.add_argument("--recipe", type=Path, metavar="RECIPE",
                   help="the recipe to rebuild (default: the one provenance.json names)")


def run(args: argparse.Namespace) -> int:
    from edgebuild.errors import Location, Problem, UserError
    from edgebuild.trust import verify

    path = verify.manifest_file(args.manifest)
    manifest = verify.load(path)
    out = path.parent
    print(f"{path}: {manifest.name}, release {manifest.release if manifest.release is not None else 'none'}")
    sections = [("files", verify.check_files(out, manifest))]
    if args.min_release is not None:
        sections.append(("release", [verify.check_release(manifest, args.min_release)]))
    if args.key is not None:
        from edgebuild.trust import signing

        sections.append((f"signatures ({args.key})", signing.verify_dist(out, args.key)))
    if args.rebuild:
        recipe = verify.recipe_for(manifest, out, args.recipe)
        print(f"rebuilding {recipe} from scratch in a temporary cache ...", flush=True)
        sections.append(("rebuilt from scratch", verify.rebuild(manifest, recipe, out)))
    for title, rows in sections:
        _table(title, rows)
    bad = [(title, r) for title, rows in sections for r in rows if not r.ok]
    if bad:
        raise UserError([Problem(f"{r.what}: {r.detail}", Location(str(out / r.what)) if title == "files" else None)
                         for title, r in bad] +
                        [Problem(f"{len(bad)} check(s) failed: {path} is not what was built", None,
                                 "publish again with `edgebuild run`, or find out who changed the folder", "note")])
    print(f"verified: {sum(len(rows) for _, rows in sections)} checks passed")
    return 0


def _table(title: str, rows: list) -> None:   # type: ignore[type-arg]
    print(f"{title}:")
    width = max((len(r.what) for r in rows), default=0)
    for r in rows:
        print(f"  {'ok  ' if r.ok else 'FAIL'}  {r.what:<{width}}  {r.detail}")
