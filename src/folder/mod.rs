//! Key-as-folder persistent cache (the original `duck.utils.caching` KeyAsFolderCache): one sub-folder of the
//! cache directory per key, holding plain files, so one entry can be inspected, backed
//! up or deleted by hand.
//!
//! - Folder names come from the reversible encoding in [`naming`]; no key, whatever its
//!   bytes, names anything outside the directory.
//! - Each entry is a `value` file (the value byte for byte) and a `meta` file (the full
//!   key and the expiry); see [`entry`]. No database per key: the original module opens a SQLite
//!   store per key.
//! - Every call goes to the disk, so it sees what other processes wrote without
//!   reopening. Writes are atomic renames; pop renames the folder away first, which
//!   exactly one process can do.

mod batch;
mod entry;
pub mod naming;

pub use entry::STORE_MARK;

use crate::backend::{Backend, Change, Current, Decide, KeyPage, KeyVisit, Lookup, Remaining};
use crate::backend::{Stats, Visit, KEY_PAGE};
use crate::clock::wall_now;
use crate::error::{Error, ErrorKind, Result};
use crate::sink::Sink;
use crate::sync::fork;
use crate::sync::{Condvar, Mutex, RwLock};
use crate::ttl::Ttl;
use entry::{Meta, Root, TMP_PREFIX};
use std::collections::HashSet;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The limit used when 0 is given (the original `duck.utils.caching` DEFAULT_CACHE_OBJ_LIMIT).
pub const DEFAULT_MAX_CONCURRENT_OPS: u32 = 128;

/// A working folder older than this belongs to a writer that died.
const STALE_TMP: Duration = Duration::from_secs(120);

/// How often a lock-free read looks again when the folder it opened was replaced or
/// removed before it could read it (its metadata or value gone). Each retry means a
/// writer finished a replacement meanwhile; with two writers replacing a key without
/// pause, 3 attempts lost every race about once in 8,000 gets and answered NOT_FOUND for
/// a key that was always present. After the first few, each attempt yields first.
const READ_ATTEMPTS: usize = 64;

/// The key-as-folder persistent cache.
pub struct FolderCache {
    dir: PathBuf,
    /// How many operations of this handle may touch the disk at once (the C API's
    /// `max_open`): each holds at most three descriptors, so this bounds those too.
    max_concurrent_ops: u32,
    /// None once closed; operations hold the read side, close takes the write side.
    /// This and the locks below are registered with the fork handlers
    /// (`crate::sync::fork`), in this order.
    root: Arc<RwLock<Option<Root>>>,
    budget: DiskPermits,
    stats: Arc<Mutex<Stats>>,
    /// Entries written since the last save, to flush on save.
    unsynced: Arc<Mutex<HashSet<String>>>,
}

/// Bounds the operations touching the disk at once, and so the open descriptors.
struct DiskPermits {
    free: Arc<Mutex<u32>>,
    freed: Condvar,
}

struct Permit<'a>(&'a DiskPermits);

impl DiskPermits {
    fn acquire(&self) -> Permit<'_> {
        let mut free = self.free.lock();
        while *free == 0 {
            self.freed.wait(&mut free);
        }
        *free -= 1;
        Permit(self)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *self.0.free.lock() += 1;
        self.0.freed.notify_one();
    }
}

/// What reading an entry found.
enum Found {
    Absent,
    Expired,
    Live(Meta, Value),
    /// Taken away by a delete, though its metadata could not be read.
    Unreadable,
}

/// A value read from disk, or not read here (only the metadata was wanted, or the
/// value went to the caller's sink).
enum Value {
    Bytes(Vec<u8>),
    NotRead,
}

