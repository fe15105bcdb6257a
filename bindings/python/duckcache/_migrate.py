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
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
import warnings
from pathlib import Path

MARK_TABLE = "duckcache_imported"
LOCK_NAME = ".duckcache-import.lock"


def _is_diskcache_store(db: Path) -> bool:
    if not db.is_file():
        return False
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as con:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.Error:
        return False
    return "Cache" in tables and "Settings" in tables


def _imported(db: Path) -> bool:
    with sqlite3.connect(db, timeout=10) as con:
        return bool(con.execute(
            "SELECT count(*) FROM sqlite_master WHERE type='table' AND name=?", (MARK_TABLE,)
        ).fetchone()[0])


def _mark(db: Path, count: int) -> None:
    with sqlite3.connect(db, timeout=10) as con:
        con.execute(f"CREATE TABLE IF NOT EXISTS {MARK_TABLE} (at REAL, entries INTEGER)")
        con.execute(f"INSERT INTO {MARK_TABLE} VALUES (?, ?)", (time.time(), count))


def _copy_entries(store: Path, target) -> int:
    """Sets every live entry of the python-diskcache store in `store` into `target` with
    its remaining expiry; returns how many were copied."""
    try:
        import diskcache
    except ImportError:
        warnings.warn(
            f"{store} holds a store of the original duck.utils.caching (python-diskcache); "
            "install diskcache to read it into duckcache",
            RuntimeWarning,
            stacklevel=4,
        )
        return -1
    copied = 0
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
            target.set(key, value, expiry=expiry)
            copied += 1
    return copied


_ABSENT = object()


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
