"""`edgebuild plan RECIPE`: every node with its status (cached / will run, and why), as text, JSON or dot."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgebuild.commands._common import add_cache_arg

if TYPE_CHECKING:
    from edgebuild.engine.plan import Plan


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", type=Path)
    p.add_argument("--target", action="append", default=[], metavar="T", help="plan only this target (repeatable)")
    p.add_argument("--format", choices=["text", "json", "dot"], default="text")
    add_cache_arg(p)


def run(args: argparse.Namespace) -> int:
    from edgebuild.commands._common import load_plan

    plan, _ = load_plan(args.recipe, args.cache, args.target)
    print({"text": _text, "json": _json, "dot": _dot}[args.format](plan))
    return 0


_SHOWN = {"cached": "cached", "deferred": "deferred", "run": "will run"}   # Planned -> the word `plan` prints


def _rows(plan: Plan) -> list[dict[str, Any]]:
    from edgebuild.engine.plan import shared_with

    return [{"node": n.id, "step": n.step.id, "use": n.step.use, "target": n.target.name if n.target else None,
             "from": n.upstream, "key": n.key, "status": _SHOWN[n.status],
             "reasons": [r.text for r in n.reasons], "onnx_limits": n.material["onnx_limits"], "shared_with": shared_with(plan, n)}
            for n in plan.order()]


def _text(plan: Plan) -> str:
    lines = [f"{plan.recipe.name}: {len(plan.nodes)} nodes for targets {', '.join(plan.selected)}"]
    rows = _rows(plan)
    width = max((len(r["node"]) for r in rows), default=0)
    for r in rows:
        src = f" <- {r['from']}" if r["from"] else " <- model"
        why = f": {'; '.join(r['reasons'])}" if r["reasons"] else ""
        if r["shared_with"]:   # its target resolves to the same parameters: built once, for both
            why += f" (one build shared with {', '.join(r['shared_with'])})"
        lines.append(f"  {r['status']:<9} {r['node']:<{width}} {r['use']:<18}{src}  key {r['key'][:12]}{why}")
    for t, items in plan.ship.items():
        lines.append(f"  ship {t}: {', '.join(nid for _, nid in items)}")
        if any(plan.nodes[nid].deferred for _, nid in items):
            lines.append(f"    deferred: build on a matching host with `{plan.command_for(t)}`")
    for w in plan.warnings:
        lines.append(f"  warning: {w.message}")
    return "\n".join(lines)


def _json(plan: Plan) -> str:
    return json.dumps({"name": plan.recipe.name, "targets": plan.selected, "nodes": _rows(plan),
                       "ship": {t: [nid for _, nid in v] for t, v in plan.ship.items()}}, indent=2)


def _dot(plan: Plan) -> str:
    lines = ["digraph edgebuild {", "  rankdir=LR;", '  model [shape=box, label="model"];']
    for r in _rows(plan):
        color = {"cached": "green", "deferred": "gray"}.get(r["status"], "orange")
        lines.append(f'  "{r["node"]}" [label="{r["node"]}\\n{r["use"]}", color={color}];')
        lines.append(f'  "{r["from"] or "model"}" -> "{r["node"]}";')
    for t, items in plan.ship.items():
        lines.append(f'  "{t}" [shape=box3d];')
        lines += [f'  "{nid}" -> "{t}" [style=dashed];' for _, nid in items]
    lines.append("}")
    return "\n".join(lines)
