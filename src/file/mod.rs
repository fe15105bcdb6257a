//! Persistent file cache (the original `duck.utils.caching` PersistentFileCache): one SQLite store in a
//! directory, shared by every handle and process that opens it. See [`store`] for the
//! layout and the crash-consistency rules, [`values`] for large values.

pub(crate) mod readers;
mod rows;
mod store;
mod values;

pub use crate::sqlite::BUSY_TIMEOUT;
pub use values::INLINE_MAX;

use crate::backend::{check_fits, Lookup};
use crate::backend::{Backend, Decide, EntryRef, KeyPage, Remaining, Stats, Visit, VisitMany};
use crate::clock::wall_now;
use crate::error::{Error, ErrorKind, Result};
use crate::group_commit::{self, Until};
use crate::read_cache::{self, ReadCache};
use crate::sink::Sink;
pub use crate::sqlite::SqliteOptions;
use crate::sync::fork;
use crate::sync::Mutex;
use crate::ttl::Ttl;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use store::{Row, Store, Stored};

/// The persistent SQLite-backed cache.
pub struct FileCache {
    dir: PathBuf,
    size_limit: u64,
    options: SqliteOptions,
    /// Registered with the fork handlers (`crate::sync::fork`).
    state: Arc<Mutex<State>>,
    /// Sets waiting to share the next transaction (see [`crate::group_commit`]);
    /// registered after `state`.
    waiting: Arc<group_commit::Waiting>,
    /// Read-only connections for get and has, used without `state`'s lock.
    readers: readers::Readers<readers::StoreReader>,
    /// Values recently read, served without SQLite while the store has not changed
    /// (`read_cache`; None when off).
    read_cache: Option<Box<ReadCache>>,
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
        Self::open_with(dir, size_limit, SqliteOptions::default())
    }

    /// As [`FileCache::open`], with the connection options of `cache_open`'s
    /// `sync` and `busy_timeout_ms`.
    pub fn open_with(
        dir: impl AsRef<Path>,
        size_limit: u64,
        options: SqliteOptions,
    ) -> Result<FileCache> {
        let budget = readers::ConnectionBudget::new(readers::MAX_READERS);
        Self::open_with_readers(dir, size_limit, options, budget)
    }

    /// As [`FileCache::open_with`], its read-only connections open while `readers`
    /// allows (a budget of 0: every call goes through the handle's connection). The
    /// sharded kind's shards share one budget: they can be many, and the files the
    /// cache holds open stay bounded.
    pub(crate) fn open_with_readers(
        dir: impl AsRef<Path>,
        size_limit: u64,
        options: SqliteOptions,
        readers: readers::ConnectionBudget,
    ) -> Result<FileCache> {
        let dir = dir.as_ref().to_owned();
        let store = Store::open(&dir, options)?;
        let state = fork::registered(
            fork::RANK_FILE,
            Mutex::new(State {
                store: Some(store),
                suspect: false,
                stats: Stats::default(),
            }),
        );
        let waiting = fork::registered(fork::RANK_FILE, group_commit::Waiting::default());
        let readers = readers::Readers::new(&dir, fork::RANK_FILE, readers);
        // Registered after the readers' gate: the fork handlers close the gate (waiting
        // for reads inside it, which may fill the cache) before they take its lock.
        let read_cache = (options.read_cache > 0).then(|| {
            Box::new(ReadCache::new(
                &dir.join("cache.db"),
                options.read_cache,
                fork::RANK_FILE,
            ))
        });
        Ok(FileCache {
            readers,
            read_cache,
            dir,
            size_limit,
            options,
            state,
            waiting,
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
            self.invalidate_readers();
            store.reconnect(&self.dir)?;
            *suspect = false;
        }
        let mut result = f(store, stats);
        if result.as_ref().is_err_and(Error::is_stale_connection) {
            *suspect = true; // until the new connection is open
            self.invalidate_readers();
            store.reconnect(&self.dir)?;
            *suspect = false;
            result = f(store, stats);
        }
        let result = result.map_err(|e| store.confirm_damage(e));
        if let Err(e) = &result {
            *suspect = matches!(e.kind(), ErrorKind::Io | ErrorKind::Corrupt);
        }
        result
    }

    /// The handle replaces its connection (the store may be another file now): the
    /// read connections and the read cache's are replaced too.
    fn invalidate_readers(&self) {
        self.readers.invalidate();
        if let Some(cache) = &self.read_cache {
            cache.reset();
        }
    }

    /// A get from the store (not the read cache), handing `sink` the entry's expiry
    /// too: through a read connection when one is free, else the handle's.
    pub(crate) fn read_entry(&self, key: &[u8], sink: &mut dyn Sink) -> Result<bool> {
        if let Some(lookup) = self.readers.get(key, sink) {
            return Ok(lookup == Lookup::Hit);
        }
        self.with_store(|store, stats| Ok(stats.count_lookup(store.get(key, sink)?)))
    }

    /// The checkpoints of the store's WAL (None once closed).
    #[cfg(test)]
    pub(crate) fn wal(&self) -> Option<Arc<crate::sqlite::checkpointer::WalWatch>> {
        Some(self.state.lock().store.as_ref()?.wal.clone())
    }

    /// The directory of the store.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configured bound in bytes (0 = unlimited).
    pub fn size_limit(&self) -> u64 {
        self.size_limit
    }

    /// Stores `value` under `key` until the Unix time `expires` (None = never), in its
    /// own transaction. The sharded cache uses this so its index and the shard agree on
    /// the expiry.
    pub(crate) fn set_until(
        &self,
        key: &[u8],
        value: &[u8],
        expires: Option<f64>,
        flags: u32,
    ) -> Result<()> {
        let entry = [Until {
            key,
            value,
            expires,
            flags,
        }];
        self.store_alone(&entry)
    }

    /// Stores every entry in one transaction (all or none), which small sets waiting
    /// on other threads share (see [`crate::group_commit`]). Used by set and set_many.
    fn store_grouped(&self, entries: &[Until]) -> Result<()> {
        group_commit::commit(&self.waiting, entries, |entries| self.store_alone(entries))
    }

    /// Stores every entry in one transaction of its own (all or none); large values go
    /// to their files first. The sharded cache writes its shards through this: its own
    /// lock already serialises them, and it batches its sets itself, so a shard's queue
    /// would only copy every entry once more.
    pub(crate) fn store_alone(&self, entries: &[Until]) -> Result<()> {
        self.with_store(|store, stats| self.put(store, stats, entries))
    }

    /// Stores `entries` in one transaction and counts them.
    fn put(&self, store: &mut Store, stats: &mut Stats, entries: &[Until]) -> Result<()> {
        let limit = self.size_limit;
        let culled = with_value_files(
            store,
            entries,
            self.options.sync_full,
            |store, rows| store.put_many(rows, limit),
            |_| true,
        )?;
        stats.sets += entries.len() as u64;
        stats.evictions += culled.evicted;
        stats.expirations += culled.expired;
        Ok(())
    }

    /// Stores `value` only when no live entry holds `key`; true when it stored.
    fn add_until(
        &self,
        key: &[u8],
        value: &[u8],
        expires: Option<f64>,
        flags: u32,
    ) -> Result<bool> {
        let limit = self.size_limit;
        let sync_files = self.options.sync_full;
        let entry = [Until {
            key,
            value,
            expires,
            flags,
        }];
        self.with_store(|store, stats| {
            let added = with_value_files(
                store,
                &entry,
                sync_files,
                |store, rows| {
                    let r = &rows[0];
                    store.add(r.key, r.value, r.size, r.expires, r.flags, limit)
                },
                Option::is_some,
            )?;
            let Some(culled) = added else {
                return Ok(false);
            };
            stats.sets += 1;
            stats.evictions += culled.evicted;
            stats.expirations += culled.expired;
            Ok(true)
        })
    }

    /// Calls `f` with every entry's key, size and expiry (expired ones included).
    pub(crate) fn for_each_entry(&self, f: &mut store::EntryVisitor) -> Result<()> {
        self.with_store(|store, _| store.for_each_entry(f))
    }

    /// Checks the store (see the `duckcache check` command): what it found, one line
    /// each; with `repair`, damaged entries are dropped and unnamed value files removed.
    pub fn check(&self, repair: bool) -> Result<Vec<String>> {
        self.with_store(|store, _| store.check(repair))
    }

    /// Entries that have expired but are still stored (removed on access or by
    /// purge_expired).
    pub fn expired_entries(&self) -> Result<u64> {
        self.with_store(|store, _| Ok(store.totals()?.0.saturating_sub(store.len()?)))
    }

    /// Reclaims free space (SQLite VACUUM, WAL truncated).
    pub fn compact(&self) -> Result<()> {
        self.with_store(|store, _| store.compact())
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
        self.store_grouped(&[Until {
            key,
            value,
            expires: ttl.deadline_from(wall_now()),
            flags,
        }])
    }

    fn get_flagged(&self, key: &[u8], visit: &mut Visit) -> Result<bool> {
        self.get_to(key, &mut |value: &[u8], flags, _| visit(value, flags))
    }

    fn get_to(&self, key: &[u8], sink: &mut dyn Sink) -> Result<bool> {
        // What the store returns goes to the read cache too, with its expiry.
        read_cache::get_through(self.read_cache.as_deref(), key, sink, |sink| {
            self.read_entry(key, sink)
        })
    }

    fn pop_flagged(&self, key: &[u8], visit: &mut Visit) -> Result<bool> {
        self.with_store(|store, stats| {
            let hit = stats.count_lookup(store.pop(key, visit)?);
            stats.deletes += hit as u64;
            Ok(hit)
        })
    }

    fn has(&self, key: &[u8]) -> Result<bool> {
        if let Some(lookup) = self.readers.has(key) {
            return Ok(lookup == Lookup::Hit);
        }
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
                hits: stats.hits
                    + self.readers.hits.load(Relaxed)
                    + self.read_cache.as_ref().map_or(0, |c| c.hits.load(Relaxed)),
                misses: stats.misses + self.readers.misses.load(Relaxed),
                ..*stats
            })
        })
    }

    fn save(&self) -> Result<()> {
        self.with_store(|store, _| store.save())
    }

    fn update(&self, key: &[u8], decide: &mut Decide) -> Result<()> {
        let limit = self.size_limit;
        self.with_store(|store, stats| {
            let (stored, culled) = store.update(key, decide, limit)?;
            stats.sets += stored as u64;
            stats.evictions += culled.evicted;
            stats.expirations += culled.expired;
            Ok(())
        })
    }

    fn ttl(&self, key: &[u8]) -> Result<Option<Remaining>> {
        self.with_store(|store, _| store.ttl(key))
    }

    fn key_page(&self, prefix: &[u8], after: Option<&[u8]>) -> Result<KeyPage> {
        self.with_store(|store, _| store.key_page(prefix, after))
    }

    fn purge_expired(&self) -> Result<u64> {
        self.with_store(|store, stats| {
            let purged = store.purge_expired()?;
            stats.expirations += purged;
            Ok(purged)
        })
    }

    fn delete_counted(&self, key: &[u8]) -> Result<bool> {
        self.with_store(|store, stats| {
            let lookup = store.delete(key)?;
            stats.count_delete(lookup);
            Ok(lookup == Lookup::Hit)
        })
    }

    fn add_flagged(&self, key: &[u8], value: &[u8], ttl: Ttl, flags: u32) -> Result<bool> {
        check_fits(
            (key.len() + value.len()) as u64,
            self.size_limit,
            "the cache",
        )?;
        if ttl.is_expired_at_once() {
            // Stored and dead at once: it "stores" when the key is absent, changing nothing.
            return Ok(!self.has(key)?);
        }
        self.add_until(key, value, ttl.deadline_from(wall_now()), flags)
    }

    fn touch(&self, key: &[u8], ttl: Ttl) -> Result<bool> {
        let expires = ttl.deadline_from(wall_now());
        self.with_store(|store, _| store.touch(key, expires, ttl.is_expired_at_once()))
    }

    fn get_many(&self, keys: &[&[u8]], visit: &mut VisitMany) -> Result<()> {
        self.with_store(|store, stats| {
            let mut found = vec![false; keys.len()];
            store.get_many(keys, &mut |i, value, flags| {
                found[i] = true;
                visit(i, value, flags)
            })?;
            let hits = found.iter().filter(|&&f| f).count() as u64;
            stats.hits += hits;
            stats.misses += keys.len() as u64 - hits;
            Ok(())
        })
    }

    fn check_entry(&self, key: &[u8], value: &[u8]) -> Result<()> {
        check_fits(
            (key.len() + value.len()) as u64,
            self.size_limit,
            "the cache",
        )
    }

    fn check_batch(&self, entries: &[EntryRef]) -> Result<()> {
        crate::backend::check_batch_fits(entries, self.size_limit, 0, "the cache")
    }

    fn set_many(&self, entries: &[EntryRef]) -> Result<()> {
        for e in entries {
            self.check_entry(e.key, e.value)?;
        }
        self.check_batch(entries)?;
        let now = wall_now();
        // A dead-on-arrival entry is written already expired, in order with the rest
        // (so a later one for its key still wins), in the same transaction.
        let until: Vec<Until> = entries.iter().map(|e| Until::of(e, now)).collect();
        self.store_grouped(&until)
    }

    fn delete_many(&self, keys: &[&[u8]]) -> Result<u64> {
        self.with_store(|store, stats| {
            let (live, expired) = store.delete_many(keys)?;
            stats.deletes += live;
            stats.expirations += expired;
            Ok(live)
        })
    }

    fn delete_prefix(&self, prefix: &[u8]) -> Result<u64> {
        self.with_store(|store, stats| {
            let (live, expired) = store.delete_prefix(prefix)?;
            stats.deletes += live;
            stats.expirations += expired;
            Ok(live)
        })
    }

    fn close(&self) -> Result<()> {
        self.readers.close();
        if let Some(cache) = &self.read_cache {
            cache.close();
        }
        match self.state.lock().store.take() {
            Some(store) => store.close(),
            None => Ok(()),
        }
    }
}

