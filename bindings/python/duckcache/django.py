"""A Django cache backend on any duckcache store.

    CACHES = {
        "default": {
            "BACKEND": "duckcache.django.DuckCache",
            "LOCATION": "file:/var/cache/app",  # any cache_open URI, or a directory
            "OPTIONS": {"size_limit": "1GiB"},  # the URI's parameters
        }
    }

LOCATION is a `cache_open` URI (`memory:`, `file:DIR`, `sharded:DIR`, `folder:DIR`,
`redis://...`, `redis+unix://...`) or a plain directory path (the file kind, as
FileBasedCache takes one). OPTIONS become the URI's parameters (the file and sharded
kinds get the binding's 8 MiB read cache unless `read_cache` is given), except MAX_ENTRIES and
CULL_FREQUENCY (Django's culling: a duckcache store keeps its own bound, `max_keys` or
`size_limit`) and `near` / `near_ttl_max`, which put a near cache (a URI, usually
`memory:?max_keys=N`) in front of the store (a tiered handle; a near copy is at most
`near_ttl_max` seconds old, 5 when not given). Within a process one
LOCATION with the same OPTIONS is one store, shared by every alias and thread that names
it, each under its own KEY_PREFIX and VERSION, as LocMemCache shares its LOCATION.
Processes with the same settings share a persistent or Redis store.

Values are pickled as Django's other backends pickle them, except ints, stored as
decimal text so that `incr` is the store's own atomic increment and other clients read
them. A bad LOCATION or OPTIONS raises InvalidCacheBackendError naming the part when the
backend is made.
"""

from __future__ import annotations

import os
import pickle
import re
import threading
import urllib.parse
from ctypes import byref, c_int64

from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache, InvalidCacheBackendError

from . import _native as native
from ._caches import DEFAULT_READ_CACHE
from ._calls import _delete_many, _entries, _read_many, _read_value, _slices, _submit, _write_many
from ._codec import FLAG_PICKLED, _INT64, _encode_key
from ._native import lib

# OPTIONS that are Django's own, not the store's.
_DJANGO_OPTIONS = {"MAX_ENTRIES", "CULL_FREQUENCY"}
_URI_SCHEMES = ("memory", "file", "sharded", "folder", "redis", "redis+unix", "rediss")
_DECIMAL = re.compile(rb"-?[0-9]{1,19}")
# What Django's validate_key warns about (memcached's limits): longer than 250 characters,
# or a control character or space. A key without either skips its per-character loop.
_MEMCACHED_MAX_KEY = 250
_MEMCACHED_UNSAFE = re.compile(r"[\x00-\x20\x7f]")


def _encode(value):
    """Django's value as stored bytes and flags: an int as decimal text (flags 0, what
    cache_incr reads and writes), anything else pickled."""
    if type(value) is int and _INT64[0] <= value <= _INT64[1]:
        return str(value).encode("ascii"), 0
    return pickle.dumps(value, pickle.HIGHEST_PROTOCOL), FLAG_PICKLED


def _decode(data, flags):
    if flags == FLAG_PICKLED:
        return pickle.loads(data)
    if _DECIMAL.fullmatch(data):
        return int(data)
    return data  # bytes another client stored


def _ignore(_data, _flags):
    return None


def _sum(data, _flags):
    return int(data)


def _store_uri(location, options):
    """The cache_open URI of LOCATION with OPTIONS as its parameters."""
    if isinstance(location, os.PathLike):
        location = os.fspath(location)
    if not isinstance(location, str) or not location:
        raise InvalidCacheBackendError(
            f"duckcache: LOCATION must be a cache_open URI or a directory, not {location!r}"
        )
    scheme = location.partition(":")[0]
    if scheme in _URI_SCHEMES:
        uri = location
    elif ":" not in location or os.path.isabs(location):
        uri = "file:" + urllib.parse.quote(os.path.abspath(location), safe="/")
    else:
        raise InvalidCacheBackendError(
            f"duckcache: LOCATION {location!r} is neither a URI of a known kind "
            f"({', '.join(_URI_SCHEMES)}) nor a directory"
        )
    if uri.partition(":")[0] in ("file", "sharded") and "read_cache" not in options and "read_cache=" not in uri:
        # The binding's classes' default: repeated gets of hot keys from memory.
        options = {**options, "read_cache": DEFAULT_READ_CACHE}
    params = []
    for name, value in options.items():
        if not isinstance(name, str):
            raise InvalidCacheBackendError(f"duckcache: OPTIONS name {name!r} is not a str")
        params.append(f"{urllib.parse.quote(name)}={urllib.parse.quote(str(value))}")
    if params:
        uri += ("&" if "?" in uri else "?") + "&".join(params)
    return uri


