"""The cache classes: the original module's API (duck.utils.caching) over the C library
(the value codec in _codec, the crossing into C in _calls, CacheBase and memoizing in
_base)."""

from __future__ import annotations

import atexit
import ctypes
import math
import os
import pickle
import urllib.parse
import warnings
import queue
import sys
import threading
import weakref
from pathlib import Path
from ctypes import byref, c_double, c_int64, c_uint32, c_uint64, c_void_p
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Union

from . import _migrate
from ._locking import honours_seed_locks
from . import _native as native
from ._native import lib
from ._base import CacheBase
from ._calls import (
    _buf_bytes,
    _compute_function,
    _delete_many,
    _read_many,
    _read_value,
    _set_flagged,
    _submit,
    _write_many,
)
from ._codec import (
    FLAG_PICKLED,
    MISSING,
    Expiry,
    Key,
    ValueDecodeError,
    _INT64,
    _decode_key,
    _decode_value,
    _encode_key,
    _encode_value,
    _holds_no_such_key,
    _positive_int,
    _ttl,
)

# Every open native cache, closed at exit so queued async work finishes while the
# interpreter can still run its callbacks.
_open_caches = weakref.WeakSet()


def _reopen_all_after_fork():
    for cache in list(_open_caches):
        cache._after_fork_in_child()


os.register_at_fork(after_in_child=_reopen_all_after_fork)


@atexit.register
def _close_all_at_exit():
    for cache in list(_open_caches):
        try:
            cache.close()
        except Exception:
            pass



class _HandleOwner:
    """Frees one C handle when the last cache object using it is gone. Copies of a cache
    (copy.copy, copy.deepcopy) share their original's owner, so the handle lives as long
    as any of them; it cannot be pickled (an address means nothing in another process)."""

    __slots__ = ("handle", "_free")

    def __init__(self, handle):
        self.handle = handle
        # Kept here: at interpreter shutdown the module's globals may be gone before the
        # last cache object (one held by a class attribute, say), and its handle with it.
        self._free = lib.cache_free

    def abandon(self):
        """Forgets the handle without freeing it (handed over to another handle, or
        inherited across fork: the child must not free the parent's)."""
        self.handle = None

    def __del__(self):
        handle, self.handle = self.handle, None
        if handle:
            self._free(handle)

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    def __reduce__(self):
        raise TypeError("a library-backed cache cannot be pickled: open it again by its path or URI")


