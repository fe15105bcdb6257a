//! Sharded persistent cache (the original `duck.utils.caching` DynamicFileCache): a directory of file-cache
//! stores ("shards") that grows one shard at a time as each fills up.
//!
//! Layout of `<dir>`:
//! - `index.db`: which shard holds each key, and how full each shard is (see [`index`]).
//! - `shard-000001/`, `shard-000002/`, ...: one [`FileCache`] store each, numbered in
//!   creation order. A set goes to the newest shard while the entry fits under the shard
//!   size limit; otherwise a new shard is started.
//!
//! Unlike the original `duck.utils.caching`, a get reads one index row and one shard whatever the number of
//! shards, and shard sizes are tracked by the index instead of summing files on every
//! set. If `index.db` is lost, the next open rebuilds it from the shards (newest copy of
//! a key wins).

mod index;
mod maintenance;
mod shards;
mod state;

use crate::backend::{check_fits, Backend, Change, Current, Decide, EntryRef, KeyPage, Lookup};
use crate::backend::{Remaining, Stats, Visit};
use crate::clock::{mono_coarse_now, wall_now};
use crate::disk;
use crate::disk::file_id;
use crate::error::{Error, ErrorKind, Result};
use crate::file::readers::{ConnectionBudget, Readers, MAX_READERS};
use crate::file::FileCache;
use crate::group_commit;
use crate::group_commit::Until;
use crate::read_cache::{self, ReadCache};
use crate::sink::Sink;
use crate::sqlite::{self, SqliteOptions};
use crate::sync::fork;
use crate::sync::{Mutex, RwLock};
use crate::ttl::Ttl;
use index::{IndexReader, Placement};
use maintenance::{compact_into, purge_expired, rebuild_index, remove_empty_shards};
use rusqlite::{Connection, Transaction};
use shards::{shards_on_disk, OpenShards};
use state::State;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// Shard size limit used when 0 is given (the original `duck.utils.caching` DEFAULT_SHARD_SIZE, 1 GB).
pub const DEFAULT_SHARD_SIZE: u64 = 1_000_000_000;

/// Open shard limit used when 0 is given (the original `duck.utils.caching` default).
pub const DEFAULT_MAX_OPEN_SHARDS: u32 = 128;

/// The sharded persistent cache.
pub struct ShardedCache {
    dir: PathBuf,
    shard_size_limit: u64,
    options: SqliteOptions,
    /// Registered with the fork handlers (`crate::sync::fork`).
    state: Arc<Mutex<State>>,
    /// Read-only index connections and the open shards, for gets and has without the
    /// handle's lock (see [`ShardedCache::find_unlocked`]).
    index_readers: Readers<IndexReader>,
    visible: Arc<RwLock<HashMap<i64, Arc<FileCache>>>>,
    /// Sets waiting to share the next index transaction (see [`crate::group_commit`]).
    waiting: Arc<group_commit::Waiting>,
    /// Values recently read, served without SQLite while the index has not changed
    /// (`read_cache`; None when off). Every change to a key changes its index row.
    read_cache: Option<Box<ReadCache>>,
    /// When a hit last found `index.db` still the file the readers have open
    /// ([`mono_coarse_now`]); see [`INDEX_CHECK_EVERY`].
    index_checked_at: std::sync::atomic::AtomicU64,
}

/// How often a hit checks that `index.db` is still the file the index readers have
/// open. A miss always checks; a hit trusted forever kept serving keys another process
/// deleted after removing and rebuilding the index (the shards still held their stale
/// copies), so a removed index is noticed within this long.
const INDEX_CHECK_EVERY: u64 = 10_000_000;

