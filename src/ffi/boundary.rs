//! The panic boundary every exported function goes through, and the per-thread record
//! of the last failure behind `cache_last_error`.

use super::macros::FunctionName;
use super::types::cache_status;
use crate::error::Error;
use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Why an exported call failed: a status and the message `cache_last_error` returns.
pub(crate) struct Failure {
    pub status: cache_status,
    pub message: String,
}

impl Failure {
    pub fn new(status: cache_status, message: impl Into<String>) -> Self {
        Failure {
            status,
            message: message.into(),
        }
    }

    pub fn invalid_arg(message: impl Into<String>) -> Self {
        Failure::new(cache_status::CACHE_ERR_INVALID_ARG, message)
    }
}

impl From<Error> for Failure {
    /// Out of line: it runs only when a call fails (see `args::refused`).
    #[cold]
    #[inline(never)]
    fn from(e: Error) -> Self {
        Failure {
            status: e.kind().into(),
            message: e.message().to_owned(),
        }
    }
}

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

pub(crate) fn set_last_error(message: &str) {
    LAST_ERROR.with(|e| {
        let mut e = e.borrow_mut();
        e.clear();
        e.push_str(message);
    });
}

pub(crate) fn with_last_error<R>(f: impl FnOnce(&str) -> R) -> R {
    LAST_ERROR.with(|e| f(&e.borrow()))
}

/// Runs the body of an exported function: a panic becomes `CACHE_ERR_INTERNAL`, a
/// failure its status; both leave their message for `cache_last_error`. Always inlined
/// into the exported function (it is generic over each one's body anyway): as a call of
/// its own, every status came back through memory (measured: more instructions a get).
#[inline(always)]
pub(crate) fn boundary(
    function: FunctionName,
    body: impl FnOnce() -> Result<cache_status, Failure>,
) -> cache_status {
    crate::sync::fork::install();
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(status)) => status,
        Ok(Err(failure)) => report_failure(function, failure),
        Err(panic) => report_panic(function, panic),
    }
}

/// Leaves a failure's message for `cache_last_error` and returns its status. Out of
/// line, so a call that succeeds carries none of it (see [`super::args::refused`]).
#[cold]
#[inline(never)]
fn report_failure(function: FunctionName, failure: Failure) -> cache_status {
    set_last_error(&format!("{function}: {}", failure.message));
    failure.status
}

/// Leaves a caught panic's message for `cache_last_error`: `CACHE_ERR_INTERNAL`.
#[cold]
#[inline(never)]
fn report_panic(function: FunctionName, panic: Box<dyn std::any::Any + Send>) -> cache_status {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    set_last_error(&format!("{function}: internal error (panic: {what})"));
    cache_status::CACHE_ERR_INTERNAL
}

/// The boundary for functions with no status to return: a panic is swallowed (and
/// recorded) rather than unwinding into C.
pub(crate) fn boundary_void(function: FunctionName, body: impl FnOnce()) {
    boundary(function, || {
        body();
        Ok(cache_status::CACHE_OK)
    });
}