class _NativeCache(CacheBase):
    """What the four classes share: one C handle and every operation on it."""

    def _open(self, opener, *args):
        handle = c_void_p()
        native.check(opener(*args, byref(handle)))
        self._own(handle.value)
        self._opener = (opener, args)
        self.closed = False
        _open_caches.add(self)

    def _own(self, handle):
        """Takes `handle` (or None) as this object's, to be freed with its last user."""
        # The address as an int: the cheapest argument for ctypes to convert.
        self._handle = handle
        self._owner = _HandleOwner(handle) if handle else None

    def _disown(self):
        """Gives up the handle without freeing it (see _HandleOwner.abandon)."""
        owner = getattr(self, "_owner", None)
        if owner is not None:
            owner.abandon()
        self._owner = None

    def __copy__(self):
        """Another object on the same store and handle (closing either closes both)."""
        twin = type(self).__new__(type(self))
        twin.__dict__.update(self.__dict__)
        if not self.closed:
            _open_caches.add(twin)
        return twin

    def __deepcopy__(self, memo):
        # A store is not an object's value to duplicate: a deep copy shares it too.
        return self.__copy__()

    @classmethod
    def _from_uri(cls, uri: str, directory: Optional[str]):
        """An instance on the handle cache_open(uri) gives (see duckcache.open)."""
        self = cls.__new__(cls)
        self.uri = uri
        for name in ("path", "cache_dir"):
            setattr(self, name, directory)
        self._open(lib.cache_open, uri.encode("utf-8", "surrogatepass"))
        return self

    def _after_fork_in_child(self):
        """In a child made by fork(): a persistent cache gets a handle of its own on the
        same directory, as SQLite requires (a connection must not cross a fork); the
        inherited one is left alone, never closed, so the parent's stays intact. An
        in-memory cache keeps the child's copy of the entries, as a dict would."""
        if self.closed or isinstance(self, NativeMemoryCache):
            return
        opener, args = self._opener
        handle = c_void_p()
        self._disown()
        if opener(*args, byref(handle)) == native.CACHE_OK:
            self._own(handle.value)
        else:
            # Cannot reopen here: every call raises, with the reason.
            self._own(None)
            self.closed = True

    # Context manager and lifetime.

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        """Flushes and releases the cache; every later call raises RuntimeError."""
        if getattr(self, "_handle", None) is not None:
            self.closed = True
            native.check(lib.cache_close(self._handle))

    # Synchronous operations.

    def set(self, key: Key, value: Any, expiry: Expiry = None) -> None:
        """Stores `value` under `key`; `expiry` in seconds, None = never."""
        # _encode_key and _encode_value, inlined: this is the hottest call.
        k = key.encode("utf-8", "surrogatepass") if type(key) is str else _encode_key(key)
        if type(value) is bytes:
            data, flags = value, 0
        else:
            data, flags = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL), FLAG_PICKLED
        ttl = -1.0 if expiry is None else _ttl(expiry)
        status = _set_flagged(self._handle, k, len(k), data, len(data), ttl, flags)
        if status:
            raise native.error_for(status)

    def get(self, key: Key, default: Any = None) -> Any:
        """The value under `key`, or `default` when absent or expired."""
        k = key.encode("utf-8", "surrogatepass") if type(key) is str else _encode_key(key)
        return _read_value(self._handle, k, default)

    def pop(self, key: Key, default: Any = MISSING) -> Any:
        """Removes and returns the value under `key`, atomically (of concurrent pops,
        across threads and processes, exactly one gets it). KeyError when absent and
        no default is given."""
        if _holds_no_such_key(key):
            if default is MISSING:
                raise KeyError(key)
            return default
        k = _encode_key(key)
        buf = native.Buf()
        flags = c_uint32()
        status = native.check(lib.cache_pop_flagged(self._handle, k, len(k), byref(buf), byref(flags)))
        if status == native.CACHE_NOT_FOUND:
            if default is MISSING:
                raise KeyError(key)
            return default
        data = _buf_bytes(buf)
        try:
            return _decode_value(data, flags.value)
        except ValueDecodeError:
            # The value is not lost with the exception: it goes back (unless the key was
            # written meanwhile), without its expiry, which a pop does not learn.
            lib.cache_add_flagged(self._handle, k, len(k), data, len(data), _ttl(None), flags.value)
            raise

    def has(self, key: Key) -> bool:
        """True when `key` holds a live entry."""
        k = _encode_key(key)
        return native.check(lib.cache_has(self._handle, k, len(k))) == native.CACHE_OK

    def __contains__(self, key):
        return self.has(key)

    def delete(self, key: Key) -> None:
        """Removes `key`; silent when absent (or when it is no key these caches hold)."""
        if _holds_no_such_key(key):
            return
        k = _encode_key(key)
        native.check(lib.cache_delete(self._handle, k, len(k)))

    def clear(self) -> None:
        """Removes every entry."""
        native.check(lib.cache_clear(self._handle))

    def save(self) -> None:
        """Makes everything written so far durable (a no-op in memory)."""
        native.check(lib.cache_save(self._handle))

    def __len__(self) -> int:
        n = c_uint64()
        native.check(lib.cache_len(self._handle, byref(n)))
        return n.value

    def stats(self) -> dict:
        """Counters since this cache was opened, and its size, as a dict."""
        s = native.Stats()
        native.check(lib.cache_get_stats(self._handle, byref(s)))
        return s.as_dict()

    # Version 2 of the contract.

    def add(self, key: Key, value: Any, expiry: Expiry = None) -> bool:
        """Stores `value` only when no live entry holds `key`; True when it stored. Of
        concurrent adds of one key, across threads and processes, exactly one is True."""
        k = _encode_key(key)
        data, flags = _encode_value(value)
        status = lib.cache_add_flagged(self._handle, k, len(k), data, len(data), _ttl(expiry), flags)
        if status < 0:
            raise native.error_for(status)
        return status == native.CACHE_OK

    def incr(self, key: Key, delta: int = 1, expiry: Expiry = None) -> int:
        """Adds `delta` to the counter under `key` and returns the new value, atomically
        across threads and processes. An absent key starts at 0 and gets `expiry`; an
        existing one keeps its expiry. The counter is stored as decimal text (bytes, so
        `get` returns e.g. b"12" and C reads the same). NotNumericError (a ValueError)
        when the value is not a decimal 64-bit integer or the sum overflows."""
        if isinstance(delta, bool) or not isinstance(delta, int):
            raise TypeError(f"delta must be an int, not {type(delta).__name__}")
        if not _INT64[0] <= delta <= _INT64[1]:
            raise OverflowError(f"delta {delta} does not fit a 64-bit integer")
        k = _encode_key(key)
        out = c_int64()
        native.check(lib.cache_incr(self._handle, k, len(k), delta, _ttl(expiry), byref(out)))
        return out.value

    def decr(self, key: Key, delta: int = 1, expiry: Expiry = None) -> int:
        """`incr` by `-delta`."""
        if isinstance(delta, bool) or not isinstance(delta, int):
            raise TypeError(f"delta must be an int, not {type(delta).__name__}")
        return self.incr(key, -delta, expiry)

    def touch(self, key: Key, expiry: Expiry) -> bool:
        """Gives the live entry of `key` a new expiry (None: never; 0: now), value kept;
        False when absent."""
        k = _encode_key(key)
        status = native.check(lib.cache_touch(self._handle, k, len(k), _ttl(expiry)))
        return status == native.CACHE_OK

    def ttl(self, key: Key) -> Optional[float]:
        """Seconds until `key` expires (math.inf: never); None when absent or expired."""
        k = _encode_key(key)
        left = c_double()
        if native.check(lib.cache_ttl(self._handle, k, len(k), byref(left))) != native.CACHE_OK:
            return None
        return math.inf if left.value < 0 else left.value

    def get_or_set(self, key: Key, compute: Callable[[], Any], expiry: Expiry = None) -> Any:
        """The value under `key`; when absent, one caller per key at a time (in this
        process) runs `compute()`, stores its value for `expiry` seconds and every
        caller waiting for the key gets it (cache_get_or_compute). An exception from
        `compute` stores nothing and is raised in the caller that ran it; the waiters
        get InternalError."""
        k = _encode_key(key)
        raised = []
        run = _compute_function(compute, _ttl(expiry), raised)

        buf = native.Buf()
        flags = c_uint32()
        status = lib.cache_get_or_compute(self._handle, k, len(k), run, None, byref(buf), byref(flags))
        if raised:
            raise raised[0]
        if native.check(status) == native.CACHE_NOT_FOUND:
            return None
        return _decode_value(_buf_bytes(buf), flags.value)

    def get_many(self, keys: Iterable[Key]) -> dict:
        """{key: value} for the keys that are present, read in one transaction on the
        persistent kinds."""
        keys = list(keys)
        found = _read_many(self._handle, [_encode_key(k) for k in keys])
        return {keys[i]: value for i, value in found}

    def set_many(self, mapping: Mapping[Key, Any], expiry: Expiry = None) -> None:
        """Stores every item of `mapping`, all or nothing, in one transaction on the
        persistent kinds (so a thousand items cost about one commit)."""
        ttl = _ttl(expiry)
        _write_many(self._handle, [(_encode_key(k), *_encode_value(v)) for k, v in mapping.items()], ttl)

    def delete_many(self, keys: Iterable[Key]) -> int:
        """Removes `keys`; returns how many were present."""
        return _delete_many(self._handle, [_encode_key(k) for k in keys])

    def keys(self, prefix: Key = "") -> Iterator[Union[str, bytes]]:
        """Iterates over the live keys starting with `prefix`, in no set order (str for
        UTF-8 keys, else bytes). The library walks in pages on a thread of its own,
        a bounded number of keys ahead, so memory stays small with any number of keys,
        and the cache may be used (even changed) while iterating."""
        p = _encode_key(prefix)
        pending = queue.Queue(maxsize=1024)
        stop = threading.Event()
        end = object()

        def visit(_user, key, length):
            item = ctypes.string_at(key, length)
            while not stop.is_set():
                try:
                    pending.put(item, timeout=0.05)
                    return 0
                except queue.Full:
                    continue
            return 1

        visitor = native.KEY_VISITOR(visit)
        handle = self._handle

        def walk():
            try:
                status = lib.cache_keys(handle, p, len(p), visitor, None)
                outcome = native.error_for(status) if status < 0 else end
            except BaseException as e:  # reported to the iterating thread
                outcome = e
            while not stop.is_set():
                try:
                    pending.put(outcome, timeout=0.05)
                    return
                except queue.Full:
                    continue

        walker = threading.Thread(target=walk, name="duckcache-keys", daemon=True)
        walker.start()
        try:
            while True:
                item = pending.get()
                if item is end:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield _decode_key(item)
        finally:
            stop.set()
            walker.join()

    def delete_prefix(self, prefix: Key) -> int:
        """Removes every live key starting with `prefix`; returns how many."""
        p = _encode_key(prefix)
        deleted = c_uint64()
        native.check(lib.cache_delete_prefix(self._handle, p, len(p), byref(deleted)))
        return deleted.value

    def purge_expired(self) -> int:
        """Removes every expired entry now; returns how many."""
        removed = c_uint64()
        native.check(lib.cache_purge_expired(self._handle, byref(removed)))
        return removed.value

    # Asynchronous operations: coroutines over the C async functions. The operation
    # runs on a library thread; the event loop is never blocked. Cancelling the
    # awaiting task stops the wait; the operation itself still completes.

    async def _submit(self, submit, *args, **options):
        return await _submit(self._handle, submit, *args, **options)

    async def async_set(self, key: Key, value: Any, expiry: Expiry = None) -> None:
        k = _encode_key(key)
        data, flags = _encode_value(value)
        await self._submit(lib.cache_set_flagged_async, k, len(k), data, len(data), _ttl(expiry), flags)

    async def async_get(self, key: Key, default: Any = None) -> Any:
        k = _encode_key(key)
        found, value = await self._submit(lib.cache_get_flagged_async, k, len(k), flagged=True)
        return value if found else default

    async def async_pop(self, key: Key, default: Any = MISSING) -> Any:
        k = _encode_key(key)
        handle = self._handle

        def restore(data, flags):
            # The task that asked for the value is gone: the value goes back where it
            # was, unless the key was written meanwhile (set-if-absent). Its expiry is
            # not known here; it is stored without one rather than lost.
            status = lib.cache_add_flagged(handle, k, len(k), data, len(data), _ttl(None), flags)
            if status < 0:
                warnings.warn(
                    f"a cancelled async_pop of {key!r} could not put its value back: "
                    f"{native.error_for(status)}",
                    RuntimeWarning,
                )

        found, value = await self._submit(
            lib.cache_pop_flagged_async, k, len(k), flagged=True, restore=restore
        )
        if found:
            return value
        if default is MISSING:
            raise KeyError(key)
        return default

    async def async_delete(self, key: Key) -> None:
        k = _encode_key(key)
        await self._submit(lib.cache_delete_async, k, len(k))

    async def async_clear(self) -> None:
        await self._submit(lib.cache_clear_async)

    async def async_get_or_set(self, key: Key, compute: Callable[[], Any], expiry: Expiry = None) -> Any:
        """`get_or_set` without blocking the event loop: the lookup, and `compute` (a
        plain function) on a miss, run on a library thread in this cache's FIFO order."""
        k = _encode_key(key)
        raised = []
        run = _compute_function(compute, _ttl(expiry), raised)

        try:
            found, value = await self._submit(
                lib.cache_get_or_compute_async, k, len(k), run, None, flagged=True, keep=run
            )
        except native.InternalError:
            if raised:
                raise raised[0] from None
            raise
        return value if found else None


