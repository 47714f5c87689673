"""`edgebuild targets [NAME]`: the shipped hardware profiles, or one of them in full."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="a profile name, or a path to a profile file")


def run(args: argparse.Namespace) -> int:
    from edgebuild.frontend import targets

    if not args.name:
        for name in targets.available():
            t = targets.load(name, Path.cwd())
            print(f"{name:<20} {t.data['description']}")
        return 0
    t = targets.load(args.name, Path.cwd())
    print(t.file.read_text().rstrip())
    ir, opset, why = t.onnx_limits()
    print(f"# derived: ONNX models for this target are written with IR <= {ir}, opset <= {opset} (limit set by {why})")
    print(f"# fingerprint: {t.fingerprint}")
    return 0