impl FolderCache {
    /// Opens the cache in `dir` (created owner-only, with parents, when missing). At
    /// most `max_concurrent_ops` operations of this handle touch the disk at once
    /// (0 = 128), each holding at most three descriptors.
    pub fn open(dir: impl AsRef<Path>, max_concurrent_ops: u32) -> Result<FolderCache> {
        let dir = dir.as_ref().to_owned();
        let root = Root::open(&dir)?;
        root.retry_leftovers();
        // Batches their writers decided before they died: completed (their working
        // folders are named in the journal, so this comes first).
        batch::complete_left_batches(&root, STALE_TMP)?;
        // Working folders of writers that died.
        for name in root.list()? {
            if name.starts_with(TMP_PREFIX) && root.is_older_than(&name, STALE_TMP) {
                root.discard(&name);
            }
        }
        let max_concurrent_ops = match max_concurrent_ops {
            0 => DEFAULT_MAX_CONCURRENT_OPS,
            n => n,
        };
        Ok(FolderCache {
            dir,
            max_concurrent_ops,
            root: fork::registered(fork::RANK_FOLDER, RwLock::new(Some(root))),
            budget: DiskPermits {
                free: fork::registered(fork::RANK_FOLDER, Mutex::new(max_concurrent_ops)),
                freed: Condvar::new(),
            },
            stats: fork::registered(fork::RANK_FOLDER, Mutex::new(Stats::default())),
            unsynced: fork::registered(fork::RANK_FOLDER, Mutex::new(HashSet::new())),
        })
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The bound on operations touching the disk at once.
    pub fn max_concurrent_ops(&self) -> u32 {
        self.max_concurrent_ops
    }

    /// The folder (under [`FolderCache::dir`]) that holds `key`.
    pub fn folder_name(key: &[u8]) -> String {
        naming::encode(key)
    }

    /// Runs `f` with the open directory, within the descriptor budget.
    fn with_root<R>(&self, f: impl FnOnce(&Root) -> Result<R>) -> Result<R> {
        let root = self.root.read();
        let root = root.as_ref().ok_or_else(Error::closed)?;
        let _permit = self.budget.acquire();
        // Before: an entry a failed pop is putting back is in place for this call.
        root.retry_leftovers();
        let result = f(root);
        root.retry_leftovers();
        result
    }

    /// Reads the entry of `key`, handing its value to `sink` when one is given. An
    /// expired entry is removed; a damaged one is reported once and removed.
    fn read(root: &Root, key: &[u8], mut sink: Option<&mut dyn Sink>) -> Result<Found> {
        let name = naming::encode(key);
        for attempt in 0..READ_ATTEMPTS {
            if attempt >= 4 {
                std::thread::yield_now();
            }
            let Some(folder) = root.open_folder(&name)? else {
                return Ok(Found::Absent);
            };
            let damaged = |e: Error| {
                if e.kind() == ErrorKind::Corrupt {
                    root.remove_instance(folder.as_fd(), &name);
                }
                e
            };
            // No metadata: the folder is being replaced or removed; look again.
            let Some(meta) = root.read_meta(folder.as_fd(), &name).map_err(damaged)? else {
                continue;
            };
            if meta.key != key {
                // Another key with the same hashed name.
                return Ok(Found::Absent);
            }
            if meta.is_expired_at(wall_now()) {
                root.remove_instance(folder.as_fd(), &name);
                return Ok(Found::Expired);
            }
            let Some(sink) = sink.as_deref_mut() else {
                return Ok(Found::Live(meta, Value::NotRead));
            };
            let mut file = root.value_file(folder.as_fd(), &name, &meta);
            // The value file gone: the entry is being replaced; look again.
            if sink
                .take_file(&mut file, meta.flags, None)
                .map_err(damaged)?
            {
                return Ok(Found::Live(meta, Value::NotRead));
            }
        }
        Ok(Found::Absent)
    }

    /// Takes the entry of `key` away (exactly one of any number of concurrent takers
    /// gets it) and reads it, then removes it.
    fn take(root: &Root, key: &[u8], want_value: bool) -> Result<Found> {
        let name = naming::encode(key);
        let tmp = Root::new_tmp_name();
        if !root.take(&name, &tmp)? {
            return Ok(Found::Absent);
        }
        let read = (|| -> Result<Found> {
            let Some(folder) = root.open_folder(&tmp)? else {
                return Ok(Found::Absent); // a planted link or file, now gone
            };
            let Some(meta) = root.read_meta(folder.as_fd(), &tmp)? else {
                return Ok(Found::Absent);
            };
            if meta.is_expired_at(wall_now()) {
                return Ok(Found::Expired);
            }
            if !want_value {
                return Ok(Found::Live(meta, Value::NotRead));
            }
            let bytes = root.read_value(folder.as_fd(), &tmp, &meta)?;
            Ok(bytes.map_or(Found::Absent, |b| Found::Live(meta, Value::Bytes(b))))
        })();
        let put_back = || root.put_back(&tmp, &name);
        match read {
            // Another key that shares a hashed name: put its entry back if nothing
            // has replaced it meanwhile.
            Ok(Found::Live(meta, _)) if meta.key != key => {
                put_back();
                Ok(Found::Absent)
            }
            // The entry could not be read (an I/O error, not damage): a pop that fails
            // must leave it as it was, so it goes back unless a newer one is there.
            Err(e) if want_value && e.kind() != ErrorKind::Corrupt => {
                put_back();
                Err(e)
            }
            // A delete takes effect at the rename: what the entry held no longer
            // matters.
            Err(e) if !want_value && e.kind() != ErrorKind::Corrupt => {
                root.discard(&tmp);
                Ok(Found::Unreadable)
            }
            read => {
                root.discard(&tmp);
                read
            }
        }
    }

    /// Calls `f` with the metadata of every entry on disk, its folder (pinned) and name.
    fn for_each_entry(root: &Root, mut f: impl FnMut(&Meta, BorrowedFd, &str)) -> Result<()> {
        for name in root.list()? {
            if !naming::is_entry_name(&name) {
                continue;
            }
            let Some(folder) = root.open_folder(&name)? else {
                continue;
            };
            // Damaged entries are reported when read, not here.
            if let Ok(Some(meta)) = root.read_meta(folder.as_fd(), &name) {
                f(&meta, folder.as_fd(), &name);
            }
        }
        Ok(())
    }

    /// The live entry held by the folder now at `name`, read through `folder`.
    fn live_in(root: &Root, folder: BorrowedFd, name: &str, key: &[u8]) -> Result<Option<Meta>> {
        Ok(root
            .read_meta(folder, name)?
            .filter(|m| m.key == key && !m.is_expired_at(wall_now())))
    }

    /// Writes an entry for `key` into a new working folder and returns its name.
    fn write_entry(
        root: &Root,
        key: &[u8],
        value: &[u8],
        expires: Option<f64>,
        flags: u32,
    ) -> Result<String> {
        let meta = Meta {
            key: key.to_vec(),
            value_len: value.len() as u64,
            expires,
            flags,
        };
        let tmp = Root::new_tmp_name();
        root.write_tmp(&tmp, &meta, value)?;
        Ok(tmp)
    }

    /// Installs the written entry `tmp` at `name` in place of the entry `expected` (the
    /// folder read, by inode; None: no entry) under the update lock. False when another
    /// writer changed the entry since it was read (the caller reads again); `tmp` is
    /// then gone.
    fn replace_if_unchanged(
        root: &Root,
        tmp: &str,
        name: &str,
        expected: Option<u64>,
    ) -> Result<bool> {
        let Some(expected) = expected else {
            if root.place_new(tmp, name)? {
                return Ok(true);
            }
            root.discard(tmp);
            return Ok(false);
        };
        // Look before swapping: a pop or another writer may have replaced the entry
        // since it was read (the folder read may even be one a pop has since removed).
        // Swapping first and swapping back on a mismatch showed the new entry for a
        // moment, where a racing pop could take it while this write then reported
        // that it stored nothing (test_v2's pop/add race on the folder kind, under
        // valgrind). What is left is the moment between this look and the swap.
        let current = root.open_folder(name)?.map(|fd| inode(fd.as_fd()));
        if current != Some(expected) || !root.exchange(tmp, name)? {
            root.discard(tmp); // changed or popped meanwhile: read again
            return Ok(false);
        }
        // `tmp` now holds what was at `name`.
        let displaced = root.open_folder(tmp)?.map(|fd| inode(fd.as_fd()));
        if displaced == Some(expected) {
            root.discard(tmp);
            return Ok(true);
        }
        // A set or an add got in between: put its entry back, then read again.
        let _ = root.exchange(tmp, name);
        root.discard(tmp);
        Ok(false)
    }

    fn count(&self, read: &Found) -> bool {
        self.stats.lock().count_lookup(lookup_of(read))
    }
}

fn lookup_of(read: &Found) -> Lookup {
    match read {
        Found::Absent => Lookup::Miss,
        Found::Expired => Lookup::Expired,
        Found::Live(..) | Found::Unreadable => Lookup::Hit,
    }
}

impl Backend for FolderCache {
    fn set_flagged(&self, key: &[u8], value: &[u8], ttl: Ttl, flags: u32) -> Result<()> {
        if ttl.is_expired_at_once() {
            // Dead on arrival: it replaces (removes) the old value and is never stored.
            let old = self.with_root(|root| Self::take(root, key, false))?;
            let replaced = !matches!(old, Found::Absent);
            self.stats.lock().count_dead_on_arrival(replaced);
            return Ok(());
        }
        let meta = Meta {
            key: key.to_vec(),
            value_len: value.len() as u64,
            expires: ttl.deadline_from(wall_now()),
            flags,
        };
        let name = naming::encode(key);
        self.with_root(|root| {
            let tmp = Root::new_tmp_name();
            root.write_tmp(&tmp, &meta, value)?;
            root.install(&tmp, &name)
                .inspect_err(|_| root.discard(&tmp))
        })?;
        self.unsynced.lock().insert(name);
        self.stats.lock().sets += 1;
        Ok(())
    }

