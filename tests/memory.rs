//! Behaviour of the in-memory backend through the Backend trait.

mod common;

use common::{get, outlive_short_ttl, set, short_ttl};
use duckcache::{Backend, MemoryCache, Ttl};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

#[test]
fn set_get_replace_delete() {
    let c = MemoryCache::new(0);
    assert_eq!(get(&c, "a"), None);
    set(&c, "a", "1");
    assert_eq!(get(&c, "a").as_deref(), Some(&b"1"[..]));
    set(&c, "a", "22");
    assert_eq!(get(&c, "a").as_deref(), Some(&b"22"[..]));
    assert_eq!(c.len().unwrap(), 1);
    c.delete(b"a").unwrap();
    c.delete(b"a").unwrap();
    assert_eq!(get(&c, "a"), None);
    assert_eq!(c.len().unwrap(), 0);
}

#[test]
fn empty_and_binary_keys_and_values() {
    let c = MemoryCache::new(0);
    c.set(b"", b"", Ttl::Never).unwrap();
    c.set(b"\0\xff", b"\0\0\x01", Ttl::Never).unwrap();
    assert_eq!(c.get_vec(b"").unwrap(), Some(vec![]));
    assert_eq!(c.get_vec(b"\0\xff").unwrap(), Some(vec![0, 0, 1]));
    assert_eq!(c.get_vec(b"\0").unwrap(), None);
    assert_eq!(c.len().unwrap(), 2);
}

#[test]
fn lru_evicts_least_recently_used_across_shards() {
    for shards in [1, 4, 64] {
        let c = MemoryCache::with_shards(3, shards);
        set(&c, "a", "1");
        set(&c, "b", "2");
        set(&c, "c", "3");
        assert!(get(&c, "a").is_some()); // order now b, c, a
        set(&c, "d", "4"); // evicts b
        assert_eq!(get(&c, "b"), None, "shards={shards}");
        assert!(c.has(b"c").unwrap()); // a peek: order still c, a, d
        set(&c, "e", "5"); // evicts c
        assert_eq!(get(&c, "c"), None, "shards={shards}");
        set(&c, "d", "44"); // replace refreshes d: order a, e, d
        set(&c, "f", "6"); // evicts a
        assert_eq!(get(&c, "a"), None, "shards={shards}");
        for k in ["d", "e", "f"] {
            assert!(get(&c, k).is_some(), "{k} shards={shards}");
        }
        assert_eq!(c.len().unwrap(), 3);
        assert_eq!(c.stats().unwrap().evictions, 3);
    }
}

#[test]
fn lru_long_sequence_matches_a_model() {
    // A simple Vec-based LRU as the reference, over a deterministic pseudo-random stream.
    let c = MemoryCache::with_shards(50, 16);
    let mut model: Vec<u32> = Vec::new(); // least recently used first
    let mut x: u64 = 12345;
    for _ in 0..20_000 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let key = ((x >> 33) % 120) as u32;
        let k = key.to_le_bytes();
        if (x >> 20).is_multiple_of(3) {
            // A peek: the order is left as it is.
            let hit = c.has(&k).unwrap();
            assert_eq!(hit, model.contains(&key));
        } else {
            c.set(&k, &k, Ttl::Never).unwrap();
            if let Some(p) = model.iter().position(|&m| m == key) {
                model.remove(p);
            } else if model.len() == 50 {
                model.remove(0);
            }
            model.push(key);
        }
    }
    assert_eq!(c.len().unwrap(), model.len() as u64);
    for key in model {
        assert!(c.get_vec(&key.to_le_bytes()).unwrap().is_some());
    }
}

#[test]
fn ttl_expiry() {
    let c = MemoryCache::new(0);
    c.set(b"short", b"v", short_ttl()).unwrap();
    c.set(b"long", b"v", Ttl::After(Duration::from_secs(60)))
        .unwrap();
    c.set(b"never", b"v", Ttl::Never).unwrap();
    assert!(c.has(b"short").unwrap());
    outlive_short_ttl();
    assert_eq!(c.len().unwrap(), 2);
    assert!(!c.has(b"short").unwrap());
    assert_eq!(c.get_vec(b"short").unwrap(), None);
    assert!(c.has(b"long").unwrap());
    let s = c.stats().unwrap();
    assert_eq!(s.expirations, 1);
    assert_eq!(s.entries, 2);
}

#[test]
fn expired_entry_is_never_returned_by_any_call() {
    let c = MemoryCache::new(0);
    for k in [&b"g"[..], b"p", b"h", b"d"] {
        c.set(k, b"v", short_ttl()).unwrap();
    }
    outlive_short_ttl();
    assert_eq!(c.get_vec(b"g").unwrap(), None);
    assert_eq!(c.pop_vec(b"p").unwrap(), None);
    assert!(!c.has(b"h").unwrap());
    c.delete(b"d").unwrap();
    assert_eq!(c.stats().unwrap().expirations, 4);
}

