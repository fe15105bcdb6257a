//! Model-based tests: random sequences of operations run against each backend and
//! against a plain reference model (a map, plus exact LRU order or an S3-FIFO written
//! from the paper for the bounded memory cache), checking every result. TTLs are left out (the TTL tests use real time);
//! persistent kinds also reopen their store in the middle of a sequence.

mod common;

use common::TempDir;
use duckcache::{Backend, FileCache, FolderCache, MemoryCache, Policy, ShardedCache, Ttl};
use proptest::prelude::*;
use std::collections::{HashMap, VecDeque};

#[derive(Debug, Clone)]
enum Op {
    Set(u8, Vec<u8>, u32),
    Get(u8),
    Pop(u8),
    Has(u8),
    Delete(u8),
    Clear,
    Len,
    Reopen,
    // Version 2.
    Add(u8, Vec<u8>, u32),
    Incr(u8, i64),
    Touch(u8),
    TtlOf(u8),
    GetMany(Vec<u8>),
    SetMany(Vec<(u8, Vec<u8>, u32)>),
    DeleteMany(Vec<u8>),
    Keys(u8),
    DeletePrefix(u8),
    PurgeExpired,
}

/// Prefixes the walks use: every key, the "key-" ones, one key's own, and none.
fn prefix(p: u8) -> Vec<u8> {
    match p % 4 {
        0 => Vec::new(),
        1 => b"key-".to_vec(),
        2 => b"key-3".to_vec(),
        _ => b"nothing".to_vec(),
    }
}

/// A few keys, so operations meet; key 0 is empty and key 7 has every byte value.
fn key(k: u8) -> Vec<u8> {
    match k % 8 {
        0 => Vec::new(),
        7 => (0..=255u8).collect(),
        n => format!("key-{n}").into_bytes(),
    }
}

fn op() -> impl Strategy<Value = Op> {
    // Values: mostly small, sometimes at and past the file cache's inline limit.
    let value = prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..64),
        1 => (0usize..3).prop_map(|i| vec![i as u8; duckcache::INLINE_MAX - 1 + i]),
    ];
    prop_oneof![
        6 => (any::<u8>(), value, any::<u32>()).prop_map(|(k, v, f)| Op::Set(k, v, f)),
        4 => any::<u8>().prop_map(Op::Get),
        2 => any::<u8>().prop_map(Op::Pop),
        2 => any::<u8>().prop_map(Op::Has),
        2 => any::<u8>().prop_map(Op::Delete),
        1 => Just(Op::Clear),
        1 => Just(Op::Len),
        1 => Just(Op::Reopen),
        2 => (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..8), any::<u32>()).prop_map(|(k, v, f)| Op::Add(k, v, f)),
        1 => (any::<u8>(), proptest::collection::vec(proptest::sample::select(b"0123456789-".to_vec()), 1..4), any::<u32>()).prop_map(|(k, v, f)| Op::Set(k, v, f)),
        2 => (any::<u8>(), -3i64..4).prop_map(|(k, d)| Op::Incr(k, d)),
        1 => any::<u8>().prop_map(Op::Touch),
        1 => any::<u8>().prop_map(Op::TtlOf),
        1 => proptest::collection::vec(any::<u8>(), 0..5).prop_map(Op::GetMany),
        1 => proptest::collection::vec((any::<u8>(), proptest::collection::vec(any::<u8>(), 0..8), any::<u32>()), 0..5).prop_map(Op::SetMany),
        1 => proptest::collection::vec(any::<u8>(), 0..5).prop_map(Op::DeleteMany),
        1 => any::<u8>().prop_map(Op::Keys),
        1 => any::<u8>().prop_map(Op::DeletePrefix),
        1 => Just(Op::PurgeExpired),
    ]
}

