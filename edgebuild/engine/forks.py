"""The worker processes: forked from a fork server that has imported edgebuild and the libraries most
steps need (numpy, onnx, onnxruntime), one process per step.

A step starts in a few milliseconds instead of paying for a new interpreter and those imports: the
server starts in the background as soon as `edgebuild run` knows it has work (before planning), the
next worker is forked while the current one works, and a worker reports its exit code as soon as its
result and log are written, so its teardown overlaps with whatever runs next. Only the standard
library is imported here.

The server listens on a socket in a folder multiprocessing makes in $TMPDIR (pymp-XXXXXXXX) and removes
when the interpreter tears down; `edgebuild` skips that teardown (it ends with os._exit), so it calls
`before_exit` first.
"""

from __future__ import annotations

import importlib
import os
import shutil
import threading
from pathlib import Path
from typing import Any

PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])

_FORK_LOCK = threading.Lock()
_FORKS: Any = None
_SPARES: list[tuple[Any, Any]] = []   # (process, pipe): workers forked ahead of need, each waiting for one job
_EXITING: list[Any] = []               # workers that reported their result and may still be tearing down
_SOCKET_FOLDER: str | None = None      # multiprocessing's temp folder, which holds the server's socket
_LEAVING = threading.Event()           # the process is about to exit: no worker is forked any more


def _fork_context() -> Any:
    """The fork server's context, set up once (call with _FORK_LOCK held)."""
    global _FORKS
    if _FORKS is None:
        import multiprocessing

        from edgebuild.engine import worker

        # the server (and so every worker) gets a fixed hash seed and can import edgebuild
        os.environ["PYTHONHASHSEED"] = "0"
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [PACKAGE_PARENT, os.environ.get("PYTHONPATH")]))
        _FORKS = multiprocessing.get_context("forkserver")
        _FORKS.set_forkserver_preload(worker.PRELOAD)
    return _FORKS


def _fork_worker() -> tuple[Any, Any]:
    """Fork one worker from the fork server; it waits for a job on its pipe (call with _FORK_LOCK held).

    The first call waits until the server has loaded its libraries."""
    from edgebuild.engine import worker

    ctx = _fork_context()
    here, there = ctx.Pipe()
    proc = ctx.Process(target=worker.serve_one, args=(there,), daemon=True)
    proc.start()
    there.close()
    return proc, here


def warm_up(then_import: tuple[str, ...] = ()) -> None:
    """Start the fork server now (its libraries load in its own process, overlapping planning), fork the
    first worker in a background thread as soon as the server is ready, then import `then_import` there
    (what the end of the build needs) while the main thread only waits for steps.

    The server is started from the calling thread: started from the background thread, each of its
    system calls waits for the GIL that planning holds, which delayed the server by ~0.1-0.2 s."""
    global _SOCKET_FOLDER
    from multiprocessing import forkserver, util

    with _FORK_LOCK:
        _fork_context()
        forkserver.ensure_running()
        _SOCKET_FOLDER = util.get_temp_dir()   # made by ensure_running for the server's socket

    def start() -> None:
        try:
            with _FORK_LOCK:
                if not _SPARES:
                    _SPARES.append(_fork_worker())
            for module in then_import:
                importlib.import_module(module)
        except Exception:
            if not _LEAVING.is_set():   # the process exiting under it (its socket gone) is no error
                raise

    threading.Thread(target=start, daemon=True).start()


def shut_down() -> None:
    """Let the spare workers go: each exits when its pipe closes. Does not wait for a warm-up that is
    still forking the first worker (when nothing needed building): that one exits with this process."""
    if not _FORK_LOCK.acquire(blocking=False):
        return
    try:
        while _SPARES:
            _SPARES.pop()[1].close()
    finally:
        _FORK_LOCK.release()


def before_exit() -> None:
    """Remove the fork server's socket folder before the process exits without interpreter teardown, which
    is where multiprocessing would remove it (a build that ends with os._exit left one pymp-* folder in
    $TMPDIR each time). No worker can be forked afterwards; the server itself exits on its own once this
    process and its workers are gone. Does not wait for a warm-up still forking the first worker (when
    nothing needed building): that one fails quietly, or exits with this process."""
    _LEAVING.set()
    if _SOCKET_FOLDER is not None:
        shutil.rmtree(_SOCKET_FOLDER, ignore_errors=True)


def spawn(job_file: Path, log_file: Path, quiet: bool = False) -> int:
    """Run one job in a worker forked from the fork server; its exit code.

    The worker was forked ahead of time where possible, and the next one is forked while this one
    works; the worker reports its exit code once its result and log are written, so its teardown
    (freeing a torch or onnxruntime heap) overlaps with whatever runs next. A `quiet` job (a timing
    measurement) starts only once earlier workers have exited, and the next worker is forked before
    it starts, so nothing else of edgebuild's runs while it times."""
    with _FORK_LOCK:
        proc, conn = _SPARES.pop() if _SPARES else _fork_worker()
        if quiet:
            _SPARES.append(_fork_worker())
            while _EXITING:
                _EXITING.pop().join()
    try:
        conn.send((str(job_file), str(log_file)))
        if not quiet:
            with _FORK_LOCK:
                _SPARES.append(_fork_worker())
        code = int(conn.recv())
        with _FORK_LOCK:
            _EXITING[:] = [p for p in _EXITING if p.is_alive()] + [proc]
        return code
    except (EOFError, OSError):   # the worker died without reporting
        proc.join()
        return int(proc.exitcode if proc.exitcode is not None else 1)
    finally:
        conn.close()
