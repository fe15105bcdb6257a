//! In-memory backend (the seed's InMemoryCache): exact LRU bounded by key count, and a
//! per-entry TTL on the monotonic clock.
//!
//! Layout. Keys are spread over a power-of-two number of shards, each behind its own
//! mutex, so threads working on different keys rarely meet. Each shard keeps its entries
//! in a slab (`Vec<Node>`), finds them through a `HashTable<u32>` of slot numbers (4 bytes
//! an entry, no boxed key), and when the cache is bounded links them in an intrusive list
//! from most to least recently used.
//!
//! Exact LRU across shards. Every touch (get, set; `has` is a peek) gives the entry a stamp from one
//! counter per cache, taken under the shard's lock. An atomic's increments are totally
//! ordered, and that order agrees with everything that happens before them in any
//! thread (a join, a lock, a channel the program uses outside the cache), so a touch
//! that follows another in any way a program can observe is stamped later. (A clock
//! per thread and shard, as this cache used before, misses orders made outside the
//! cache: a thread's thousand sets, then a join, then a set in another thread stamped
//! earlier.) Stamps also grow within a shard, so its list is in stamp order and its
//! tail is its oldest entry. Each shard publishes its
//! tail's stamp in an atomic; eviction picks the shard with the smallest published stamp,
//! locks it and checks the tail still carries that stamp (a shard's tail stamp only
//! grows) before removing it.
//!
//! When `max_keys` is 0 the cache is unbounded and keeps no LRU order at all.

use crate::backend::{Backend, Stats, Visit};
use crate::clock::{mono_deadline, mono_expired, mono_now, MonoDeadline, NO_DEADLINE};
use crate::error::{Error, Result};
use crate::ffi::fork::{self, ForkLocks, ForkMutex};
use crate::ttl::Ttl;
use crossbeam_utils::CachePadded;
use hashbrown::{DefaultHashBuilder, HashTable};
use parking_lot::{Mutex, MutexGuard};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// No slot: the end of a list.
const NIL: u32 = u32::MAX;
/// `key_len` of a free slot. Keys are therefore limited to `u32::MAX - 1` bytes.
const VACANT: u32 = u32::MAX;
/// Published tail stamp of an empty shard.
const EMPTY_SHARD: u64 = u64::MAX;

/// One entry. 48 bytes; key and value share one allocation.
struct Node {
    /// The key's bytes followed by the value's.
    data: Box<[u8]>,
    key_len: u32,
    /// Towards the most recently used end (or the next free slot, for a free slot).
    prev: u32,
    /// Towards the least recently used end.
    next: u32,
    /// Lamport touch stamp; orders entries across shards for eviction.
    stamp: u64,
    deadline: MonoDeadline,
    /// The caller's flags word, stored and returned untouched.
    flags: u32,
}

impl Node {
    fn key(&self) -> &[u8] {
        &self.data[..self.key_len as usize]
    }

    fn value(&self) -> &[u8] {
        &self.data[self.key_len as usize..]
    }

    fn is_vacant(&self) -> bool {
        self.key_len == VACANT
    }
}

#[derive(Default, Clone, Copy)]
struct Counters {
    hits: u64,
    misses: u64,
    sets: u64,
    deletes: u64,
    evictions: u64,
    expirations: u64,
}

/// Why an entry leaves a shard; decides which counter it goes to.
#[derive(Clone, Copy)]
enum Removal {
    Deleted,
    Evicted,
    Expired,
}

struct Shard {
    hasher: DefaultHashBuilder,
    bounded: bool,
    closed: bool,
    index: HashTable<u32>,
    nodes: Vec<Node>,
    free_head: u32,
    /// Most recently used (only maintained when bounded).
    head: u32,
    /// Least recently used (only maintained when bounded).
    tail: u32,
    /// The tail's stamp (EMPTY_SHARD when empty), kept here so publishing it on unlock
    /// does not read the coldest node of the shard on every call.
    tail_stamp: u64,
    /// The tail stamp last stored in the shard's published atomic.
    published_stamp: u64,
    /// Occupied slots, expired-but-not-yet-removed ones included.
    occupied: u64,
    /// Occupied slots with a deadline; when 0, `len` needs no scan.
    with_deadline: u64,
    bytes: u64,
    /// The cache's stamp counter, shared by its shards.
    clock: Arc<CachePadded<AtomicU64>>,
    counters: Counters,
}

