//! Handing a value the backend visits to C: as a `cache_buf` the caller frees, or as
//! the bytes a callback reads.

use super::boundary::Failure;
use super::types::cache_buf;
use super::types::cache_status::{self, *};
use crate::error::Result;
use crate::sink::{Owned, Sink};

impl cache_buf {
    pub(crate) const EMPTY: cache_buf = cache_buf {
        data: std::ptr::null_mut(),
        len: 0,
    };

    /// Hands `bytes` to C; released by cache_buf_free.
    pub(crate) fn from_vec(bytes: Vec<u8>) -> cache_buf {
        if bytes.is_empty() {
            return cache_buf::EMPTY;
        }
        let boxed = bytes.into_boxed_slice();
        let len = boxed.len();
        cache_buf {
            data: Box::into_raw(boxed).cast::<u8>(),
            len,
        }
    }
}

/// Runs a get-like backend call with a sink that keeps what it is handed (a value kept
/// in a file is read once, into the buffer kept); `None` when the key was not found.
pub(crate) fn copy_visited(
    call: impl FnOnce(&mut dyn Sink) -> Result<bool>,
) -> Result<Option<(Vec<u8>, u32)>, Failure> {
    let mut owned = Owned::default();
    if !call(&mut owned)? {
        return Ok(None);
    }
    let copied = owned.into_found()?;
    Ok(Some(copied.ok_or_else(|| {
        Failure::new(CACHE_ERR_INTERNAL, "no value visited")
    })?))
}

/// Runs a get-like backend call and hands its value to C in `out`, and its flags in
/// `flags_out` when wanted (0 when not found).
pub(crate) fn into_buf(
    out: &mut cache_buf,
    flags_out: Option<&mut u32>,
    call: impl FnOnce(&mut dyn Sink) -> Result<bool>,
) -> Result<cache_status, Failure> {
    let (status, (value, flags)) = match copy_visited(call)? {
        Some(found) => (CACHE_OK, found),
        None => (CACHE_NOT_FOUND, (Vec::new(), 0)),
    };
    *out = cache_buf::from_vec(value);
    if let Some(flags_out) = flags_out {
        *flags_out = flags;
    }
    Ok(status)
}

/// CACHE_OK for a key that is there, CACHE_NOT_FOUND for one that is not.
pub(crate) fn found(present: bool) -> cache_status {
    if present {
        CACHE_OK
    } else {
        CACHE_NOT_FOUND
    }
}
