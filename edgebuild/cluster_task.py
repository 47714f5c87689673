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
import threading
from pathlib import Path
from typing import Any

CACHE_ENV = "EDGEBUILD_WORKER_CACHE"
_RUNNER: Any = None
_RUNNER_LOCK = threading.Lock()
_STORES: dict[str, Any] = {}


def cache_root() -> Path:
    """This worker's own cache: $EDGEBUILD_WORKER_CACHE, else ~/.cache/edgebuild/worker."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "edgebuild" / "worker"


def dask_setup(worker: Any) -> None:
    """distributed's preload hook: get the step runner ready (the fork server loads numpy, onnx and
    onnxruntime) before the first task arrives."""
    runner()
    cache_root().mkdir(parents=True, exist_ok=True)


def runner() -> Any:
    global _RUNNER
    with _RUNNER_LOCK:
        if _RUNNER is None:
            from edgebuild import runners

            _RUNNER = runners.chosen()
            _RUNNER.warm_up()
        return _RUNNER


def where() -> str:
    """This worker as the terminal and the manifest name it: its host and Dask address."""
    try:
        from distributed import get_worker

        w = get_worker()
        name = str(w.name) if w.name is not None and str(w.name) != w.address else w.address
    except (ImportError, ValueError):
        name = f"pid {os.getpid()}"
    return f"{socket.gethostname()} ({name})"


def build(spec: dict[str, Any]) -> dict[str, Any]:
    """Build one node here; {"ok", "info" or "message"/"hint"/"log", "worker", "seconds"}."""
    from edgebuild.cache import Cache

    cache = Cache(cache_root())
    remote = _remote(spec)
    key = spec["key"]
    me = where()
    if not spec["force"] and (cache.has(key) or remote.fetch(key, cache) is not None):
        if not _on_remote(remote, key):   # built here for a client that could not take it: offer it again
            remote.upload(key, cache.entry(key))
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


def _remote(spec: dict[str, Any]) -> Any:
    """A Remote for this task (its own time budget and failure state); the store, with its client, is kept."""
    from edgebuild import remote as remote_mod
    from edgebuild import stores

    url = stores.parse(spec["remote"])
    if spec["remote"] not in _STORES:
        _STORES[spec["remote"]] = stores.open_store(url, spec["timeout_s"])
    return remote_mod.Remote(url, _STORES[spec["remote"]], False, spec["timeout_s"])


def _on_remote(remote: Any, key: str) -> bool:
    """Whether the remote has the committed entry (one this worker has locally may not have been uploaded)."""
    from edgebuild.remote import ENTRY, entry_dir

    return bool(remote._exists(f"{entry_dir(key)}/{ENTRY}"))


def _failed(me: str, message: str, hint: str | None, log: str = "") -> dict[str, Any]:
    return {"ok": False, "message": message, "hint": hint, "log": log, "worker": me}


def _sources(spec: dict[str, Any], cache: Any, remote: Any) -> Path:
    """The recipe's folder as this worker sees it: every source file, by digest, at its place relative to the
    others (hard links into a digest store, so each file is downloaded once per worker)."""
    from edgebuild.digest import sha256_json

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
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
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
    from edgebuild.execute import _read_result

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
        remote.upload(key, cache.entry(key))
        if not _on_remote(remote, key):
            return {"ok": False, "message": f"built, but the upload to the remote cache {spec['remote']} failed: "
                    f"{remote.failure or 'unknown reason'}", "hint": "check the worker's credentials for the remote",
                    "log": text}
        return {"ok": True, "info": info, "log": text, "seconds": float(result.get("seconds", 0.0))}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _keep_state(name: str, folder: Path, cache: Any, remote: Any) -> None:
    """A step's new carried state (a TensorRT timing cache) becomes an entry the ref names, here and remotely."""
    from edgebuild.digest import sha256_file, sha256_json

    files = {f.relative_to(folder).as_posix(): sha256_file(f) for f in sorted(folder.rglob("*")) if f.is_file()}
    key = sha256_json({"state": name, "files": files})
    with cache.lock(key):
        if not cache.has(key):
            cache.commit(key, folder, {"state": name, "info": {}})
    cache.set_ref(name, key)
    remote.upload(key, cache.entry(key))
    remote.send_ref(name, key)
    remote.finish()