/// The shard a new entry of `size` bytes goes to: the newest while it fits, else a new
/// one. `old` is the key's current placement, whose bytes the set frees. Expired
/// entries removed to make room are counted in `expired`.
fn writable_shard(
    tx: &Transaction,
    shards: &mut OpenShards,
    key: &[u8],
    size: u64,
    limit: u64,
    old: Option<Placement>,
    expired: &mut u64,
) -> Result<i64> {
    let fits = |tx: &Transaction| -> Result<Option<i64>> {
        Ok(index::newest_shard(tx)?.and_then(|(id, used)| {
            let used = match old {
                Some(o) if o.shard == id => used.saturating_sub(o.size),
                _ => used,
            };
            (used == 0 || used + size <= limit).then_some(id)
        }))
    };
    if let Some(id) = fits(tx)? {
        return Ok(id);
    }
    // Before starting a new shard, reclaim the space of expired entries.
    *expired = purge_expired(tx, shards)?;
    if *expired > 0 {
        if let Some(id) = fits(tx)? {
            return Ok(id);
        }
    }
    let id = index::add_shard(tx)?;
    remove_empty_shards(tx, shards)?;
    compact_into(tx, shards, id, limit, key)?;
    remove_empty_shards(tx, shards)?;
    Ok(id)
}

impl ShardedCache {
    /// Opens the sharded cache in `dir` (created with parents when missing).
    /// `shard_size_limit` bounds the bytes of keys and values per shard (0 = the default
    /// 1 GB); `max_open_shards` bounds the shard stores open at once (0 = 128).
    pub fn open(
        dir: impl AsRef<Path>,
        shard_size_limit: u64,
        max_open_shards: u32,
    ) -> Result<ShardedCache> {
        Self::open_with(
            dir,
            shard_size_limit,
            max_open_shards,
            SqliteOptions::default(),
        )
    }

    /// As [`ShardedCache::open`], with the connection options of `cache_open`'s `sync`
    /// and `busy_timeout_ms` (for the index and every shard).
    pub fn open_with(
        dir: impl AsRef<Path>,
        shard_size_limit: u64,
        max_open_shards: u32,
        options: SqliteOptions,
    ) -> Result<ShardedCache> {
        let dir = dir.as_ref().to_owned();
        disk::create_dir(&dir)?;
        // The read cache is the handle's, over the index; the shards have none.
        let read_cache = options.read_cache;
        let options = SqliteOptions {
            read_cache: 0,
            ..options
        };
        let index = index::open(&dir.join("index.db"), options, |tx| {
            rebuild_index(tx, &dir, options)
        })?;
        let max_open = match max_open_shards {
            0 => DEFAULT_MAX_OPEN_SHARDS,
            n => n,
        };
        let visible = Arc::new(RwLock::new(HashMap::new()));
        let state = fork::registered(
            fork::RANK_SHARDED,
            Mutex::new(State {
                index: Some(index),
                index_file: file_id(&dir.join("index.db")),
                suspect: false,
                shards: OpenShards {
                    dir: dir.clone(),
                    options,
                    max_open: max_open as usize,
                    open: HashMap::new(),
                    uses: 0,
                    unlisted: Vec::new(),
                    readers: ConnectionBudget::new(MAX_READERS),
                    visible: visible.clone(),
                },
                stats: Stats::default(),
            }),
        );
        // The fork handlers take a rank's locks in registration order: the state, then
        // the index readers' gate (a read inside it may wait for `visible`), then
        // `visible` (taken under the state lock), then the group commit's queue (held
        // only to queue or take, with nothing else wanted meanwhile).
        let index_readers =
            Readers::new(&dir, fork::RANK_SHARDED, ConnectionBudget::new(MAX_READERS));
        fork::register(fork::RANK_SHARDED, Arc::downgrade(&visible));
        let waiting = fork::registered(fork::RANK_SHARDED, group_commit::Waiting::default());
        let read_cache = (read_cache > 0).then(|| {
            Box::new(ReadCache::new(
                &dir.join("index.db"),
                read_cache,
                fork::RANK_SHARDED,
            ))
        });
        let cache = ShardedCache {
            read_cache,
            shard_size_limit: match shard_size_limit {
                0 => DEFAULT_SHARD_SIZE,
                n => n,
            },
            state,
            index_readers,
            visible,
            waiting,
            dir,
            options,
            index_checked_at: std::sync::atomic::AtomicU64::new(0),
        };
        // Best effort: a copy that cannot be removed now is never returned, and later
        // writes try again.
        let mut state = cache.state.lock();
        let _holding = fork::HoldingLock::new(); // shards open under it
        let _ = state.remove_all_stale();
        // Best effort too: folders of shards the index dropped whose removal a crash or
        // an I/O error interrupted.
        let _ = state.transaction(|tx, shards| {
            let listed = index::shard_ids(tx)?;
            let newest = listed.last().copied().unwrap_or(0);
            for id in shards_on_disk(&shards.dir)? {
                if id < newest && listed.binary_search(&id).is_err() {
                    shards.unlisted.push(id);
                }
            }
            Ok(())
        });
        drop(state);
        Ok(cache)
    }