def _directory(path):
    return os.fsencode(os.fspath(path))


# Bytes of values the persistent classes keep in memory by default (their read_cache):
# measured, a 1 KiB get of a hot key is several times faster served from it, and it
# is exact across processes, so Duck's read-mostly caches gain without a setting.
DEFAULT_READ_CACHE = 8 * 1024 * 1024


def _read_cache_size(read_cache):
    if read_cache != 0:
        _positive_int("read_cache", read_cache, 2**64 - 1)


def _directory_uri(scheme, path, **params):
    """cache_open's URI for the directory `path` (every byte that could be read as URI
    syntax escaped) with `params`."""
    location = urllib.parse.quote_from_bytes(_directory(path), safe="/")
    if location.startswith("/"):
        location = "//" + location  # an empty authority, then the absolute path
    query = "&".join(f"{name}={value}" for name, value in params.items())
    return f"{scheme}:{location}?{query}".encode("ascii")


class NativeMemoryCache(_NativeCache):
    """In-memory cache in the library, bounded by `maxkeys` keys and/or `max_bytes` bytes
    of keys and values (None or 0: unbounded that way; a larger entry raises
    TooLargeError), with a per-entry expiry. `policy` chooses what leaves first: "lru"
    (exact least recently used, the original's order) or "s3fifo" (S3-FIFO: higher hit
    ratios on skewed and scanning workloads, cheaper hits). Values are stored as bytes
    (objects pickled), so a get returns a copy; the entries live in the library, where C
    and C++ code in the same process and the library's bound reach them. For the original
    InMemoryCache's object semantics (the stored object itself, any hashable key) use
    InMemoryCache."""

    POLICIES = ("lru", "s3fifo")

    def __init__(
        self, maxkeys: Optional[int] = None, max_bytes: Optional[int] = None, policy: str = "lru"
    ):
        if maxkeys is not None and maxkeys != 0:
            _positive_int("maxkeys", maxkeys, 2**64 - 1)
        if max_bytes is not None:
            _positive_int("max_bytes", max_bytes, 2**64 - 1)
        if policy not in self.POLICIES:
            raise ValueError(f"policy must be one of {', '.join(self.POLICIES)}, not {policy!r}")
        self.maxkeys = maxkeys
        self.max_bytes = max_bytes
        self.policy = policy
        if max_bytes is None and policy == "lru":
            self._open(lib.cache_open_memory, maxkeys or 0)
        else:
            uri = f"memory:?max_keys={maxkeys or 0}&max_bytes={max_bytes or 0}&policy={policy}"
            self._open(lib.cache_open, uri.encode())


