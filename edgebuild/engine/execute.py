"""Stage 5: run the plan: cache hits are free, misses are handed to a runner (runners.py: worker processes
forked from a fork server by default), in parallel."""

from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from edgebuild.engine import runners
from edgebuild.engine.cache import Cache
from edgebuild.engine.digest import sha256_file, sha256_json
from edgebuild.engine.plan import Node, Plan, Word

if TYPE_CHECKING:
    from edgebuild.engine.remote import Remote


class Status(Word):
    """What happened to a node: its entry came from a cache, it was built, its step failed, it was not run
    because an input failed, or it waits for a host that can build it."""

    CACHED = "cached"
    BUILT = "built"
    FAILED = "failed"
    SKIPPED = "skipped"
    DEFERRED = "deferred"

    @property
    def done(self) -> bool:
        """Whether the node's entry is in the cache now (what later nodes, history and the remote can use)."""
        return self in (Status.CACHED, Status.BUILT)


@dataclass
class Outcome:
    """What happened to one node."""

    node: str
    status: Status
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    hint: str | None = None
    recipe_path: list[Any] | None = None
    log: str = ""
    notes: list[str] = field(default_factory=list)   # e.g. "cache entry was corrupt; rebuilt"
    work_seconds: float = 0.0     # time inside the step's run(), as the worker measured it
    started: float = 0.0          # time.perf_counter() when the executor took the node up
    bug: str | None = None        # the worker's traceback when edgebuild's own code raised (exit 2, not a step failure)
    fetched: int | None = None    # bytes downloaded from the remote cache ("cached" from there), None otherwise
    worker: str | None = None     # the Dask worker that built it (run --executor dask://...), None: this host
    dispatch_seconds: float = 0.0 # on a cluster: the task's round trip beyond its own work (scheduling, transfer)


class Reporter(Protocol):
    def started(self, node: Node) -> None: ...
    def finished(self, node: Node, outcome: Outcome) -> None: ...


