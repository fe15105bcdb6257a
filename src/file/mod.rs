//! Persistent file cache (the original `duck.utils.caching` PersistentFileCache): one SQLite store in a
//! directory, shared by every handle and process that opens it. See [`store`] for the
//! layout and the crash-consistency rules, [`values`] for large values.

mod store;
mod values;

pub use crate::sqlite::BUSY_TIMEOUT;
pub use values::INLINE_MAX;

use crate::backend::{check_fits, Lookup};
use crate::backend::{Backend, Stats, Visit};
use crate::clock::wall_now;
use crate::error::{Error, ErrorKind, Result};
use crate::ffi::fork;
use crate::sync::Mutex;
use crate::ttl::Ttl;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use store::{Store, Stored};

/// The persistent SQLite-backed cache.
pub struct FileCache {
    dir: PathBuf,
    size_limit: u64,
    /// Registered with the fork handlers (`crate::ffi::fork`).
    state: Arc<Mutex<State>>,
}

struct State {
    /// None once closed.
    store: Option<Store>,
    /// The last call failed with an I/O error: the connection is replaced before the
    /// next call. SQLite can leave a connection unable to write after a transient
    /// fault (a `-wal` or `-shm` it could reopen only read-only), which a new
    /// connection does not inherit.
    suspect: bool,
    stats: Stats,
}

impl FileCache {
    /// Opens the store in `dir` (created with parents when missing). `size_limit` bounds
    /// the bytes of keys and values; 0 is unlimited.
    pub fn open(dir: impl AsRef<Path>, size_limit: u64) -> Result<FileCache> {
        let dir = dir.as_ref().to_owned();
        let store = Store::open(&dir)?;
        Ok(FileCache {
            dir,
            size_limit,
            state: fork::registered(
                fork::RANK_FILE,
                Mutex::new(State {
                    store: Some(store),
                    suspect: false,
                    stats: Stats::default(),
                }),
            ),
        })
    }

    /// Runs `f` on the store and the counters, under the handle's lock. An I/O error
    /// marks the connection suspect (see [`State::suspect`]); one that only the old
    /// connection could have (it can no longer write) reconnects and runs `f` again at
    /// once (nothing was written by the failed attempt).
    fn with_store<R>(&self, mut f: impl FnMut(&mut Store, &mut Stats) -> Result<R>) -> Result<R> {
        let mut state = self.state.lock();
        let State {
            store,
            suspect,
            stats,
        } = &mut *state;
        let store = store.as_mut().ok_or_else(Error::closed)?;
        if *suspect {
            store.reconnect(&self.dir)?;
            *suspect = false;
        }
        let mut result = f(store, stats);
        if result.as_ref().is_err_and(Error::is_stale_connection) {
            *suspect = true; // until the new connection is open
            store.reconnect(&self.dir)?;
            *suspect = false;
            result = f(store, stats);
        }
        if let Err(e) = &result {
            *suspect = matches!(e.kind(), ErrorKind::Io | ErrorKind::Corrupt);
        }
        result
    }

    /// The directory of the store.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configured bound in bytes (0 = unlimited).
    pub fn size_limit(&self) -> u64 {
        self.size_limit
    }

    /// Stores `value` under `key` until the Unix time `expires` (None = never). The
    /// sharded cache uses this so its index and the shard agree on the expiry.
    pub(crate) fn set_until(
        &self,
        key: &[u8],
        value: &[u8],
        expires: Option<f64>,
        flags: u32,
    ) -> Result<()> {
        let size = (key.len() + value.len()) as u64;
        let limit = self.size_limit;
        self.with_store(|store, stats| {
            let culled = if value.len() < INLINE_MAX {
                store.put(key, Stored::Inline(value), size, expires, flags, limit)?
            } else {
                // The file's name is recorded before it is written and claimed by the
                // row's transaction, so a crash at any point leaves nothing unrecorded.
                let name = values::new_name();
                store.reserve_file(&name)?;
                let stored = store.values.write(&name, value).and_then(|()| {
                    store.put(key, Stored::File(&name), size, expires, flags, limit)
                });
                match stored {
                    Ok(culled) => culled,
                    Err(e) => {
                        store.release_file(&name);
                        return Err(e);
                    }
                }
            };
            stats.sets += 1;
            stats.evictions += culled.evicted;
            stats.expirations += culled.expired;
            Ok(())
        })
    }

    /// Calls `f` with every entry's key, size and expiry (expired ones included).
    pub(crate) fn for_each_entry(&self, f: &mut store::EntryVisitor) -> Result<()> {
        self.with_store(|store, _| store.for_each_entry(f))
    }

    /// A full cleanup pass over `values/`: removes files no entry names (what a crash
    /// at the worst moment, or a hand, can leave). Returns how many were removed.
    pub fn remove_unreferenced_files(&self) -> Result<u64> {
        self.with_store(|store, _| store.remove_unreferenced_files())
    }
}

impl Backend for FileCache {
    fn set_flagged(&self, key: &[u8], value: &[u8], ttl: Ttl, flags: u32) -> Result<()> {
        let size = (key.len() + value.len()) as u64;
        check_fits(size, self.size_limit, "the cache")?;
        if ttl.is_expired_at_once() {
            // Dead on arrival: it replaces (removes) the old value and is never stored.
            return self.with_store(|store, stats| {
                let lookup = store.delete(key)?;
                stats.count_dead_on_arrival(lookup != Lookup::Miss);
                Ok(())
            });
        }
        self.set_until(key, value, ttl.deadline_from(wall_now()), flags)
    }

    fn get_flagged(&self, key: &[u8], visit: &mut Visit) -> Result<bool> {
        self.with_store(|store, stats| Ok(stats.count_lookup(store.get(key, visit)?)))
    }

    fn pop_flagged(&self, key: &[u8], visit: &mut Visit) -> Result<bool> {
        self.with_store(|store, stats| {
            let hit = stats.count_lookup(store.pop(key, visit)?);
            stats.deletes += hit as u64;
            Ok(hit)
        })
    }

    fn has(&self, key: &[u8]) -> Result<bool> {
        self.with_store(|store, stats| Ok(stats.count_lookup(store.has(key)?)))
    }

    fn delete(&self, key: &[u8]) -> Result<()> {
        self.with_store(|store, stats| {
            stats.count_delete(store.delete(key)?);
            Ok(())
        })
    }

    fn clear(&self) -> Result<()> {
        self.with_store(|store, stats| {
            stats.deletes += store.clear()?;
            Ok(())
        })
    }

    fn len(&self) -> Result<u64> {
        self.with_store(|store, _| store.len())
    }

    fn stats(&self) -> Result<Stats> {
        self.with_store(|store, stats| {
            let entries = store.len()?;
            let (_, bytes) = store.totals()?;
            Ok(Stats {
                entries,
                bytes,
                ..*stats
            })
        })
    }

    fn save(&self) -> Result<()> {
        self.with_store(|store, _| store.save())
    }

    fn close(&self) -> Result<()> {
        match self.state.lock().store.take() {
            Some(store) => store.close(),
            None => Ok(()),
        }
    }
}