@honours_seed_locks
class PersistentFileCache(_NativeCache):
    """Persistent cache in one SQLite store under the directory `path` (created when
    missing). `cache_size` bounds the bytes held (None: unlimited); past it the oldest
    entries are evicted. `read_cache` bytes of recently read values are served from
    memory while the store has not changed, exactly as fresh as a read of the store
    across every process (0: off)."""

    def __init__(
        self, path: str, cache_size: Optional[int] = None, read_cache: int = DEFAULT_READ_CACHE
    ):
        if os.path.isfile(path):
            raise FileExistsError(f"Path must be a directory, not a file: {path}")
        if cache_size is not None:
            cache_size = _positive_int("cache_size", cache_size, 2**64 - 1, fraction_ok=True)
        _read_cache_size(read_cache)
        self.path = path
        self.cache_size = cache_size
        self.read_cache = read_cache
        fresh = not os.path.exists(os.path.join(path, "cache.db"))
        if read_cache:
            uri = _directory_uri("file", path, size_limit=cache_size or 0, read_cache=read_cache)
            self._open(lib.cache_open, uri)
        else:
            self._open(lib.cache_open_file, _directory(path), cache_size or 0)
        # A folder the original module wrote: its python-diskcache store shares the
        # name cache.db; its live entries are copied in once.
        self.imported_entries = _migrate.import_original_store_here(path, self, fresh)


