"""The C library: finding it, declaring every function, and turning statuses into
exceptions. Nothing here knows about Python values; see _caches.py for that."""

import ctypes
import os
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    c_char_p,
    c_double,
    c_int,
    c_int32,
    c_int64,
    c_size_t,
    c_uint8,
    c_uint32,
    c_uint64,
    c_void_p,
)
from pathlib import Path

LIBRARY_NAME = "libduckcache.so"

# Status codes (include/duckcache.h); their values are part of the ABI.
CACHE_OK = 0
CACHE_NOT_FOUND = 1
CACHE_ERR_INVALID_ARG = -1
CACHE_ERR_CLOSED = -2
CACHE_ERR_IO = -3
CACHE_ERR_CORRUPT = -4
CACHE_ERR_TOO_LARGE = -5
CACHE_ERR_BUSY = -6
CACHE_ERR_BUFFER_TOO_SMALL = -7
CACHE_ERR_NO_MEMORY = -8
CACHE_ERR_INTERNAL = -9
CACHE_EXISTS = 2
CACHE_ERR_NOT_NUMERIC = -10
CACHE_ERR_UNAVAILABLE = -11
CACHE_NO_TTL = -1.0


class CacheError(Exception):
    """A failed call into the library: `status` is the C status code, `detail` the
    library's explanation (cache_last_error)."""

    def __init__(self, status, detail):
        self.status = status
        self.detail = detail
        super().__init__(detail or status_name(status))


# Each status also derives from the built-in exception a Python caller would catch for
# it, so `except RuntimeError` after close or `except OSError` for I/O keeps working.
class InvalidArgumentError(CacheError, ValueError):
    pass


class ClosedError(CacheError, RuntimeError):
    pass


class CacheIOError(CacheError, OSError):
    def __init__(self, status, detail):
        CacheError.__init__(self, status, detail)


class CorruptError(CacheError):
    pass


class TooLargeError(CacheError, ValueError):
    pass


class BusyError(CacheError, TimeoutError):
    pass


class CacheMemoryError(CacheError, MemoryError):
    pass


class NotNumericError(CacheError, ValueError):
    """incr/decr on a value that is not a decimal 64-bit integer, or an overflow."""


class UnavailableError(CacheError, ConnectionError):
    """A remote server cannot be reached or refused the request."""


class InternalError(CacheError):
    pass


_ERRORS = {
    CACHE_ERR_INVALID_ARG: InvalidArgumentError,
    CACHE_ERR_CLOSED: ClosedError,
    CACHE_ERR_IO: CacheIOError,
    CACHE_ERR_CORRUPT: CorruptError,
    CACHE_ERR_TOO_LARGE: TooLargeError,
    CACHE_ERR_BUSY: BusyError,
    CACHE_ERR_NO_MEMORY: CacheMemoryError,
    CACHE_ERR_INTERNAL: InternalError,
    CACHE_ERR_NOT_NUMERIC: NotNumericError,
    CACHE_ERR_UNAVAILABLE: UnavailableError,
}


class Buf(Structure):
    _fields_ = [("data", POINTER(c_uint8)), ("len", c_size_t)]


class Stats(Structure):
    _fields_ = [
        (name, c_uint64)
        for name in (
            "hits",
            "misses",
            "sets",
            "deletes",
            "evictions",
            "expirations",
            "entries",
            "bytes",
        )
    ]

    def as_dict(self):
        return {name: getattr(self, name) for name, _ in self._fields_}


class Slice(Structure):
    _fields_ = [("data", c_void_p), ("len", c_size_t)]


class Entry(Structure):
    _fields_ = [("key", Slice), ("value", Slice), ("ttl_seconds", c_double), ("flags", c_uint32)]


HANDLE = c_void_p
KEY = (c_char_p, c_size_t)
PLAIN_CALLBACK = CFUNCTYPE(None, c_void_p, c_int32, POINTER(c_uint8), c_size_t)
FLAGGED_CALLBACK = CFUNCTYPE(None, c_void_p, c_int32, POINTER(c_uint8), c_size_t, c_uint32)
MANY_CALLBACK = CFUNCTYPE(
    None, c_void_p, c_int32, c_size_t, POINTER(c_int32), POINTER(Slice), POINTER(c_uint32)
)
COMPUTE_FN = CFUNCTYPE(c_int32, c_void_p, POINTER(c_uint8), c_size_t, c_void_p)
KEY_VISITOR = CFUNCTYPE(c_int, c_void_p, POINTER(c_uint8), c_size_t)

