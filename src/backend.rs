//! The one trait every backend implements. The C layer and the async executor only ever
//! talk to this trait; a backend never knows it is called from C.

use crate::error::{Error, ErrorKind, Result};
use crate::sink::{Room, Sink};
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
/// The bytes of keys and values, and the number of keys, a bulk set leaves stored: the
/// last entry of each key, dead-on-arrival ones aside.
fn batch_footprint(entries: &[EntryRef]) -> (u64, u64) {
    let mut last = std::collections::HashMap::with_capacity(entries.len());
    for e in entries {
        last.insert(e.key, e);
    }
    last.values()
        .filter(|e| !e.ttl.is_expired_at_once())
        .fold((0, 0), |(bytes, keys), e| {
            (bytes + (e.key.len() + e.value.len()) as u64, keys + 1)
        })
}

/// `TooLarge` for a bulk set that needs more than `max_bytes` bytes or `max_keys` keys
/// (0: no bound) at once in `holder`.
pub(crate) fn check_batch_fits(
    entries: &[EntryRef],
    max_bytes: u64,
    max_keys: u64,
    holder: &str,
) -> Result<()> {
    if max_bytes == 0 && max_keys == 0 {
        return Ok(());
    }
    let (bytes, keys) = batch_footprint(entries);
    let refuse = |what: String| Err(Error::new(ErrorKind::TooLarge, what));
    if max_bytes != 0 && bytes > max_bytes {
        return refuse(format!(
            "the batch is {bytes} bytes and {holder} holds at most {max_bytes}: nothing stored"
        ));
    }
    if max_keys != 0 && keys > max_keys {
        return refuse(format!(
            "the batch has {keys} keys and {holder} holds at most {max_keys}: nothing stored"
        ));
    }
    Ok(())
}

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

/// Called by a bulk read with the index of a found key, its value and flags.
pub type VisitMany<'a> = dyn FnMut(usize, &[u8], u32) + 'a;

/// Called by a bulk read with the index of a found key, its value, flags and how long
/// the entry has left.
pub type VisitManyTtl<'a> = dyn FnMut(usize, &[u8], u32, Remaining) + 'a;

/// Called by a key walk with each key; returns false to stop.
pub type KeyVisit<'a> = dyn FnMut(&[u8]) -> bool + 'a;

/// How long a live entry has left.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Remaining {
    /// It never expires.
    Forever,
    /// It expires in this many seconds (> 0).
    Seconds(f64),
}

/// One entry of a bulk set.
#[derive(Debug, Clone, Copy)]
pub struct EntryRef<'a> {
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub ttl: Ttl,
    pub flags: u32,
}

/// The live entry an [`Backend::update`] decides on.
#[derive(Debug, Clone, Copy)]
pub struct Current<'a> {
    pub value: &'a [u8],
    pub flags: u32,
}

/// What an [`Backend::update`] does with the key.
#[derive(Debug)]
pub enum Change {
    /// Leave the key as it is (present or absent).
    Keep,
    /// Store this value and flags; `ttl` None keeps the entry's TTL (an absent key gets
    /// none), Some sets a new one (a TTL of 0 removes the entry).
    Put {
        value: Vec<u8>,
        flags: u32,
        ttl: Option<Ttl>,
    },
}

/// The decision function of [`Backend::update`]: sees the live entry (None when absent
/// or expired) and says what to do. It may run more than once (a backend that retries
/// after a lost race); only its last decision takes effect.
pub type Decide<'a> = dyn FnMut(Option<Current>) -> Result<Change> + 'a;

/// A page of keys from [`Backend::key_page`], and where the next page starts.
pub struct KeyPage {
    pub keys: Vec<Vec<u8>>,
    /// None when the walk is over.
    pub next: Option<Vec<u8>>,
}

/// Keys fetched per page of a walk: bounds the walk's memory whatever the key count.
pub const KEY_PAGE: usize = 256;

/// Parses a counter as `incr` stores it: ASCII decimal int64, optional leading '-'.
pub fn parse_counter(value: &[u8]) -> Result<i64> {
    std::str::from_utf8(value)
        .ok()
        .filter(|s| !s.starts_with('+'))
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| {
            Error::new(
                ErrorKind::NotNumeric,
                "the stored value is not a decimal 64-bit integer",
            )
        })
}

