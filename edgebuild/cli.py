"""The `edgebuild` command: argument parsing and the one place that turns errors into exit codes.

Exit codes: 0 ok; 1 a user error, a failed step or a failed check; 2 a bug in edgebuild.
Only the standard library is imported here, so a fully cached `edgebuild run` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import NoReturn

COMMANDS = {
    "run": "build a recipe: run what changed, publish artifacts and the manifest",
    "plan": "show the build graph: every node, its cache status, and why it will run",
    "validate": "check recipes without building anything",
    "explain": "say why a step will run again: what changed in its cache key",
    "targets": "list the hardware target profiles, or show one",
    "steps": "list step kinds with their parameters",
    "cache": "inspect or clean the build cache",
    "report": "render a manifest as a self-contained HTML report (tables, budget charts, build graph)",
    "serve": "serve a web bundle locally with the headers multi-threaded WebAssembly needs",
    "verify": "check a published build against its manifest, signatures, release and (--rebuild) a rebuild",
    "sign": "sign a published build's target folders, manifest and provenance with a private key",
    "worker": "join a Dask cluster as a worker that builds steps for `run --executor dask://HOST:8786`",
}


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error (a bad or missing argument) reported like any user error: the usage
    line, `error: what` and a hint, exit 1. argparse's own exit code 2 would read as a bug in edgebuild."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(1, f"error: {message}\n  hint: `{self.prog} --help` lists the arguments\n")


def parser(chosen: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; only the chosen subcommand's module is imported (keeps a no-op run fast)."""
    from edgebuild import __version__

    p = Parser(prog="edgebuild", description="Declarative, cached builds of ML models for edge hardware.")
    p.add_argument("--version", action="version", version=f"edgebuild {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, help_ in COMMANDS.items():
        sp = sub.add_parser(name, help=help_, description=help_)
        if chosen in (None, name):
            mod = importlib.import_module(f"edgebuild.commands.{name}")
            mod.add_arguments(sp)
            sp.set_defaults(func=mod.run)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if not a.startswith("-")), None)
    args = parser(chosen if chosen in COMMANDS else None).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("edgebuild: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:
        return _report(exc)


def entry() -> None:
    """The `edgebuild` command: main(), then, when it ended normally (exit 0 or 1), exit without tearing
    the interpreter down. Everything edgebuild writes is closed by then; the teardown (freeing every
    module of jsonschema, rich, multiprocessing) would add 40-90 ms to each command. What the teardown
    would have removed (the fork server's socket folder) is removed first. An interrupted run or an
    internal error exits the ordinary way."""
    code = main()
    if code in (0, 1):
        forks = sys.modules.get("edgebuild.engine.forks")   # imported when a build started the workers' fork server
        if forks is not None:
            forks.before_exit()
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BrokenPipeError:
            pass
        os._exit(code)
    raise SystemExit(code)


def _report(exc: Exception) -> int:
    """User errors: their located problems, exit 1. Anything else is a bug: traceback, exit 2."""
    import traceback

    from edgebuild.errors import EdgebuildError, StepBug  # imported here: the no-op path never needs it

    if isinstance(exc, EdgebuildError):
        sys.stdout.flush()
        print(exc.render(), file=sys.stderr)
        return 1
    if isinstance(exc, StepBug):   # the traceback that matters is the worker's
        print(f"{exc}; the worker's traceback:\n{exc.trace.rstrip()}", file=sys.stderr)
    else:
        traceback.print_exception(exc)
    print("edgebuild: internal error: this is a bug in edgebuild, not in your recipe; please report it "
          "with the traceback above", file=sys.stderr)
    return 2


if __name__ == "__main__":
    entry()
