"""Content digests of files through a (size, mtime_ns) stat cache, so unchanged files are not re-read."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_json(value: Any) -> str:
    """Digest of a JSON value in canonical form (sorted keys, no spaces)."""
    return hashlib.sha256(canonical(value).encode()).hexdigest()


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class StatCache:
    """sha256 of files keyed by (path, size, mtime_ns), persisted as one JSON file."""

    def __init__(self, file: Path):
        self.file = file
        self.entries: dict[str, list[Any]] = {}
        self.dirty = False
        try:
            self.entries = json.loads(file.read_text())
        except (OSError, ValueError):
            self.entries = {}

    def digest(self, path: str | Path) -> str:
        p = os.path.abspath(path)
        st = os.stat(p)
        hit = self.entries.get(p)
        if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            return str(hit[2])
        d = sha256_file(p)
        self.entries[p] = [st.st_size, st.st_mtime_ns, d]
        self.dirty = True
        return d

    def remember(self, path: str | Path, digest: str) -> None:
        """A digest known without reading the file (a download checked as it came in)."""
        p = os.path.abspath(path)
        st = os.stat(p)
        self.entries[p] = [st.st_size, st.st_mtime_ns, digest]
        self.dirty = True

    def stamp(self, path: str | Path) -> list[Any]:
        """[size, mtime_ns, sha256] of a file, as recorded for the no-op check."""
        p = os.path.abspath(path)
        d = self.digest(p)
        return list(self.entries[p][:2]) + [d]

    def save(self) -> None:
        if not self.dirty:
            return
        self.file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.file.with_name(f"{self.file.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.entries))
        os.replace(tmp, self.file)
        self.dirty = False
