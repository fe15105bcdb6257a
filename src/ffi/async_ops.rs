//! The asynchronous functions: each copies its arguments, queues a job on the handle's
//! queue (see [`crate::worker`]) and returns. The job runs the same backend call as the
//! synchronous function, through the same [`boundary`], and hands the outcome to the
//! caller's callback on the worker thread. A failed job also leaves its message for
//! `cache_last_error` on that thread, so a callback can ask for the detail.

use super::boundary::{boundary, Failure};
use super::callback_gate::run_user_code;
use super::handle::cache_t;
use super::macros::{exported, function_name, FunctionName};
use super::types::cache_status::{self, *};
use super::values::{copy_visited, found};
use crate::backend::Backend;
use crate::error::Result;
use crate::sink::Sink;
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
    fn plain(cb: cache_callback, user_data: *mut c_void) -> Self {
        Callback {
            cb: CallbackFn::Plain(cb),
            user_data,
        }
    }

    fn flagged(cb: cache_flagged_callback, user_data: *mut c_void) -> Self {
        Callback {
            cb: CallbackFn::Flagged(cb),
            user_data,
        }
    }

    /// Calls back with `value` (NULL/0 when empty, as for operations without a value).
    fn call(self, status: cache_status, value: &[u8], flags: u32) {
        let ptr = if value.is_empty() {
            std::ptr::null()
        } else {
            value.as_ptr()
        };
        let len = value.len();
        let user_data = self.user_data;
        match self.cb {
            CallbackFn::Plain(Some(cb)) => run_user_code(|| {
                // SAFETY: the caller supplied a function of this signature.
                unsafe { cb(user_data, status, ptr, len) }
            }),
            CallbackFn::Flagged(Some(cb)) => run_user_code(|| {
                // SAFETY: as above.
                unsafe { cb(user_data, status, ptr, len, flags) }
            }),
            CallbackFn::Plain(None) | CallbackFn::Flagged(None) => {}
        }
    }
}

/// What a job computes: the status, and for get and pop the value and its flags.
pub(crate) type Outcome = (cache_status, Option<(Vec<u8>, u32)>);

/// Queues `op` on the handle `c`; the callback gets its outcome, and a failure's message
/// is recorded under `function`. Refused (and never called back) when the handle is closed.
fn submit(
    c: &cache_t,
    function: FunctionName,
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
fn value_outcome(call: impl FnOnce(&mut dyn Sink) -> Result<bool>) -> Result<Outcome, Failure> {
    Ok(match copy_visited(call)? {
        Some(found) => (CACHE_OK, Some(found)),
        None => (CACHE_NOT_FOUND, None),
    })
}

/// An operation without a value to hand back: CACHE_OK once it has run.
fn done(result: Result<()>) -> Result<Outcome, Failure> {
    result?;
    Ok((CACHE_OK, None))
}

/// Queues `op` for a caller who gave a plain callback (for jobs defined elsewhere).
pub(crate) fn submit_plain(
    c: &cache_t,
    function: FunctionName,
    cb: cache_callback,
    user_data: *mut c_void,
    op: impl FnOnce(&dyn Backend) -> Result<Outcome, Failure> + Send + 'static,
) -> Result<cache_status, Failure> {
    submit(c, function, Callback::plain(cb, user_data), op)
}

/// Queues `op` for a caller who gave a flagged callback (for jobs defined elsewhere).
pub(crate) fn submit_flagged(
    c: &cache_t,
    function: FunctionName,
    cb: cache_flagged_callback,
    user_data: *mut c_void,
    op: impl FnOnce(&dyn Backend) -> Result<Outcome, Failure> + Send + 'static,
) -> Result<cache_status, Failure> {
    submit(c, function, Callback::flagged(cb, user_data), op)
}

/// The body of the set functions: checks the TTL, then queues the set of the copies.
fn queue_set(
    c: &cache_t,
    function: FunctionName,
    (key, value): (Vec<u8>, Vec<u8>),
    ttl_seconds: f64,
    flags: u32,
    callback: Callback,
) -> Result<cache_status, Failure> {
    let ttl = Ttl::from_seconds(ttl_seconds)?;
    submit(c, function, callback, move |b| {
        done(b.set_flagged(&key, &value, ttl, flags))
    })
}

/// Queues a set; the callback gets what cache_set would return. Key and value are
/// copied before the call returns. CACHE_OK means queued; any other status means not
/// queued, and the callback never runs. `cb` may be NULL.
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
    exported!(handle c, owned key[key_len], owned value[value_len] => {
        let callback = Callback::plain(cb, user_data);
        queue_set(c, function_name!(), (key, value), ttl_seconds, 0, callback)
    })
}