/// A get that finds its entry expired leaves the lean hit path for the general one: it
/// answers not found, removes the entry and counts one miss, under both policies, bounded
/// in keys or bytes or not at all, through both reads (`get_flagged`, `get_into`).
#[test]
fn a_get_finding_its_entry_expired_removes_it_and_counts_a_miss() {
    use duckcache::Policy;
    for (max_keys, max_bytes, policy) in [
        (0, 0, Policy::Lru),
        (100, 0, Policy::Lru),
        (100, 0, Policy::S3Fifo),
        (0, 4096, Policy::S3Fifo),
    ] {
        let c = MemoryCache::with_policy(max_keys, max_bytes, policy);
        c.set(b"short", b"v", short_ttl()).unwrap();
        c.set(b"short2", b"v", short_ttl()).unwrap();
        c.set(b"kept", b"value", Ttl::Never).unwrap();
        outlive_short_ttl();
        let case = format!("max_keys {max_keys}, max_bytes {max_bytes}, {policy:?}");
        assert_eq!(c.get_vec(b"short").unwrap(), None, "{case}");
        assert_eq!(
            c.get_into(b"short2", &mut [0u8; 8]).unwrap(),
            None,
            "{case}"
        );
        let mut buf = [0u8; 8];
        assert_eq!(
            c.get_into(b"kept", &mut buf).unwrap(),
            Some((5, 0)),
            "{case}"
        );
        assert_eq!(&buf[..5], b"value", "{case}");
        // Too small a buffer: the size comes back, nothing is copied.
        let mut small = [0u8; 2];
        assert_eq!(
            c.get_into(b"kept", &mut small).unwrap(),
            Some((5, 0)),
            "{case}"
        );
        assert_eq!(small, [0, 0], "{case}");
        // Counted before stats() purges anything.
        let s = c.stats().unwrap();
        assert_eq!((s.hits, s.misses, s.expirations), (2, 2, 2), "{case}");
        assert_eq!((s.entries, s.bytes), (1, 9), "{case}");
        c.check_invariants().unwrap();
    }
}

#[test]
fn ttl_zero_replaces_and_never_returns() {
    let c = MemoryCache::new(0);
    set(&c, "k", "old");
    c.set(b"k", b"new", Ttl::from_seconds(0.0).unwrap())
        .unwrap();
    assert_eq!(get(&c, "k"), None);
    assert_eq!(c.len().unwrap(), 0);
    // A zero-TTL set must not evict a live entry to make room for a dead one.
    let c = MemoryCache::new(1);
    set(&c, "live", "1");
    c.set(b"dead", b"2", Ttl::from_seconds(0.0).unwrap())
        .unwrap();
    assert!(c.has(b"live").unwrap());
}

#[test]
fn set_clears_earlier_ttl() {
    let c = MemoryCache::new(0);
    c.set(b"k", b"1", short_ttl()).unwrap();
    c.set(b"k", b"2", Ttl::Never).unwrap();
    outlive_short_ttl();
    assert_eq!(c.get_vec(b"k").unwrap(), Some(b"2".to_vec()));
}

