"""InMemoryCache: the original module's in-process cache, with its object semantics.

It lives in Python, not in the library: it keeps the Python objects themselves (a get
returns the very object that was set, changed in place or not, picklable or not), takes
any hashable key, and a ctypes call alone costs more than the original's whole get. For
values shared with C code in the same process, or bounded by the library, use
`NativeMemoryCache`.
"""

from __future__ import annotations

import datetime
import time
import weakref
from collections import OrderedDict

from typing import Any, Hashable, Optional

from ._base import CacheBase
from ._codec import MISSING, Expiry
from ._locking import give_locks

_monotonic = time.monotonic


class _Entries(OrderedDict):
    """`InMemoryCache.cache`: the entries, least recently used first, as the original's
    OrderedDict (Duck reads `.cache.keys()`). Also callable as the memoizing decorator,
    `@c.cache(expiry=60)`, which the original's attribute hid."""

    def __init__(self, owner):
        super().__init__()
        self._owner = weakref.ref(owner)

    def __call__(self, expiry: Expiry = None, key_prefix: Optional[str] = None):
        return CacheBase.cache(self._owner(), expiry=expiry, key_prefix=key_prefix)

    def __reduce__(self):
        # A plain OrderedDict when copied or pickled: the owner does not travel.
        return (OrderedDict, (list(self.items()),))


class InMemoryCache(CacheBase):
    """Thread-safe in-process cache with exact LRU eviction past `maxkeys` keys (None or 0:
    unbounded) and per-key expiry in seconds. Values are kept by reference.

    Attributes as the original's: `cache` (the entries in LRU order, see `_Entries`),
    `maxkeys`, `lock` (the RLock every call holds), `async_lock`, and `expiry_map` (a
    snapshot of each expiring key's deadline as a local `datetime`; deadlines are kept on
    the monotonic clock, so a change of the wall clock moves no deadline).
    """

    def __init__(self, maxkeys: Optional[int] = None):
        if maxkeys is not None and (not isinstance(maxkeys, int) or maxkeys < 0):
            raise ValueError(f"maxkeys must be None or a non-negative int, not {maxkeys!r}")
        self.maxkeys = maxkeys
        self.cache = _Entries(self)
        self._deadlines = {}
        give_locks(self)  # unheld again in a child of fork()

    @property
    def expiry_map(self) -> dict:
        with self.lock:
            now_wall, now = datetime.datetime.now(), _monotonic()
            return {
                key: now_wall + datetime.timedelta(seconds=deadline - now)
                for key, deadline in self._deadlines.items()
            }

    def _expired(self, key):
        """True (and the entry removed) when `key` has a deadline that has passed."""
        deadline = self._deadlines.get(key)
        if deadline is not None and _monotonic() >= deadline:
            del self._deadlines[key]
            self.cache.pop(key, None)
            return True
        return False

    def set(self, key: Hashable, value: Any, expiry: Expiry = None) -> None:
        """Stores `value` itself under `key` (any hashable), the most recently used;
        `expiry` seconds from now (None: never)."""
        if expiry is not None:
            deadline = _monotonic() + float(expiry)
            if deadline != deadline:
                raise ValueError("expiry is NaN")
        with self.lock:
            cache = self.cache
            if key in cache:
                cache.move_to_end(key)
            cache[key] = value
            if expiry is not None:
                self._deadlines[key] = deadline
            elif self._deadlines:
                self._deadlines.pop(key, None)
            if self.maxkeys and len(cache) > self.maxkeys:
                oldest, _ = cache.popitem(last=False)
                self._deadlines.pop(oldest, None)

    def get(self, key: Hashable, default: Any = None) -> Any:
        """The object stored under `key`, now the most recently used; `default` when
        absent or expired."""
        with self.lock:
            if self._deadlines and self._expired(key):
                return default
            cache = self.cache
            if key in cache:
                cache.move_to_end(key)
                return cache[key]
            return default

    def has(self, key: Hashable) -> bool:
        """True when `key` holds a live entry. A peek: its recency is left as it is."""
        with self.lock:
            if self._deadlines and self._expired(key):
                return False
            return key in self.cache

    def delete(self, key: Hashable) -> None:
        """Removes `key`; silent when absent."""
        with self.lock:
            self.cache.pop(key, None)
            self._deadlines.pop(key, None)

    def pop(self, key: Hashable, default: Any = MISSING) -> Any:
        """Removes `key` and returns its object; `default` when absent or expired
        (KeyError when no default is given)."""
        with self.lock:
            if not (self._deadlines and self._expired(key)):
                value = self.cache.pop(key, MISSING)
                if value is not MISSING:
                    self._deadlines.pop(key, None)
                    return value
        if default is MISSING:
            raise KeyError(key)
        return default

    def clear(self) -> None:
        """Removes every entry."""
        with self.lock:
            self.cache.clear()
            self._deadlines.clear()

    def __len__(self) -> int:
        """Entries that have not expired (expired ones are removed on the way)."""
        with self.lock:
            if self._deadlines:
                for key in [k for k, d in self._deadlines.items() if _monotonic() >= d]:
                    self._expired(key)
            return len(self.cache)

    def __contains__(self, key: Hashable) -> bool:
        return self.has(key)

    async def async_set(self, key: Hashable, value: Any, expiry: Expiry = None) -> None:
        async with self.async_lock:
            self.set(key, value, expiry)

    async def async_get(self, key: Hashable, default: Any = None) -> Any:
        async with self.async_lock:
            return self.get(key, default)

    async def async_pop(self, key: Hashable, default: Any = MISSING) -> Any:
        async with self.async_lock:
            return self.pop(key, default)

    async def async_delete(self, key: Hashable) -> None:
        async with self.async_lock:
            self.delete(key)

    async def async_clear(self) -> None:
        async with self.async_lock:
            self.clear()

    def close(self) -> None:
        """Drops every entry (as the original's close)."""
        self.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
