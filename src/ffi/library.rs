//! Library-level functions: version, status text, last error.

use super::boundary::with_last_error;
use super::types::cache_status;
use std::ffi::c_char;

/// The library version, "MAJOR.MINOR.PATCH". Static; never free it.
#[no_mangle]
pub extern "C" fn cache_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// Static English text for any status value, unknown ones included. Never free it.
#[no_mangle]
pub extern "C" fn cache_status_str(status: i32) -> *const c_char {
    use cache_status::*;
    let text: &'static str = match status {
        s if s == CACHE_OK as i32 => "success\0",
        s if s == CACHE_NOT_FOUND as i32 => "key not found or expired\0",
        s if s == CACHE_ERR_INVALID_ARG as i32 => "invalid argument\0",
        s if s == CACHE_ERR_CLOSED as i32 => "the cache is closed\0",
        s if s == CACHE_ERR_IO as i32 => "input/output error\0",
        s if s == CACHE_ERR_CORRUPT as i32 => "on-disk data is damaged\0",
        s if s == CACHE_ERR_TOO_LARGE as i32 => "entry can never fit the size limit\0",
        s if s == CACHE_ERR_BUSY as i32 => "gave up waiting for a lock held by another process\0",
        s if s == CACHE_ERR_BUFFER_TOO_SMALL as i32 => "buffer too small\0",
        s if s == CACHE_ERR_NO_MEMORY as i32 => "out of memory\0",
        s if s == CACHE_ERR_INTERNAL as i32 => "internal error in duckcache\0",
        s if s == CACHE_EXISTS as i32 => "a live entry already holds the key\0",
        s if s == CACHE_ERR_NOT_NUMERIC as i32 => {
            "the value is not a decimal int64, or the sum overflows\0"
        }
        s if s == CACHE_ERR_UNAVAILABLE as i32 => {
            "the server cannot be reached or refused the request\0"
        }
        _ => "unknown status\0",
    };
    text.as_ptr().cast()
}

/// Detail of the last failing call on this thread. Copies at most cap-1 bytes plus a
/// NUL into `buf` (when cap > 0 and buf is not NULL) and returns the full length of the
/// message; 0 when no call on this thread has failed.
///
/// # Safety
/// A non-NULL `buf` must be valid for writes of `cap` bytes.
#[no_mangle]
pub unsafe extern "C" fn cache_last_error(buf: *mut c_char, cap: usize) -> usize {
    with_last_error(|message| {
        if !buf.is_null() && cap > 0 {
            let n = message.len().min(cap - 1);
            // SAFETY: the caller guarantees `cap` writable bytes; n + 1 <= cap.
            unsafe {
                std::ptr::copy_nonoverlapping(message.as_ptr(), buf.cast::<u8>(), n);
                *buf.add(n) = 0;
            }
        }
        message.len()
    })
}
