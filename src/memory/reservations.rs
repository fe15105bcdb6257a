//! The cache-wide counts of entries and bytes, kept in step with the shards: every write
//! runs on its shard through [`MemoryCache::with_shard`], and under a byte bound first
//! reserves the bytes it adds ([`MemoryCache::reserve`]), so however many threads write,
//! the bytes held never go past `max_bytes`, not even for a moment.

use super::shard::{Order, Shard};
use super::MemoryCache;
use crate::error::Result;
use std::sync::atomic::Ordering::Relaxed;

impl MemoryCache {
    /// Adds a change of some shard's bytes to the cache-wide count.
    #[inline]
    pub(super) fn held_changed(&self, delta: i64) {
        if self.max_bytes != 0 && delta != 0 {
            self.held.fetch_add(delta, Relaxed);
        }
    }

    /// Under a byte bound: Err(n) when writing an entry of `size` bytes under `key` adds
    /// n bytes (its size less the live entry it replaces) and n is more than `reserved`;
    /// an entry larger than the whole bound is refused. Under LRU a present entry
    /// counts as used first, so the room made for its growth is made from the others,
    /// as a set (which makes it the most recent, then evicts) would.
    pub(super) fn growth(
        &self,
        shard: &mut Shard,
        hash: u64,
        key: &[u8],
        size: u64,
        reserved: i64,
    ) -> Result<std::result::Result<(), i64>> {
        if self.max_bytes == 0 {
            return Ok(Ok(()));
        }
        crate::backend::check_fits(size, self.max_bytes, "the cache (max_bytes)")?;
        let present = shard.find(hash, key);
        let old = present.map_or(0, |slot| shard.node(slot).size() as i64);
        let need = size as i64 - old;
        if need <= reserved {
            return Ok(Ok(()));
        }
        if let (Some(slot), Order::Lru) = (present, &shard.order) {
            shard.touch(slot);
        }
        Ok(Err(need))
    }

    /// Runs `f` on the open shard of `hash` and keeps the global entry count in step with
    /// whatever `f` added or removed.
    #[inline]
    pub(super) fn with_shard<R>(
        &self,
        hash: u64,
        f: impl FnOnce(&mut Shard) -> Result<R>,
    ) -> Result<R> {
        self.with_shard_reserved(hash, 0, f)
    }

    /// As [`MemoryCache::with_shard`] for a write that reserved `reserved` bytes of the
    /// byte bound beforehand ([`MemoryCache::reserve`]): the reservation is handed back
    /// as the shard's real change is counted, in one step, so the bytes held never go
    /// past the bound, not even for a moment.
    pub(super) fn with_shard_reserved<R>(
        &self,
        hash: u64,
        reserved: i64,
        f: impl FnOnce(&mut Shard) -> Result<R>,
    ) -> Result<R> {
        let mut shard = self.lock(hash);
        if let Err(closed) = shard.check_open() {
            drop(shard);
            self.held_changed(-reserved);
            return Err(closed);
        }
        let (before, bytes_before) = (shard.occupied, shard.bytes);
        let result = f(&mut shard);
        let delta = shard.occupied as i64 - before as i64;
        let bytes_delta = shard.bytes as i64 - bytes_before as i64;
        drop(shard);
        if delta != 0 {
            self.occupied.fetch_add(delta, Relaxed);
        }
        self.held_changed(bytes_delta - reserved);
        result
    }

    /// Takes `bytes` of the byte bound for a write about to go in, evicting by the
    /// policy until they fit. Other writers' reservations count, so however many
    /// threads write, the bytes held (stats' `bytes`) never exceed `max_bytes`.
    pub(super) fn reserve(&self, bytes: i64) {
        let max = i64::try_from(self.max_bytes).unwrap_or(i64::MAX);
        loop {
            let held = self.held.load(Relaxed);
            if held + bytes <= max {
                if self
                    .held
                    .compare_exchange_weak(held, held + bytes, Relaxed, Relaxed)
                    .is_ok()
                {
                    return;
                }
                continue;
            }
            if self.evict_one() {
                self.forget(1); // evict_one leaves the entry count to its caller
            } else {
                // Nothing to evict: the room is promised to writes in flight, which go in
                // (and become evictable) in a moment.
                std::thread::yield_now();
            }
        }
    }

    /// Runs the write `put` on the shard of `hash` within the byte bound: `put` returns
    /// `Err(n)` without changing anything when it needs `n` more bytes than reserved
    /// (the entry grows by that much), and is run again once they are reserved.
    /// Without a byte bound it runs once with nothing reserved.
    pub(super) fn put_within_bytes<R>(
        &self,
        hash: u64,
        mut put: impl FnMut(&mut Shard, i64) -> Result<std::result::Result<R, i64>>,
    ) -> Result<R> {
        let mut reserved = 0;
        loop {
            match self.with_shard_reserved(hash, reserved, |shard| put(shard, reserved))? {
                Ok(done) => return Ok(done),
                Err(need) if self.max_bytes != 0 => {
                    self.reserve(need);
                    reserved = need;
                }
                Err(_) => unreachable!("a write without a byte bound never asks for bytes"),
            }
        }
    }
}
