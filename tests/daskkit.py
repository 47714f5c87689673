"""A Dask cluster on 127.0.0.1 for tests: a real `dask scheduler` process and `edgebuild worker` processes, each
in its own process group (a worker's nanny, its worker and the step processes they start go together, as when
a machine dies), always stopped by the fixture that started them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from s3kit import free_port

TESTS = Path(__file__).resolve().parent
START_S = 90   # a worker imports distributed and preloads edgebuild; on a busy 2-core host that takes a while


def _wait(cond, what: str, proc: subprocess.Popen, log: Path, timeout: float = START_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    text = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    pytest.fail(f"{what} did not start:\n{text}")


class Proc:
    def __init__(self, argv: list[str], log: Path, env: dict[str, str]):
        self.log = log
        self.proc = subprocess.Popen(argv, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)

    def stop(self) -> None:
        """SIGTERM, as a service manager would end it (the worker removes its fork server's socket folder);
        then SIGKILL to whatever of its group is left."""
        try:   # to the leader only (a worker's nanny), which closes its worker in order
            os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=15)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            pass
        self.kill()

    def kill(self) -> None:
        """SIGKILL to the whole group: nothing of it gets to say goodbye."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=20)


class Scheduler(Proc):
    def __init__(self, folder: Path):
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        super().__init__([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port",
                          str(self.port), "--no-dashboard", "--no-show"], folder / f"scheduler-{self.port}.log",
                         dict(os.environ))

        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return True
            except OSError:
                return False

        _wait(listening, "dask scheduler", self.proc, self.log)


class Worker(Proc):
    def __init__(self, scheduler: Scheduler, name: str, folder: Path, env: dict[str, str], *extra: str):
        self.name = name
        env = dict(env, EDGEBUILD_TEST_WORKER=name)
        super().__init__([sys.executable, "-m", "edgebuild", "worker", scheduler.address, "--name", name,
                          "--cache", str(folder / f"cache-{name}"), *extra], folder / f"worker-{name}.log", env)
        _wait(lambda: "Registered to" in self.log.read_text(errors="replace"), f"edgebuild worker {name}",
              self.proc, self.log)


def worker_env(base: dict[str, str], runs: Path) -> dict[str, str]:
    """What a test worker runs with: the test step kinds, steps in the worker's own process, no GPU detected."""
    return dict(base, EDGEBUILD_STEP_MODULES="fakesteps,clustersteps", EDGEBUILD_TEST_RUNS=str(runs),
                PYTHONPATH=os.pathsep.join([str(TESTS), str(TESTS.parent)]), EDGEBUILD_RUNNER="inprocess",
                EDGEBUILD_HOST_GPU="none", EDGEBUILD_HOST_TENSORRT="none", EDGEBUILD_HOST_MODEL="none")
