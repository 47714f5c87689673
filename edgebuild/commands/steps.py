"""`edgebuild steps`: every step kind with its parameters, defaults and descriptions."""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", nargs="?", help="show only this step kind")
    p.add_argument("--json", action="store_true", help="print the parameter schemas as JSON")


def run(args: argparse.Namespace) -> int:
    from edgebuild.errors import Problem, UserError
    from edgebuild.frontend.validate import did_you_mean
    from edgebuild.steps import kinds

    ks = kinds()
    if args.kind and args.kind not in ks:
        raise UserError(Problem(f"unknown step kind '{args.kind}'", None, did_you_mean(args.kind, list(ks))))
    chosen = {k: v for k, v in sorted(ks.items()) if not args.kind or k == args.kind}
    if args.json:
        print(json.dumps({k: v.schema() for k, v in chosen.items()}, indent=2))
        return 0
    for name, kind in chosen.items():
        flags = " target-specific" if kind.target_specific else ""
        print(f"{name}  (takes {'/'.join(kind.takes)} -> gives {kind.gives}; v{kind.version}{flags})")
        print(f"    {kind.summary}")
        for pname, spec in kind.params.items():
            req = "required" if pname in kind.required else f"default {json.dumps(spec.get('default'))}"
            allowed = f" one of {', '.join(map(str, spec['enum']))};" if "enum" in spec else ""
            print(f"    {pname:<16} {allowed} {req}: {spec.get('description', '')}")
        print()
    return 0