impl Shard {
    fn new(hasher: DefaultHashBuilder, bounded: bool, clock: Arc<CachePadded<AtomicU64>>) -> Self {
        Shard {
            hasher,
            bounded,
            closed: false,
            index: HashTable::new(),
            nodes: Vec::new(),
            free_head: NIL,
            head: NIL,
            tail: NIL,
            tail_stamp: EMPTY_SHARD,
            published_stamp: EMPTY_SHARD,
            occupied: 0,
            with_deadline: 0,
            bytes: 0,
            clock,
            counters: Counters::default(),
        }
    }

    fn check_open(&self) -> Result<()> {
        if self.closed {
            Err(Error::closed())
        } else {
            Ok(())
        }
    }

    fn find(&self, hash: u64, key: &[u8]) -> Option<u32> {
        let nodes = &self.nodes;
        self.index
            .find(hash, |&slot| nodes[slot as usize].key() == key)
            .copied()
    }

    fn tail_stamp(&self) -> u64 {
        self.tail_stamp
    }

    fn unlink(&mut self, slot: u32) {
        let (prev, next) = {
            let n = &self.nodes[slot as usize];
            (n.prev, n.next)
        };
        match prev {
            NIL => self.head = next,
            p => self.nodes[p as usize].next = next,
        }
        match next {
            NIL => {
                self.tail = prev;
                // The new tail was just written above, so its stamp is at hand.
                self.tail_stamp = match prev {
                    NIL => EMPTY_SHARD,
                    p => self.nodes[p as usize].stamp,
                };
            }
            n => self.nodes[n as usize].prev = prev,
        }
    }

    fn push_front(&mut self, slot: u32, stamp: u64) {
        let old_head = self.head;
        {
            let n = &mut self.nodes[slot as usize];
            n.prev = NIL;
            n.next = old_head;
            n.stamp = stamp;
        }
        match old_head {
            NIL => {
                self.tail = slot;
                self.tail_stamp = stamp;
            }
            h => self.nodes[h as usize].prev = slot,
        }
        self.head = slot;
    }

    /// The next stamp: later than every touch that happened before this one.
    fn next_stamp(&mut self) -> u64 {
        self.clock.fetch_add(1, Relaxed) + 1
    }

    /// Makes `slot` the most recently used entry.
    fn touch(&mut self, slot: u32) {
        if !self.bounded {
            return;
        }
        let stamp = self.next_stamp();
        if self.head == slot {
            // Already the most recently used: only its stamp moves on.
            self.nodes[slot as usize].stamp = stamp;
            if self.tail == slot {
                self.tail_stamp = stamp;
            }
            return;
        }
        self.unlink(slot);
        self.push_front(slot, stamp);
    }

    /// Puts a new entry in a free slot (or a new one) and returns the slot.
    fn allocate(&mut self, node: Node) -> Result<u32> {
        if self.free_head != NIL {
            let slot = self.free_head;
            self.free_head = self.nodes[slot as usize].prev;
            self.nodes[slot as usize] = node;
            return Ok(slot);
        }
        let slot = u32::try_from(self.nodes.len())
            .ok()
            .filter(|&s| s != NIL)
            .ok_or_else(|| Error::no_memory(std::mem::size_of::<Node>()))?;
        self.nodes
            .try_reserve(1)
            .map_err(|_| Error::no_memory(std::mem::size_of::<Node>()))?;
        self.nodes.push(node);
        Ok(slot)
    }