/// The decision of `incr`: adds `delta` to the live counter (or to 0, with `ttl`), and
/// records the new value in `out`.
fn counter_change(current: Option<Current>, delta: i64, ttl: Ttl, out: &mut i64) -> Result<Change> {
    let (base, ttl) = match current {
        Some(c) => (parse_counter(c.value)?, None),
        None => (0, Some(ttl)),
    };
    let sum = base.checked_add(delta).ok_or_else(|| {
        Error::new(
            ErrorKind::NotNumeric,
            format!("{base} + {delta} overflows a 64-bit integer"),
        )
    })?;
    *out = sum;
    Ok(Change::Put {
        value: sum.to_string().into_bytes(),
        flags: 0,
        ttl,
    })
}

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

    /// `get_flagged`, also saying how long the entry found has left (None: not found).
    /// A remote backend answers both in one round trip; the tiered handle uses this to
    /// cap its near copies.
    fn get_flagged_ttl(&self, key: &[u8], visit: &mut Visit) -> Result<Option<Remaining>> {
        if !self.get_flagged(key, visit)? {
            return Ok(None);
        }
        Ok(Some(self.ttl(key)?.unwrap_or(Remaining::Seconds(0.0))))
    }

    /// `get_many`, also saying how long each entry found has left. A remote backend
    /// answers in one round trip (the tiered handle caps its near copies with it); this
    /// default asks key by key.
    fn get_many_ttl(&self, keys: &[&[u8]], visit: &mut VisitManyTtl) -> Result<()> {
        for (i, key) in keys.iter().enumerate() {
            let mut copy = None;
            let left = self.get_flagged_ttl(key, &mut |value, flags| {
                copy = Some((value.to_vec(), flags));
            })?;
            if let (Some((value, flags)), Some(left)) = (copy, left) {
                visit(i, &value, flags, left);
            }
        }
        Ok(())
    }

    /// `get_flagged` handing the entry to a [`Sink`], which decides where a value the
    /// store keeps in a file of its own is read to (the file and folder kinds override
    /// this; the default hands the sink the bytes `get_flagged` visits).
    fn get_to(&self, key: &[u8], sink: &mut dyn Sink) -> Result<bool> {
        self.get_flagged(key, &mut |value, flags| sink.take(value, flags, None))
    }

    /// Copies the value of `key` into `buf` when it fits and returns its size and flags
    /// (`None`: not found; a value larger than `buf` is not copied, its size is still
    /// returned). `cache_get_into`'s body: a backend whose read can copy without the
    /// visitor's indirect call (the memory kind, where that call is a tenth of a get)
    /// overrides it.
    fn get_into(&self, key: &[u8], buf: &mut [u8]) -> Result<Option<(usize, u32)>> {
        let mut room = Room::new(buf);
        let present = self.get_to(key, &mut room)?;
        Ok(room.found().filter(|_| present))
    }

    /// Removes `key` and hands its value and flags to `visit`, atomically: of any number
    /// of concurrent pops of one key, exactly one returns `Ok(true)`.
    fn pop_flagged(&self, key: &[u8], visit: &mut Visit) -> Result<bool>;

    /// `pop_flagged` handing the value to a [`Sink`].
    fn pop_to(&self, key: &[u8], sink: &mut dyn Sink) -> Result<bool> {
        self.pop_flagged(key, &mut |value, flags| sink.take(value, flags, None))
    }

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

    /// Where `key`'s entry lives, or would live, on disk, for a kind that gives each
    /// entry a place of its own (the folder kind: its folder); None for the others. The
    /// one home of that naming rule: bindings ask here rather than repeat it. `Closed`
    /// once the handle is closed, as every other call.
    fn entry_path(&self, _key: &[u8]) -> Result<Option<std::path::PathBuf>> {
        Ok(None)
    }

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

    // ---- Version 2 -------------------------------------------------------------------
    //
    // A backend implements the primitives its store can do atomically (`update`, `ttl`,
    // `key_page`, `purge_expired`, and usually `delete_counted`); the operations users
    // call are built on them here, and a backend overrides one when its store does it
    // better (one SQL statement, one transaction, one round trip). A wrapping backend
    // forwards the primitives, changing what it must (sealing values, two tiers).

    /// Atomically reads the live entry of `key` and applies what `decide` says, with no
    /// other write to the key in between (in any thread, or any process sharing the
    /// store). A stored value makes the key the most recent.
    fn update(&self, key: &[u8], decide: &mut Decide) -> Result<()>;

    /// How long the live entry of `key` has left; None when absent or expired. A peek.
    fn ttl(&self, key: &[u8]) -> Result<Option<Remaining>>;

    /// Up to [`KEY_PAGE`] live keys starting with `prefix`, from the position `after`
    /// (None: the start; else the `next` of an earlier page, a position only this
    /// backend reads). Holds no lock on return. A key live for the whole walk is in
    /// exactly one page.
    fn key_page(&self, prefix: &[u8], after: Option<&[u8]>) -> Result<KeyPage>;

    /// Removes every expired entry; returns how many went.
    fn purge_expired(&self) -> Result<u64>;

    /// Removes `key`; true when a live entry went.
    fn delete_counted(&self, key: &[u8]) -> Result<bool> {
        let live = self.has(key)?;
        self.delete(key)?;
        Ok(live)
    }

    /// Stores only when no live entry holds `key`; true when it stored. Of any number of
    /// concurrent adds of one key exactly one stores.
    fn add_flagged(&self, key: &[u8], value: &[u8], ttl: Ttl, flags: u32) -> Result<bool> {
        let mut stored = false;
        self.update(key, &mut |current| {
            stored = current.is_none();
            Ok(match current {
                Some(_) => Change::Keep,
                None => Change::Put {
                    value: crate::error::try_copy(value)?,
                    flags,
                    ttl: Some(ttl),
                },
            })
        })?;
        Ok(stored)
    }

    /// Gives the live entry of `key` a new TTL, value kept; false when absent.
    fn touch(&self, key: &[u8], ttl: Ttl) -> Result<bool> {
        let mut found = false;
        self.update(key, &mut |current| {
            found = current.is_some();
            Ok(match current {
                None => Change::Keep,
                Some(c) => Change::Put {
                    value: crate::error::try_copy(c.value)?,
                    flags: c.flags,
                    ttl: Some(ttl),
                },
            })
        })?;
        Ok(found)
    }

    /// Adds `delta` to the decimal counter under `key` (absent: 0, with `ttl`), returns
    /// the new value. `NotNumeric` when the value is no int64 or the sum overflows.
    fn incr(&self, key: &[u8], delta: i64, ttl: Ttl) -> Result<i64> {
        let mut sum = 0;
        self.update(key, &mut |current| {
            counter_change(current, delta, ttl, &mut sum)
        })?;
        Ok(sum)
    }

    /// Looks every key up; `visit` gets the index and value of each one found.
    fn get_many(&self, keys: &[&[u8]], visit: &mut VisitMany) -> Result<()> {
        for (i, key) in keys.iter().enumerate() {
            self.get_flagged(key, &mut |value, flags| visit(i, value, flags))?;
        }
        Ok(())
    }

    /// Stores every entry, or (on an error) none. This default checks what can be
    /// checked first, then sets one by one: right for a store whose only later failure
    /// is running out of memory. The persistent kinds write one transaction.
    fn set_many(&self, entries: &[EntryRef]) -> Result<()> {
        for e in entries {
            self.check_entry(e.key, e.value)?;
        }
        self.check_batch(entries)?;
        for e in entries {
            self.set_flagged(e.key, e.value, e.ttl, e.flags)?;
        }
        Ok(())
    }

    /// Refuses an entry this store can never hold (`TooLarge`), before a bulk set.
    fn check_entry(&self, _key: &[u8], _value: &[u8]) -> Result<()> {
        Ok(())
    }

    /// Refuses a bulk set this store cannot hold all at once (`TooLarge`): stored, its
    /// later entries would evict its earlier ones, and an acknowledged batch would be
    /// partly gone on return. See [`check_batch_fits`].
    fn check_batch(&self, _entries: &[EntryRef]) -> Result<()> {
        Ok(())
    }

    /// Removes every key; returns how many were live.
    fn delete_many(&self, keys: &[&[u8]]) -> Result<u64> {
        let mut deleted = 0;
        for key in keys {
            deleted += self.delete_counted(key)? as u64;
        }
        Ok(deleted)
    }

    /// Calls `visit` with each live key starting with `prefix` until it returns false.
    /// Walks page by page; no lock is held while `visit` runs.
    fn keys(&self, prefix: &[u8], visit: &mut KeyVisit) -> Result<()> {
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self.key_page(prefix, after.as_deref())?;
            for key in &page.keys {
                if !visit(key) {
                    return Ok(());
                }
            }
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(()),
            }
        }
    }

    /// Removes every live key starting with `prefix`; returns how many.
    fn delete_prefix(&self, prefix: &[u8]) -> Result<u64> {
        let mut deleted = 0;
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self.key_page(prefix, after.as_deref())?;
            let keys: Vec<&[u8]> = page.keys.iter().map(Vec::as_slice).collect();
            deleted += self.delete_many(&keys)?;
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(deleted),
            }
        }
    }
}