/// As cache_set_async, storing `flags` with the entry (see cache_set_flagged).
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
    exported!(handle c, owned key[key_len], owned value[value_len] => {
        let callback = Callback::plain(cb, user_data);
        queue_set(c, function_name!(), (key, value), ttl_seconds, flags, callback)
    })
}

/// Queues a get; the callback gets CACHE_OK with the value, or CACHE_NOT_FOUND.
#[no_mangle]
pub unsafe extern "C" fn cache_get_async(
    c: *mut cache_t,
    key: *const u8,
    key_len: usize,
    cb: cache_callback,
    user_data: *mut c_void,
) -> cache_status {
    exported!(handle c, owned key[key_len] => {
        submit(c, function_name!(), Callback::plain(cb, user_data), move |b| {
            value_outcome(|sink| b.get_to(&key, sink))
        })
    })
}

/// As cache_get_async; the callback also gets the entry's flags word.
#[no_mangle]
pub unsafe extern "C" fn cache_get_flagged_async(
    c: *mut cache_t,
    key: *const u8,
    key_len: usize,
    cb: cache_flagged_callback,
    user_data: *mut c_void,
) -> cache_status {
    exported!(handle c, owned key[key_len] => {
        submit(c, function_name!(), Callback::flagged(cb, user_data), move |b| {
            value_outcome(|sink| b.get_to(&key, sink))
        })
    })
}

/// Queues a pop; the callback gets CACHE_OK with the value (exactly one of any number of
/// concurrent pops of a key does), or CACHE_NOT_FOUND.
#[no_mangle]
pub unsafe extern "C" fn cache_pop_async(
    c: *mut cache_t,
    key: *const u8,
    key_len: usize,
    cb: cache_callback,
    user_data: *mut c_void,
) -> cache_status {
    exported!(handle c, owned key[key_len] => {
        submit(c, function_name!(), Callback::plain(cb, user_data), move |b| {
            value_outcome(|sink| b.pop_to(&key, sink))
        })
    })
}

/// As cache_pop_async; the callback also gets the entry's flags word.
#[no_mangle]
pub unsafe extern "C" fn cache_pop_flagged_async(
    c: *mut cache_t,
    key: *const u8,
    key_len: usize,
    cb: cache_flagged_callback,
    user_data: *mut c_void,
) -> cache_status {
    exported!(handle c, owned key[key_len] => {
        submit(c, function_name!(), Callback::flagged(cb, user_data), move |b| {
            value_outcome(|sink| b.pop_to(&key, sink))
        })
    })
}

/// Queues a delete; the callback gets CACHE_OK whether or not the key was present.
#[no_mangle]
pub unsafe extern "C" fn cache_delete_async(
    c: *mut cache_t,
    key: *const u8,
    key_len: usize,
    cb: cache_callback,
    user_data: *mut c_void,
) -> cache_status {
    exported!(handle c, owned key[key_len] => {
        submit(c, function_name!(), Callback::plain(cb, user_data), move |b| {
            done(b.delete(&key))
        })
    })
}

/// Queues an add (as cache_add_flagged); the callback gets CACHE_OK (stored) or
/// CACHE_EXISTS (a live entry holds the key; nothing changed). Key and value are copied
/// before the call returns; a bad TTL is refused at once.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn cache_add_flagged_async(
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
    exported!(handle c, owned key[key_len], owned value[value_len] => {
        let ttl = Ttl::from_seconds(ttl_seconds)?;
        submit(c, function_name!(), Callback::plain(cb, user_data), move |b| {
            let stored = b.add_flagged(&key, &value, ttl, flags)?;
            Ok((if stored { CACHE_OK } else { CACHE_EXISTS }, None))
        })
    })
}

