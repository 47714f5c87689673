"""`run`'s options for builds a CI and a device can trust: the lock (--locked, --relock), the release
number (--release) and signing (--sign), and what run does with them around a build. Standard library
only at import: a no-op run imports this module."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgebuild.checks.judge import Verdict
    from edgebuild.engine.plan import Plan
    from edgebuild.output.manifest import Manifest
    from edgebuild.trust.lock import Session


def release_number(text: str) -> int:
    """--release: a positive integer."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a release number: give an integer of 1 or more")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--locked", action="store_true",
                   help="fail (exit 1, nothing built) when the plan differs from the recipe's lock file; "
                        "`best:` takes the locked choice (what CI runs)")
    p.add_argument("--relock", action="store_true", help="choose `best:` candidates again from this build's checks")
    p.add_argument("--release", type=release_number, metavar="N",
                   help="the manifest's release number (default: the lock's, one more when what ships changed)")
    p.add_argument("--sign", type=Path, metavar="KEY.pem",
                   help="sign each target's folder (<target>/model.sig), the manifest and the provenance with "
                        "this elliptic-curve private key (OpenSSF model signing)")


def check(args: argparse.Namespace) -> None:
    """Flag combinations and files that are wrong before anything else runs (cheap: a stat or two; the
    error types are imported only for an error, as the no-op path needs none)."""
    if args.locked and args.relock:
        _fail("--locked and --relock contradict each other",
              "--locked builds what the lock says; --relock chooses again and rewrites the lock")
    if args.sign is not None and not args.sign.is_file():
        _fail(f"--sign {args.sign}: no such key file", KEY_HINT)
    if args.locked and not args.recipe.with_suffix(".lock").is_file():
        _fail(f"--locked: there is no lock file {args.recipe.with_suffix('.lock')}",
              f"run `edgebuild run {args.recipe}` once to write it, and commit it")


def _fail(message: str, hint: str) -> None:
    from edgebuild.errors import Problem, UserError

    raise UserError(Problem(message, None, hint))


KEY_HINT = ("make a key pair with `openssl ecparam -name prime256v1 -genkey -noout -out key.pem` and "
            "`openssl ec -in key.pem -pubout -out pub.pem`")


def forces_build(args: argparse.Namespace) -> bool:
    """Options a no-op record cannot answer: choosing again, or a new release number."""
    return bool(args.relock or args.release is not None)


def after_noop(args: argparse.Namespace, manifest: str) -> None:
    """`run --sign` on an up-to-date build still signs what is published."""
    if args.sign is not None:
        from edgebuild.trust import signing

        signing.sign_dist(Path(manifest).parent, args.sign)


def finish(args: argparse.Namespace, lock: Session, plan: Plan, manifest: Manifest, verdicts: dict[str, Verdict],
           out: Path) -> None:
    """After a good build: the lock, the provenance, the signatures (or, unsigned, no stale ones)."""
    from edgebuild.trust import provenance, signing

    lock.finish(manifest, verdicts)
    provenance.write(out, plan, manifest)
    if args.sign is not None:
        signing.sign_dist(out, args.sign)
    else:
        signing.drop(out)


def watch(record: dict[str, Any], lock: Session) -> dict[str, Any]:
    """The no-op record watches the lock too: an edited or deleted lock means a build (and a check)."""
    from edgebuild.engine.digest import sha256_file

    if not lock.off and lock.file.is_file():
        st = lock.file.stat()
        record["watched"][str(lock.file.resolve())] = [st.st_size, st.st_mtime_ns, sha256_file(lock.file)]
    return record
