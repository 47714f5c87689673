"""`edgebuild cache info|gc`: what the build cache holds, and dropping what no recipe uses."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["info", "gc"])
    p.add_argument("--cache", type=Path, metavar="DIR",
                   help="cache folder (default: $EDGEBUILD_CACHE, else ./.edgebuild/cache)")
    p.add_argument("--all", action="store_true", help="gc: drop every entry, not only unreferenced ones")


def run(args: argparse.Namespace) -> int:
    from edgebuild.cache import Cache

    root = args.cache or Path(os.environ.get("EDGEBUILD_CACHE") or ".edgebuild/cache")
    cache = Cache(root)
    if args.action == "info":
        keys = cache.keys()
        used = cache.referenced()
        size = sum(cache.size(k) for k in keys)
        print(f"cache: {cache.root}")
        print(f"entries: {len(keys)} ({size / 1e6:.1f} MB), used by a recipe's last build: {len(used & set(keys))}")
        return 0
    n, freed = cache.gc(everything=args.all)
    print(f"removed {n} entries ({freed / 1e6:.1f} MB) from {cache.root}")
    return 0