    /// The directory holding the index and the shards.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The bytes of keys and values each shard is filled up to.
    pub fn shard_size_limit(&self) -> u64 {
        self.shard_size_limit
    }

    /// How many shards exist.
    pub fn shard_count(&self) -> Result<u64> {
        self.with_state(|state| Ok(index::shard_ids(state.index()?)?.len() as u64))
    }

    /// Checks the index and every shard; see [`maintenance::check`] (with `repair`,
    /// drops what cannot be read and says what it dropped).
    pub fn check(&self, repair: bool) -> Result<Vec<String>> {
        self.with_state(|state| maintenance::check(state, repair))
    }

    /// Entries that have expired but are still stored.
    pub fn expired_entries(&self) -> Result<u64> {
        self.with_state(maintenance::expired_entries)
    }

    /// Reclaims free space in the index and every shard.
    pub fn compact(&self) -> Result<()> {
        self.with_state(maintenance::compact)
    }

    /// How many shard stores are open right now.
    pub fn open_shard_count(&self) -> usize {
        self.state.lock().shards.open.len()
    }

    /// Runs `f` on the state under the handle's lock, the index reopened first if the
    /// last call left it suspect; an I/O or damage error leaves it suspect.
    /// An error only the old index connection could have (it can no longer write)
    /// reopens it and runs `f` again at once.
    fn with_state<R>(&self, mut f: impl FnMut(&mut State) -> Result<R>) -> Result<R> {
        let mut state = self.state.lock();
        let _holding = fork::HoldingLock::new(); // shards open under it
        if state.suspect {
            self.reopen_index(&mut state)?;
        }
        let mut result = f(&mut state);
        if result.as_ref().is_err_and(Error::is_stale_connection) {
            self.reopen_index(&mut state)?;
            result = f(&mut state);
        }
        let result = result.map_err(|e| match &state.index {
            Some(index) => sqlite::confirm_damage(index, e),
            None => e,
        });
        if let Err(e) = &result {
            state.suspect = matches!(e.kind(), ErrorKind::Io | ErrorKind::Corrupt);
        }
        result
    }

    /// Replaces the index connection with a new one (rebuilding the index if the file
    /// is new). The old one closes first, as in `Store::reconnect` (a process's
    /// connections to one database share its `-shm` state); until the new one is open
    /// an empty in-memory connection stands in, and the handle stays suspect.
    fn reopen_index(&self, state: &mut State) -> Result<()> {
        let index = state.index.as_mut().ok_or_else(Error::closed)?;
        let old = std::mem::replace(index, Connection::open_in_memory()?);
        sqlite::discard(old);
        self.index_readers.invalidate();
        if let Some(cache) = &self.read_cache {
            cache.reset();
        }
        state.suspect = true;
        let path = self.dir.join("index.db");
        *index = self::index::open(&path, self.options, |tx| {
            rebuild_index(tx, &self.dir, self.options)
        })?;
        state.index_file = file_id(&path);
        state.suspect = false;
        Ok(())
    }