    fn get_flagged(&self, key: &[u8], visit: &mut Visit) -> Result<bool> {
        self.get_to(key, &mut |value: &[u8], flags, _| visit(value, flags))
    }

    fn get_to(&self, key: &[u8], sink: &mut dyn Sink) -> Result<bool> {
        let read = self.with_root(|root| Self::read(root, key, Some(sink)))?;
        Ok(self.count(&read))
    }

    fn has(&self, key: &[u8]) -> Result<bool> {
        let read = self.with_root(|root| Self::read(root, key, None))?;
        Ok(self.count(&read))
    }

    fn entry_path(&self, key: &[u8]) -> Result<Option<std::path::PathBuf>> {
        self.root.read().as_ref().ok_or_else(Error::closed)?;
        Ok(Some(self.dir.join(naming::encode(key))))
    }

    /// All or nothing, even under a full disk or a kill (see [`batch`]).
    fn set_many(&self, entries: &[crate::backend::EntryRef]) -> Result<()> {
        let now = wall_now();
        // The last entry of each key wins.
        let mut last: std::collections::HashMap<&[u8], usize> = std::collections::HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            last.insert(e.key, i);
        }
        let mut order: Vec<usize> = last.into_values().collect();
        order.sort_unstable();
        let planned: Vec<batch::Planned> = order
            .iter()
            .map(|&i| {
                let e = &entries[i];
                batch::Planned {
                    name: naming::encode(e.key),
                    meta: Meta {
                        key: e.key.to_vec(),
                        value_len: e.value.len() as u64,
                        expires: e.ttl.deadline_from(now),
                        flags: e.flags,
                    },
                    value: (!e.ttl.is_expired_at_once()).then_some(e.value),
                }
            })
            .collect();
        self.with_root(|root| batch::set_all(root, &planned))?;
        let mut unsynced = self.unsynced.lock();
        for p in &planned {
            unsynced.insert(p.name.clone());
        }
        drop(unsynced);
        self.stats.lock().sets += entries.len() as u64;
        Ok(())
    }

