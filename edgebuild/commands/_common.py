"""Helpers the subcommands share: where the cache and the output live, and loading a plan."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any


def jobs_count(text: str) -> int:
    """--jobs: how many steps run at once, an integer of 1 or more (left out: the number of cores)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of jobs: give an integer of 1 or more "
                                         "(leave --jobs out to use every core)")
    return value


def seconds(text: str) -> float:
    """--remote-timeout: a number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds: give a number above 0, such as 30")
    return value


def add_remote_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--remote", metavar="URL", default=None,
                   help="a cache shared with other machines: a folder or fsspec URL such as s3://bucket/prefix "
                        "(default: $EDGEBUILD_REMOTE)")
    p.add_argument("--remote-read-only", action="store_true",
                   help="take entries from the remote cache, upload nothing (builds of untrusted code: pull requests)")
    p.add_argument("--remote-required", action="store_true",
                   help="exit 1 when the remote cache cannot be used (default: one warning, and the build goes on locally)")
    p.add_argument("--remote-timeout", type=seconds, default=30.0, metavar="S",
                   help="the longest the build waits on the remote cache, in all (default: 30)")


def remote_url(arg: str | None) -> str | None:
    """--remote, else $EDGEBUILD_REMOTE (an empty value: none)."""
    return arg if arg is not None else (os.environ.get("EDGEBUILD_REMOTE") or None)


def open_remote(text: str, read_only: bool, timeout_s: float) -> Any:
    """A Remote for a --remote URL: a malformed URL, an unknown scheme or a missing package is a user error
    now, before anything is built; whether the remote answers is found out when a step first needs it."""
    from edgebuild.engine import remote, stores

    url = stores.parse(text)
    return remote.Remote(url, stores.open_store(url, timeout_s), read_only, timeout_s)


def add_cache_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache", metavar="DIR", type=Path,
                   help="cache folder (default: $EDGEBUILD_CACHE, else .edgebuild/cache beside the recipe)")


def cache_root(arg: Path | None, recipe: Path) -> Path:
    if arg is not None:
        return arg
    env = os.environ.get("EDGEBUILD_CACHE")
    if env:
        return Path(env)
    return recipe.resolve().parent / ".edgebuild" / "cache"


def history_path(cache: Path, recipe: Path) -> Path:
    import hashlib
    return cache / "plans" / f"{hashlib.sha256(str(recipe.resolve()).encode()).hexdigest()}.history.json"


def read_history(cache: Path, recipe: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(history_path(cache, recipe).read_text()))
    except (OSError, ValueError):
        return {}


def load_plan(recipe_path: Path, cache_arg: Path | None, targets: list[str] | None, force: set[str] | None = None) -> Any:
    """Load the recipe, plan it, and mark each node cached or will-run with its reasons."""
    from edgebuild.engine import plan as plan_mod
    from edgebuild.engine.cache import Cache
    from edgebuild.errors import Problem, UserError
    from edgebuild.frontend import recipe as recipe_mod

    r = recipe_mod.load(recipe_path)
    names = [t.name for t in r.targets]
    for t in targets or []:
        if t not in names:
            from edgebuild.frontend.validate import did_you_mean
            raise UserError(Problem(f"--target {t}: not a target of {recipe_path}", None,
                                    did_you_mean(t, names) or f"its targets: {', '.join(names)}"))
    for f in sorted(force or ()):
        if f not in r.steps:
            from edgebuild.frontend.validate import did_you_mean
            raise UserError(Problem(f"--force {f}: no step '{f}' in {recipe_path}", None,
                                    did_you_mean(f, list(r.steps)) or f"its steps: {', '.join(r.steps)}"))
    cache = Cache(cache_root(cache_arg, recipe_path))
    p = plan_mod.build(r, cache.stats, targets)
    plan_mod.mark(p, cache.has, read_history(cache.root, recipe_path).get("materials", {}), force)
    return p, cache
