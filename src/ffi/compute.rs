//! `cache_get_or_compute` and its async form: a hit is returned as a get would; on a
//! miss one caller per handle and key runs the caller's compute function (single-flight,
//! [`crate::single_flight`]), stores what it put in the sink, and every caller waiting
//! for that key receives the same outcome.

use super::async_ops::{cache_flagged_callback, submit_flagged};
use super::boundary::Failure;
use super::callback_gate::run_user_code;
use super::handle::{cache_t, ComputeOutcome};
use super::macros::{exported, function_name};
use super::types::cache_buf;
use super::types::cache_status::{self, *};
use super::values::{copy_visited, into_buf};
use crate::backend::Backend;
use crate::single_flight::{Role, SingleFlight};
use crate::ttl::Ttl;
use std::ffi::c_void;
use std::sync::Arc;

/// Where a compute function puts its result: opaque to C, filled by cache_sink_put.
#[allow(non_camel_case_types)]
pub struct cache_sink {
    put: Option<Computed>,
    called: bool,
}

/// A compute function for cache_get_or_compute: gives the value of `key` with
/// cache_sink_put and returns CACHE_OK, or returns another status to store nothing
/// (that status then goes to every caller waiting for the key).
#[allow(non_camel_case_types)]
pub type cache_compute_fn = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        key: *const u8,
        key_len: usize,
        sink: *mut cache_sink,
    ) -> cache_status,
>;

/// The same function as Rust calls it: the status read as a plain int, since a C
/// function may return a value no `cache_status` variant has.
type CheckedComputeFn =
    unsafe extern "C" fn(*mut c_void, *const u8, usize, *mut cache_sink) -> cache_status;
type RawComputeFn = unsafe extern "C" fn(*mut c_void, *const u8, usize, *mut cache_sink) -> i32;

/// What a compute function put in its sink: value, TTL, flags.
type Computed = (Vec<u8>, Ttl, u32);

/// The compute function and its user data, carried to a worker for the async form.
#[derive(Clone, Copy)]
struct Compute {
    f: RawComputeFn,
    user_data: *mut c_void,
}

// SAFETY: the contract hands user_data to a library thread; its owner guarantees it may
// be used there.
unsafe impl Send for Compute {}

impl Compute {
    fn new(f: cache_compute_fn, user_data: *mut c_void) -> Result<Compute, Failure> {
        let f = f.ok_or_else(|| Failure::invalid_arg("compute is NULL"))?;
        // SAFETY: the two pointer types differ only in the return type, `cache_status`
        // (repr(i32)) against `i32`: the same ABI. Reading it as i32 keeps an out-of-range
        // status from a C function a value rather than undefined behaviour.
        let f = unsafe { std::mem::transmute::<CheckedComputeFn, RawComputeFn>(f) };
        Ok(Compute { f, user_data })
    }

    /// Runs the function on `key`: Some(value, ttl, flags) when it put one, None for
    /// CACHE_OK without a value, or its failure.
    fn run(self, key: &[u8]) -> Result<Option<Computed>, (cache_status, String)> {
        let mut sink = cache_sink {
            put: None,
            called: false,
        };
        let status = run_user_code(|| {
            // SAFETY: the caller supplied a function of this signature; key and sink are
            // valid for the call.
            unsafe { (self.f)(self.user_data, key.as_ptr(), key.len(), &mut sink) }
        });
        match status_from(status) {
            Some(CACHE_OK) => Ok(sink.put),
            Some(other) => Err((other, format!("the compute function returned {other:?}"))),
            None => Err((
                CACHE_ERR_INVALID_ARG,
                format!("the compute function returned {status}, which is no cache_status"),
            )),
        }
    }
}

/// The status of the value `raw`, if it is one.
fn status_from(raw: i32) -> Option<cache_status> {
    use cache_status::*;
    [
        CACHE_OK,
        CACHE_NOT_FOUND,
        CACHE_EXISTS,
        CACHE_ERR_INVALID_ARG,
        CACHE_ERR_CLOSED,
        CACHE_ERR_IO,
        CACHE_ERR_CORRUPT,
        CACHE_ERR_TOO_LARGE,
        CACHE_ERR_BUSY,
        CACHE_ERR_BUFFER_TOO_SMALL,
        CACHE_ERR_NO_MEMORY,
        CACHE_ERR_INTERNAL,
        CACHE_ERR_NOT_NUMERIC,
        CACHE_ERR_UNAVAILABLE,
    ]
    .into_iter()
    .find(|s| *s as i32 == raw)
}

fn failed(f: Failure) -> (cache_status, String) {
    (f.status, f.message)
}

/// A live value of `key`, copied.
fn lookup(backend: &dyn Backend, key: &[u8]) -> ComputeOutcome {
    let found = copy_visited(|sink| backend.get_to(key, sink)).map_err(failed)?;
    Ok(found.map(|(value, flags)| (Arc::from(value), flags)))
}

