//! Opening, closing and the operations of the contract, each a thin translation of a
//! [`Backend`](crate::Backend) call.

use super::args;
use super::boundary::{boundary, boundary_void, Failure};
use super::handle::cache_t;
use super::types::cache_status::{self, *};
use super::types::{cache_buf, cache_stats};
use crate::backend::{Backend, Visit};
use crate::error::{try_copy, Result};
use crate::file::FileCache;
use crate::folder::FolderCache;
use crate::memory::MemoryCache;
use crate::sharded::ShardedCache;
use crate::ttl::Ttl;

impl cache_buf {
    const EMPTY: cache_buf = cache_buf {
        data: std::ptr::null_mut(),
        len: 0,
    };

    /// Hands `bytes` to C; released by cache_buf_free.
    fn from_vec(bytes: Vec<u8>) -> cache_buf {
        if bytes.is_empty() {
            return cache_buf::EMPTY;
        }
        let boxed = bytes.into_boxed_slice();
        let len = boxed.len();
        cache_buf {
            data: Box::into_raw(boxed).cast::<u8>(),
            len,
        }
    }
}

/// Runs a get-like backend call and hands the value it visits to C in `out`, and its
/// flags in `flags_out` when given (0 when not found).
fn value_into_buf(
    out: &mut cache_buf,
    flags_out: Option<&mut u32>,
    call: impl FnOnce(&mut Visit) -> Result<bool>,
) -> Result<cache_status, Failure> {
    let mut copied = None;
    let found = call(&mut |value, flags| copied = Some(try_copy(value).map(|v| (v, flags))))?;
    let (status, (value, flags)) = if found {
        let copied = copied.ok_or_else(|| Failure::new(CACHE_ERR_INTERNAL, "no value visited"))?;
        (CACHE_OK, copied?)
    } else {
        (CACHE_NOT_FOUND, (Vec::new(), 0))
    };
    *out = cache_buf::from_vec(value);
    if let Some(flags_out) = flags_out {
        *flags_out = flags;
    }
    Ok(status)
}

/// The backend call behind a read into a cache_buf: a get or a pop.
type Read = fn(&dyn Backend, &[u8], &mut Visit) -> Result<bool>;

/// The body of cache_get, cache_pop and their _flagged forms: checks the arguments,
/// runs `read` and hands the value (and its flags, when `flags` is not NULL) to C.
///
/// # Safety
/// As cache_get_flagged.
unsafe fn read_into_buf(
    function: &'static str,
    c: *mut cache_t,
    (key, key_len): (*const u8, usize),
    out: *mut cache_buf,
    flags: *mut u32,
    read: Read,
) -> cache_status {
    boundary(function, || {
        let c = unsafe { args::handle(c) }?;
        let key = unsafe { args::bytes(key, key_len, "key") }?;
        let out = unsafe { args::out(out, "out") }?;
        let flags = unsafe { flags.as_mut() };
        value_into_buf(out, flags, |visit| read(&*c.backend, key, visit))
    })
}

/// Boxes a new handle into `*out`.
fn open_into(out: &mut *mut cache_t, handle: cache_t) -> Result<cache_status, Failure> {
    *out = Box::into_raw(Box::new(handle));
    Ok(CACHE_OK)
}

fn found(present: bool) -> cache_status {
    if present {
        CACHE_OK
    } else {
        CACHE_NOT_FOUND
    }
}

/// Opens an in-memory cache with exact LRU order and per-entry TTL.
/// max_keys 0 = unbounded. Writes *out only on CACHE_OK.
///
/// # Safety
/// `out` must be NULL or valid for writes.
#[no_mangle]
pub unsafe extern "C" fn cache_open_memory(max_keys: u64, out: *mut *mut cache_t) -> cache_status {
    boundary("cache_open_memory", || {
        let out = unsafe { args::out(out, "out") }?;
        open_into(out, cache_t::new(MemoryCache::new(max_keys)))
    })
}

