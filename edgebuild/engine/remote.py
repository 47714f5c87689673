"""The shared cache: entries read through from a remote store, verified file by file before the local cache
takes them, and entries built here written back in the background.

Remote layout (stores.py gives the blobs):

    objects/<k[:2]>/<key>/   the entry's files, then entry.json (sizes and sha256 of every file) LAST:
                             the commit marker; an entry without it does not exist for readers
    claims/<key>.json        "I am uploading this key" (created exclusively; stale after CLAIM_TTL_S)
    refs/<name>.json         a mutable pointer to an entry (the latest TensorRT timing cache of a GPU)
    access/<month>/<id>.json the keys one read-write build used, for `cache gc --remote --older-than`

A remote that fails (unreachable, slow, refusing credentials) is given up for the rest of the build with
one warning; the build goes on locally. No build waits on the remote longer than its budget in total.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from edgebuild.engine.stores import Store, Url, reason

if TYPE_CHECKING:
    from edgebuild.engine.cache import Cache

ENTRY = "entry.json"
CLAIM_TTL_S = 600.0    # a claim older than this was left by a writer that died mid-upload
PREFETCH = 4           # downloads at once when a plan's local misses are fetched ahead of the executor
SHA = re.compile(r"[0-9a-f]{64}")
PUSH_HINT = "`edgebuild cache push RECIPE --remote URL` uploads a recipe's entries once the remote is back"


def entry_dir(key: str) -> str:
    return f"objects/{key[:2]}/{key}"


class Gone(Exception):
    """The remote was given up for this build (the warning says why)."""


@dataclass
class Traffic:
    downloaded: int = 0
    downloaded_bytes: int = 0
    uploaded: int = 0
    uploaded_bytes: int = 0
    present: int = 0        # entries another writer had already uploaded (or was uploading)
    rejected: int = 0       # remote entries that failed verification
    unsent: int = 0         # entries not uploaded because the remote was given up
    fetch_s: float = 0.0    # time in fetch(): lookups, downloads, digest checks (summed over threads)
    verify_s: float = 0.0   # of which the digest checks
    wait_s: float = 0.0     # time run waited for the uploads before it exited

    def line(self) -> str:
        """`remote: 9 downloaded (3.1 MB), 5 uploaded (1.2 MB)` and what else happened."""
        s = (f"remote: {self.downloaded} downloaded ({self.downloaded_bytes / 1e6:.1f} MB), "
             f"{self.uploaded} uploaded ({self.uploaded_bytes / 1e6:.1f} MB)")
        extra = [f"{n} {what}" for n, what in ((self.present, "already there"), (self.rejected, "rejected"),
                                               (self.unsent, "not uploaded")) if n]
        return s + (f", {', '.join(extra)}" if extra else "")


class Remote:
    """One build's use of a remote store: lookups and downloads on the calling thread (they count against
    the budget), uploads in order on one background thread (only the final wait counts)."""

    def __init__(self, url: Url, store: Store, read_only: bool = False, timeout_s: float = 30.0):
        self.url, self.store, self.read_only, self.timeout_s = url, store, read_only, timeout_s
        self.traffic = Traffic()
        self.warnings: list[str] = []
        self.failure: str | None = None
        self.used: set[str] = set()
        self._spent = 0.0
        self._lock = threading.Lock()
        self._probed = False
        self._probe_done = threading.Event()
        self._pending: dict[str, Future[int | None]] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._queue: queue.Queue[tuple[str, str, Any] | None] = queue.Queue()
        self._uploader: threading.Thread | None = None

    def renew(self) -> None:
        """A fresh time budget and failure state for the next job of a long-lived process (a Dask worker), which
        keeps the store's client and the answer of its first probe."""
        with self._lock:
            self._spent, self.failure, self.warnings = 0.0, None, []

    def check(self) -> str | None:
        """Contact the remote now (for --remote-required, before anything is built): why it cannot be used,
        or None."""
        try:
            self._call(lambda: None)
        except Gone:
            pass
        return self.failure

    def warm(self) -> None:
        """Contact the remote on a background thread (the client's setup, the first round trip) while the
        recipe is planned."""
        threading.Thread(target=self.check, name="edgebuild-remote-probe", daemon=True).start()

    # reading -----------------------------------------------------------------------------------------

    def prefetch(self, keys: list[str], cache: Cache) -> None:
        """Start fetching every key the plan misses locally, several at once, ahead of the executor: a CI
        cold start downloads in parallel rather than step after step along the graph."""
        keys = [k for k in dict.fromkeys(keys) if k not in self._pending]
        if not keys or self.failure is not None:
            return
        self._pool = self._pool or ThreadPoolExecutor(PREFETCH, thread_name_prefix="edgebuild-fetch")
        for k in keys:
            self._pending[k] = self._pool.submit(self._fetch, k, cache)

    def fetch(self, key: str, cache: Cache) -> int | None:
        """Download a committed entry into the local cache, every file checked against entry.json; the bytes
        fetched, or None when the remote has no usable entry (then the step is built here)."""
        ahead = self._pending.pop(key, None)
        if ahead is not None:   # prefetched, or being prefetched: its own calls are bounded by the budget
            return ahead.result()
        return self._fetch(key, cache)

    def _fetch(self, key: str, cache: Cache) -> int | None:
        t0 = time.perf_counter()
        try:
            return self._fetch_entry(key, cache)
        finally:
            with self._lock:
                self.traffic.fetch_s += time.perf_counter() - t0

    def _fetch_entry(self, key: str, cache: Cache) -> int | None:
        base = entry_dir(key)
        try:
            raw = self._call(self.store.read, f"{base}/{ENTRY}")
        except (FileNotFoundError, Gone):
            return None
        meta, problem = checked_meta(raw, key)
        if meta is None:
            self._reject(key, ENTRY, problem)
            return None
        scratch = cache.scratch(key)
        try:
            for rel, info in sorted(meta["files"].items()):
                dest = scratch / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                try:
                    self._call(self.store.get, f"{base}/{rel}", dest)
                except FileNotFoundError:
                    bad = "is missing"
                else:
                    t1 = time.perf_counter()
                    bad = mismatch(dest, info)
                    with self._lock:
                        self.traffic.verify_s += time.perf_counter() - t1
                if bad:
                    self._reject(key, rel, bad)
                    return None
            (scratch / ENTRY).write_bytes(raw)
            cache.adopt(key, scratch, {rel: info["sha256"] for rel, info in meta["files"].items()})
        except Gone:
            return None
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        size = sum(int(i["size"]) for i in meta["files"].values())
        with self._lock:
            self.traffic.downloaded += 1
            self.traffic.downloaded_bytes += size
            self.used.add(key)
        return size

    def fetch_ref(self, name: str, cache: Cache) -> str | None:
        """The entry a remote ref points at, fetched into the local cache; its key, or None."""
        try:
            key = json.loads(self._call(self.store.read, f"refs/{name}.json")).get("key")
        except (FileNotFoundError, Gone, ValueError, AttributeError):
            return None
        if not isinstance(key, str) or not SHA.fullmatch(key):
            return None
        return key if cache.has(key) or self.fetch(key, cache) is not None else None

    def _reject(self, key: str, rel: str, why: str) -> None:
        with self._lock:
            self.traffic.rejected += 1
            self.warnings.append(f"warning: remote cache entry {key}: {rel} {why}: the entry was ignored and the step "
                                 f"built here\n  hint: remove {self.url.text.rstrip('/')}/{entry_dir(key)}/ if it stays "
                                 "broken (`edgebuild cache gc --remote` drops it once unused)")

    # writing -----------------------------------------------------------------------------------------

    def send(self, key: str, folder: Path) -> None:
        """Queue a local entry for upload (files first, entry.json last); nothing when read-only."""
        self._enqueue(("entry", key, folder))

    def send_ref(self, name: str, key: str) -> None:
        """Queue pointing a ref at an entry (after that entry's upload: the queue keeps the order)."""
        self._enqueue(("ref", name, key))

    def _enqueue(self, item: tuple[str, str, Any]) -> None:
        if self.read_only:
            return
        if self.failure is not None:
            self.traffic.unsent += item[0] == "entry"
            return
        if self._uploader is None:
            self._uploader = threading.Thread(target=self._upload_all, name="edgebuild-upload", daemon=True)
            self._uploader.start()
        self._queue.put(item)

    def _upload_all(self) -> None:
        while (item := self._queue.get()) is not None:
            what, name, arg = item
            try:
                if self.failure is not None:
                    raise Gone
                if what == "entry":
                    self.upload(name, arg)
                else:
                    self._call(self.store.write, f"refs/{name}.json", json.dumps({"key": arg}).encode(), blocking=False)
            except (Gone, OSError, ValueError, KeyError):   # given up, or the local entry went away meanwhile
                self.traffic.unsent += what == "entry"

    def upload(self, key: str, folder: Path) -> bool:
        """Upload one entry unless the remote has it, or another writer is uploading it; True if this did."""
        base = entry_dir(key)
        raw = (folder / ENTRY).read_bytes()
        files = json.loads(raw)["files"]
        self.used.add(key)
        if self._exists(f"{base}/{ENTRY}") or not self._claim(key):
            self.traffic.present += 1
            return False
        try:
            for rel in sorted(files):
                self._call(self.store.put, folder / rel, f"{base}/{rel}", blocking=False)
            self._call(self.store.create, f"{base}/{ENTRY}", raw, blocking=False)
        except FileExistsError:   # another writer committed it first: theirs stays
            self.traffic.present += 1
            return False
        finally:
            self._release(key)
        with self._lock:
            self.traffic.uploaded += 1
            self.traffic.uploaded_bytes += sum(int(i["size"]) for i in files.values())
        return True

    def _exists(self, path: str) -> bool:
        try:
            self._call(self.store.read, path, blocking=False)
            return True
        except FileNotFoundError:
            return False

    def _claim(self, key: str) -> bool:
        """Take the right to upload a key: create claims/<key>.json exclusively, or take over a stale claim."""
        path = f"claims/{key}.json"
        body = json.dumps({"by": f"{os.uname().nodename}:{os.getpid()}", "at": time.time()}).encode()
        try:
            self._call(self.store.create, path, body, blocking=False)
            return True
        except FileExistsError:
            pass
        try:
            at = float(json.loads(self._call(self.store.read, path, blocking=False))["at"])
        except FileNotFoundError:   # released meanwhile: its entry.json is there now, or the upload failed
            return False
        except (ValueError, KeyError, TypeError):
            at = 0.0
        if time.time() - at < CLAIM_TTL_S:
            return False
        self._call(self.store.write, path, body, blocking=False)
        return True

    def _release(self, key: str) -> None:
        try:
            self._call(self.store.delete, [f"claims/{key}.json"], blocking=False)
        except (Gone, FileNotFoundError):
            pass

    def finish(self, used: set[str] | None = None) -> None:
        """Wait for the uploads within what is left of the budget, then log the keys this build used (read-write
        builds only: what `cache gc --remote --older-than` keeps)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        if self._uploader is not None:
            self._queue.put(None)
            t0 = time.perf_counter()
            self._uploader.join(max(self.timeout_s - self._spent, 0.0))
            self.traffic.wait_s = time.perf_counter() - t0
            self._spent += self.traffic.wait_s
            if self._uploader.is_alive():
                left = self._queue.qsize()
                self._give_up(f"the uploads did not finish within --remote-timeout {self.timeout_s:g} s",
                              f"raise --remote-timeout for large entries; {PUSH_HINT}")
                self.traffic.unsent += max(left - 1, 0)
        touched = self.used | (used or set()) if self._probed else set()
        if touched and not self.read_only and self.failure is None:
            stamp = time.strftime("%Y-%m", time.gmtime())
            body = json.dumps({"keys": sorted(touched), "at": time.time()}).encode()
            try:
                self._call(self.store.write, f"access/{stamp}/{time.time():.0f}-{uuid.uuid4().hex[:12]}.json", body)
            except Gone:
                pass

    # source files by content: the Dask executor's workers rebuild a recipe's folder from them -------------

    def put_source(self, local: Path, sha: str) -> None:
        """Upload a recipe's source file as sources/<sha[:2]>/<sha> unless it is there (a small marker written
        after the file says so; no large file is read back to find out). Raises Gone when the remote fails."""
        base = f"sources/{sha[:2]}/{sha}"
        if self._exists(f"{base}.json"):
            return
        self._call(self.store.put, local, base)
        self._call(self.store.write, f"{base}.json", json.dumps({"size": local.stat().st_size}).encode())

    def get_source(self, sha: str, dest: Path) -> bool:
        """Download a source file by its digest, checked; False when the remote has no such file."""
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            self._call(self.store.get, f"sources/{sha[:2]}/{sha}", tmp)
            from edgebuild.engine.digest import sha256_file

            if sha256_file(tmp) != sha:
                return False
            os.replace(tmp, dest)
            return True
        except FileNotFoundError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    # every call ----------------------------------------------------------------------------------------

    def _call(self, fn: Callable[..., Any], *args: Any, blocking: bool = True) -> Any:
        """One store call, bounded in time. Not found and already-exists are answers; anything else gives the
        remote up for this build. Calls the build waits for (blocking) spend the budget."""
        if self.failure is not None:
            raise Gone
        self._probe_once()
        return self._bounded(fn, args, blocking)

    def _probe_once(self) -> None:
        """The first call checks the store (bucket there, credentials taken); the others wait for it."""
        with self._lock:
            first, self._probed = not self._probed, True
        if not first:
            self._probe_done.wait(max(self.timeout_s - self._spent, 0.0))
            if self.failure is not None:
                raise Gone
            return
        try:
            self._bounded(self.store.probe, (not self.read_only,), True, answers=())
        finally:
            self._probe_done.set()

    def _bounded(self, fn: Callable[..., Any], args: tuple[Any, ...], blocking: bool,
                 answers: tuple[type[BaseException], ...] = (FileNotFoundError, FileExistsError)) -> Any:
        left = self.timeout_s - self._spent if blocking else self.timeout_s
        if left <= 0:
            self._give_up(f"the build waited --remote-timeout {self.timeout_s:g} s for it in all",
                          "raise --remote-timeout, or check the network")
            raise Gone
        t0 = time.monotonic()
        try:
            return in_time(fn, args, left)
        except answers:
            raise
        except Exception as exc:
            what, hint = reason(exc)
            self._give_up(what, hint)
            raise Gone from None
        finally:
            if blocking:
                with self._lock:
                    self._spent += time.monotonic() - t0

    def _give_up(self, what: str, hint: str) -> None:
        with self._lock:
            if self.failure is not None:
                return
            self.failure = what
            self.warnings.append(f"warning: remote cache {self.url.text}: {what}; the build goes on with the local "
                                 f"cache only\n  hint: {hint}")


def in_time(fn: Callable[..., Any], args: tuple[Any, ...], timeout_s: float) -> Any:
    """fn(*args), or TimeoutError after timeout_s: it runs on a daemon thread, so a call stuck in a backend
    (a hung mount, a server that accepts and never answers) cannot hold the build or its exit."""
    box: dict[str, Any] = {}
    done = threading.Event()

    def go() -> None:
        try:
            box["value"] = fn(*args)
        except BaseException as exc:   # handed to the waiting thread
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=go, name="edgebuild-remote-call", daemon=True).start()
    if not done.wait(timeout_s):
        raise TimeoutError(f"no answer within {timeout_s:.1f} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def checked_meta(raw: bytes, key: str) -> tuple[dict[str, Any] | None, str]:
    """A remote entry.json, if it is one for this key whose file list is safe to write; else (None, why)."""
    try:
        meta = json.loads(raw)
    except ValueError:
        return None, "is not valid JSON"
    if not isinstance(meta, dict) or meta.get("key") != key or not isinstance(meta.get("files"), dict):
        return None, "does not describe this key"
    for rel, info in meta["files"].items():
        parts = rel.split("/")
        if rel.startswith("/") or "\\" in rel or any(p in ("", ".", "..") for p in parts) or rel in (ENTRY, "log.txt"):
            return None, f"names a file outside the entry ({rel!r})"
        if not (isinstance(info, dict) and isinstance(info.get("size"), int) and info["size"] >= 0
                and isinstance(info.get("sha256"), str) and SHA.fullmatch(info["sha256"])):
            return None, f"has no size and sha256 for {rel}"
    return meta, ""


def mismatch(path: Path, info: dict[str, Any]) -> str:
    """Why a downloaded file is not the one entry.json names ("" when it is)."""
    from edgebuild.engine.digest import sha256_file

    size = path.stat().st_size
    if size != info["size"]:
        return f"has {size} bytes where entry.json says {info['size']}"
    if sha256_file(path) != info["sha256"]:
        return "does not match its sha256 in entry.json"
    return ""


def parse_age(text: str) -> float:
    """--older-than: '30d', '12h', '90m', '2w' in seconds (ValueError otherwise)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]