/// The reference: key -> (value, flags), and the eviction order of the policy.
#[derive(Default)]
struct Model {
    entries: HashMap<Vec<u8>, (Vec<u8>, u32)>,
    max_keys: usize,
    /// LRU: the keys from least to most recently used.
    recency: Vec<Vec<u8>>,
    /// Some: S3-FIFO instead of LRU.
    s3: Option<S3Model>,
}

/// S3-FIFO as the paper and libCacheSim's S3FIFO define it (queues oldest first).
#[derive(Default)]
struct S3Model {
    small: VecDeque<Vec<u8>>,
    main: VecDeque<Vec<u8>>,
    freq: HashMap<Vec<u8>, u8>,
    ghost: VecDeque<Vec<u8>>,
    has_evicted: bool,
}

impl Model {
    fn lru(max_keys: usize) -> Self {
        Model {
            max_keys,
            ..Model::default()
        }
    }

    fn s3fifo(max_keys: usize) -> Self {
        Model {
            max_keys,
            s3: Some(S3Model::default()),
            ..Model::default()
        }
    }

    /// An access (get, or set of a present key): LRU moves it to the front, S3-FIFO
    /// raises its count (at most 3).
    fn touch(&mut self, k: &[u8]) {
        match &mut self.s3 {
            Some(s3) => {
                let f = s3.freq.get_mut(k).expect("a present key");
                *f = (*f + 1).min(3);
            }
            None => {
                self.recency.retain(|x| x != k);
                self.recency.push(k.to_vec());
            }
        }
    }

    fn remove(&mut self, k: &[u8]) -> Option<(Vec<u8>, u32)> {
        self.recency.retain(|x| x != k);
        if let Some(s3) = &mut self.s3 {
            s3.small.retain(|x| x != k);
            s3.main.retain(|x| x != k);
            s3.freq.remove(k);
        }
        self.entries.remove(k)
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.recency.clear();
        if let Some(s3) = &mut self.s3 {
            let has_evicted = s3.has_evicted;
            *s3 = S3Model {
                has_evicted,
                ..S3Model::default()
            };
        }
    }

    /// Whether a bulk set of `keys` and `values` (the last of each key counts) fits the
    /// bounds all at once; one that does not is refused whole (TooLarge).
    fn holds_at_once<'a>(
        &self,
        keys: &[Vec<u8>],
        values: impl Iterator<Item = &'a Vec<u8>>,
    ) -> bool {
        let mut last = std::collections::HashMap::new();
        for (k, v) in keys.iter().zip(values) {
            last.insert(k, v);
        }
        let bytes: usize = last.iter().map(|(k, v)| k.len() + v.len()).sum();
        let max_bytes = MAX_BYTES.with(|m| m.get());
        (self.max_keys == 0 || last.len() <= self.max_keys)
            && (max_bytes == 0 || bytes <= max_bytes)
    }

    fn set(&mut self, k: &[u8], v: &[u8], flags: u32) {
        let max_bytes = MAX_BYTES.with(|m| m.get());
        if self.entries.contains_key(k) {
            self.entries.insert(k.to_vec(), (v.to_vec(), flags));
            self.touch(k);
        } else if self.s3.is_some() {
            self.s3_insert(k, v, flags);
        } else {
            self.entries.insert(k.to_vec(), (v.to_vec(), flags));
            self.touch(k);
        }
        while self.max_keys > 0 && self.entries.len() > self.max_keys {
            self.evict();
        }
        while max_bytes > 0 && self.bytes() > max_bytes {
            self.evict();
        }
    }

    /// A new key under S3-FIFO: out of the ghost queue if there, room made first, then
    /// into main (a ghost hit, or while the cache first fills and small is full) or small.
    fn s3_insert(&mut self, k: &[u8], v: &[u8], flags: u32) {
        let s3 = self.s3.as_mut().unwrap();
        let ghost_hit = s3.ghost.iter().any(|x| x == k);
        s3.ghost.retain(|x| x != k);
        while self.max_keys > 0 && self.entries.len() >= self.max_keys {
            self.evict();
        }
        let small_share = (self.max_keys / 10).max(1);
        let s3 = self.s3.as_mut().unwrap();
        if ghost_hit || (!s3.has_evicted && s3.small.len() >= small_share) {
            s3.main.push_back(k.to_vec());
        } else {
            s3.small.push_back(k.to_vec());
        }
        s3.freq.insert(k.to_vec(), 0);
        self.entries.insert(k.to_vec(), (v.to_vec(), flags));
    }

    /// Evicts one entry by the policy.
    fn evict(&mut self) {
        let Some(s3) = &mut self.s3 else {
            let oldest = self.recency.remove(0);
            self.entries.remove(&oldest);
            return;
        };
        s3.has_evicted = true;
        let small_share = (self.max_keys / 10).max(1);
        let main_share = self.max_keys - small_share;
        let from_main = s3.main.len() > main_share || s3.small.is_empty();
        let gone = if from_main {
            s3.evict_main().or_else(|| s3.evict_small(self.max_keys))
        } else {
            s3.evict_small(self.max_keys).or_else(|| s3.evict_main())
        };
        self.entries.remove(&gone.expect("something to evict"));
    }

    fn bytes(&self) -> usize {
        self.entries
            .iter()
            .map(|(k, (v, _))| k.len() + v.len())
            .sum()
    }
}

