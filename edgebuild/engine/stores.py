"""Where a remote cache lives: a URL turned into a small store of named blobs (a folder, or any fsspec
file system: s3://, gs://, az://), and the plain words for what went wrong talking to it.

A folder needs only the standard library; the other schemes import fsspec and their backend (s3fs...)
when a build first needs the remote, never on the no-op path.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from edgebuild.errors import Problem, UserError

REMOTE_HINT = "--remote takes a folder (/mnt/team/cache, file:///mnt/team/cache) or an fsspec URL such as s3://bucket/prefix"
# the packages behind fsspec's schemes, and what to install for them
EXTRAS = {"s3": "pip install 'edgebuild[s3]'", "s3a": "pip install 'edgebuild[s3]'",
          "gs": "pip install gcsfs", "gcs": "pip install gcsfs",
          "az": "pip install adlfs", "abfs": "pip install adlfs", "abfss": "pip install adlfs"}
NOT_STORES = ("http", "https", "ftp", "zip", "tar", "github", "git", "reference", "memory", "data", "blockcache",
              "filecache", "simplecache")


@dataclass(frozen=True)
class Url:
    """A checked --remote value: its scheme ("" for a folder) and the path the store is rooted at."""

    text: str
    scheme: str
    root: str

    @property
    def folder(self) -> bool:
        return self.scheme in ("", "file")


def parse(text: str) -> Url:
    """Check a --remote URL's form with the standard library only (no network, no fsspec): a malformed URL
    or a scheme that is no store is a user error now, before anything is built."""
    t = text.strip()
    if not t:
        raise _bad(text, "it is empty")
    if "://" not in t:
        if ":" in t.split("/")[0] and not t.startswith((".", "/")) and len(t.split(":")[0]) > 1:
            raise _bad(text, f"'{t.split(':')[0]}:' is not followed by //")
        return Url(text, "", str(Path(t).expanduser()))
    scheme, rest = t.split("://", 1)
    scheme = scheme.lower()
    if not scheme.replace("+", "").replace("-", "").isalnum():
        raise _bad(text, f"'{scheme}' is not a URL scheme")
    if scheme == "file":
        if not rest.startswith("/"):
            raise _bad(text, "a file:// URL takes an absolute path (file:///mnt/team/cache)")
        return Url(text, "file", rest)
    if scheme in NOT_STORES:
        raise UserError(Problem(f"--remote {text}: {scheme}:// cannot hold a cache (edgebuild lists, writes and "
                                "deletes objects there)", None, REMOTE_HINT))
    root = rest.strip("/")
    if not root or root.startswith("/"):
        raise _bad(text, f"it names no bucket or container after {scheme}://")
    return Url(text, scheme, root)


def _bad(text: str, why: str) -> UserError:
    return UserError(Problem(f"--remote {text!r} is not a remote cache URL: {why}", None, REMOTE_HINT))


class Store(Protocol):
    """Blobs by '/'-separated relative path. Every method may raise OSError (FileNotFoundError: no such
    blob, FileExistsError: create() lost a race) or a backend's own error."""

    def read(self, path: str) -> bytes: ...
    def get(self, path: str, local: Path) -> None: ...
    def put(self, local: Path, path: str) -> None: ...
    def write(self, path: str, data: bytes) -> None: ...
    def create(self, path: str, data: bytes) -> None: ...   # atomic where the backend allows; FileExistsError if there
    def delete(self, paths: list[str]) -> None: ...
    def listing(self, prefix: str) -> dict[str, tuple[int, float]]: ...   # path -> (size, mtime) of every blob below
    def probe(self, writable: bool) -> None: ...   # raise if the store cannot be used (missing bucket, bad credentials)


def open_store(url: Url, timeout_s: float) -> Store:
    """The store behind a checked URL. A scheme fsspec does not know, or whose package is not installed, is a
    user error naming what to install."""
    if url.folder:
        return FolderStore(Path(url.root))
    try:
        import fsspec
        from fsspec.registry import known_implementations
    except ImportError:
        raise UserError(Problem(f"--remote {url.text}: {url.scheme}:// needs fsspec, which is not installed", None,
                                EXTRAS.get(url.scheme, "pip install fsspec"))) from None
    if url.scheme not in known_implementations:
        raise UserError(Problem(f"--remote {url.text}: unknown scheme {url.scheme}://", None,
                                "use a folder, s3://, gs:// or az:// (any scheme fsspec knows, with its package installed)"))
    try:
        cls = fsspec.get_filesystem_class(url.scheme)
    except ImportError:
        raise UserError(Problem(f"--remote {url.text}: {url.scheme}:// needs a package that is not installed", None,
                                EXTRAS.get(url.scheme) or known_implementations[url.scheme].get("err", ""))) from None
    return FsspecStore(cls(**_options(url.scheme, timeout_s)), url.root)


def _options(scheme: str, timeout_s: float) -> dict[str, Any]:
    """Bounded timeouts and retries; endpoint and credentials come the backend's standard way (for S3:
    AWS_ENDPOINT_URL, AWS_PROFILE, AWS_ACCESS_KEY_ID...)."""
    if scheme in ("s3", "s3a"):
        return {"skip_instance_cache": True, "use_listings_cache": False,
                "config_kwargs": {"connect_timeout": min(5.0, timeout_s), "read_timeout": timeout_s,
                                  "retries": {"max_attempts": 2, "mode": "standard"}}}
    return {"skip_instance_cache": True}


