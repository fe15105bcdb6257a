//! One shard of the memory cache: its slab, its hash index, its counters, and the stamps
//! of its lists' oldest entries published for the cross-shard evictor.

use super::entry::Entry;
use super::s3fifo::{S3Fifo, PROMOTE_AT};
use super::slab::{Node, Slab, MAIN, MAX_FREQ, NIL, NO_STAMP, SMALL};
use crate::backend::Stats;
use crate::clock::{mono_expired, mono_now, MonoDeadline, NO_DEADLINE};
use crate::error::{Error, Result};
use crate::sync::fork::{ForkLocks, ForkMutex};
use crate::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
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

/// The order a bounded cache evicts in; the shard keeps its lists for it.
#[derive(Clone)]
pub(super) enum Order {
    /// No bound: no lists, nothing to evict.
    Unbounded,
    /// Exact LRU: one list, every touch moves the entry to the front.
    Lru,
    /// S3-FIFO: the small and main queues; a touch raises the access count.
    S3Fifo(Arc<S3Fifo>),
}

/// What one step of eviction on a shard did (see [`Shard::evict_step`]).
pub(super) enum Step {
    /// The list's oldest entry no longer carries the stamp the evictor saw: look again.
    Moved,
    /// The entry went back into a queue (S3-FIFO's second chance): go on evicting.
    Requeued,
    /// An entry of this many bytes left the cache.
    Removed(u64),
}

pub(super) struct Shard {
    hasher: DefaultHashBuilder,
    pub order: Order,
    pub closed: bool,
    index: HashTable<u32>,
    pub slab: Slab,
    /// The oldest stamps last stored in the shard's published atomics.
    published_oldest: [u64; 2],
    /// Occupied slots, expired-but-not-yet-removed ones included.
    pub occupied: u64,
    /// Occupied slots with a deadline; when 0, `len` needs no scan.
    with_deadline: u64,
    /// Bytes of keys and values held.
    pub bytes: u64,
    /// The cache's stamp counter, shared by its shards.
    clock: Arc<CachePadded<AtomicU64>>,
    /// The counters other than hits and misses (`entries` and `bytes` are filled in
    /// when the stats are read).
    pub stats: Stats,
    /// Hits and misses: atomic, because S3-FIFO's gets count them under the shard's
    /// shared lock ([`Shard::count_lookup_shared`]).
    hits: AtomicU64,
    misses: AtomicU64,
}

/// `a == b` without a call to memcmp for keys of up to 32 bytes: two overlapping word
/// compares. Most keys are short, and on a get that call was a twentieth of the
/// instructions (and every instruction between one get's cache misses and the next's
/// counts; see `MemoryCache::read_live`).
#[inline]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if (8..=16).contains(&n) {
        let word = |s: &[u8], at: usize| u64::from_ne_bytes(s[at..at + 8].try_into().unwrap());
        word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8)
    } else if (16..=32).contains(&n) {
        let word = |s: &[u8], at: usize| u128::from_ne_bytes(s[at..at + 16].try_into().unwrap());
        word(a, 0) == word(b, 0) && word(a, n - 16) == word(b, n - 16)
    } else {
        a == b
    }
}