# name: (restype, argtypes). Every function the binding calls, declared once.
_SIGNATURES = {
    "cache_version": (c_char_p, []),
    "cache_before_fork": (None, []),
    "cache_after_fork": (None, []),
    "cache_status_str": (c_char_p, [c_int32]),
    "cache_last_error": (c_size_t, [c_char_p, c_size_t]),
    "cache_open_memory": (c_int32, [c_uint64, POINTER(HANDLE)]),
    "cache_open_file": (c_int32, [c_char_p, c_uint64, POINTER(HANDLE)]),
    "cache_open_sharded": (c_int32, [c_char_p, c_uint64, c_uint32, POINTER(HANDLE)]),
    "cache_open_folder": (c_int32, [c_char_p, c_uint32, POINTER(HANDLE)]),
    "cache_set": (c_int32, [HANDLE, *KEY, c_char_p, c_size_t, c_double]),
    "cache_set_flagged": (c_int32, [HANDLE, *KEY, c_char_p, c_size_t, c_double, c_uint32]),
    "cache_get": (c_int32, [HANDLE, *KEY, POINTER(Buf)]),
    "cache_get_flagged": (c_int32, [HANDLE, *KEY, POINTER(Buf), POINTER(c_uint32)]),
    "cache_pop": (c_int32, [HANDLE, *KEY, POINTER(Buf)]),
    "cache_pop_flagged": (c_int32, [HANDLE, *KEY, POINTER(Buf), POINTER(c_uint32)]),
    "cache_get_into": (c_int32, [HANDLE, *KEY, c_void_p, c_size_t, POINTER(c_size_t)]),
    # The hot read: buffer, length and flags are passed as plain addresses, which
    # ctypes converts about twice as fast as pointer objects.
    "cache_get_into_flagged": (
        c_int32,
        [HANDLE, *KEY, c_void_p, c_size_t, c_void_p, c_void_p],
    ),
    "cache_has": (c_int32, [HANDLE, *KEY]),
    "cache_entry_path": (c_int32, [HANDLE, *KEY, POINTER(Buf)]),
    "cache_delete": (c_int32, [HANDLE, *KEY]),
    "cache_clear": (c_int32, [HANDLE]),
    "cache_len": (c_int32, [HANDLE, POINTER(c_uint64)]),
    "cache_get_stats": (c_int32, [HANDLE, POINTER(Stats)]),
    "cache_save": (c_int32, [HANDLE]),
    "cache_close": (c_int32, [HANDLE]),
    "cache_free": (None, [HANDLE]),
    "cache_buf_free": (None, [POINTER(Buf)]),
    "cache_set_async": (
        c_int32,
        [HANDLE, *KEY, c_char_p, c_size_t, c_double, PLAIN_CALLBACK, c_void_p],
    ),
    "cache_set_flagged_async": (
        c_int32,
        [HANDLE, *KEY, c_char_p, c_size_t, c_double, c_uint32, PLAIN_CALLBACK, c_void_p],
    ),
    "cache_get_async": (c_int32, [HANDLE, *KEY, PLAIN_CALLBACK, c_void_p]),
    "cache_get_flagged_async": (c_int32, [HANDLE, *KEY, FLAGGED_CALLBACK, c_void_p]),
    "cache_pop_async": (c_int32, [HANDLE, *KEY, PLAIN_CALLBACK, c_void_p]),
    "cache_pop_flagged_async": (c_int32, [HANDLE, *KEY, FLAGGED_CALLBACK, c_void_p]),
    "cache_delete_async": (c_int32, [HANDLE, *KEY, PLAIN_CALLBACK, c_void_p]),
    "cache_clear_async": (c_int32, [HANDLE, PLAIN_CALLBACK, c_void_p]),
    "cache_add_flagged_async": (
        c_int32,
        [HANDLE, *KEY, c_char_p, c_size_t, c_double, c_uint32, PLAIN_CALLBACK, c_void_p],
    ),
    "cache_has_async": (c_int32, [HANDLE, *KEY, PLAIN_CALLBACK, c_void_p]),
    "cache_get_many_async": (c_int32, [HANDLE, POINTER(Slice), c_size_t, MANY_CALLBACK, c_void_p]),
    "cache_set_many_async": (c_int32, [HANDLE, POINTER(Entry), c_size_t, PLAIN_CALLBACK, c_void_p]),
    "cache_delete_many_async": (c_int32, [HANDLE, POINTER(Slice), c_size_t, PLAIN_CALLBACK, c_void_p]),
    "cache_touch_async": (c_int32, [HANDLE, *KEY, c_double, PLAIN_CALLBACK, c_void_p]),
    "cache_incr_async": (c_int32, [HANDLE, *KEY, c_int64, c_double, PLAIN_CALLBACK, c_void_p]),
    "cache_open_encrypted": (c_int32, [HANDLE, c_char_p, c_size_t, POINTER(HANDLE)]),
    "cache_secretbox_seal": (c_int32, [c_char_p, c_size_t, c_char_p, c_size_t, POINTER(Buf)]),
    "cache_secretbox_open": (c_int32, [c_char_p, c_size_t, c_char_p, c_size_t, POINTER(Buf)]),
    # Version 2.
    "cache_open": (c_int32, [c_char_p, POINTER(HANDLE)]),
    "cache_add_flagged": (c_int32, [HANDLE, *KEY, c_char_p, c_size_t, c_double, c_uint32]),
    "cache_touch": (c_int32, [HANDLE, *KEY, c_double]),
    "cache_ttl": (c_int32, [HANDLE, *KEY, POINTER(c_double)]),
    "cache_incr": (c_int32, [HANDLE, *KEY, c_int64, c_double, POINTER(c_int64)]),
    "cache_sink_put": (c_int32, [c_void_p, c_char_p, c_size_t, c_double, c_uint32]),
    "cache_get_or_compute": (
        c_int32,
        [HANDLE, *KEY, COMPUTE_FN, c_void_p, POINTER(Buf), POINTER(c_uint32)],
    ),
    "cache_get_or_compute_async": (
        c_int32,
        [HANDLE, *KEY, COMPUTE_FN, c_void_p, FLAGGED_CALLBACK, c_void_p],
    ),
    "cache_get_many": (
        c_int32,
        [HANDLE, POINTER(Slice), c_size_t, POINTER(Buf), POINTER(c_int32), POINTER(c_uint32)],
    ),
    "cache_set_many": (c_int32, [HANDLE, POINTER(Entry), c_size_t]),
    "cache_delete_many": (c_int32, [HANDLE, POINTER(Slice), c_size_t, POINTER(c_uint64)]),
    "cache_keys": (c_int32, [HANDLE, c_char_p, c_size_t, KEY_VISITOR, c_void_p]),
    "cache_delete_prefix": (c_int32, [HANDLE, c_char_p, c_size_t, POINTER(c_uint64)]),
    "cache_purge_expired": (c_int32, [HANDLE, POINTER(c_uint64)]),
    "cache_open_tiered": (c_int32, [HANDLE, HANDLE, c_double, POINTER(HANDLE)]),
}


