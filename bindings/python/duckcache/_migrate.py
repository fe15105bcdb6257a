"""Reading what the original module wrote: its PersistentFileCache is a python-diskcache
store (`cache.db` and value files), and its DynamicFileCache a folder of such stores
(`0-1a2b3c`, ...). Their live entries are copied into duckcache's store once, with the
time they have left; the original's files are left as they are, marked imported.

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
