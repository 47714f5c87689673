"""Builds across machines on Dask (`run --executor dask://HOST:8786`): the client side.

What a host advertises (`host_resources`: arch, CUDA SM, TensorRT, the device profile it is), what each plan
node asks for (`StepKind.resources`), routing at plan time (a node no connected worker can take is deferred,
with the `edgebuild worker` command that would take it), the source files a worker needs, put on the remote
cache by digest, and the connection to the scheduler. The executor is `cluster_executor.py`, the worker's side
`cluster_task.py`. Only the standard library is imported here; distributed is imported when a build connects.
"""

from __future__ import annotations

import os
import platform
import re
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgebuild.errors import Problem, UserError

if TYPE_CHECKING:
    from edgebuild.engine.plan import Node, Plan

ENV = "EDGEBUILD_EXECUTOR"
DEFAULT_PORT = 8786
EXECUTOR_HINT = "--executor takes dask://HOST:PORT, the address of a Dask scheduler (`dask scheduler` prints it); " \
                "leave it out (or EDGEBUILD_EXECUTOR unset) to build on this machine"
RESOURCE_HINT = "--resources takes NAME=N pairs separated by commas, such as cuda-sm87=1,tensorrt-10.3=1"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")



# addresses ------------------------------------------------------------------------------------------------

def parse_executor(text: str) -> str | None:
    """--executor's value as a scheduler address (tcp://HOST:PORT), None for the local executor; a malformed
    one is a user error before anything is planned."""
    t = text.strip()
    if t in ("", "local"):
        return None
    if "://" not in t:
        raise _bad_executor(text, "it has no scheme: write dask://HOST:PORT")
    scheme, rest = t.split("://", 1)
    if scheme.lower() != "dask":
        raise _bad_executor(text, f"{scheme}:// is not an executor edgebuild knows (dask:// is)")
    return "tcp://" + _host_port(rest, lambda why: _bad_executor(text, why))


def parse_scheduler(text: str) -> str:
    """`edgebuild worker`'s scheduler address: tcp://HOST:PORT, HOST:PORT or HOST (port 8786)."""
    t = text.strip()
    if "://" in t:
        scheme, t = t.split("://", 1)
        if scheme.lower() not in ("tcp", "dask"):
            raise UserError(Problem(f"scheduler address {text!r}: {scheme}:// is not supported", None,
                                    "give the scheduler's address as tcp://HOST:8786"))
    return "tcp://" + _host_port(t, lambda why: UserError(Problem(f"scheduler address {text!r} is malformed: {why}",
                                                                  None, "give it as tcp://HOST:8786")))


def _host_port(rest: str, bad: Any) -> str:
    rest = rest.rstrip("/")
    if not rest or "/" in rest:
        raise bad("it names no host" if not rest else "a scheduler address has no path")
    host, sep, port = rest.rpartition(":") if not rest.endswith("]") else (rest, "", "")
    if not sep:
        host, port = rest, str(DEFAULT_PORT)
    if not host or not re.fullmatch(r"[A-Za-z0-9_.\-\[\]:]+", host):
        raise bad(f"'{host}' is not a host name")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise bad(f"'{port}' is not a port number")
    return f"{host}:{int(port)}"


def _bad_executor(text: str, why: str) -> UserError:
    return UserError(Problem(f"--executor {text!r} is malformed: {why}", None, EXECUTOR_HINT))


def executor_arg(arg: str | None) -> str | None:
    """--executor, else $EDGEBUILD_EXECUTOR; its scheduler address, None for the local executor."""
    text = arg if arg is not None else os.environ.get(ENV, "")
    return parse_executor(text)


# resources ------------------------------------------------------------------------------------------------