    /// Stores `data` (key then value) under the key, replacing any earlier entry, and makes
    /// it the most recently used.
    fn upsert(
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
            let n = &mut self.nodes[slot as usize];
            let old_len = std::mem::replace(&mut n.data, data).len() as u64;
            let had_deadline = (n.deadline != NO_DEADLINE) as u64;
            n.deadline = deadline;
            n.flags = flags;
            self.bytes = self.bytes - old_len + added;
            self.with_deadline = self.with_deadline - had_deadline + has_deadline;
            self.touch(slot);
            return Ok(());
        }
        let node = Node {
            data,
            key_len,
            prev: NIL,
            next: NIL,
            stamp: 0,
            deadline,
            flags,
        };
        let slot = self.allocate(node)?;
        let Shard {
            index,
            nodes,
            hasher,
            ..
        } = self;
        index.insert_unique(hash, slot, |&s| hasher.hash_one(nodes[s as usize].key()));
        if self.bounded {
            let stamp = self.next_stamp();
            self.push_front(slot, stamp);
        }
        self.occupied += 1;
        self.bytes += added;
        self.with_deadline += has_deadline;
        Ok(())
    }

    /// Removes the entry in `slot` and returns its slot to the free list.
    fn remove(&mut self, slot: u32, why: Removal) {
        let hash = self.hasher.hash_one(self.nodes[slot as usize].key());
        if let Ok(entry) = self.index.find_entry(hash, |&s| s == slot) {
            entry.remove();
        }
        if self.bounded {
            self.unlink(slot);
        }
        let free_head = self.free_head;
        let n = &mut self.nodes[slot as usize];
        self.bytes -= n.data.len() as u64;
        if n.deadline != NO_DEADLINE {
            self.with_deadline -= 1;
        }
        n.data = Box::default();
        n.key_len = VACANT;
        n.prev = free_head;
        self.free_head = slot;
        self.occupied -= 1;
        match why {
            Removal::Deleted => self.counters.deletes += 1,
            Removal::Evicted => self.counters.evictions += 1,
            Removal::Expired => self.counters.expirations += 1,
        }
    }

    /// True when the entry in `slot` has a deadline that has passed. Reads the clock only
    /// for entries that have a deadline.
    fn is_expired(&self, slot: u32) -> bool {
        let deadline = self.nodes[slot as usize].deadline;
        deadline != NO_DEADLINE && mono_expired(deadline, mono_now())
    }

    /// The live entry of `key`, removing it first (and counting a miss) when it expired.
    fn lookup_live(&mut self, hash: u64, key: &[u8]) -> Option<u32> {
        let live = match self.find(hash, key) {
            Some(slot) if self.is_expired(slot) => {
                self.remove(slot, Removal::Expired);
                None
            }
            found => found,
        };
        if live.is_some() {
            self.counters.hits += 1;
        } else {
            self.counters.misses += 1;
        }
        live
    }

    /// Removes every expired entry; returns how many went.
    fn purge_expired(&mut self) -> u64 {
        if self.with_deadline == 0 {
            return 0;
        }
        let now = mono_now();
        let mut purged = 0;
        for slot in 0..self.nodes.len() as u32 {
            let n = &self.nodes[slot as usize];
            if !n.is_vacant() && mono_expired(n.deadline, now) {
                self.remove(slot, Removal::Expired);
                purged += 1;
            }
        }
        purged
    }

    /// Drops every entry; returns how many there were.
    fn reset(&mut self) -> u64 {
        let removed = self.occupied;
        self.index = HashTable::new();
        self.nodes = Vec::new();
        self.free_head = NIL;
        self.head = NIL;
        self.tail = NIL;
        self.tail_stamp = EMPTY_SHARD;
        self.occupied = 0;
        self.with_deadline = 0;
        self.bytes = 0;
        removed
    }
}

struct ShardCell {
    shard: Mutex<Shard>,
    /// Stamp of the shard's least recently used entry ([`EMPTY_SHARD`] when empty),
    /// published under the lock and read without it by the evictor.
    tail_stamp: AtomicU64,
}

/// The in-memory cache. See the module documentation for the design.
/// The shards of one cache.
struct Shards(Box<[CachePadded<ShardCell>]>);

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

pub struct MemoryCache {
    /// Shared with the fork handlers, which hold every shard's lock across fork().
    shards: Arc<Shards>,
    hasher: DefaultHashBuilder,
    shard_mask: u64,
    /// 0 = unbounded.
    max_keys: u64,
    /// Occupied entries over all shards, minus evictions claimed but not yet done.
    occupied: CachePadded<AtomicI64>,
}

/// A locked shard that republishes its tail stamp when released.
struct ShardGuard<'a> {
    guard: MutexGuard<'a, Shard>,
    tail_stamp: &'a AtomicU64,
}