/// Opens (creating when needed, with parents) the persistent cache stored in `dir`: one
/// SQLite store shared by every handle and process that opens it. size_limit bounds the
/// bytes of keys and values (0 = unlimited); a set that would pass it removes expired
/// entries first, then the least recently stored. A path that is not a directory gives
/// CACHE_ERR_IO; a damaged store CACHE_ERR_CORRUPT. Writes *out only on CACHE_OK.
///
/// # Safety
/// `dir` must be NULL or a NUL-terminated string; `out` NULL or valid for writes.
#[no_mangle]
pub unsafe extern "C" fn cache_open_file(
    dir: *const std::ffi::c_char,
    size_limit: u64,
    out: *mut *mut cache_t,
) -> cache_status {
    boundary("cache_open_file", || {
        let dir = unsafe { args::path(dir, "dir") }?;
        let out = unsafe { args::out(out, "out") }?;
        open_into(out, cache_t::new(FileCache::open(dir, size_limit)?))
    })
}

/// Opens (creating when needed, with parents) the sharded persistent cache in `dir`:
/// file-cache stores in sub-folders (shard-000001, ...) filled one after the other, and
/// an index saying which shard holds each key, so a get costs the same however many
/// shards there are. shard_size_limit bounds the bytes of keys and values per shard
/// (0 = 1,000,000,000); an entry larger gives CACHE_ERR_TOO_LARGE. max_open_shards
/// bounds the shard stores open at once (0 = 128). Writes *out only on CACHE_OK.
///
/// # Safety
/// `dir` must be NULL or a NUL-terminated string; `out` NULL or valid for writes.
#[no_mangle]
pub unsafe extern "C" fn cache_open_sharded(
    dir: *const std::ffi::c_char,
    shard_size_limit: u64,
    max_open_shards: u32,
    out: *mut *mut cache_t,
) -> cache_status {
    boundary("cache_open_sharded", || {
        let dir = unsafe { args::path(dir, "dir") }?;
        let out = unsafe { args::out(out, "out") }?;
        let cache = ShardedCache::open(dir, shard_size_limit, max_open_shards)?;
        open_into(out, cache_t::new(cache))
    })
}

/// Opens (creating when needed, with parents) the key-as-folder persistent cache in
/// `dir`: one sub-folder per key holding plain files (`value`, byte for byte, and
/// `meta`, the full key and expiry), named by a reversible encoding that keeps every key
/// inside `dir`; symbolic links in `dir` are never followed. At most max_open operations
/// of the handle touch the disk at once (0 = 128). Writes *out only on CACHE_OK.
///
/// # Safety
/// `dir` must be NULL or a NUL-terminated string; `out` NULL or valid for writes.
#[no_mangle]
pub unsafe extern "C" fn cache_open_folder(
    dir: *const std::ffi::c_char,
    max_open: u32,
    out: *mut *mut cache_t,
) -> cache_status {
    boundary("cache_open_folder", || {
        let dir = unsafe { args::path(dir, "dir") }?;
        let out = unsafe { args::out(out, "out") }?;
        open_into(out, cache_t::new(FolderCache::open(dir, max_open)?))
    })
}

/// Stores a copy of `value` under `key`, replacing any earlier value and TTL.
/// ttl_seconds: < 0 never expires (CACHE_NO_TTL), +inf never expires, 0 expires at once
/// (a later get misses), NaN -> CACHE_ERR_INVALID_ARG.
///
/// # Safety
/// `c` must be NULL or a live handle; `key`/`value` must be NULL or point to
/// `key_len`/`value_len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn cache_set(
    c: *mut cache_t,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    ttl_seconds: f64,
) -> cache_status {
    boundary("cache_set", || {
        let c = unsafe { args::handle(c) }?;
        let key = unsafe { args::bytes(key, key_len, "key") }?;
        let value = unsafe { args::bytes(value, value_len, "value") }?;
        c.backend.set(key, value, Ttl::from_seconds(ttl_seconds)?)?;
        Ok(CACHE_OK)
    })
}

