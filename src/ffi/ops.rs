//! Opening, closing and the operations of the contract, each a thin translation of a
//! [`Backend`](crate::Backend) call.

use super::boundary::Failure;
use super::handle::cache_t;
use super::macros::{exported, exported_void};
use super::types::cache_status::{self, *};
use super::types::{cache_buf, cache_stats};
use super::values::{found, into_buf};
use crate::error::{Error, ErrorKind};
use crate::file::FileCache;
use crate::folder::FolderCache;
use crate::memory::MemoryCache;
use crate::sharded::ShardedCache;
use crate::ttl::Ttl;

/// Boxes a new handle into `*out`.
fn open_into(out: &mut *mut cache_t, handle: cache_t) -> Result<cache_status, Failure> {
    *out = Box::into_raw(Box::new(handle));
    Ok(CACHE_OK)
}

/// Opens the cache `uri` names: `memory:`, `file:DIR`, `sharded:DIR`, `folder:DIR`
/// (DIR absolute, `///`-absolute or relative), parameters after `?` as name=value
/// joined by `&`, paths and values percent-decoded; sizes in bytes with an optional
/// KB/MB/GB or KiB/MiB/GiB suffix. See the README's table. An unknown scheme or
/// parameter, or a bad value, gives CACHE_ERR_INVALID_ARG with cache_last_error naming
/// it. Writes *out only on CACHE_OK.
#[no_mangle]
pub unsafe extern "C" fn cache_open(
    uri: *const std::ffi::c_char,
    out: *mut *mut cache_t,
) -> cache_status {
    exported!(out out => {
        if uri.is_null() {
            return Err(Failure::invalid_arg("uri is NULL"));
        }
        // SAFETY: non-NULL, and the contract makes it a NUL-terminated string.
        let uri = unsafe { std::ffi::CStr::from_ptr(uri) };
        let uri = uri.to_str().map_err(|_| Failure::invalid_arg("uri is not UTF-8"))?;
        let backend = crate::uri::open(uri)?;
        open_into(out, cache_t::from_arc(backend.into()))
    })
}

/// Opens an in-memory cache with exact LRU order and per-entry TTL.
/// max_keys 0 = unbounded. A value of 4 GiB or more gets CACHE_ERR_TOO_LARGE (in every
/// memory cache). Writes *out only on CACHE_OK.
#[no_mangle]
pub unsafe extern "C" fn cache_open_memory(max_keys: u64, out: *mut *mut cache_t) -> cache_status {
    exported!(out out => open_into(out, cache_t::new(MemoryCache::new(max_keys))))
}

/// Opens (creating when needed, with parents) the persistent cache stored in `dir`: one
/// SQLite store shared by every handle and process that opens it. size_limit bounds the
/// bytes of keys and values (0 = unlimited); a set that would pass it removes expired
/// entries first, then the least recently stored. A path that is not a directory gives
/// CACHE_ERR_IO; a damaged store CACHE_ERR_CORRUPT. Writes *out only on CACHE_OK.
#[no_mangle]
pub unsafe extern "C" fn cache_open_file(
    dir: *const std::ffi::c_char,
    size_limit: u64,
    out: *mut *mut cache_t,
) -> cache_status {
    exported!(path dir, out out => {
        open_into(out, cache_t::new(FileCache::open(dir, size_limit)?))
    })
}

/// Opens (creating when needed, with parents) the sharded persistent cache in `dir`:
/// file-cache stores in sub-folders (shard-000001, ...) filled one after the other, and
/// an index saying which shard holds each key, so a get costs the same however many
/// shards there are. shard_size_limit bounds the bytes of keys and values per shard
/// (0 = 1,000,000,000); an entry larger gives CACHE_ERR_TOO_LARGE. max_open_shards
/// bounds the shard stores open at once (0 = 128). Writes *out only on CACHE_OK.
#[no_mangle]
pub unsafe extern "C" fn cache_open_sharded(
    dir: *const std::ffi::c_char,
    shard_size_limit: u64,
    max_open_shards: u32,
    out: *mut *mut cache_t,
) -> cache_status {
    exported!(path dir, out out => {
        let cache = ShardedCache::open(dir, shard_size_limit, max_open_shards)?;
        open_into(out, cache_t::new(cache))
    })
}

/// Opens (creating when needed, with parents) the key-as-folder persistent cache in
/// `dir`: one sub-folder per key holding plain files (`value`, byte for byte, and
/// `meta`, the full key and expiry), named by a reversible encoding that keeps every key
/// inside `dir`; symbolic links in `dir` are never followed. At most max_open operations
/// of the handle touch the disk at once (0 = 128). Writes *out only on CACHE_OK.
#[no_mangle]
pub unsafe extern "C" fn cache_open_folder(
    dir: *const std::ffi::c_char,
    max_open: u32,
    out: *mut *mut cache_t,
) -> cache_status {
    exported!(path dir, out out => {
        open_into(out, cache_t::new(FolderCache::open(dir, max_open)?))
    })
}

