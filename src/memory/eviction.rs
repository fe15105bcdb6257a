//! Eviction across shards: which entry leaves when a bound is reached (LRU: the oldest
//! stamp over all shards; S3-FIFO: by its queues, see [`super::s3fifo`]), and S3-FIFO's
//! room-making before a new key goes in. The entries' count is kept here too.

use super::shard::Step;
use super::slab::{MAIN, NO_STAMP, SMALL};
use super::MemoryCache;
use crate::error::Result;
use std::sync::atomic::Ordering::Relaxed;

impl MemoryCache {
    /// Under S3-FIFO, when `key` is new and the cache is full: takes the key out of the
    /// ghost queue (true when it was there) and makes room, before the entry goes in.
    /// Nothing to do otherwise (LRU's order does not care whether eviction comes first).
    pub(super) fn before_insert(&self, hash: u64, key: &[u8], size: u64) -> Result<bool> {
        let Some(s3) = &self.s3 else {
            return Ok(false);
        };
        if !self.is_full_for(size)
            || self.with_shard(hash, |shard| Ok(shard.find(hash, key).is_some()))?
        {
            return Ok(false);
        }
        let ghost_hit = s3.ghost.lock().take(hash);
        self.make_room(size);
        Ok(ghost_hit)
    }

    /// True when a new entry of `size` bytes would take the cache past a bound.
    #[inline]
    pub(super) fn is_full_for(&self, size: u64) -> bool {
        (self.max_keys != 0 && self.occupied.load(Relaxed) >= self.max_keys as i64)
            || (self.max_bytes != 0
                && self.held.load(Relaxed) + size as i64 > self.max_bytes as i64)
    }

    /// The key bound, after a write that added an entry.
    #[inline]
    pub(super) fn keep_bounds(&self) {
        // (The byte bound needs nothing here: every write reserved its bytes first.)
        if self.max_keys != 0 {
            self.evict_overflow();
        }
    }

    /// Empties S3-FIFO's ghost queue (clear and close: the keys it remembers are gone).
    pub(super) fn forget_ghosts(&self) {
        if let Some(s3) = &self.s3 {
            s3.ghost.lock().clear();
        }
    }

    #[inline]
    pub(super) fn forget(&self, removed: u64) {
        if removed > 0 {
            self.occupied.fetch_sub(removed as i64, Relaxed);
        }
    }

    /// Evicts least recently used entries until the cache is back within `max_keys`.
    pub(super) fn evict_overflow(&self) {
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

    /// Removes one entry by the policy (LRU: the globally least recently used; S3-FIFO:
    /// see [`s3fifo`]); false when the cache is empty.
    pub(super) fn evict_one(&self) -> bool {
        let Some(s3) = &self.s3 else {
            return self.evict_from(MAIN);
        };
        s3.has_evicted.store(true, Relaxed);
        let (entries, bytes) = (self.occupied.load(Relaxed), self.held.load(Relaxed));
        let first = if s3.main_is_over(entries, bytes) || s3.in_small.load(Relaxed) <= 0 {
            MAIN
        } else {
            SMALL
        };
        self.evict_from(first) || self.evict_from(MAIN + SMALL - first)
    }

    /// Takes eviction steps on the cache-wide `list` (its oldest entry over all shards)
    /// until an entry leaves the cache; false when the list is empty everywhere.
    pub(super) fn evict_from(&self, list: usize) -> bool {
        loop {
            let oldest = self
                .shards
                .iter()
                .enumerate()
                .map(|(i, cell)| (cell.published[list].load(Relaxed), i))
                .min();
            let Some((stamp, index)) = oldest.filter(|&(s, _)| s != NO_STAMP) else {
                return false;
            };
            let mut shard = self.shards[index].lock();
            if shard.closed {
                return false;
            }
            // A list's oldest stamp only grows, so if its tail still carries the smallest
            // stamp seen it is still the oldest entry anywhere; otherwise look again.
            match shard.evict_step(list, stamp) {
                Step::Moved | Step::Requeued => continue,
                Step::Removed(freed) => {
                    drop(shard);
                    self.held_changed(-(freed as i64));
                    return true;
                }
            }
        }
    }

    /// S3-FIFO evicts before a new key goes in, as the algorithm is defined (which queue
    /// to evict from depends on what is there before the new entry): makes room for an
    /// entry of `size` bytes when the cache is full.
    pub(super) fn make_room(&self, size: u64) {
        while self.is_full_for(size) {
            if !self.evict_one() {
                return;
            }
            self.forget(1);
        }
    }
}
