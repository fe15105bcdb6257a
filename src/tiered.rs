//! The tiered handle: a near cache (usually memory) in front of a far one (file,
//! sharded, Redis), as a [`Backend`] over the two.
//!
//! - A get is answered by near when it can; otherwise far answers and its value is
//!   copied into near for at most `near_ttl_max` (never longer than far's own TTL), so a
//!   value changed in far by another process or machine is seen within `near_ttl_max`.
//! - Every write goes to far first, then near: a set stores the same value in near
//!   (its TTL capped the same way); the other writes (add, incr, touch, update, pop,
//!   delete, the bulk calls) drop near's copy, which the next get reloads. A failed far
//!   write leaves near as it was.
//! - A handle reads its own writes: a near fill (the copy a get makes of far's value)
//!   that began before a write of its key by this handle is not stored after it. Each
//!   write, once far has it, advances its key's fill epoch (one of [`FILL_STRIPES`]) and
//!   updates near under the same lock; a fill reads the epoch before asking far and
//!   stores only if it has not moved. (A fill stored before the write's near update is
//!   then replaced or dropped by it.) Without it, a get beside the handle's own set or
//!   delete copied the older far value into near after the write, served for up to
//!   `near_ttl_max`.
//! - len, keys and ttl are far's; purge_expired purges both and reports far's count.
//!   Stats: hits and misses count both tiers (a near miss that far serves is one hit);
//!   the other counters are far's.

use crate::backend::VisitMany;
use crate::backend::{Backend, Decide, EntryRef, KeyPage, KeyVisit, Remaining, Stats, Visit};
use crate::error::{Error, Result};
use crate::sync::fork;
use crate::sync::Mutex;
use crate::ttl::Ttl;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// A near cache in front of a far one.
pub struct TieredCache {
    near: Arc<dyn Backend>,
    far: Arc<dyn Backend>,
    near_ttl_max: Duration,
    /// Near misses that far served (hits), and lookups both missed. Near's own hits are
    /// near's counter: a near hit touches no shared counter here.
    far_hits: AtomicU64,
    misses: AtomicU64,
    /// The fill epochs, by key stripe (see the module's note). Registered with the fork
    /// handlers: near's locks are taken under it.
    epochs: Arc<Mutex<[u64; FILL_STRIPES]>>,
    hasher: std::collections::hash_map::RandomState,
}

/// Stripes of fill epochs: a write invalidates the fills of its stripe's keys (a skipped
/// fill only costs the next get a far read).
const FILL_STRIPES: usize = 64;

impl TieredCache {
    /// `near_ttl_max` seconds must be > 0 and finite.
    pub fn new(
        near: Arc<dyn Backend>,
        far: Arc<dyn Backend>,
        near_ttl_max: f64,
    ) -> Result<TieredCache> {
        if !(near_ttl_max.is_finite() && near_ttl_max > 0.0) {
            return Err(Error::invalid_arg(format!(
                "near_ttl_max must be a finite number of seconds above 0, not {near_ttl_max}"
            )));
        }
        let near_ttl_max = Duration::try_from_secs_f64(near_ttl_max)
            .map_err(|_| Error::invalid_arg("near_ttl_max is too large"))?;
        Ok(TieredCache {
            near,
            far,
            near_ttl_max,
            far_hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            epochs: fork::registered(fork::RANK_TIERED, Mutex::new([0; FILL_STRIPES])),
            hasher: std::collections::hash_map::RandomState::new(),
        })
    }

    fn stripe(&self, key: &[u8]) -> usize {
        self.hasher.hash_one(key) as usize % FILL_STRIPES
    }

    /// The epoch a fill of `key` starts from (read before far is asked).
    fn fill_ticket(&self, key: &[u8]) -> u64 {
        self.epochs.lock()[self.stripe(key)]
    }

    /// Copies far's `value` of `key` into near, unless a write of this handle to the
    /// key's stripe came since `ticket`.
    fn fill(&self, ticket: u64, key: &[u8], value: &[u8], flags: u32, left: Remaining) {
        let epochs = self.epochs.lock();
        if epochs[self.stripe(key)] == ticket {
            // Best effort: a near that cannot take it serves the next get from far.
            let _ = self
                .near
                .set_flagged(key, value, self.near_ttl(Some(left)), flags);
        }
    }