/// Stores a copy of `value` under `key`, replacing any earlier value and TTL.
/// ttl_seconds: < 0 never expires (CACHE_NO_TTL), +inf never expires, 0 expires at once
/// (a later get misses), NaN -> CACHE_ERR_INVALID_ARG.
#[no_mangle]
pub unsafe extern "C" fn cache_set(
    c: *mut cache_t,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    ttl_seconds: f64,
) -> cache_status {
    exported!(handle c, bytes key[key_len], bytes value[value_len] => {
        c.backend.set(key, value, Ttl::from_seconds(ttl_seconds)?)?;
        Ok(CACHE_OK)
    })
}

/// Looks `key` up. CACHE_OK: `out` holds a copy of the value, to free with
/// cache_buf_free (out->data may be NULL when len is 0). CACHE_NOT_FOUND: `out` is set
/// to {NULL, 0}. Makes the key the most recently used.
#[no_mangle]
pub unsafe extern "C" fn cache_get(
    c: *mut cache_t,
    key: *const u8,
    key_len: usize,
    out: *mut cache_buf,
) -> cache_status {
    exported!(handle c, bytes key[key_len], out out => {
        into_buf(out, None, |sink| c.backend.get_to(key, sink))
    })
}

/// As cache_set, storing the 32-bit `flags` word with the entry. The library never
/// interprets it; cache_get_flagged and cache_pop_flagged return it (cache_get and
/// cache_set ignore it and store 0). Bindings use it to record how a value was encoded.
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
    exported!(handle c, bytes key[key_len], bytes value[value_len] => {
        c.backend
            .set_flagged(key, value, Ttl::from_seconds(ttl_seconds)?, flags)?;
        Ok(CACHE_OK)
    })
}

/// As cache_get, also writing the entry's flags word to `*flags` when `flags` is not
/// NULL (0 on CACHE_NOT_FOUND).
#[no_mangle]
pub unsafe extern "C" fn cache_get_flagged(
    c: *mut cache_t,
    key: *const u8,
    key_len: usize,
    out: *mut cache_buf,
    flags: *mut u32,
) -> cache_status {
    exported!(handle c, bytes key[key_len], out out, maybe_out flags => {
        into_buf(out, flags, |sink| c.backend.get_to(key, sink))
    })
}

/// As cache_pop, also writing the entry's flags word as cache_get_flagged does.
#[no_mangle]
pub unsafe extern "C" fn cache_pop_flagged(
    c: *mut cache_t,
    key: *const u8,
    key_len: usize,
    out: *mut cache_buf,
    flags: *mut u32,
) -> cache_status {
    exported!(handle c, bytes key[key_len], out out, maybe_out flags => {
        into_buf(out, flags, |sink| c.backend.pop_to(key, sink))
    })
}

/// Copies the value of `key` into the caller's buffer of `cap` bytes. Writes
/// *value_len on CACHE_OK and on CACHE_ERR_BUFFER_TOO_SMALL (then nothing is copied and
/// *value_len is the size needed).
#[no_mangle]
pub unsafe extern "C" fn cache_get_into(
    c: *mut cache_t,
    key: *const u8,
    key_len: usize,
    buf: *mut u8,
    cap: usize,
    value_len: *mut usize,
) -> cache_status {
    exported!(handle c, bytes key[key_len], buffer buf[cap], out value_len => {
        get_into(c, key, buf, value_len, None)
    })
}

/// As cache_get_into, also writing the entry's flags word to `*flags` (when not NULL)
/// whenever it writes *value_len. With a buffer reused across calls this is the
/// cheapest read: one call, no allocation (the Python binding's get).
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
    exported!(handle c, bytes key[key_len], buffer buf[cap], out value_len, maybe_out flags => {
        get_into(c, key, buf, value_len, flags)
    })
}

/// The body of the get_into functions: copies the value into `buf` when it fits, and
/// writes its size (and flags, when wanted) whether or not it does.
fn get_into(
    c: &cache_t,
    key: &[u8],
    buf: &mut [u8],
    value_len: &mut usize,
    flags_out: Option<&mut u32>,
) -> Result<cache_status, Failure> {
    match c.backend.get_into(key, buf)? {
        Some((size, flags)) => {
            *value_len = size;
            if let Some(out) = flags_out {
                *out = flags;
            }
            if size <= buf.len() {
                Ok(CACHE_OK)
            } else {
                Err(buffer_too_small(size, buf.len()))
            }
        }
        None => Ok(CACHE_NOT_FOUND),
    }
}

