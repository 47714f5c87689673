"""How a prepared step job runs: the runner protocol, and its fork-server and in-process implementations.

The executor writes a job file (what to run, its input folders, the `out_dir` its outputs go to and the
`result` file it reports to, see `Executor._job`), hands it to a runner, and reads the result file when
the runner returns. A runner only runs the step: it never touches the cache. The executor commits
`out_dir` only once the result file says the step succeeded, and removes the scratch folder holding the
job in every other case, so no runner can leave a partial cache entry behind.

- `ForkServerRunner`, the default: each step in a worker process forked from a fork server that has
  preloaded edgebuild, numpy, onnx and onnxruntime (`forks.py`). A step that crashes its process (a
  segfault in a native library, a call to `os._exit`) fails alone, and its output, native libraries'
  included, lands in its log.
- `InProcessRunner`, `EDGEBUILD_RUNNER=inprocess`, for tests and debugging (a breakpoint in a step, a
  profiler): each step in the calling process, one at a time, no process started. A step that ends its
  process ends edgebuild, what native libraries write straight to file descriptors 1 and 2 is not in
  the step's log, and Python's hash seed is this process's (workers get a fixed one).

Only the standard library is imported here.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol, TextIO, cast

ENV = "EDGEBUILD_RUNNER"
DEFAULT = "forkserver"


class Runner(Protocol):
    """Runs prepared step jobs; one runner serves a whole build, called from the executor's threads."""

    def warm_up(self, then_import: tuple[str, ...] = ()) -> None:
        """Get ready to run jobs while the recipe is planned, and import `then_import` (what the end of the
        build needs) where it does not delay planning."""

    def run(self, job_file: Path, log_file: Path, exclusive: bool = False) -> int:
        """Run the job to its end with its output written to `log_file`; its exit code: 0 when the job's
        result file says it succeeded, 1 when it says it failed, anything else (negative: the signal that
        killed it) when the step ended without a result. An `exclusive` job (a timing measurement) runs
        with nothing else of edgebuild's running."""

    def close(self) -> None:
        """The build needs no more jobs: let go of what was kept ready for them. The runner may run jobs
        again afterwards (a process running several builds)."""


class ForkServerRunner:
    """Each step in a worker process forked from edgebuild's fork server (forks.py)."""

    def warm_up(self, then_import: tuple[str, ...] = ()) -> None:
        from edgebuild.engine import forks

        forks.warm_up(then_import)

    def run(self, job_file: Path, log_file: Path, exclusive: bool = False) -> int:
        from edgebuild.engine import forks

        return forks.spawn(job_file, log_file, quiet=exclusive)

    def close(self) -> None:
        from edgebuild.engine import forks

        forks.shut_down()


# sys.stdout, sys.stderr and the logging tree belong to the whole process: one in-process job at a time
_ONE_AT_A_TIME = threading.Lock()


class InProcessRunner:
    """Each step in this process, in the calling thread, one at a time (so `exclusive` asks for nothing
    more): the worker's job function with the thread's print()s, warnings and log records sent to the
    step's log file."""

    def warm_up(self, then_import: tuple[str, ...] = ()) -> None:
        """Nothing to start; the modules of `then_import` are imported where they are used."""

    def run(self, job_file: Path, log_file: Path, exclusive: bool = False) -> int:
        from edgebuild.engine import worker

        with _ONE_AT_A_TIME, open(log_file, "w", encoding="utf-8", errors="replace") as log, \
                _output_to(log), _imports_forgotten():
            try:
                return worker.run_job(str(job_file))
            except SystemExit as exc:   # the step asked to exit: its worker process would have ended so
                if isinstance(exc.code, str):
                    print(exc.code, file=sys.stderr)   # as Python prints it on the way out: into the log
                return exc.code if isinstance(exc.code, int) else int(exc.code is not None)

    def close(self) -> None:
        """Nothing kept between jobs."""


RUNNERS: dict[str, Callable[[], Runner]] = {"forkserver": ForkServerRunner, "inprocess": InProcessRunner}


