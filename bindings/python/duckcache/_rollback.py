"""The way back: a directory duckcache's classes wrote, rewritten in the original module's
layout, so a Duck deployment rolled back to `duck.utils.caching` keeps its entries
(sessions and the rest) instead of reading None for every one.

- PersistentFileCache: one python-diskcache store in the directory (`cache.db`, value
  files in its own subfolders).
- DynamicFileCache: one shard folder `0-<hex>`, a python-diskcache store holding every
  entry (the original starts new shards past `cache_limit` by itself).
- KeyAsFolderCache: a folder per key, named by the key itself, each a python-diskcache
  store holding that key (keys that would name a folder outside the directory, `..`,
  an absolute path or the empty key, cannot be written there: they are counted in
  `skipped`, never written elsewhere).

Every live entry goes with the time it has left; values are what the class's get returns
(python-diskcache pickles them again, as the original's set did). Values that cannot be
unpickled here are skipped and counted.

The rewrite never changes the store in place: the new layout is built in a sibling
folder (`DIR.duckcache-rollback`), then two renames swap it in, and duckcache's files stay
whole in `DIR.duckcache-<time>` beside it (delete it once the rollback is confirmed). A
rollback cut short leaves the directory as it was, or the two folders whole (run again:
a finished copy in the sibling folder is put in place). Stop every process using the
directory first: entries written during the copy would stay behind in the saved folder.
Opening the directory with duckcache again imports the original's store, as on any
first upgrade.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path
from typing import NamedTuple

STAGED_SUFFIX = ".duckcache-rollback"
DONE_MARK = ".duckcache-rollback-complete"


class Rollback(NamedTuple):
    """What a rollback did: entries written in the original's layout, entries skipped
    (keys the original cannot place, values that cannot be unpickled), and where
    duckcache's own files were kept."""

    written: int
    skipped: int
    kept_in: Path


def _kind(path: Path) -> str:
    if (path / "index.db").is_file():
        return "sharded"
    if (path / ".duckcache-folder").is_file():
        return "folder"
    if (path / "cache.db").is_file():
        return "file"
    raise ValueError(f"{path}: not a directory duckcache's classes wrote (no cache.db, index.db or .duckcache-folder)")


def _open(kind: str, path: Path):
    from . import _caches

    if kind == "file":
        return _caches.PersistentFileCache(str(path), read_cache=0)
    if kind == "sharded":
        return _caches.DynamicFileCache(str(path), read_cache=0)
    return _caches.KeyAsFolderCache(str(path))


# A value that cannot be unpickled here (its class is gone, say): skipped, counted.
UNREADABLE = object()


def _live_entries(cache):
    """(key, value, seconds left or None) for each live entry; UNREADABLE as the value
    of one that cannot be unpickled."""
    from ._codec import MISSING, ValueDecodeError

    for key in cache.keys():
        try:
            value = cache.get(key, MISSING)
        except ValueDecodeError:
            yield key, UNREADABLE, None
            continue
        if value is MISSING:
            continue  # expired or removed meanwhile
        left = cache.ttl(key)
        if left is None:
            continue
        yield key, value, None if left == float("inf") else max(left, 0.001)


def _original_key_folder(root: Path, key) -> Path | None:
    """Where the original's KeyAsFolderCache keeps `key` (os.path.join(cache_dir, key)),
    when that is inside `root`."""
    if not isinstance(key, str) or not key or os.path.isabs(key):
        return None
    folder = Path(os.path.normpath(os.path.join(root, key)))
    if folder == root or root not in folder.parents:
        return None
    return folder


def _write_original(kind: str, cache, staged: Path) -> tuple[int, int]:
    import diskcache

    written = skipped = 0
    stores = {}

    def store_at(folder: Path):
        store = stores.get(folder)
        if store is None:
            folder.mkdir(parents=True, exist_ok=True)
            store = stores[folder] = diskcache.Cache(str(folder))
        return store

    shard = staged / f"0-{uuid.uuid4().hex[:6]}"
    try:
        for key, value, left in _live_entries(cache):
            if kind == "file":
                folder = staged
            elif kind == "sharded":
                folder = shard
            else:
                folder = _original_key_folder(staged, key)
            if folder is None or value is UNREADABLE:
                skipped += 1
                continue
            store = store_at(folder)
            store.set(key, value, expire=left)
            if kind == "folder":
                # One store per key: close as we go (thousands of keys, thousands of files).
                store.close()
                del stores[folder]
            written += 1
    finally:
        for store in stores.values():
            store.close()
    return written, skipped


def rollback(path) -> Rollback:
    """Rewrites the directory `path` in the original module's layout (see above)."""
    path = Path(path).resolve()
    staged = path.with_name(path.name + STAGED_SUFFIX)
    if (staged / DONE_MARK).is_file() and path.is_dir():
        # A finished copy that was not swapped in yet: swap it in now.
        return _swap(path, staged, *_read_mark(staged))
    kind = _kind(path)
    try:
        import diskcache  # noqa: F401 - the original's store format
    except ImportError:
        raise ImportError("rolling back needs python-diskcache (pip install diskcache), as the original module does") from None
    shutil.rmtree(staged, ignore_errors=True)  # a copy cut short: start again
    staged.mkdir(mode=path.stat().st_mode & 0o777)
    cache = _open(kind, path)
    try:
        written, skipped = _write_original(kind, cache, staged)
    finally:
        cache.close()
    _write_mark(staged, written, skipped)
    return _swap(path, staged, written, skipped)


def _write_mark(staged: Path, written: int, skipped: int) -> None:
    mark = staged / DONE_MARK
    with open(mark, "w") as f:
        f.write(f"{written} {skipped}\n")
        f.flush()
        os.fsync(f.fileno())
    _sync_dir(staged)


def _read_mark(staged: Path) -> tuple[int, int]:
    written, skipped = (staged / DONE_MARK).read_text().split()
    return int(written), int(skipped)


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _swap(path: Path, staged: Path, written: int, skipped: int) -> Rollback:
    kept = path.with_name(f"{path.name}.duckcache-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    os.rename(path, kept)
    os.rename(staged, path)
    (path / DONE_MARK).unlink()
    _sync_dir(path.parent)
    return Rollback(written, skipped, kept)
