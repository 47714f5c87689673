"""`edgebuild worker tcp://HOST:8786`: this host as a Dask worker of `run --executor dask://HOST:8786`.

It starts distributed's own worker (with its nanny, which restarts a worker that dies), preloaded with
edgebuild, advertising this host's hardware as Dask resources (`arch-…`, `cuda-smNN`, `tensorrt-X.Y`,
`device-<profile>`), so steps that need them are routed here.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("scheduler", nargs="?", default=None,
                   help="the Dask scheduler's address: tcp://HOST:8786 (HOST:PORT and HOST also work)")
    p.add_argument("--resources", metavar="NAME=N,...", default=None,
                   help="resources to advertise besides those detected, or instead of them (NAME=0 removes one)")
    p.add_argument("--nthreads", type=_count, default=1, metavar="N",
                   help="steps this worker runs at once (default: 1; a measurement runs alone anyway)")
    p.add_argument("--name", default=None, help="the worker's name on the dashboard (default: this host's name)")
    p.add_argument("--cache", type=Path, metavar="DIR", default=None,
                   help="this worker's own cache (default: $EDGEBUILD_WORKER_CACHE, else ~/.cache/edgebuild/worker)")
    p.add_argument("--no-nanny", action="store_true", help="run the worker without distributed's nanny process")
    p.add_argument("--print", action="store_true", help="print what this worker would advertise, and exit")


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of threads: give an integer of 1 or more")
    return value


def run(args: argparse.Namespace) -> int:
    from edgebuild.engine import cluster

    if args.scheduler is None and not args.print:
        from edgebuild.errors import Problem, UserError

        raise UserError(Problem("edgebuild worker needs the scheduler's address", None,
                                "edgebuild worker tcp://HOST:8786, or `edgebuild worker --print` to see what this host "
                                "would advertise"))
    address = cluster.parse_scheduler(args.scheduler) if args.scheduler else "tcp://SCHEDULER:8786"
    resources = cluster.host_resources()
    if args.resources is not None:
        resources.update(cluster.parse_resources(args.resources))
    resources = {k: v for k, v in sorted(resources.items()) if v > 0}
    argv = [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", str(args.nthreads),
            "--resources", " ".join(f"{k}={v:g}" for k, v in resources.items()),
            "--preload", "edgebuild.engine.cluster_task", "--name", args.name or f"{cluster.hostname()}-{os.getpid()}",
            "--no-dashboard"] + (["--no-nanny"] if args.no_nanny else [])
    if args.print:
        for k, v in resources.items():
            print(f"{k}={v:g}")
        print(f"# would run: {' '.join(argv[1:])}")
        return 0
    _check_installed()
    if args.cache is not None:
        os.environ["EDGEBUILD_WORKER_CACHE"] = str(args.cache.resolve())
    # the nanny starts its worker as a daemonic process, which multiprocessing forbids to have children: the step
    # runner's fork server is one
    os.environ.setdefault("DASK_DISTRIBUTED__WORKER__DAEMON", "False")
    print(f"edgebuild worker: joining {address} with {', '.join(f'{k}={v:g}' for k, v in resources.items())}",
          file=sys.stderr, flush=True)
    os.execv(sys.executable, argv)   # distributed's own worker CLI: its signals, its logging, its reconnects


def _check_installed() -> None:
    from edgebuild.engine import dists

    if dists.version("distributed") is None:
        from edgebuild.errors import Problem, UserError

        raise UserError(Problem("edgebuild worker needs Dask's distributed package, which is not installed", None,
                                "pip install 'edgebuild[dask]'"))
