//! `make bench`: duckcache against its peers, measured in the same run, printed as
//! figures and ratios. Not a pass/fail test: the machines are shared and noisy, so each
//! figure is the median of several rounds and the verdict is left to the reader.
//!
//! Sections:
//! - file: get and set of 1 KiB and 100 KiB values against a bare rusqlite key-value
//!   table with the same pragmas (the floor for this design); open time of a store.
//! - sharded: get with 32 shards against 1 shard, and against the file backend.
//! - read cache: Zipf(0.99) gets of 1 KiB and 100 KiB values over 10,000 keys with
//!   another process setting one key every 100 operations, file and sharded, with and
//!   without `read_cache`.
//! - folder: set and get against a SQLite store per key opened for each call (how the
//!   original module's KeyAsFolderCache works once more keys are in use than it keeps open).
//! - async: submission-to-callback latency of a memory get (median, p99); async
//!   throughput of a queued batch against synchronous gets on the same handle.
//! - memory: get, set and a 90/10 get/set mix through the C ABI against `lru::LruCache` behind a
//!   `parking_lot::Mutex`, `moka::sync::Cache` and `quick_cache::sync::Cache` (each
//!   copying the value out), 1 and 2 threads, uniform and Zipf(0.99) keys; hit ratio on
//!   a Zipf stream with room for a tenth of the keys; bytes per entry beyond key and
//!   value at a million entries.

// The benchmark drives the C ABI as a C program would: its unsafe blocks pass live locals
// and open handles to the exported functions, the same few patterns dozens of times, which
// the library's own rule (a SAFETY comment on every block) would only repeat.
#![allow(clippy::undocumented_unsafe_blocks)]

use duckcache::ffi;
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Instant;

/// Counts live heap bytes while COUNTING is on, so memory overhead is measured exactly
/// (malloc headers aside; the resident-set figure includes those). Off for the speed
/// sections: a shared counter on every allocation would itself be contended.
struct CountingAlloc;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
static COUNTING: AtomicBool = AtomicBool::new(false);

fn count(delta: isize) {
    if COUNTING.load(Ordering::Relaxed) {
        LIVE_BYTES.fetch_add(delta, Ordering::Relaxed);
    }
}

// SAFETY: every call is handed to the system allocator unchanged; the counting beside it
// allocates nothing.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        // SAFETY: the caller's contract for `alloc` is passed on as it is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        // SAFETY: `ptr` came from this allocator, that is from System, with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        // SAFETY: as for dealloc; the caller's contract for `realloc` is passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const ROUNDS: usize = 7;

/// Median of `ROUNDS` runs of `f`, each returning (operations, seconds): ns per operation.
fn median_ns_per_op(mut f: impl FnMut() -> (u64, f64)) -> f64 {
    let mut samples: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let (ops, secs) = f();
            secs * 1e9 / ops as f64
        })
        .collect();
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    samples[ROUNDS / 2]
}

fn key(i: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&i.to_le_bytes());
    k[8..].copy_from_slice(&(i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_le_bytes());
    k
}

/// A fixed pseudo-random order of key indices (splitmix64), the same for every contender.
fn access_order(n: u64, len: usize, seed: u64) -> Vec<u64> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) % n
        })
        .collect()
}

/// A handle from the C ABI, freed on drop.
struct CHandle(*mut ffi::cache_t);
// SAFETY: the C ABI allows every call on a handle from any thread (its contract).
unsafe impl Send for CHandle {}
// SAFETY: as for Send: calls may run on several threads at once.
unsafe impl Sync for CHandle {}

impl CHandle {
    fn memory(max_keys: u64) -> CHandle {
        let mut c = std::ptr::null_mut();
        assert_eq!(
            unsafe { ffi::cache_open_memory(max_keys, &mut c) },
            ffi::cache_status::CACHE_OK
        );
        CHandle(c)
    }

    /// Opens a persistent kind on `dir` with `open(dir, out)`.
    fn open_dir(
        dir: &std::path::Path,
        open: impl FnOnce(*const std::ffi::c_char, *mut *mut ffi::cache_t) -> ffi::cache_status,
    ) -> CHandle {
        let dir = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
        let mut c = std::ptr::null_mut();
        assert_eq!(open(dir.as_ptr(), &mut c), ffi::cache_status::CACHE_OK);
        CHandle(c)
    }

    fn file(dir: &std::path::Path) -> CHandle {
        Self::open_dir(dir, |d, out| unsafe { ffi::cache_open_file(d, 0, out) })
    }

    fn sharded(dir: &std::path::Path, shard_size_limit: u64) -> CHandle {
        Self::open_dir(dir, |d, out| unsafe {
            ffi::cache_open_sharded(d, shard_size_limit, 0, out)
        })
    }

    fn folder(dir: &std::path::Path) -> CHandle {
        Self::open_dir(dir, |d, out| unsafe { ffi::cache_open_folder(d, 0, out) })
    }

    /// `inner` wrapped by cache_open_encrypted (which takes it over).
    fn encrypted(inner: CHandle) -> CHandle {
        let inner = std::mem::ManuallyDrop::new(inner);
        let key = [42u8; 32];
        let mut c = std::ptr::null_mut();
        let s = unsafe { ffi::cache_open_encrypted(inner.0, key.as_ptr(), key.len(), &mut c) };
        assert_eq!(s, ffi::cache_status::CACHE_OK);
        CHandle(c)
    }

    fn set(&self, k: &[u8], v: &[u8]) {
        let s = unsafe { ffi::cache_set(self.0, k.as_ptr(), k.len(), v.as_ptr(), v.len(), -1.0) };
        assert_eq!(s, ffi::cache_status::CACHE_OK);
    }

