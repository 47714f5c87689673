"""`edgebuild validate RECIPE...`: load and plan each recipe, build nothing; report every problem."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipes", type=Path, nargs="+")


def run(args: argparse.Namespace) -> int:
    from edgebuild.commands._common import cache_root
    from edgebuild.engine import plan as plan_mod
    from edgebuild.engine.digest import StatCache
    from edgebuild.errors import BuildFailed, UserError
    from edgebuild.frontend import recipe as recipe_mod

    problems = []
    for path in args.recipes:
        try:
            r = recipe_mod.load(path)
            # the recipe's cache supplies digests and parsed imports already known (read-only: the stat
            # cache is never saved here), so validating does not re-read edgebuild's own modules each time
            p = plan_mod.build(r, StatCache(cache_root(None, path) / "stat.json"))
        except UserError as exc:
            problems += exc.problems
            continue
        for w in p.warnings:
            print(w.render(), file=sys.stderr)
        print(f"{path}: ok ({len(r.steps)} steps, {len(p.nodes)} nodes, targets: {', '.join(t.name for t in r.targets)})")
    if problems:
        raise BuildFailed(problems)
    return 0
