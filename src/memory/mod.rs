//! In-memory backend (the original `duck.utils.caching` InMemoryCache): bounded by key
//! count and/or bytes, evicting in exact LRU order (the original's) or by S3-FIFO
//! ([`s3fifo`], scan-resistant, and a hit costs no list move), with a per-entry TTL on
//! the monotonic clock.
//!
//! Layout. Keys are spread over a power-of-two number of shards, each behind its own
//! read-write lock, so threads working on different keys rarely meet; S3-FIFO's gets
//! (and the unbounded cache's) share it, since their hit changes only an access count.
//! Each shard keeps its entries in a slab (`Vec<Node>`), finds them through a
//! `HashTable<u32>` of slot numbers (4 bytes an entry, no boxed key), and when the cache
//! is bounded links them in an intrusive list from most to least recently used.
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
//! S3-FIFO's queues are global the same way: a shard keeps its part of each queue as a
//! stamp-ordered list and publishes each list's oldest stamp.
//!
//! When neither bound is set the cache keeps no order at all.
//!
//! Modules, as quick_cache splits its cache: [`slab`] holds a shard's entries and their
//! lists, [`shard`] a shard with its index, counters and published stamps, [`s3fifo`]
//! S3-FIFO's shared state and ghost queue, [`eviction`] the choice of what leaves across
//! shards, [`reservations`] the cache-wide entry and byte counts (and the byte bound's
//! reservations), and this module the cache: shard selection and the [`Backend`] impl.

#[allow(unsafe_code)] // the one allocation an entry lives in
mod entry;
mod eviction;
mod reservations;
mod s3fifo;
mod shard;
mod slab;

use crate::backend::KEY_PAGE;
use crate::backend::{Backend, Change, Current, Decide, KeyPage, Remaining, Stats, Visit};
use crate::clock::{mono_deadline, mono_now, NO_DEADLINE};
use crate::error::{Error, Result};
use crate::sink::copy_if_fits;
use crate::sync::fork;
use crate::ttl::Ttl;
use crossbeam_utils::CachePadded;
use entry::{Entry, VACANT};
use hashbrown::DefaultHashBuilder;
use s3fifo::S3Fifo;
use shard::{Order, Removal, Shard, ShardCell, ShardGuard, Shards};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// The in-memory cache. See the module documentation for the design.
pub struct MemoryCache {
    /// Shared with the fork handlers, which hold every shard's lock across fork().
    shards: Arc<Shards>,
    hasher: DefaultHashBuilder,
    shard_mask: u64,
    /// 0 = unbounded.
    max_keys: u64,
    /// Occupied entries over all shards, minus evictions claimed but not yet done.
    occupied: CachePadded<AtomicI64>,
    /// 0 = unbounded: bytes of keys and values held at most.
    max_bytes: u64,
    /// Bytes of keys and values over all shards (kept only when max_bytes is set).
    held: CachePadded<AtomicI64>,
    /// S3-FIFO's shared state; None under LRU (or no bound).
    s3: Option<Arc<S3Fifo>>,
    /// A get's hit changes only an access count (S3-FIFO, or no policy at all: not
    /// LRU, whose hit moves the entry in its list), so gets share the shard's lock.
    hits_share_the_lock: bool,
}