impl Drop for ShardGuard<'_> {
    fn drop(&mut self) {
        let shard = &mut *self.guard;
        if shard.bounded && shard.tail_stamp != shard.published_stamp {
            shard.published_stamp = shard.tail_stamp;
            self.tail_stamp.store(shard.tail_stamp, Relaxed);
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

impl MemoryCache {
    /// A cache holding at most `max_keys` entries (0 = unbounded), sharded for the
    /// machine's parallelism.
    pub fn new(max_keys: u64) -> Self {
        let threads = std::thread::available_parallelism().map_or(4, |n| n.get());
        Self::with_shards(max_keys, (threads * 4).next_power_of_two().clamp(4, 64))
    }

    /// As [`MemoryCache::new`] with an explicit shard count (rounded up to a power of two).
    pub fn with_shards(max_keys: u64, shards: usize) -> Self {
        let count = shards.clamp(1, 1 << 16).next_power_of_two();
        let hasher = DefaultHashBuilder::default();
        let bounded = max_keys != 0;
        let clock = Arc::new(CachePadded::new(AtomicU64::new(0)));
        let shards = (0..count)
            .map(|_| {
                CachePadded::new(ShardCell {
                    shard: Mutex::new(Shard::new(hasher.clone(), bounded, clock.clone())),
                    tail_stamp: AtomicU64::new(EMPTY_SHARD),
                })
            })
            .collect();
        let shards = fork::registered(fork::RANK_MEMORY, Shards(shards));
        MemoryCache {
            shards,
            hasher,
            shard_mask: count as u64 - 1,
            max_keys,
            occupied: CachePadded::new(AtomicI64::new(0)),
        }
    }

    /// The configured bound (0 = unbounded).
    pub fn max_keys(&self) -> u64 {
        self.max_keys
    }

    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    fn lock_index(&self, index: usize) -> ShardGuard<'_> {
        let cell = &self.shards[index];
        ShardGuard {
            guard: cell.shard.lock(),
            tail_stamp: &cell.tail_stamp,
        }
    }

    /// The shard of `hash`, locked. High bits pick the shard: hashbrown uses the low bits
    /// for the bucket and the top seven for its tags.
    fn lock(&self, hash: u64) -> ShardGuard<'_> {
        self.lock_index(((hash >> 40) & self.shard_mask) as usize)
    }

    fn forget(&self, removed: u64) {
        if removed > 0 {
            self.occupied.fetch_sub(removed as i64, Relaxed);
        }
    }

    /// Evicts least recently used entries until the cache is back within `max_keys`.
    fn evict_overflow(&self) {
        let max = i64::try_from(self.max_keys).unwrap_or(i64::MAX);
        // Claim one eviction at a time so concurrent setters never evict more than needed.
        while self
            .occupied
            .fetch_update(
                Relaxed,
                Relaxed,
                |n| if n > max { Some(n - 1) } else { None },
            )
            .is_ok()
        {
            if !self.evict_one() {
                self.occupied.fetch_add(1, Relaxed); // nothing left to evict: hand it back
                return;
            }
        }
    }

    /// Removes the globally least recently used entry; false when every shard is empty.
    fn evict_one(&self) -> bool {
        loop {
            let oldest = self
                .shards
                .iter()
                .enumerate()
                .map(|(i, cell)| (cell.tail_stamp.load(Relaxed), i))
                .min();
            let Some((stamp, index)) = oldest.filter(|&(s, _)| s != EMPTY_SHARD) else {
                return false;
            };
            let mut shard = self.lock_index(index);
            if shard.closed {
                return false;
            }
            // A shard's tail stamp only grows, so if the tail still carries the smallest
            // stamp seen it is still the oldest entry anywhere. Otherwise look again.
            if shard.tail != NIL && shard.tail_stamp() == stamp {
                let tail = shard.tail;
                let why = if shard.is_expired(tail) {
                    Removal::Expired
                } else {
                    Removal::Evicted
                };
                shard.remove(tail, why);
                return true;
            }
        }
    }

    /// Runs `f` on the open shard of `hash` and keeps the global entry count in step with
    /// whatever `f` added or removed.
    fn with_shard<R>(&self, hash: u64, f: impl FnOnce(&mut Shard) -> Result<R>) -> Result<R> {
        let mut shard = self.lock(hash);
        shard.check_open()?;
        let before = shard.occupied;
        let result = f(&mut shard);
        let delta = shard.occupied as i64 - before as i64;
        drop(shard);
        if delta != 0 {
            self.occupied.fetch_add(delta, Relaxed);
        }
        result
    }

    /// Runs `f` on every shard in turn, locked and open.
    fn for_each_shard(&self, mut f: impl FnMut(&mut Shard)) -> Result<()> {
        for index in 0..self.shards.len() {
            let mut shard = self.lock_index(index);
            shard.check_open()?;
            f(&mut shard);
        }
        Ok(())
    }
}