@dataclass
class Swept:
    removed: int = 0
    freed: int = 0
    kept: int = 0
    partial: int = 0


def gc(store: Store, older_than_s: float, now: float | None = None) -> Swept:
    """Drop remote entries committed before the cutoff that no read-write build used since (access logs),
    nor a ref points at; abandoned partial uploads, claims and access logs older than the cutoff too.
    entry.json goes first, so a reader never sees an entry with files missing."""
    cutoff = (now or time.time()) - older_than_s
    blobs = store.listing("")
    used = _used_since(store, blobs, cutoff) | _ref_keys(store, blobs)
    entries: dict[str, dict[str, tuple[int, float]]] = {}
    for path, st in blobs.items():
        parts = path.split("/")
        if len(parts) >= 4 and parts[0] == "objects":
            entries.setdefault(parts[2], {})["/".join(parts[3:])] = st
    out = Swept()
    for key, files in sorted(entries.items()):
        committed = files.get(ENTRY)
        newest = committed[1] if committed else max(t for _, t in files.values())
        if newest >= cutoff or (committed and key in used):
            out.kept += 1
            continue
        base = entry_dir(key)
        store.delete([f"{base}/{ENTRY}"] if committed else [])
        store.delete([f"{base}/{rel}" for rel in sorted(files) if rel != ENTRY])
        out.removed += bool(committed)
        out.partial += not committed
        out.freed += sum(s for s, _ in files.values())
    stale = [p for p, (_, t) in blobs.items() if p.startswith(("access/", "claims/")) and t < cutoff]
    store.delete(stale)
    return out


def _used_since(store: Store, blobs: dict[str, tuple[int, float]], cutoff: float) -> set[str]:
    keys: set[str] = set()
    for path, (_, t) in blobs.items():
        if path.startswith("access/") and t >= cutoff:
            try:
                keys.update(json.loads(store.read(path)).get("keys", []))
            except (OSError, ValueError, AttributeError):
                continue
    return keys


def _ref_keys(store: Store, blobs: dict[str, tuple[int, float]]) -> set[str]:
    keys: set[str] = set()
    for path in blobs:
        if path.startswith("refs/") and path.endswith(".json"):
            try:
                keys.add(str(json.loads(store.read(path))["key"]))
            except (OSError, ValueError, KeyError, TypeError):
                continue
    return keys