/// How a bounded memory cache chooses what to evict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Policy {
    /// Exact least-recently-used order across the whole cache (the original's).
    #[default]
    Lru,
    /// S3-FIFO (SOSP'23): higher hit ratios on skewed and scanning workloads, and a hit
    /// that only raises a counter. See [`s3fifo`].
    S3Fifo,
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
        Self::with_bounds(max_keys, 0, shards)
    }

    /// A cache holding at most `max_keys` entries and `max_bytes` bytes of keys and
    /// values (0 = no such bound), evicting the least recently used entries to keep
    /// both. (The memory an entry takes is its key and value plus about 61 bytes of
    /// index and list, which the bound does not count.)
    pub fn with_limits(max_keys: u64, max_bytes: u64) -> Self {
        let threads = std::thread::available_parallelism().map_or(4, |n| n.get());
        Self::with_bounds(
            max_keys,
            max_bytes,
            (threads * 4).next_power_of_two().clamp(4, 64),
        )
    }

    /// As [`MemoryCache::with_limits`], evicting by `policy`.
    pub fn with_policy(max_keys: u64, max_bytes: u64, policy: Policy) -> Self {
        let threads = std::thread::available_parallelism().map_or(4, |n| n.get());
        let shards = (threads * 4).next_power_of_two().clamp(4, 64);
        Self::with_policy_and_shards(max_keys, max_bytes, policy, shards)
    }

    /// The LRU constructor with both bounds and the shard count.
    pub fn with_bounds(max_keys: u64, max_bytes: u64, shards: usize) -> Self {
        Self::with_policy_and_shards(max_keys, max_bytes, Policy::Lru, shards)
    }

    /// The general constructor: bounds, policy and the shard count (rounded up to a
    /// power of two).
    pub fn with_policy_and_shards(
        max_keys: u64,
        max_bytes: u64,
        policy: Policy,
        shards: usize,
    ) -> Self {
        let count = shards.clamp(1, 1 << 16).next_power_of_two();
        let hasher = DefaultHashBuilder::default();
        let bounded = max_keys != 0 || max_bytes != 0;
        let s3 = (bounded && policy == Policy::S3Fifo)
            .then(|| Arc::new(S3Fifo::new(max_keys, max_bytes)));
        let order = match (&s3, bounded) {
            (Some(s3), _) => Order::S3Fifo(s3.clone()),
            (None, true) => Order::Lru,
            (None, false) => Order::Unbounded,
        };
        let hits_share_the_lock = !matches!(order, Order::Lru);
        let clock = Arc::new(CachePadded::new(AtomicU64::new(0)));
        let shards = (0..count)
            .map(|_| {
                let shard = Shard::new(hasher.clone(), order.clone(), clock.clone());
                CachePadded::new(ShardCell::new(shard))
            })
            .collect();
        // The shards are registered before the S3-FIFO state, so the fork handlers take
        // the shards' locks before the ghost queue's, the order the cache nests them in.
        let shards = fork::registered(fork::RANK_MEMORY, Shards(shards));
        if let Some(s3) = &s3 {
            fork::register(fork::RANK_MEMORY, Arc::downgrade(s3));
        }
        MemoryCache {
            shards,
            hasher,
            shard_mask: count as u64 - 1,
            max_keys,
            occupied: CachePadded::new(AtomicI64::new(0)),
            max_bytes,
            held: CachePadded::new(AtomicI64::new(0)),
            s3,
            hits_share_the_lock,
        }
    }

    /// The eviction policy (LRU for an unbounded cache, which evicts nothing).
    pub fn policy(&self) -> Policy {
        match self.s3 {
            Some(_) => Policy::S3Fifo,
            None => Policy::Lru,
        }
    }

    /// The configured byte bound (0 = unbounded).
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// The configured bound (0 = unbounded).
    pub fn max_keys(&self) -> u64 {
        self.max_keys
    }

    /// Checks every shard's internal structure (slab, recency list, index, totals) and
    /// the cache-wide count; for the model tests. Returns what is wrong.
    #[doc(hidden)]
    pub fn check_invariants(&self) -> std::result::Result<(), String> {
        let (mut occupied, mut bytes, mut small) = (0, 0, (0, 0));
        for (index, cell) in self.shards.iter().enumerate() {
            let shard = cell.lock();
            shard.check().map_err(|e| format!("shard {index}: {e}"))?;
            occupied += shard.occupied;
            bytes += shard.bytes;
            let (entries, held) = shard.small_totals();
            small = (small.0 + entries, small.1 + held);
        }
        if let Some(s3) = &self.s3 {
            let counted = (s3.in_small.load(Relaxed), s3.small_held.load(Relaxed));
            if counted != (small.0 as i64, small.1 as i64) {
                return Err(format!(
                    "small queue {small:?} (entries, bytes), {counted:?} counted"
                ));
            }
        }
        if self.max_bytes != 0 {
            let held = self.held.load(Relaxed);
            if held != bytes as i64 {
                return Err(format!("{bytes} bytes in the shards, {held} counted"));
            }
            if bytes > self.max_bytes {
                return Err(format!(
                    "{bytes} bytes held, the bound is {}",
                    self.max_bytes
                ));
            }
        }
        let counted = self.occupied.load(Relaxed);
        if counted != occupied as i64 {
            return Err(format!(
                "{occupied} entries in the shards, {counted} counted"
            ));
        }
        Ok(())
    }

    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The shard of `hash`, locked. High bits pick the shard: hashbrown uses the low bits
    /// for the bucket and the top seven for its tags.
    fn lock(&self, hash: u64) -> ShardGuard<'_> {
        self.shards[self.shard_of(hash)].lock()
    }

    /// The index of the shard of `hash`.
    fn shard_of(&self, hash: u64) -> usize {
        ((hash >> 40) & self.shard_mask) as usize
    }

    /// The body of get: hands the live entry of `key` to `visit` and counts the access.
    /// A hit and a miss change no entry or byte count, so they skip `with_shard`'s
    /// bookkeeping: on a random-access workload a get's time is its cache misses, and
    /// the fewer instructions lie between one get's misses and the next get's, the more
    /// of them the processor overlaps (measured: 40 instructions more per get cost 30%
    /// on `examples/memory_get_profile.rs`). An expired entry takes the general path.
    #[inline]
    fn read_live(&self, key: &[u8], visit: impl FnOnce(&[u8], u32)) -> Result<bool> {
        let hash = self.hash(key);
        if self.hits_share_the_lock {
            return self.read_live_shared(hash, key, visit);
        }
        let mut shard = self.lock(hash);
        shard.check_open()?;
        match shard.find(hash, key) {
            Some(slot) if !shard.is_expired(slot) => {
                shard.count_lookup(true);
                let node = shard.node(slot);
                visit(node.value(), node.flags());
                shard.touch(slot);
                Ok(true)
            }
            Some(_) => {
                drop(shard);
                self.read(key, visit, |shard, slot| shard.touch(slot))
            }
            None => {
                shard.count_lookup(false);
                Ok(false)
            }
        }
    }

    /// [`MemoryCache::read_live`] under the shard's shared lock, for the policies whose
    /// hit changes only an access count: two threads' gets on one shard run side by
    /// side (a hot key under a skewed load no longer queues its readers).
    #[inline]
    fn read_live_shared(
        &self,
        hash: u64,
        key: &[u8],
        visit: impl FnOnce(&[u8], u32),
    ) -> Result<bool> {
        let shard = self.shards[self.shard_of(hash)].read();
        shard.check_open()?;
        match shard.find(hash, key) {
            Some(slot) if !shard.is_expired(slot) => {
                shard.count_lookup_shared(true);
                let node = shard.node(slot);
                visit(node.value(), node.flags());
                shard.touch_shared(slot);
                Ok(true)
            }
            Some(_) => {
                // Expired: removing it needs the shard to itself.
                drop(shard);
                self.read(key, visit, |shard, slot| shard.touch(slot))
            }
            None => {
                shard.count_lookup_shared(false);
                Ok(false)
            }
        }
    }

    /// The body of pop (and of a get that found its entry expired): hands the live entry
    /// of `key` to `visit`, then `then` (make it the most recent, or remove it) while the
    /// shard is still locked.
    #[inline]
    fn read(
        &self,
        key: &[u8],
        visit: impl FnOnce(&[u8], u32),
        then: impl FnOnce(&mut Shard, u32),
    ) -> Result<bool> {
        let hash = self.hash(key);
        self.with_shard(hash, |shard| {
            let found = shard.lookup_live(hash, key);
            if let Some(slot) = found {
                let node = shard.node(slot);
                visit(node.value(), node.flags());
                then(shard, slot);
            }
            Ok(found.is_some())
        })
    }

    /// Runs `f` on every shard in turn, locked and open.
    fn for_each_shard(&self, mut f: impl FnMut(&mut Shard)) -> Result<()> {
        for cell in self.shards.iter() {
            let mut shard = cell.lock();
            shard.check_open()?;
            let before = shard.bytes;
            f(&mut shard);
            let bytes_delta = shard.bytes as i64 - before as i64;
            drop(shard);
            self.held_changed(bytes_delta);
        }
        Ok(())
    }
}