@honours_seed_locks
class DynamicFileCache(_NativeCache):
    """Persistent cache sharded by size under the existing directory `cache_dir`: a new
    shard starts when the newest holds `cache_limit` bytes; at most `cached_objs_limit`
    shards are open at once. `read_cache`: as for PersistentFileCache."""

    DEFAULT_SHARD_SIZE = 1_000_000_000

    def __init__(
        self,
        cache_dir: str,
        cache_limit: int = DEFAULT_SHARD_SIZE,
        cached_objs_limit: int = 128,
        read_cache: int = DEFAULT_READ_CACHE,
    ):
        if not os.path.isdir(cache_dir):
            raise FileNotFoundError(f"Directory not found: {cache_dir}")
        cache_limit = _positive_int("cache_limit", cache_limit, 2**64 - 1, fraction_ok=True)
        cached_objs_limit = _positive_int("cached_objs_limit", cached_objs_limit, 2**32 - 1)
        _read_cache_size(read_cache)
        self.cache_dir = cache_dir
        self.cache_limit = cache_limit
        self.cached_objs_limit = cached_objs_limit
        self.read_cache = read_cache
        if read_cache:
            uri = _directory_uri(
                "sharded",
                cache_dir,
                shard_size_limit=cache_limit,
                max_open_shards=cached_objs_limit,
                read_cache=read_cache,
            )
            self._open(lib.cache_open, uri)
        else:
            self._open(lib.cache_open_sharded, _directory(cache_dir), cache_limit, cached_objs_limit)
        # The original's shard folders, imported once; the first in its lookup order
        # wins, so they are copied last to first.
        self.imported_entries = _migrate.import_original(
            reversed(_migrate.original_shard_folders(cache_dir)), self, cache_dir
        )

    @property
    def shard_paths(self) -> list:
        """The shard folders (`shard-000001`, ...), oldest first, as the original's list;
        read from the directory each time, so it is always current."""
        return sorted(
            Path(entry.path)
            for entry in os.scandir(self.cache_dir)
            if entry.is_dir(follow_symlinks=False) and entry.name.startswith("shard-")
        )

    def reload_shard_paths(self) -> None:
        """Kept for the original's callers: `shard_paths` is always current."""


