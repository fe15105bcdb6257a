//! The bulk calls' asynchronous forms: `cache_get_many_async`, `cache_set_many_async`,
//! `cache_delete_many_async`. Each copies its keys (and values) before returning and
//! queues the same one-transaction backend call as the synchronous form on the handle's
//! queue (see [`super::async_ops`]).

use super::async_ops::{cache_callback, submit_plain, Outcome};
use super::boundary::{boundary, Failure};
use super::bulk::{cache_entry, cache_slice, key_list};
use super::callback_gate::run_user_code;
use super::handle::cache_t;
use super::macros::{exported, function_name};
use super::types::cache_status::{self, *};
use crate::backend::EntryRef;
use crate::ttl::Ttl;
use std::ffi::c_void;

/// Called once per queued cache_get_many_async, on a library thread. With CACHE_OK,
/// `statuses`, `values` and `flags` are arrays of `n` (the keys' order): statuses[i] is
/// CACHE_OK (values[i] the value, flags[i] its flags word) or CACHE_NOT_FOUND (values[i]
/// = {NULL, 0}); the bytes are valid only until the callback returns. With any other
/// status, `n` is 0 and the arrays are NULL.
#[allow(non_camel_case_types)]
pub type cache_many_callback = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        status: cache_status,
        n: usize,
        statuses: *const cache_status,
        values: *const cache_slice,
        flags: *const u32,
    ),
>;

/// The caller's many-callback and its user data, carried to the worker thread.
struct ManyCallback {
    cb: cache_many_callback,
    user_data: *mut c_void,
}

// SAFETY: the contract hands user_data to a library thread; its owner guarantees it may
// be used there.
unsafe impl Send for ManyCallback {}

/// Copies of `keys` for a queued job.
fn owned_keys(keys: &[cache_slice]) -> Result<Vec<Vec<u8>>, Failure> {
    Ok(key_list(keys)?.into_iter().map(<[u8]>::to_vec).collect())
}

/// Queues a cache_get_many; `cb` gets every key's status, value and flags at once (see
/// cache_many_callback). Keys are copied before the call returns. CACHE_OK means queued;
/// any other status means not queued, and the callback never runs. `cb` may be NULL.
#[no_mangle]
pub unsafe extern "C" fn cache_get_many_async(
    c: *mut cache_t,
    keys: *const cache_slice,
    n: usize,
    cb: cache_many_callback,
    user_data: *mut c_void,
) -> cache_status {
    exported!(handle c, array keys[n] => {
        let keys = owned_keys(keys)?;
        let callback = ManyCallback { cb, user_data };
        let backend = c.backend.clone();
        let function = function_name!();
        let job = Box::new(move || {
            let callback = callback;
            let mut found: Vec<Option<(Vec<u8>, u32)>> = Vec::new();
            let status = boundary(function, || {
                let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
                found.resize_with(refs.len(), || None);
                let mut copy_failed = None;
                backend.get_many(&refs, &mut |i, value, f| match crate::error::try_copy(value) {
                    Ok(v) => found[i] = Some((v, f)),
                    Err(e) => copy_failed = Some(e),
                })?;
                match copy_failed {
                    Some(e) => Err(e.into()),
                    None => Ok(CACHE_OK),
                }
            });
            call_many(callback, status, &found);
        });
        c.queue
            .submit(job)
            .map_err(|_| Failure::new(CACHE_ERR_CLOSED, "the cache is closed"))?;
        Ok(CACHE_OK)
    })
}

/// Hands a get_many's outcome to the caller's many-callback.
fn call_many(callback: ManyCallback, status: cache_status, found: &[Option<(Vec<u8>, u32)>]) {
    let Some(cb) = callback.cb else { return };
    let user_data = callback.user_data;
    if status != CACHE_OK {
        run_user_code(|| {
            // SAFETY: the caller supplied a function of this signature; NULL arrays with n 0.
            unsafe {
                cb(
                    user_data,
                    status,
                    0,
                    std::ptr::null(),
                    std::ptr::null(),
                    std::ptr::null(),
                )
            }
        });
        return;
    }
    let statuses: Vec<cache_status> = found
        .iter()
        .map(|f| {
            if f.is_some() {
                CACHE_OK
            } else {
                CACHE_NOT_FOUND
            }
        })
        .collect();
    let values: Vec<cache_slice> = found
        .iter()
        .map(|f| match f {
            Some((v, _)) if !v.is_empty() => cache_slice {
                data: v.as_ptr(),
                len: v.len(),
            },
            _ => cache_slice {
                data: std::ptr::null(),
                len: 0,
            },
        })
        .collect();
    let flags: Vec<u32> = found
        .iter()
        .map(|f| f.as_ref().map_or(0, |(_, f)| *f))
        .collect();
    run_user_code(|| {
        // SAFETY: as above; the three arrays hold found.len() items and outlive the call.
        unsafe {
            cb(
                user_data,
                status,
                found.len(),
                statuses.as_ptr(),
                values.as_ptr(),
                flags.as_ptr(),
            )
        }
    });
}

/// Queues a cache_set_many (all or nothing, one transaction on the persistent kinds);
/// the callback gets what cache_set_many would return. Entries are copied and their
/// TTLs checked before the call returns (a NaN ttl: CACHE_ERR_INVALID_ARG, not queued).
#[no_mangle]
pub unsafe extern "C" fn cache_set_many_async(
    c: *mut cache_t,
    entries: *const cache_entry,
    n: usize,
    cb: cache_callback,
    user_data: *mut c_void,
) -> cache_status {
    exported!(handle c, array entries[n] => {
        let entries: Vec<(Vec<u8>, Vec<u8>, Ttl, u32)> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                Ok((
                    e.key.bytes(|| format!("entries[{i}].key.data"))?.to_vec(),
                    e.value.bytes(|| format!("entries[{i}].value.data"))?.to_vec(),
                    Ttl::from_seconds(e.ttl_seconds)
                        .map_err(|err| Failure::invalid_arg(format!("entries[{i}]: {}", err.message())))?,
                    e.flags,
                ))
            })
            .collect::<Result<_, Failure>>()?;
        submit_plain(c, function_name!(), cb, user_data, move |b| {
            let refs: Vec<EntryRef> = entries
                .iter()
                .map(|(key, value, ttl, flags)| EntryRef { key, value, ttl: *ttl, flags: *flags })
                .collect();
            b.set_many(&refs)?;
            Ok((CACHE_OK, None))
        })
    })
}

/// Queues a cache_delete_many (one transaction on the persistent kinds); the callback
/// gets CACHE_OK with how many keys were live, as decimal text ("3"), or the failure.
#[no_mangle]
pub unsafe extern "C" fn cache_delete_many_async(
    c: *mut cache_t,
    keys: *const cache_slice,
    n: usize,
    cb: cache_callback,
    user_data: *mut c_void,
) -> cache_status {
    exported!(handle c, array keys[n] => {
        let keys = owned_keys(keys)?;
        submit_plain(c, function_name!(), cb, user_data, move |b| -> Result<Outcome, Failure> {
            let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
            let count = b.delete_many(&refs)?;
            Ok((CACHE_OK, Some((count.to_string().into_bytes(), 0))))
        })
    })
}
