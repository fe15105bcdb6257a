//! The C-visible data types of the contract.

use crate::backend::Stats;
use crate::error::ErrorKind;

/// Status codes. The values are part of the ABI and are never reused.
#[allow(non_camel_case_types)]
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum cache_status {
    /// Success.
    CACHE_OK = 0,
    /// Key absent or expired (get, get_into, pop, has).
    CACHE_NOT_FOUND = 1,
    /// NULL where a pointer is required, NaN ttl, bad option.
    CACHE_ERR_INVALID_ARG = -1,
    /// The handle was closed with cache_close.
    CACHE_ERR_CLOSED = -2,
    /// Filesystem or SQLite I/O failure: permissions, disk full, path is a file.
    CACHE_ERR_IO = -3,
    /// On-disk data is damaged and cannot be read.
    CACHE_ERR_CORRUPT = -4,
    /// The entry can never fit the configured size limit.
    CACHE_ERR_TOO_LARGE = -5,
    /// Gave up waiting for another process's lock.
    CACHE_ERR_BUSY = -6,
    /// cache_get_into: *value_len now holds the size needed.
    CACHE_ERR_BUFFER_TOO_SMALL = -7,
    /// An allocation failed.
    CACHE_ERR_NO_MEMORY = -8,
    /// A bug inside the library (a caught panic); never an abort.
    CACHE_ERR_INTERNAL = -9,
    /// cache_add: a live entry already holds the key; nothing changed.
    CACHE_EXISTS = 2,
    /// cache_incr: the stored value is not a decimal int64, or the sum overflows.
    CACHE_ERR_NOT_NUMERIC = -10,
    /// A remote server cannot be reached or refused the request (the message says which).
    CACHE_ERR_UNAVAILABLE = -11,
}

impl From<ErrorKind> for cache_status {
    fn from(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::InvalidArg => cache_status::CACHE_ERR_INVALID_ARG,
            ErrorKind::Closed => cache_status::CACHE_ERR_CLOSED,
            ErrorKind::Io => cache_status::CACHE_ERR_IO,
            ErrorKind::Corrupt => cache_status::CACHE_ERR_CORRUPT,
            ErrorKind::TooLarge => cache_status::CACHE_ERR_TOO_LARGE,
            ErrorKind::Busy => cache_status::CACHE_ERR_BUSY,
            ErrorKind::NoMemory => cache_status::CACHE_ERR_NO_MEMORY,
            ErrorKind::Internal => cache_status::CACHE_ERR_INTERNAL,
            ErrorKind::NotNumeric => cache_status::CACHE_ERR_NOT_NUMERIC,
            ErrorKind::Unavailable => cache_status::CACHE_ERR_UNAVAILABLE,
        }
    }
}

/// Any negative ttl: the entry never expires. (The C header defines it as `(-1.0)`
/// through cbindgen.toml, since cbindgen drops the parentheses a macro needs.)
pub const CACHE_NO_TTL: f64 = -1.0;

/// A value handed to the caller. `data` is owned by the caller and freed with
/// cache_buf_free; it may be NULL when `len` is 0.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug)]
pub struct cache_buf {
    pub data: *mut u8,
    pub len: usize,
}

/// Counters since the handle was opened, and the current size.
/// hits/misses count lookups by get, get_into, pop and has; deletes counts entries
/// removed by delete, pop and clear; evictions counts live entries removed to respect
/// the size bound; expirations counts expired entries removed.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct cache_stats {
    pub hits: u64,
    pub misses: u64,
    pub sets: u64,
    pub deletes: u64,
    pub evictions: u64,
    pub expirations: u64,
    /// Entries that have not expired, as cache_len.
    pub entries: u64,
    /// Bytes of keys and values held (on disk for the persistent kinds).
    pub bytes: u64,
}

impl From<Stats> for cache_stats {
    fn from(s: Stats) -> Self {
        cache_stats {
            hits: s.hits,
            misses: s.misses,
            sets: s.sets,
            deletes: s.deletes,
            evictions: s.evictions,
            expirations: s.expirations,
            entries: s.entries,
            bytes: s.bytes,
        }
    }
}
