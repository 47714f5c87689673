"""Headless Chromium for browser tests, driven over the DevTools protocol on a pipe (standard library only),
and `edgebuild serve` in a subprocess."""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
HAVE_CHROMIUM = Path(CHROMIUM).exists()


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (--remote-debugging-pipe).

    Chromium reads commands from fd 3 and writes replies and events to fd 4, one JSON message per
    NUL-terminated chunk. Each page opens in a fresh tab; `result(url)` waits (real time, no
    virtual-time tricks) until the page's <pre id="result"> has text, and returns it parsed.
    """

    FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--remote-debugging-pipe"]

    def __init__(self, exe: str = CHROMIUM):
        self.profile = tempfile.TemporaryDirectory(prefix="eb-chromium-")
        to_chrome_r, self._w = os.pipe()
        self._r, from_chrome_w = os.pipe()

        def pipes() -> None:   # in the child: its fds 3 and 4 are the two pipe ends
            a = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)
            b = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.log = open(Path(self.profile.name) / "chromium.log", "wb")
        self.proc = subprocess.Popen([exe, *self.FLAGS, f"--user-data-dir={self.profile.name}", "about:blank"],
                                     stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
                                     preexec_fn=pipes, close_fds=False)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b""
        self._id = 0
        self.console: list[str] = []

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             timeout: float = 30) -> dict[str, Any]:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            m = self._read(deadline)
            if m.get("id") == self._id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return dict(m.get("result", {}))
            if m.get("method") == "Runtime.consoleAPICalled":
                p = m["params"]
                self.console.append(f"{p['type']}: " + " ".join(str(a.get("value", a.get("description", "")))
                                                              for a in p.get("args", [])))
            elif m.get("method") == "Runtime.exceptionThrown":
                self.console.append("exception: " + json.dumps(m["params"].get("exceptionDetails", {}))[:500])

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("Chromium did not answer in time")
            ready, _, _ = select.select([self._r], [], [], left)
            if ready:
                chunk = os.read(self._r, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"Chromium exited (code {self.proc.poll()})")
                self._buf += chunk
        msg, _, self._buf = self._buf.partition(b"\0")
        return dict(json.loads(msg))

    def result(self, url: str, timeout: float = 30) -> dict[str, Any]:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        try:
            s = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            self.send("Runtime.enable", session=s)
            self.send("Page.enable", session=s)
            self.send("Page.navigate", {"url": url}, session=s)
            wait = ("new Promise((ok) => { const f = () => { const e = document.getElementById('result');"
                    " if (e && e.textContent.trim()) ok(e.textContent); else setTimeout(f, 20); }; f(); })")
            for attempt in range(3):   # a cross-origin-isolated page may swap its JS context while loading
                try:
                    r = self.send("Runtime.evaluate", {"expression": wait, "awaitPromise": True, "returnByValue": True},
                                  session=s, timeout=timeout)
                    break
                except RuntimeError as exc:
                    if attempt == 2 or "context" not in str(exc).lower():
                        raise
                    time.sleep(0.2)
        finally:
            self.send("Target.closeTarget", {"targetId": target})
        if "exceptionDetails" in r:
            raise RuntimeError(f"{url}: {r['exceptionDetails']}")
        return dict(json.loads(r["result"]["value"]))

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._w)
        os.close(self._r)
        self.log.close()
        self.profile.cleanup()


class Served:
    """`edgebuild serve DIR --port 0` in a subprocess; `url` is what it printed."""

    def __init__(self, directory: Path):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        self.proc = subprocess.Popen([sys.executable, "-m", "edgebuild", "serve", str(directory), "--port", "0", "--quiet"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        if not m:
            self.proc.kill()
            raise AssertionError(f"edgebuild serve printed no URL: {line!r}{self.proc.stdout.read()}")
        self.url = m.group(0)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()


