"""duckcache: fast, process-safe caches from a Rust library with a C ABI.

A drop-in for the Duck framework's `duck.utils.caching`::

    from duckcache import InMemoryCache, PersistentFileCache, DynamicFileCache, \\
        KeyAsFolderCache, CacheBase, CacheSpeedTest, MISSING

See the README (section "Python") for what differs from the original, deliberately.
"""

from ._caches import (
    FLAG_PICKLED,
    MISSING,
    CacheBase,
    DynamicFileCache,
    KeyAsFolderCache,
    NativeMemoryCache,
    PersistentFileCache,
    ValueDecodeError,
)
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
    TooLargeError,
    library_path,
    version,
)
from ._speedtest import CacheSpeedTest

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
    "NativeMemoryCache",
    "PersistentFileCache",
    "TooLargeError",
    "ValueDecodeError",
    "library_path",
    "version",
]
