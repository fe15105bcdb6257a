//! The opaque handle behind `cache_t*`.

use crate::backend::Backend;

#[allow(non_camel_case_types)]
/// An open cache. Opaque to C; created by the cache_open_* functions and released by
/// cache_free.
pub struct cache_t {
    pub(crate) backend: Box<dyn Backend>,
}

impl cache_t {
    pub(crate) fn new(backend: impl Backend + 'static) -> Self {
        cache_t {
            backend: Box::new(backend),
        }
    }
}