impl Shard {
    pub fn new(
        hasher: DefaultHashBuilder,
        order: Order,
        clock: Arc<CachePadded<AtomicU64>>,
    ) -> Self {
        Shard {
            hasher,
            order,
            closed: false,
            index: HashTable::new(),
            slab: Slab::new(),
            published_oldest: [NO_STAMP; 2],
            occupied: 0,
            with_deadline: 0,
            bytes: 0,
            clock,
            stats: Stats::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Counts a lookup as a hit or a miss.
    #[inline]
    pub fn count_lookup(&mut self, hit: bool) {
        let counter = if hit {
            &mut self.hits
        } else {
            &mut self.misses
        };
        *counter.get_mut() += 1;
    }

    /// As [`Shard::count_lookup`] through `&self`, for the gets under the shared lock.
    #[inline]
    pub fn count_lookup_shared(&self, hit: bool) {
        let counter = if hit { &self.hits } else { &self.misses };
        counter.fetch_add(1, Relaxed);
    }

    /// The access count of a hit under the shared lock (see [`Shard::touch`]).
    #[inline]
    pub fn touch_shared(&self, slot: u32) {
        if let Order::S3Fifo(_) = self.order {
            self.slab.node(slot).count_access();
        }
    }

    pub fn check_open(&self) -> Result<()> {
        if self.closed {
            Err(Error::closed())
        } else {
            Ok(())
        }
    }

    #[inline]
    pub fn find(&self, hash: u64, key: &[u8]) -> Option<u32> {
        let slab = &self.slab;
        self.index
            .find(hash, |&slot| same_bytes(slab.node(slot).key(), key))
            .copied()
    }

    pub fn node(&self, slot: u32) -> &Node {
        self.slab.node(slot)
    }

    /// The next stamp: later than every touch that happened before this one.
    fn next_stamp(&mut self) -> u64 {
        self.clock.fetch_add(1, Relaxed) + 1
    }

    fn linked(&self) -> bool {
        !matches!(self.order, Order::Unbounded)
    }

    /// Counts an access to `slot`: LRU makes it the most recent, S3-FIFO raises its count.
    pub fn touch(&mut self, slot: u32) {
        match self.order {
            Order::Unbounded => {}
            Order::Lru => {
                let stamp = self.next_stamp();
                self.slab.move_to_front(slot, stamp);
            }
            Order::S3Fifo(_) => {
                let node = self.slab.node_mut(slot);
                if node.freq() < MAX_FREQ {
                    node.set_freq(node.freq() + 1);
                }
            }
        }
    }

    /// Links the new entry in `slot` (`hash` its key's): at LRU's front, or in S3-FIFO's
    /// small queue (main for a key in the ghost queue, or while the cache fills).
    /// `ghost_hit`: the caller already took the key out of the ghost queue.
    fn link_new(&mut self, slot: u32, hash: u64, size: u64, ghost_hit: bool) {
        let list = match &self.order {
            Order::Unbounded => return,
            Order::Lru => MAIN,
            Order::S3Fifo(s3) => {
                let to_main = ghost_hit
                    || s3.ghost.lock().take(hash)
                    || (!s3.has_evicted.load(Relaxed) && s3.small_is_full());
                if to_main {
                    MAIN
                } else {
                    s3.small_changed(1, size);
                    SMALL
                }
            }
        };
        let stamp = self.next_stamp();
        self.slab.push_front(list, slot, stamp);
    }

    /// Takes `slot` out of its list, keeping S3-FIFO's small-queue counts.
    fn unlink(&mut self, slot: u32) {
        if !self.linked() {
            return;
        }
        if let Order::S3Fifo(s3) = &self.order {
            let node = self.slab.node(slot);
            if node.list() == SMALL {
                s3.small_changed(-1, node.size());
            }
        }
        self.slab.unlink(slot);
    }

    /// One step of eviction from `list`, whose oldest entry the evictor saw with `stamp`:
    /// LRU removes it; S3-FIFO removes it or gives it its second chance (see
    /// [`super::s3fifo`]).
    pub fn evict_step(&mut self, list: usize, stamp: u64) -> Step {
        let slot = self.slab.tail(list);
        if slot == NIL || self.slab.oldest_stamp(list) != stamp {
            return Step::Moved;
        }
        if self.is_expired(slot) {
            return Step::Removed(self.remove(slot, Removal::Expired));
        }
        let Order::S3Fifo(s3) = &self.order else {
            return Step::Removed(self.remove(slot, Removal::Evicted));
        };
        let s3 = s3.clone();
        let freq = self.slab.node(slot).freq();
        match list {
            SMALL if freq >= PROMOTE_AT => {
                // Accessed again while in the small queue: on to main, count reset.
                self.unlink(slot);
                let stamp = self.next_stamp();
                self.slab.node_mut(slot).set_freq(0);
                self.slab.push_front(MAIN, slot, stamp);
                Step::Requeued
            }
            SMALL => {
                let node = self.slab.node(slot);
                let (hash, size) = (self.hasher.hash_one(node.key()), node.size());
                let freed = self.remove(slot, Removal::Evicted);
                s3.ghost.lock().insert(hash, size);
                Step::Removed(freed)
            }
            _ if freq > 0 => {
                // Main's CLOCK: accessed since last seen, so back to the head, count lowered.
                let stamp = self.next_stamp();
                self.slab.node_mut(slot).set_freq(freq - 1);
                self.slab.move_to_front(slot, stamp);
                Step::Requeued
            }
            _ => Step::Removed(self.remove(slot, Removal::Evicted)),
        }
    }

    /// Stores `entry` under its key, replacing any earlier entry, and counts an access
    /// to it (see [`Shard::touch`]). `ghost_hit`: see [`Shard::link_new`].
    pub fn upsert(&mut self, hash: u64, entry: Entry, ghost_hit: bool) -> Result<()> {
        let added = entry.len() as u64;
        let has_deadline = (entry.deadline() != NO_DEADLINE) as u64;
        if let Some(slot) = self.find(hash, entry.key()) {
            let n = self.slab.node_mut(slot);
            let old = std::mem::replace(&mut n.entry, entry);
            let (old_len, had_deadline) =
                (old.len() as u64, (old.deadline() != NO_DEADLINE) as u64);
            let in_small = n.list() == SMALL;
            self.bytes = self.bytes - old_len + added;
            self.with_deadline = self.with_deadline - had_deadline + has_deadline;
            if let (Order::S3Fifo(s3), true) = (&self.order, in_small) {
                s3.small_held
                    .fetch_add(added as i64 - old_len as i64, Relaxed);
            }
            self.touch(slot);
            return Ok(());
        }
        let slot = self.slab.allocate(Node::new(entry))?;
        let Shard {
            index,
            slab,
            hasher,
            ..
        } = self;
        index.insert_unique(hash, slot, |&s| hasher.hash_one(slab.node(s).key()));
        self.link_new(slot, hash, added, ghost_hit);
        self.occupied += 1;
        self.bytes += added;
        self.with_deadline += has_deadline;
        Ok(())
    }

    /// Gives the entry in `slot` a new deadline, its recency unchanged.
    pub fn set_deadline(&mut self, slot: u32, deadline: MonoDeadline) {
        let node = self.slab.node_mut(slot);
        let had = (node.deadline() != NO_DEADLINE) as u64;
        node.entry.set_deadline(deadline);
        self.with_deadline = self.with_deadline - had + (deadline != NO_DEADLINE) as u64;
    }

    /// Removes the entry in `slot` and counts it under `why`; returns its bytes.
    pub fn remove(&mut self, slot: u32, why: Removal) -> u64 {
        let hash = self.hasher.hash_one(self.slab.node(slot).key());
        if let Ok(entry) = self.index.find_entry(hash, |&s| s == slot) {
            entry.remove();
        }
        self.unlink(slot);
        let gone = self.slab.release(slot);
        let size = gone.size();
        self.bytes -= size;
        if gone.deadline() != NO_DEADLINE {
            self.with_deadline -= 1;
        }
        self.occupied -= 1;
        match why {
            Removal::Deleted => self.stats.deletes += 1,
            Removal::Evicted => self.stats.evictions += 1,
            Removal::Expired => self.stats.expirations += 1,
        }
        size
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

    /// Entries and bytes on this shard's part of the small queue.
    pub fn small_totals(&self) -> (u64, u64) {
        self.slab.list_totals(SMALL)
    }

    /// True when the entry in `slot` has a deadline that has passed. Reads the clock only
    /// for entries that have a deadline.
    #[inline]
    pub fn is_expired(&self, slot: u32) -> bool {
        crate::clock::mono_expired_now(self.slab.node(slot).deadline())
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
        self.count_lookup(live.is_some());
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
            if !n.is_vacant() && mono_expired(n.deadline(), now) {
                self.remove(slot, Removal::Expired);
                purged += 1;
            }
        }
        purged
    }

    /// Drops every entry; returns how many there were.
    pub fn reset(&mut self) -> u64 {
        let removed = self.occupied;
        if let Order::S3Fifo(s3) = &self.order {
            let (entries, bytes) = self.slab.list_totals(SMALL);
            s3.in_small.fetch_sub(entries as i64, Relaxed);
            s3.small_held.fetch_sub(bytes as i64, Relaxed);
        }
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
            hits: self.hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            ..self.stats
        }
    }

    /// Checks the slab, the index and the totals against each other (the model tests).
    pub fn check(&self) -> std::result::Result<(), String> {
        let [in_main, in_small] = self.slab.check(self.linked())?;
        let occupied = in_main + in_small;
        if matches!(self.order, Order::Lru) && in_small != 0 {
            return Err(format!("{in_small} entries on LRU's unused small list"));
        }
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
            bytes += n.size();
            with_deadline += (n.deadline() != NO_DEADLINE) as u64;
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
        Ok(())
    }
}

/// A shard and the stamps it publishes. The lock is a read-write lock: writes and LRU's
/// gets take it alone, S3-FIFO's gets (and the unbounded cache's) share it.
pub(super) struct ShardCell {
    pub shard: RwLock<Shard>,
    /// Stamp of the oldest entry of each of the shard's lists ([`NO_STAMP`] when empty),
    /// published under the lock and read without it by the evictor.
    pub published: [AtomicU64; 2],
}

impl ShardCell {
    pub fn new(shard: Shard) -> Self {
        ShardCell {
            shard: RwLock::new(shard),
            published: [AtomicU64::new(NO_STAMP), AtomicU64::new(NO_STAMP)],
        }
    }