/// The miss path, for the sync and async forms (each first tries a plain get, which
/// copies a hit straight to the caller).
fn compute_on_miss(
    backend: &dyn Backend,
    flights: &SingleFlight<ComputeOutcome>,
    key: &[u8],
    compute: Compute,
) -> ComputeOutcome {
    let leader = match flights.join(key) {
        Role::Follower(outcome) => return outcome,
        Role::Reentered => {
            return Err((
                CACHE_ERR_BUSY,
                "the compute function of this key asked for the same key on the same handle".into(),
            ))
        }
        Role::Leader(leader) => leader,
    };
    // A flight that finished between the lookup and the join has stored its value.
    let outcome = match lookup(backend, key) {
        Ok(Some(found)) => Ok(Some(found)),
        Err(e) => Err(e),
        Ok(None) => match compute.run(key) {
            Ok(Some((value, ttl, flags))) => backend
                .set_flagged(key, &value, ttl, flags)
                .map(|()| Some((Arc::from(value), flags)))
                .map_err(|e| failed(e.into())),
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        },
    };
    leader.finish(outcome.clone());
    outcome
}

/// Gives a compute function's result: a copy of `value`, to be stored with ttl_seconds
/// and flags (as for cache_set_flagged). Call it at most once per compute; a second call
/// gives CACHE_ERR_INVALID_ARG and changes nothing.
#[no_mangle]
pub unsafe extern "C" fn cache_sink_put(
    sink: *mut cache_sink,
    value: *const u8,
    value_len: usize,
    ttl_seconds: f64,
    flags: u32,
) -> cache_status {
    exported!(out sink, bytes value[value_len] => {
        if sink.called {
            return Err(Failure::invalid_arg("called twice for one compute"));
        }
        sink.called = true;
        let ttl = Ttl::from_seconds(ttl_seconds)?;
        sink.put = Some((crate::error::try_copy(value)?, ttl, flags));
        Ok(CACHE_OK)
    })
}

/// Returns the value of `key`, computing it on a miss. A hit is returned as by
/// cache_get_flagged and `compute` is not called. On a miss, of all callers asking this
/// handle for the key at once, exactly one runs `compute` on its own thread; it stores
/// the value put with cache_sink_put (with that TTL and flags) and every caller gets it
/// with CACHE_OK. A compute returning another status, or CACHE_OK without a value
/// (CACHE_NOT_FOUND), stores nothing and that status goes to every caller. A compute
/// calling cache_get_or_compute for its own key on the same handle gets CACHE_ERR_BUSY.
/// `out` is freed with cache_buf_free; flags_out may be NULL.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn cache_get_or_compute(
    c: *mut cache_t,
    key: *const u8,
    key_len: usize,
    compute: cache_compute_fn,
    user_data: *mut c_void,
    out: *mut cache_buf,
    flags_out: *mut u32,
) -> cache_status {
    exported!(handle c, bytes key[key_len], out out, maybe_out flags_out => {
        let compute = Compute::new(compute, user_data)?;
        // A hit costs what a get costs: one copy, into the caller's buffer.
        let mut hit_flags = 0;
        if into_buf(out, Some(&mut hit_flags), |sink| c.backend.get_to(key, sink))? == CACHE_OK {
            if let Some(f) = flags_out {
                *f = hit_flags;
            }
            return Ok(CACHE_OK);
        }
        match compute_on_miss(&*c.backend, &c.flights, key, compute) {
            Ok(Some((value, flags))) => {
                *out = cache_buf::from_vec(crate::error::try_copy(&value)?);
                if let Some(f) = flags_out {
                    *f = flags;
                }
                Ok(CACHE_OK)
            }
            Ok(None) => {
                *out = cache_buf::EMPTY;
                Ok(CACHE_NOT_FOUND)
            }
            Err((status, message)) => Err(Failure::new(status, message)),
        }
    })
}

/// Queues a cache_get_or_compute; `compute` runs on a worker (with compute_user_data),
/// and `cb` gets the outcome with the value and flags, in the handle's FIFO order.
/// CACHE_OK means queued; any other status means not queued and nothing is called.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn cache_get_or_compute_async(
    c: *mut cache_t,
    key: *const u8,
    key_len: usize,
    compute: cache_compute_fn,
    compute_user_data: *mut c_void,
    cb: cache_flagged_callback,
    user_data: *mut c_void,
) -> cache_status {
    exported!(handle c, owned key[key_len] => {
        let compute = Compute::new(compute, compute_user_data)?;
        let flights = c.flights.clone();
        submit_flagged(c, function_name!(), cb, user_data, move |backend| {
            if let Some(hit) = lookup(backend, &key).map_err(|(s, m)| Failure::new(s, m))? {
                return Ok((CACHE_OK, Some((hit.0.to_vec(), hit.1))));
            }
            match compute_on_miss(backend, &flights, &key, compute) {
                Ok(Some((value, flags))) => Ok((CACHE_OK, Some((value.to_vec(), flags)))),
                Ok(None) => Ok((CACHE_NOT_FOUND, None)),
                Err((status, message)) => Err(Failure::new(status, message)),
            }
        })
    })
}
