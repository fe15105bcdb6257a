//! The one trait every backend implements. The C layer and the async executor only ever
//! talk to this trait; a backend never knows it is called from C.

use crate::error::{Error, ErrorKind, Result};
use crate::ttl::Ttl;

/// Counters since the cache was opened, plus the current size.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Lookups (get, pop, has) that found a live entry.
    pub hits: u64,
    /// Lookups that found nothing or an expired entry.
    pub misses: u64,
    /// Successful sets.
    pub sets: u64,
    /// Entries removed by delete, pop and clear.
    pub deletes: u64,
    /// Live entries removed to respect the size bound (max_keys or size_limit).
    pub evictions: u64,
    /// Expired entries removed (on read, on len, or when they were due for eviction).
    pub expirations: u64,
    /// Entries that have not expired, as `len`.
    pub entries: u64,
    /// Bytes of keys and values held.
    pub bytes: u64,
}

/// Refuses an entry of `size` bytes (key and value) that can never fit under `limit`
/// (0 = no limit) with `TooLarge`; `holder` names what holds at most `limit` bytes.
pub(crate) fn check_fits(size: u64, limit: u64, holder: &str) -> Result<()> {
    if limit != 0 && size > limit {
        return Err(Error::new(
            ErrorKind::TooLarge,
            format!("the entry is {size} bytes and {holder} holds at most {limit}"),
        ));
    }
    Ok(())
}

impl Stats {
    /// Counts a set with a TTL of 0, dead on arrival: it is a set, and the entry it
    /// replaced (if any, `replaced`) leaves as expired.
    pub(crate) fn count_dead_on_arrival(&mut self, replaced: bool) {
        self.sets += 1;
        self.expirations += replaced as u64;
    }

    /// Adds the counters of `other` (used to sum shards).
    pub fn add_counters(&mut self, other: &Stats) {
        self.hits += other.hits;
        self.misses += other.misses;
        self.sets += other.sets;
        self.deletes += other.deletes;
        self.evictions += other.evictions;
        self.expirations += other.expirations;
        self.entries += other.entries;
        self.bytes += other.bytes;
    }
}

/// How a lookup went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    Hit,
    Miss,
    /// There was an entry, but it had expired; it has been removed.
    Expired,
}

impl Stats {
    /// Counts a lookup's outcome (hit, or miss and maybe expiration); true on a hit.
    pub(crate) fn count_lookup(&mut self, lookup: Lookup) -> bool {
        match lookup {
            Lookup::Hit => self.hits += 1,
            Lookup::Miss => self.misses += 1,
            Lookup::Expired => {
                self.misses += 1;
                self.expirations += 1;
            }
        }
        lookup == Lookup::Hit
    }

    /// Counts a removal by delete (an expired entry counts as an expiration).
    pub(crate) fn count_delete(&mut self, lookup: Lookup) {
        match lookup {
            Lookup::Hit => self.deletes += 1,
            Lookup::Expired => self.expirations += 1,
            Lookup::Miss => {}
        }
    }
}

/// Called with a found value and the flags word it was stored with.
pub type Visit<'a> = dyn FnMut(&[u8], u32) + 'a;

/// A cache backend. Every method may be called from any thread at any time; after
/// [`Backend::close`] every method returns an error of kind `Closed`.
///
/// Every entry carries a 32-bit flags word next to its value, as memcached keeps one:
/// the library stores it and hands it back, never interprets it. Bindings use it to
/// tell how a value was encoded (the Python binding marks pickled values). The plain
/// `set`/`get`/`pop` store 0 and ignore it.
pub trait Backend: Send + Sync {
    /// Stores `value` with `flags` under `key`, replacing any earlier value, flags and TTL.
    fn set_flagged(&self, key: &[u8], value: &[u8], ttl: Ttl, flags: u32) -> Result<()>;

    /// Looks `key` up. When found, `visit` is called once with the value and its flags
    /// (while the backend still guards it, so callers copy straight into their own
    /// buffer) and the result is `Ok(true)`.
    fn get_flagged(&self, key: &[u8], visit: &mut Visit) -> Result<bool>;

    /// Removes `key` and hands its value and flags to `visit`, atomically: of any number
    /// of concurrent pops of one key, exactly one returns `Ok(true)`.
    fn pop_flagged(&self, key: &[u8], visit: &mut Visit) -> Result<bool>;

    /// `set_flagged` with flags 0.
    fn set(&self, key: &[u8], value: &[u8], ttl: Ttl) -> Result<()> {
        self.set_flagged(key, value, ttl, 0)
    }

    /// `get_flagged`, ignoring the flags.
    fn get(&self, key: &[u8], visit: &mut dyn FnMut(&[u8])) -> Result<bool> {
        self.get_flagged(key, &mut |value, _| visit(value))
    }

    /// `pop_flagged`, ignoring the flags.
    fn pop(&self, key: &[u8], visit: &mut dyn FnMut(&[u8])) -> Result<bool> {
        self.pop_flagged(key, &mut |value, _| visit(value))
    }

    /// True when `key` holds a live entry.
    fn has(&self, key: &[u8]) -> Result<bool>;

    /// Removes `key`; succeeds whether or not it was present.
    fn delete(&self, key: &[u8]) -> Result<()>;

    /// Removes every entry.
    fn clear(&self) -> Result<()>;

    /// Number of entries that have not expired.
    fn len(&self) -> Result<u64>;

    /// Counters and size.
    fn stats(&self) -> Result<Stats>;

    /// Makes everything written so far durable (no-op in memory).
    fn save(&self) -> Result<()>;

    /// Flushes and releases resources; idempotent.
    fn close(&self) -> Result<()>;

    /// `get` returning an owned copy.
    fn get_vec(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut out = Ok(Vec::new());
        let found = self.get(key, &mut |v| out = crate::error::try_copy(v))?;
        Ok(if found { Some(out?) } else { None })
    }

    /// `pop` returning an owned copy.
    fn pop_vec(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut out = Ok(Vec::new());
        let found = self.pop(key, &mut |v| out = crate::error::try_copy(v))?;
        Ok(if found { Some(out?) } else { None })
    }

    /// True when `len` is zero.
    fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }
}