/// Writes the value files of the large values among `entries` (each name reserved in
/// `orphans` before its file is written, and claimed by the row's transaction, so a
/// crash at any point leaves nothing unrecorded), then runs `store_rows` with the rows.
/// If it fails, or `used` says the rows were not stored, the files are given up. With `sync_files` each file reaches the disk
/// before its row can commit.
fn with_value_files<R>(
    store: &mut Store,
    entries: &[Until],
    sync_files: bool,
    store_rows: impl FnOnce(&mut Store, &[Row]) -> Result<R>,
    used: impl FnOnce(&R) -> bool,
) -> Result<R> {
    let mut names: Vec<Option<String>> = Vec::with_capacity(entries.len());
    let written = (|| {
        for e in entries {
            if e.value.len() < INLINE_MAX {
                names.push(None);
                continue;
            }
            let name = values::new_name();
            store.reserve_file(&name)?;
            names.push(Some(name.clone()));
            store.values.write(&name, e.value)?;
        }
        if sync_files {
            let files: Vec<String> = names.iter().flatten().cloned().collect();
            if !files.is_empty() {
                store.values.sync(&files)?;
            }
        }
        Ok(())
    })();
    let result = written.and_then(|()| {
        let rows: Vec<Row> = entries
            .iter()
            .zip(&names)
            .map(|(e, name)| Row {
                key: e.key,
                value: match name {
                    Some(name) => Stored::File(name),
                    None => Stored::Inline(e.value),
                },
                size: (e.key.len() + e.value.len()) as u64,
                expires: e.expires,
                flags: e.flags,
            })
            .collect();
        store_rows(store, &rows)
    });
    if !result.as_ref().is_ok_and(used) {
        for name in names.iter().flatten() {
            store.release_file(name);
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_sets_share_transactions_and_every_acknowledged_set_is_stored() {
        group_commit::check_sets_share_transactions(
            |dir| FileCache::open(dir, 0).unwrap(),
            |cache| &cache.waiting,
        );
    }
}
