//! The C ABI: the only module with `unsafe` and `extern "C"`.
//!
//! Every exported function runs its body through [`boundary`], which catches panics
//! (they become `CACHE_ERR_INTERNAL`), turns errors into status codes and records their
//! message for `cache_last_error`. Pointer arguments are checked by the helpers in
//! [`args`], so a NULL gets the same `CACHE_ERR_INVALID_ARG` and message everywhere.
//! Out-parameters are written only on success. The asynchronous functions
//! ([`async_ops`]) queue the same calls on the handle's queue in [`crate::worker`].

mod args;
mod async_ops;
mod boundary;
pub(crate) mod fork;
mod handle;
mod library;
mod ops;
mod types;

pub use async_ops::*;
pub use handle::cache_t;
pub use library::{cache_last_error, cache_status_str, cache_version};
pub use ops::*;
pub use types::{cache_buf, cache_stats, cache_status, CACHE_NO_TTL};