impl S3Model {
    /// Small's oldest entries go to main if accessed twice, until one leaves for the
    /// ghost queue (nine tenths of the cache long).
    fn evict_small(&mut self, max_keys: usize) -> Option<Vec<u8>> {
        while let Some(k) = self.small.pop_front() {
            if self.freq[&k] >= 2 {
                self.freq.insert(k.clone(), 0);
                self.main.push_back(k);
                continue;
            }
            self.freq.remove(&k);
            self.ghost.push_back(k.clone());
            while self.ghost.len() > max_keys * 9 / 10 {
                self.ghost.pop_front();
            }
            return Some(k);
        }
        None
    }

    /// Main's oldest entries go back to its head with their count lowered while they
    /// have one, until one with count 0 leaves.
    fn evict_main(&mut self) -> Option<Vec<u8>> {
        while let Some(k) = self.main.pop_front() {
            let f = self.freq[&k];
            if f > 0 {
                self.freq.insert(k.clone(), f - 1);
                self.main.push_back(k);
                continue;
            }
            self.freq.remove(&k);
            return Some(k);
        }
        None
    }
}

/// Whether an entry of `k` and `v` fits the byte bound of the case running.
fn fits(k: &[u8], v: &[u8]) -> bool {
    let max = MAX_BYTES.with(|m| m.get());
    max == 0 || k.len() + v.len() <= max
}

fn refused_as_too_large<T: std::fmt::Debug>(r: duckcache::Result<T>, at: &str) {
    assert_eq!(
        r.unwrap_err().kind(),
        duckcache::ErrorKind::TooLarge,
        "{at}"
    );
}

fn read<B: Backend + ?Sized>(c: &B, k: &[u8], pop: bool) -> Option<(Vec<u8>, u32)> {
    let mut out = None;
    let mut visit = |v: &[u8], f: u32| out = Some((v.to_vec(), f));
    let found = if pop {
        c.pop_flagged(k, &mut visit).unwrap()
    } else {
        c.get_flagged(k, &mut visit).unwrap()
    };
    assert_eq!(found, out.is_some());
    out
}

/// No internal structure to check beyond the results.
fn nothing<B: ?Sized>(_: &B) -> Result<(), String> {
    Ok(())
}

