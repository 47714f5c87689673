"""Builds across machines on Dask: the executor. Each node that misses the caches becomes one Dask task keyed by
its cache key, with the resources its step kind asks for, run by `cluster_task.build` on a worker; its output
comes back through the remote cache, never through the scheduler."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgebuild.engine.cluster import Cluster, needs
from edgebuild.engine.execute import Executor, Outcome, Status

if TYPE_CHECKING:
    from edgebuild.engine.plan import Node

CLIENT_THREADS = 64   # nodes in flight at once: the client's threads only wait for their tasks


class ClusterExecutor(Executor):
    """The local executor's graph walk and caches, with each node that misses them built by a Dask task on a
    worker: the entry comes back through the remote cache. Host-specific nodes (timing measurements, whose key
    takes this host's hardware class) are still measured here."""

    def __init__(self, plan: Any, cache: Any, reporter: Any, jobs: int = 0, *args: Any, cluster: Cluster,
                 sources: dict[str, Any], timeout_s: float, pins: dict[str, list[str]], **kw: Any):
        # --jobs left out: as many nodes in flight as the cluster may take, not this host's cores
        super().__init__(plan, cache, reporter, jobs or CLIENT_THREADS, *args, **kw)
        self.cluster, self.sources, self.timeout_s, self.pins = cluster, sources, timeout_s, pins

    def _build(self, node: Node) -> Outcome:
        if node.step.kind.host_specific and node.id not in self.pins:
            return super()._build(node)   # a measurement of this host
        assert self.remote is not None
        spec = self._spec(node)
        t0 = time.perf_counter()
        try:
            fut = self.cluster.client.submit(_task, spec, key=node.key, resources=needs(node) or None, pure=False,
                                             workers=self.pins.get(node.id), allow_other_workers=False)
            result = fut.result()
            fut.release()
        except Exception as exc:   # noqa: BLE001 - every way a task ends without a result is reported below
            return self._lost(node, exc)
        if not result.get("ok"):
            return Outcome(node.id, Status.FAILED, message=result.get("message", "failed"), hint=result.get("hint"),
                           recipe_path=result.get("recipe_path"), log=result.get("log", ""), bug=result.get("bug"),
                           worker=result.get("worker"))
        if not self.cache.has(node.key) and self.remote.fetch(node.key, self.cache) is None:
            return Outcome(node.id, Status.FAILED, message=f"built on {result.get('worker')}, but its entry could not be "
                           f"downloaded from the remote cache {self.remote.url.text}", log=result.get("log", ""),
                           hint="check that this machine and the workers use the same remote cache and credentials")
        return Outcome(node.id, Status.BUILT, info=self.cache.meta(node.key).get("info", {}), log=result.get("log", ""),
                       work_seconds=float(result.get("seconds", 0.0)), worker=result.get("worker"),
                       dispatch_seconds=max(time.perf_counter() - t0 - float(result.get("task_seconds", 0.0)), 0.0))

    def _spec(self, node: Node) -> dict[str, Any]:
        assert self.remote is not None
        job = self._job(node, Path("OUT"), Path("RESULT"))
        up = self.plan.nodes[node.upstream].key if node.upstream else None
        return {"key": node.key, "node": node.id, "use": node.step.use, "material": node.material, "job": job,
                "input_key": up, "ref_keys": {role: self.plan.nodes[nid].key for role, nid in node.refs.items()},
                "state": node.step.kind.state_name(node.target.data if node.target else None),
                "exclusive": node.step.kind.exclusive, "remote": self.remote.url.text, "timeout_s": self.timeout_s,
                "sources": self.sources, "recipe_dir": str(self.plan.recipe.dir.resolve()),
                "force": node.step.id in self.force}

    def _lost(self, node: Node, exc: BaseException) -> Outcome:
        kind = type(exc).__name__
        if kind == "KilledWorker":
            times = getattr(exc, "allowed_failures", None) or _allowed_failures()   # the scheduler's setting
            return Outcome(node.id, Status.FAILED, message=f"its worker died {times} times while running it "
                           f"(the last: {_who(getattr(exc, 'last_worker', None))})",
                           hint="each worker's own log says why it died (memory? a native crash?); the step's log is in "
                                "that worker's cache under tmp/")
        if kind in ("CancelledError", "FutureCancelledError", "CommClosedError", "TimeoutError", "OSError") \
                or "scheduler" in str(exc).lower() or not self._connected():
            return Outcome(node.id, Status.FAILED, message=f"the Dask scheduler at {self.cluster.address} went away while "
                           f"the step ran ({kind})", hint="what finished is in the remote cache: run again once the "
                           "scheduler is back, and those steps are not built again")
        import traceback

        return Outcome(node.id, Status.FAILED, message=f"the Dask task failed: {kind}: {exc}",
                       bug="".join(traceback.format_exception(exc)))

    def _connected(self) -> bool:
        try:
            return str(self.cluster.client.status) == "running"
        except Exception:
            return False


def _who(worker: Any) -> str:
    """A worker as Dask's KilledWorker names it (a WorkerState, or its address): its name and address."""
    if worker is None:
        return "unknown"
    address = getattr(worker, "address", None) or str(worker)
    name = getattr(worker, "name", None)
    return f"{name} at {address}" if name is not None and str(name) != address else address


def _allowed_failures() -> int:
    try:
        import dask

        return int(dask.config.get("distributed.scheduler.allowed-failures"))
    except Exception:
        return 3


def _task(spec: dict[str, Any]) -> dict[str, Any]:
    """The Dask task: cluster_task.build on the worker (a module-level function: Dask pickles it by name)."""
    t0 = time.perf_counter()
    from edgebuild.engine import cluster_task

    out = cluster_task.build(spec)
    out["task_seconds"] = time.perf_counter() - t0
    return out
