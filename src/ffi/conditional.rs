//! Set-if-absent, TTL control and counters: `cache_add`, `cache_touch`, `cache_ttl`,
//! `cache_incr`, each one atomic step of the backend.

use super::boundary::Failure;
use super::handle::cache_t;
use super::macros::exported;
use super::types::cache_status::{self, *};
use super::values::found;
use crate::backend::Remaining;
use crate::ttl::Ttl;

/// The body of cache_add and cache_add_flagged.
fn add(
    c: &cache_t,
    key: &[u8],
    value: &[u8],
    ttl_seconds: f64,
    flags: u32,
) -> Result<cache_status, Failure> {
    let stored = c
        .backend
        .add_flagged(key, value, Ttl::from_seconds(ttl_seconds)?, flags)?;
    Ok(if stored { CACHE_OK } else { CACHE_EXISTS })
}

/// Stores a copy of `value` under `key` only when no live entry holds it: CACHE_OK
/// (stored) or CACHE_EXISTS (nothing changed). Of any number of concurrent adds of one
/// key, in threads or processes, exactly one gets CACHE_OK. An expired entry counts as
/// absent. ttl_seconds as for cache_set.
#[no_mangle]
pub unsafe extern "C" fn cache_add(
    c: *mut cache_t,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    ttl_seconds: f64,
) -> cache_status {
    exported!(handle c, bytes key[key_len], bytes value[value_len] => {
        add(c, key, value, ttl_seconds, 0)
    })
}

/// As cache_add, storing `flags` with the entry (see cache_set_flagged).
#[no_mangle]
pub unsafe extern "C" fn cache_add_flagged(
    c: *mut cache_t,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    ttl_seconds: f64,
    flags: u32,
) -> cache_status {
    exported!(handle c, bytes key[key_len], bytes value[value_len] => {
        add(c, key, value, ttl_seconds, flags)
    })
}

/// Gives the live entry of `key` a new TTL (same rules as cache_set; 0 expires it now),
/// value kept: CACHE_OK, or CACHE_NOT_FOUND when absent or expired.
#[no_mangle]
pub unsafe extern "C" fn cache_touch(
    c: *mut cache_t,
    key: *const u8,
    key_len: usize,
    ttl_seconds: f64,
) -> cache_status {
    exported!(handle c, bytes key[key_len] => {
        Ok(found(c.backend.touch(key, Ttl::from_seconds(ttl_seconds)?)?))
    })
}

/// CACHE_OK: *remaining = seconds left (> 0), or CACHE_NO_TTL when the entry never
/// expires. CACHE_NOT_FOUND: absent or expired (*remaining untouched). A peek: the
/// entry's recency is unchanged.
#[no_mangle]
pub unsafe extern "C" fn cache_ttl(
    c: *mut cache_t,
    key: *const u8,
    key_len: usize,
    remaining: *mut f64,
) -> cache_status {
    exported!(handle c, bytes key[key_len], out remaining => {
        match c.backend.ttl(key)? {
            None => Ok(CACHE_NOT_FOUND),
            Some(left) => {
                *remaining = match left {
                    Remaining::Forever => super::types::CACHE_NO_TTL,
                    Remaining::Seconds(s) => s.max(f64::MIN_POSITIVE),
                };
                Ok(CACHE_OK)
            }
        }
    })
}

/// Atomically adds `delta` to the integer stored under `key` and writes the new value
/// to *out (out may be NULL). The stored form is ASCII decimal text ("-12"), flags 0.
/// An absent or expired key starts at 0 and gets ttl_seconds; an existing key keeps its
/// TTL. A value that is not a decimal int64, or a sum that overflows, gives
/// CACHE_ERR_NOT_NUMERIC and changes nothing. N concurrent increments of +1 from any
/// mix of threads and processes add exactly N. Makes the key the most recent.
#[no_mangle]
pub unsafe extern "C" fn cache_incr(
    c: *mut cache_t,
    key: *const u8,
    key_len: usize,
    delta: i64,
    ttl_seconds: f64,
    out: *mut i64,
) -> cache_status {
    exported!(handle c, bytes key[key_len], maybe_out out => {
        let sum = c.backend.incr(key, delta, Ttl::from_seconds(ttl_seconds)?)?;
        if let Some(out) = out {
            *out = sum;
        }
        Ok(CACHE_OK)
    })
}