def parse_resources(text: str) -> dict[str, float]:
    """`NAME=N,NAME=N` (commas or spaces between pairs) as Dask resources; a user error saying which pair is
    wrong otherwise."""
    out: dict[str, float] = {}
    for pair in text.replace(",", " ").split():
        name, eq, value = pair.partition("=")
        if not eq:
            raise _bad_resource(text, f"'{pair}' has no '=N' (a count)")
        if not NAME.fullmatch(name):
            raise _bad_resource(text, f"'{name}' is not a resource name (letters, digits, '-', '.', '_')"
                                if name else f"'{pair}' has no name before '='")
        try:
            n = float(value)
        except ValueError:
            n = -1.0
        if not 0 <= n < float("inf"):
            raise _bad_resource(text, f"'{value}' in '{pair}' is not a count (a number of 0 or more)")
        out[name] = n
    if not out:
        raise _bad_resource(text, "it is empty")
    return out


def _bad_resource(text: str, why: str) -> UserError:
    return UserError(Problem(f"--resources {text!r}: {why}", None, RESOURCE_HINT))


def host_resources() -> dict[str, float]:
    """What this host offers, detected as routing detects it: `arch-<machine>`, `cuda-smNN` and
    `tensorrt-X.Y` where present, `device-<profile>` where the host is a shipped target profile's device."""
    from edgebuild.engine import hostinfo

    out = {f"arch-{platform.machine() or 'unknown'}": 1.0}
    g = hostinfo.gpu()
    if g is not None:
        out[f"cuda-sm{g.compute_capability.replace('.', '')}"] = 1.0
    trt = hostinfo.tensorrt_version()
    if trt is not None:
        out[f"tensorrt-{trt}"] = 1.0
    device = device_profile(hostinfo.device_model())
    if device is not None:
        out[f"device-{device}"] = 1.0
    return out


def device_profile(model: str | None) -> str | None:
    """The shipped target profile a device's model string names ("NVIDIA Jetson Orin Nano Developer Kit" ->
    jetson-orin-nano): the profile whose name's words appear together in it, the longest such name."""
    if not model:
        return None
    words = re.findall(r"[a-z0-9]+", model.lower())
    text = f" {' '.join(words)} "
    from edgebuild.frontend import targets

    names = targets.available()
    found = [n for n in names if f" {' '.join(n.split('-'))} " in text]
    return max(found, key=lambda n: (len(n.split("-")), n)) if found else None


def needs(node: Node) -> dict[str, float]:
    """The Dask resources a node asks for: its step kind's, for its target."""
    return node.step.kind.resources(node.step.params, node.target) if node.target is not None else {}


def worker_command(address: str, missing: list[str]) -> str:
    pairs = ",".join(f"{r}=1" for r in missing)
    return f"edgebuild worker {address}" + (f" --resources {pairs}" if pairs else "")


# the connection -------------------------------------------------------------------------------------------

class Cluster:
    """One build's connection to a Dask scheduler, made on a background thread while the recipe is planned."""

    def __init__(self, address: str, timeout_s: float):
        self.address, self.timeout_s = address, timeout_s
        self.client: Any = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._connect, name="edgebuild-dask-connect", daemon=True)
        self._thread.start()

    def _connect(self) -> None:
        try:
            import logging

            from distributed import Client

            for name in ["distributed", *logging.root.manager.loggerDict]:   # its reconnect errors and tracebacks:
                if name.split(".")[0] in ("distributed", "tornado"):          # the outcome of each step says it
                    logging.getLogger(name).setLevel(logging.CRITICAL)
            self.client = Client(self.address, timeout=self.timeout_s, set_as_default=False,
                                 name=f"edgebuild-{socket.gethostname()}-{os.getpid()}")
        except BaseException as exc:   # handed to the main thread by ready()
            self.error = exc

    def ready(self) -> Any:
        """The connected client, or a user error saying why there is none (exit 1 within the timeout)."""
        self._thread.join(self.timeout_s + 5)
        if self.client is None:
            why = f"{type(self.error).__name__}: {self.error}" if self.error else f"no answer within {self.timeout_s:g} s"
            raise UserError(Problem(f"cannot reach the Dask scheduler at {self.address}: {' '.join(why.split())[:300]}",
                                    None, "start one with `dask scheduler` (pip install 'edgebuild[dask]') and check "
                                          "the address; or leave out --executor to build here"))
        return self.client

    def workers(self) -> dict[str, dict[str, Any]]:
        """Connected workers: address -> {resources, host, name}."""
        info = self.client.scheduler_info(n_workers=-1) if _takes_n_workers(self.client) else self.client.scheduler_info()
        return {a: {"resources": w.get("resources") or {}, "host": w.get("host", ""), "name": w.get("name", a)}
                for a, w in info.get("workers", {}).items()}

    def dashboard(self) -> str | None:
        try:
            port = self.client.scheduler_info().get("services", {}).get("dashboard")
        except Exception:   # the link is a convenience: never a reason to fail
            return None
        host = self.address.split("://", 1)[1].rpartition(":")[0]
        if not port:
            return None
        try:   # a scheduler without bokeh names the port of a dashboard it does not serve
            socket.create_connection((host, int(port)), timeout=0.5).close()
        except (OSError, ValueError):
            return None
        return f"http://{host}:{port}/status"

    def close(self) -> None:
        if self.client is not None:
            try:
                self.client.close(timeout=2)
            except Exception:   # a scheduler that went away cannot be told goodbye
                pass


