"""`edgebuild run RECIPE`: the no-op check first, then plan, execute, publish and report."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgebuild.commands import _trust
from edgebuild.commands._common import (
    add_cache_arg,
    add_remote_args,
    cache_root,
    history_path,
    jobs_count,
)

if TYPE_CHECKING:   # a no-op run imports this module: the build's own modules are imported when it builds
    from edgebuild.checks.judge import Verdict
    from edgebuild.engine.cache import Cache
    from edgebuild.engine.cluster import Cluster
    from edgebuild.engine.execute import Executor, Outcome
    from edgebuild.engine.plan import Plan
    from edgebuild.engine.remote import Remote
    from edgebuild.engine.runners import Runner
    from edgebuild.errors import Problem
    from edgebuild.output.manifest import Manifest


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", type=Path, help="the recipe file (YAML)")
    p.add_argument("--target", action="append", default=[], metavar="T", help="build only this target (repeatable)")
    p.add_argument("--jobs", "-j", type=jobs_count, default=0, metavar="N", help="steps to run at once (default: number of cores)")
    p.add_argument("--out", type=Path, metavar="DIR", help="publish to DIR/<name>/ (default: dist/<name>/)")
    add_cache_arg(p)
    p.add_argument("--force", action="append", default=[], metavar="STEP", help="rerun this step even if cached (repeatable)")
    p.add_argument("--keep-going", "-k", action="store_true", help="after a failure, build what does not depend on it")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout instead of the table")
    p.add_argument("--strict", action="store_true",
                   help="fail (exit 1) when an artifact is deferred because this host cannot build it")
    add_remote_args(p)
    p.add_argument("--executor", metavar="URL", default=None,
                   help="build the steps on a Dask cluster: dask://HOST:8786 (default: $EDGEBUILD_EXECUTOR, else this "
                        "machine); needs --remote, a cache every worker can reach")
    p.add_argument("--wait", type=_wait_seconds, default=0.0, metavar="S",
                   help="with --executor: wait up to S seconds for a worker that can build a step before deferring it")
    p.add_argument("--executor-timeout", type=_wait_seconds, default=10.0, metavar="S",
                   help="with --executor: give up reaching the scheduler after S seconds (default: 10)")
    _trust.add_arguments(p)


def _wait_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds: give a number of 0 or more, such as 60")
    return value


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    from edgebuild.engine import fastpath

    root = cache_root(args.cache, args.recipe)
    args.out = args.out or Path("dist")
    record = fastpath.record_path(root, args.recipe, args.out, args.target)
    _trust.check(args)
    args.scheduler = _scheduler(args)
    if not args.force and not _trust.forces_build(args):
        rec = fastpath.up_to_date(record)   # it watches the lock: unchanged since a build that wrote or checked it
        # a deferred artifact is what --strict refuses, and what a cluster may now build
        if rec is not None and not ((args.strict or args.scheduler) and rec["summary"].get("deferred")):
            code = _print_noop(rec, args.json, time.perf_counter() - t0)
            _trust.after_noop(args, rec["summary"]["manifest"])
            return code
    return _build(args, root, record, t0)


def _scheduler(args: argparse.Namespace) -> str | None:
    """--executor (or $EDGEBUILD_EXECUTOR) as a scheduler address; checked before anything else, as is the remote
    cache it needs (the workers' only way to share inputs and outputs)."""
    text = args.executor if args.executor is not None else os.environ.get("EDGEBUILD_EXECUTOR", "")
    if not text.strip():
        return None
    from edgebuild.commands._common import remote_url
    from edgebuild.engine import cluster
    from edgebuild.errors import Problem, UserError

    address = cluster.parse_executor(text)
    if address is not None and remote_url(args.remote) is None:
        raise UserError(Problem(f"--executor {text.strip()} needs a remote cache that every worker can reach: "
                                "workers take their inputs from it and leave their outputs there", None,
                                "add --remote s3://bucket/prefix (or set EDGEBUILD_REMOTE); the workers need its "
                                "credentials too"))
    if address is not None and args.remote_read_only:
        raise UserError(Problem(f"--executor {text.strip()} cannot be used with --remote-read-only: the workers' "
                                "outputs come back through the remote cache", None,
                                "leave out --remote-read-only, or --executor to build here"))
    return address


def _print_noop(rec: dict[str, Any], as_json: bool, seconds: float) -> int:
    s = rec["summary"]
    if not as_json:
        _deferred_warnings(s.get("deferred", []))
        _lost_warnings(s.get("lost", []))
    if as_json:
        print(json.dumps(dict(s, status="up to date", seconds=round(seconds, 4)), indent=2))
    else:
        n = sum(len(v) for v in s["artifacts"].values())
        print(f"{s['name']}: up to date ({n} artifacts for {len(s['artifacts'])} targets in {s['manifest']}) [{seconds * 1000:.0f} ms]")
    return 0


def _build(args: argparse.Namespace, root: Path, record: Path, t0: float) -> int:
    from edgebuild.engine import runners

    # the runner gets ready while the recipe is planned (the workers' fork server loads its libraries); the
    # end-of-build table's modules are imported after that, while the main thread only waits for steps
    runner = runners.chosen()
    cluster = None
    if args.scheduler is not None:   # connecting (importing distributed, the handshake) overlaps planning
        from edgebuild.engine.cluster import Cluster

        cluster = Cluster(args.scheduler, args.executor_timeout)
    runner.warm_up(() if args.json else ("edgebuild.output.summary", "rich.console", "rich.table", "rich.text"))
    try:
        return _build_with(args, root, record, t0, runner, cluster)
    finally:
        if cluster is not None:
            cluster.close()


def _build_with(args: argparse.Namespace, root: Path, record: Path, t0: float, runner: Runner,
                cluster: Cluster | None) -> int:
    """Plan, execute, judge and publish; a build that failed raises BuildFailed after publishing what passed."""
    from edgebuild.commands._common import load_plan
    from edgebuild.trust import lock as lock_mod

    remote = _open_remote(args)
    plan, cache = load_plan(args.recipe, args.cache, args.target, set(args.force))
    pins = _route(args, plan, cluster, cache)
    out = _output_folder(plan, cache, args.out)
    lock = lock_mod.Session(args, plan, cache, out)   # --locked: a plan that differs from the lock fails here, first
    outcomes = _execute(args, plan, cache, runner, cluster, remote, pins)
    traffic = _finish_remote(remote, plan, outcomes, cache.root) if remote is not None else None
    if remote is not None and args.remote_required:
        _required(remote, remote.failure)
    from edgebuild.checks import judge
    from edgebuild.output import publish

    verdicts = judge.judge(plan, cache, outcomes, lock.choices)
    published: list[str] = []
    manifest = publish.publish(plan, cache, outcomes, out, verdicts, published, lock.release(verdicts))
    publish.write_build_log(out, plan, outcomes, t0)
    cache.stats.save()
    _write_history(plan, cache, outcomes, args.recipe)
    _check_failures(args, plan, outcomes, verdicts, manifest, published, out, traffic)
    summary = _summary(plan, manifest, out)
    _check_deferred(args, plan, summary)
    from edgebuild.engine import fastpath

    _trust.finish(args, lock, plan, manifest, verdicts, out)
    fastpath.write(record, _trust.watch(_record(plan, cache, outcomes, out, summary), lock))
    _print_result(args, plan, outcomes, manifest, summary, out, remote, traffic, t0)
    return 0


def _open_remote(args: argparse.Namespace) -> Remote | None:
    """The remote cache (--remote), its client's setup and first round trip started so they overlap planning."""
    from edgebuild.commands._common import open_remote, remote_url

    url = remote_url(args.remote)
    remote = open_remote(url, args.remote_read_only, args.remote_timeout) if url else None
    if remote is not None:
        remote.warm()
    return remote


def _route(args: argparse.Namespace, plan: Plan, cluster: Cluster | None, cache: Cache) -> dict[str, list[str]]:
    """With a cluster, deferral by what the connected workers offer, and the workers each device measurement
    is pinned to; without one, a warning for each `where: device` measurement taken here."""
    if cluster is not None:
        from edgebuild.engine import cluster as cluster_mod

        cluster.ready()
        return cluster_mod.route(plan, cluster, args.wait, cache)
    if (plan.recipe.checks.get("latency") or {}).get("where") == "device":
        from edgebuild.engine import cluster as cluster_mod

        cluster_mod.measured_here(plan)
    return {}


def _output_folder(plan: Plan, cache: Cache, out_arg: Path) -> Path:
    """dist/<name>/; an unusable --cache or --out fails now, before any step runs, not after the build."""
    from edgebuild.engine.cache import CACHE_HINT, make_folder
    from edgebuild.output import publish

    out = publish.out_dir(plan, out_arg)
    make_folder(cache.root, "cache folder", CACHE_HINT)
    make_folder(out, "output folder", publish.OUT_HINT)
    return out


def _execute(args: argparse.Namespace, plan: Plan, cache: Cache, runner: Runner, cluster: Cluster | None,
             remote: Remote | None, pins: dict[str, list[str]]) -> dict[str, Outcome]:
    """Run the plan, here or on the cluster, with the remote's downloads started ahead of the executor; a bug
    in edgebuild's own code ends the build here (nothing is published; what was built stays cached)."""
    from edgebuild.engine import progress
    from edgebuild.engine.execute import Executor
    from edgebuild.engine.plan import Planned

    missing = [n.key for n in plan.order() if n.status == Planned.RUN and n.step.id not in args.force]
    if remote is not None and args.remote_required and missing:
        _required(remote, remote.check())   # fail before building, not after
    executor: Callable[..., Executor] = Executor
    if cluster is not None:
        assert remote is not None   # --executor needs --remote (_scheduler)
        executor = _on_cluster(cluster, plan, cache, remote, args.remote_timeout, pins)
    if remote is not None:
        remote.prefetch(missing, cache)   # downloads in parallel, ahead of the executor
    for w in plan.warnings:
        print(w.render(), file=sys.stderr)
    reporter = progress.make(plan, quiet=args.json)
    try:
        outcomes = executor(plan, cache, reporter, args.jobs, args.keep_going, set(args.force), runner, remote).run()
    finally:
        reporter.close()
    bug = next((o for o in outcomes.values() if o.bug), None)
    if bug is not None:
        from edgebuild.errors import StepBug

        raise StepBug(bug.node, bug.bug or "")
    return outcomes


def _check_failures(args: argparse.Namespace, plan: Plan, outcomes: dict[str, Outcome], verdicts: dict[str, Verdict],
                    manifest: Manifest, published: list[str], out: Path, traffic: str | None) -> None:
    """Warn about each `best:` candidate whose step failed (the selection went on without it); raise BuildFailed
    when a required step or a check failed, after showing what this run did publish."""
    from edgebuild.engine.execute import Status
    from edgebuild.errors import BuildFailed, Problem

    failures = [o for o in outcomes.values() if o.status == Status.FAILED and not plan.nodes[o.node].optional]
    for o in outcomes.values():   # a `best:` candidate that failed lost the selection; the build goes on
        if o.status == Status.FAILED and plan.nodes[o.node].optional:
            p = _failure(plan, o)
            p.severity = "warning"
            p.message += "\n  it was only a `best:` candidate: the selection goes on without it (see the manifest)"
            print(p.render(), file=sys.stderr)
    failed_checks = [p for v in verdicts.values() for p in v.failures]
    if not (failures or failed_checks):
        return
    if traffic and not args.json:
        print(traffic)
    kept = sorted(t for t in plan.selected if t not in published and t in manifest.targets)
    # the table shows what this run published, never a kept entry as if it were new
    _print_table(manifest, [t for t in plan.selected if t in published], args.json)
    if not args.json:
        for t in plan.selected:
            if t not in published:
                print(f"{t}: not published by this run" + (" (dist keeps its last good build)" if t in kept else ""))
    where = (f"published to {out}: {', '.join(sorted(published))}" if published else "nothing was published")
    if kept:
        where += f" (kept from the last good build: {', '.join(kept)})"
    raise BuildFailed([_failure(plan, o) for o in failures] + failed_checks +
                      [Problem(f"{len(failures)} step(s) and {len(failed_checks)} check(s) failed; {where}; "
                               f"built steps and measurements stay cached", severity="note")])


def _check_deferred(args: argparse.Namespace, plan: Plan, summary: dict[str, Any]) -> None:
    """Warn about each deferred artifact, with the command that builds it on a matching host; --strict fails."""
    from edgebuild.errors import BuildFailed, Problem

    _deferred_warnings(summary["deferred"])
    if args.strict and summary["deferred"]:
        raise BuildFailed([Problem(f"{d['target']}: {d['step']} ({d['format']}) is deferred: {d['reason']}",
                                   plan.recipe.doc.at(("ship", d["target"]), key=True),
                                   f"build it on a matching host: {d['command']}") for d in summary["deferred"]])


def _print_result(args: argparse.Namespace, plan: Plan, outcomes: dict[str, Outcome], manifest: Manifest,
                  summary: dict[str, Any], out: Path, remote: Remote | None, traffic: str | None, t0: float) -> None:
    """A good build's last words: the JSON summary (--json), else the table, the totals and the remote's line."""
    if args.json:
        extra = {"remote": dict(vars(remote.traffic), url=remote.url.text, failure=remote.failure)} if remote else {}
        print(json.dumps(dict(summary, status="built", seconds=round(time.perf_counter() - t0, 3), **extra), indent=2))
        return
    from edgebuild.engine import progress

    _print_table(manifest, plan.selected, False)
    progress.print_totals(plan, outcomes, out, time.perf_counter() - t0)
    if traffic:
        print(traffic)


def _on_cluster(cluster: Cluster, plan: Plan, cache: Cache, remote: Remote, timeout_s: float,
                pins: dict[str, list[str]]) -> Callable[..., Executor]:
    """The cluster's executor, once the recipe's source files are on the remote cache for the workers (a remote
    that cannot be used ends the build here: the workers would have nothing to build from)."""
    import functools

    from edgebuild.engine import cluster as cluster_mod
    from edgebuild.engine.cluster_executor import ClusterExecutor
    from edgebuild.engine.remote import Gone

    _required(remote, remote.check())
    try:
        sources = cluster_mod.upload_sources(plan, remote, cache.stats)
    except Gone:
        sources = {}
    _required(remote, remote.failure)
    workers = cluster.workers()
    link = cluster.dashboard()
    print(f"dask: {len(workers)} worker(s) at {cluster.address}" + (f"; dashboard: {link}" if link else ""),
          file=sys.stderr, flush=True)
    return functools.partial(ClusterExecutor, cluster=cluster, sources=sources, timeout_s=timeout_s, pins=pins)


def _finish_remote(remote: Remote, plan: Plan, outcomes: dict[str, Outcome], root: Path) -> str:
    """Wait for the uploads, print the remote's warnings (one per failure), remember what this build fetched
    and sent for `cache info`; the summary line."""
    used = {plan.nodes[n].key for n, o in outcomes.items() if o.status.done}
    remote.finish(used)
    for w in remote.warnings:
        print(w, file=sys.stderr)
    from edgebuild.engine import fastpath

    fastpath.write(root / "remote.json", {"url": remote.url.text, "read_only": remote.read_only, "at": time.time(),
                                          "traffic": vars(remote.traffic), "failure": remote.failure})
    return str(remote.traffic.line())


def _required(remote: Remote, failure: str | None) -> None:
    """--remote-required: a remote that could not be used ends the build (exit 1) with the reason."""
    if failure is None:
        return
    from edgebuild.errors import Problem, UserError

    raise UserError(Problem(f"the remote cache {remote.url.text} could not be used: {failure}", None,
                            "without --remote-required the build goes on with the local cache and a warning"))


def _print_table(manifest: Manifest, targets: list[str], quiet: bool) -> None:
    if not quiet:
        from edgebuild.output import summary
        summary.print_table(manifest, targets)


def _failure(plan: Plan, o: Outcome) -> Problem:
    from edgebuild.errors import Problem

    node = plan.nodes[o.node]
    doc = plan.recipe.doc
    loc = doc.at(tuple(o.recipe_path)) if o.recipe_path else doc.at(("steps", node.step.id), key=True)
    log = "\n".join("    " + line for line in log_tail(o.log)) if o.log.strip() else ""
    msg = f"step '{o.node}' ({node.step.use}) failed: {o.message}"
    if log and not o.recipe_path:
        msg += f"\n  captured log (last lines):\n{log}"
    return Problem(msg, loc, o.hint)


def log_tail(text: str, lines: int = 40) -> list[str]:
    """The last lines of a step's log as a terminal should show them: without the colour codes some
    libraries write (ONNX Runtime's errors), and with a run of identical lines (a warning per traced
    layer) shown once with its count."""
    from edgebuild.errors import strip_ansi

    out: list[str] = []
    count = 0
    for line in strip_ansi(text).rstrip().splitlines():
        line = line.rstrip()
        if out and line == out[-1]:
            count += 1
            continue
        if count:
            out.append(f"(the line above {count} more time{'s' if count > 1 else ''})")
            count = 0
        out.append(line)
    if count:
        out.append(f"(the line above {count} more time{'s' if count > 1 else ''})")
    return [x for x in out if x.strip()][-lines:]


def _summary(plan: Plan, manifest: Manifest, out: Path) -> dict[str, Any]:
    """What `--json` prints and the no-op record keeps: the artifacts of this run's targets, the deferred ones,
    and the `best:` candidates lost because their step failed."""
    chosen = {t: v for t, v in manifest.targets.items() if t in plan.selected}
    return {"name": plan.recipe.name, "manifest": os.path.relpath(out / "manifest.json"),
            "artifacts": {t: [a.path for a in v.artifacts] for t, v in chosen.items()},
            "deferred": [dict(d.to_dict(), target=t) for t, v in chosen.items() for d in v.deferred],
            "lost": [{"target": t, "step": c["step"], "why": c["why"]} for t, v in chosen.items()
                     for c in (v.selection or {}).get("candidates", []) if c.get("checks") is None]}


def _lost_warnings(lost: list[dict[str, Any]]) -> None:
    """Repeated by a no-op run: a `best:` candidate whose step failed is not retried until something changes."""
    for d in lost:
        print(f"warning: {d['target']}: `best:` candidate {d['step']} {d['why']}", file=sys.stderr)


def _deferred_warnings(deferred: list[dict[str, Any]]) -> None:
    for d in deferred:
        print(f"warning: {d['target']}: {d['step']} ({d['format']}) was not built here: {d['reason']}\n"
              f"  build it on a matching host with: {d['command']}", file=sys.stderr)


def _write_history(plan: Plan, cache: Cache, outcomes: dict[str, Outcome], recipe: Path) -> None:
    """Remember each built node's key material, so `explain` and `plan` can say what changed."""
    from edgebuild.commands._common import read_history
    from edgebuild.engine import fastpath

    hist = read_history(cache.root, recipe)
    mats = hist.get("materials", {})
    for nid, o in outcomes.items():
        if o.status.done:
            mats[nid] = plan.nodes[nid].material
    keys = sorted({plan.nodes[n].key for n, o in outcomes.items() if o.status.done})
    fastpath.write(history_path(cache.root, recipe), {"materials": mats, "keys": keys})


def _record(plan: Plan, cache: Cache, outcomes: dict[str, Outcome], out: Path, summary: dict[str, Any]) -> dict[str, Any]:
    from edgebuild.engine import fastpath
    from edgebuild.engine.plan import watched_files

    stats = cache.stats
    watched = {str(Path(p).resolve()): stats.stamp(p) for p in watched_files(plan)}
    outputs = [out / "manifest.json"] + [out / a for arts in summary["artifacts"].values() for a in arts]
    files = [f for p in outputs for f in ([p] if p.is_file() else sorted(x for x in p.rglob("*") if x.is_file()))]
    for n in plan.order():
        files += sorted(f for f in cache.entry(n.key).rglob("*") if f.is_file())
    stats.save()
    return {"watched": watched, "outputs": fastpath.stamp_outputs(files), "summary": summary,
            "keys": sorted(n.key for n in plan.order()), "conditions": fastpath.conditions()}