impl Backend for MemoryCache {
    fn set_flagged(&self, key: &[u8], value: &[u8], ttl: Ttl, flags: u32) -> Result<()> {
        let key_len = u32::try_from(key.len())
            .ok()
            .filter(|&l| l != VACANT)
            .ok_or_else(|| Error::invalid_arg("key longer than 4 GiB"))?;
        let hash = self.hash(key);
        if ttl.is_expired_at_once() {
            // Dead on arrival: it replaces (removes) the old value and is never stored.
            return self.with_shard(hash, |shard| {
                shard.counters.sets += 1;
                if let Some(slot) = shard.find(hash, key) {
                    shard.remove(slot, Removal::Expired);
                }
                Ok(())
            });
        }
        let deadline = mono_deadline(ttl);
        // Build the entry's allocation before taking the lock.
        let mut data = Vec::new();
        data.try_reserve_exact(key.len() + value.len())
            .map_err(|_| Error::no_memory(key.len() + value.len()))?;
        data.extend_from_slice(key);
        data.extend_from_slice(value);
        let data = data.into_boxed_slice();
        self.with_shard(hash, |shard| {
            shard.upsert(hash, key_len, data, deadline, flags)?;
            shard.counters.sets += 1;
            Ok(())
        })?;
        if self.max_keys != 0 {
            self.evict_overflow();
        }
        Ok(())
    }

    fn get_flagged(&self, key: &[u8], visit: &mut Visit) -> Result<bool> {
        let hash = self.hash(key);
        self.with_shard(hash, |shard| {
            let found = shard.lookup_live(hash, key);
            if let Some(slot) = found {
                let node = &shard.nodes[slot as usize];
                visit(node.value(), node.flags);
                shard.touch(slot);
            }
            Ok(found.is_some())
        })
    }

    fn pop_flagged(&self, key: &[u8], visit: &mut Visit) -> Result<bool> {
        let hash = self.hash(key);
        self.with_shard(hash, |shard| {
            let found = shard.lookup_live(hash, key);
            if let Some(slot) = found {
                let node = &shard.nodes[slot as usize];
                visit(node.value(), node.flags);
                shard.remove(slot, Removal::Deleted);
            }
            Ok(found.is_some())
        })
    }

    /// A peek: the entry's recency is left as it is (the contract's clarification of
    /// version 1, and the original InMemoryCache's `has`).
    fn has(&self, key: &[u8]) -> Result<bool> {
        let hash = self.hash(key);
        self.with_shard(hash, |shard| Ok(shard.lookup_live(hash, key).is_some()))
    }

    fn delete(&self, key: &[u8]) -> Result<()> {
        let hash = self.hash(key);
        self.with_shard(hash, |shard| {
            if let Some(slot) = shard.find(hash, key) {
                let why = if shard.is_expired(slot) {
                    Removal::Expired
                } else {
                    Removal::Deleted
                };
                shard.remove(slot, why);
            }
            Ok(())
        })
    }

    fn clear(&self) -> Result<()> {
        let mut removed = 0;
        self.for_each_shard(|shard| {
            let n = shard.reset();
            shard.counters.deletes += n;
            removed += n;
        })?;
        self.forget(removed);
        Ok(())
    }

    fn len(&self) -> Result<u64> {
        let (mut live, mut purged) = (0, 0);
        self.for_each_shard(|shard| {
            purged += shard.purge_expired();
            live += shard.occupied;
        })?;
        self.forget(purged);
        Ok(live)
    }

    fn stats(&self) -> Result<Stats> {
        let mut total = Stats::default();
        let mut purged = 0;
        self.for_each_shard(|shard| {
            purged += shard.purge_expired();
            let c = shard.counters;
            total.add_counters(&Stats {
                hits: c.hits,
                misses: c.misses,
                sets: c.sets,
                deletes: c.deletes,
                evictions: c.evictions,
                expirations: c.expirations,
                entries: shard.occupied,
                bytes: shard.bytes,
            });
        })?;
        self.forget(purged);
        Ok(total)
    }

    fn save(&self) -> Result<()> {
        self.lock_index(0).check_open()
    }

    fn close(&self) -> Result<()> {
        let mut removed = 0;
        for index in 0..self.shards.len() {
            let mut shard = self.lock_index(index);
            removed += shard.reset();
            shard.closed = true;
        }
        self.forget(removed);
        Ok(())
    }
}