#[test]
fn pop_is_exactly_once_across_threads() {
    let c = Arc::new(MemoryCache::new(0));
    for round in 0..200u32 {
        let key = round.to_le_bytes();
        c.set(&key, b"v", Ttl::Never).unwrap();
        let winners = Arc::new(AtomicUsize::new(0));
        let barrier = Arc::new(Barrier::new(4));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (c, winners, barrier) = (c.clone(), winners.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    if c.pop_vec(&key).unwrap().is_some() {
                        winners.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(winners.load(Ordering::SeqCst), 1);
    }
    assert_eq!(c.len().unwrap(), 0);
}

#[test]
fn bounded_under_concurrent_sets() {
    let c = Arc::new(MemoryCache::new(100));
    let threads: Vec<_> = (0..4u32)
        .map(|t| {
            let c = c.clone();
            std::thread::spawn(move || {
                for i in 0..5000u32 {
                    let k = (t * 100_000 + i).to_le_bytes();
                    c.set(&k, &k, Ttl::Never).unwrap();
                    let _ = c.get_vec(&k).unwrap();
                    if i % 7 == 0 {
                        c.delete(&k).unwrap();
                    }
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    let s = c.stats().unwrap();
    assert_eq!(c.len().unwrap(), 100);
    assert_eq!(s.entries, 100);
    assert_eq!(s.sets, 20_000);
    // Every insert either stayed, was deleted or was evicted.
    assert_eq!(s.sets, s.entries + s.deletes + s.evictions);
}

#[test]
fn stats_count_every_kind() {
    let c = MemoryCache::new(2);
    set(&c, "a", "xy"); // 3 bytes
    set(&c, "b", "z");
    set(&c, "c", "w"); // evicts a
    let _ = get(&c, "b"); // hit
    let _ = get(&c, "a"); // miss
    let _ = c.pop_vec(b"c").unwrap(); // hit + delete
    c.delete(b"zz").unwrap(); // absent: no delete counted
    let s = c.stats().unwrap();
    assert_eq!(
        (s.hits, s.misses, s.sets, s.deletes, s.evictions),
        (2, 1, 3, 1, 1)
    );
    assert_eq!((s.entries, s.bytes), (1, 2));
    c.clear().unwrap();
    let s = c.stats().unwrap();
    assert_eq!((s.entries, s.bytes, s.deletes), (0, 0, 2));
}

#[test]
fn closed_cache_refuses_everything() {
    let c = MemoryCache::new(0);
    set(&c, "a", "1");
    c.close().unwrap();
    c.close().unwrap();
    common::assert_refuses_everything_closed(&c);
}

#[test]
fn one_mebibyte_key() {
    let c = MemoryCache::new(2);
    let key = vec![0xabu8; 1 << 20];
    c.set(&key, b"v", Ttl::Never).unwrap();
    assert_eq!(c.get_vec(&key).unwrap(), Some(b"v".to_vec()));
    assert!(!c.has(&key[1..]).unwrap());
    assert_eq!(c.stats().unwrap().bytes, (1 << 20) + 1);
    assert_eq!(c.pop_vec(&key).unwrap(), Some(b"v".to_vec()));
}

#[test]
fn flags_word() {
    common::check_flags(&|| Box::new(MemoryCache::new(0)), false);
    common::check_flags(&|| Box::new(MemoryCache::new(3)), false);
}

/// S3-FIFO's and the unbounded cache's gets share the shard's lock: on one shard, four
/// threads reading hot keys beside a thread rewriting them and one adding keys (which
/// evicts) must each read a whole value of the key asked for, and every get must be
/// counted once, as a hit or a miss.
#[test]
fn gets_sharing_a_shard_read_whole_values_and_count_every_lookup() {
    use duckcache::Policy;
    const READERS: usize = 4;
    const GETS: usize = 20_000;
    for (max_keys, policy) in [(64, Policy::S3Fifo), (0, Policy::Lru)] {
        let c = Arc::new(MemoryCache::with_policy_and_shards(max_keys, 0, policy, 1));
        let value_of = |key: u8, version: u32| -> Vec<u8> {
            let mut v = vec![key; 40];
            v.extend_from_slice(&version.to_le_bytes());
            v
        };
        for key in 0..8u8 {
            c.set(&[key], &value_of(key, 0), Ttl::Never).unwrap();
        }
        let start = Arc::new(Barrier::new(READERS + 2));
        let done = Arc::new(AtomicUsize::new(0));
        let mut threads = Vec::new();
        for reader in 0..READERS {
            let (c, start, done) = (c.clone(), start.clone(), done.clone());
            threads.push(std::thread::spawn(move || {
                start.wait();
                let mut buf = [0u8; 64];
                for i in 0..GETS {
                    // Mostly the hot keys, now and then one that was never set.
                    let key = if i % 16 == 0 {
                        200
                    } else {
                        ((i + reader) % 8) as u8
                    };
                    if let Some((len, _)) = c.get_into(&[key], &mut buf).unwrap() {
                        assert_eq!(len, 44);
                        assert!(buf[..40].iter().all(|&b| b == key), "a torn value");
                    }
                }
                done.fetch_add(1, Ordering::SeqCst);
            }));
        }
        let (writer_cache, writer_start, writer_done) = (c.clone(), start.clone(), done.clone());
        threads.push(std::thread::spawn(move || {
            writer_start.wait();
            let mut version = 1;
            while writer_done.load(Ordering::SeqCst) < READERS {
                for key in 0..8u8 {
                    writer_cache
                        .set(&[key], &value_of(key, version), Ttl::Never)
                        .unwrap();
                }
                version += 1;
            }
        }));
        let (adder_cache, adder_start, adder_done) = (c.clone(), start.clone(), done.clone());
        threads.push(std::thread::spawn(move || {
            adder_start.wait();
            let mut n = 0u32;
            while adder_done.load(Ordering::SeqCst) < READERS {
                let key = [100, (n % 256) as u8, (n / 256 % 256) as u8];
                adder_cache.set(&key, b"filler", Ttl::Never).unwrap();
                n += 1;
            }
        }));
        for t in threads {
            t.join().unwrap();
        }
        let s = c.stats().unwrap();
        assert_eq!(
            s.hits + s.misses,
            (READERS * GETS) as u64,
            "{policy:?}, max_keys {max_keys}: every get counted once"
        );
        assert!(s.misses >= (READERS * GETS / 16) as u64);
        c.check_invariants().unwrap();
    }
}

#[test]
fn a_batch_the_bounds_cannot_hold_is_refused_whole() {
    common::check_a_batch_that_cannot_fit_is_refused(
        &MemoryCache::with_limits(0, 10_000),
        10,
        1000,
    );
    common::check_a_batch_that_cannot_fit_is_refused(&MemoryCache::new(3), 3, 100);
}