impl Backend for MemoryCache {
    fn set_flagged(&self, key: &[u8], value: &[u8], ttl: Ttl, flags: u32) -> Result<()> {
        self.check_entry(key, value)?;
        let hash = self.hash(key);
        if ttl.is_expired_at_once() {
            // Dead on arrival: it replaces (removes) the old value and is never stored.
            return self.with_shard(hash, |shard| {
                shard.stats.sets += 1;
                if let Some(slot) = shard.find(hash, key) {
                    shard.remove(slot, Removal::Expired); // counted as expired
                }
                Ok(())
            });
        }
        let deadline = mono_deadline(ttl);
        // Build the entry's allocation before taking the lock.
        let entry = Entry::new(key, value, deadline, flags)?;
        let size = entry.len() as u64;
        let ghost_hit = self.before_insert(hash, key, size)?;
        let mut entry = Some(entry);
        self.put_within_bytes(hash, |shard, reserved| {
            if let Err(need) = self.growth(shard, hash, key, size, reserved)? {
                return Ok(Err(need));
            }
            let entry = entry.take().expect("put once");
            shard.upsert(hash, entry, ghost_hit)?;
            shard.stats.sets += 1;
            Ok(Ok(()))
        })?;
        self.keep_bounds();
        Ok(())
    }