/// Runs `ops` on a cache from `open` and on the model; panics at the first difference,
/// or at the first operation after which `invariants` finds the cache's structure broken.
fn check<B: Backend + ?Sized>(
    open: &dyn Fn() -> Box<B>,
    ops: &[Op],
    max_keys: usize,
    persistent: bool,
    invariants: &dyn Fn(&B) -> Result<(), String>,
) {
    let mut c = open();
    let mut m = if S3.with(|s| s.get()) {
        Model::s3fifo(max_keys)
    } else {
        Model::lru(max_keys)
    };
    for (step, op) in ops.iter().enumerate() {
        let at = format!("step {step}: {op:?}");
        match op {
            Op::Set(k, v, f) if !fits(&key(*k), v) => {
                refused_as_too_large(c.set_flagged(&key(*k), v, Ttl::Never, *f), &at);
            }
            Op::Set(k, v, f) => {
                c.set_flagged(&key(*k), v, Ttl::Never, *f).unwrap();
                m.set(&key(*k), v, *f);
            }
            Op::Get(k) => {
                let want = m.entries.get(&key(*k)).cloned();
                if want.is_some() {
                    m.touch(&key(*k));
                }
                assert_eq!(read(&*c, &key(*k), false), want, "{at}");
            }
            Op::Pop(k) => {
                let want = m.remove(&key(*k));
                assert_eq!(read(&*c, &key(*k), true), want, "{at}");
            }
            Op::Has(k) => {
                // A peek: the model's recency is left as it is.
                let want = m.entries.contains_key(&key(*k));
                assert_eq!(c.has(&key(*k)).unwrap(), want, "{at}");
            }
            Op::Delete(k) => {
                m.remove(&key(*k));
                c.delete(&key(*k)).unwrap();
            }
            Op::Clear => {
                m.clear();
                c.clear().unwrap();
            }
            Op::Len => assert_eq!(c.len().unwrap(), m.entries.len() as u64, "{at}"),
            Op::Reopen if persistent => {
                c.close().unwrap();
                c = open();
            }
            Op::Reopen => {}
            Op::Add(k, v, f) if !m.entries.contains_key(&key(*k)) && !fits(&key(*k), v) => {
                refused_as_too_large(c.add_flagged(&key(*k), v, Ttl::Never, *f), &at);
            }
            Op::Add(k, v, f) => {
                let absent = !m.entries.contains_key(&key(*k));
                if absent {
                    m.set(&key(*k), v, *f);
                }
                assert_eq!(
                    c.add_flagged(&key(*k), v, Ttl::Never, *f).unwrap(),
                    absent,
                    "{at}"
                );
            }
            Op::Incr(k, delta) => {
                let base = match m.entries.get(&key(*k)) {
                    None => Some(0),
                    Some((v, _)) => std::str::from_utf8(v)
                        .ok()
                        .filter(|s| !s.starts_with('+'))
                        .and_then(|s| s.parse::<i64>().ok()),
                };
                match base.and_then(|b| b.checked_add(*delta)) {
                    Some(sum) if !fits(&key(*k), sum.to_string().as_bytes()) => {
                        refused_as_too_large(c.incr(&key(*k), *delta, Ttl::Never), &at);
                    }
                    Some(sum) => {
                        assert_eq!(c.incr(&key(*k), *delta, Ttl::Never).unwrap(), sum, "{at}");
                        m.set(&key(*k), sum.to_string().as_bytes(), 0);
                    }
                    None => {
                        let e = c.incr(&key(*k), *delta, Ttl::Never).unwrap_err();
                        assert_eq!(e.kind(), duckcache::ErrorKind::NotNumeric, "{at}");
                    }
                }
            }
            Op::Touch(k) => {
                // A peek, as `has`.
                let want = m.entries.contains_key(&key(*k));
                assert_eq!(c.touch(&key(*k), Ttl::Never).unwrap(), want, "{at}");
            }
            Op::TtlOf(k) => {
                let want = m
                    .entries
                    .contains_key(&key(*k))
                    .then_some(duckcache::backend::Remaining::Forever);
                assert_eq!(c.ttl(&key(*k)).unwrap(), want, "{at}");
            }
            Op::GetMany(ks) => {
                let keys: Vec<Vec<u8>> = ks.iter().map(|k| key(*k)).collect();
                let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
                let mut got = vec![None; keys.len()];
                c.get_many(&refs, &mut |i, v, f| got[i] = Some((v.to_vec(), f)))
                    .unwrap();
                for (i, k) in keys.iter().enumerate() {
                    let want = m.entries.get(k).cloned();
                    if want.is_some() {
                        m.touch(k);
                    }
                    assert_eq!(got[i], want, "{at}: key {i}");
                }
            }
            Op::SetMany(entries) => {
                let keys: Vec<Vec<u8>> = entries.iter().map(|(k, _, _)| key(*k)).collect();
                let all_fit = entries.iter().zip(&keys).all(|((_, v, _), k)| fits(k, v));
                let refs: Vec<duckcache::backend::EntryRef> = entries
                    .iter()
                    .zip(&keys)
                    .map(|((_, v, f), k)| duckcache::backend::EntryRef {
                        key: k,
                        value: v,
                        ttl: Ttl::Never,
                        flags: *f,
                    })
                    .collect();
                if !all_fit || !m.holds_at_once(&keys, entries.iter().map(|(_, v, _)| v)) {
                    refused_as_too_large(c.set_many(&refs), &at); // and nothing changed
                    continue;
                }
                c.set_many(&refs).unwrap();
                for ((_, v, f), k) in entries.iter().zip(&keys) {
                    m.set(k, v, *f);
                }
            }
            Op::DeleteMany(ks) => {
                let keys: Vec<Vec<u8>> = ks.iter().map(|k| key(*k)).collect();
                let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
                let mut want = 0;
                for k in &keys {
                    if m.remove(k).is_some() {
                        want += 1;
                    }
                }
                assert_eq!(c.delete_many(&refs).unwrap(), want, "{at}");
            }
            Op::Keys(p) => {
                let p = prefix(*p);
                let mut want: Vec<Vec<u8>> = m
                    .entries
                    .keys()
                    .filter(|k| k.starts_with(&p))
                    .cloned()
                    .collect();
                let mut got = Vec::new();
                c.keys(&p, &mut |k| {
                    got.push(k.to_vec());
                    true
                })
                .unwrap();
                want.sort();
                got.sort();
                assert_eq!(got, want, "{at}");
            }
            Op::DeletePrefix(p) => {
                let p = prefix(*p);
                let gone: Vec<Vec<u8>> = m
                    .entries
                    .keys()
                    .filter(|k| k.starts_with(&p))
                    .cloned()
                    .collect();
                for k in &gone {
                    m.remove(k);
                }
                assert_eq!(c.delete_prefix(&p).unwrap(), gone.len() as u64, "{at}");
            }
            Op::PurgeExpired => assert_eq!(c.purge_expired().unwrap(), 0, "{at}"),
        }
        if let Err(broken) = invariants(&c) {
            panic!("{at}: {broken}");
        }
    }
    // Everything agrees at the end too: every key, the count and the byte total.
    for k in 0..8 {
        assert_eq!(
            read(&*c, &key(k), false),
            m.entries.get(&key(k)).cloned(),
            "final key {k}"
        );
    }
    let stats = c.stats().unwrap();
    assert_eq!(stats.entries, m.entries.len() as u64);
    let bytes: usize = m.entries.iter().map(|(k, (v, _))| k.len() + v.len()).sum();
    // A remote server's size is not known to the handle (0, as the contract allows).
    if !REMOTE.with(|r| r.get()) {
        assert_eq!(stats.bytes, bytes as u64);
    }
}

