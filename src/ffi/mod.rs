//! The C ABI: the only module with `extern "C"` (unsafe elsewhere: see the crate's docs).
//!
//! Every exported function is declared with [`macros::exported!`]: its body runs through
//! [`boundary`], which catches panics (they become `CACHE_ERR_INTERNAL`), turns errors
//! into status codes and records their message, prefixed with the function's name, for
//! `cache_last_error`. Pointer arguments are checked by the helpers in [`args`], so a
//! NULL gets the same `CACHE_ERR_INVALID_ARG` and message everywhere. Out-parameters
//! are written only on success. The asynchronous functions ([`async_ops`]) queue the
//! same calls on the handle's queue in [`crate::worker`].
//!
//! # Safety
//!
//! The pointer rules of the C contract, which every exported function relies on:
//! - a `cache_t *` is NULL or a handle returned by an open function and not yet freed;
//! - a `(ptr, len)` pair is NULL with any length 0, or `len` readable bytes (writable
//!   for a caller's buffer) that stay valid for the call;
//! - an out-parameter is NULL or valid for writes of its type;
//! - a path is NULL or a NUL-terminated string;
//! - a callback is NULL or a function of its declared type, and its `user_data` may be
//!   used on a library thread;
//! - `cache_free` and `cache_buf_free` receive what the library handed out, once.
//!
//! These are written here once rather than on each function.
#![allow(clippy::missing_safety_doc)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod args;
mod async_ops;
mod boundary;
mod bulk;
mod bulk_async;
mod callback_gate;
mod compute;
mod conditional;
mod handle;
mod library;
mod macros;
mod ops;
mod types;
mod values;
mod walk;
mod wrapping;

pub use async_ops::*;
pub use bulk::*;
pub use bulk_async::*;
pub use compute::*;
pub use conditional::*;
pub use handle::cache_t;
pub use library::{cache_last_error, cache_status_str, cache_version};
pub use ops::*;
pub use types::{cache_buf, cache_stats, cache_status, CACHE_NO_TTL};
pub use walk::*;
pub use wrapping::*;