/// Looks `key` up. CACHE_OK: `out` holds a copy of the value, to free with
/// cache_buf_free (out->data may be NULL when len is 0). CACHE_NOT_FOUND: `out` is set
/// to {NULL, 0}. Makes the key the most recently used.
///
/// # Safety
/// `c` must be NULL or a live handle; `key` NULL or `key_len` readable bytes; `out`
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cache_get(
    c: *mut cache_t,
    key: *const u8,
    key_len: usize,
    out: *mut cache_buf,
) -> cache_status {
    let read: Read = |b, key, visit| b.get_flagged(key, visit);
    unsafe {
        read_into_buf(
            "cache_get",
            c,
            (key, key_len),
            out,
            std::ptr::null_mut(),
            read,
        )
    }
}

/// As cache_set, storing the 32-bit `flags` word with the entry. The library never
/// interprets it; cache_get_flagged and cache_pop_flagged return it (cache_get and
/// cache_set ignore it and store 0). Bindings use it to record how a value was encoded.
///
/// # Safety
/// As cache_set.
#[no_mangle]
pub unsafe extern "C" fn cache_set_flagged(
    c: *mut cache_t,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    ttl_seconds: f64,
    flags: u32,
) -> cache_status {
    boundary("cache_set_flagged", || {
        let c = unsafe { args::handle(c) }?;
        let key = unsafe { args::bytes(key, key_len, "key") }?;
        let value = unsafe { args::bytes(value, value_len, "value") }?;
        c.backend
            .set_flagged(key, value, Ttl::from_seconds(ttl_seconds)?, flags)?;
        Ok(CACHE_OK)
    })
}

/// As cache_get, also writing the entry's flags word to `*flags` when `flags` is not
/// NULL (0 on CACHE_NOT_FOUND).
///
/// # Safety
/// As cache_get; `flags` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cache_get_flagged(
    c: *mut cache_t,
    key: *const u8,
    key_len: usize,
    out: *mut cache_buf,
    flags: *mut u32,
) -> cache_status {
    let read: Read = |b, key, visit| b.get_flagged(key, visit);
    unsafe { read_into_buf("cache_get_flagged", c, (key, key_len), out, flags, read) }
}

/// As cache_pop, also writing the entry's flags word as cache_get_flagged does.
///
/// # Safety
/// As cache_get_flagged.
#[no_mangle]
pub unsafe extern "C" fn cache_pop_flagged(
    c: *mut cache_t,
    key: *const u8,
    key_len: usize,
    out: *mut cache_buf,
    flags: *mut u32,
) -> cache_status {
    let read: Read = |b, key, visit| b.pop_flagged(key, visit);
    unsafe { read_into_buf("cache_pop_flagged", c, (key, key_len), out, flags, read) }
}

/// Copies the value of `key` into the caller's buffer of `cap` bytes. Writes
/// *value_len on CACHE_OK and on CACHE_ERR_BUFFER_TOO_SMALL (then nothing is copied and
/// *value_len is the size needed).
///
/// # Safety
/// `c` must be NULL or a live handle; `key` NULL or `key_len` readable bytes; `buf`
/// NULL or `cap` writable bytes; `value_len` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cache_get_into(
    c: *mut cache_t,
    key: *const u8,
    key_len: usize,
    buf: *mut u8,
    cap: usize,
    value_len: *mut usize,
) -> cache_status {
    let dest = (buf, cap, value_len);
    unsafe {
        get_into(
            "cache_get_into",
            c,
            (key, key_len),
            dest,
            std::ptr::null_mut(),
        )
    }
}

/// As cache_get_into, also writing the entry's flags word to `*flags` (when not NULL)
/// whenever it writes *value_len. With a buffer reused across calls this is the
/// cheapest read: one call, no allocation (the Python binding's get).
///
/// # Safety
/// As cache_get_into; `flags` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cache_get_into_flagged(
    c: *mut cache_t,
    key: *const u8,
    key_len: usize,
    buf: *mut u8,
    cap: usize,
    value_len: *mut usize,
    flags: *mut u32,
) -> cache_status {
    let dest = (buf, cap, value_len);
    unsafe { get_into("cache_get_into_flagged", c, (key, key_len), dest, flags) }
}