    /// `cache_get` as a C caller does it (copy out, then free the buffer), for
    /// benchmarks where every get must hit: the value's length.
    #[inline]
    fn get(&self, k: &[u8]) -> usize {
        let mut buf = ffi::cache_buf {
            data: std::ptr::null_mut(),
            len: 0,
        };
        let s = unsafe { ffi::cache_get(self.0, k.as_ptr(), k.len(), &mut buf) };
        assert_eq!(s, ffi::cache_status::CACHE_OK, "bench get must hit");
        let len = buf.len;
        unsafe { ffi::cache_buf_free(&mut buf) };
        len
    }
}

impl Drop for CHandle {
    fn drop(&mut self) {
        unsafe { ffi::cache_free(self.0) };
    }
}

fn print_row(what: &str, ours: f64, peer: f64, peer_name: &str) {
    println!(
        "  {what:<44} duckcache {ours:>7.1} ns/op   {peer_name} {peer:>7.1} ns/op   ratio {:.2}x",
        ours / peer
    );
}

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

/// Copies `v` into the front of `buf` and returns its length: the peers' "plus copy".
#[inline]
fn copy_out(v: &[u8], buf: &mut [u8]) -> usize {
    buf[..v.len()].copy_from_slice(v);
    v.len()
}

impl CHandle {
    /// `cache_get_into` into `buf`: the value's length, or 0 on a miss.
    #[inline]
    fn get_into(&self, k: &[u8], buf: &mut [u8]) -> usize {
        let mut len = 0usize;
        let s = unsafe {
            ffi::cache_get_into(
                self.0,
                k.as_ptr(),
                k.len(),
                buf.as_mut_ptr(),
                buf.len(),
                &mut len,
            )
        };
        match s {
            ffi::cache_status::CACHE_OK => len,
            ffi::cache_status::CACHE_NOT_FOUND => 0,
            other => panic!("cache_get_into: {other:?}"),
        }
    }
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

/// A Zipf(s) stream of `len` ranks in 0..n (rank 0 the most popular), from a splitmix
/// uniform stream and the inverse of the CDF.
fn zipf_order(n: u64, s: f64, len: usize, seed: u64) -> Vec<u64> {
    let mut cdf = Vec::with_capacity(n as usize);
    let mut total = 0.0;
    for rank in 1..=n {
        total += 1.0 / (rank as f64).powf(s);
        cdf.push(total);
    }
    access_order(u64::MAX, len, seed)
        .into_iter()
        .map(|u| {
            let x = (u as f64 / u64::MAX as f64) * total;
            cdf.partition_point(|&c| c < x).min(n as usize - 1) as u64
        })
        .collect()
}

/// True on every tenth call on this thread (the mixed workload's sets).
fn every_tenth() -> bool {
    thread_local! {
        static CALLS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }
    CALLS.with(|n| {
        n.set(n.get() + 1);
        n.get() % 10 == 0
    })
}

/// ns per operation of `op` over `order`, on 1 thread or (aggregate) 2 threads.
fn run_order(
    threads: usize,
    order: &Arc<Vec<u64>>,
    op: Arc<dyn Fn(u64) -> usize + Send + Sync>,
) -> f64 {
    if threads == 1 {
        return median_ns_per_op(|| {
            let t = Instant::now();
            let sum: usize = order.iter().map(|&i| op(i)).sum();
            black_box(sum);
            (order.len() as u64, t.elapsed().as_secs_f64())
        });
    }
    let op = op.clone();
    two_threads(order, move |i| op(i))
}

fn bench_memory() {
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
fn bench_hit_ratio() {
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

/// Aggregate ns per operation with two threads each running the whole order.
fn two_threads(order: &[u64], op: impl Fn(u64) -> usize + Send + Sync + Clone + 'static) -> f64 {
    let order: Arc<Vec<u64>> = Arc::new(order.to_vec());
    median_ns_per_op(|| {
        let barrier = Arc::new(Barrier::new(3));
        let handles: Vec<_> = (0..2)
            .map(|t| {
                let (order, barrier, op) = (order.clone(), barrier.clone(), op.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let mut sum = 0;
                    // The second thread walks the order backwards so the two do not march in step.
                    if t == 0 {
                        order.iter().for_each(|&i| sum += op(i));
                    } else {
                        order.iter().rev().for_each(|&i| sum += op(i));
                    }
                    black_box(sum);
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        handles.into_iter().for_each(|h| h.join().unwrap());
        ((order.len() * 2) as u64, start.elapsed().as_secs_f64())
    })
}

fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// The peak resident set since the last `reset_peak_resident` (VmHWM).
fn peak_resident_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .unwrap_or(0)
        * 1024
}

fn reset_peak_resident() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// A key walk over 1,000,000 keys holds a page at a time: the peak resident set during
/// the walk against the resident set before it.
fn bench_key_walk_memory() {
    println!("== cache_keys over 1,000,000 keys: peak resident set during the walk");
    const N: u64 = 1_000_000;
    unsafe extern "C" fn count(
        user: *mut std::ffi::c_void,
        _: *const u8,
        _: usize,
    ) -> std::ffi::c_int {
        unsafe { *(user as *mut u64) += 1 };
        0
    }
    let base = scratch_dir("walk");
    for (label, c) in [
        ("memory", CHandle::memory(0)),
        ("file", CHandle::file(&base.join("file"))),
    ] {
        let value = [1u8; 8];
        let keys: Vec<[u8; 16]> = (0..N).map(key).collect();
        for batch in keys.chunks(10_000) {
            let entries = entries_of(batch, &value);
            assert_eq!(
                unsafe { ffi::cache_set_many(c.0, entries.as_ptr(), entries.len()) },
                ffi::cache_status::CACHE_OK
            );
        }
        drop(keys);
        let before = resident_bytes();
        reset_peak_resident();
        let mut seen = 0u64;
        let t = Instant::now();
        let s = unsafe {
            ffi::cache_keys(
                c.0,
                std::ptr::null(),
                0,
                Some(count),
                &mut seen as *mut u64 as *mut std::ffi::c_void,
            )
        };
        let took = t.elapsed();
        assert_eq!(s, ffi::cache_status::CACHE_OK);
        assert_eq!(seen, N);
        let peak = peak_resident_bytes();
        println!(
            "  {label:<8} {seen} keys in {:>6.2} s   resident before {:>6.1} MiB, peak during the walk {:>6.1} MiB (+{:.1} MiB)",
            took.as_secs_f64(),
            before as f64 / 1048576.0,
            peak as f64 / 1048576.0,
            peak.saturating_sub(before) as f64 / 1048576.0
        );
    }
    let _ = std::fs::remove_dir_all(&base);
}

fn bench_memory_overhead() {
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

/// The floor: a bare key-value table in rusqlite with the pragmas the file cache uses.
struct Floor(rusqlite::Connection);

impl Floor {
    fn open(path: &std::path::Path) -> Floor {
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .unwrap();
        conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
            .unwrap();
        conn.execute_batch(
            "PRAGMA synchronous = NORMAL; PRAGMA mmap_size = 67108864;
             CREATE TABLE IF NOT EXISTS kv (key BLOB PRIMARY KEY, value BLOB NOT NULL);",
        )
        .unwrap();
        Floor(conn)
    }

    fn set(&self, k: &[u8], v: &[u8]) {
        self.0
            .prepare_cached("INSERT OR REPLACE INTO kv VALUES (?1, ?2)")
            .unwrap()
            .execute((k, v))
            .unwrap();
    }

    fn get(&self, k: &[u8]) -> usize {
        let v: Vec<u8> = self
            .0
            .prepare_cached("SELECT value FROM kv WHERE key = ?1")
            .unwrap()
            .query_row([k], |r| r.get(0))
            .unwrap();
        v.len()
    }
}

fn scratch_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("duckcache-bench-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Encrypted handles against the same kind unencrypted: set and get of 1 KiB values.
fn bench_encrypted() {
    println!(
        "== encrypted (XSalsa20-Poly1305) against the same kind unencrypted, 1 KiB values; target file <= 1.3x"
    );
    let value = vec![5u8; 1024];
    let keys = 2000u64;
    let order = access_order(keys, keys as usize * 4, 11);
    let base = scratch_dir("encrypted");
    let mut round = 0;
    let mut open = |kind: &str, sealed: bool| {
        round += 1;
        let plain = match kind {
            "memory" => CHandle::memory(0),
            _ => CHandle::file(&base.join(format!("{kind}-{sealed}-{round}"))),
        };
        if sealed {
            CHandle::encrypted(plain)
        } else {
            plain
        }
    };
    for kind in ["memory", "file"] {
        let mut figures = Vec::new();
        for sealed in [true, false] {
            let mut last = None;
            let set = median_ns_per_op(|| {
                let c = open(kind, sealed);
                let t = Instant::now();
                for i in 0..keys {
                    c.set(&key(i), &value);
                }
                let elapsed = t.elapsed().as_secs_f64();
                last = Some(c);
                (keys, elapsed)
            });
            let c = last.expect("at least one round");
            let get = median_ns_per_op(|| {
                let t = Instant::now();
                let sum: usize = order.iter().map(|&i| c.get(&key(i))).sum();
                black_box(sum);
                (order.len() as u64, t.elapsed().as_secs_f64())
            });
            figures.push((set, get));
        }
        let ((sealed_set, sealed_get), (plain_set, plain_get)) = (figures[0], figures[1]);
        print_row(
            &format!("{kind}: set 1 KiB"),
            sealed_set,
            plain_set,
            "unencrypted",
        );
        print_row(
            &format!("{kind}: get 1 KiB"),
            sealed_get,
            plain_get,
            "unencrypted",
        );
    }
}

fn bench_file() {
    println!(
        "== file backend against a bare rusqlite key-value table (same pragmas); target <= 1.5x"
    );
    for (label, size, keys) in [("1 KiB", 1024usize, 2000u64), ("100 KiB", 100 * 1024, 200)] {
        let value = vec![5u8; size];
        let base = scratch_dir("file");
        let order = access_order(keys, keys as usize * 4, 7);
        let (mut ours_round, mut floor_round) = (0, 0);
        let ours_set = median_ns_per_op(|| {
            ours_round += 1;
            let c = CHandle::file(&base.join(format!("ours-{ours_round}")));
            let t = Instant::now();
            for i in 0..keys {
                c.set(&key(i), &value);
            }
            (keys, t.elapsed().as_secs_f64())
        });
        let floor_set = median_ns_per_op(|| {
            floor_round += 1;
            let f = Floor::open(&base.join(format!("floor-{floor_round}.db")));
            let t = Instant::now();
            for i in 0..keys {
                f.set(&key(i), &value);
            }
            (keys, t.elapsed().as_secs_f64())
        });
        // Read back the stores the last set round filled (every get is a hit).
        let c = CHandle::file(&base.join(format!("ours-{ours_round}")));
        let f = Floor::open(&base.join(format!("floor-{floor_round}.db")));
        let ours_get = median_ns_per_op(|| {
            let t = Instant::now();
            let sum: usize = order.iter().map(|&i| c.get(&key(i))).sum();
            black_box(sum);
            (order.len() as u64, t.elapsed().as_secs_f64())
        });
        let floor_get = median_ns_per_op(|| {
            let t = Instant::now();
            let sum: usize = order.iter().map(|&i| f.get(&key(i))).sum();
            black_box(sum);
            (order.len() as u64, t.elapsed().as_secs_f64())
        });
        print_row(
            &format!("set {label} value ({keys} keys)"),
            ours_set,
            floor_set,
            "rusqlite floor",
        );
        print_row(
            &format!("get {label} value"),
            ours_get,
            floor_get,
            "rusqlite floor",
        );
        drop(c);
        let _ = std::fs::remove_dir_all(&base);
    }
    // Opening a store that exists: what a short-lived process pays on every start.
    let base = scratch_dir("open");
    let store = base.join("store");
    let c = CHandle::file(&store);
    for i in 0..1000 {
        c.set(&key(i), &[1u8; 100]);
    }
    drop(c);
    let open = median_ns_per_op(|| {
        let t = Instant::now();
        for _ in 0..50 {
            drop(black_box(CHandle::file(&store)));
        }
        (50, t.elapsed().as_secs_f64())
    });
    let floor_path = base.join("floor.db");
    drop(Floor::open(&floor_path));
    let floor_open = median_ns_per_op(|| {
        let t = Instant::now();
        for _ in 0..50 {
            drop(black_box(Floor::open(&floor_path)));
        }
        (50, t.elapsed().as_secs_f64())
    });
    println!(
        "  open + close of an existing store          duckcache {:>7.1} us        rusqlite floor {:>7.1} us   (target: well under 1 ms)",
        open / 1e3,
        floor_open / 1e3
    );
    let _ = std::fs::remove_dir_all(&base);
}

/// A compute function for the get_or_compute rows: never runs on a hit.
unsafe extern "C" fn compute_unreachable(
    _: *mut std::ffi::c_void,
    _: *const u8,
    _: usize,
    _: *mut ffi::cache_sink,
) -> ffi::cache_status {
    ffi::cache_status::CACHE_ERR_INTERNAL
}

fn bench_v2() {
    println!("== version 2 calls on the file kind, through the C ABI (1 KiB values)");
    const N: u64 = 1000;
    let value = vec![9u8; 1024];
    let base = scratch_dir("v2");
    let keys: Vec<[u8; 16]> = (0..N).map(key).collect();
    let all_keys: Vec<u64> = (0..N).collect(); // the same keys, as get_ns takes them
    let (mut round_many, mut round_single) = (0, 0);
    let set_many = median_ns_per_op(|| {
        round_many += 1;
        let c = CHandle::file(&base.join(format!("many-{round_many}")));
        let entries = entries_of(&keys, &value);
        let t = Instant::now();
        let s = unsafe { ffi::cache_set_many(c.0, entries.as_ptr(), entries.len()) };
        assert_eq!(s, ffi::cache_status::CACHE_OK);
        (N, t.elapsed().as_secs_f64())
    });
    let set_single = median_ns_per_op(|| {
        round_single += 1;
        let c = CHandle::file(&base.join(format!("single-{round_single}")));
        let t = Instant::now();
        for k in &keys {
            c.set(k, &value);
        }
        (N, t.elapsed().as_secs_f64())
    });
    // The floor of a bulk write: the same rows into a bare rusqlite table, one transaction.
    let mut round_floor = 0;
    let floor_many = median_ns_per_op(|| {
        round_floor += 1;
        let mut f = Floor::open(&base.join(format!("floor-{round_floor}.db")));
        let t = Instant::now();
        let tx = f.0.transaction().unwrap();
        {
            let mut insert = tx
                .prepare_cached("INSERT OR REPLACE INTO kv VALUES (?1, ?2)")
                .unwrap();
            for k in &keys {
                insert.execute((&k[..], &value[..])).unwrap();
            }
        }
        tx.commit().unwrap();
        (N, t.elapsed().as_secs_f64())
    });
    println!(
        "  set_many of {N} x 1 KiB                    {:>9.1} ns/entry   {N} cache_set {:>9.1} ns/entry   {:.1}x faster (target >= 20x)",
        set_many,
        set_single,
        set_single / set_many
    );
    print_row(
        "set_many against a bare one-transaction insert",
        set_many,
        floor_many,
        "rusqlite floor",
    );
    let c = CHandle::file(&base.join(format!("many-{round_many}")));
    let slices: Vec<ffi::cache_slice> = keys
        .iter()
        .map(|k| ffi::cache_slice {
            data: k.as_ptr(),
            len: k.len(),
        })
        .collect();
    let get_many = median_ns_per_op(|| {
        let mut values: Vec<ffi::cache_buf> = (0..N)
            .map(|_| ffi::cache_buf {
                data: std::ptr::null_mut(),
                len: 0,
            })
            .collect();
        let mut statuses = vec![ffi::cache_status::CACHE_OK; N as usize];
        let t = Instant::now();
        let s = unsafe {
            ffi::cache_get_many(
                c.0,
                slices.as_ptr(),
                slices.len(),
                values.as_mut_ptr(),
                statuses.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        };
        assert_eq!(s, ffi::cache_status::CACHE_OK);
        for v in &mut values {
            unsafe { ffi::cache_buf_free(v) };
        }
        (N, t.elapsed().as_secs_f64())
    });
    let gets = get_ns(&c, &all_keys);
    println!(
        "  get_many of {N}                           {:>9.1} ns/entry   {N} cache_get {:>9.1} ns/entry   {:.1}x faster (target >= 3x)",
        get_many,
        gets,
        gets / get_many
    );
    for (label, handle) in [
        ("file", &c),
        ("memory", &{
            let m = CHandle::memory(0);
            for k in &keys {
                m.set(k, &value);
            }
            m
        }),
    ] {
        let goc = median_ns_per_op(|| {
            let t = Instant::now();
            for k in &keys {
                let mut buf = ffi::cache_buf {
                    data: std::ptr::null_mut(),
                    len: 0,
                };
                let s = unsafe {
                    ffi::cache_get_or_compute(
                        handle.0,
                        k.as_ptr(),
                        k.len(),
                        Some(compute_unreachable),
                        std::ptr::null_mut(),
                        &mut buf,
                        std::ptr::null_mut(),
                    )
                };
                assert_eq!(s, ffi::cache_status::CACHE_OK);
                unsafe { ffi::cache_buf_free(&mut buf) };
            }
            (N, t.elapsed().as_secs_f64())
        });
        let get = get_ns(handle, &all_keys);
        print_row(
            &format!("get_or_compute hit ({label}; target <= 1.1x)"),
            goc,
            get,
            "cache_get",
        );
    }
    let counters = CHandle::file(&base.join("counters"));
    let incr = median_ns_per_op(|| {
        let t = Instant::now();
        for k in keys.iter().take(300) {
            let s = unsafe {
                ffi::cache_incr(
                    counters.0,
                    k.as_ptr(),
                    k.len(),
                    1,
                    -1.0,
                    std::ptr::null_mut(),
                )
            };
            assert_eq!(s, ffi::cache_status::CACHE_OK);
        }
        (300, t.elapsed().as_secs_f64())
    });
    let set_small = median_ns_per_op(|| {
        let t = Instant::now();
        for k in keys.iter().take(300) {
            counters.set(k, b"12345");
        }
        (300, t.elapsed().as_secs_f64())
    });
    print_row("incr (file; target <= 1.2x)", incr, set_small, "cache_set");
    let add_new = median_ns_per_op(|| {
        let t = Instant::now();
        for k in keys.iter().take(300) {
            unsafe { ffi::cache_delete(counters.0, k.as_ptr(), k.len()) };
        }
        let t_del = t.elapsed();
        let t = Instant::now();
        for k in keys.iter().take(300) {
            let s =
                unsafe { ffi::cache_add(counters.0, k.as_ptr(), k.len(), b"v".as_ptr(), 1, -1.0) };
            assert_eq!(s, ffi::cache_status::CACHE_OK);
        }
        black_box(t_del);
        (300, t.elapsed().as_secs_f64())
    });
    print_row(
        "add of an absent key (file)",
        add_new,
        set_small,
        "cache_set",
    );
    drop(c);
    drop(counters);
    let _ = std::fs::remove_dir_all(&base);
}

/// `cache_entry`s storing `value` under each key, no TTL (borrowing both).
fn entries_of(keys: &[[u8; 16]], value: &[u8]) -> Vec<ffi::cache_entry> {
    keys.iter()
        .map(|k| ffi::cache_entry {
            key: ffi::cache_slice {
                data: k.as_ptr(),
                len: k.len(),
            },
            value: ffi::cache_slice {
                data: value.as_ptr(),
                len: value.len(),
            },
            ttl_seconds: -1.0,
            flags: 0,
        })
        .collect()
}

/// A handle on `uri` through cache_open.
fn open_uri(uri: &str) -> CHandle {
    let uri = std::ffi::CString::new(uri).unwrap();
    let mut c = std::ptr::null_mut();
    assert_eq!(
        unsafe { ffi::cache_open(uri.as_ptr(), &mut c) },
        ffi::cache_status::CACHE_OK
    );
    CHandle(c)
}

fn bench_redis() {
    let Ok(url) = std::env::var("DUCKCACHE_REDIS_URL") else {
        println!("== redis: skipped (no DUCKCACHE_REDIS_URL; make bench starts a server)");
        return;
    };
    println!("== Redis/Valkey kind through the C ABI against the redis crate on one connection (the floor), 100 B values, same server (unix socket)");
    let with = |params: &str| format!("{url}{}{params}", if url.contains('?') { '&' } else { '?' });
    let c = open_uri(&with(&format!("prefix=bench-{}:", std::process::id())));
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut floor = client.get_connection().unwrap();
    const N: u64 = 2000;
    let value = [3u8; 100];
    let keys: Vec<[u8; 16]> = (0..N).map(key).collect();
    let all_keys: Vec<u64> = (0..N).collect(); // the same keys, as get_ns takes them
    let prefixed: Vec<Vec<u8>> = keys
        .iter()
        .map(|k| [format!("floor-{}:", std::process::id()).as_bytes(), &k[..]].concat())
        .collect();
    let ours_set = median_ns_per_op(|| {
        let t = Instant::now();
        for k in &keys {
            c.set(k, &value);
        }
        (N, t.elapsed().as_secs_f64())
    });
    let floor_set = median_ns_per_op(|| {
        let t = Instant::now();
        for k in &prefixed {
            redis::cmd("SET")
                .arg(k)
                .arg(&value[..])
                .exec(&mut floor)
                .unwrap();
        }
        (N, t.elapsed().as_secs_f64())
    });
    let ours_get = get_ns(&c, &all_keys);
    let floor_get = median_ns_per_op(|| {
        let t = Instant::now();
        let mut sum = 0;
        for k in &prefixed {
            let v: Vec<u8> = redis::cmd("GET").arg(k).query(&mut floor).unwrap();
            sum += v.len();
        }
        black_box(sum);
        (N, t.elapsed().as_secs_f64())
    });
    print_row(
        "set (target <= 1.2x)",
        ours_set,
        floor_set,
        "redis crate SET",
    );
    print_row(
        "get (target <= 1.2x)",
        ours_get,
        floor_get,
        "redis crate GET",
    );
    let slices: Vec<ffi::cache_slice> = keys[..100]
        .iter()
        .map(|k| ffi::cache_slice {
            data: k.as_ptr(),
            len: k.len(),
        })
        .collect();
    let many = median_ns_per_op(|| {
        let t = Instant::now();
        for _ in 0..20 {
            let mut values: Vec<ffi::cache_buf> = (0..100)
                .map(|_| ffi::cache_buf {
                    data: std::ptr::null_mut(),
                    len: 0,
                })
                .collect();
            let mut statuses = vec![ffi::cache_status::CACHE_OK; 100];
            let s = unsafe {
                ffi::cache_get_many(
                    c.0,
                    slices.as_ptr(),
                    100,
                    values.as_mut_ptr(),
                    statuses.as_mut_ptr(),
                    std::ptr::null_mut(),
                )
            };
            assert_eq!(s, ffi::cache_status::CACHE_OK);
            for v in &mut values {
                unsafe { ffi::cache_buf_free(v) };
            }
        }
        (20, t.elapsed().as_secs_f64())
    });
    let hundred_gets = median_ns_per_op(|| {
        let t = Instant::now();
        for _ in 0..20 {
            let sum: usize = keys[..100].iter().map(|k| c.get(k)).sum();
            black_box(sum);
        }
        (20, t.elapsed().as_secs_f64())
    });
    println!(
        "  get_many of 100 keys {:>10.1} us   100 cache_get {:>10.1} us   {:.1}x faster (target >= 10x)",
        many / 1e3,
        hundred_gets / 1e3,
        hundred_gets / many
    );
    // Threads on one handle: the pool lets them overlap their round trips.
    for threads in [1usize, 4] {
        let c = Arc::new(open_uri(&with(&format!(
            "prefix=bench-t-{}:&pool_size=4",
            std::process::id()
        ))));
        for k in &keys {
            c.set(k, &value);
        }
        let order = access_order(N, 4000, 11);
        let t = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..threads {
                let (c, order) = (c.clone(), &order);
                s.spawn(move || {
                    let sum: usize = order.iter().map(|&i| c.get(&key(i))).sum();
                    black_box(sum);
                });
            }
        });
        let per_sec = (threads * order.len()) as f64 / t.elapsed().as_secs_f64();
        println!(
            "  {threads} thread(s) on one handle (pool_size 4): {:>8.0} gets/s",
            per_sec
        );
        unsafe { ffi::cache_clear(c.0) };
    }
    unsafe { ffi::cache_clear(c.0) };
    let _: () = redis::cmd("DEL").arg(&prefixed).query(&mut floor).unwrap();

    println!("== tiered: memory near cache in front of a Redis far cache");
    let near = CHandle::memory(0);
    let far = open_uri(&with(&format!("prefix=bench-tier-{}:", std::process::id())));
    let far_alone = open_uri(&with(&format!("prefix=bench-tier-{}:", std::process::id())));
    let mut tiered = std::ptr::null_mut();
    let near = std::mem::ManuallyDrop::new(near);
    let far = std::mem::ManuallyDrop::new(far);
    assert_eq!(
        unsafe { ffi::cache_open_tiered(near.0, far.0, 3600.0, &mut tiered) },
        ffi::cache_status::CACHE_OK
    );
    let tiered = CHandle(tiered);
    for k in &keys {
        tiered.set(k, &value);
    }
    let memory = CHandle::memory(0);
    for k in &keys {
        memory.set(k, &value);
    }
    let near_hit = get_ns(&tiered, &all_keys);
    let memory_get = get_ns(&memory, &all_keys);
    print_row(
        "near hit (target <= 1.3x)",
        near_hit,
        memory_get,
        "memory get",
    );
    // Near misses: a fresh tiered handle per round, so every get goes to far once.
    let miss = median_ns_per_op(|| {
        let near = std::mem::ManuallyDrop::new(CHandle::memory(0));
        let far = std::mem::ManuallyDrop::new(open_uri(&with(&format!(
            "prefix=bench-tier-{}:",
            std::process::id()
        ))));
        let mut t_handle = std::ptr::null_mut();
        assert_eq!(
            unsafe { ffi::cache_open_tiered(near.0, far.0, 3600.0, &mut t_handle) },
            ffi::cache_status::CACHE_OK
        );
        let fresh = CHandle(t_handle);
        let t = Instant::now();
        let sum: usize = keys.iter().map(|k| fresh.get(k)).sum();
        black_box(sum);
        (N, t.elapsed().as_secs_f64())
    });
    let far_get = get_ns(&far_alone, &all_keys);
    print_row(
        "near miss served by far (target <= 1.2x)",
        miss,
        far_get,
        "far get",
    );
    unsafe { ffi::cache_clear(tiered.0) };
}

/// Mean time of a random-order get over every key of `c` (all hits).
fn get_ns(c: &CHandle, order: &[u64]) -> f64 {
    median_ns_per_op(|| {
        let t = Instant::now();
        let sum: usize = order.iter().map(|&i| c.get(&key(i))).sum();
        black_box(sum);
        (order.len() as u64, t.elapsed().as_secs_f64())
    })
}

fn bench_sharded() {
    println!(
        "== sharded backend: get with 32 shards against 1 shard (1 KiB values); target <= 1.2x"
    );
    const KEYS: u64 = 4000;
    let value = vec![3u8; 1024];
    let base = scratch_dir("sharded");
    let total = KEYS * (16 + 1024);
    let order = access_order(KEYS, KEYS as usize * 4, 11);
    let mut results = Vec::new();
    for shards in [1u64, 32] {
        let c = CHandle::sharded(&base.join(format!("s{shards}")), total.div_ceil(shards) + 1);
        for i in 0..KEYS {
            c.set(&key(i), &value);
        }
        let made = std::fs::read_dir(base.join(format!("s{shards}")))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("shard-")
            })
            .count();
        results.push((made, get_ns(&c, &order)));
    }
    let file = CHandle::file(&base.join("file"));
    for i in 0..KEYS {
        file.set(&key(i), &value);
    }
    let file_get = get_ns(&file, &order);
    let ((n1, one), (n32, many)) = (results[0], results[1]);
    print_row(
        &format!("get, {n32} shards vs {n1} ({KEYS} keys)"),
        many,
        one,
        &format!("{n1} shard"),
    );
    print_row("get, 1 shard vs the file backend", one, file_get, "file");
    let _ = std::fs::remove_dir_all(&base);
}

/// Another process that sets keys in a store when asked, one at a time (lockstep over
/// a pair of pipes), so a benchmark's reads meet commits that are not their own.
struct OtherWriter {
    pid: libc::pid_t,
    ask: std::fs::File,
    done: std::fs::File,
}

impl OtherWriter {
    /// Forks a process that opens `uri` and, for each key index it is sent, sets that
    /// key to a `size`-byte value.
    fn start(uri: &str, size: usize) -> OtherWriter {
        use std::io::{Read, Write};
        use std::os::fd::FromRawFd;
        let pipe = || {
            let mut fds = [0; 2];
            assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
            unsafe {
                (
                    std::fs::File::from_raw_fd(fds[0]),
                    std::fs::File::from_raw_fd(fds[1]),
                )
            }
        };
        let ((mut ask_rx, ask_tx), (done_rx, mut done_tx)) = (pipe(), pipe());
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // The parent's ends: the request pipe must reach end-of-file when the
            // parent closes its end.
            drop((ask_tx, done_rx));
            let c = open_uri(uri);
            let value = vec![9u8; size];
            let mut index = [0u8; 8];
            while ask_rx.read_exact(&mut index).is_ok() {
                c.set(&key(u64::from_le_bytes(index)), &value);
                done_tx.write_all(&[1]).unwrap();
            }
            drop(c);
            unsafe { libc::_exit(0) };
        }
        drop((ask_rx, done_tx));
        OtherWriter {
            pid,
            ask: ask_tx,
            done: done_rx,
        }
    }

    /// Has key `i` set, and returns once the set is acknowledged.
    fn set(&mut self, i: u64) {
        use std::io::{Read, Write};
        self.ask.write_all(&i.to_le_bytes()).unwrap();
        self.done.read_exact(&mut [0u8; 1]).unwrap();
    }
}

impl Drop for OtherWriter {
    fn drop(&mut self) {
        // Closing the request pipe ends the child's loop.
        let ask = std::mem::replace(&mut self.ask, std::fs::File::open("/dev/null").unwrap());
        drop(ask);
        unsafe { libc::waitpid(self.pid, std::ptr::null_mut(), 0) };
    }
}

/// The read cache's workload (issue 17): Zipf(0.99) gets over 10,000 keys, one
/// operation in every 100 a set of a key of the same distribution from another process
/// (acknowledged before the next get). Gets alone are timed.
fn bench_read_cache() {
    println!(
        "== read cache: Zipf(0.99) gets over 10,000 keys, 1 operation in 100 a set from another process; \
         targets: with read_cache 1 KiB >= 3x, 100 KiB >= 20x faster"
    );
    const KEYS: u64 = 10_000;
    const OPS: usize = 20_000;
    for kind in ["file", "sharded"] {
        for (label, size) in [("1 KiB", 1024usize), ("100 KiB", 100 * 1024)] {
            let base = scratch_dir("read-cache");
            let location = format!("{kind}:{}", base.display());
            {
                let c = open_uri(&location);
                let value = vec![7u8; size];
                for i in 0..KEYS {
                    c.set(&key(i), &value);
                }
            }
            // Room for every key: what a hot set that fits looks like.
            let room = KEYS * (size as u64 + 64);
            let order = zipf_order(KEYS, 0.99, OPS, 23);
            let mut writer = OtherWriter::start(&location, size);
            let mut timed = |uri: &str| {
                let c = open_uri(uri);
                median_ns_per_op(|| {
                    let mut spent = 0.0;
                    let mut gets = 0u64;
                    for batch in order.chunks(100) {
                        let (reads, written) = batch.split_at(batch.len() - 1);
                        let t = Instant::now();
                        for &i in reads {
                            black_box(c.get(&key(i)));
                        }
                        spent += t.elapsed().as_secs_f64();
                        gets += reads.len() as u64;
                        writer.set(written[0]);
                    }
                    (gets, spent)
                })
            };
            let without = timed(&location);
            let with = timed(&format!("{location}?read_cache={room}"));
            print_row(
                &format!("{kind} get {label}, read_cache={}MiB", room >> 20),
                with,
                without,
                "without",
            );
            // The floor: the same gets from the memory kind, which also copies each
            // value into a new caller's buffer (cache_get's contract).
            let memory = CHandle::memory(0);
            let value = vec![7u8; size];
            for i in 0..KEYS {
                memory.set(&key(i), &value);
            }
            let floor = median_ns_per_op(|| {
                let t = Instant::now();
                for &i in &order {
                    black_box(memory.get(&key(i)));
                }
                (order.len() as u64, t.elapsed().as_secs_f64())
            });
            print_row(
                &format!("{kind} get {label}, read_cache vs the memory kind"),
                with,
                floor,
                "memory",
            );
            drop(writer);
            let _ = std::fs::remove_dir_all(&base);
        }
    }
}

fn bench_folder() {
    println!(
        "== folder backend against a SQLite store per key opened on each call (the original `duck.utils.caching` design, without Python); target >= 100x faster"
    );
    const KEYS: u64 = 1000;
    let value = vec![9u8; 1024];
    let base = scratch_dir("folder");
    let order = access_order(KEYS, KEYS as usize * 2, 13);
    let mut round = 0;
    let ours_set = median_ns_per_op(|| {
        round += 1;
        let c = CHandle::folder(&base.join(format!("ours-{round}")));
        let t = Instant::now();
        for i in 0..KEYS {
            c.set(&key(i), &value);
        }
        (KEYS, t.elapsed().as_secs_f64())
    });
    let c = CHandle::folder(&base.join(format!("ours-{round}")));
    let ours_get = get_ns(&c, &order);
    // The seed: each key's folder is a whole store, opened for the call.
    use duckcache::{Backend, FileCache, Ttl};
    let per_key = base.join("per-key");
    let store = |i: u64| FileCache::open(per_key.join(format!("{i:016x}")), 0).unwrap();
    let seed_set = median_ns_per_op(|| {
        let t = Instant::now();
        for i in 0..100 {
            let s = store(i);
            s.set(&key(i), &value, Ttl::Never).unwrap();
            s.close().unwrap();
        }
        (100, t.elapsed().as_secs_f64())
    });
    let seed_get = median_ns_per_op(|| {
        let t = Instant::now();
        for &i in order.iter().filter(|&&i| i < 100).take(200) {
            let s = store(i);
            black_box(s.get_vec(&key(i)).unwrap().unwrap());
            s.close().unwrap();
        }
        (200, t.elapsed().as_secs_f64())
    });
    let row = |what: &str, ours: f64, seed: f64| {
        println!(
            "  {what:<44} duckcache {:>7.1} us/op   store per key {:>7.1} us/op   {:.0}x faster",
            ours / 1e3,
            seed / 1e3,
            seed / ours
        )
    };
    row(
        &format!("set 1 KiB value ({KEYS} keys)"),
        ours_set,
        seed_set,
    );
    row("get 1 KiB value", ours_get, seed_get);
    // What the file system charges for one new name: a set writes three (a folder and
    // two files), so this bounds how fast any atomic set can be on this machine.
    let floor_dir = base.join("floor");
    std::fs::create_dir_all(&floor_dir).unwrap();
    let mut floor_round = 0;
    let create = median_ns_per_op(|| {
        floor_round += 1;
        let round = floor_dir.join(floor_round.to_string());
        std::fs::create_dir_all(&round).unwrap();
        let t = Instant::now();
        for i in 0..100 {
            std::fs::File::create(round.join(i.to_string())).unwrap();
        }
        (100, t.elapsed().as_secs_f64())
    });
    println!(
        "  (file system floor: creating one empty file here takes {:.1} us)",
        create / 1e3
    );
    drop(c);
    let _ = std::fs::remove_dir_all(&base);
}

/// Latency from submission to callback, and async throughput against sync calls.
fn bench_async() {
    use std::sync::mpsc;
    println!(
        "== async: memory get, submission to callback, and throughput against the synchronous call"
    );
    let c = CHandle::memory(0);
    const KEYS: u64 = 10_000;
    for i in 0..KEYS {
        c.set(&key(i), &[7u8; 64]);
    }
    unsafe extern "C" fn signal(
        user: *mut std::ffi::c_void,
        status: ffi::cache_status,
        _: *const u8,
        _: usize,
    ) {
        assert_eq!(status, ffi::cache_status::CACHE_OK);
        let tx = unsafe { &*(user as *const mpsc::Sender<Instant>) };
        tx.send(Instant::now()).unwrap();
    }
    // One operation in flight at a time: the full round trip through a worker.
    let (tx, rx) = mpsc::channel::<Instant>();
    let user = &tx as *const _ as *mut std::ffi::c_void;
    let mut latencies: Vec<f64> = (0..20_000u64)
        .map(|i| {
            let k = key(i % KEYS);
            let start = Instant::now();
            let s = unsafe { ffi::cache_get_async(c.0, k.as_ptr(), k.len(), Some(signal), user) };
            assert_eq!(s, ffi::cache_status::CACHE_OK);
            let called = rx.recv().unwrap();
            (called - start).as_secs_f64() * 1e9
        })
        .collect();
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "  submission to callback, memory get         median {:>7.1} ns   p99 {:>8.1} ns",
        pct(0.5),
        pct(0.99)
    );
    let order = access_order(KEYS, 50_000, 17);
    let (ours, sync) = async_throughput(&c, &order);
    print_row(
        "memory get, 50k queued at once on one handle",
        ours,
        sync,
        "sync get",
    );
    let dir = scratch_dir("async");
    let f = CHandle::file(&dir);
    for i in 0..KEYS {
        f.set(&key(i), &[7u8; 64]);
    }
    let (ours, sync) = async_throughput(&f, &order[..10_000]);
    print_row(
        "file get, 10k queued at once on one handle",
        ours,
        sync,
        "sync get",
    );
    drop(f);
    let _ = std::fs::remove_dir_all(&dir);
}

/// ns per get when `order` is queued at once (callbacks count down), and synchronously.
fn async_throughput(c: &CHandle, order: &[u64]) -> (f64, f64) {
    unsafe extern "C" fn count(
        user: *mut std::ffi::c_void,
        _: ffi::cache_status,
        _: *const u8,
        _: usize,
    ) {
        let n = unsafe { &*(user as *const std::sync::atomic::AtomicU64) };
        n.fetch_add(1, Ordering::Relaxed);
    }
    let done = std::sync::atomic::AtomicU64::new(0);
    let user = &done as *const _ as *mut std::ffi::c_void;
    let queued = median_ns_per_op(|| {
        done.store(0, Ordering::Relaxed);
        let t = Instant::now();
        for &i in order {
            let k = key(i);
            unsafe { ffi::cache_get_async(c.0, k.as_ptr(), k.len(), Some(count), user) };
        }
        while done.load(Ordering::Relaxed) < order.len() as u64 {
            std::thread::yield_now();
        }
        (order.len() as u64, t.elapsed().as_secs_f64())
    });
    (queued, get_ns(c, order))
}

fn main() {
    // `cargo bench` passes --bench; any other argument filters sections by name.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    println!(
        "duckcache benchmarks ({} CPUs); each figure is the median of {ROUNDS} rounds",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    if wanted("file") {
        bench_file();
    }
    if wanted("sharded") {
        bench_sharded();
    }
    if wanted("folder") {
        bench_folder();
    }
    if wanted("read cache") {
        bench_read_cache();
    }
    if wanted("encrypted") {
        bench_encrypted();
    }
    if wanted("v2") {
        bench_v2();
        bench_key_walk_memory();
    }
    if wanted("redis") {
        bench_redis();
    }
    if wanted("async") {
        bench_async();
    }
    // Memory last, its overhead first, while the heap is fresh, so the resident-set
    // figure means something. (`-- memory` runs both, `-- overhead` the first alone.)
    if wanted("memory overhead") {
        bench_memory_overhead();
    }
    if wanted("memory speed") {
        bench_memory();
    }
}
