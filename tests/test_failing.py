"""Golden tests for bad input, in the style of Meson's "failing" tests.

Each folder tests/failing/NN-short-name/ holds a `recipe.yaml` that edgebuild must reject and an
`expected.txt` with the exact first error line it must print (the first stderr line containing
": error: "). An optional `args.txt` adds command-line arguments (e.g. `--target nope`). Support
files shared by several cases live in tests/failing/_fixtures/ (written by _make_fixtures.py) and
are named from recipes as ../_fixtures/...; files only one case needs sit in its folder.

Every case runs `edgebuild run recipe.yaml --cache TMP/cache --out TMP/dist` from its own folder, so
locations read `recipe.yaml:LINE:COL`, and must: exit 1, print no traceback, print the expected first
error line, and leave nothing half-written (no artifacts for a target whose step failed, no scratch
folders, no cache entry for the failed step). A case runs once, in this process (edgebuild's main()
with the in-process step runner, each in its own temporary folder), the first time a test needs it;
a slow test checks that a few of them print the same through `python -m edgebuild`.

To add a case: make the folder with its recipe.yaml, run it the same way, check the message is
one a user can act on (where, what was found, what was expected, a hint), and write expected.txt.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path

import clikit
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
FAILING = Path(__file__).resolve().parent / "failing"
FIXTURES = FAILING / "_fixtures"
CASES = sorted(p.name for p in FAILING.iterdir() if p.is_dir() and p.name[:1].isdigit())

# Cases whose expected.txt says what edgebuild should print, but a bug outside the files these tests
# own makes it print something else. strict: the test fails once the bug is fixed; then drop the entry.
KNOWN_BUGS: dict[str, str] = {}   # case -> why it fails today (an xfail that must flip when fixed)

ERROR_MARK = ": error: "
LOCATED = re.compile(r"^\S+:\d+:\d+: error: \S")        # FILE:LINE:COL: error: message
UNLOCATED = re.compile(r"^error: \S")                     # only for command-line errors (args.txt)
STEP_FAILED = re.compile(r"error: step '([^']+)' \(([a-z0-9-]+)\) failed")


@dataclass
class Run:
    case: str
    code: int
    out: str
    err: str
    tmp: Path

    @property
    def first_error(self) -> str | None:
        return next((line for line in self.err.splitlines() if ERROR_MARK in line or line.startswith("error: ")), None)

    def first_problem(self) -> list[str]:
        """The first error line and the indented lines under it (source excerpt, hint)."""
        lines = self.err.splitlines()
        i = lines.index(self.first_error or "")
        block = [lines[i]]
        for line in lines[i + 1:]:
            if not line.startswith(" "):
                break
            block.append(line)
        return block


def run_case(case: str, tmp: Path, in_process: bool = True) -> Run:
    folder = FAILING / case
    args_file = folder / "args.txt"
    extra = shlex.split(args_file.read_text()) if args_file.is_file() else []
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", NO_COLOR="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    for var in ("EDGEBUILD_CACHE", "EDGEBUILD_STEP_MODULES", "EDGEBUILD_RUNNER"):
        env.pop(var, None)
    args = ["run", "recipe.yaml", "--cache", str(tmp / "cache"), "--out", str(tmp / "dist"), *extra]
    r = clikit.in_process(args, folder, env) if in_process else clikit.in_subprocess(args, folder, env)
    return Run(case, r.code, r.out, r.err, tmp)


class Runner:
    """Runs each case once, when a test first asks for it, in its own temporary folder."""

    def __init__(self, base: Path):
        self.base = base
        self.runs: dict[str, Run] = {}

    def result(self, case: str) -> Run:
        if case not in self.runs:
            self.runs[case] = run_case(case, Path(tempfile.mkdtemp(prefix=f"{case[:2]}-", dir=self.base)))
        return self.runs[case]


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Runner:
    return Runner(tmp_path_factory.mktemp("failing"))


def _params(with_bugs: bool) -> list:
    return [pytest.param(c, marks=pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[c]))
            if with_bugs and c in KNOWN_BUGS else c for c in CASES]


def test_there_are_cases():
    assert len(CASES) >= 35
    for case in CASES:
        folder = FAILING / case
        assert re.fullmatch(r"\d\d-[a-z0-9-]+", case), f"{case}: name folders NN-short-name"
        assert (folder / "recipe.yaml").is_file(), f"{case}: no recipe.yaml"
        lines = (folder / "expected.txt").read_text().splitlines()
        assert len(lines) == 1 and lines[0].strip(), f"{case}: expected.txt must hold exactly one line"


def test_fixtures_stay_small():
    files = [f for f in FIXTURES.rglob("*") if f.is_file() and "__pycache__" not in f.parts]
    assert files, "run tests/failing/_make_fixtures.py"
    big = [f"{f.name} ({f.stat().st_size} bytes)" for f in files if f.stat().st_size > 8192]
    assert not big, f"fixtures must stay a few KB: {', '.join(big)}"


@pytest.mark.parametrize("case", _params(with_bugs=False))
def test_rejected_cleanly(case: str, runner: Runner) -> None:
    """Exit 1 (a user error, not a bug), no traceback, and an error line in the documented format."""
    r = runner.result(case)
    assert "Traceback" not in r.err, f"{case}: edgebuild crashed:\n{r.err}"
    assert r.code == 1, f"{case}: exit code {r.code}, expected 1\nstderr:\n{r.err}"
    first = r.first_error
    assert first is not None, f"{case}: no error line in stderr:\n{r.err}"
    cli = (FAILING / case / "args.txt").is_file()
    assert LOCATED.match(first) or (cli and UNLOCATED.match(first)), \
        f"{case}: the first error line is not 'FILE:LINE:COL: error: ...':\n{first}"
    assert any(line.startswith("  hint: ") for line in r.first_problem()), \
        f"{case}: the first error has no hint:\n" + "\n".join(r.first_problem())


@pytest.mark.parametrize("case", _params(with_bugs=True))
def test_first_error_line(case: str, runner: Runner) -> None:
    """The first error line is exactly expected.txt: where, what was found and what was expected."""
    r = runner.result(case)
    expected = (FAILING / case / "expected.txt").read_text().rstrip("\n")
    assert r.first_error == expected, f"{case}: stderr was:\n{r.err}"


@pytest.mark.parametrize("case", _params(with_bugs=False))
def test_nothing_half_written(case: str, runner: Runner) -> None:
    """A failure leaves no scratch folders, no cache entry for the failed step, no artifacts for its targets."""
    r = runner.result(case)
    cache, dist = r.tmp / "cache", r.tmp / "dist"
    scratch = cache / "tmp"
    leftovers = sorted(p.name for p in scratch.iterdir()) if scratch.is_dir() else []
    assert not leftovers, f"{case}: scratch folders left in the cache: {leftovers}"

    entries = {}
    for e in (cache / "objects").glob("*/*/entry.json"):
        entries[e.parent.name] = json.loads(e.read_text())
    failed = STEP_FAILED.findall(r.err)
    published = [p for p in dist.rglob("*") if p.is_file()] if dist.is_dir() else []
    if not failed:  # rejected before anything ran: nothing built, nothing published
        assert not entries, f"{case}: cache entries written for a rejected recipe: {sorted(entries)}"
        assert not published, f"{case}: files published for a rejected recipe: {published}"
        return
    nodes = {node for node, _use in failed}
    bad = [k for k, meta in entries.items() if meta.get("node") in nodes]
    assert not bad, f"{case}: cache entries for failed step(s) {sorted(nodes)}: {bad}"
    recipe = yaml.safe_load((FAILING / case / "recipe.yaml").read_text())
    for target in _targets_needing(recipe, {n.split("@")[0] for n in nodes}):
        files = [p for d in dist.glob(f"*/{target}") for p in d.rglob("*") if p.is_file()]
        assert not files, f"{case}: files published for target {target}, whose step failed: {files}"


@pytest.mark.slow
@pytest.mark.parametrize("case", ["01-yaml-syntax-error", "22-enum-did-you-mean", "33-weights-do-not-fit",
                                  "52-cli-target-not-in-recipe"])
def test_a_real_process_prints_the_same(case: str, runner: Runner, tmp_path: Path) -> None:
    """`python -m edgebuild`, with its fork server and workers, prints what the in-process run printed."""
    real, here = run_case(case, tmp_path, in_process=False), runner.result(case)
    assert (real.code, real.first_error) == (here.code, here.first_error), real.err


def _targets_needing(recipe: dict, steps: set[str]) -> list[str]:
    """Targets whose shipped steps are, or take their model (through `from`) from, one of `steps`."""
    return [target for target, shipped in (recipe.get("ship") or {}).items()
            if any(_chain(recipe, sid) & steps for sid in (shipped.get("best", []) if isinstance(shipped, dict) else shipped))]


def _chain(recipe: dict, sid: str | None) -> set[str]:
    """A step and every step it takes its model from, transitively."""
    seen: set[str] = set()
    while sid is not None and sid not in seen:
        seen.add(sid)
        sid = (recipe["steps"].get(sid) or {}).get("from")
    return seen
