"""Reading what the original module wrote: its PersistentFileCache is a python-diskcache
store (`cache.db` and value files), its DynamicFileCache a folder of such stores
(`0-1a2b3c`, ...), and its KeyAsFolderCache one such store per key, in a folder named by
the key. Their live entries are copied into duckcache's store once, with the time they
have left; the original's files are left in place, marked imported (a key folder is first
renamed `.duckcache-imported-<name>`, since duckcache may want that name for the key).

Crash- and process-safe: the copy runs under an exclusive lock on a file beside the
store, and the mark is written only after every entry is in; a copy cut short is simply
done again by the next open (entries are set, so a second copy changes nothing), and a
second process waits for the first and then finds the mark.

The original's PersistentFileCache store is the very file duckcache's store lives in
(`cache.db`). This process never opens that file itself, not even to read a byte: POSIX
record locks belong to a process, and closing *any* descriptor of the file would drop
the locks the library's connections hold on it, after which an ordinary SQLite client
may delete the WAL the library still writes to (acknowledged writes lost). So that
store is read by a child process, which streams its entries to this one; a directory
looked at once is marked (`.duckcache-import-done`) and never looked at again.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pickle
import sqlite3
import subprocess
import sys
import time
import warnings
from pathlib import Path

MARK_TABLE = "duckcache_imported"
LOCK_NAME = ".duckcache-import.lock"


def _is_diskcache_store(db: Path) -> bool:
    if not db.is_file():
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as con:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.Error:
        return False
    return "Cache" in tables and "Settings" in tables


def _imported(db: Path) -> bool:
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as con:
        return bool(con.execute(
            "SELECT count(*) FROM sqlite_master WHERE type='table' AND name=?", (MARK_TABLE,)
        ).fetchone()[0])


def _mark(db: Path, count: int) -> None:
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as con, con:
        con.execute(f"CREATE TABLE IF NOT EXISTS {MARK_TABLE} (at REAL, entries INTEGER)")
        con.execute(f"INSERT INTO {MARK_TABLE} VALUES (?, ?)", (time.time(), count))


def _copy_entries(store: Path, target) -> int:
    """Sets every live entry of the python-diskcache store in `store` into `target` with
    its remaining expiry; returns how many were copied (-1: diskcache is missing)."""
    copied = 0
    for key, value, expiry in _original_entries(store):
        target.set(key, value, expiry=expiry)
        copied += 1
    return copied if _diskcache_available() else -1


def _diskcache_available() -> bool:
    try:
        import diskcache  # noqa: F401
    except ImportError:
        return False
    return True


def _original_entries(store: Path):
    """(key, value, seconds left or None) of every live entry of the python-diskcache
    store in `store`; nothing (and a warning) when diskcache is not installed."""
    try:
        import diskcache
    except ImportError:
        _warn_no_diskcache(store)
        return
    with diskcache.Cache(str(store)) as old:
        for key in list(old.iterkeys()):
            value, expire_time = old.get(key, default=_ABSENT, expire_time=True)
            if value is _ABSENT:
                continue  # expired or removed meanwhile
            if not isinstance(key, (str, bytes)):
                warnings.warn(f"skipped a key duckcache cannot hold: {key!r}", RuntimeWarning, stacklevel=4)
                continue
            expiry = None
            if expire_time is not None:
                expiry = expire_time - time.time()
                if expiry <= 0:
                    continue
            yield key, value, expiry


_ABSENT = object()


def _warn_no_diskcache(store):
    warnings.warn(
        f"{store} holds a store of the original duck.utils.caching (python-diskcache); "
        "install diskcache to read it into duckcache",
        RuntimeWarning,
        stacklevel=5,
    )


def import_original_store_here(path, target, fresh) -> int:
    """Imports, once, the original PersistentFileCache store that shares `path`/cache.db
    with `target` (open on `path`), through a child process (see the module's note);
    returns the number of entries copied. Marks the directory once it has been looked
    at, so later opens cost one stat; `fresh`: `target` created the store (nothing of
    the original's can be there)."""
    path = Path(path)
    mark = path / SCANNED_MARK
    if mark.exists():
        return 0
    if fresh:
        _try_write_mark(mark)
        return 0
    total = 0
    with open(path / LOCK_NAME, "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if mark.exists():  # another process finished while this one waited
            return 0
        child = subprocess.Popen(
            [sys.executable, "-c", "import sys; from duckcache._migrate import _child_main; "
             "_child_main(sys.argv[1])", str(path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
        )
        try:
            while True:
                record = pickle.load(child.stdout)
                if record[0] == "entry":
                    _, key, value, expiry = record
                    target.set(key, value, expiry=expiry)
                    total += 1
                else:
                    outcome = record[1]
                    break
            # Every entry is in: the child marks the original store imported.
            child.stdin.write(b"stored\n")
            child.stdin.close()
            if child.wait() != 0:
                raise RuntimeError(f"duckcache: importing the original store in {path} failed "
                                   f"(the reader process exited with status {child.returncode})")
        except EOFError:
            child.wait()
            raise RuntimeError(f"duckcache: the process reading the original store in {path} "
                               f"ended early (status {child.returncode})") from None
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            child.stdout.close()
        if outcome == "no-diskcache":  # look again next time
            _warn_no_diskcache(path)
        else:
            _try_write_mark(mark)
    return total


def _try_write_mark(mark):
    try:
        _write_mark(mark)
    except OSError:
        pass  # a directory this process cannot write: it is looked at again next time


def _child_main(store: str) -> None:
    """In the child of import_original_store_here: streams the entries of the original
    store in `store` (when it is one, not yet imported) as pickled records on stdout,
    then marks it imported once the parent says they are stored."""
    out = sys.stdout.buffer
    db = Path(store) / "cache.db"
    if not _is_diskcache_store(db) or _imported(db):
        pickle.dump(("end", "nothing"), out)
        out.flush()
        sys.stdin.read()
        return
    if not _diskcache_available():
        pickle.dump(("end", "no-diskcache"), out)
        out.flush()
        sys.stdin.read()
        return
    count = 0
    for key, value, expiry in _original_entries(Path(store)):
        pickle.dump(("entry", key, value, expiry), out)
        count += 1
    pickle.dump(("end", "copied"), out)
    out.flush()
    if sys.stdin.readline().strip() == "stored":
        _mark(db, count)


def import_original(stores, target, lock_dir) -> int:
    """Copies each not yet imported python-diskcache store folder in `stores` into the
    duckcache cache `target`, once; returns the number of entries copied."""
    stores = [Path(s) for s in stores if _is_diskcache_store(Path(s) / "cache.db")]
    if not stores:
        return 0
    total = 0
    with open(os.path.join(lock_dir, LOCK_NAME), "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for store in stores:
            db = store / "cache.db"
            if _imported(db):
                continue
            copied = _copy_entries(store, target)
            if copied < 0:
                continue
            _mark(db, copied)
            total += copied
    return total


def original_shard_folders(cache_dir) -> list:
    """The original DynamicFileCache's shard folders (`<n>-<hex>`) under `cache_dir`, in
    the order its get looks in them (sorted by name, the first holding a key wins)."""
    found = []
    for entry in os.scandir(cache_dir):
        head, _, tail = entry.name.partition("-")
        if entry.is_dir(follow_symlinks=False) and head.isdigit() and tail:
            found.append(Path(entry.path))
    return sorted(found)


RETIRED_PREFIX = ".duckcache-imported-"
DONE_MARK = "duckcache-imported"
# In a KeyAsFolderCache directory: every key folder of the original has been imported,
# so later opens skip the scan (one stat per key folder, which a cache of a million
# keys must not pay on every open).
SCANNED_MARK = ".duckcache-import-done"


def _key_folder_stores(cache_dir):
    """(original key folders, retired ones not yet imported) under `cache_dir`, deepest
    first. The original keeps a key's store in `os.path.join(cache_dir, key)`, so a key
    with '/' has its folder inside another folder (which may be a key's own too)."""
    originals, retired = [], []

    def walk(folder):
        for entry in os.scandir(folder):
            if not entry.is_dir(follow_symlinks=False):
                continue
            path = Path(entry.path)
            if entry.name.startswith(RETIRED_PREFIX):
                walk(path)
                if not (path / DONE_MARK).exists():
                    retired.append(path)
            elif not entry.name.startswith(".") and not (path / "meta").exists():
                walk(path)  # children first: they are retired before their parent moves
                if _is_diskcache_store(path / "cache.db"):
                    originals.append(path)

    walk(cache_dir)
    return originals, retired


def import_original_key_folders(cache_dir, target) -> int:
    """Imports the original KeyAsFolderCache's key folders under `cache_dir` into
    `target`, once each: a folder is renamed out of the way (retired) first, its entries
    set, then marked; a run cut short resumes from the retired folders. Nested folders
    (keys with '/') go first, each finished before the folder holding it moves. Once
    every folder is in, the directory is marked and later opens do not look again."""
    scanned = os.path.join(cache_dir, SCANNED_MARK)
    if os.path.exists(scanned):
        return 0
    originals, retired = _key_folder_stores(cache_dir)
    if not originals and not retired:
        _write_mark(scanned)
        return 0
    total, complete = 0, True
    with open(os.path.join(cache_dir, LOCK_NAME), "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        originals, retired = _key_folder_stores(cache_dir)  # as they are under the lock

        def finish(folder):
            nonlocal total, complete
            copied = _copy_entries(folder, target)
            if copied < 0:
                complete = False  # diskcache missing: look again next time
                return
            (folder / DONE_MARK).write_text(f"imported {copied} entries at {time.time()}\n")
            total += copied

        for folder in retired:  # cut short before: at their places now, nothing moved yet
            finish(folder)
        for folder in originals:
            destination = folder.with_name(RETIRED_PREFIX + folder.name)
            n = 0
            while destination.exists():
                n += 1
                destination = folder.with_name(f"{RETIRED_PREFIX}{folder.name}.{n}")
            os.rename(folder, destination)
            finish(destination)
        if complete:
            _write_mark(scanned)
    return total


def _write_mark(path):
    with open(path, "w") as f:
        f.write(f"duckcache imported the original's key folders here at {time.time()}\n")
