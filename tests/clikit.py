"""Running the `edgebuild` command for tests, in this process or in a new one.

`in_process` calls `edgebuild.cli.main(argv)` here, with the in-process step runner, from a given folder
and with a given environment, and captures what it prints: no interpreter to start and no fork server
preloading numpy, onnx and onnxruntime, which cost a second or two per call. `in_subprocess` runs
`python -m edgebuild` as a user would; tests that need real processes (a worker killed or crashing, the
fork server, signals, what a fresh interpreter imports) use it and are marked slow.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Result:
    code: int
    out: str
    err: str


def in_process(args: list[str], cwd: Path, env: Mapping[str, str]) -> Result:
    """`edgebuild ARGS` run from `cwd` with exactly the environment `env` (EDGEBUILD_RUNNER=inprocess unless
    it names another), as a new process would: os.environ, the working folder and sys.path are put back
    afterwards, and what edgebuild keeps for the life of its process (host facts, step kinds, installed
    distributions) is forgotten first."""
    from edgebuild import cli

    out, err = io.StringIO(), io.StringIO()
    with _environment(dict(env, EDGEBUILD_RUNNER=env.get("EDGEBUILD_RUNNER", "inprocess"))), _folder(cwd), \
            contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        _forget_process_state()
        try:
            code = cli.main(list(args))
        except SystemExit as exc:   # argparse's usage errors, --help, --version
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
            if isinstance(exc.code, str):
                print(exc.code, file=sys.stderr)
    return Result(code, out.getvalue(), err.getvalue())


def in_subprocess(args: list[str], cwd: Path, env: Mapping[str, str], timeout: float = 300) -> Result:
    """`python -m edgebuild ARGS` in a new process, from `cwd`, with the environment `env`."""
    p = subprocess.run([sys.executable, "-m", "edgebuild", *args], cwd=cwd, env=dict(env), capture_output=True,
                       text=True, timeout=timeout)
    return Result(p.returncode, p.stdout, p.stderr)


@contextlib.contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    """os.environ is `env` meanwhile; PYTHONPATH's folders that sys.path lacks are put first on it, as a new
    interpreter would (the test process has tests/ and the package already)."""
    saved, path = dict(os.environ), list(sys.path)
    os.environ.clear()
    os.environ.update(env)
    extra = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]
    sys.path[:0] = extra
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        sys.path[:] = path


@contextlib.contextmanager
def _folder(cwd: Path) -> Iterator[None]:
    before = os.getcwd()
    os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(before)


def _forget_process_state() -> None:
    """Clear every lru_cache of edgebuild's modules: some hold what a new process would read again from the
    environment or sys.path (EDGEBUILD_HOST_GPU, EDGEBUILD_STEP_MODULES, installed distributions)."""
    for name, module in list(sys.modules.items()):
        if name != "edgebuild" and not name.startswith("edgebuild."):
            continue
        for obj in list(vars(module).values()):
            if getattr(obj, "__module__", None) == name and callable(getattr(obj, "cache_clear", None)):
                obj.cache_clear()
