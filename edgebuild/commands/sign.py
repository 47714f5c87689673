"""`edgebuild sign dist/<name> --key KEY.pem`: sign what a build published, after the fact (as `run --sign`)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", type=Path, help="a published build: dist/<name> (or its manifest.json)")
    p.add_argument("--key", type=Path, required=True, metavar="KEY.pem", help="elliptic-curve private key (PEM)")


def run(args: argparse.Namespace) -> int:
    from edgebuild.commands._trust import KEY_HINT
    from edgebuild.errors import Problem, UserError
    from edgebuild.trust import signing

    folder = args.folder.parent if args.folder.name == "manifest.json" else args.folder
    if not args.key.is_file():
        raise UserError(Problem(f"--key {args.key}: no such key file", None, KEY_HINT))
    signing.sign_dist(folder, args.key)
    return 0