/// Queues a has; the callback gets CACHE_OK (a live entry holds the key) or
/// CACHE_NOT_FOUND.
#[no_mangle]
pub unsafe extern "C" fn cache_has_async(
    c: *mut cache_t,
    key: *const u8,
    key_len: usize,
    cb: cache_callback,
    user_data: *mut c_void,
) -> cache_status {
    exported!(handle c, owned key[key_len] => {
        submit(c, function_name!(), Callback::plain(cb, user_data), move |b| {
            Ok((found(b.has(&key)?), None))
        })
    })
}

/// Queues a touch (as cache_touch); the callback gets CACHE_OK or CACHE_NOT_FOUND. A
/// bad TTL is refused at once.
#[no_mangle]
pub unsafe extern "C" fn cache_touch_async(
    c: *mut cache_t,
    key: *const u8,
    key_len: usize,
    ttl_seconds: f64,
    cb: cache_callback,
    user_data: *mut c_void,
) -> cache_status {
    exported!(handle c, owned key[key_len] => {
        let ttl = Ttl::from_seconds(ttl_seconds)?;
        submit(c, function_name!(), Callback::plain(cb, user_data), move |b| {
            Ok((found(b.touch(&key, ttl)?), None))
        })
    })
}

/// Queues an increment (as cache_incr); the callback gets CACHE_OK with the new value
/// as the ASCII decimal text stored ("-12"), or CACHE_ERR_NOT_NUMERIC. A bad TTL is
/// refused at once.
#[no_mangle]
pub unsafe extern "C" fn cache_incr_async(
    c: *mut cache_t,
    key: *const u8,
    key_len: usize,
    delta: i64,
    ttl_seconds: f64,
    cb: cache_callback,
    user_data: *mut c_void,
) -> cache_status {
    exported!(handle c, owned key[key_len] => {
        let ttl = Ttl::from_seconds(ttl_seconds)?;
        submit(c, function_name!(), Callback::plain(cb, user_data), move |b| {
            let sum = b.incr(&key, delta, ttl)?;
            Ok((CACHE_OK, Some((sum.to_string().into_bytes(), 0))))
        })
    })
}

/// Queues a clear; the callback gets what cache_clear would return.
#[no_mangle]
pub unsafe extern "C" fn cache_clear_async(
    c: *mut cache_t,
    cb: cache_callback,
    user_data: *mut c_void,
) -> cache_status {
    exported!(handle c => {
        submit(c, function_name!(), Callback::plain(cb, user_data), |b| done(b.clear()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Stats, Visit};
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
        fn update(&self, _: &[u8], _: &mut crate::backend::Decide) -> Result<()> {
            Ok(())
        }
        fn ttl(&self, _: &[u8]) -> Result<Option<crate::backend::Remaining>> {
            Ok(None)
        }
        fn key_page(&self, _: &[u8], _: Option<&[u8]>) -> Result<crate::backend::KeyPage> {
            Ok(crate::backend::KeyPage {
                keys: Vec::new(),
                next: None,
            })
        }
        fn purge_expired(&self) -> Result<u64> {
            Ok(0)
        }
    }

    unsafe extern "C" fn report(
        user_data: *mut c_void,
        status: cache_status,
        _: *const u8,
        _: usize,
    ) {
        // SAFETY: the test passes a pointer to a Sender that outlives both jobs.
        let tx = unsafe { &*(user_data as *const mpsc::Sender<(cache_status, String)>) };
        let mut msg = [0 as std::ffi::c_char; 256];
        // SAFETY: `msg` is a writable buffer of its length.
        unsafe { crate::ffi::cache_last_error(msg.as_mut_ptr(), msg.len()) };
        // SAFETY: cache_last_error NUL-terminated it.
        let msg = unsafe { std::ffi::CStr::from_ptr(msg.as_ptr()) };
        tx.send((status, msg.to_string_lossy().into_owned()))
            .unwrap();
    }

    #[test]
    fn a_panic_in_a_backend_reaches_the_callback_and_the_worker_survives() {
        let c = Box::into_raw(Box::new(cache_t::new(Panicking)));
        let (tx, rx) = mpsc::channel::<(cache_status, String)>();
        let user = &tx as *const _ as *mut c_void;
        // SAFETY: a live handle, a 1-byte key, a callback of the declared type.
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
        // SAFETY: the handle made above, freed once.
        unsafe { crate::ffi::cache_free(c) };
    }
}
