"""`edgebuild cache info|gc|push`: what the build cache holds, dropping what no recipe uses, and sending a
recipe's entries to the shared remote cache."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, NoReturn


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["info", "gc", "push"])
    p.add_argument("recipe", nargs="?", type=Path, help="push: the recipe whose last build's entries to upload")
    p.add_argument("--cache", type=Path, metavar="DIR",
                   help="cache folder (default: $EDGEBUILD_CACHE, else ./.edgebuild/cache; for push: beside the recipe)")
    p.add_argument("--all", action="store_true", help="gc: drop every entry, not only unreferenced ones")
    p.add_argument("--remote", nargs="?", const="", default=None, metavar="URL",
                   help="the remote cache (default: $EDGEBUILD_REMOTE, else the one the last build used); "
                        "gc --remote cleans the remote instead of the local cache")
    p.add_argument("--older-than", metavar="AGE",
                   help="gc --remote: drop entries no read-write build used for AGE (30d, 12h, 2w)")
    p.add_argument("--remote-timeout", type=float, default=30.0, metavar="S", help="per remote call (default: 30)")


def run(args: argparse.Namespace) -> int:
    from edgebuild.engine.cache import Cache

    if args.action == "push":
        return _push(args)
    if args.recipe is not None:
        _usage(f"cache {args.action} takes no recipe", f"`edgebuild cache push {args.recipe}` uploads a recipe's entries")
    cache = Cache(_root(args))
    if args.action == "info":
        return _info(args, cache)
    if args.remote is not None:
        return _gc_remote(args, cache)
    if args.older_than:
        _usage("--older-than applies to the remote cache", "`edgebuild cache gc --remote --older-than 30d`")
    n, freed = cache.gc(everything=args.all)
    print(f"removed {n} entries ({freed / 1e6:.1f} MB) from {cache.root}")
    return 0


def _root(args: argparse.Namespace) -> Path:
    if args.cache is not None:
        return Path(args.cache)
    if args.recipe is not None:
        from edgebuild.commands._common import cache_root

        return cache_root(None, args.recipe)
    return Path(os.environ.get("EDGEBUILD_CACHE") or ".edgebuild/cache")


def _info(args: argparse.Namespace, cache: Any) -> int:
    keys = cache.keys()
    used = cache.referenced()
    size = sum(cache.size(k) for k in keys)
    print(f"cache: {cache.root}")
    print(f"entries: {len(keys)} ({size / 1e6:.1f} MB), used by a recipe's last build: {len(used & set(keys))}")
    last = _last_remote(cache.root)
    url = args.remote or os.environ.get("EDGEBUILD_REMOTE") or (last or {}).get("url")
    if not url:
        print("remote: none (run --remote URL, or $EDGEBUILD_REMOTE)")
        return 0
    print(f"remote: {url}")
    if last and last.get("url") == url:
        from dataclasses import fields

        from edgebuild.engine.remote import Traffic

        known = {f.name for f in fields(Traffic)}
        t = Traffic(**{k: v for k, v in last.get("traffic", {}).items() if k in known})
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(last["at"]))
        mode = ", read-only" if last.get("read_only") else ""
        print(f"last build ({when}{mode}): {t.line().removeprefix('remote: ')}")
        if last.get("failure"):
            print(f"  the remote was given up: {last['failure']}")
    return 0


def _last_remote(root: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads((root / "remote.json").read_text()))
    except (OSError, ValueError):
        return None


def _remote(args: argparse.Namespace, root: Path, read_only: bool) -> Any:
    """The remote named by --remote URL, $EDGEBUILD_REMOTE or the last build, contacted now: one that cannot be
    used is an error here (this command's whole job is the remote)."""
    from edgebuild.commands._common import open_remote
    from edgebuild.errors import Problem, UserError

    url = args.remote or os.environ.get("EDGEBUILD_REMOTE") or (_last_remote(root) or {}).get("url")
    if not url:
        raise UserError(Problem(f"cache {args.action}: which remote cache?", None,
                                "give --remote URL (or set $EDGEBUILD_REMOTE)"))
    remote = open_remote(url, read_only, args.remote_timeout)
    failure = remote.check()
    if failure:
        hint = remote.warnings[-1].split("hint: ", 1)[-1] if remote.warnings else None
        raise UserError(Problem(f"the remote cache {url} could not be used: {failure}", None, hint))
    return remote


def _push(args: argparse.Namespace) -> int:
    """Upload the entries a recipe's last build used (built offline, or while the remote was down)."""
    from edgebuild.commands._common import read_history
    from edgebuild.engine.cache import Cache
    from edgebuild.errors import Problem, UserError

    if args.recipe is None:
        _usage("cache push needs the recipe whose entries to upload", "`edgebuild cache push recipes/vitals.yaml`")
    cache = Cache(_root(args))
    keys = [k for k in read_history(cache.root, args.recipe).get("keys", []) if cache.has(k)]
    if not keys:
        raise UserError(Problem(f"cache push: no build of {args.recipe} in {cache.root}", None,
                                f"build it first: `edgebuild run {args.recipe}` (with the same --cache)"))
    remote = _remote(args, cache.root, read_only=False)
    for key in keys + _state_keys(cache):
        remote.send(key, cache.entry(key))
    remote.finish(set(keys))
    for w in remote.warnings:
        print(w, file=sys.stderr)
    print(f"{args.recipe}: {remote.traffic.line()}")
    return 1 if remote.failure else 0


def _state_keys(cache: Any) -> list[str]:
    """Entries the cache's refs point at (TensorRT timing caches); their refs are not pushed: a ref belongs to
    the build that wrote it."""
    refs = cache.root / "refs"
    names = [f.relative_to(refs).as_posix()[:-5] for f in refs.rglob("*.json")] if refs.is_dir() else []
    return [k for k in (cache.ref(n) for n in names) if k]


def _gc_remote(args: argparse.Namespace, cache: Any) -> int:
    from edgebuild.engine import remote as remote_mod
    from edgebuild.errors import Problem, UserError

    if not args.older_than:
        _usage("cache gc --remote needs --older-than AGE", "`edgebuild cache gc --remote --older-than 30d`")
    try:
        age = remote_mod.parse_age(args.older_than)
    except ValueError:
        raise UserError(Problem(f"--older-than {args.older_than!r} is not an age", None,
                                "a number and a unit: 30d, 12h, 90m or 2w")) from None
    r = _remote(args, cache.root, read_only=False)
    try:
        swept = remote_mod.gc(r.store, age)
    except Exception as exc:   # the remote failed midway: what was dropped is gone, the rest stays
        from edgebuild.engine.stores import reason

        what, hint = reason(exc)
        raise UserError(Problem(f"cache gc --remote {r.url.text} stopped: {what}", None, hint)) from None
    print(f"removed {swept.removed} entries ({swept.freed / 1e6:.1f} MB) from {r.url.text} that no read-write build "
          f"used in {args.older_than}, and {swept.partial} abandoned uploads; kept {swept.kept}")
    return 0


def _usage(message: str, hint: str) -> NoReturn:
    from edgebuild.errors import Problem, UserError

    raise UserError(Problem(message, None, hint))
