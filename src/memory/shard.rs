//! One shard of the memory cache: its slab, its hash index, its counters, and the stamp
//! of its least recently used entry published for the cross-shard evictor.

use super::slab::{Node, Slab, NIL, NO_STAMP};
use crate::backend::Stats;
use crate::clock::{mono_expired, mono_now, MonoDeadline, NO_DEADLINE};
use crate::error::{Error, Result};
use crate::ffi::fork::{ForkLocks, ForkMutex};
use crate::sync::{Mutex, MutexGuard};
use crossbeam_utils::CachePadded;
use hashbrown::{DefaultHashBuilder, HashTable};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// Why an entry leaves a shard; decides which counter it goes to.
#[derive(Clone, Copy)]
pub(super) enum Removal {
    Deleted,
    Evicted,
    Expired,
}

pub(super) struct Shard {
    hasher: DefaultHashBuilder,
    /// Keeps the recency list (the cache has a key bound).
    pub bounded: bool,
    pub closed: bool,
    index: HashTable<u32>,
    pub slab: Slab,
    /// The oldest stamp last stored in the shard's published atomic.
    published_oldest: u64,
    /// Occupied slots, expired-but-not-yet-removed ones included.
    pub occupied: u64,
    /// Occupied slots with a deadline; when 0, `len` needs no scan.
    with_deadline: u64,
    /// Bytes of keys and values held.
    pub bytes: u64,
    /// The cache's stamp counter, shared by its shards.
    clock: Arc<CachePadded<AtomicU64>>,
    /// Hits, misses and the other counters (`entries` and `bytes` are filled in when
    /// the stats are read).
    pub stats: Stats,
}

impl Shard {
    pub fn new(
        hasher: DefaultHashBuilder,
        bounded: bool,
        clock: Arc<CachePadded<AtomicU64>>,
    ) -> Self {
        Shard {
            hasher,
            bounded,
            closed: false,
            index: HashTable::new(),
            slab: Slab::new(),
            published_oldest: NO_STAMP,
            occupied: 0,
            with_deadline: 0,
            bytes: 0,
            clock,
            stats: Stats::default(),
        }
    }

    pub fn check_open(&self) -> Result<()> {
        if self.closed {
            Err(Error::closed())
        } else {
            Ok(())
        }
    }

    pub fn find(&self, hash: u64, key: &[u8]) -> Option<u32> {
        let slab = &self.slab;
        self.index
            .find(hash, |&slot| slab.node(slot).key() == key)
            .copied()
    }

    pub fn node(&self, slot: u32) -> &Node {
        self.slab.node(slot)
    }

    /// The next stamp: later than every touch that happened before this one.
    fn next_stamp(&mut self) -> u64 {
        self.clock.fetch_add(1, Relaxed) + 1
    }

    /// Makes `slot` the most recently used entry.
    pub fn touch(&mut self, slot: u32) {
        if self.bounded {
            let stamp = self.next_stamp();
            self.slab.move_to_front(slot, stamp);
        }
    }

    /// Stores `data` (key then value) under the key, replacing any earlier entry, and makes
    /// it the most recently used.
    pub fn upsert(
        &mut self,
        hash: u64,
        key_len: u32,
        data: Box<[u8]>,
        deadline: MonoDeadline,
        flags: u32,
    ) -> Result<()> {
        let added = data.len() as u64;
        let has_deadline = (deadline != NO_DEADLINE) as u64;
        if let Some(slot) = self.find(hash, &data[..key_len as usize]) {
            let n = self.slab.node_mut(slot);
            let old_len = std::mem::replace(&mut n.data, data).len() as u64;
            let had_deadline = (n.deadline != NO_DEADLINE) as u64;
            n.deadline = deadline;
            n.flags = flags;
            self.bytes = self.bytes - old_len + added;
            self.with_deadline = self.with_deadline - had_deadline + has_deadline;
            self.touch(slot);
            return Ok(());
        }
        let slot = self
            .slab
            .allocate(Node::new(data, key_len, deadline, flags))?;
        let Shard {
            index,
            slab,
            hasher,
            ..
        } = self;
        index.insert_unique(hash, slot, |&s| hasher.hash_one(slab.node(s).key()));
        if self.bounded {
            let stamp = self.next_stamp();
            self.slab.push_front(slot, stamp);
        }
        self.occupied += 1;
        self.bytes += added;
        self.with_deadline += has_deadline;
        Ok(())
    }

    /// Gives the entry in `slot` a new deadline, its recency unchanged.
    pub fn set_deadline(&mut self, slot: u32, deadline: MonoDeadline) {
        let node = self.slab.node_mut(slot);
        let had = (node.deadline != NO_DEADLINE) as u64;
        node.deadline = deadline;
        self.with_deadline = self.with_deadline - had + (deadline != NO_DEADLINE) as u64;
    }

    /// Removes the entry in `slot` and counts it under `why`.
    pub fn remove(&mut self, slot: u32, why: Removal) {
        let hash = self.hasher.hash_one(self.slab.node(slot).key());
        if let Ok(entry) = self.index.find_entry(hash, |&s| s == slot) {
            entry.remove();
        }
        if self.bounded {
            self.slab.unlink(slot);
        }
        let gone = self.slab.release(slot);
        self.bytes -= gone.data.len() as u64;
        if gone.deadline != NO_DEADLINE {
            self.with_deadline -= 1;
        }
        self.occupied -= 1;
        match why {
            Removal::Deleted => self.stats.deletes += 1,
            Removal::Evicted => self.stats.evictions += 1,
            Removal::Expired => self.stats.expirations += 1,
        }
    }