/// The failure of a get_into whose buffer is smaller than the value (out of line: see
/// `args::refused`).
#[cold]
#[inline(never)]
fn buffer_too_small(size: usize, cap: usize) -> Failure {
    Failure::new(
        CACHE_ERR_BUFFER_TOO_SMALL,
        format!("the value is {size} bytes and the buffer holds {cap}"),
    )
}

/// Atomic read-and-remove: of any number of threads or processes popping the same key,
/// exactly one gets CACHE_OK. `out` as for cache_get.
#[no_mangle]
pub unsafe extern "C" fn cache_pop(
    c: *mut cache_t,
    key: *const u8,
    key_len: usize,
    out: *mut cache_buf,
) -> cache_status {
    exported!(handle c, bytes key[key_len], out out => {
        into_buf(out, None, |sink| c.backend.pop_to(key, sink))
    })
}

/// CACHE_OK when `key` holds a live entry, CACHE_NOT_FOUND otherwise. Makes the key
/// the most recently used.
#[no_mangle]
pub unsafe extern "C" fn cache_has(
    c: *mut cache_t,
    key: *const u8,
    key_len: usize,
) -> cache_status {
    exported!(handle c, bytes key[key_len] => Ok(found(c.backend.has(key)?)))
}

/// The path of the folder that holds (or would hold) `key`'s entry on a folder-kind
/// cache, whether or not the key is present: bytes without a terminating NUL in `out`,
/// to free with cache_buf_free. CACHE_ERR_INVALID_ARGUMENT on a cache of another kind,
/// whose entries have no place of their own. Bindings call it rather than repeat the
/// folder naming rule.
#[no_mangle]
pub unsafe extern "C" fn cache_entry_path(
    c: *mut cache_t,
    key: *const u8,
    key_len: usize,
    out: *mut cache_buf,
) -> cache_status {
    exported!(handle c, bytes key[key_len], out out => {
        let path = c.backend.entry_path(key)?.ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidArg,
                "only a folder cache gives each entry a folder of its own",
            )
        })?;
        *out = cache_buf::from_vec(std::os::unix::ffi::OsStringExt::into_vec(path.into_os_string()));
        Ok(CACHE_OK)
    })
}

/// Removes `key`. CACHE_OK whether or not it was present.
#[no_mangle]
pub unsafe extern "C" fn cache_delete(
    c: *mut cache_t,
    key: *const u8,
    key_len: usize,
) -> cache_status {
    exported!(handle c, bytes key[key_len] => {
        c.backend.delete(key)?;
        Ok(CACHE_OK)
    })
}

/// Removes every entry.
#[no_mangle]
pub unsafe extern "C" fn cache_clear(c: *mut cache_t) -> cache_status {
    exported!(handle c => {
        c.backend.clear()?;
        Ok(CACHE_OK)
    })
}

/// Writes the number of entries that have not expired to *out.
#[no_mangle]
pub unsafe extern "C" fn cache_len(c: *mut cache_t, out: *mut u64) -> cache_status {
    exported!(handle c, out out => {
        *out = c.backend.len()?;
        Ok(CACHE_OK)
    })
}

/// Writes the handle's counters and current size to *out.
#[no_mangle]
pub unsafe extern "C" fn cache_get_stats(c: *mut cache_t, out: *mut cache_stats) -> cache_status {
    exported!(handle c, out out => {
        *out = c.backend.stats()?.into();
        Ok(CACHE_OK)
    })
}

/// Makes everything written so far durable (value files and the SQLite journal are
/// synced to disk); a no-op in memory.
#[no_mangle]
pub unsafe extern "C" fn cache_save(c: *mut cache_t) -> cache_status {
    exported!(handle c => {
        c.backend.save()?;
        Ok(CACHE_OK)
    })
}

/// Flushes and releases files and memory. Idempotent; the handle stays valid and every
/// later call on it returns CACHE_ERR_CLOSED. Free it with cache_free.
#[no_mangle]
pub unsafe extern "C" fn cache_close(c: *mut cache_t) -> cache_status {
    exported!(handle c => {
        c.queue.close_and_drain().map_err(|_| {
            Failure::new(
                CACHE_ERR_BUSY,
                "called from inside one of this handle's callbacks (or a callback that one of them waits for), which must return before the handle can close",
            )
        })?;
        c.backend.close()?;
        Ok(CACHE_OK)
    })
}

/// Closes the handle if needed and frees it, after its queued async operations have run.
/// Called from inside one of the handle's own callbacks, it returns at once and the free
/// happens when the queue is empty. NULL is a no-op. Must not race with other calls on
/// the same handle.
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
    exported_void!({
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
#[no_mangle]
pub unsafe extern "C" fn cache_buf_free(buf: *mut cache_buf) {
    exported_void!({
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
