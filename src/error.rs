//! The library's error type: a kind the C layer maps to a status code, and a message
//! naming what failed (what `cache_last_error` hands back).

use std::fmt;

/// What went wrong, coarse enough to map one-to-one onto the C status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A bad argument: NaN TTL, an option out of range, a key too long.
    InvalidArg,
    /// The cache was closed.
    Closed,
    /// Filesystem or SQLite I/O failure.
    Io,
    /// On-disk data is damaged.
    Corrupt,
    /// The entry can never fit the configured size limit.
    TooLarge,
    /// Gave up waiting for another process's lock.
    Busy,
    /// An allocation failed.
    NoMemory,
    /// A bug inside the library.
    Internal,
    /// `incr` on a value that is not a decimal int64, or a sum that overflows.
    NotNumeric,
    /// A remote server cannot be reached or refused the request.
    Unavailable,
}

/// An error with its kind and a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    /// The connection that failed cannot write again (SQLite fell back to read-only,
    /// or its file was moved or removed); a new one may.
    stale_connection: bool,
    /// SQLite's SQLITE_CORRUPT, which it also returns for a read the OS failed (EIO):
    /// damage until the database is checked (`sqlite::confirm_damage`).
    unconfirmed_damage: bool,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            stale_connection: false,
            unconfirmed_damage: false,
        }
    }

    /// The same error, its message prefixed with `context` (a path, say).
    pub(crate) fn prefixed(mut self, context: impl std::fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// Marks damage SQLite reported, which may be a failed read (see the field).
    pub(crate) fn with_unconfirmed_damage(mut self) -> Self {
        self.unconfirmed_damage = true;
        self
    }

    /// Damage SQLite reported, confirmed by a check that found `verdict`.
    pub(crate) fn confirmed(mut self, verdict: &str) -> Self {
        self.unconfirmed_damage = false;
        self.message = format!("{} (a check found: {verdict})", self.message);
        self
    }

    /// True for damage SQLite reported that no check has confirmed yet.
    pub(crate) fn is_unconfirmed_damage(&self) -> bool {
        self.unconfirmed_damage
    }

    /// Marks the error as one a new database connection would not have.
    pub(crate) fn with_stale_connection(mut self) -> Self {
        self.stale_connection = true;
        self
    }

    /// True when a new database connection would not have failed this way.
    pub(crate) fn is_stale_connection(&self) -> bool {
        self.stale_connection
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn invalid_arg(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidArg, message)
    }

    pub fn closed() -> Self {
        Error::new(ErrorKind::Closed, "the cache is closed")
    }

    /// An I/O failure: `what` failed on `path` (out of memory stays `NoMemory`).
    pub fn io(e: std::io::Error, what: &str, path: &std::path::Path) -> Self {
        let kind = if e.kind() == std::io::ErrorKind::OutOfMemory {
            ErrorKind::NoMemory
        } else {
            ErrorKind::Io
        };
        Error::new(kind, format!("{what} {}: {e}", path.display()))
    }

    pub fn no_memory(bytes: usize) -> Self {
        Error::new(
            ErrorKind::NoMemory,
            format!("could not allocate {bytes} bytes"),
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)
    }
}

impl std::error::Error for Error {}

/// Copies `bytes` into a new vector, reporting allocation failure instead of aborting,
/// so a huge value gives `NoMemory` rather than killing the host process.
pub fn try_copy(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut v = Vec::new();
    v.try_reserve_exact(bytes.len())
        .map_err(|_| Error::no_memory(bytes.len()))?;
    v.extend_from_slice(bytes);
    Ok(v)
}