    /// After far took a write of `key`: advances its stripe's epoch and applies `then`
    /// to near, together, so no fill that began before lands after.
    fn wrote<R>(&self, key: &[u8], then: impl FnOnce() -> R) -> R {
        let mut epochs = self.epochs.lock();
        epochs[self.stripe(key)] += 1;
        then()
    }

    /// The TTL of a near copy of an entry that far keeps for `far_ttl` (or `left`).
    fn near_ttl(&self, left: Option<Remaining>) -> Ttl {
        match left {
            Some(Remaining::Seconds(s)) if s < self.near_ttl_max.as_secs_f64() => {
                Ttl::After(Duration::from_secs_f64(s.max(0.0)))
            }
            _ => Ttl::After(self.near_ttl_max),
        }
    }

    fn near_ttl_of(&self, ttl: Ttl) -> Ttl {
        match ttl {
            Ttl::After(d) if d < self.near_ttl_max => Ttl::After(d),
            _ => Ttl::After(self.near_ttl_max),
        }
    }

    /// Counts a lookup near could not answer.
    fn count(&self, hit: bool) -> bool {
        if hit {
            self.far_hits.fetch_add(1, Relaxed);
        } else {
            self.misses.fetch_add(1, Relaxed);
        }
        hit
    }

    /// Drops near's copy after a far write that changed the entry (best effort: a near
    /// that fails to drop it still expires it within `near_ttl_max`).
    fn forget(&self, key: &[u8]) {
        self.wrote(key, || {
            let _ = self.near.delete(key);
        });
    }
}

impl Backend for TieredCache {
    fn set_flagged(&self, key: &[u8], value: &[u8], ttl: Ttl, flags: u32) -> Result<()> {
        self.far.set_flagged(key, value, ttl, flags)?;
        if ttl.is_expired_at_once() {
            self.forget(key);
            return Ok(());
        }
        self.wrote(key, || {
            if self
                .near
                .set_flagged(key, value, self.near_ttl_of(ttl), flags)
                .is_err()
            {
                let _ = self.near.delete(key);
            }
        });
        Ok(())
    }

    fn get_flagged(&self, key: &[u8], visit: &mut Visit) -> Result<bool> {
        if self.near.get_flagged(key, visit)? {
            return Ok(true); // counted by near
        }
        let ticket = self.fill_ticket(key);
        let mut copy = None;
        let left = self.far.get_flagged_ttl(key, &mut |value, flags| {
            visit(value, flags);
            copy = Some((value.to_vec(), flags));
        })?;
        if let (Some((value, flags)), Some(left)) = (copy, left) {
            self.fill(ticket, key, &value, flags, left);
            return Ok(self.count(true));
        }
        Ok(self.count(false))
    }

    fn pop_flagged(&self, key: &[u8], visit: &mut Visit) -> Result<bool> {
        let found = self.far.pop_flagged(key, visit)?;
        self.forget(key);
        Ok(self.count(found))
    }

    fn has(&self, key: &[u8]) -> Result<bool> {
        if self.near.has(key)? {
            return Ok(true);
        }
        self.far.has(key)
    }

    fn delete(&self, key: &[u8]) -> Result<()> {
        self.far.delete(key)?;
        self.forget(key);
        Ok(())
    }

    fn delete_counted(&self, key: &[u8]) -> Result<bool> {
        let live = self.far.delete_counted(key)?;
        self.forget(key);
        Ok(live)
    }

    fn clear(&self) -> Result<()> {
        self.far.clear()?;
        let mut epochs = self.epochs.lock();
        epochs.iter_mut().for_each(|e| *e += 1);
        self.near.clear()
    }

    fn len(&self) -> Result<u64> {
        self.far.len()
    }

    fn stats(&self) -> Result<Stats> {
        let near_hits = self.near.stats()?.hits;
        Ok(Stats {
            hits: near_hits + self.far_hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            ..self.far.stats()?
        })
    }

