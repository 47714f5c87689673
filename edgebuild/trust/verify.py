"""`edgebuild verify`: whether a published folder holds exactly what its manifest says was built, and
(`--rebuild`) whether the recipe builds the same bytes again from nothing.

Reproducible artifacts are compared byte for byte; a non-reproducible one (a TensorRT engine) by its
checks: the same checks pass, fidelity and accuracy within TOLERANCE. Latency is never compared: it is
the measuring host's, and noisy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from edgebuild.engine.digest import sha256_file
from edgebuild.errors import Problem, UserError
from edgebuild.trust.signing import ENVELOPE, MANIFEST_SIG, SIG, Checked

if TYPE_CHECKING:
    from edgebuild.output.manifest import Artifact, Manifest

# files edgebuild writes beside the artifacts that the manifest does not list (it cannot list itself)
BESIDE = {"manifest.json", "build-log.json", "report.html", "provenance.json", MANIFEST_SIG, ENVELOPE}
TOLERANCE = 0.01   # fidelity and accuracy of a rebuilt non-reproducible artifact, absolute


def manifest_file(arg: Path) -> Path:
    """MANIFEST, or the folder that holds it."""
    return arg / "manifest.json" if arg.is_dir() else arg


def load(path: Path) -> Manifest:
    """The manifest, checked against its schema; an unreadable, malformed or invalid one is a UserError."""
    from edgebuild.output import manifest

    return manifest.load(path)



def check_files(out: Path, manifest: Manifest) -> list[Checked]:
    """Every published file against the manifest's digest; every file the manifest does not account for."""
    rows: list[Checked] = []
    known = set(BESIDE) | {f"{t}/{SIG}" for t in manifest.targets}
    for t, entry in sorted(manifest.targets.items()):
        for a in entry.artifacts:
            rows += _check_artifact(out, a, known)
    for f in sorted(p for p in out.rglob("*") if p.is_file()):
        rel = f.relative_to(out).as_posix()
        if rel not in known:
            rows.append(Checked(rel, False, "extra: a file the manifest does not list"))
    return rows


def _check_artifact(out: Path, a: Artifact, known: set[str]) -> list[Checked]:
    path = out / a.path
    if a.files is not None:   # a folder, file by file
        known.update(f"{a.path}/{rel}" for rel in a.files)
        return [_check_file(out / a.path / rel, f"{a.path}/{rel}", digest) for rel, digest in a.files.items()]
    known.add(a.path)
    if path.is_dir():   # a folder from before per-file digests: the digest of its digests
        from edgebuild.engine.digest import sha256_json

        known.update(f.relative_to(out).as_posix() for f in path.rglob("*") if f.is_file())
        files = {f.relative_to(path).as_posix(): {"sha256": sha256_file(f)} for f in sorted(path.rglob("*")) if f.is_file()}
        ok = sha256_json({k: v["sha256"] for k, v in files.items()}) == a.sha256
        return [Checked(a.path, ok, "digests match" if ok else "changed: a file in the folder differs")]
    return [_check_file(path, a.path, a.sha256, a.size)]


def _check_file(path: Path, rel: str, digest: str, size: int | None = None) -> Checked:
    if not path.is_file():
        return Checked(rel, False, "missing")
    got = sha256_file(path)
    if got != digest:
        return Checked(rel, False, f"changed: sha256 {got[:12]}… where the manifest says {digest[:12]}…")
    if size is not None and path.stat().st_size != size:
        return Checked(rel, False, f"changed: {path.stat().st_size} bytes where the manifest says {size}")
    return Checked(rel, True, "sha256 matches")


def check_release(manifest: Manifest, least: int) -> Checked:
    """--min-release N: a device refuses a build older than what it runs."""
    have = manifest.release
    ok = have is not None and have >= least
    shown = "none" if have is None else have
    return Checked("release", ok, f"release {shown} {'>=' if ok else '<'} {least}" + ("" if ok else ": a downgrade"))