class Executor:
    def __init__(self, plan: Plan, cache: Cache, reporter: Reporter, jobs: int = 0,
                 keep_going: bool = False, force: set[str] | None = None, runner: runners.Runner | None = None,
                 remote: Remote | None = None):
        self.plan, self.cache, self.reporter, self.remote = plan, cache, reporter, remote
        self.runner = runner if runner is not None else runners.chosen()
        self.jobs = jobs or os.cpu_count() or 1
        self.keep_going = keep_going
        self.force = force or set()
        self.outcomes: dict[str, Outcome] = {}

    def run(self) -> dict[str, Outcome]:
        pending = {n.id: n for n in self.plan.order()}
        running: dict[Future[Outcome], Node] = {}
        stop = False
        try:
            with ThreadPoolExecutor(max_workers=self.jobs) as pool:
                while pending or running:
                    for node in self._ready(pending, stop, list(running.values())):
                        del pending[node.id]
                        self.reporter.started(node)
                        running[pool.submit(self._do, node)] = node
                    if not running:
                        break
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for fut in done:
                        node = running.pop(fut)
                        outcome = fut.result()
                        self.outcomes[node.id] = outcome
                        self.reporter.finished(node, outcome)
                        stop = stop or (outcome.status == Status.FAILED and not self.keep_going and not node.optional)
        finally:   # interrupted too: spare workers go now, not when this process ends
            self.runner.close()
        for node in pending.values():
            self.outcomes[node.id] = Outcome(node.id, Status.SKIPPED, message="not run: an earlier step failed")
        return self.outcomes

    def _ready(self, pending: dict[str, Node], stop: bool, running: list[Node]) -> list[Node]:
        """Nodes whose inputs are done; an exclusive node (a timing measurement) starts only alone."""
        if stop or any(n.step.kind.exclusive for n in running):
            return []
        ready: list[Node] = []
        busy = {n.key for n in running}
        for node in list(pending.values()):
            if node.key in busy or any(n.key == node.key for n in ready):
                continue   # the same key for another target (it resolved alike): one build, then a cache hit
            deps = [d for d in [node.upstream, *node.refs.values()] if d]
            done = [self.outcomes.get(d) for d in deps]
            if any(o is None for o in done):
                continue
            if any(o is not None and o.status in (Status.FAILED, Status.SKIPPED) for o in done):
                del pending[node.id]
                self.outcomes[node.id] = Outcome(node.id, Status.SKIPPED, message=f"not run: {node.upstream} failed")
                continue
            ready.append(node)
        plain = [n for n in ready if not n.step.kind.exclusive]
        if plain:
            return plain
        return ready[:1] if ready and not running else []

    def _do(self, node: Node) -> Outcome:
        if node.deferred:
            return Outcome(node.id, Status.DEFERRED, message=node.deferred)
        t0 = time.perf_counter()
        outcome = self._decide(node, t0)
        outcome.started = t0
        return outcome

    def _decide(self, node: Node, t0: float) -> Outcome:
        forced = node.step.id in self.force
        notes: list[str] = []
        if not forced and self.cache.has(node.key):
            bad = self.cache.verify(node.key)
            if not bad:
                return Outcome(node.id, Status.CACHED, time.perf_counter() - t0, self.cache.meta(node.key).get("info", {}))
            notes.append(f"cache entry {node.key[:12]} was corrupt ({', '.join(bad)} changed): dropped and rebuilt")
            self.cache.drop(node.key)
        with self.cache.lock(node.key):
            if not forced and self.cache.has(node.key):  # another edgebuild process built it meanwhile
                return Outcome(node.id, Status.CACHED, time.perf_counter() - t0, self.cache.meta(node.key).get("info", {}))
            fetched = self.remote.fetch(node.key, self.cache) if self.remote is not None and not forced else None
            if fetched is not None:   # read through: verified, then renamed into the local cache
                return Outcome(node.id, Status.CACHED, time.perf_counter() - t0, self.cache.meta(node.key).get("info", {}),
                               notes=notes, fetched=fetched)
            outcome = self._build(node)
            if outcome.status == Status.BUILT and self.remote is not None and outcome.worker is None:   # (a Dask
                self.remote.send(node.key, self.cache.entry(node.key))   # worker uploaded its own) uploads overlap the steps that follow
        outcome.seconds = time.perf_counter() - t0
        outcome.notes = notes
        return outcome

    def _build(self, node: Node) -> Outcome:
        scratch = self.cache.scratch(node.key)
        out_dir = scratch / "out"
        out_dir.mkdir()
        state = node.step.kind.state_name(node.target.data if node.target else None)
        try:
            job = self._job(node, out_dir, scratch / "result.json")
            if state is not None:
                (scratch / "state").mkdir()
                job.update(state_in=[str(d) for d in self._state_in(state)], state_out=str(scratch / "state"))
            (scratch / "job.json").write_text(json.dumps(job, indent=1))
            log_path = scratch / "log.txt"
            code = self.runner.run(scratch / "job.json", log_path, exclusive=node.step.kind.exclusive)
            text = log_path.read_text(errors="replace") if log_path.exists() else ""
            result = _read_result(scratch / "result.json", code)
            if not result.get("ok"):
                return Outcome(node.id, Status.FAILED, message=result.get("message", "failed"), hint=result.get("hint"),
                               recipe_path=result.get("recipe_path"), log=text, bug=result.get("bug"))
            shutil.move(str(log_path), out_dir / "log.txt")
            meta = {"node": node.id, "use": node.step.use, "info": result["info"], "material": node.material}
            self.cache.commit(node.key, out_dir, meta)
            if state is not None:
                self._keep_state(state, scratch / "state")
            return Outcome(node.id, Status.BUILT, info=result["info"], log=text, work_seconds=result.get("seconds", 0.0))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _state_in(self, name: str) -> list[Path]:
        """The latest versions of a carried state: this cache's, and the remote's when it differs."""
        keys = [self.cache.ref(name), self.remote.fetch_ref(name, self.cache) if self.remote is not None else None]
        return [self.cache.entry(k) for k in dict.fromkeys(k for k in keys if k)]

    def _keep_state(self, name: str, folder: Path) -> None:
        """A step's new state becomes an entry (keyed by its content) that the ref names, here and remotely."""
        files = {f.relative_to(folder).as_posix(): sha256_file(f) for f in sorted(folder.rglob("*")) if f.is_file()}
        if not files:
            return
        key = sha256_json({"state": name, "files": files})
        with self.cache.lock(key):
            if not self.cache.has(key):
                self.cache.commit(key, folder, {"state": name, "info": {}})
        self.cache.set_ref(name, key)
        if self.remote is not None:
            self.remote.send(key, self.cache.entry(key))
            self.remote.send_ref(name, key)

    def _job(self, node: Node, out_dir: Path, result: Path) -> dict[str, Any]:
        r = self.plan.recipe
        src = {"onnx": str(r.model["onnx"])} if "onnx" in r.model else {"pytorch": {
            "factory": r.model["pytorch"]["factory"],   # as written: relative to recipe_dir
            "weights": str(r.model["pytorch"]["weights"]) if r.model["pytorch"]["weights"] else None}}
        return {
            "use": node.step.use, "step_id": node.step.id, "params": node.step.params,
            "input_dir": str(self.cache.entry(self.plan.nodes[node.upstream].key)) if node.upstream else None,
            "source": src, "inputs": r.inputs, "data": {k: str(v) for k, v in r.data.items()},
            "out_dir": str(out_dir), "ir_version": node.ir_version, "max_opset": node.max_opset,
            "target": node.target.data if node.target else None, "recipe_dir": str(r.dir), "result": str(result),
            "refs": {role: str(self.cache.entry(self.plan.nodes[nid].key)) for role, nid in node.refs.items()},
            "kind_ref": node.kind_ref, "cache_dir": str(self.cache.root / "shared"),
        }


def _read_result(path: Path, rc: int) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        how = f"exit code {rc}"
        if rc < 0:
            import signal

            try:
                how = f"killed by {signal.Signals(-rc).name}"
            except ValueError:
                how = f"killed by signal {-rc}"
        return {"ok": False, "message": f"the step's worker process died ({how}) before reporting a result",
                "hint": "see the log above; a crash inside a native library (onnxruntime, torch) ends the worker this way"}
