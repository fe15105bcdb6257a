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
//! - len, keys and ttl are far's; purge_expired purges both and reports far's count.
//!   Stats: hits and misses count both tiers (a near miss that far serves is one hit);
//!   the other counters are far's.

use crate::backend::VisitMany;
use crate::backend::{Backend, Decide, EntryRef, KeyPage, KeyVisit, Remaining, Stats, Visit};
use crate::error::{Error, Result};
use crate::ttl::Ttl;
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
}

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
        })
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
        let _ = self.near.delete(key);
    }
}

impl Backend for TieredCache {
    fn set_flagged(&self, key: &[u8], value: &[u8], ttl: Ttl, flags: u32) -> Result<()> {
        self.far.set_flagged(key, value, ttl, flags)?;
        if ttl.is_expired_at_once() {
            self.forget(key);
            return Ok(());
        }
        if self
            .near
            .set_flagged(key, value, self.near_ttl_of(ttl), flags)
            .is_err()
        {
            self.forget(key);
        }
        Ok(())
    }

    fn get_flagged(&self, key: &[u8], visit: &mut Visit) -> Result<bool> {
        if self.near.get_flagged(key, visit)? {
            return Ok(true); // counted by near
        }
        let mut copy = None;
        let left = self.far.get_flagged_ttl(key, &mut |value, flags| {
            visit(value, flags);
            copy = Some((value.to_vec(), flags));
        })?;
        if let (Some((value, flags)), Some(left)) = (copy, left) {
            // Best effort: a near that cannot take it serves the next get from far.
            let _ = self
                .near
                .set_flagged(key, &value, self.near_ttl(Some(left)), flags);
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
        let mut found = vec![None; far_keys.len()];
        self.far.get_many(&far_keys, &mut |j, v, f| {
            visit(missing[j], v, f);
            found[j] = Some((v.to_vec(), f));
        })?;
        for (j, copy) in found.into_iter().enumerate() {
            self.count(copy.is_some());
            if let Some((value, flags)) = copy {
                // The far TTL is not known here: the copy lives at most near_ttl_max, and
                // at most what far has left once asked.
                let left = self.far.ttl(far_keys[j]).unwrap_or(None);
                if left.is_some() {
                    let _ = self
                        .near
                        .set_flagged(far_keys[j], &value, self.near_ttl(left), flags);
                }
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
