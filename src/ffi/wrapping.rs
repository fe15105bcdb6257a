//! The wrapping handles: an open call that takes other handles and returns a new one
//! whose backend is built over theirs (encryption, the tiered near cache). Also the two
//! sealing functions a binding needs to seal values itself.

use super::boundary::Failure;
use super::handle::cache_t;
use super::macros::exported;
use super::types::cache_buf;
use super::types::cache_status::{self, *};
use crate::backend::Backend;
use crate::encrypted::{EncryptedCache, SecretBox};
use crate::tiered::TieredCache;
use std::sync::Arc;

/// Takes the handle `raw` for a wrapping handle: its queued async operations finish
/// first, then its backend is returned and the handle itself freed. Nothing is taken
/// when this fails.
///
/// # Safety
/// `raw` is a live handle, and the caller gives up ownership of it when this returns
/// `Ok` (and holds no reference into it from then on).
unsafe fn take_backend(raw: *mut cache_t) -> Result<Arc<dyn Backend>, Failure> {
    // SAFETY: the caller's guarantees, passed on.
    let backend = unsafe { drain_backend(raw) }?;
    // SAFETY: as the caller guarantees, `raw` is live and handed over.
    unsafe { free_handle(raw) };
    Ok(backend)
}

/// Lets the queued async operations of `raw` finish and returns its backend; the handle
/// stays valid (and the caller's) until [`free_handle`].
///
/// # Safety
/// `raw` is a live handle.
unsafe fn drain_backend(raw: *mut cache_t) -> Result<Arc<dyn Backend>, Failure> {
    // SAFETY: the caller guarantees `raw` is live; the borrow ends with this function.
    let c = unsafe { &*raw };
    c.queue.close_and_drain().map_err(|_| {
        Failure::new(
            CACHE_ERR_BUSY,
            "called from inside a callback of the wrapped handle (or one it waits for): its queued operations cannot be waited for here",
        )
    })?;
    Ok(c.backend.clone())
}

/// Frees the handle `raw`, not the backend it shares.
///
/// # Safety
/// `raw` came from an open function, is live, and is handed over: no reference into it
/// is held or used after this.
unsafe fn free_handle(raw: *mut cache_t) {
    // SAFETY: `raw` came from Box::into_raw in an open function and is live.
    drop(unsafe { Box::from_raw(raw) });
}

/// Opens a handle whose values are sealed before they reach `inner` (any open handle):
/// XSalsa20-Poly1305 in NaCl's crypto_secretbox format as PyNaCl's SecretBox.encrypt
/// writes it (a random 24-byte nonce, the 16-byte tag, the ciphertext); keys, flags and
/// TTLs stay in the clear. `key_len` must be 32. On CACHE_OK the new handle owns `inner`
/// (the caller must neither use nor free it; freeing the new handle frees it); on any
/// other status the caller still owns it. A value that fails authentication is removed
/// and the call returns CACHE_ERR_CORRUPT ("authentication failed"). The key is zeroed
/// from memory when the handle is freed.
#[no_mangle]
pub unsafe extern "C" fn cache_open_encrypted(
    inner: *mut cache_t,
    key: *const u8,
    key_len: usize,
    out: *mut *mut cache_t,
) -> cache_status {
    let inner_raw = inner;
    exported!(handle inner, bytes key[key_len], out out => {
        let _ = inner; // checked to be a handle; taken below through `inner_raw`
        let secret = SecretBox::new(key)?;
        // SAFETY: `inner_raw` is the live handle just checked as `inner` (not used
        // again); the contract hands it over on success, and nothing after this fails.
        let backend = unsafe { take_backend(inner_raw) }?;
        let cache = EncryptedCache::from_parts(backend, secret);
        *out = Box::into_raw(Box::new(cache_t::new(cache)));
        Ok(CACHE_OK)
    })
}

/// Opens a tiered handle: `near` (usually a memory cache) in front of `far` (file,
/// sharded, Redis). A get is answered by near when it holds the key, else by far, whose
/// value is then copied into near for at most near_ttl_max seconds (never longer than
/// far keeps it), so a value another process or machine changes in far is seen within
/// near_ttl_max (> 0 and finite). Writes go to far first, then near; a failed far write
/// leaves near unchanged. len, keys and ttl are far's. On CACHE_OK the new handle owns
/// both (the caller must neither use nor free them; freeing the new handle frees them);
/// on any other status the caller still owns both. near and far must be two handles.
#[no_mangle]
pub unsafe extern "C" fn cache_open_tiered(
    near: *mut cache_t,
    far: *mut cache_t,
    near_ttl_max: f64,
    out: *mut *mut cache_t,
) -> cache_status {
    let (near_raw, far_raw) = (near, far);
    exported!(handle near, handle far, out out => {
        if std::ptr::eq(near, far) {
            return Err(Failure::invalid_arg("near and far are the same handle"));
        }
        for (c, name) in [(near, "near"), (far, "far")] {
            if c.queue.is_current() {
                return Err(Failure::new(
                    CACHE_ERR_BUSY,
                    format!("called from inside a callback of the {name} handle: its queued operations cannot be waited for here"),
                ));
            }
        }
        // Checked before anything is taken, so a failure leaves both with the caller.
        let check = TieredCache::new(near.backend.clone(), far.backend.clone(), near_ttl_max);
        drop(check?);
        // SAFETY: both are live handles just checked (and distinct). Neither is freed
        // until both are drained, so a failure leaves both valid and the caller's (the
        // first with its queue closed to new async work).
        let near_backend = unsafe { drain_backend(near_raw) }?;
        // SAFETY: as above.
        let far_backend = unsafe { drain_backend(far_raw) }?;
        let cache = TieredCache::new(near_backend, far_backend, near_ttl_max)?;
        // SAFETY: the contract hands both over on success, which is now certain; the
        // borrows `near` and `far` are not used after this.
        unsafe {
            free_handle(near_raw);
            free_handle(far_raw);
        }
        *out = Box::into_raw(Box::new(cache_t::new(cache)));
        Ok(CACHE_OK)
    })
}

/// Seals `len` bytes at `data` with the 32-byte `key` into `out` (to free with
/// cache_buf_free), in the format cache_open_encrypted stores: 40 bytes longer than the
/// input. For bindings that seal values themselves (the Python EncryptedCache over a
/// cache of its own). An addition to the contract.
#[no_mangle]
pub unsafe extern "C" fn cache_secretbox_seal(
    key: *const u8,
    key_len: usize,
    data: *const u8,
    len: usize,
    out: *mut cache_buf,
) -> cache_status {
    exported!(bytes key[key_len], bytes data[len], out out => {
        let sealed = SecretBox::new(key)?.seal(data)?;
        *out = cache_buf::from_vec(sealed);
        Ok(CACHE_OK)
    })
}

/// Opens `len` sealed bytes at `data` with the 32-byte `key` into `out` (to free with
/// cache_buf_free). CACHE_ERR_CORRUPT ("authentication failed") when they were changed,
/// sealed with another key, or are shorter than 40 bytes; `out` is then untouched.
#[no_mangle]
pub unsafe extern "C" fn cache_secretbox_open(
    key: *const u8,
    key_len: usize,
    data: *const u8,
    len: usize,
    out: *mut cache_buf,
) -> cache_status {
    exported!(bytes key[key_len], bytes data[len], out out => {
        let plain = SecretBox::new(key)?.open(data)?;
        *out = cache_buf::from_vec(plain.to_vec());
        Ok(CACHE_OK)
    })
}
