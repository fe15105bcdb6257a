//! The asynchronous functions: each copies its arguments, queues a job on the handle's
//! queue (see [`crate::worker`]) and returns. The job runs the same backend call as the
//! synchronous function, through the same [`boundary`], and hands the outcome to the
//! caller's callback on the worker thread. A failed job also leaves its message for
//! `cache_last_error` on that thread, so a callback can ask for the detail.

use super::args;
use super::boundary::{boundary, Failure};
use super::handle::cache_t;
use super::types::cache_status::{self, *};
use crate::backend::{Backend, Visit};
use crate::error::{try_copy, Result};
use crate::ttl::Ttl;
use std::ffi::c_void;

/// Called once per queued operation, on a library thread, with what the synchronous
/// call would have returned. `value`/`value_len` carry the value for get and pop (NULL/0
/// otherwise) and are valid only until the callback returns.
#[allow(non_camel_case_types)]
pub type cache_callback = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        status: cache_status,
        value: *const u8,
        value_len: usize,
    ),
>;

/// As cache_callback, plus the flags word the entry was stored with (0 when there is
/// no value). Used by the `_flagged` functions.
#[allow(non_camel_case_types)]
pub type cache_flagged_callback = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        status: cache_status,
        value: *const u8,
        value_len: usize,
        flags: u32,
    ),
>;

/// Which of the two callback signatures the caller gave.
#[derive(Clone, Copy)]
enum CallbackFn {
    Plain(cache_callback),
    Flagged(cache_flagged_callback),
}

/// The caller's callback and its user data, carried to the worker thread.
struct Callback {
    cb: CallbackFn,
    user_data: *mut c_void,
}

// SAFETY: the contract hands user_data to a library thread; its owner guarantees it may
// be used there.
unsafe impl Send for Callback {}

impl Callback {
    /// Calls back with `value` (NULL/0 when empty, as for operations without a value).
    fn call(self, status: cache_status, value: &[u8], flags: u32) {
        let ptr = if value.is_empty() {
            std::ptr::null()
        } else {
            value.as_ptr()
        };
        let len = value.len();
        match self.cb {
            // SAFETY: the caller supplied a function of this signature.
            CallbackFn::Plain(Some(cb)) => unsafe { cb(self.user_data, status, ptr, len) },
            // SAFETY: as above.
            CallbackFn::Flagged(Some(cb)) => unsafe { cb(self.user_data, status, ptr, len, flags) },
            CallbackFn::Plain(None) | CallbackFn::Flagged(None) => {}
        }
    }
}

/// What a job computes: the status, and for get and pop the value and its flags.
type Outcome = (cache_status, Option<(Vec<u8>, u32)>);

/// Queues `op` on the handle `c`; the callback gets its outcome. Refused (and never
/// called back) when the handle is closed.
fn submit(
    c: &cache_t,
    function: &'static str,
    callback: Callback,
    op: impl FnOnce(&dyn Backend) -> Result<Outcome, Failure> + Send + 'static,
) -> Result<cache_status, Failure> {
    let backend = c.backend.clone();
    let job = Box::new(move || {
        // A plain (always initialised) Vec rather than an Option, which optimised code
        // may inspect branch-free and so trip memory checkers.
        let (mut outcome, mut flags) = (Vec::new(), 0);
        let status = boundary(function, || {
            let (status, value) = op(&*backend)?;
            (outcome, flags) = value.unwrap_or_default();
            Ok(status)
        });
        callback.call(status, &outcome, flags);
    });
    c.queue
        .submit(job)
        .map_err(|_| Failure::new(CACHE_ERR_CLOSED, "the cache is closed"))?;
    Ok(CACHE_OK)
}

/// A get-like call's outcome: OK with a copy of the value and its flags, or NOT_FOUND.
fn value_outcome(call: impl FnOnce(&mut Visit) -> Result<bool>) -> Result<Outcome, Failure> {
    let mut copied = None;
    if !call(&mut |value, flags| copied = Some(try_copy(value).map(|v| (v, flags))))? {
        return Ok((CACHE_NOT_FOUND, None));
    }
    let found = copied.ok_or_else(|| Failure::new(CACHE_ERR_INTERNAL, "no value visited"))??;
    Ok((CACHE_OK, Some(found)))
}

/// A get-like operation on a key, for the `_async` and `_flagged_async` functions.
fn get_outcome(b: &dyn Backend, key: &[u8]) -> Result<Outcome, Failure> {
    value_outcome(|visit| b.get_flagged(key, visit))
}

/// A pop-like operation on a key, as `get_outcome`.
fn pop_outcome(b: &dyn Backend, key: &[u8]) -> Result<Outcome, Failure> {
    value_outcome(|visit| b.pop_flagged(key, visit))
}