    fn save(&self) -> Result<()> {
        self.far.save()
    }

    fn close(&self) -> Result<()> {
        let far = self.far.close();
        let near = self.near.close();
        far.and(near)
    }

    fn update(&self, key: &[u8], decide: &mut Decide) -> Result<()> {
        self.far.update(key, decide)?;
        self.forget(key);
        Ok(())
    }

    fn ttl(&self, key: &[u8]) -> Result<Option<Remaining>> {
        self.far.ttl(key)
    }

    fn key_page(&self, prefix: &[u8], after: Option<&[u8]>) -> Result<KeyPage> {
        self.far.key_page(prefix, after)
    }

    fn keys(&self, prefix: &[u8], visit: &mut KeyVisit) -> Result<()> {
        self.far.keys(prefix, visit)
    }

    fn purge_expired(&self) -> Result<u64> {
        let far = self.far.purge_expired()?;
        let _ = self.near.purge_expired();
        Ok(far)
    }

    fn add_flagged(&self, key: &[u8], value: &[u8], ttl: Ttl, flags: u32) -> Result<bool> {
        let stored = self.far.add_flagged(key, value, ttl, flags)?;
        self.forget(key);
        Ok(stored)
    }

    fn touch(&self, key: &[u8], ttl: Ttl) -> Result<bool> {
        let found = self.far.touch(key, ttl)?;
        self.forget(key);
        Ok(found)
    }

    fn incr(&self, key: &[u8], delta: i64, ttl: Ttl) -> Result<i64> {
        let sum = self.far.incr(key, delta, ttl)?;
        self.forget(key);
        Ok(sum)
    }