/// The body of the get_into functions; `dest` is (buf, cap, value_len).
///
/// # Safety
/// As cache_get_into_flagged.
unsafe fn get_into(
    function: &'static str,
    c: *mut cache_t,
    (key, key_len): (*const u8, usize),
    (buf, cap, value_len): (*mut u8, usize, *mut usize),
    flags_out: *mut u32,
) -> cache_status {
    boundary(function, || {
        let c = unsafe { args::handle(c) }?;
        let key = unsafe { args::bytes(key, key_len, "key") }?;
        let buf = unsafe { args::buffer(buf, cap, "buf") }?;
        let value_len = unsafe { args::out(value_len, "value_len") }?;
        let flags_out = unsafe { flags_out.as_mut() };
        let mut found = None;
        let present = c.backend.get_flagged(key, &mut |value, flags| {
            if let Some(dest) = buf.get_mut(..value.len()) {
                dest.copy_from_slice(value);
            }
            found = Some((value.len(), flags));
        })?;
        match found {
            Some((size, flags)) if present => {
                *value_len = size;
                if let Some(out) = flags_out {
                    *out = flags;
                }
                if size <= cap {
                    Ok(CACHE_OK)
                } else {
                    Err(Failure::new(
                        CACHE_ERR_BUFFER_TOO_SMALL,
                        format!("the value is {size} bytes and the buffer holds {cap}"),
                    ))
                }
            }
            _ => Ok(CACHE_NOT_FOUND),
        }
    })
}

/// Atomic read-and-remove: of any number of threads or processes popping the same key,
/// exactly one gets CACHE_OK. `out` as for cache_get.
///
/// # Safety
/// As cache_get.
#[no_mangle]
pub unsafe extern "C" fn cache_pop(
    c: *mut cache_t,
    key: *const u8,
    key_len: usize,
    out: *mut cache_buf,
) -> cache_status {
    let read: Read = |b, key, visit| b.pop_flagged(key, visit);
    unsafe {
        read_into_buf(
            "cache_pop",
            c,
            (key, key_len),
            out,
            std::ptr::null_mut(),
            read,
        )
    }
}

/// CACHE_OK when `key` holds a live entry, CACHE_NOT_FOUND otherwise. Makes the key
/// the most recently used.
///
/// # Safety
/// `c` must be NULL or a live handle; `key` NULL or `key_len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn cache_has(
    c: *mut cache_t,
    key: *const u8,
    key_len: usize,
) -> cache_status {
    boundary("cache_has", || {
        let c = unsafe { args::handle(c) }?;
        let key = unsafe { args::bytes(key, key_len, "key") }?;
        Ok(found(c.backend.has(key)?))
    })
}

/// Removes `key`. CACHE_OK whether or not it was present.
///
/// # Safety
/// As cache_has.
#[no_mangle]
pub unsafe extern "C" fn cache_delete(
    c: *mut cache_t,
    key: *const u8,
    key_len: usize,
) -> cache_status {
    boundary("cache_delete", || {
        let c = unsafe { args::handle(c) }?;
        let key = unsafe { args::bytes(key, key_len, "key") }?;
        c.backend.delete(key)?;
        Ok(CACHE_OK)
    })
}

/// Removes every entry.
///
/// # Safety
/// `c` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn cache_clear(c: *mut cache_t) -> cache_status {
    boundary("cache_clear", || {
        unsafe { args::handle(c) }?.backend.clear()?;
        Ok(CACHE_OK)
    })
}

/// Writes the number of entries that have not expired to *out.
///
/// # Safety
/// `c` must be NULL or a live handle; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cache_len(c: *mut cache_t, out: *mut u64) -> cache_status {
    boundary("cache_len", || {
        let c = unsafe { args::handle(c) }?;
        let out = unsafe { args::out(out, "out") }?;
        *out = c.backend.len()?;
        Ok(CACHE_OK)
    })
}