/// In an `impl Backend` of a wrapping backend: the named calls, passed unchanged to the
/// field `$inner` (a wrapper writes only the calls it changes).
macro_rules! forward_to_inner {
    ($inner:ident: $($call:ident),+ $(,)?) => {
        $( $crate::backend::forward_to_inner!(@ $inner $call); )+
    };
    (@ $inner:ident set_flagged) => {
        fn set_flagged(&self, key: &[u8], value: &[u8], ttl: $crate::ttl::Ttl, flags: u32)
            -> $crate::error::Result<()> { self.$inner.set_flagged(key, value, ttl, flags) }
    };
    (@ $inner:ident get_flagged) => {
        fn get_flagged(&self, key: &[u8], visit: &mut $crate::backend::Visit)
            -> $crate::error::Result<bool> { self.$inner.get_flagged(key, visit) }
    };
    (@ $inner:ident pop_flagged) => {
        fn pop_flagged(&self, key: &[u8], visit: &mut $crate::backend::Visit)
            -> $crate::error::Result<bool> { self.$inner.pop_flagged(key, visit) }
    };
    (@ $inner:ident has) => {
        fn has(&self, key: &[u8]) -> $crate::error::Result<bool> { self.$inner.has(key) }
    };
    (@ $inner:ident delete) => {
        fn delete(&self, key: &[u8]) -> $crate::error::Result<()> { self.$inner.delete(key) }
    };
    (@ $inner:ident clear) => {
        fn clear(&self) -> $crate::error::Result<()> { self.$inner.clear() }
    };
    (@ $inner:ident len) => {
        fn len(&self) -> $crate::error::Result<u64> { self.$inner.len() }
    };
    (@ $inner:ident stats) => {
        fn stats(&self) -> $crate::error::Result<$crate::backend::Stats> { self.$inner.stats() }
    };
    (@ $inner:ident save) => {
        fn save(&self) -> $crate::error::Result<()> { self.$inner.save() }
    };
    (@ $inner:ident close) => {
        fn close(&self) -> $crate::error::Result<()> { self.$inner.close() }
    };
    (@ $inner:ident update) => {
        fn update(&self, key: &[u8], decide: &mut $crate::backend::Decide)
            -> $crate::error::Result<()> { self.$inner.update(key, decide) }
    };
    (@ $inner:ident ttl) => {
        fn ttl(&self, key: &[u8]) -> $crate::error::Result<Option<$crate::backend::Remaining>> {
            self.$inner.ttl(key)
        }
    };
    (@ $inner:ident key_page) => {
        fn key_page(&self, prefix: &[u8], after: Option<&[u8]>)
            -> $crate::error::Result<$crate::backend::KeyPage> { self.$inner.key_page(prefix, after) }
    };
    (@ $inner:ident purge_expired) => {
        fn purge_expired(&self) -> $crate::error::Result<u64> { self.$inner.purge_expired() }
    };
}
pub(crate) use forward_to_inner;
