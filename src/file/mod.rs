//! Persistent file cache (the seed's PersistentFileCache): one SQLite store in a
//! directory, shared by every handle and process that opens it. See [`store`] for the
//! layout and the crash-consistency rules, [`values`] for large values.

mod store;
mod values;

pub use crate::sqlite::BUSY_TIMEOUT;
pub use values::INLINE_MAX;

use crate::backend::{Backend, Stats};
use crate::clock::wall_now;
use crate::error::{Error, ErrorKind, Result};
use crate::ttl::Ttl;
use parking_lot::Mutex;
use std::path::{Path, PathBuf};
use store::{Lookup, Store, Stored};

/// The persistent SQLite-backed cache.
pub struct FileCache {
    dir: PathBuf,
    size_limit: u64,
    state: Mutex<State>,
}

struct State {
    /// None once closed.
    store: Option<Store>,
    stats: Stats,
}

impl State {
    fn store(&mut self) -> Result<&mut Store> {
        self.store.as_mut().ok_or_else(Error::closed)
    }

    /// Counts a lookup's outcome.
    fn count(&mut self, lookup: Lookup) -> bool {
        match lookup {
            Lookup::Hit => self.stats.hits += 1,
            Lookup::Miss => self.stats.misses += 1,
            Lookup::Expired => {
                self.stats.misses += 1;
                self.stats.expirations += 1;
            }
        }
        lookup == Lookup::Hit
    }
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
            state: Mutex::new(State {
                store: Some(store),
                stats: Stats::default(),
            }),
        })
    }

    /// The directory of the store.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configured bound in bytes (0 = unlimited).
    pub fn size_limit(&self) -> u64 {
        self.size_limit
    }

    /// A full cleanup pass over `values/`: removes files no entry names (what a crash
    /// at the worst moment, or a hand, can leave). Returns how many were removed.
    pub fn remove_unreferenced_files(&self) -> Result<u64> {
        self.state.lock().store()?.remove_unreferenced_files()
    }
}

impl Backend for FileCache {
    fn set(&self, key: &[u8], value: &[u8], ttl: Ttl) -> Result<()> {
        let size = (key.len() + value.len()) as u64;
        if self.size_limit != 0 && size > self.size_limit {
            return Err(Error::new(
                ErrorKind::TooLarge,
                format!(
                    "the entry is {size} bytes and the cache holds at most {}",
                    self.size_limit
                ),
            ));
        }
        let mut state = self.state.lock();
        let store = state.store()?;
        if ttl.is_expired_at_once() {
            // Dead on arrival: it replaces (removes) the old value and is never stored.
            let lookup = store.delete(key)?;
            state.stats.sets += 1;
            state.stats.expirations += (lookup != Lookup::Miss) as u64;
            return Ok(());
        }
        let expires = match ttl {
            Ttl::Never => None,
            Ttl::After(d) => Some(wall_now() + d.as_secs_f64()),
        };
        let culled = if value.len() < INLINE_MAX {
            store.put(key, Stored::Inline(value), size, expires, self.size_limit)?
        } else {
            // The file's name is recorded before it is written and claimed by the row's
            // transaction, so a crash at any point leaves nothing unrecorded.
            let name = values::new_name();
            store.reserve_file(&name)?;
            let stored = values::write(&self.dir, &name, value)
                .and_then(|()| store.put(key, Stored::File(&name), size, expires, self.size_limit));
            match stored {
                Ok(culled) => culled,
                Err(e) => {
                    store.release_file(&name);
                    return Err(e);
                }
            }
        };
        state.stats.sets += 1;
        state.stats.evictions += culled.evicted;
        state.stats.expirations += culled.expired;
        Ok(())
    }

    fn get(&self, key: &[u8], visit: &mut dyn FnMut(&[u8])) -> Result<bool> {
        let mut state = self.state.lock();
        let lookup = state.store()?.get(key, visit)?;
        Ok(state.count(lookup))
    }

    fn pop(&self, key: &[u8], visit: &mut dyn FnMut(&[u8])) -> Result<bool> {
        let mut state = self.state.lock();
        let lookup = state.store()?.pop(key, visit)?;
        let hit = state.count(lookup);
        state.stats.deletes += hit as u64;
        Ok(hit)
    }

    fn has(&self, key: &[u8]) -> Result<bool> {
        let mut state = self.state.lock();
        let lookup = state.store()?.has(key)?;
        Ok(state.count(lookup))
    }

    fn delete(&self, key: &[u8]) -> Result<()> {
        let mut state = self.state.lock();
        match state.store()?.delete(key)? {
            Lookup::Hit => state.stats.deletes += 1,
            Lookup::Expired => state.stats.expirations += 1,
            Lookup::Miss => {}
        }
        Ok(())
    }

    fn clear(&self) -> Result<()> {
        let mut state = self.state.lock();
        let removed = state.store()?.clear()?;
        state.stats.deletes += removed;
        Ok(())
    }

    fn len(&self) -> Result<u64> {
        self.state.lock().store()?.len()
    }

    fn stats(&self) -> Result<Stats> {
        let mut state = self.state.lock();
        let store = state.store()?;
        let entries = store.len()?;
        let (_, bytes) = store.totals()?;
        Ok(Stats {
            entries,
            bytes,
            ..state.stats
        })
    }

    fn save(&self) -> Result<()> {
        self.state.lock().store()?.save()
    }

    fn close(&self) -> Result<()> {
        match self.state.lock().store.take() {
            Some(store) => store.close(),
            None => Ok(()),
        }
    }
}
