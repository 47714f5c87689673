"""Builds across machines on Dask: the worker side. `build(spec)` is one plan node's Dask task; `dask_setup` is
the preload `edgebuild worker` gives distributed's worker.

A task brings its inputs into this worker's own cache from the remote cache (upstream entries by key, the
recipe's source files by digest into a folder laid out like the recipe's), runs the step with this host's
runner (the fork server, or EDGEBUILD_RUNNER), commits the output locally and uploads it before it returns:
what the client gets back through the scheduler is a small dict, never an artifact. A task that finds the
entry already on the remote returns at once (another worker, or an earlier build, made it).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

CACHE_ENV = "EDGEBUILD_WORKER_CACHE"
_RUNNER: Any = None
_RUNNER_LOCK = threading.Lock()
_STORES: dict[tuple[str, float], Any] = {}   # remote URL and budget -> its Remote


def cache_root() -> Path:
    """This worker's own cache: $EDGEBUILD_WORKER_CACHE, else ~/.cache/edgebuild/worker."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "edgebuild" / "worker"


def dask_setup(worker: Any) -> None:
    """distributed's preload hook: get the step runner ready (the fork server loads numpy, onnx and
    onnxruntime) before the first task arrives."""
    runner()
    cache_root().mkdir(parents=True, exist_ok=True)


def dask_teardown(worker: Any) -> None:
    """distributed's preload hook at the worker's close: the fork server's socket folder goes with it (the
    worker process may end without the interpreter teardown that would remove it)."""
    forks = sys.modules.get("edgebuild.engine.forks")
    if forks is not None:
        forks.before_exit()


def runner() -> Any:
    global _RUNNER
    with _RUNNER_LOCK:
        if _RUNNER is None:
            from edgebuild.engine import runners

            _forget_main()
            _RUNNER = runners.chosen()
            _RUNNER.warm_up()
        return _RUNNER


def _forget_main() -> None:
    """multiprocessing runs the parent's main module again in every process it starts, the fork server's workers
    included: in a Dask worker that is distributed's worker CLI, whose imports cost ~0.8 s per step. A step needs
    nothing from it."""
    main = sys.modules.get("__main__")
    name = getattr(getattr(main, "__spec__", None), "name", None) or ""
    if main is not None and not name.startswith("edgebuild") and not name.endswith("__main__"):
        main.__spec__ = None
        main.__file__ = None   # type: ignore[assignment]


def where() -> str:
    """This worker as the terminal names it: its host name, and its Dask worker name (else its address)."""
    try:
        from distributed import get_worker

        w = get_worker()
        name = str(w.name) if w.name is not None and str(w.name) != w.address else w.address
    except (ImportError, ValueError):
        name = f"pid {os.getpid()}"
    return f"{socket.gethostname()} ({name})"


def build(spec: dict[str, Any]) -> dict[str, Any]:
    """Build one node here; {"ok", "info" or "message"/"hint"/"log", "worker", "seconds"}."""
    from edgebuild.engine.remote import Gone

    me = where()
    remote = _remote(spec)
    try:
        return _build(spec, remote, me)
    except Gone:
        return _failed(me, f"the remote cache {spec['remote']} failed on this worker: {remote.failure}",
                       "every worker needs the remote's credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID...) and a route to it")


def _build(spec: dict[str, Any], remote: Any, me: str) -> dict[str, Any]:
    from edgebuild.engine.cache import Cache

    cache = Cache(cache_root())
    key = spec["key"]
    other = _other_code(spec, cache)
    if other:   # its output would be filed under a key that does not describe it
        return _failed(me, f"this worker cannot build {spec['node']} under the client's key: {other}",
                       "install the same edgebuild and tool versions on the client and every worker")
    # the client asked the remote just before submitting: a miss there is a miss; one in this worker's own cache
    # (built for a client that went away before taking it) is offered again
    if not spec["force"] and cache.has(key) and (remote.upload(key, cache.entry(key)) or _on_remote(remote, key)):
        return {"ok": True, "worker": me, "present": True, "seconds": 0.0, "log": ""}
    with cache.lock(key):
        for k in [spec["input_key"], *spec["ref_keys"].values()]:
            if k and not cache.has(k) and remote.fetch(k, cache) is None:
                return _failed(me, f"its input entry {k[:12]} is not in the remote cache {spec['remote']}",
                               remote.failure or "was it built by a client or worker that could not upload it?")
        try:
            recipe_dir = _sources(spec, cache, remote)
        except LookupError as exc:
            return _failed(me, str(exc), remote.failure or "the client uploads the recipe's files before the first task")
        result = _run(spec, cache, remote, recipe_dir)
    result["worker"] = me
    return result