@honours_seed_locks
class KeyAsFolderCache(_NativeCache):
    """Persistent cache with one folder per key under the existing directory
    `cache_dir` (folder names are a reversible encoding of the key); at most
    `cached_objs_limit` entries are worked on at once."""

    DEFAULT_CACHE_OBJ_LIMIT = 128

    def __init__(self, cache_dir: str, cached_objs_limit: int = DEFAULT_CACHE_OBJ_LIMIT):
        if not os.path.isdir(cache_dir):
            raise FileNotFoundError(f"Directory not found: {cache_dir}")
        cached_objs_limit = _positive_int("cached_objs_limit", cached_objs_limit, 2**32 - 1)
        self.cache_dir = cache_dir
        self.cached_objs_limit = cached_objs_limit
        self._open(lib.cache_open_folder, _directory(cache_dir), cached_objs_limit)
        self.imported_entries = _migrate.import_original_key_folders(cache_dir, self)

    def get_key_dir(self, key: Key) -> str:
        """The folder that holds (or would hold) `key`, by the library's naming rule
        (cache_entry_path): bytes `A-Z a-z 0-9 - _ . ~` as they are, every other byte
        (and a leading `.`) as `%XX`; `%` for the empty key; `%%` and a 128-bit hash past
        200 bytes."""
        k = _encode_key(key)
        buf = native.Buf()
        native.check(lib.cache_entry_path(self._handle, k, len(k), byref(buf)))
        return os.fsdecode(_buf_bytes(buf))

    def live_key_dirs(self) -> list:
        """The folders of entries that have not expired."""
        return sorted(Path(self.get_key_dir(key)) for key in self.keys())


