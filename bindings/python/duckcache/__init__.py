"""duckcache: fast, process-safe caches from a Rust library with a C ABI.

A drop-in for the Duck framework's `duck.utils.caching`::

    from duckcache import InMemoryCache, PersistentFileCache, DynamicFileCache, \\
        KeyAsFolderCache, CacheBase, CacheSpeedTest, MISSING

See the README (section "Python") for what differs from the original, deliberately.
"""

from ._base import CacheBase
from ._caches import (
    DynamicFileCache,
    KeyAsFolderCache,
    NativeMemoryCache,
    PersistentFileCache,
    RedisCache,
    TieredCache,
)
from ._codec import FLAG_PICKLED, MISSING, ValueDecodeError
from ._memory import InMemoryCache
from ._native import (
    BusyError,
    CacheError,
    CacheIOError,
    CacheMemoryError,
    ClosedError,
    CorruptError,
    InternalError,
    InvalidArgumentError,
    NotNumericError,
    TooLargeError,
    UnavailableError,
    library_path,
    version,
)
from ._speedtest import CacheSpeedTest


def migrate(path) -> int:
    """Reads into duckcache, now, a folder the original `duck.utils.caching` wrote: a
    PersistentFileCache folder (`cache.db`), a DynamicFileCache folder (`<n>-<hex>`
    shards) or a KeyAsFolderCache folder (a store per key). The classes do the same when
    they open such a folder; this is the explicit form. Returns how many entries were
    imported (0 when there is nothing left to import). Crash-safe and done once."""
    from pathlib import Path

    from . import _migrate

    path = Path(path)
    if (path / "cache.db").is_file():
        # Asked explicitly: look again even where an earlier open found nothing. (The
        # store is probed by a child process: see duckcache._migrate.)
        (path / _migrate.SCANNED_MARK).unlink(missing_ok=True)
        cache = PersistentFileCache(str(path))
    elif _migrate.original_shard_folders(path):
        cache = DynamicFileCache(str(path))
    elif any(_migrate._key_folder_stores(path)):
        # Asked explicitly: look again even where an earlier open found nothing.
        (path / _migrate.SCANNED_MARK).unlink(missing_ok=True)
        cache = KeyAsFolderCache(str(path))
    else:
        return 0
    try:
        return cache.imported_entries
    finally:
        cache.close()

def rollback(path):
    """Rewrites a directory duckcache's PersistentFileCache, DynamicFileCache or
    KeyAsFolderCache wrote in the original module's layout (python-diskcache stores), so
    a deployment rolled back to `duck.utils.caching` keeps its entries. Stop every process
    using it first. Returns Rollback(written, skipped, kept_in): duckcache's own files
    are kept whole in `kept_in`, beside the directory. Also `python -m duckcache rollback
    DIR`. See duckcache._rollback."""
    from . import _rollback

    return _rollback.rollback(path)


def open(uri: str):
    """Opens the cache a URI names and returns the matching class: "memory:" (with
    max_keys=N) a NativeMemoryCache, "file:DIR" a PersistentFileCache, "sharded:DIR" a
    DynamicFileCache, "folder:DIR" a KeyAsFolderCache. Parameters follow '?' as in
    "file:/var/cache/app?size_limit=1GiB&sync=full" (the README lists them). A bad
    scheme, parameter or value raises InvalidArgumentError naming it."""
    from urllib.parse import unquote

    from . import _caches

    if not isinstance(uri, str):
        raise TypeError(f"uri must be a str, not {type(uri).__name__}")
    scheme, _, rest = uri.partition(":")
    classes = {
        "memory": NativeMemoryCache,
        "file": PersistentFileCache,
        "sharded": DynamicFileCache,
        "folder": KeyAsFolderCache,
        "redis": RedisCache,
        "redis+unix": RedisCache,
    }
    location = rest.split("?", 1)[0]
    if location.startswith("///"):
        location = location[2:]
    directory = unquote(location) if location and scheme in ("file", "sharded", "folder") else None
    # An unknown scheme still goes to the library, whose error names it.
    cls = classes.get(scheme, _caches._NativeCache)
    return cls._from_uri(uri, directory)


__version__ = version()

__all__ = [
    "BusyError",
    "CacheBase",
    "CacheError",
    "CacheIOError",
    "CacheMemoryError",
    "CacheSpeedTest",
    "ClosedError",
    "CorruptError",
    "DynamicFileCache",
    "FLAG_PICKLED",
    "InMemoryCache",
    "InternalError",
    "InvalidArgumentError",
    "KeyAsFolderCache",
    "MISSING",
    "NotNumericError",
    "NativeMemoryCache",
    "PersistentFileCache",
    "RedisCache",
    "TieredCache",
    "TooLargeError",
    "UnavailableError",
    "ValueDecodeError",
    "library_path",
    "migrate",
    "open",
    "rollback",
    "version",
]