def candidate_paths():
    """Where the library is looked for, in order: $DUCKCACHE_LIB, this package's
    folder (where `make python` and the install put it), then the release build of the
    source tree this package sits in."""
    env = os.environ.get("DUCKCACHE_LIB")
    if env:
        yield Path(env)
    here = Path(__file__).resolve().parent
    yield here / LIBRARY_NAME
    for parent in here.parents:
        built = parent / "target" / "release" / LIBRARY_NAME
        if built.exists():
            yield built
            break


def load():
    """Loads and declares the library; OSError naming every place tried when absent."""
    tried = []
    for path in candidate_paths():
        tried.append(str(path))
        if path.exists():
            lib = ctypes.CDLL(str(path))
            for name, (restype, argtypes) in _SIGNATURES.items():
                try:
                    fn = getattr(lib, name)
                except AttributeError:
                    raise OSError(
                        f"{path} lacks {name}: it is an older duckcache than this binding"
                    ) from None
                fn.restype = restype
                fn.argtypes = argtypes
            return lib, path
    raise OSError(
        f"cannot find {LIBRARY_NAME}; tried: {', '.join(tried)}. Build it with "
        "`make lib` (or `make python`) or point DUCKCACHE_LIB at it."
    )


lib, library_path = load()

# Library threads call back into Python (async completions, compute functions); CPython
# registers such a thread under a lock that os.fork() can copy held, leaving the child
# hung before it runs any Python. So before a fork the library holds those callbacks
# back (the ctypes call releases the GIL, letting the ones in flight finish), and lets
# them run again after it, in parent and child.
os.register_at_fork(
    before=lib.cache_before_fork,
    after_in_parent=lib.cache_after_fork,
    after_in_child=lib.cache_after_fork,
)


def status_name(status):
    return lib.cache_status_str(status).decode()


def last_error():
    """The library's detail for the last failing call on this thread."""
    buf = ctypes.create_string_buffer(1024)
    n = lib.cache_last_error(buf, len(buf))
    if n >= len(buf):
        buf = ctypes.create_string_buffer(n + 1)
        lib.cache_last_error(buf, len(buf))
    return buf.value.decode(errors="replace")


def error_for(status, detail=None):
    """The exception for a failing status (detail read from the library if not given)."""
    if detail is None:
        detail = last_error()
    return _ERRORS.get(status, CacheError)(status, detail)


def check(status):
    """Raises for a negative status; returns CACHE_OK or CACHE_NOT_FOUND."""
    if status < 0:
        raise error_for(status)
    return status


def version():
    return lib.cache_version().decode()