class FolderStore:
    """A folder (local disk, NFS or SMB mount): blobs are files, commits are atomic renames and links."""

    def __init__(self, root: Path):
        self.root = root

    def _p(self, path: str) -> Path:
        return self.root / path

    def read(self, path: str) -> bytes:
        return self._p(path).read_bytes()

    def get(self, path: str, local: Path) -> None:
        shutil.copyfile(self._p(path), local)

    def put(self, local: Path, path: str) -> None:
        self._atomic(path, lambda tmp: shutil.copyfile(local, tmp))

    def write(self, path: str, data: bytes) -> None:
        self._atomic(path, lambda tmp: tmp.write_bytes(data))

    def create(self, path: str, data: bytes) -> None:
        """Written aside, then hard-linked into place: link fails if the name exists, and a reader never sees
        half a file."""
        dest = self._p(path)
        tmp = self._tmp(dest)
        tmp.write_bytes(data)
        try:
            os.link(tmp, dest)
        finally:
            tmp.unlink()

    def delete(self, paths: list[str]) -> None:
        for p in paths:
            self._p(p).unlink(missing_ok=True)
            self._prune(self._p(p).parent)

    def listing(self, prefix: str) -> dict[str, tuple[int, float]]:
        base = self._p(prefix)
        out = {}
        for dirpath, _, names in os.walk(base):
            for n in names:
                f = Path(dirpath) / n
                try:
                    st = f.stat()
                except OSError:
                    continue
                out[f.relative_to(self.root).as_posix()] = (st.st_size, st.st_mtime)
        return out

    def probe(self, writable: bool) -> None:
        if writable:
            self.root.mkdir(parents=True, exist_ok=True)
            if not os.access(self.root, os.W_OK):
                raise PermissionError(13, "Permission denied", str(self.root))
        elif not self.root.is_dir():
            raise FileNotFoundError(2, "No such folder", str(self.root))

    def _atomic(self, path: str, fill: Any) -> None:
        dest = self._p(path)
        tmp = self._tmp(dest)
        try:
            fill(tmp)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)

    def _tmp(self, dest: Path) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        return dest.with_name(f".{dest.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")

    def _prune(self, d: Path) -> None:
        """Remove folders a delete left empty, up to the root."""
        while d != self.root and self.root in d.parents:
            try:
                d.rmdir()
            except OSError:
                return
            d = d.parent


class FsspecStore:
    """Any fsspec file system. Object stores make each PUT visible whole; create() uses a conditional PUT
    (S3's If-None-Match) where the backend has one, else checks first (a small race, see the README)."""

    def __init__(self, fs: Any, root: str):
        self.fs, self.root = fs, root.rstrip("/")
        if hasattr(fs, "retries"):
            fs.retries = 2   # s3fs retries 5 times with backoff by default: the budget is ours to spend

    def _p(self, path: str) -> str:
        return f"{self.root}/{path}"

    def read(self, path: str) -> bytes:
        return bytes(self.fs.cat_file(self._p(path)))

    def get(self, path: str, local: Path) -> None:
        self.fs.get_file(self._p(path), str(local))

    def put(self, local: Path, path: str) -> None:
        self.fs.put_file(str(local), self._p(path))

    def write(self, path: str, data: bytes) -> None:
        self.fs.pipe_file(self._p(path), data)

    def create(self, path: str, data: bytes) -> None:
        self.fs.pipe_file(self._p(path), data, mode="create")

    def delete(self, paths: list[str]) -> None:
        if paths:
            self.fs.rm([self._p(p) for p in paths])

    def listing(self, prefix: str) -> dict[str, tuple[int, float]]:
        try:
            found = self.fs.find(self._p(prefix), detail=True)
        except FileNotFoundError:
            return {}
        n = len(self.root) + 1
        return {p[n:]: (int(i.get("size") or 0), _mtime(i)) for p, i in found.items() if i.get("type") != "directory"}

    def probe(self, writable: bool) -> None:
        """The bucket (or container) must exist and take our credentials: one small request."""
        self.fs.info(self.root.split("/")[0])


def _mtime(info: dict[str, Any]) -> float:
    """A blob's modification time from an fsspec listing (S3: LastModified, others: mtime or updated)."""
    for k in ("LastModified", "mtime", "last_modified", "updated", "created"):
        v = info.get(k)
        if v is None:
            continue
        if hasattr(v, "timestamp"):
            return float(v.timestamp())
        if isinstance(v, (int, float)):
            return float(v)
        try:
            from datetime import datetime

            return datetime.fromisoformat(str(v).replace("Z", "+00:00")).timestamp()
        except ValueError:
            continue
    return 0.0


def reason(exc: BaseException) -> tuple[str, str]:
    """(what went wrong, a hint) for an error talking to a remote, in a user's words; the backend's exception
    classes are recognised by name so that none of them is imported here."""
    names = {c.__name__ for c in type(exc).__mro__}
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    if isinstance(exc, TimeoutError) or names & {"ReadTimeoutError", "ConnectTimeoutError"}:
        return f"it did not answer in time ({text})", "check the network, or raise --remote-timeout"
    if names & {"NoCredentialsError", "PartialCredentialsError"}:
        return f"no credentials ({text})", "set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    if isinstance(exc, PermissionError) or (names & {"ClientAuthenticationError", "HttpResponseError"} and "403" in text):
        return (f"it refused access ({text})",
                "check the credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID...) and that they may read and write there")
    if names & {"EndpointConnectionError", "ConnectionError", "ClientConnectorError"} or isinstance(exc, ConnectionError):
        return f"it is unreachable ({text})", "check the URL, the network and AWS_ENDPOINT_URL"
    if isinstance(exc, FileNotFoundError):
        return f"it does not exist ({text})", "create the bucket or folder first, or fix the URL"
    if isinstance(exc, OSError):
        return f"{exc.strerror or text} ({exc.filename})" if exc.filename else text, "check that the folder is writable"
    return f"{type(exc).__name__}: {text}", "check the remote's URL and credentials"