    fn get_flagged(&self, key: &[u8], visit: &mut Visit) -> Result<bool> {
        self.read_live(key, visit)
    }

    fn get_into(&self, key: &[u8], buf: &mut [u8]) -> Result<Option<(usize, u32)>> {
        let mut found = None;
        self.read_live(key, |value, flags| {
            copy_if_fits(value, buf);
            found = Some((value.len(), flags));
        })?;
        Ok(found)
    }

    fn pop_flagged(&self, key: &[u8], visit: &mut Visit) -> Result<bool> {
        self.read(key, visit, |shard, slot| {
            shard.remove(slot, Removal::Deleted);
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
                shard.delete(slot);
            }
            Ok(())
        })
    }

    fn clear(&self) -> Result<()> {
        let mut removed = 0;
        self.for_each_shard(|shard| {
            let n = shard.reset();
            shard.stats.deletes += n;
            removed += n;
        })?;
        self.forget(removed);
        self.forget_ghosts();
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
            total.add_counters(&shard.stats());
        })?;
        self.forget(purged);
        if self.max_bytes != 0 {
            // The cache-wide count, not the sum of a walk over shards that change under
            // it (an entry evicted from one shard and another set in a later one would be
            // counted both); it includes the room reserved by writes in flight and never
            // exceeds max_bytes.
            total.bytes = self.held.load(Relaxed).max(0) as u64;
        }
        Ok(total)
    }

    fn save(&self) -> Result<()> {
        self.shards[0].lock().check_open()
    }

    fn update(&self, key: &[u8], decide: &mut Decide) -> Result<()> {
        let hash = self.hash(key);
        // The new value's size is not known yet; the key's stands in for it.
        let ghost_hit = self.before_insert(hash, key, key.len() as u64)?;
        let stored = self.put_within_bytes(hash, |shard, reserved| {
            let live = shard.find_live(hash, key);
            let current = live.map(|slot| {
                let node = shard.node(slot);
                Current {
                    value: node.value(),
                    flags: node.flags(),
                }
            });
            let Change::Put { value, flags, ttl } = decide(current)? else {
                return Ok(Ok(false));
            };
            let size = (key.len() + value.len()) as u64;
            if !ttl.is_some_and(|t| t.is_expired_at_once()) {
                if let Err(need) = self.growth(shard, hash, key, size, reserved)? {
                    return Ok(Err(need));
                }
            }
            shard.stats.sets += 1;
            let deadline = match (ttl, live) {
                (Some(ttl), _) if ttl.is_expired_at_once() => {
                    if let Some(slot) = live {
                        shard.remove(slot, Removal::Expired);
                    }
                    return Ok(Ok(false));
                }
                (Some(ttl), _) => mono_deadline(ttl),
                (None, Some(slot)) => shard.node(slot).deadline(),
                (None, None) => NO_DEADLINE,
            };
            let entry = Entry::new(key, &value, deadline, flags)?;
            shard.upsert(hash, entry, ghost_hit)?;
            Ok(Ok(true))
        })?;
        if stored {
            self.keep_bounds();
        }
        Ok(())
    }

    /// A peek: the new TTL is written in place and the recency is left as it is.
    fn touch(&self, key: &[u8], ttl: Ttl) -> Result<bool> {
        let hash = self.hash(key);
        self.with_shard(hash, |shard| {
            let Some(slot) = shard.find_live(hash, key) else {
                return Ok(false);
            };
            if ttl.is_expired_at_once() {
                shard.remove(slot, Removal::Expired);
            } else {
                shard.set_deadline(slot, mono_deadline(ttl));
            }
            Ok(true)
        })
    }

    fn ttl(&self, key: &[u8]) -> Result<Option<Remaining>> {
        let hash = self.hash(key);
        self.with_shard(hash, |shard| {
            Ok(shard
                .find_live(hash, key)
                .map(|slot| match shard.node(slot).deadline() {
                    NO_DEADLINE => Remaining::Forever,
                    deadline => {
                        let left = deadline.saturating_sub(mono_now()).max(1);
                        Remaining::Seconds(left as f64 / 1e9)
                    }
                }))
        })
    }

    /// The position is the shard and slot to go on from, 4 bytes each. A slot keeps its
    /// entry until it is removed, so an entry live for the whole walk is seen once.
    fn key_page(&self, prefix: &[u8], after: Option<&[u8]>) -> Result<KeyPage> {
        let (mut shard_at, mut slot_at) = match after {
            None => (0, 0),
            Some(p) if p.len() == 8 => (
                u32::from_be_bytes(p[..4].try_into().expect("4 bytes")) as usize,
                u32::from_be_bytes(p[4..].try_into().expect("4 bytes")),
            ),
            Some(_) => return Err(Error::invalid_arg("not a position of this cache's walk")),
        };
        let mut keys = Vec::new();
        let now = mono_now();
        while shard_at < self.shards.len() {
            let shard = self.shards[shard_at].lock();
            shard.check_open()?;
            while slot_at < shard.slab.capacity() {
                if keys.len() == KEY_PAGE {
                    let mut next = (shard_at as u32).to_be_bytes().to_vec();
                    next.extend_from_slice(&slot_at.to_be_bytes());
                    return Ok(KeyPage {
                        keys,
                        next: Some(next),
                    });
                }
                let node = shard.node(slot_at);
                slot_at += 1;
                let live = !node.is_vacant()
                    && !crate::clock::mono_expired(node.deadline(), now)
                    && node.key().starts_with(prefix);
                if live {
                    keys.push(crate::error::try_copy(node.key())?);
                }
            }
            shard_at += 1;
            slot_at = 0;
        }
        Ok(KeyPage { keys, next: None })
    }

    fn purge_expired(&self) -> Result<u64> {
        let mut purged = 0;
        self.for_each_shard(|shard| purged += shard.purge_expired())?;
        self.forget(purged);
        Ok(purged)
    }

    fn delete_counted(&self, key: &[u8]) -> Result<bool> {
        let hash = self.hash(key);
        self.with_shard(hash, |shard| {
            let Some(slot) = shard.find(hash, key) else {
                return Ok(false);
            };
            let live = !shard.is_expired(slot);
            shard.delete(slot);
            Ok(live)
        })
    }

    fn check_entry(&self, key: &[u8], value: &[u8]) -> Result<()> {
        if !u32::try_from(key.len()).is_ok_and(|l| l != VACANT) {
            return Err(Error::invalid_arg("key longer than 4 GiB"));
        }
        crate::backend::check_fits(
            (key.len() + value.len()) as u64,
            self.max_bytes,
            "the cache (max_bytes)",
        )
    }

    fn check_batch(&self, entries: &[crate::backend::EntryRef]) -> Result<()> {
        crate::backend::check_batch_fits(entries, self.max_bytes, self.max_keys, "the cache")
    }

    fn close(&self) -> Result<()> {
        let mut removed = 0;
        for cell in self.shards.iter() {
            let mut shard = cell.lock();
            removed += shard.reset();
            shard.closed = true;
        }
        self.forget(removed);
        self.held.store(0, Relaxed);
        self.forget_ghosts();
        Ok(())
    }
}