/// The body of the async functions that take a key and nothing else: checks and copies
/// the arguments, then queues `op` on the key.
///
/// # Safety
/// As for the exported functions: `c` NULL or a live handle; `key` NULL or `key_len`
/// readable bytes.
unsafe fn submit_keyed(
    function: &'static str,
    c: *mut cache_t,
    key: *const u8,
    key_len: usize,
    cb: CallbackFn,
    user_data: *mut c_void,
    op: fn(&dyn Backend, &[u8]) -> Result<Outcome, Failure>,
) -> cache_status {
    boundary(function, || {
        let handle = unsafe { args::handle(c) }?;
        let key = try_copy(unsafe { args::bytes(key, key_len, "key") }?)?;
        submit(handle, function, Callback { cb, user_data }, move |b| {
            op(b, &key)
        })
    })
}

/// Queues a set; the callback gets what cache_set would return. Key and value are
/// copied before the call returns. CACHE_OK means queued; any other status means not
/// queued, and the callback never runs. `cb` may be NULL.
///
/// # Safety
/// `c` NULL or a live handle; `key`/`value` NULL or `key_len`/`value_len` readable bytes;
/// `cb` NULL or a function of the cache_callback signature.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn cache_set_async(
    c: *mut cache_t,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    ttl_seconds: f64,
    cb: cache_callback,
    user_data: *mut c_void,
) -> cache_status {
    let entry = (key, key_len, value, value_len);
    let callback = Callback {
        cb: CallbackFn::Plain(cb),
        user_data,
    };
    unsafe { submit_set("cache_set_async", c, entry, ttl_seconds, 0, callback) }
}

/// The body of the set functions: checks and copies the arguments, then queues the set.
///
/// # Safety
/// As for cache_set_async; `entry` is (key, key_len, value, value_len).
unsafe fn submit_set(
    function: &'static str,
    c: *mut cache_t,
    entry: (*const u8, usize, *const u8, usize),
    ttl_seconds: f64,
    flags: u32,
    callback: Callback,
) -> cache_status {
    let (key, key_len, value, value_len) = entry;
    boundary(function, || {
        let handle = unsafe { args::handle(c) }?;
        let key = try_copy(unsafe { args::bytes(key, key_len, "key") }?)?;
        let value = try_copy(unsafe { args::bytes(value, value_len, "value") }?)?;
        let ttl = Ttl::from_seconds(ttl_seconds)?;
        submit(handle, function, callback, move |b| {
            b.set_flagged(&key, &value, ttl, flags)?;
            Ok((CACHE_OK, None))
        })
    })
}

/// As cache_set_async, storing `flags` with the entry (see cache_set_flagged).
///
/// # Safety
/// As for cache_set_async.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn cache_set_flagged_async(
    c: *mut cache_t,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    ttl_seconds: f64,
    flags: u32,
    cb: cache_callback,
    user_data: *mut c_void,
) -> cache_status {
    let entry = (key, key_len, value, value_len);
    let callback = Callback {
        cb: CallbackFn::Plain(cb),
        user_data,
    };
    unsafe {
        submit_set(
            "cache_set_flagged_async",
            c,
            entry,
            ttl_seconds,
            flags,
            callback,
        )
    }
}

/// Queues a get; the callback gets CACHE_OK with the value, or CACHE_NOT_FOUND.
///
/// # Safety
/// As for cache_set_async.
#[no_mangle]
pub unsafe extern "C" fn cache_get_async(
    c: *mut cache_t,
    key: *const u8,
    key_len: usize,
    cb: cache_callback,
    user_data: *mut c_void,
) -> cache_status {
    unsafe {
        submit_keyed(
            "cache_get_async",
            c,
            key,
            key_len,
            CallbackFn::Plain(cb),
            user_data,
            get_outcome,
        )
    }
}

/// As cache_get_async; the callback also gets the entry's flags word.
///
/// # Safety
/// As for cache_set_async; `cb` NULL or a function of the cache_flagged_callback signature.
#[no_mangle]
pub unsafe extern "C" fn cache_get_flagged_async(
    c: *mut cache_t,
    key: *const u8,
    key_len: usize,
    cb: cache_flagged_callback,
    user_data: *mut c_void,
) -> cache_status {
    unsafe {
        submit_keyed(
            "cache_get_flagged_async",
            c,
            key,
            key_len,
            CallbackFn::Flagged(cb),
            user_data,
            get_outcome,
        )
    }
}

/// Queues a pop; the callback gets CACHE_OK with the value (exactly one of any number of
/// concurrent pops of a key does), or CACHE_NOT_FOUND.
///
/// # Safety
/// As for cache_set_async.
#[no_mangle]
pub unsafe extern "C" fn cache_pop_async(
    c: *mut cache_t,
    key: *const u8,
    key_len: usize,
    cb: cache_callback,
    user_data: *mut c_void,
) -> cache_status {
    unsafe {
        submit_keyed(
            "cache_pop_async",
            c,
            key,
            key_len,
            CallbackFn::Plain(cb),
            user_data,
            pop_outcome,
        )
    }
}