/// Writes the handle's counters and current size to *out.
///
/// # Safety
/// `c` must be NULL or a live handle; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cache_get_stats(c: *mut cache_t, out: *mut cache_stats) -> cache_status {
    boundary("cache_get_stats", || {
        let c = unsafe { args::handle(c) }?;
        let out = unsafe { args::out(out, "out") }?;
        *out = c.backend.stats()?.into();
        Ok(CACHE_OK)
    })
}

/// Makes everything written so far durable (value files and the SQLite journal are
/// synced to disk); a no-op in memory.
///
/// # Safety
/// `c` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn cache_save(c: *mut cache_t) -> cache_status {
    boundary("cache_save", || {
        unsafe { args::handle(c) }?.backend.save()?;
        Ok(CACHE_OK)
    })
}

/// Flushes and releases files and memory. Idempotent; the handle stays valid and every
/// later call on it returns CACHE_ERR_CLOSED. Free it with cache_free.
///
/// # Safety
/// `c` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn cache_close(c: *mut cache_t) -> cache_status {
    boundary("cache_close", || {
        let handle = unsafe { args::handle(c) }?;
        handle.queue.close_and_drain().map_err(|_| {
            Failure::new(
                CACHE_ERR_BUSY,
                "called from inside one of this handle's callbacks (or a callback that one of them waits for), which must return before the handle can close",
            )
        })?;
        handle.backend.close()?;
        Ok(CACHE_OK)
    })
}

/// Closes the handle if needed and frees it, after its queued async operations have run.
/// Called from inside one of the handle's own callbacks, it returns at once and the free
/// happens when the queue is empty. NULL is a no-op. Must not race with other calls on
/// the same handle.
///
/// # Safety
/// `c` must be NULL or a live handle, not used again afterwards.
#[no_mangle]
pub unsafe extern "C" fn cache_free(c: *mut cache_t) {
    /// The handle, moved to the thread that runs the deferred free.
    struct Owned(*mut cache_t);
    // SAFETY: cache_t is Send + Sync; the caller gives up the pointer.
    unsafe impl Send for Owned {}
    impl Owned {
        fn free(self) {
            // SAFETY: a live handle made by Box::into_raw, freed exactly once.
            let handle = unsafe { Box::from_raw(self.0) };
            let _ = handle.backend.close();
        }
    }
    boundary_void("cache_free", || {
        // SAFETY: the caller guarantees a non-NULL `c` is a live handle.
        let Some(handle) = (unsafe { c.as_ref() }) else {
            return;
        };
        let owned = Owned(c);
        // Where waiting for the queue could never end (inside one of its callbacks, or
        // a cycle of callbacks closing each other's handles), the free is deferred to
        // the moment the queue is empty.
        if handle.queue.is_current() || handle.queue.close_and_drain().is_err() {
            handle
                .queue
                .clone()
                .close_then(Box::new(move || owned.free()));
        } else {
            owned.free();
        }
    })
}

/// Frees buf->data and zeroes `buf`. NULL or a zeroed buf is a no-op.
///
/// # Safety
/// `buf` must be NULL or point to a cache_buf filled by this library (or zeroed).
#[no_mangle]
pub unsafe extern "C" fn cache_buf_free(buf: *mut cache_buf) {
    boundary_void("cache_buf_free", || {
        // SAFETY: the caller guarantees a non-NULL `buf` is a valid cache_buf.
        let Some(buf) = (unsafe { buf.as_mut() }) else {
            return;
        };
        if !buf.data.is_null() {
            let slice = std::ptr::slice_from_raw_parts_mut(buf.data, buf.len);
            // SAFETY: data/len came from cache_buf::from_vec's Box::into_raw.
            drop(unsafe { Box::from_raw(slice) });
        }
        *buf = cache_buf::EMPTY;
    })
}
