//! The opaque handle behind `cache_t*`: the backend, shared with the async jobs that
//! run on it, and the handle's queue of those jobs.

use crate::backend::Backend;
use crate::worker::Queue;
use std::sync::Arc;

#[allow(non_camel_case_types)]
/// An open cache. Opaque to C; created by the cache_open_* functions and released by
/// cache_free.
pub struct cache_t {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) queue: Arc<Queue>,
}

impl cache_t {
    pub(crate) fn new(backend: impl Backend + 'static) -> Self {
        cache_t {
            backend: Arc::new(backend),
            queue: Queue::new(),
        }
    }
}