    fn pop_flagged(&self, key: &[u8], visit: &mut Visit) -> Result<bool> {
        let read = self.with_root(|root| Self::take(root, key, true))?;
        if let Found::Live(meta, Value::Bytes(bytes)) = &read {
            visit(bytes, meta.flags);
        }
        let hit = self.count(&read);
        self.stats.lock().deletes += hit as u64;
        Ok(hit)
    }

    fn delete(&self, key: &[u8]) -> Result<()> {
        let read = self.with_root(|root| Self::take(root, key, false))?;
        self.stats.lock().count_delete(lookup_of(&read));
        Ok(())
    }

    fn clear(&self) -> Result<()> {
        let removed = self.with_root(|root| {
            let mut removed = 0;
            for name in root.list()? {
                // Only entries go: a name that could be a key but holds something else
                // (a user's file or folder in a directory opened as a cache) stays.
                if !naming::is_entry_name(&name) || !Self::holds_an_entry(root, &name)? {
                    continue;
                }
                let tmp = Root::new_tmp_name();
                if root.take(&name, &tmp)? {
                    removed += 1;
                    root.discard(&tmp);
                }
            }
            Ok(removed)
        })?;
        self.stats.lock().deletes += removed;
        Ok(())
    }

    fn len(&self) -> Result<u64> {
        Ok(self.stats()?.entries)
    }

