"""CacheBase: the interface every cache class has, and the memoizing decorators
(`cache`, `async_cache`) and get_or_set with one computation per missing key."""

from __future__ import annotations

import asyncio
import functools
import threading
from typing import Any, Callable, Optional

from ._codec import MISSING, Expiry, Key

class CacheBase:
    """Base class of every cache: the interface (set, get, delete, pop, clear, save) and
    the memoizing decorators. Subclasses override the operations."""

    def save(self) -> None:
        """Optional persistence hook. No-op unless overridden."""

    def __bool__(self):
        # A cache is a thing, not a container to test for emptiness: without this, an
        # empty cache would be false (it has __len__), and Duck's `backend or DEFAULT`
        # would silently replace a user's empty cache with the default.
        return True

    def set(self, key: Key, value: Any, expiry: Expiry = None) -> None:
        raise NotImplementedError(f"'set' is not implemented on {type(self).__name__}.")

    def get(self, key: Key, default: Any = None) -> Any:
        raise NotImplementedError(f"'get' is not implemented on {type(self).__name__}.")

    def delete(self, key: Key) -> None:
        raise NotImplementedError(f"'delete' is not implemented on {type(self).__name__}.")

    def pop(self, key: Key, default: Any = MISSING) -> Any:
        raise NotImplementedError(f"'pop' is not implemented on {type(self).__name__}.")

    def clear(self) -> None:
        raise NotImplementedError(f"'clear' is not implemented on {type(self).__name__}.")

    async def async_set(self, key: Key, value: Any, expiry: Expiry = None) -> None:
        self.set(key, value, expiry)

    def get_or_set(self, key: Key, compute: Callable[[], Any], expiry: Expiry = None) -> Any:
        """The value under `key`; when absent, `compute()` is stored for `expiry` seconds
        and returned. Of the threads asking for one missing key at once, one computes
        and the others wait for its value (single-flight); an exception from `compute`
        stores nothing and reaches the caller that ran it. The library-backed classes
        do this in the library (cache_get_or_compute); this is the same for any cache."""
        value = _lookup(self, key)
        if value is not MISSING:
            return value
        slot = _join_flight(self, key)
        try:
            with slot[0]:
                value = _lookup(self, key)
                if value is MISSING:
                    value = compute()
                    self.set(key, value, expiry=expiry)
                return value
        finally:
            _leave_flight(self, key, slot)

    async def async_get(self, key: Key, default: Any = None) -> Any:
        return self.get(key, default)

    @staticmethod
    def _memo_key(func, key_prefix, args, kwargs):
        # The original module's key format, so both modules address the same entries.
        return (
            f"{key_prefix or func.__module__}."
            f"{func.__qualname__}:"
            f"{args}:"
            f"{sorted(kwargs.items())}"
        )

    def cache(self, expiry: Expiry = None, key_prefix: Optional[str] = None) -> Callable[[Callable], Callable]:
        """Decorates a function so its results are cached for `expiry` seconds (None:
        until removed), keyed by its module, name and arguments."""

        def decorator(func):
            # get_or_set's steps written out here: a recursive function's every level
            # then costs two frames (wrapper and function), as in the original, which
            # recursed 494 deep where going through get_or_set stopped at 165.
            @functools.wraps(func)
            def wrapper(*args, **kwargs):
                key = self._memo_key(func, key_prefix, args, kwargs)
                value = _lookup(self, key)
                if value is not MISSING:
                    return value
                # Concurrent callers with the same arguments compute once.
                slot = _join_flight(self, key)
                try:
                    with slot[0]:
                        value = _lookup(self, key)
                        if value is MISSING:
                            value = func(*args, **kwargs)
                            self.set(key, value, expiry=expiry)
                        return value
                finally:
                    _leave_flight(self, key, slot)

            return wrapper

        return decorator

    def async_cache(self, expiry: Expiry = None, key_prefix: Optional[str] = None) -> Callable[[Callable], Callable]:
        """As `cache`, for coroutine functions. A missing value is computed once
        however many callers wait for it: the others wait, then read it from the cache.
        If the caller computing it is cancelled or fails, the next waiter computes."""
        # (event loop, key) -> [lock, callers holding or waiting for it]
        locks = {}
        guard = threading.Lock()

        def decorator(func):
            @functools.wraps(func)
            async def wrapper(*args, **kwargs):
                key = self._memo_key(func, key_prefix, args, kwargs)
                slot_key = (asyncio.get_running_loop(), key)
                with guard:
                    slot = locks.setdefault(slot_key, [asyncio.Lock(), 0])
                    slot[1] += 1
                try:
                    async with slot[0]:
                        cached = await self.async_get(key, MISSING)
                        if cached is not MISSING:
                            return cached
                        result = await func(*args, **kwargs)
                        await self.async_set(key, result, expiry=expiry)
                        return result
                finally:
                    with guard:
                        slot[1] -= 1
                        if slot[1] == 0:
                            del locks[slot_key]

            return wrapper

        return decorator


# Guards the per-cache tables of CacheBase.get_or_set's flights.
_flights_guard = threading.Lock()


def _join_flight(cache, key):
    """The flight slot of `key` on `cache` ([lock, callers]), this caller counted in."""
    flights = cache.__dict__.setdefault("_flights", {})
    with _flights_guard:
        slot = flights.setdefault(key, [threading.Lock(), 0])
        slot[1] += 1
    return slot


def _leave_flight(cache, key, slot):
    with _flights_guard:
        slot[1] -= 1
        if slot[1] == 0:
            del cache.__dict__["_flights"][key]


# Per class: whether its get takes a default (ours do; a user's CacheBase subclass
# written for the original may define get(key) alone).
_get_takes_default = {}


def _lookup(cache, key):
    """`cache.get(key)`, MISSING when absent. A get without a default parameter is
    called as the original's decorator called it: None means absent."""
    get = type(cache).get
    takes = _get_takes_default.get(get)
    if takes is None:
        import inspect

        try:
            inspect.signature(get).bind(cache, key, MISSING)
            takes = True
        except (TypeError, ValueError):
            takes = False
        _get_takes_default[get] = takes
    if takes:
        return cache.get(key, MISSING)
    value = cache.get(key)
    return MISSING if value is None else value