def chosen() -> Runner:
    """The runner $EDGEBUILD_RUNNER names; the fork server when it is unset or empty."""
    name = os.environ.get(ENV) or DEFAULT
    if name not in RUNNERS:
        from edgebuild.errors import UserError

        raise UserError(f"{ENV}={name}: there is no such runner",
                        hint=f"use {' or '.join(RUNNERS)} (unset: {DEFAULT}); inprocess is for tests and debugging")
    return RUNNERS[name]()


class _ThisThread(io.TextIOBase):
    """Stands in for sys.stdout or sys.stderr while a job runs: the job's thread writes to its log, every
    other thread (the progress display, a pool thread waiting for its turn) to the stream it replaced."""

    def __init__(self, replaced: TextIO, log: TextIO, thread: int):
        super().__init__()
        self.replaced, self.log, self.thread = replaced, log, thread

    def _target(self) -> TextIO:
        return self.log if threading.get_ident() == self.thread else self.replaced

    def write(self, text: str) -> int:
        return self._target().write(text)

    def flush(self) -> None:
        self._target().flush()

    def isatty(self) -> bool:
        return self._target().isatty()

    def fileno(self) -> int:   # what writes to it goes where the stream goes: the log file, for the job's thread
        return self._target().fileno()


@contextlib.contextmanager
def _output_to(log: TextIO) -> Iterator[None]:
    """The calling thread's output goes to `log` as a worker's would: print()s, warnings, and log records,
    the step's own from INFO up. Other loggers keep the levels this process gives them (a worker logs
    every logger's INFO records, but setting the root logger's level would change the host's logging)."""
    from edgebuild.engine import worker

    thread = threading.get_ident()
    out, err = cast(TextIO, _ThisThread(sys.stdout, log, thread)), cast(TextIO, _ThisThread(sys.stderr, log, thread))
    handler = logging.StreamHandler(log)
    handler.setFormatter(logging.Formatter(worker.LOG_FORMAT))
    handler.addFilter(lambda record: record.thread == thread)
    steps = logging.getLogger("edgebuild.step")   # the parent of every step's logger, and tool_errors' logger
    level = steps.level
    steps.setLevel(logging.INFO)
    logging.getLogger().addHandler(handler)
    replaced = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        yield
    finally:
        if sys.stdout is out:   # unless something else (a terminal display) has replaced it meanwhile
            sys.stdout = replaced[0]
        if sys.stderr is err:
            sys.stderr = replaced[1]
        logging.getLogger().removeHandler(handler)
        steps.setLevel(level)
        log.flush()


@contextlib.contextmanager
def _imports_forgotten() -> Iterator[None]:
    """After the job, sys.path as it was, and the modules imported from folders the job put on it (a
    PyTorch factory and its neighbours) forgotten, as they are when a worker process ends: the next job
    imports the user's files as they are then, and one project's `layers.py` is not another's."""
    path, modules = list(sys.path), set(sys.modules)
    try:
        yield
    finally:
        added = {_folder(p) for p in sys.path if p not in path}
        # a module found through a folder on sys.path that is inside an added one (site-packages in a
        # virtual environment under the recipe's folder) is not the user's: torch cannot be imported twice
        folders = sorted(added | {_folder(p) for p in path}, key=lambda f: len(f.parts), reverse=True)
        sys.path[:] = path
        for name in (set(sys.modules) - modules) if added else ():
            for place in _places(sys.modules[name]):
                found_in = next((f for f in folders if place.is_relative_to(f)), None)
                if found_in in added:
                    del sys.modules[name]
                    break


def _folder(entry: object) -> Path:
    """A sys.path entry as an absolute path, spelled as the modules found through it spell their files."""
    return Path(os.path.abspath(entry if isinstance(entry, str) else "."))


def _places(module: object) -> list[Path]:
    """A module's file, or a package's folders (read from its namespace: a lazy module's __getattr__ is not
    called, and some packages' __path__ is no list)."""
    namespace = getattr(module, "__dict__", None) or {}
    file, path = namespace.get("__file__"), namespace.get("__path__")
    return [Path(os.path.abspath(p)) for p in [file, *(path if isinstance(path, list) else [])] if isinstance(p, str)]