    /// Writes `puts` in order in one index transaction (all or none): each live entry
    /// to the shard that takes it (the shards' writes grouped by shard, every one
    /// committed before the index row that names it), each dead-on-arrival key removed.
    fn put_many_in(&self, state: &mut State, puts: &[Until]) -> Result<()> {
        let limit = self.shard_size_limit;
        let expired = state.transaction(|tx, shards| {
            let mut expired = 0;
            let mut groups: Vec<(i64, Vec<Until>)> = Vec::new();
            for e in puts {
                if e.is_dead_on_arrival() {
                    if let Some(o) = index::remove(tx, e.key)? {
                        index::mark_stale(tx, o.shard, e.key)?;
                    }
                    continue;
                }
                let old = index::placement(tx, e.key)?;
                let size = (e.key.len() + e.value.len()) as u64;
                let shard = writable_shard(tx, shards, e.key, size, limit, old, &mut expired)?;
                index::place(tx, e.key, shard, size, e.expires, old)?;
                let until = *e;
                match groups.last_mut() {
                    Some((id, group)) if *id == shard => group.push(until),
                    _ => groups.push((shard, vec![until])),
                }
            }
            for (shard, group) in &groups {
                shards.get(*shard, true)?.store_alone(group)?;
            }
            Ok(expired)
        })?;
        state.stats.sets += puts.len() as u64;
        state.stats.expirations += expired;
        Ok(())
    }

    /// Looks `key` up, then asks its shard with `probe`. In the common case this reads
    /// the index without taking SQLite's write lock (it still holds this handle's
    /// state lock); when the row's shard lacks the key (a writer moved it meanwhile, or
    /// a crash left the row behind) it looks again under the write lock and drops a row
    /// that is really left behind.
    fn find(&self, key: &[u8], probe: &mut dyn FnMut(&FileCache) -> Result<bool>) -> Result<bool> {
        if let Some(found) = self.find_unlocked(key, probe) {
            return found;
        }
        self.with_state(|state| Self::find_in(state, key, probe))
    }

    /// The common case of [`ShardedCache::find`] without the handle's lock, so threads
    /// read in parallel: the index row through a read-only index connection, then the
    /// shard, if open, through its own read connections. Some(true) on a plain hit,
    /// Some(false) when the index has no row for the key (and is still the file the
    /// reader opened, as the locked way checks), the shard's error as the locked way
    /// would give it (a damaged value, say, which the shard has removed by now); None
    /// for anything else (an expired row, a shard not open, closed meanwhile or missing
    /// the key, an index read that failed, a busy or closed pool), which the locked way
    /// answers, reading again.
    ///
    /// As fresh as the locked way: the row is read in a transaction that begins after
    /// the call did, and a writer commits a key's shard before its index row.
    fn find_unlocked(
        &self,
        key: &[u8],
        probe: &mut dyn FnMut(&FileCache) -> Result<bool>,
    ) -> Option<Result<bool>> {
        // Inside the index readers' gate throughout, shard reads too: a fork waits for
        // this read to end (a shard opened during the fork is not locked for it).
        let _inside = self.index_readers.enter()?;
        let index_path = self.dir.join("index.db");
        let placement = self.index_readers.with_reader(|r| {
            let row = index::placement(&r.conn, key).ok()?;
            // Neither a miss nor a hit may come from an index another process has since
            // replaced: a miss checks each time, a hit now and then.
            let now = mono_coarse_now();
            let check_due = row.is_none()
                || now.saturating_sub(self.index_checked_at.load(Relaxed)) >= INDEX_CHECK_EVERY;
            if check_due {
                if file_id(&index_path) != Some(r.file) {
                    return None;
                }
                self.index_checked_at.store(now, Relaxed);
            }
            Some(row)
        })?;
        let Some(p) = placement else {
            self.index_readers.count(Lookup::Miss);
            return Some(Ok(false));
        };
        if p.is_expired_at(wall_now()) {
            return None;
        }
        let shard = self.visible.read().get(&p.shard).cloned()?;
        match probe(&shard) {
            Ok(true) => {
                self.index_readers.count(Lookup::Hit);
                Some(Ok(true))
            }
            Ok(false) => None,
            Err(e) if e.kind() == ErrorKind::Closed => None,
            Err(e) => Some(Err(e)),
        }
    }