    fn stats(&self) -> Result<Stats> {
        let now = wall_now();
        let (entries, bytes) = self.with_root(|root| {
            let (mut entries, mut bytes) = (0, 0);
            Self::for_each_entry(root, |meta, _, _| {
                if !meta.is_expired_at(now) {
                    entries += 1;
                    bytes += meta.key.len() as u64 + meta.value_len;
                }
            })?;
            Ok((entries, bytes))
        })?;
        Ok(Stats {
            entries,
            bytes,
            ..*self.stats.lock()
        })
    }

    fn save(&self) -> Result<()> {
        self.with_root(|root| {
            let names: Vec<String> = self.unsynced.lock().drain().collect();
            for (i, name) in names.iter().enumerate() {
                if let Err(e) = root.sync_entry(name) {
                    self.unsynced.lock().extend(names[i..].iter().cloned());
                    return Err(e);
                }
            }
            root.sync()
        })
    }

    fn close(&self) -> Result<()> {
        if let Some(root) = self.root.write().take() {
            root.retry_leftovers();
        }
        Ok(())
    }

    /// Under the directory's update lock: read the entry (and the inode of its
    /// folder), decide, write the new entry aside, and swap it in only if the folder at
    /// the name is still the one read (a set or pop that got in between makes it start
    /// over).
    fn update(&self, key: &[u8], decide: &mut Decide) -> Result<()> {
        let name = naming::encode(key);
        let stored = self.with_root(|root| {
            let _lock = root.lock_updates()?;
            for _ in 0..64 {
                let folder = root.open_folder(&name)?;
                let (live, ino) = match &folder {
                    None => (None, None),
                    Some(fd) => {
                        let meta = Self::live_in(root, fd.as_fd(), &name, key)?;
                        let value = match &meta {
                            Some(m) => root.read_value(fd.as_fd(), &name, m)?,
                            None => None,
                        };
                        (meta.zip(value), Some(inode(fd.as_fd())))
                    }
                };
                let current = live.as_ref().map(|(m, v)| Current {
                    value: v,
                    flags: m.flags,
                });
                let Change::Put { value, flags, ttl } = decide(current)? else {
                    return Ok(false);
                };
                let expires = match ttl {
                    Some(ttl) if ttl.is_expired_at_once() => {
                        Self::take(root, key, false)?;
                        return Ok(true);
                    }
                    Some(ttl) => ttl.deadline_from(wall_now()),
                    None => live.as_ref().and_then(|(m, _)| m.expires),
                };
                let tmp = Self::write_entry(root, key, &value, expires, flags)?;
                if Self::replace_if_unchanged(root, &tmp, &name, ino)? {
                    return Ok(true);
                }
            }
            Err(self.kept_replacing(&name))
        })?;
        self.count_stored(stored, name);
        Ok(())
    }

