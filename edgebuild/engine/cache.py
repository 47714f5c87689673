"""The content-addressed store: one folder per cache key, visible only when complete."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from edgebuild.engine.digest import StatCache, sha256_file

if TYPE_CHECKING:
    from edgebuild.errors import UserError

CACHE_HINT = "--cache DIR (or $EDGEBUILD_CACHE) must be a folder edgebuild can create and write to"


def make_folder(path: Path, what: str, hint: str) -> None:
    """`mkdir -p path`; an OSError (a file in the way, no permission, a name too long) is a user error
    that names the folder, e.g. "cannot create the output folder /dev/null/x: Not a directory"."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise folder_error("create", path, what, exc, hint) from None


def folder_error(verb: str, path: Path, what: str, exc: OSError, hint: str) -> UserError:
    """The user error for an OSError while creating (verb "create") or writing to ("write to") a folder."""
    from edgebuild.errors import Problem, UserError

    return UserError(Problem(f"cannot {verb} the {what} {path}: {exc.strerror or exc}", None, hint))


class Cache:
    """Layout: objects/<k[:2]>/<key>/ (outputs + entry.json), tmp/ (scratch), locks/, plans/, stat.json."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.stats = StatCache(self.root / "stat.json")

    def entry(self, key: str) -> Path:
        return self.root / "objects" / key[:2] / key

    def has(self, key: str) -> bool:
        return (self.entry(key) / "entry.json").is_file()

    def meta(self, key: str) -> dict[str, Any]:
        return json.loads((self.entry(key) / "entry.json").read_text())

    @contextmanager
    def lock(self, key: str) -> Iterator[None]:
        """Hold an exclusive lock on one key, so two processes never build it at once."""
        d = self.root / "locks"
        make_folder(d, "cache folder", CACHE_HINT)
        try:
            f = open(d / f"{key}.lock", "w")
        except OSError as exc:
            raise folder_error("write to", d, "cache folder", exc, CACHE_HINT) from None
        with f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def scratch(self, key: str) -> Path:
        tmp = self.root / "tmp"
        make_folder(tmp, "cache folder", CACHE_HINT)
        path = tmp / f"{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        try:
            path.mkdir()
        except OSError as exc:
            raise folder_error("write to", tmp, "cache folder", exc, CACHE_HINT) from None
        return path

    def commit(self, key: str, scratch: Path, meta: dict[str, Any]) -> Path:
        """Record the files' digests, then rename the scratch folder into place (atomic)."""
        files = {}
        for f in sorted(p for p in scratch.rglob("*") if p.is_file()):
            rel = f.relative_to(scratch).as_posix()
            if rel in ("log.txt", "entry.json"):
                continue
            files[rel] = {"size": f.stat().st_size, "sha256": sha256_file(f)}
        meta = dict(meta, key=key, files=files)
        (scratch / "entry.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
        dest = self.entry(key)
        make_folder(dest.parent, "cache folder", CACHE_HINT)
        try:
            os.rename(scratch, dest)
        except OSError:  # another process committed the same key first: theirs is as good as ours
            shutil.rmtree(scratch, ignore_errors=True)
        return dest

    def adopt(self, key: str, folder: Path, digests: dict[str, str]) -> None:
        """Rename a complete, verified entry (a download, with its entry.json) into place; the digests it was
        checked against are remembered, so the next verify() does not read the files again."""
        dest = self.entry(key)
        make_folder(dest.parent, "cache folder", CACHE_HINT)
        try:
            os.rename(folder, dest)
        except OSError:   # another process took the same key first
            return
        for rel, digest in digests.items():
            self.stats.remember(dest / rel, digest)

    def ref(self, name: str) -> str | None:
        """The key a named ref points at (refs/<name>.json: the latest state a step kind carries across
        builds, such as a GPU's TensorRT timing cache), if that entry is here."""
        try:
            key = str(json.loads((self.root / "refs" / f"{name}.json").read_text())["key"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return key if self.has(key) else None

    def set_ref(self, name: str, key: str) -> None:
        path = self.root / "refs" / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"key": key}))
        os.replace(tmp, path)

    def verify(self, key: str) -> list[str]:
        """Files of an entry whose content no longer matches its recorded digest (empty: intact)."""
        try:
            meta = self.meta(key)
        except (OSError, ValueError):
            return ["entry.json"]
        bad = []
        for rel, info in meta.get("files", {}).items():
            f = self.entry(key) / rel
            if not f.is_file() or f.stat().st_size != info["size"] or self.stats.digest(f) != info["sha256"]:
                bad.append(rel)
        return bad

    def drop(self, key: str) -> None:
        """Remove an entry (first moved aside, so readers never see half of it)."""
        src = self.entry(key)
        if not src.exists():
            return
        trash = self.root / "tmp" / f"drop.{key}.{uuid.uuid4().hex[:8]}"
        trash.parent.mkdir(parents=True, exist_ok=True)
        os.rename(src, trash)
        shutil.rmtree(trash, ignore_errors=True)

    def keys(self) -> list[str]:
        objs = self.root / "objects"
        if not objs.is_dir():
            return []
        return sorted(p.name for d in objs.iterdir() if d.is_dir() for p in d.iterdir() if (p / "entry.json").is_file())

    def size(self, key: str) -> int:
        return sum(f.stat().st_size for f in self.entry(key).rglob("*") if f.is_file())

    def referenced(self) -> set[str]:
        """Keys named by the last plan of any recipe built with this cache, and by its refs."""
        out: set[str] = set()
        for f in (self.root / "plans").glob("*.json"):
            try:
                out.update(json.loads(f.read_text()).get("keys", []))
            except (OSError, ValueError):
                continue
        for f in (self.root / "refs").rglob("*.json"):
            key = self.ref(f.relative_to(self.root / "refs").as_posix()[:-5])
            if key:
                out.add(key)
        return out

    def gc(self, everything: bool = False, tmp_age_s: float = 3600) -> tuple[int, int]:
        """Drop entries no recipe's last plan uses (all with everything=True) and stale scratch; (count, bytes)."""
        keep = set() if everything else self.referenced()
        n = freed = 0
        for key in self.keys():
            if key not in keep:
                freed += self.size(key)
                self.drop(key)
                n += 1
        tmp = self.root / "tmp"
        if tmp.is_dir():
            for p in tmp.iterdir():
                try:
                    stale = time.time() - p.stat().st_mtime > tmp_age_s
                except OSError:   # a running build just renamed or removed it
                    continue
                if stale:
                    shutil.rmtree(p, ignore_errors=True)
        return n, freed
