//! Walking and removing keys: `cache_keys`, `cache_delete_prefix`,
//! `cache_purge_expired`.

use super::handle::cache_t;
use super::macros::exported;
use super::types::cache_status::{self, *};
use std::ffi::{c_int, c_void};

/// Called by cache_keys with each key (valid until it returns); returns 0 to go on,
/// anything else to stop.
#[allow(non_camel_case_types)]
pub type cache_key_visitor =
    Option<unsafe extern "C" fn(user_data: *mut c_void, key: *const u8, key_len: usize) -> c_int>;

/// Calls visit once for each live key that starts with prefix (prefix_len 0: every
/// key), in no set order, until it returns non-zero (the call still returns CACHE_OK).
/// Keys set or removed during the walk may or may not be visited; a key live for the
/// whole walk is visited exactly once. No lock is held while visit runs, so it may call
/// any library function, on this handle too. Memory use is bounded whatever the number
/// of keys (the walk goes in pages).
#[no_mangle]
pub unsafe extern "C" fn cache_keys(
    c: *mut cache_t,
    prefix: *const u8,
    prefix_len: usize,
    visit: cache_key_visitor,
    user_data: *mut c_void,
) -> cache_status {
    exported!(handle c, bytes prefix[prefix_len] => {
        let visit = visit.ok_or_else(|| super::boundary::Failure::invalid_arg("visit is NULL"))?;
        c.backend.keys(prefix, &mut |key| {
            let ptr = if key.is_empty() { std::ptr::null() } else { key.as_ptr() };
            // SAFETY: the caller supplied a function of this signature; the key is
            // valid for the call.
            unsafe { visit(user_data, ptr, key.len()) == 0 }
        })?;
        Ok(CACHE_OK)
    })
}

/// Removes every live key that starts with prefix (prefix_len 0: every key);
/// *deleted (may be NULL) gets how many.
#[no_mangle]
pub unsafe extern "C" fn cache_delete_prefix(
    c: *mut cache_t,
    prefix: *const u8,
    prefix_len: usize,
    deleted: *mut u64,
) -> cache_status {
    exported!(handle c, bytes prefix[prefix_len], maybe_out deleted => {
        let count = c.backend.delete_prefix(prefix)?;
        if let Some(deleted) = deleted {
            *deleted = count;
        }
        Ok(CACHE_OK)
    })
}

/// Removes every expired entry now; *removed (may be NULL) gets how many.
#[no_mangle]
pub unsafe extern "C" fn cache_purge_expired(c: *mut cache_t, removed: *mut u64) -> cache_status {
    exported!(handle c, maybe_out removed => {
        let count = c.backend.purge_expired()?;
        if let Some(removed) = removed {
            *removed = count;
        }
        Ok(CACHE_OK)
    })
}
