"""`edgebuild report MANIFEST [-o FILE]`: render a published manifest as one self-contained HTML page."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("manifest", type=Path,
                   help="the manifest.json that `edgebuild run` wrote (dist/<name>/manifest.json), or its folder")
    p.add_argument("-o", "--output", type=Path, metavar="FILE",
                   help="where to write the HTML (default: report.html beside the manifest)")


def run(args: argparse.Namespace) -> int:
    from edgebuild.output import report

    out = report.write(args.manifest, args.output)
    print(f"report: {out}")
    return 0