    fn find_in(
        state: &mut State,
        key: &[u8],
        probe: &mut dyn FnMut(&FileCache) -> Result<bool>,
    ) -> Result<bool> {
        let now = wall_now();
        let lookup = match index::placement(state.index()?, key)? {
            // A miss may come from an index file another process has since replaced.
            None => {
                state.check_index_file()?;
                Lookup::Miss
            }
            Some(p) if p.is_expired_at(now) => remove_if_expired(state, key)?,
            Some(p) => {
                // The locked way is the slow one: the index file is checked every time.
                state.check_index_file()?;
                // Read outside the write lock, the row may name a shard another process
                // has just emptied and removed: then look again under the lock.
                let found = match state.shards.get_existing(p.shard)? {
                    Some(shard) => probe(shard)?,
                    None => false,
                };
                if found {
                    Lookup::Hit
                } else {
                    state.transaction(|tx, shards| match index::placement(tx, key)? {
                        None => Ok(Lookup::Miss),
                        Some(p) => {
                            if probe(shards.get(p.shard, false)?)? {
                                return Ok(Lookup::Hit);
                            }
                            index::remove(tx, key)?;
                            Ok(Lookup::Miss)
                        }
                    })?
                }
            }
        };
        Ok(state.stats.count_lookup(lookup))
    }
}

/// What a pop took from the index and its shard.
enum Taken {
    Miss,
    Expired,
    Hit(Vec<u8>, u32),
}

/// Removes `key` if it has expired by now (checked again under the write lock).
fn remove_if_expired(state: &mut State, key: &[u8]) -> Result<Lookup> {
    state.transaction(|tx, shards| {
        let now = wall_now();
        match index::placement(tx, key)? {
            Some(p) if p.is_expired_at(now) => {
                index::remove(tx, key)?;
                shards.get(p.shard, true)?.delete(key)?;
                Ok(Lookup::Expired)
            }
            _ => Ok(Lookup::Miss),
        }
    })
}

impl Backend for ShardedCache {
    fn set_flagged(&self, key: &[u8], value: &[u8], ttl: Ttl, flags: u32) -> Result<()> {
        let size = (key.len() + value.len()) as u64;
        check_fits(size, self.shard_size_limit, "a shard")?;
        if ttl.is_expired_at_once() {
            // Dead on arrival: it replaces (removes) the old value and is never stored.
            return self.with_state(|state| {
                let existed = state.transaction(|tx, _| {
                    let old = index::remove(tx, key)?;
                    if let Some(o) = old {
                        index::mark_stale(tx, o.shard, key)?;
                    }
                    Ok(old.is_some())
                })?;
                state.stats.count_dead_on_arrival(existed);
                Ok(())
            });
        }
        let entry = [Until {
            key,
            value,
            expires: ttl.deadline_from(wall_now()),
            flags,
        }];
        group_commit::commit(&self.waiting, &entry, |entries| {
            self.with_state(|state| self.put_many_in(state, entries))
        })
    }

    fn get_flagged(&self, key: &[u8], visit: &mut Visit) -> Result<bool> {
        self.get_to(key, &mut |value: &[u8], flags, _| visit(value, flags))
    }

    fn get_to(&self, key: &[u8], sink: &mut dyn Sink) -> Result<bool> {
        // What the shard returns goes to the read cache too, with its expiry (the
        // index's: a set gives the shard the same).
        read_cache::get_through(self.read_cache.as_deref(), key, sink, |sink| {
            self.find(key, &mut |shard| shard.read_entry(key, sink))
        })
    }

    fn has(&self, key: &[u8]) -> Result<bool> {
        self.find(key, &mut |shard| shard.has(key))
    }

    fn pop_flagged(&self, key: &[u8], visit: &mut Visit) -> Result<bool> {
        self.with_state(|state| Self::pop_in(state, key, visit))
    }

    fn delete(&self, key: &[u8]) -> Result<()> {
        self.with_state(|state| Self::delete_in(state, key))
            .map(|_| ())
    }

    fn delete_counted(&self, key: &[u8]) -> Result<bool> {
        self.with_state(|state| Self::delete_in(state, key))
    }

