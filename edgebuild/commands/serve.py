"""`edgebuild serve DIR`: serve a web bundle over HTTP with the headers multi-threaded WebAssembly needs.

onnxruntime-web runs its WebAssembly backend on several threads only in a cross-origin-isolated
page (SharedArrayBuffer), which takes two response headers on the page:
`Cross-Origin-Opener-Policy: same-origin` and `Cross-Origin-Embedder-Policy: require-corp`.
Every response also says `Cross-Origin-Resource-Policy: same-origin`, so the runtime's worker
scripts and .wasm load under that embedder policy. Without these headers the runtime falls back
to one thread (the bundle's loader says so).

A development server (Python's threaded http.server), not one to put on the internet: for
production, copy the folder to any static host and apply its `_headers` file.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import sys
from pathlib import Path

# Sent with every response.
HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-cache",
}
MIME = {
    ".mjs": "text/javascript",
    ".js": "text/javascript",
    ".wasm": "application/wasm",
    ".onnx": "application/octet-stream",
    ".json": "application/json",
    ".html": "text/html; charset=utf-8",
}


def port(text: str) -> int:
    """--port: a TCP port number, 0 to 65535 (0: the system picks a free one)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port: give a number from 0 to 65535 "
                                         "(0 picks a free one)")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", type=Path, metavar="DIR", help="folder to serve, e.g. dist/vitals/browser-wasm/web")
    p.add_argument("--port", type=port, default=8000, help="TCP port (default 8000; 0 picks a free one)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--quiet", action="store_true", help="do not log each request")


class Handler(http.server.SimpleHTTPRequestHandler):
    """SimpleHTTPRequestHandler with the cross-origin isolation headers and WebAssembly MIME types."""

    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, **MIME}
    protocol_version = "HTTP/1.1"   # keep-alive: the page, the loader, the runtime and the model over one connection
    quiet = False

    def end_headers(self) -> None:
        for k, v in HEADERS.items():
            self.send_header(k, v)
        super().end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
        if not self.quiet:
            super().log_message(format, *args)


def make_server(directory: Path, host: str = "127.0.0.1", port: int = 0,
                quiet: bool = False) -> http.server.ThreadingHTTPServer:
    """A threaded server for `directory` (not started: call serve_forever()); port 0 picks a free port."""
    handler = functools.partial(type("_Handler", (Handler,), {"quiet": quiet}), directory=str(directory))
    server = http.server.ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def url_of(server: http.server.ThreadingHTTPServer) -> str:
    host, port = str(server.server_address[0]), int(server.server_address[1])
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def run(args: argparse.Namespace) -> int:
    from edgebuild.errors import Problem, UserError

    directory: Path = args.dir
    if not directory.is_dir():
        raise UserError(Problem(f"not a folder: {directory}", None,
                                "give a built web bundle, e.g. dist/<recipe>/<target>/<step>"))
    try:
        server = make_server(directory, args.host, args.port, args.quiet)
    except OSError as exc:
        raise UserError(Problem(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", None,
                                "pick another --port (0 picks a free one)")) from None
    url = url_of(server)
    page = url + ("index.html" if (directory / "index.html").is_file() else "")
    print(f"serving {directory} at {url}  (cross-origin isolated: COOP same-origin, COEP require-corp)")
    print(f"open {page}  -- Ctrl+C stops", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0
