"""`edgebuild explain RECIPE STEP[@TARGET]`: why a step will run again, from what changed in its key."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgebuild.commands._common import add_cache_arg


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", type=Path)
    p.add_argument("step", help="a step id, or STEP@TARGET for a target-specific step")
    add_cache_arg(p)


def run(args: argparse.Namespace) -> int:
    from edgebuild.commands._common import load_plan
    from edgebuild.engine.plan import Planned, split_node_id
    from edgebuild.errors import Problem, UserError
    from edgebuild.frontend.validate import did_you_mean

    plan, _ = load_plan(args.recipe, args.cache, None)
    step, target = split_node_id(args.step)
    nodes = [n for n in plan.order() if n.step.id == step and (not target or (n.target and n.target.name == target))]
    shared = [n for n in plan.order() if n.step.id == step and n.target is None]
    if not nodes and target and shared:   # STEP@TARGET for a step built once for every target
        print(f"({step} does not depend on the target: one build serves every target)")
        nodes = shared
    if not nodes:
        if step in plan.recipe.steps and not target:
            print(f"{step}: not built (no target ships it or a step that takes from it)")
            return 0
        hint = did_you_mean(args.step, [n.id for n in plan.order()]) or f"nodes: {', '.join(plan.nodes)}"
        raise UserError(Problem(f"no step '{args.step}' in the plan of {args.recipe}", None, hint))
    for n in nodes:
        if n.status == Planned.CACHED:
            print(f"{n.id}: up to date (cached as {n.key[:16]})")
        else:
            print(f"{n.id}: will run")
            for why in n.reasons:
                print(f"  - {why}")
    return 0