    fn update(&self, key: &[u8], decide: &mut Decide) -> Result<()> {
        let limit = self.shard_size_limit;
        self.with_state(|state| {
            let (stored, expired) = state.transaction(|tx, shards| {
                let now = wall_now();
                let old = index::placement(tx, key)?;
                let mut current = None;
                if let Some(p) = old.filter(|p| !p.is_expired_at(now)) {
                    shards
                        .get(p.shard, false)?
                        .get_flagged(key, &mut |v, flags| {
                            current = Some((v.to_vec(), flags));
                        })?;
                }
                let seen = current.as_ref().map(|(value, flags)| Current {
                    value,
                    flags: *flags,
                });
                let Change::Put { value, flags, ttl } = decide(seen)? else {
                    return Ok((false, 0));
                };
                let expires = match ttl {
                    Some(ttl) if ttl.is_expired_at_once() => {
                        if let Some(o) = index::remove(tx, key)? {
                            index::mark_stale(tx, o.shard, key)?;
                        }
                        return Ok((true, 0));
                    }
                    Some(ttl) => ttl.deadline_from(now),
                    None => old.and_then(|p| p.expires),
                };
                let size = (key.len() + value.len()) as u64;
                check_fits(size, limit, "a shard")?;
                let mut expired = 0;
                let shard = writable_shard(tx, shards, key, size, limit, old, &mut expired)?;
                shards
                    .get(shard, true)?
                    .set_until(key, &value, expires, flags)?;
                index::place(tx, key, shard, size, expires, old)?;
                Ok((true, expired))
            })?;
            state.stats.sets += stored as u64;
            state.stats.expirations += expired;
            Ok(())
        })
    }

    fn ttl(&self, key: &[u8]) -> Result<Option<Remaining>> {
        self.with_state(|state| {
            let now = wall_now();
            Ok(index::placement(state.index()?, key)?
                .filter(|p| !p.is_expired_at(now))
                .map(|p| match p.expires {
                    None => Remaining::Forever,
                    Some(at) => Remaining::Seconds(at - now),
                }))
        })
    }

    fn key_page(&self, prefix: &[u8], after: Option<&[u8]>) -> Result<KeyPage> {
        self.with_state(|state| sqlite::key_page(state.index()?, "keys", prefix, after, wall_now()))
    }

    fn purge_expired(&self) -> Result<u64> {
        self.with_state(|state| {
            let purged = state.transaction(purge_expired)?;
            state.stats.expirations += purged;
            Ok(purged)
        })
    }

    fn check_entry(&self, key: &[u8], value: &[u8]) -> Result<()> {
        check_fits(
            (key.len() + value.len()) as u64,
            self.shard_size_limit,
            "a shard",
        )
    }

    /// One index transaction places every entry; each shard's entries are written in
    /// one shard transaction before it commits. A failure before the index commit
    /// leaves only copies no row names (removed later), so nothing is stored — except
    /// in one case: when the index commit itself fails after a shard commit, the keys
    /// whose old copy was in that same shard read back their new values.
    fn set_many(&self, entries: &[EntryRef]) -> Result<()> {
        for e in entries {
            self.check_entry(e.key, e.value)?;
        }
        let now = wall_now();
        let puts: Vec<Until> = entries.iter().map(|e| Until::of(e, now)).collect();
        self.with_state(|state| self.put_many_in(state, &puts))
    }

    fn delete_many(&self, keys: &[&[u8]]) -> Result<u64> {
        let now = wall_now();
        self.with_state(|state| {
            let (live, expired) = state.transaction(|tx, _| {
                let (mut live, mut expired) = (0, 0);
                for key in keys {
                    if let Some(p) = index::remove(tx, key)? {
                        index::mark_stale(tx, p.shard, key)?;
                        if p.is_expired_at(now) {
                            expired += 1;
                        } else {
                            live += 1;
                        }
                    }
                }
                Ok((live, expired))
            })?;
            state.stats.deletes += live;
            state.stats.expirations += expired;
            Ok(live)
        })
    }