    /// A live entry makes the add lose at once; an empty name is taken with an
    /// exclusive rename (exactly one of any number of adders gets it); an expired
    /// entry is replaced under the update lock.
    fn add_flagged(&self, key: &[u8], value: &[u8], ttl: Ttl, flags: u32) -> Result<bool> {
        if self.has_quietly(key)? {
            return Ok(false);
        }
        if ttl.is_expired_at_once() {
            return Ok(true); // stored and dead at once: nothing to write
        }
        let name = naming::encode(key);
        let expires = ttl.deadline_from(wall_now());
        let stored = self.with_root(|root| {
            let mut tmp = Self::write_entry(root, key, value, expires, flags)?;
            if root.place_new(&tmp, &name)? {
                return Ok(true);
            }
            let _lock = root.lock_updates()?;
            for _ in 0..64 {
                let ino = match root.open_folder(&name)? {
                    None if root.place_new(&tmp, &name)? => return Ok(true),
                    None => continue,
                    Some(fd) => {
                        if Self::live_in(root, fd.as_fd(), &name, key)?.is_some() {
                            root.discard(&tmp);
                            return Ok(false);
                        }
                        inode(fd.as_fd())
                    }
                };
                // An expired entry (or another key's with the same hashed name).
                if Self::replace_if_unchanged(root, &tmp, &name, Some(ino))? {
                    return Ok(true);
                }
                tmp = Self::write_entry(root, key, value, expires, flags)?;
            }
            root.discard(&tmp);
            Err(self.kept_replacing(&name))
        })?;
        self.count_stored(stored, name);
        Ok(stored)
    }

    fn ttl(&self, key: &[u8]) -> Result<Option<Remaining>> {
        let now = wall_now();
        match self.with_root(|root| Self::read(root, key, None))? {
            Found::Live(meta, _) => Ok(Some(match meta.expires {
                None => Remaining::Forever,
                Some(at) => Remaining::Seconds(at - now),
            })),
            _ => Ok(None),
        }
    }

    /// Folder names are in no order: a page is the live keys among the next entries
    /// of one listing, the position the count of names already passed. `keys` and
    /// `delete_prefix` stream the directory instead.
    fn key_page(&self, prefix: &[u8], after: Option<&[u8]>) -> Result<KeyPage> {
        let skip = match after {
            None => 0,
            Some(p) => u64::from_be_bytes(
                p.try_into()
                    .map_err(|_| Error::invalid_arg("not a position of this cache's walk"))?,
            ),
        };
        let names = self.with_root(|root| root.list())?;
        let names: Vec<&String> = names.iter().filter(|n| naming::is_entry_name(n)).collect();
        let end = (skip as usize + KEY_PAGE).min(names.len());
        let keys = self.live_keys(
            names
                .get(skip as usize..end)
                .unwrap_or_default()
                .iter()
                .map(|n| n.as_str()),
            prefix,
        )?;
        let next = (end < names.len()).then(|| (end as u64).to_be_bytes().to_vec());
        Ok(KeyPage { keys, next })
    }

    fn keys(&self, prefix: &[u8], visit: &mut KeyVisit) -> Result<()> {
        self.stream_keys(prefix, &mut |keys| {
            for key in keys {
                if !visit(&key) {
                    return Ok(false);
                }
            }
            Ok(true)
        })
    }

