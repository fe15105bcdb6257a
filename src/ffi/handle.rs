//! The opaque handle behind `cache_t*`: the backend, shared with the async jobs that
//! run on it, and the handle's queue of those jobs.

use super::types::cache_status::{self, CACHE_ERR_INTERNAL};
use crate::backend::Backend;
use crate::single_flight::SingleFlight;
use crate::worker::Queue;
use std::sync::Arc;

/// What every caller of one get_or_compute flight receives: the value and flags, None
/// for CACHE_NOT_FOUND, or a failure's status and message.
pub(crate) type ComputeOutcome = Result<Option<(Arc<[u8]>, u32)>, (cache_status, String)>;

/// The outcome waiters get when the computing thread unwound (a bug).
fn abandoned() -> ComputeOutcome {
    Err((
        CACHE_ERR_INTERNAL,
        "the thread computing this key stopped without an outcome".into(),
    ))
}

#[allow(non_camel_case_types)]
/// An open cache. Opaque to C; created by the cache_open_* functions and released by
/// cache_free.
pub struct cache_t {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) queue: Arc<Queue>,
    /// The get_or_compute calls in progress, shared with queued ones.
    pub(crate) flights: Arc<SingleFlight<ComputeOutcome>>,
}

impl cache_t {
    pub(crate) fn new(backend: impl Backend + 'static) -> Self {
        Self::from_arc(Arc::new(backend))
    }

    pub(crate) fn from_arc(backend: Arc<dyn Backend>) -> Self {
        cache_t {
            backend,
            queue: Queue::new(),
            flights: Arc::new(SingleFlight::new(abandoned)),
        }
    }
}