    /// Removes the entry in `slot` as deleted, or as expired when its deadline passed.
    pub fn delete(&mut self, slot: u32) {
        let why = if self.is_expired(slot) {
            Removal::Expired
        } else {
            Removal::Deleted
        };
        self.remove(slot, why);
    }

    /// True when the entry in `slot` has a deadline that has passed. Reads the clock only
    /// for entries that have a deadline.
    pub fn is_expired(&self, slot: u32) -> bool {
        crate::clock::mono_expired_now(self.slab.node(slot).deadline)
    }

    /// The live entry of `key`, an expired one removed; no hit or miss counted.
    pub fn find_live(&mut self, hash: u64, key: &[u8]) -> Option<u32> {
        match self.find(hash, key) {
            Some(slot) if self.is_expired(slot) => {
                self.remove(slot, Removal::Expired);
                None
            }
            found => found,
        }
    }

    /// The live entry of `key`, removing it first (and counting a miss) when it expired.
    pub fn lookup_live(&mut self, hash: u64, key: &[u8]) -> Option<u32> {
        let live = self.find_live(hash, key);
        if live.is_some() {
            self.stats.hits += 1;
        } else {
            self.stats.misses += 1;
        }
        live
    }

    /// Removes every expired entry; returns how many went.
    pub fn purge_expired(&mut self) -> u64 {
        if self.with_deadline == 0 {
            return 0;
        }
        let now = mono_now();
        let mut purged = 0;
        for slot in 0..self.slab.capacity() {
            let n = self.slab.node(slot);
            if !n.is_vacant() && mono_expired(n.deadline, now) {
                self.remove(slot, Removal::Expired);
                purged += 1;
            }
        }
        purged
    }

    /// Drops every entry; returns how many there were.
    pub fn reset(&mut self) -> u64 {
        let removed = self.occupied;
        self.index = HashTable::new();
        self.slab.reset();
        self.occupied = 0;
        self.with_deadline = 0;
        self.bytes = 0;
        removed
    }

    /// This shard's counters with its current size.
    pub fn stats(&self) -> Stats {
        Stats {
            entries: self.occupied,
            bytes: self.bytes,
            ..self.stats
        }
    }

    /// Checks the slab, the index and the totals against each other (the model tests).
    pub fn check(&self) -> std::result::Result<(), String> {
        let occupied = self.slab.check(self.bounded)?;
        if occupied != self.occupied || self.index.len() as u64 != occupied {
            return Err(format!(
                "{occupied} occupied slots, {} counted, {} indexed",
                self.occupied,
                self.index.len()
            ));
        }
        let (mut bytes, mut with_deadline) = (0, 0);
        for slot in 0..self.slab.capacity() {
            let n = self.slab.node(slot);
            if n.is_vacant() {
                continue;
            }
            bytes += n.data.len() as u64;
            with_deadline += (n.deadline != NO_DEADLINE) as u64;
            if self.find(self.hasher.hash_one(n.key()), n.key()) != Some(slot) {
                return Err(format!("slot {slot} is not found by its key"));
            }
        }
        if bytes != self.bytes || with_deadline != self.with_deadline {
            return Err(format!(
                "{bytes} bytes and {with_deadline} deadlines held, {} and {} counted",
                self.bytes, self.with_deadline
            ));
        }
        if !self.bounded && self.slab.tail() != NIL {
            return Err("an unbounded shard keeps a recency list".into());
        }
        Ok(())
    }
}

/// A shard and the stamp it publishes.
pub(super) struct ShardCell {
    pub shard: Mutex<Shard>,
    /// Stamp of the shard's least recently used entry ([`NO_STAMP`] when empty),
    /// published under the lock and read without it by the evictor.
    pub published: AtomicU64,
}

impl ShardCell {
    pub fn new(shard: Shard) -> Self {
        ShardCell {
            shard: Mutex::new(shard),
            published: AtomicU64::new(NO_STAMP),
        }
    }

    /// The shard, locked; its oldest stamp is republished when the guard is dropped.
    pub fn lock(&self) -> ShardGuard<'_> {
        ShardGuard {
            guard: self.shard.lock(),
            published: &self.published,
        }
    }
}

/// The shards of one cache.
pub(super) struct Shards(pub Box<[CachePadded<ShardCell>]>);

impl std::ops::Deref for Shards {
    type Target = [CachePadded<ShardCell>];
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl ForkLocks for Shards {
    fn fork_mutexes(&self) -> Vec<&dyn ForkMutex> {
        self.0
            .iter()
            .map(|cell| &cell.shard as &dyn ForkMutex)
            .collect()
    }
}

/// A locked shard that republishes its oldest stamp when released.
pub(super) struct ShardGuard<'a> {
    guard: MutexGuard<'a, Shard>,
    published: &'a AtomicU64,
}

impl Drop for ShardGuard<'_> {
    fn drop(&mut self) {
        let shard = &mut *self.guard;
        let oldest = shard.slab.oldest_stamp();
        if shard.bounded && oldest != shard.published_oldest {
            shard.published_oldest = oldest;
            self.published.store(oldest, Relaxed);
        }
    }
}

impl std::ops::Deref for ShardGuard<'_> {
    type Target = Shard;
    fn deref(&self) -> &Shard {
        &self.guard
    }
}

impl std::ops::DerefMut for ShardGuard<'_> {
    fn deref_mut(&mut self) -> &mut Shard {
        &mut self.guard
    }
}