def _takes_n_workers(client: Any) -> bool:
    import inspect

    return "n_workers" in inspect.signature(client.scheduler_info).parameters


def route(plan: Plan, cluster: Cluster, wait_s: float, cache: Any) -> dict[str, list[str]]:
    """Decide deferral by the cluster instead of this host: a node whose kind asks for resources runs where a
    connected worker offers them all, and is deferred (with what is missing and the worker command) when none
    does, after waiting up to `wait_s` for one to connect. A node asking for nothing is deferred as before.
    Measurements on the device go to the device's workers: {node id: the workers it may run on}."""
    deadline = time.monotonic() + wait_s
    while True:
        workers = cluster.workers()
        missing = _mark(plan, workers, cluster.address)
        if not missing or time.monotonic() >= deadline:
            break
        time.sleep(min(0.5, max(deadline - time.monotonic(), 0.0)))
    return _on_devices(plan, workers, cluster, cache)


def _device_nodes(plan: Plan) -> list[Node]:
    return [n for n in plan.order() if n.step.kind.host_specific and n.step.params.get("where") == "device"
            and n.target is not None and not n.deferred]


def _on_devices(plan: Plan, workers: dict[str, dict[str, Any]], cluster: Cluster, cache: Any) -> dict[str, list[str]]:
    """A measurement on the device takes the device's hardware class into its key (and its cores into its thread
    count), so its entry is never mistaken for another host's; with no device connected it is measured here,
    with a warning."""
    from edgebuild.engine.digest import sha256_json
    from edgebuild.engine.plan import Planned, Reason, Why

    pins: dict[str, list[str]] = {}
    nodes = _device_nodes(plan)
    if nodes:   # run the host-class probe once per eligible worker, not per node
        eligible = sorted({a for n in nodes for a, w in workers.items()
                           if all(w["resources"].get(r, 0) >= v for r, v in needs(n).items())})
        classes = cluster.client.run(_cpu_class, workers=eligible) if eligible else {}
    for n in nodes:
        want = needs(n)
        able = sorted(a for a, w in workers.items() if all(w["resources"].get(r, 0) >= v for r, v in want.items()))
        if not able:
            plan.warnings.append(_here_warning(plan, n, f"no worker connected to {cluster.address} advertises "
                                               f"{', '.join(want)}; run `{worker_command(cluster.address, [])}` "
                                               "on the device"))
            continue
        host = classes[able[0]]
        pins[n.id] = [a for a in able if classes.get(a) == host]
        assert n.target is not None
        n.step.params["threads"] = min(n.target.threads, int(host.get("cores") or 1))
        # the device's name too: on a host of the same class, a fallback measurement is not the device's
        n.material = dict(n.material, params=n.step.params, host=host, device=n.target.name)
        n.key = sha256_json(n.material)
        n.status, n.reasons = (Planned.CACHED, []) if cache.has(n.key) else (Planned.RUN, [Reason.of(Why.ON_DEVICE)])
    return pins


