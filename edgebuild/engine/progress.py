"""Showing a build as it runs: a live rich view on a terminal, plain log lines elsewhere (CI)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from edgebuild.engine.execute import Outcome, Status
from edgebuild.engine.plan import Node, Plan


class PlainReporter:
    """One line per event; what CI logs get."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet

    def started(self, node: Node) -> None:
        pass

    def finished(self, node: Node, o: Outcome) -> None:
        if self.quiet:
            return
        extra = f" ({o.seconds:.1f}s)" if o.status == Status.BUILT else ""
        if o.fetched is not None:
            extra = f" (from the remote cache: {o.fetched / 1e6:.1f} MB in {o.seconds:.1f}s)"
        if o.worker:
            extra += f" on {o.worker}"
        print(f"{o.status:>7}  {node.id}  [{node.step.use}]{extra}", file=sys.stderr, flush=True)
        for note in o.notes:
            print(f"   note: {note}", file=sys.stderr)

    def close(self) -> None:
        pass


class LiveReporter(PlainReporter):
    """A rich Live table: one line per step, with elapsed time while it runs."""

    def __init__(self, plan: Plan):
        super().__init__()
        from rich.console import Console
        from rich.live import Live

        self.console = Console(stderr=True)
        self.rows: dict[str, tuple[str, float, float]] = {n.id: ("waiting", 0.0, 0.0) for n in plan.order()}
        self.plan = plan
        self.fetched: set[str] = set()   # nodes downloaded from the remote cache
        self.workers: dict[str, str] = {}   # nodes built by a Dask worker: which one
        self.live = Live(self._table(), console=self.console, refresh_per_second=8, transient=False,
                         get_renderable=self._table)
        self.live.start()

    def _table(self) -> Any:
        from rich.table import Table

        t = Table(box=None, show_header=False, padding=(0, 1))
        styles = {"waiting": "dim", "running": "yellow", "cached": "green", "built": "bold green",
                  "failed": "bold red", "skipped": "dim red"}
        for nid, (state, start, secs) in self.rows.items():
            elapsed = time.perf_counter() - start if state == "running" else secs
            when = f"{elapsed:.1f}s" if state in ("running", "built", "failed") else ""
            if nid in self.fetched:
                when = f"remote {elapsed:.1f}s"
            if nid in self.workers:
                when += f" on {self.workers[nid]}"
            t.add_row(f"[{styles[state]}]{state}[/]", nid, f"[dim]{self.plan.nodes[nid].step.use}[/]", when)
        return t

    def started(self, node: Node) -> None:
        self.rows[node.id] = ("running", time.perf_counter(), 0.0)

    def finished(self, node: Node, o: Outcome) -> None:
        self.rows[node.id] = (o.status.value, 0.0, o.seconds)
        if o.worker:
            self.workers[node.id] = o.worker
        if o.fetched is not None:
            self.fetched.add(node.id)
        for note in o.notes:
            self.console.print(f"[yellow]note:[/] {note}")

    def close(self) -> None:
        for nid, (state, _, _) in self.rows.items():
            if state == "waiting":
                self.rows[nid] = ("skipped", 0.0, 0.0)
        self.live.stop()


def make(plan: Plan, quiet: bool = False) -> PlainReporter:
    if not quiet and sys.stderr.isatty():
        return LiveReporter(plan)
    return PlainReporter(quiet)


def print_totals(plan: Plan, outcomes: dict[str, Outcome], out: Path, seconds: float) -> None:
    """One line: what was built and what came from the cache."""
    counts = {s: sum(1 for o in outcomes.values() if o.status == s) for s in Status}
    extra = "".join(f", {counts[s]} {s}" for s in (Status.FAILED, Status.SKIPPED, Status.DEFERRED) if counts[s])
    print(f"{plan.recipe.name}: {counts[Status.BUILT]} built, {counts[Status.CACHED]} cached{extra} in {seconds:.1f}s; "
          f"manifest: {out / 'manifest.json'}")