    fn delete_prefix(&self, prefix: &[u8]) -> Result<u64> {
        let mut deleted = 0;
        self.stream_keys(prefix, &mut |keys| {
            let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
            deleted += self.delete_many(&keys)?;
            Ok(true)
        })?;
        Ok(deleted)
    }

    fn purge_expired(&self) -> Result<u64> {
        let now = wall_now();
        let purged = self.with_root(|root| {
            let mut purged = 0;
            Self::for_each_entry(root, |meta, folder, name| {
                // Counted only by the purge that removed it (two processes purging at
                // once counted 2,186-2,389 removals of 2,000 entries).
                if meta.is_expired_at(now) && root.remove_instance(folder, name) {
                    purged += 1;
                }
            })?;
            Ok(purged)
        })?;
        self.stats.lock().expirations += purged;
        Ok(purged)
    }

    fn delete_counted(&self, key: &[u8]) -> Result<bool> {
        let read = self.with_root(|root| Self::take(root, key, false))?;
        let lookup = lookup_of(&read);
        self.stats.lock().count_delete(lookup);
        Ok(lookup == Lookup::Hit)
    }
}

/// The inode of an open folder (to tell whether the name still holds the folder read).
fn inode(fd: BorrowedFd) -> u64 {
    rustix::fs::fstat(fd).map_or(0, |st| st.st_ino)
}

impl FolderCache {
    /// Checks every name in the directory: an entry folder's name decodes, its metadata
    /// parses and names the key the folder's name encodes, its value has the length the
    /// metadata says; names that are no entry are reported. With `repair`, damaged
    /// entries are removed (foreign names are left: they may be someone's files).
    pub fn check(&self, repair: bool) -> Result<Vec<String>> {
        self.with_root(|root| {
            let mut found = Vec::new();
            for name in root.list()? {
                if name.starts_with(TMP_PREFIX)
                    || name.starts_with(batch::JOURNAL_PREFIX)
                    || name == STORE_MARK
                {
                    // A working folder (removed at open when stale), a batch's journal
                    // (completed at open), the mark.
                    continue;
                }
                if !naming::is_entry_name(&name) {
                    found.push(format!("{name}: not an entry name (left alone)"));
                    continue;
                }
                let Some(folder) = root.open_folder(&name)? else {
                    found.push(format!("{name}: not a folder (left alone)"));
                    continue;
                };
                let problem = match root.read_meta(folder.as_fd(), &name) {
                    Err(e) => Some(e.message().to_owned()),
                    Ok(None) => {
                        // No metadata: not an entry (someone's folder), or one caught
                        // mid-replacement; either way not this check's to remove.
                        found.push(format!("{name}: a folder with no metadata (left alone)"));
                        continue;
                    }
                    Ok(Some(meta)) if naming::encode(&meta.key) != name => {
                        Some("its metadata names another key".to_owned())
                    }
                    Ok(Some(meta)) => match root.read_value(folder.as_fd(), &name, &meta) {
                        Ok(Some(_)) => None,
                        Ok(None) => Some("no value file".to_owned()),
                        Err(e) => Some(e.message().to_owned()),
                    },
                };
                if let Some(problem) = problem {
                    found.push(format!(
                        "{name}: {problem}{}",
                        if repair { "; removed" } else { "" }
                    ));
                    if repair {
                        root.remove_instance(folder.as_fd(), &name);
                    }
                }
            }
            Ok(found)
        })
    }

    /// Entries that have expired but are still on disk.
    pub fn expired_entries(&self) -> Result<u64> {
        let now = wall_now();
        self.with_root(|root| {
            let mut expired = 0;
            Self::for_each_entry(root, |meta, _, _| expired += meta.is_expired_at(now) as u64)?;
            Ok(expired)
        })
    }