    /// The shard, locked; its oldest stamp is republished when the guard is dropped.
    pub fn lock(&self) -> ShardGuard<'_> {
        ShardGuard {
            guard: self.shard.write(),
            published: &self.published,
        }
    }

    /// The shard under its shared lock: for the reads that change no list (nothing to
    /// republish).
    pub fn read(&self) -> RwLockReadGuard<'_, Shard> {
        self.shard.read()
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
    guard: RwLockWriteGuard<'a, Shard>,
    published: &'a [AtomicU64; 2],
}

impl Drop for ShardGuard<'_> {
    fn drop(&mut self) {
        let shard = &mut *self.guard;
        for list in [MAIN, SMALL] {
            let oldest = shard.slab.oldest_stamp(list);
            if oldest != shard.published_oldest[list] {
                shard.published_oldest[list] = oldest;
                self.published[list].store(oldest, Relaxed);
            }
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

#[cfg(test)]
mod tests {
    use super::same_bytes;

    #[test]
    fn same_bytes_is_slice_equality_for_every_length_and_differing_byte() {
        for n in 0..=40usize {
            let a: Vec<u8> = (0..n as u8).map(|i| i.wrapping_mul(37)).collect();
            assert!(same_bytes(&a, &a.clone()), "length {n}");
            for at in 0..n {
                let mut b = a.clone();
                b[at] ^= 0x80;
                assert!(!same_bytes(&a, &b), "length {n}, byte {at} differs");
            }
            assert!(!same_bytes(&a, &a[..n.saturating_sub(1)]) || n == 0);
        }
    }
}