    fn get_many(&self, keys: &[&[u8]], visit: &mut VisitMany) -> Result<()> {
        let mut missing = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            if !self.near.get_flagged(key, &mut |v, f| visit(i, v, f))? {
                missing.push(i);
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let far_keys: Vec<&[u8]> = missing.iter().map(|&i| keys[i]).collect();
        let tickets: Vec<u64> = far_keys.iter().map(|k| self.fill_ticket(k)).collect();
        let mut found = vec![None; far_keys.len()];
        // One round trip on a remote far, each entry with its TTL (asking each key's TTL
        // after cost 100 more round trips for 100 keys).
        self.far.get_many_ttl(&far_keys, &mut |j, v, f, left| {
            visit(missing[j], v, f);
            found[j] = Some((v.to_vec(), f, left));
        })?;
        for (j, copy) in found.into_iter().enumerate() {
            self.count(copy.is_some());
            if let Some((value, flags, left)) = copy {
                self.fill(tickets[j], far_keys[j], &value, flags, left);
            }
        }
        Ok(())
    }

    fn set_many(&self, entries: &[EntryRef]) -> Result<()> {
        self.far.set_many(entries)?;
        for e in entries {
            self.forget(e.key);
        }
        Ok(())
    }

    fn check_entry(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.far.check_entry(key, value)
    }

    fn delete_many(&self, keys: &[&[u8]]) -> Result<u64> {
        let deleted = self.far.delete_many(keys)?;
        for key in keys {
            self.forget(key);
        }
        Ok(deleted)
    }

    fn delete_prefix(&self, prefix: &[u8]) -> Result<u64> {
        let deleted = self.far.delete_prefix(prefix)?;
        let mut epochs = self.epochs.lock();
        epochs.iter_mut().for_each(|e| *e += 1);
        let _ = self.near.delete_prefix(prefix);
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryCache;

    fn tiered(max: f64) -> (TieredCache, Arc<dyn Backend>, Arc<dyn Backend>) {
        let near: Arc<dyn Backend> = Arc::new(MemoryCache::new(0));
        let far: Arc<dyn Backend> = Arc::new(MemoryCache::new(0));
        (
            TieredCache::new(near.clone(), far.clone(), max).unwrap(),
            near,
            far,
        )
    }

    #[test]
    fn reads_through_and_writes_through() {
        let (t, near, far) = tiered(60.0);
        far.set(b"k", b"far", Ttl::Never).unwrap();
        assert_eq!(t.get_vec(b"k").unwrap(), Some(b"far".to_vec()));
        assert_eq!(near.get_vec(b"k").unwrap(), Some(b"far".to_vec())); // copied
        match near.ttl(b"k").unwrap() {
            Some(Remaining::Seconds(s)) => assert!(s <= 60.0),
            other => panic!("near copy must expire, got {other:?}"),
        }
        t.set(b"k", b"new", Ttl::After(Duration::from_secs(5)))
            .unwrap();
        assert_eq!(far.get_vec(b"k").unwrap(), Some(b"new".to_vec()));
        match near.ttl(b"k").unwrap() {
            Some(Remaining::Seconds(s)) => assert!(s <= 5.0),
            other => panic!("{other:?}"),
        }
        assert_eq!(t.incr(b"n", 2, Ttl::Never).unwrap(), 2);
        assert!(!near.has(b"n").unwrap());
        t.delete(b"k").unwrap();
        assert!(!near.has(b"k").unwrap() && !far.has(b"k").unwrap());
        // One get served by far, and near's own hits (this test also read near directly).
        let stats = t.stats().unwrap();
        assert_eq!(stats.hits, 1 + near.stats().unwrap().hits);
        assert_eq!(stats.misses, 0);
        assert!(!t.get_flagged(b"absent", &mut |_, _| {}).unwrap());
        assert_eq!(t.stats().unwrap().misses, 1);
    }

    /// A far that, once armed, holds a get's reply (after reading the value) until the
    /// test lets it go: the moment a write of the handle's own can land in.
    struct PausingFar {
        inner: MemoryCache,
        armed: std::sync::atomic::AtomicBool,
        read: std::sync::Barrier,
        go: std::sync::Barrier,
    }

    impl Backend for PausingFar {
        fn get_flagged_ttl(&self, key: &[u8], visit: &mut Visit) -> Result<Option<Remaining>> {
            let left = self.inner.get_flagged_ttl(key, visit);
            if self.armed.swap(false, Relaxed) {
                self.read.wait(); // the value is read ...
                self.go.wait(); // ... and the reply waits while the test writes
            }
            left
        }
        crate::backend::forward_to_inner!(
            inner: set_flagged, get_flagged, pop_flagged, has, delete, clear, len, stats,
            save, close, update, ttl, key_page, purge_expired
        );
    }

    #[test]
    fn a_fill_that_began_before_the_handles_own_write_is_not_stored_after_it() {
        // A get misses near, reads the old value from far, and is held; meanwhile this
        // handle sets (or deletes) the key; then the get's fill lands. Before, it stored
        // the old value in near, served for up to near_ttl_max.
        for write in ["set", "delete"] {
            let far = Arc::new(PausingFar {
                inner: MemoryCache::new(0),
                armed: std::sync::atomic::AtomicBool::new(false),
                read: std::sync::Barrier::new(2),
                go: std::sync::Barrier::new(2),
            });
            let near: Arc<dyn Backend> = Arc::new(MemoryCache::new(0));
            let t = Arc::new(TieredCache::new(near, far.clone(), 60.0).unwrap());
            far.set(b"k", b"old", Ttl::Never).unwrap();
            far.armed.store(true, Relaxed);
            let getter = {
                let t = t.clone();
                std::thread::spawn(move || t.get_vec(b"k").unwrap())
            };
            far.read.wait();
            match write {
                "set" => t.set(b"k", b"new", Ttl::Never).unwrap(),
                _ => t.delete(b"k").unwrap(),
            }
            far.go.wait();
            assert_eq!(
                getter.join().unwrap().as_deref(),
                Some(&b"old"[..]),
                "it read before"
            );
            let want = (write == "set").then(|| b"new".to_vec());
            for _ in 0..3 {
                assert_eq!(
                    t.get_vec(b"k").unwrap(),
                    want,
                    "after the handle's own {write}"
                );
            }
        }
    }

    #[test]
    fn near_ttl_max_is_checked() {
        let near: Arc<dyn Backend> = Arc::new(MemoryCache::new(0));
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(
                TieredCache::new(near.clone(), near.clone(), bad).is_err(),
                "{bad}"
            );
        }
    }
}
