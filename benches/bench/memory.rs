//! Sections `memory overhead` and `memory speed`: bytes per entry beyond key and value
//! at a million entries; get, set and a 90/10 mix through the C ABI against
//! `lru::LruCache` behind a mutex, `moka` and `quick_cache`, 1 and 2 threads, uniform
//! and Zipf(0.99) keys; the hit ratio on a Zipf stream with room for a tenth of the keys.

use crate::harness::*;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// An in-memory cache under test: get copies the value into the caller's buffer (as
/// `cache_get_into` does: no allocation), set stores a copy. Peers that hand out shared
/// values (moka, quick_cache) hold `Arc<[u8]>` so their get is a clone of the Arc plus
/// the copy, not an allocation.
trait Contender: Send + Sync {
    fn name(&self) -> &'static str;
    /// The value's length (copied into `buf`), or 0 on a miss.
    fn get(&self, k: &[u8], buf: &mut [u8]) -> usize;
    fn set(&self, k: &[u8], v: &[u8]);
}
/// duckcache through the C ABI, bounded, so the LRU order is kept as lru's is.
impl Contender for CHandle {
    fn name(&self) -> &'static str {
        "dc lru"
    }
    #[inline]
    fn get(&self, k: &[u8], buf: &mut [u8]) -> usize {
        self.get_into(k, buf)
    }
    fn set(&self, k: &[u8], v: &[u8]) {
        CHandle::set(self, k, v)
    }
}

/// duckcache's memory cache with the S3-FIFO policy (memory:?policy=s3fifo).
struct S3Fifo(CHandle);

impl S3Fifo {
    fn new(capacity: u64) -> Self {
        S3Fifo(open_uri(&format!(
            "memory:?max_keys={capacity}&policy=s3fifo"
        )))
    }
}

impl Contender for S3Fifo {
    fn name(&self) -> &'static str {
        "dc s3fifo"
    }
    #[inline]
    fn get(&self, k: &[u8], buf: &mut [u8]) -> usize {
        self.0.get_into(k, buf)
    }
    fn set(&self, k: &[u8], v: &[u8]) {
        self.0.set(k, v)
    }
}

struct MutexLru(parking_lot::Mutex<lru::LruCache<Vec<u8>, Vec<u8>>>);

impl Contender for MutexLru {
    fn name(&self) -> &'static str {
        "Mutex<lru>"
    }
    fn get(&self, k: &[u8], buf: &mut [u8]) -> usize {
        self.0.lock().get(k).map_or(0, |v| copy_out(v, buf))
    }
    fn set(&self, k: &[u8], v: &[u8]) {
        self.0.lock().put(k.to_vec(), v.to_vec());
    }
}

struct Moka(moka::sync::Cache<Vec<u8>, Arc<[u8]>>);

impl Contender for Moka {
    fn name(&self) -> &'static str {
        "moka"
    }
    fn get(&self, k: &[u8], buf: &mut [u8]) -> usize {
        self.0.get(k).map_or(0, |v| copy_out(&v, buf))
    }
    fn set(&self, k: &[u8], v: &[u8]) {
        self.0.insert(k.to_vec(), v.into());
    }
}

struct Quick(quick_cache::sync::Cache<Vec<u8>, Arc<[u8]>>);

impl Contender for Quick {
    fn name(&self) -> &'static str {
        "quick_cache"
    }
    fn get(&self, k: &[u8], buf: &mut [u8]) -> usize {
        self.0.get(k).map_or(0, |v| copy_out(&v, buf))
    }
    fn set(&self, k: &[u8], v: &[u8]) {
        self.0.insert(k.to_vec(), v.into());
    }
}