_CODE: dict[tuple[str, bool], str] = {}


def _other_code(spec: dict[str, Any], cache: Any) -> str | None:
    """What differs between the code and tools the client keyed this node with and this worker's (a worker on
    another edgebuild or onnxruntime version), or None. A tool the client does not have (TensorRT, on a laptop)
    cannot be compared: the worker's is used."""
    import sys

    from edgebuild.engine import plan
    from edgebuild.engine.digest import StatCache
    from edgebuild.steps import kinds

    material = spec["material"]
    for dist, want in sorted(material["tools"].items()):
        have = plan.tool_version(dist)
        if want != "not installed" and have != want:
            return f"{dist} {have} here, {want} on the client"
    job = spec["job"]
    reads_source = "onnx" in job["source"] and (spec["input_key"] is None or bool(job.get("kind_ref")))
    name = (job.get("kind_ref") or spec["use"], reads_source)
    if name not in _CODE:
        if job.get("kind_ref"):
            import importlib

            module, _, cls = job["kind_ref"].partition(":")
            kind = getattr(importlib.import_module(module), cls)
        else:
            kind = kinds()[spec["use"]]
        modules = [Path(sys.modules[kind.__module__].__file__ or "")]
        if reads_source:
            modules.append(plan.PACKAGE / "onnx" / "source.py")
        _CODE[name] = plan.code_digest(modules, kind.code_files, StatCache(cache.root / "stat.json"))
    if _CODE[name] != material["code"]:
        return f"the code of step kind {spec['use']} differs (edgebuild {_version()} here)"
    return None


def _version() -> str:
    from edgebuild import __version__

    return __version__


def _remote(spec: dict[str, Any]) -> Any:
    """The remote cache, kept for the worker's life (its client, its first probe), with a fresh time budget and
    failure state for each task."""
    from edgebuild.engine import remote as remote_mod
    from edgebuild.engine import stores

    name = (spec["remote"], spec["timeout_s"])
    with _RUNNER_LOCK:
        if name not in _STORES:
            url = stores.parse(spec["remote"])
            _STORES[name] = remote_mod.Remote(url, stores.open_store(url, spec["timeout_s"]), False, spec["timeout_s"])
        remote = _STORES[name]
    remote.renew()
    return remote


def _on_remote(remote: Any, key: str) -> bool:
    """Whether the remote has the committed entry (one this worker has locally may not have been uploaded)."""
    from edgebuild.engine.remote import ENTRY, entry_dir

    return bool(remote._exists(f"{entry_dir(key)}/{ENTRY}"))


def _failed(me: str, message: str, hint: str | None, log: str = "") -> dict[str, Any]:
    return {"ok": False, "message": message, "hint": hint, "log": log, "worker": me}