# One store per (URI, near URI, near_ttl_max) in this process.
_stores = {}
_stores_lock = threading.Lock()


def _shared_store(key):
    with _stores_lock:
        store = _stores.get(key)
        if store is None or store.closed:  # closed: a tiered handle in a child of fork
            store = _stores[key] = _open_store(*key)
        return store


def _open_store(uri, near_uri, near_ttl_max):
    import duckcache

    def open_one(what, uri):
        try:
            return duckcache.open(uri)
        except (native.CacheError, TypeError) as e:
            raise InvalidCacheBackendError(f"duckcache: cannot open the {what} {uri!r}: {e}") from e

    far = open_one("store", uri)
    if near_uri is None:
        return far
    try:
        return duckcache.TieredCache(open_one("near cache", near_uri), far, near_ttl_max)
    except (TypeError, ValueError, native.CacheError) as e:
        raise InvalidCacheBackendError(f"duckcache: near cache {near_uri!r}: {e}") from e


class DuckCache(BaseCache):
    """Django's BaseCache on a duckcache store (see the module documentation)."""

    def __init__(self, location, params):
        super().__init__(params)
        options = dict(params.get("OPTIONS") or {})
        near_uri = options.pop("near", None)
        near_ttl_max = options.pop("near_ttl_max", None)
        if near_uri is not None and not isinstance(near_uri, str):
            raise InvalidCacheBackendError("duckcache: OPTIONS near must be a cache_open URI")
        if near_uri is not None:
            try:
                near_ttl_max = float(near_ttl_max if near_ttl_max is not None else 5)
            except (TypeError, ValueError):
                raise InvalidCacheBackendError(
                    f"duckcache: OPTIONS near_ttl_max must be seconds, not {near_ttl_max!r}"
                ) from None
        elif near_ttl_max is not None:
            raise InvalidCacheBackendError("duckcache: OPTIONS near_ttl_max without near")
        for name in _DJANGO_OPTIONS:
            options.pop(name, None)
        self._key = (_store_uri(location, options), near_uri, near_ttl_max)
        self._store = _shared_store(self._key)  # a bad store fails here, not at first use

    @property
    def _handle(self):
        store = self._store
        if store.closed:
            store = self._store = _shared_store(self._key)
        return store._handle

    def _ttl(self, timeout):
        """Django's timeout as the C ttl: None never expires, 0 or less expires at once."""
        if timeout is DEFAULT_TIMEOUT:
            timeout = self.default_timeout
        if timeout is None:
            return -1.0
        return max(float(timeout), 0.0)

    def validate_key(self, key):
        """Django's warnings, at a regular expression's cost for the keys that need none
        (Django's own check is a Python loop over every character: half of a get)."""
        if len(key) > _MEMCACHED_MAX_KEY or _MEMCACHED_UNSAFE.search(key):
            super().validate_key(key)

    def _made(self, key, version):
        return _encode_key(self.make_and_validate_key(key, version=version))

    def add(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        k = self._made(key, version)
        data, flags = _encode(value)
        status = lib.cache_add_flagged(self._handle, k, len(k), data, len(data), self._ttl(timeout), flags)
        if status < 0:
            raise native.error_for(status)
        return status == native.CACHE_OK

    def get(self, key, default=None, version=None):
        return _read_value(self._handle, self._made(key, version), default, _decode)

    def set(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        k = self._made(key, version)
        data, flags = _encode(value)
        native.check(lib.cache_set_flagged(self._handle, k, len(k), data, len(data), self._ttl(timeout), flags))

    def touch(self, key, timeout=DEFAULT_TIMEOUT, version=None):
        k = self._made(key, version)
        return native.check(lib.cache_touch(self._handle, k, len(k), self._ttl(timeout))) == native.CACHE_OK

    def delete(self, key, version=None):
        return _delete_many(self._handle, [self._made(key, version)]) > 0

    def get_many(self, keys, version=None):
        keys = list(keys)
        found = _read_many(self._handle, [self._made(k, version) for k in keys], _decode)
        return {keys[i]: value for i, value in found}

    def has_key(self, key, version=None):
        k = self._made(key, version)
        return native.check(lib.cache_has(self._handle, k, len(k))) == native.CACHE_OK

    def incr(self, key, delta=1, version=None):
        k = self._made(key, version)
        if native.check(lib.cache_has(self._handle, k, len(k))) != native.CACHE_OK:
            raise ValueError(f"Key '{key}' not found.")
        out = c_int64()
        try:
            native.check(lib.cache_incr(self._handle, k, len(k), delta, -1.0, byref(out)))
        except native.NotNumericError:
            raise self._not_incrementable(k, key, delta) from None
        return out.value

    def _not_incrementable(self, k, key, delta):
        """What Django's other backends raise for an incr the store refused: TypeError for
        a value that is not an int, OverflowError past 64 bits."""
        current = _read_value(self._handle, k, None, _decode)
        if type(current) is int:
            return OverflowError(f"{current} + {delta} does not fit a 64-bit integer")
        return TypeError(f"the value of {key!r} is not an integer")

    def set_many(self, data, timeout=DEFAULT_TIMEOUT, version=None):
        items = [(self._made(k, version), *_encode(v)) for k, v in data.items()]
        _write_many(self._handle, items, self._ttl(timeout))
        return []

    def delete_many(self, keys, version=None):
        _delete_many(self._handle, [self._made(k, version) for k in keys])

    def clear(self):
        native.check(lib.cache_clear(self._handle))

    def close(self, **kwargs):
        """Nothing: the store stays open for the process's other requests (Django calls
        this at the end of every request)."""

    # Native async: the operation runs on a library thread and completes on this event
    # loop (the bulk ones in one call, as their sync forms; aget_or_set, adecr and the
    # version calls are Django's, over these).

    async def aget(self, key, default=None, version=None):
        k = self._made(key, version)
        found, value = await _submit(self._handle, lib.cache_get_flagged_async, k, len(k), flagged=True, decode=_decode)
        return value if found else default

    async def aset(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        k = self._made(key, version)
        data, flags = _encode(value)
        await _submit(self._handle, lib.cache_set_flagged_async, k, len(k), data, len(data), self._ttl(timeout), flags)

    async def adelete(self, key, version=None):
        k = self._made(key, version)
        found, _ = await _submit(self._handle, lib.cache_pop_flagged_async, k, len(k), flagged=True, decode=_ignore)
        return found

    async def aclear(self):
        await _submit(self._handle, lib.cache_clear_async)

    async def aadd(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        k = self._made(key, version)
        data, flags = _encode(value)
        stored, _ = await _submit(
            self._handle, lib.cache_add_flagged_async, k, len(k), data, len(data), self._ttl(timeout), flags
        )
        return stored

    async def ahas_key(self, key, version=None):
        k = self._made(key, version)
        found, _ = await _submit(self._handle, lib.cache_has_async, k, len(k))
        return found

    async def atouch(self, key, timeout=DEFAULT_TIMEOUT, version=None):
        k = self._made(key, version)
        found, _ = await _submit(self._handle, lib.cache_touch_async, k, len(k), self._ttl(timeout))
        return found

    async def aget_many(self, keys, version=None):
        keys = list(keys)
        encoded = [self._made(k, version) for k in keys]
        slices = _slices(encoded)
        found = await _submit(self._handle, lib.cache_get_many_async, slices, len(encoded), many=True,
                              decode=_decode)
        return {keys[i]: value for i, value in found}

    async def aset_many(self, data, timeout=DEFAULT_TIMEOUT, version=None):
        items = [(self._made(k, version), *_encode(v)) for k, v in data.items()]
        entries = _entries(items, self._ttl(timeout))
        await _submit(self._handle, lib.cache_set_many_async, entries, len(items))
        return []

    async def adelete_many(self, keys, version=None):
        encoded = [self._made(k, version) for k in keys]
        slices = _slices(encoded)
        await _submit(self._handle, lib.cache_delete_many_async, slices, len(encoded), decode=_ignore)

    async def aincr(self, key, delta=1, version=None):
        k = self._made(key, version)
        found, _ = await _submit(self._handle, lib.cache_has_async, k, len(k))
        if not found:
            raise ValueError(f"Key '{key}' not found.")
        try:
            _, value = await _submit(self._handle, lib.cache_incr_async, k, len(k), delta, -1.0, decode=_sum)
        except native.NotNumericError:
            raise self._not_incrementable(k, key, delta) from None
        return value