def _closed_handle():
    """A handle of its own that is closed: every call on it raises ClosedError (for an
    object whose handle was handed over)."""
    handle = c_void_p()
    native.check(lib.cache_open_memory(0, byref(handle)))
    native.check(lib.cache_close(handle.value))
    return handle.value


class RedisCache(_NativeCache):
    """A cache on a Redis or Valkey server (or any server of the Redis protocol), shared
    by every process and machine that uses the same server and `prefix`. `url` as
    redis-rs reads it: "redis://[user:password@]host[:port][/db]" or
    "redis+unix:///path/to/socket?pass=...". Keys are stored as `prefix` + key; nothing
    outside the prefix is ever read or removed (clear walks the prefix with SCAN).
    `pool_size` connections per cache; every call gives up after `timeout` seconds with
    UnavailableError (a ConnectionError) when the server cannot be reached, and works
    again once it is back. bytes values are stored as they are, so other Redis clients
    read them; other values are pickled (a hash with the value and the flags word)."""

    def __init__(self, url: str, prefix: str = "", pool_size: int = 4, timeout: float = 5.0):
        from urllib.parse import quote

        if not isinstance(url, str):
            raise TypeError(f"url must be a str, not {type(url).__name__}")
        if not url.startswith(("redis://", "rediss://", "redis+unix://")):
            raise ValueError(f"not a Redis URL (redis://, redis+unix://): {url!r}")
        _positive_int("pool_size", pool_size, 1024)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
        self.url = url
        self.prefix = prefix
        params = f"prefix={quote(prefix, safe='')}&pool_size={pool_size}&timeout_ms={max(1, round(timeout * 1000))}"
        self.uri = url + ("&" if "?" in url else "?") + params
        self._open(lib.cache_open, self.uri.encode("utf-8", "surrogatepass"))


class TieredCache(_NativeCache):
    """A near cache (usually a NativeMemoryCache) in front of a far one (a file,
    sharded or Redis cache): gets are answered by near when it has the key, otherwise by
    far, whose value is then kept in near for at most `near_ttl_max` seconds; writes go
    to far first, then near. So a value another process or machine changes in far is
    seen here within `near_ttl_max`. The TieredCache takes over both caches: they are
    closed as objects of their own (use the TieredCache), and closing it closes both."""

    def __init__(self, near: "_NativeCache", far: "_NativeCache", near_ttl_max: float):
        for name, part in (("near", near), ("far", far)):
            if not isinstance(part, _NativeCache):
                raise TypeError(f"{name} must be a library-backed cache (NativeMemoryCache, "
                                f"PersistentFileCache, DynamicFileCache, KeyAsFolderCache, RedisCache), "
                                f"not {type(part).__name__}")
            if part.closed or part._handle is None:
                raise ValueError(f"{name} is closed")
        if near is far or near._owner is far._owner:
            raise ValueError("near and far must be two caches")
        for name, part in (("near", near), ("far", far)):
            # The tiered handle takes the part's handle over: a copy still using it would
            # call a freed handle. (Held by the part and by getrefcount's argument alone.)
            if sys.getrefcount(part._owner) > 2:
                raise ValueError(f"{name} has copies (copy.copy) sharing its handle: "
                                 "hand over a cache no other object shares")
        if isinstance(near_ttl_max, bool) or not isinstance(near_ttl_max, (int, float)):
            raise TypeError("near_ttl_max must be a number of seconds")
        handle = c_void_p()
        native.check(lib.cache_open_tiered(near._handle, far._handle, float(near_ttl_max), byref(handle)))
        for part in (near, far):  # the new handle owns them now
            part._disown()
            part._own(_closed_handle())
            part.closed = True
            _open_caches.discard(part)
        self.near, self.far, self.near_ttl_max = near, far, near_ttl_max
        self._own(handle.value)
        self._opener = (None, ())
        self.closed = False
        _open_caches.add(self)

    def _after_fork_in_child(self):
        """A tiered cache cannot reopen its parts in a child: use one made after fork."""
        if not self.closed:
            self._disown()
            self._own(None)
            self.closed = True