    fn clear(&self) -> Result<()> {
        self.with_state(|state| {
            let removed = state.transaction(|tx, shards| {
                let removed = index::clear(tx)?;
                for id in index::shard_ids(tx)? {
                    shards.get(id, true)?.clear()?;
                }
                Ok(removed)
            })?;
            state.stats.deletes += removed;
            Ok(())
        })
    }

    fn len(&self) -> Result<u64> {
        self.with_state(|state| index::live_count(state.index()?, wall_now()))
    }

    fn stats(&self) -> Result<Stats> {
        self.with_state(|state| {
            let index = state.index()?;
            let entries = index::live_count(index, wall_now())?;
            let (_, bytes) = index::totals(index)?;
            Ok(Stats {
                entries,
                bytes,
                hits: state.stats.hits
                    + self.index_readers.hits.load(Relaxed)
                    + self.read_cache.as_ref().map_or(0, |c| c.hits.load(Relaxed)),
                misses: state.stats.misses + self.index_readers.misses.load(Relaxed),
                ..state.stats
            })
        })
    }

    fn save(&self) -> Result<()> {
        self.with_state(|state| {
            state.index()?;
            state.shards.save_all()?;
            sqlite::sync(state.index()?)
        })
    }

    fn close(&self) -> Result<()> {
        self.index_readers.close();
        if let Some(cache) = &self.read_cache {
            cache.close();
        }
        let mut state = self.state.lock();
        let _holding = fork::HoldingLock::new(); // shards open under it
        if state.index.is_none() {
            return Ok(());
        }
        let _ = state.remove_all_stale(); // best effort, as at open
        let shards_closed = state.shards.close_all();
        let index = state.index.take().expect("checked above");
        let index_closed = index.close().map_err(|(_, e)| e.into());
        shards_closed.and(index_closed)
    }
}

impl ShardedCache {
    fn pop_in(state: &mut State, key: &[u8], visit: &mut Visit) -> Result<bool> {
        let now = wall_now();
        // Removing the row under the index lock is what makes the pop exactly-once
        // across processes. The shard's copy is only read here and recorded as stale,
        // for a later write to remove: the index commit is the one step that takes the
        // entry, so a pop that fails (at that commit or before) leaves it whole.
        let taken = state.transaction(|tx, shards| {
            let Some(p) = index::remove(tx, key)? else {
                return Ok(Taken::Miss);
            };
            index::mark_stale(tx, p.shard, key)?;
            if p.is_expired_at(now) {
                return Ok(Taken::Expired);
            }
            let mut value = None;
            shards
                .get(p.shard, false)?
                .get_flagged(key, &mut |v, flags| value = Some((v.to_vec(), flags)))?;
            Ok(value.map_or(Taken::Miss, |(v, flags)| Taken::Hit(v, flags)))
        })?;
        let lookup = match taken {
            Taken::Miss => Lookup::Miss,
            Taken::Expired => Lookup::Expired,
            Taken::Hit(value, flags) => {
                visit(&value, flags);
                Lookup::Hit
            }
        };
        let hit = state.stats.count_lookup(lookup);
        state.stats.deletes += hit as u64;
        Ok(hit)
    }

    fn delete_in(state: &mut State, key: &[u8]) -> Result<bool> {
        let now = wall_now();
        // As in pop: the index commit takes the entry, the copy is removed later.
        let lookup = state.transaction(|tx, _| {
            let Some(p) = index::remove(tx, key)? else {
                return Ok(Lookup::Miss);
            };
            index::mark_stale(tx, p.shard, key)?;
            Ok(if p.is_expired_at(now) {
                Lookup::Expired
            } else {
                Lookup::Hit
            })
        })?;
        state.stats.count_delete(lookup);
        Ok(lookup == Lookup::Hit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_sets_share_index_transactions_and_every_acknowledged_set_is_stored() {
        crate::group_commit::check_sets_share_transactions(
            |dir| ShardedCache::open(dir, 4096, 2).unwrap(),
            |cache| &cache.waiting,
        );
    }
}