/// Every contender, holding at most `capacity` entries: duckcache's two policies first,
/// then Mutex<lru> (the ratios' base), moka, quick_cache.
fn memory_contenders(capacity: u64) -> Vec<Arc<dyn Contender>> {
    let cap = capacity as usize;
    vec![
        Arc::new(CHandle::memory(capacity)),
        Arc::new(S3Fifo::new(capacity)),
        Arc::new(MutexLru(parking_lot::Mutex::new(lru::LruCache::new(
            std::num::NonZeroUsize::new(cap).unwrap(),
        )))),
        Arc::new(Moka(moka::sync::Cache::new(capacity))),
        Arc::new(Quick(quick_cache::sync::Cache::new(cap))),
    ]
}
pub(crate) fn bench_memory() {
    const KEYS: u64 = 100_000;
    const OPS: usize = 500_000;
    println!(
        "== memory backend (value {VALUE} B, key 16 B, {KEYS} keys, all present; get = cache_get_into, \
         peers' get = get plus copy into the caller's buffer): ns/op, median of {ROUNDS} rounds; \
         ratios: duckcache lru and s3fifo / Mutex<lru>, and / quick_cache (targets for get: <= 1.0x)"
    );
    const VALUE: usize = 100;
    let value = [7u8; VALUE];
    let orders = [
        ("uniform", Arc::new(access_order(KEYS, OPS, 42))),
        ("zipf 0.99", Arc::new(zipf_order(KEYS, 0.99, OPS, 43))),
    ];
    let contenders = memory_contenders(KEYS);
    for c in &contenders {
        for i in 0..KEYS {
            c.set(&key(i), &value);
        }
    }
    print!("  {:<34}", "operation");
    for c in &contenders {
        print!(" {:>12}", c.name());
    }
    println!("   lru/lru s3/lru lru/quick s3/quick");
    for op_name in ["get", "set", "mixed 90/10"] {
        for (dist, order) in &orders {
            for threads in [1usize, 2] {
                let figures: Vec<f64> = contenders
                    .iter()
                    .map(|c| {
                        let c = c.clone();
                        let op: Arc<dyn Fn(u64) -> usize + Send + Sync> = match op_name {
                            "get" => Arc::new(move |i| c.get(&key(i), &mut [0u8; VALUE])),
                            "set" => Arc::new(move |i| {
                                c.set(&key(i), &value);
                                1
                            }),
                            // Every tenth operation of each thread is a set.
                            _ => Arc::new(move |i| {
                                if every_tenth() {
                                    c.set(&key(i), &value);
                                    1
                                } else {
                                    c.get(&key(i), &mut [0u8; VALUE])
                                }
                            }),
                        };
                        run_order(threads, order, op)
                    })
                    .collect();
                let label = format!(
                    "{op_name} {dist}, {threads} thread{}",
                    if threads > 1 { "s" } else { "" }
                );
                print!("  {label:<34}");
                for f in &figures {
                    print!(" {f:>12.1}");
                }
                println!(
                    "   {:>6.2}x {:>5.2}x {:>8.2}x {:>7.2}x",
                    figures[0] / figures[2],
                    figures[1] / figures[2],
                    figures[0] / figures[4],
                    figures[1] / figures[4]
                );
            }
        }
    }
    println!("  (2 threads: aggregate ns per operation over both threads; lower is better)");
    bench_hit_ratio();
}

/// Hit ratio on a Zipf(0.99) stream with room for a tenth of the keys, cache-aside:
/// a miss is followed by a set. LRU (duckcache, lru) against TinyLFU (moka) and S3-FIFO
/// (quick_cache) admission.
pub(crate) fn bench_hit_ratio() {
    const KEYS: u64 = 100_000;
    const CAPACITY: u64 = 10_000;
    let order = zipf_order(KEYS, 0.99, 1_000_000, 44);
    let value = [1u8; 64];
    print!("  hit ratio, zipf 0.99, {KEYS} keys, room for {CAPACITY}:");
    for c in memory_contenders(CAPACITY) {
        let mut hits = 0u64;
        for &i in &order {
            if c.get(&key(i), &mut [0u8; 64]) > 0 {
                hits += 1;
            } else {
                c.set(&key(i), &value);
            }
        }
        print!(
            "  {} {:.1}%",
            c.name(),
            100.0 * hits as f64 / order.len() as f64
        );
    }
    println!();
}
pub(crate) fn bench_memory_overhead() {
    println!("== memory backend: bytes per entry beyond key and value");
    const N: u64 = 1_000_000;
    const VALUE: usize = 16;
    let payload = N as f64 * (16 + VALUE) as f64;
    let value = [1u8; VALUE];
    COUNTING.store(true, Ordering::Relaxed);
    let (heap0, rss0) = (LIVE_BYTES.load(Ordering::Relaxed), resident_bytes());
    let ours = CHandle::memory(N);
    for i in 0..N {
        ours.set(&key(i), &value);
    }
    let heap = (LIVE_BYTES.load(Ordering::Relaxed) - heap0) as f64;
    let rss = (resident_bytes() - rss0) as f64;
    drop(ours);

    let heap_s3 = LIVE_BYTES.load(Ordering::Relaxed);
    let s3 = S3Fifo::new(N);
    for i in 0..N {
        s3.set(&key(i), &value);
    }
    let s3_heap = (LIVE_BYTES.load(Ordering::Relaxed) - heap_s3) as f64;
    drop(s3);

    let heap1 = LIVE_BYTES.load(Ordering::Relaxed);
    let mut peer = lru::LruCache::new(std::num::NonZeroUsize::new(N as usize).unwrap());
    for i in 0..N {
        peer.put(key(i).to_vec(), value.to_vec());
    }
    let peer_heap = (LIVE_BYTES.load(Ordering::Relaxed) - heap1) as f64;
    drop(peer);
    COUNTING.store(false, Ordering::Relaxed);
    println!(
        "  1M entries, 16 B keys, {VALUE} B values (target <= 60 B):\n    \
         duckcache lru {:.1} B/entry heap ({:.1} B/entry resident, malloc headers included)   \
         duckcache s3fifo {:.1} B/entry heap   lru::LruCache {:.1} B/entry heap",
        (heap - payload) / N as f64,
        (rss - payload) / N as f64,
        (s3_heap - payload) / N as f64,
        (peer_heap - payload) / N as f64
    );
}