def _cpu_class() -> dict[str, Any]:
    """Run on a worker by Client.run: its hardware class, as a measurement's key takes it."""
    from edgebuild.engine import hostinfo

    return hostinfo.cpu_class()


def measured_here(plan: Plan) -> None:
    """Without a cluster, `on: device` measurements are taken on this host: say so."""
    for n in _device_nodes(plan):
        plan.warnings.append(_here_warning(plan, n, "no Dask cluster is used (run --executor dask://HOST:8786)"))


def _here_warning(plan: Plan, n: Node, why: str) -> Problem:
    assert n.target is not None
    return Problem(f"{n.id}: checks.latency.where is device, but {n.target.name} is measured on this host: {why}",
                   plan.recipe.doc.at(("checks", "latency", "where")),
                   "start `edgebuild worker tcp://SCHEDULER:8786` on the device; it advertises device-<profile> when "
                   "it recognises the board (or give it --resources device-<target>=1)", "warning")


def _mark(plan: Plan, workers: dict[str, dict[str, Any]], address: str) -> int:
    from edgebuild.engine.plan import Planned, Reason, Why

    missing = 0
    offers = [w["resources"] for w in workers.values()]
    for n in plan.order():
        up = plan.nodes[n.upstream] if n.upstream else None
        want = needs(n)
        if up is not None and up.deferred:
            n.deferred = f"its input {up.id} is deferred ({up.deferred})"
        elif want and n.step.kind.host_specific:   # a measurement on the device: without one, measured here
            n.deferred = None
        elif want:
            n.deferred = _unmet(want, offers, address, len(workers))
            missing += n.deferred is not None
        elif n.target is not None:
            n.deferred = n.step.kind().deferral(n.target)
        if n.deferred:
            n.status, n.reasons = Planned.DEFERRED, [Reason.of(Why.DEFERRED, n.deferred)]
        elif n.status == Planned.DEFERRED:
            n.status, n.reasons = Planned.RUN, [Reason.of(Why.ON_CLUSTER)]
    return missing


def _unmet(want: dict[str, float], offers: list[dict[str, float]], address: str, count: int) -> str | None:
    if any(all(o.get(r, 0) >= n for r, n in want.items()) for o in offers):
        return None
    best = max(offers, key=lambda o: sum(o.get(r, 0) >= n for r, n in want.items()), default={})
    lacking = [r for r, n in want.items() if best.get(r, 0) < n]
    return (f"needs {', '.join(sorted(want))}: none of the {count} worker(s) connected to {address} offers "
            f"{', '.join(lacking)}; on a host that has it, run `{worker_command(address, lacking)}`")


def upload_sources(plan: Plan, remote: Any, stats: Any) -> dict[str, Any]:
    """Put the recipe's source files (model, factory and its local modules, weights, datasets, metric files) on
    the remote by content digest, so a worker rebuilds the recipe's folder without a shared file system; the
    layout a worker recreates: {"files": {path relative to root: sha256}, "recipe_dir": relative path}."""
    r = plan.recipe
    files = set(r.source_files.values())
    for n in plan.order():
        files.update(n.step.kind.source_files(n.step.params, r.dir).values())
    files = {f.resolve() for f in files if f.is_file()}
    root = Path(os.path.commonpath([str(r.dir.resolve()), *map(str, files)]))
    digests = {f.relative_to(root).as_posix(): stats.digest(f) for f in sorted(files)}
    for rel, sha in digests.items():
        remote.put_source(root / rel, sha)
    return {"files": digests, "recipe_dir": r.dir.resolve().relative_to(root).as_posix()}


def hostname() -> str:
    return socket.gethostname() or platform.node()