    /// The error of a read-modify-write that lost every race with other writers.
    fn kept_replacing(&self, name: &str) -> Error {
        Error::new(
            ErrorKind::Busy,
            format!(
                "{}: other writers kept replacing the entry",
                self.dir.join(name).display()
            ),
        )
    }

    /// After a write that `stored` the entry `name`: synced on save, counted.
    fn count_stored(&self, stored: bool, name: String) {
        if stored {
            self.unsynced.lock().insert(name);
            self.stats.lock().sets += 1;
        }
    }

    /// `has` without counting a hit or miss.
    fn has_quietly(&self, key: &[u8]) -> Result<bool> {
        Ok(matches!(
            self.with_root(|root| Self::read(root, key, None))?,
            Found::Live(..)
        ))
    }

    /// True when `name` is a folder whose metadata names the key `name` encodes (or is
    /// damaged: an entry of this cache that a read would report and remove); false for
    /// a plain file, a link, or a folder with no metadata.
    fn holds_an_entry(root: &Root, name: &str) -> Result<bool> {
        let Some(folder) = root.open_folder(name)? else {
            return Ok(false);
        };
        match root.read_meta(folder.as_fd(), name) {
            Ok(Some(meta)) => Ok(naming::encode(&meta.key) == name),
            Ok(None) => Ok(false),
            Err(e) if e.kind() == ErrorKind::Corrupt => Ok(true),
            // Not known (a read failed): the clear fails rather than leave an entry.
            Err(e) => Err(e),
        }
    }

    /// The live keys starting with `prefix` among the entry folders `names`.
    fn live_keys<'a>(
        &self,
        names: impl Iterator<Item = &'a str>,
        prefix: &[u8],
    ) -> Result<Vec<Vec<u8>>> {
        let now = wall_now();
        self.with_root(|root| {
            let mut keys = Vec::new();
            for name in names {
                // A plain name is its key: skip the others without reading them.
                if let Some(key) = naming::decode(name) {
                    if !key.starts_with(prefix) {
                        continue;
                    }
                }
                // A folder replaced between the open and the read has no metadata any
                // more: look again (a key only ever overwritten was missed otherwise).
                for attempt in 0..READ_ATTEMPTS {
                    if attempt >= 4 {
                        std::thread::yield_now();
                    }
                    let Some(folder) = root.open_folder(name)? else {
                        break;
                    };
                    match root.read_meta(folder.as_fd(), name) {
                        Ok(Some(meta)) => {
                            if !meta.is_expired_at(now) && meta.key.starts_with(prefix) {
                                keys.push(meta.key);
                            }
                            break;
                        }
                        Ok(None) => continue,
                        Err(_) => break, // damaged: a get reports and removes it
                    }
                }
            }
            Ok(keys)
        })
    }

    /// Reads the directory a page of names at a time through its own descriptor, and
    /// hands each page's live keys to `f` with no lock held; stops when `f` says false.
    fn stream_keys(
        &self,
        prefix: &[u8],
        f: &mut dyn FnMut(Vec<Vec<u8>>) -> Result<bool>,
    ) -> Result<()> {
        let dir_fd = self.with_root(|root| root.reopen())?;
        let mut dir = rustix::fs::Dir::read_from(&dir_fd)
            .map_err(|e| Error::io(e.into(), "cannot list", &self.dir))?;
        loop {
            let mut names = Vec::with_capacity(KEY_PAGE);
            while names.len() < KEY_PAGE {
                match dir.read() {
                    None => break,
                    Some(entry) => {
                        let entry =
                            entry.map_err(|e| Error::io(e.into(), "cannot list", &self.dir))?;
                        if let Ok(name) = entry.file_name().to_str() {
                            if naming::is_entry_name(name) {
                                names.push(name.to_owned());
                            }
                        }
                    }
                }
            }
            let done = names.len() < KEY_PAGE;
            let keys = self.live_keys(names.iter().map(String::as_str), prefix)?;
            if !f(keys)? || done {
                return Ok(());
            }
        }
    }
}