def _sources(spec: dict[str, Any], cache: Any, remote: Any) -> Path:
    """The recipe's folder as this worker sees it: every source file, by digest, at its place relative to the
    others (hard links into a digest store, so each file is downloaded once per worker)."""
    from edgebuild.engine.digest import sha256_json

    src = spec["sources"]
    root = cache.root / "sources" / sha256_json(src)[:16]
    blobs = cache.root / "sources" / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    for rel, sha in src["files"].items():
        dest = root / rel
        if dest.is_file():
            continue
        blob = blobs / sha
        if not blob.is_file() and not remote.get_source(sha, blob):
            raise LookupError(f"the recipe's file {rel} (sha256 {sha[:12]}) is not in the remote cache {spec['remote']}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            os.link(blob, tmp)
        except OSError:
            shutil.copyfile(blob, tmp)
        os.replace(tmp, dest)
    return root / src["recipe_dir"]


def _job(spec: dict[str, Any], cache: Any, recipe_dir: Path, out_dir: Path, result: Path) -> dict[str, Any]:
    """The client's job with this worker's paths: its cache entries, its copy of the recipe's folder."""
    job = dict(spec["job"])
    old = Path(spec["recipe_dir"])

    def here(p: str | None) -> str | None:
        if p is None:
            return None
        path = Path(p)
        return str(recipe_dir / os.path.relpath(path, old)) if path.is_absolute() else p

    src = dict(job["source"])
    if "onnx" in src:
        src["onnx"] = here(src["onnx"])
    else:
        src["pytorch"] = dict(src["pytorch"], weights=here(src["pytorch"].get("weights")))
    job.update(source=src, data={k: here(v) for k, v in job["data"].items()}, recipe_dir=str(recipe_dir),
               input_dir=str(cache.entry(spec["input_key"])) if spec["input_key"] else None,
               refs={role: str(cache.entry(k)) for role, k in spec["ref_keys"].items()},
               out_dir=str(out_dir), result=str(result), cache_dir=str(cache.root / "shared"))
    return job


def _run(spec: dict[str, Any], cache: Any, remote: Any, recipe_dir: Path) -> dict[str, Any]:
    from edgebuild.engine.execute import _read_result

    key = spec["key"]
    scratch = cache.scratch(key)
    out_dir = scratch / "out"
    out_dir.mkdir()
    try:
        job = _job(spec, cache, recipe_dir, out_dir, scratch / "result.json")
        state = spec.get("state")
        if state:
            (scratch / "state").mkdir()
            keys = [cache.ref(state), remote.fetch_ref(state, cache)]
            job.update(state_in=[str(cache.entry(k)) for k in dict.fromkeys(k for k in keys if k)],
                       state_out=str(scratch / "state"))
        (scratch / "job.json").write_text(json.dumps(job, indent=1))
        log_path = scratch / "log.txt"
        code = runner().run(scratch / "job.json", log_path, exclusive=spec["exclusive"])
        text = log_path.read_text(errors="replace") if log_path.exists() else ""
        result = _read_result(scratch / "result.json", code)
        if not result.get("ok"):
            return {"ok": False, "message": result.get("message", "failed"), "hint": result.get("hint"),
                    "recipe_path": result.get("recipe_path"), "log": text, "bug": result.get("bug")}
        info = dict(result["info"], built_on=where().split(" ")[0])
        shutil.move(str(log_path), out_dir / "log.txt")
        if not cache.has(key):
            cache.commit(key, out_dir, {"node": spec["node"], "use": spec["use"], "info": info,
                                        "material": spec["material"]})
        if state and any((scratch / "state").iterdir()):
            _keep_state(state, scratch / "state", cache, remote)
        if not remote.upload(key, cache.entry(key)) and not _on_remote(remote, key):
            return {"ok": False, "message": f"built, but the upload to the remote cache {spec['remote']} failed: "
                    f"{remote.failure or 'unknown reason'}", "hint": "check the worker's credentials for the remote",
                    "log": text}
        return {"ok": True, "info": info, "log": text, "seconds": float(result.get("seconds", 0.0))}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _keep_state(name: str, folder: Path, cache: Any, remote: Any) -> None:
    """A step's new carried state (a TensorRT timing cache) becomes an entry the ref names, here and remotely."""
    from edgebuild.engine.digest import sha256_file, sha256_json

    files = {f.relative_to(folder).as_posix(): sha256_file(f) for f in sorted(folder.rglob("*")) if f.is_file()}
    key = sha256_json({"state": name, "files": files})
    with cache.lock(key):
        if not cache.has(key):
            cache.commit(key, folder, {"state": name, "info": {}})
    cache.set_ref(name, key)
    remote.upload(key, cache.entry(key))
    remote.send_ref(name, key)
    remote.finish()