thread_local! {
    /// The byte bound of the memory case running (0: none).
    static MAX_BYTES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// Set while an S3-FIFO memory case runs.
    static S3: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Set while a remote kind runs: its stats say 0 bytes.
    static REMOTE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn cases(n: u32) -> ProptestConfig {
    // DUCKCACHE_MODEL_CASES raises the count for a longer run (make fuzz).
    let n = std::env::var("DUCKCACHE_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(n);
    ProptestConfig {
        cases: n,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(cases(64))]

    #[test]
    fn memory_unbounded(ops in proptest::collection::vec(op(), 1..120)) {
        check(&|| Box::new(MemoryCache::new(0)), &ops, 0, false, &MemoryCache::check_invariants);
    }

    #[test]
    fn memory_byte_bounded_lru(ops in proptest::collection::vec(op(), 1..120)) {
        // 200 bytes of keys and values, several shards: eviction by bytes in exact LRU
        // order across shards, entries larger than the bound refused.
        MAX_BYTES.with(|m| m.set(200));
        check(&|| Box::new(MemoryCache::with_bounds(0, 200, 4)), &ops, 0, false, &MemoryCache::check_invariants);
        MAX_BYTES.with(|m| m.set(0));
    }

    #[test]
    fn memory_bounded_lru(ops in proptest::collection::vec(op(), 1..120)) {
        // Several internal shards, so the exact order across shards is checked too.
        check(&|| Box::new(MemoryCache::with_shards(3, 4)), &ops, 3, false, &MemoryCache::check_invariants);
    }

    #[test]
    fn memory_s3fifo(ops in proptest::collection::vec(op(), 1..160), max_keys in 1usize..12) {
        // The queues are global over several shards: the model's single queues must
        // match exactly (eviction, promotion, ghost hits), whatever shard a key is in.
        S3.with(|s| s.set(true));
        check(
            &|| Box::new(MemoryCache::with_policy_and_shards(max_keys as u64, 0, Policy::S3Fifo, 4)),
            &ops, max_keys, false, &MemoryCache::check_invariants,
        );
        S3.with(|s| s.set(false));
    }
}

proptest! {
    #![proptest_config(cases(24))]

    #[test]
    fn file(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = TempDir::new("model-file");
        check(&|| Box::new(FileCache::open(dir.path(), 0).unwrap()), &ops, 0, true, &nothing);
    }

    #[test]
    fn sharded(ops in proptest::collection::vec(op(), 1..60)) {
        // Shards of 100 KB: the large values roll over to new shards.
        let dir = TempDir::new("model-sharded");
        check(&|| Box::new(ShardedCache::open(dir.path(), 100_000, 2).unwrap()), &ops, 0, true, &nothing);
    }

    #[test]
    fn folder(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = TempDir::new("model-folder");
        check(&|| Box::new(FolderCache::open(dir.path(), 0).unwrap()), &ops, 0, true, &nothing);
    }
}

/// The Redis/Valkey kind, when make test provides a server (tools/with-redis): the same
/// model, each case under a prefix of its own (cleared first).
#[cfg(feature = "redis")]
fn redis_cache(prefix: &str) -> Option<Box<dyn Backend>> {
    let Ok(url) = std::env::var("DUCKCACHE_REDIS_URL") else {
        eprintln!("model redis: no DUCKCACHE_REDIS_URL (make test starts a server): not run");
        return None;
    };
    let url = format!(
        "{url}{}prefix={prefix}",
        if url.contains('?') { '&' } else { '?' }
    );
    Some(duckcache::uri::open(&url).expect("the test server is reachable"))
}

#[cfg(feature = "redis")]
proptest! {
    #![proptest_config(cases(16))]

    #[test]
    fn redis(ops in proptest::collection::vec(op(), 1..60)) {
        static CASE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let prefix = format!("model-{}-{}:", std::process::id(), CASE.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        if let Some(c) = redis_cache(&prefix) {
            c.clear().unwrap();
            drop(c);
            REMOTE.with(|r| r.set(true));
            check(&|| redis_cache(&prefix).unwrap(), &ops, 0, true, &nothing);
            REMOTE.with(|r| r.set(false));
        }
    }
}