def recipe_for(manifest: Manifest, out: Path, given: Path | None) -> Path:
    """The recipe to rebuild: --recipe, else the one the provenance names (relative to where edgebuild ran);
    it must be the file the build came from."""
    recipe = given
    if recipe is None:
        try:
            prov = json.loads((out / "provenance.json").read_text())
            recipe = Path(prov["predicate"]["buildDefinition"]["externalParameters"]["recipe"]["path"])
        except (OSError, ValueError, KeyError, TypeError):
            raise UserError(Problem("--rebuild needs the recipe: no provenance.json names it", None,
                                    "give it with --recipe RECIPE.yaml")) from None
    if not recipe.is_file():
        raise UserError(Problem(f"--rebuild: no recipe file {recipe}", None, "give it with --recipe RECIPE.yaml"))
    if sha256_file(recipe) != manifest.recipe_sha256:
        raise UserError(Problem(f"--rebuild: {recipe} is not the recipe this build came from (its sha256 differs "
                                "from the manifest's)", None, "check out the recipe the build was made from"))
    return recipe


def rebuild(manifest: Manifest, recipe: Path, out: Path) -> list[Checked]:
    """Build the recipe again from nothing (a temporary cache, no remote, the manifest's `best:` choices)
    and compare what it publishes with what `out` holds."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="edgebuild-verify-") as tmp:
        again = _build_again(manifest, recipe, Path(tmp))
        return compare(manifest, again)


def _build_again(manifest: Manifest, recipe: Path, tmp: Path) -> Manifest:
    import argparse
    import contextlib
    import io

    from edgebuild.commands import run

    p = argparse.ArgumentParser()
    run.add_arguments(p)
    argv = [str(recipe), "--cache", str(tmp / "cache"), "--out", str(tmp / "dist"), "--json"]
    for t in sorted(manifest.targets):
        argv += ["--target", t]
    args = p.parse_args(argv)
    args.remote = ""                 # from scratch: nothing from a shared cache
    args.lock_off = True             # the recipe's lock is neither read nor written
    args.pinned = {t: e.chosen for t, e in manifest.targets.items() if e.chosen}
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        run.run(args)
    return load(tmp / "dist" / manifest.name / "manifest.json")


def compare(old: Manifest, new: Manifest) -> list[Checked]:
    """Each artifact of `old` against the rebuild's: bytes, or checks for a non-reproducible one."""
    rows = []
    for t, entry in sorted(old.targets.items()):
        rebuilt = {a.step: a for a in new.targets[t].artifacts} if t in new.targets else {}
        for a in entry.artifacts:
            b = rebuilt.get(a.step)
            if b is None:
                rows.append(Checked(a.path, False, "not rebuilt: the rebuild published no such artifact"))
            elif a.is_reproducible:
                rows.append(_same_bytes(a, b))
            else:
                rows.append(_same_checks(a, b))
        for d in entry.deferred:
            rows.append(Checked(f"{t}/{d.step}", True, "deferred in both builds: not built on this host"))
    return rows


def _same_bytes(a: Artifact, b: Artifact) -> Checked:
    if a.sha256 == b.sha256:
        return Checked(a.path, True, "identical: byte for byte")
    if a.files is not None and b.files is not None:
        diff = sorted(k for k in set(a.files) | set(b.files) if a.files.get(k) != b.files.get(k))
        return Checked(a.path, False, f"differs: {', '.join(diff[:5])}")
    return Checked(a.path, False, f"differs: sha256 {b.sha256[:12]}… rebuilt, {a.sha256[:12]}… published")


def _same_checks(a: Artifact, b: Artifact) -> Checked:
    """A non-reproducible artifact: the same checks pass, and its fidelity and accuracy agree."""
    ra = {(r["check"], r["what"]): r for r in (a.checks or {}).get("results", [])}
    rb = {(r["check"], r["what"]): r for r in (b.checks or {}).get("results", [])}
    if not ra:
        return Checked(a.path, True, "not reproducible and not checked: rebuilt, not compared")
    for k, r in ra.items():
        s = rb.get(k)
        if s is None or s["passed"] != r["passed"]:
            return Checked(a.path, False, f"its {k[1]} check {'passes' if r['passed'] else 'fails'} as published, "
                                             "not as rebuilt")
        if k[0] in ("fidelity", "accuracy") and None not in (r["value"], s["value"]) and \
                abs(r["value"] - s["value"]) > TOLERANCE:
            return Checked(a.path, False, f"{k[1]} {s['value']:g} rebuilt, {r['value']:g} published")
    return Checked(a.path, True, f"not reproducible; its checks agree within {TOLERANCE:g}")
