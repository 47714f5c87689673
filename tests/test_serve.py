"""`edgebuild serve DIR`: a threaded static server with the cross-origin isolation headers and WASM MIME types.

The browser check opens a page whose inline script writes `self.crossOriginIsolated` into
<pre id="result"> and reads it with `chromium --headless --dump-dom` (the script runs before the
load event, so no waiting is needed).
"""

from __future__ import annotations

import http.client
import os
import re
import socket
import subprocess
import sys
import threading
from functools import partial
from pathlib import Path
from typing import Any

import clikit
import pytest

from edgebuild.commands import serve

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ISOLATION = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp",
             "Cross-Origin-Resource-Policy": "same-origin"}
PAGE = """<!doctype html><html><body><pre id="result"></pre>
<script>document.getElementById('result').textContent =
  JSON.stringify({isolated: self.crossOriginIsolated === true, sab: typeof SharedArrayBuffer});</script>
</body></html>
"""


@pytest.fixture()
def site(tmp_path: Path) -> Path:
    (tmp_path / "index.html").write_text(PAGE)
    (tmp_path / "edgebuild-model.mjs").write_text("export const x = 1;\n")
    (tmp_path / "ort-wasm-simd-threaded.wasm").write_bytes(b"\0asm\1\0\0\0")
    (tmp_path / "model.onnx").write_bytes(b"\x08\x08")
    return tmp_path


def start(directory: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-m", "edgebuild", "serve", str(directory), "--port", "0", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
    if not m:
        proc.kill()
        raise AssertionError(f"no URL printed: {line!r} {proc.communicate()}")
    assert int(m.group(1)) > 0
    return proc, m.group(0)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for f in (proc.stdout, proc.stderr):
        if f:
            f.close()


def get(url: str, path: str, method: str = "GET") -> tuple[int, Any, bytes]:
    """(status, headers (case-insensitive), body)."""
    host, port = re.match(r"http://([^:/]+):(\d+)/", url).groups()  # type: ignore[union-attr]
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        c.request(method, path)
        r = c.getresponse()
        return r.status, r.msg, r.read()
    finally:
        c.close()


@pytest.mark.slow   # an `edgebuild serve` process
def test_serve_prints_the_url_and_sends_the_isolation_headers_and_wasm_types(site: Path):
    proc, url = start(site)
    try:
        for path, ctype in [("/index.html", "text/html"), ("/edgebuild-model.mjs", "text/javascript"),
                            ("/ort-wasm-simd-threaded.wasm", "application/wasm"),
                            ("/model.onnx", "application/octet-stream")]:
            status, headers, body = get(url, path)
            assert status == 200, path
            assert headers["Content-Type"].split(";")[0] == ctype, path
            assert body == (site / path[1:]).read_bytes()
            for k, v in ISOLATION.items():
                assert headers.get(k) == v, (path, k)
        status, headers, _ = get(url, "/missing.js")
        assert status == 404 and headers.get("Cross-Origin-Embedder-Policy") == "require-corp"
        status, headers, body = get(url, "/", "HEAD")
        assert status == 200 and body == b""
    finally:
        stop(proc)


def test_serve_answers_requests_in_parallel(site: Path):
    server = serve.make_server(site, "127.0.0.1", 0, quiet=True)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        url = serve.url_of(server)
        idle = socket.create_connection(("127.0.0.1", int(server.server_address[1])))   # holds one handler thread
        try:
            status, headers, _ = get(url, "/edgebuild-model.mjs")
            assert status == 200 and headers["Cross-Origin-Opener-Policy"] == "same-origin"
        finally:
            idle.close()
    finally:
        server.shutdown()
        server.server_close()


def test_serve_refuses_a_missing_folder(tmp_path: Path):
    r = clikit.in_process(["serve", str(tmp_path / "nope")], ROOT, os.environ)
    assert r.code == 1
    assert "not a folder" in r.err and "nope" in r.err


def test_serve_reports_a_port_in_use(site: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = clikit.in_process(["serve", str(site), "--port", str(port)], ROOT, os.environ)
    assert r.code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in r.err and "--port" in r.err


def dump_dom(url: str, profile: Path) -> str:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--dump-dom"]
    r = subprocess.run([CHROMIUM, *flags, url], capture_output=True, text=True, timeout=60)
    m = re.search(r'<pre id="result">(.*?)</pre>', r.stdout, re.S)
    assert m, f"no #result in the page: {r.stdout[-500:]} {r.stderr[-500:]}"
    return m.group(1)


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} not found (apt-get install chromium)")
def test_pages_served_by_edgebuild_serve_are_cross_origin_isolated(site: Path, tmp_path: Path):
    import http.server
    import json

    proc, url = start(site, "--quiet")
    try:
        got = json.loads(dump_dom(url + "index.html", tmp_path / "p1"))
    finally:
        stop(proc)
    assert got == {"isolated": True, "sab": "function"}

    # the same page from a server without the headers is not (so WebAssembly gets one thread)
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    plain = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(site)))
    threading.Thread(target=plain.serve_forever, daemon=True).start()
    try:
        got = json.loads(dump_dom(f"http://127.0.0.1:{plain.server_address[1]}/index.html", tmp_path / "p2"))
    finally:
        plain.shutdown()
        plain.server_close()
    assert got["isolated"] is False


def test_serve_is_registered_in_the_cli():
    from edgebuild import cli

    assert "serve" in cli.COMMANDS
    args = cli.parser().parse_args(["serve", "some/dir", "--port", "0", "--host", "127.0.0.1"])
    assert args.func is serve.run and args.port == 0 and args.host == "127.0.0.1"