/// As cache_pop_async; the callback also gets the entry's flags word.
///
/// # Safety
/// As for cache_get_flagged_async.
#[no_mangle]
pub unsafe extern "C" fn cache_pop_flagged_async(
    c: *mut cache_t,
    key: *const u8,
    key_len: usize,
    cb: cache_flagged_callback,
    user_data: *mut c_void,
) -> cache_status {
    unsafe {
        submit_keyed(
            "cache_pop_flagged_async",
            c,
            key,
            key_len,
            CallbackFn::Flagged(cb),
            user_data,
            pop_outcome,
        )
    }
}

/// Queues a delete; the callback gets CACHE_OK whether or not the key was present.
///
/// # Safety
/// As for cache_set_async.
#[no_mangle]
pub unsafe extern "C" fn cache_delete_async(
    c: *mut cache_t,
    key: *const u8,
    key_len: usize,
    cb: cache_callback,
    user_data: *mut c_void,
) -> cache_status {
    unsafe {
        submit_keyed(
            "cache_delete_async",
            c,
            key,
            key_len,
            CallbackFn::Plain(cb),
            user_data,
            |b, key| {
                b.delete(key)?;
                Ok((CACHE_OK, None))
            },
        )
    }
}

/// Queues a clear; the callback gets what cache_clear would return.
///
/// # Safety
/// `c` NULL or a live handle; `cb` NULL or a function of the cache_callback signature.
#[no_mangle]
pub unsafe extern "C" fn cache_clear_async(
    c: *mut cache_t,
    cb: cache_callback,
    user_data: *mut c_void,
) -> cache_status {
    boundary("cache_clear_async", || {
        let handle = unsafe { args::handle(c) }?;
        let callback = Callback {
            cb: CallbackFn::Plain(cb),
            user_data,
        };
        submit(handle, "cache_clear_async", callback, move |b| {
            b.clear()?;
            Ok((CACHE_OK, None))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Stats;
    use crate::ttl::Ttl;
    use std::sync::mpsc;

    /// A backend whose get panics: the panic must reach the callback as INTERNAL.
    struct Panicking;

    impl Backend for Panicking {
        fn set_flagged(&self, _: &[u8], _: &[u8], _: Ttl, _: u32) -> Result<()> {
            Ok(())
        }
        fn get_flagged(&self, _: &[u8], _: &mut Visit) -> Result<bool> {
            panic!("backend bug")
        }
        fn pop_flagged(&self, _: &[u8], _: &mut Visit) -> Result<bool> {
            Ok(false)
        }
        fn has(&self, _: &[u8]) -> Result<bool> {
            Ok(false)
        }
        fn delete(&self, _: &[u8]) -> Result<()> {
            Ok(())
        }
        fn clear(&self) -> Result<()> {
            Ok(())
        }
        fn len(&self) -> Result<u64> {
            Ok(0)
        }
        fn stats(&self) -> Result<Stats> {
            Ok(Stats::default())
        }
        fn save(&self) -> Result<()> {
            Ok(())
        }
        fn close(&self) -> Result<()> {
            Ok(())
        }
    }

    unsafe extern "C" fn report(
        user_data: *mut c_void,
        status: cache_status,
        _: *const u8,
        _: usize,
    ) {
        let tx = unsafe { &*(user_data as *const mpsc::Sender<(cache_status, String)>) };
        let mut msg = [0 as std::ffi::c_char; 256];
        unsafe { crate::ffi::cache_last_error(msg.as_mut_ptr(), msg.len()) };
        let msg = unsafe { std::ffi::CStr::from_ptr(msg.as_ptr()) };
        tx.send((status, msg.to_string_lossy().into_owned()))
            .unwrap();
    }

    #[test]
    fn a_panic_in_a_backend_reaches_the_callback_and_the_worker_survives() {
        let c = Box::into_raw(Box::new(cache_t::new(Panicking)));
        let (tx, rx) = mpsc::channel::<(cache_status, String)>();
        let user = &tx as *const _ as *mut c_void;
        unsafe {
            assert_eq!(
                cache_get_async(c, b"k".as_ptr(), 1, Some(report), user),
                CACHE_OK
            );
            assert_eq!(
                cache_delete_async(c, b"k".as_ptr(), 1, Some(report), user),
                CACHE_OK
            );
        }
        let (status, msg) = rx.recv().unwrap();
        assert_eq!(status, CACHE_ERR_INTERNAL);
        assert!(
            msg.contains("cache_get_async") && msg.contains("backend bug"),
            "{msg}"
        );
        assert_eq!(rx.recv().unwrap().0, CACHE_OK, "the next job still runs");
        unsafe { crate::ffi::cache_free(c) };
    }
}
