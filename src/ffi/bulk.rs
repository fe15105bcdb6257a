//! The bulk calls: `cache_get_many`, `cache_set_many`, `cache_delete_many`. The
//! persistent kinds run each as one transaction.

use super::boundary::Failure;
use super::handle::cache_t;
use super::macros::exported;
use super::types::cache_buf;
use super::types::cache_status::{self, *};
use crate::backend::EntryRef;
use crate::ttl::Ttl;

/// Borrowed bytes: `data` may be NULL only when `len` is 0.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct cache_slice {
    pub data: *const u8,
    pub len: usize,
}

/// One entry of cache_set_many.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct cache_entry {
    pub key: cache_slice,
    pub value: cache_slice,
    pub ttl_seconds: f64,
    pub flags: u32,
}

impl cache_slice {
    /// The bytes, checked; `what` names the slice in the error ("keys[3]").
    pub(super) fn bytes(&self, what: impl FnOnce() -> String) -> Result<&[u8], Failure> {
        if (self.data.is_null() && self.len != 0) || self.len > isize::MAX as usize {
            // The name is only built for the error (bulk calls check thousands of slices).
            // SAFETY: a NULL pointer is refused before anything is read.
            return unsafe { super::args::bytes(self.data, self.len, &what()) };
        }
        // SAFETY: the contract's rules for (ptr, len) pairs apply to a slice's fields.
        unsafe { super::args::bytes(self.data, self.len, "slice") }
    }
}

/// Every key of `keys`, checked before anything happens.
pub(super) fn key_list(keys: &[cache_slice]) -> Result<Vec<&[u8]>, Failure> {
    keys.iter()
        .enumerate()
        .map(|(i, k)| k.bytes(|| format!("keys[{i}].data")))
        .collect()
}

/// Looks up n keys (in one read transaction on the persistent kinds). values, statuses
/// (and flags, which may be NULL) are arrays of n. CACHE_OK for the call: statuses[i] is
/// CACHE_OK (values[i] holds a copy to free with cache_buf_free) or CACHE_NOT_FOUND
/// (values[i] = {NULL, 0}). Any other status: nothing was allocated or written.
/// n may be 0 (the arrays may then be NULL).
#[no_mangle]
pub unsafe extern "C" fn cache_get_many(
    c: *mut cache_t,
    keys: *const cache_slice,
    n: usize,
    values: *mut cache_buf,
    statuses: *mut cache_status,
    flags: *mut u32,
) -> cache_status {
    exported!(handle c, array keys[n], array_out values[n], array_out statuses[n],
              maybe_array_out flags[n] => {
        let (keys, mut flags) = (key_list(keys)?, flags);
        let mut found: Vec<Option<(Vec<u8>, u32)>> = Vec::new();
        found.try_reserve_exact(keys.len()).map_err(|_| crate::error::Error::no_memory(keys.len()))?;
        found.resize_with(keys.len(), || None);
        let mut copy_failed = None;
        c.backend.get_many(&keys, &mut |i, value, f| match crate::error::try_copy(value) {
            Ok(v) => found[i] = Some((v, f)),
            Err(e) => copy_failed = Some(e),
        })?;
        if let Some(e) = copy_failed {
            return Err(e.into());
        }
        for (i, item) in found.into_iter().enumerate() {
            let (status, (value, f)) = match item {
                Some(hit) => (CACHE_OK, hit),
                None => (CACHE_NOT_FOUND, (Vec::new(), 0)),
            };
            values[i] = cache_buf::from_vec(value);
            statuses[i] = status;
            if let Some(flags) = flags.as_deref_mut() {
                flags[i] = f;
            }
        }
        Ok(CACHE_OK)
    })
}

/// Stores n entries, all or nothing: on CACHE_OK every entry is stored (a key repeated:
/// the last one wins); on any error none is. The persistent kinds write them in one
/// transaction, so n sets cost about one commit. An entry that can never fit, or a batch
/// the cache cannot hold all at once (more bytes than its size limit or max_bytes, more
/// keys than max_keys; stored, it would evict itself): CACHE_ERR_TOO_LARGE; a NaN ttl:
/// CACHE_ERR_INVALID_ARG (nothing stored).
#[no_mangle]
pub unsafe extern "C" fn cache_set_many(
    c: *mut cache_t,
    entries: *const cache_entry,
    n: usize,
) -> cache_status {
    exported!(handle c, array entries[n] => {
        let entries: Vec<EntryRef> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                Ok(EntryRef {
                    key: e.key.bytes(|| format!("entries[{i}].key.data"))?,
                    value: e.value.bytes(|| format!("entries[{i}].value.data"))?,
                    ttl: Ttl::from_seconds(e.ttl_seconds)
                        .map_err(|err| Failure::invalid_arg(format!("entries[{i}]: {}", err.message())))?,
                    flags: e.flags,
                })
            })
            .collect::<Result<_, Failure>>()?;
        c.backend.set_many(&entries)?;
        Ok(CACHE_OK)
    })
}

/// Removes n keys (in one transaction on the persistent kinds); *deleted (may be NULL)
/// gets how many were live.
#[no_mangle]
pub unsafe extern "C" fn cache_delete_many(
    c: *mut cache_t,
    keys: *const cache_slice,
    n: usize,
    deleted: *mut u64,
) -> cache_status {
    exported!(handle c, array keys[n], maybe_out deleted => {
        let keys = key_list(keys)?;
        let count = c.backend.delete_many(&keys)?;
        if let Some(deleted) = deleted {
            *deleted = count;
        }
        Ok(CACHE_OK)
    })
}
