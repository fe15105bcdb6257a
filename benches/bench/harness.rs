//! What every section shares: the counting allocator, rounds and medians, key streams,
//! the C handle wrapper, scratch directories, and the process-memory readers.

use duckcache::ffi;
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Instant;

/// Counts live heap bytes while COUNTING is on, so memory overhead is measured exactly
/// (malloc headers aside; the resident-set figure includes those). Off for the speed
/// sections: a shared counter on every allocation would itself be contended.
pub(crate) struct CountingAlloc;

pub(crate) static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
pub(crate) static COUNTING: AtomicBool = AtomicBool::new(false);

pub(crate) fn count(delta: isize) {
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
pub(crate) static ALLOC: CountingAlloc = CountingAlloc;

pub(crate) const ROUNDS: usize = 7;

/// Median of `ROUNDS` runs of `f`, each returning (operations, seconds): ns per operation.
pub(crate) fn median_ns_per_op(mut f: impl FnMut() -> (u64, f64)) -> f64 {
    let mut samples: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let (ops, secs) = f();
            secs * 1e9 / ops as f64
        })
        .collect();
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    samples[ROUNDS / 2]
}

pub(crate) fn key(i: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&i.to_le_bytes());
    k[8..].copy_from_slice(&(i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_le_bytes());
    k
}

/// A fixed pseudo-random order of key indices (splitmix64), the same for every contender.
pub(crate) fn access_order(n: u64, len: usize, seed: u64) -> Vec<u64> {
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
pub(crate) struct CHandle(pub(crate) *mut ffi::cache_t);
// SAFETY: the C ABI allows every call on a handle from any thread (its contract).
unsafe impl Send for CHandle {}
// SAFETY: as for Send: calls may run on several threads at once.
unsafe impl Sync for CHandle {}

impl CHandle {
    pub(crate) fn memory(max_keys: u64) -> CHandle {
        let mut c = std::ptr::null_mut();
        assert_eq!(
            unsafe { ffi::cache_open_memory(max_keys, &mut c) },
            ffi::cache_status::CACHE_OK
        );
        CHandle(c)
    }

    /// Opens a persistent kind on `dir` with `open(dir, out)`.
    pub(crate) fn open_dir(
        dir: &std::path::Path,
        open: impl FnOnce(*const std::ffi::c_char, *mut *mut ffi::cache_t) -> ffi::cache_status,
    ) -> CHandle {
        let dir = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
        let mut c = std::ptr::null_mut();
        assert_eq!(open(dir.as_ptr(), &mut c), ffi::cache_status::CACHE_OK);
        CHandle(c)
    }

    pub(crate) fn file(dir: &std::path::Path) -> CHandle {
        Self::open_dir(dir, |d, out| unsafe { ffi::cache_open_file(d, 0, out) })
    }

    pub(crate) fn sharded(dir: &std::path::Path, shard_size_limit: u64) -> CHandle {
        Self::open_dir(dir, |d, out| unsafe {
            ffi::cache_open_sharded(d, shard_size_limit, 0, out)
        })
    }

    pub(crate) fn folder(dir: &std::path::Path) -> CHandle {
        Self::open_dir(dir, |d, out| unsafe { ffi::cache_open_folder(d, 0, out) })
    }

    /// `inner` wrapped by cache_open_encrypted (which takes it over).
    pub(crate) fn encrypted(inner: CHandle) -> CHandle {
        let inner = std::mem::ManuallyDrop::new(inner);
        let key = [42u8; 32];
        let mut c = std::ptr::null_mut();
        let s = unsafe { ffi::cache_open_encrypted(inner.0, key.as_ptr(), key.len(), &mut c) };
        assert_eq!(s, ffi::cache_status::CACHE_OK);
        CHandle(c)
    }

    pub(crate) fn set(&self, k: &[u8], v: &[u8]) {
        let s = unsafe { ffi::cache_set(self.0, k.as_ptr(), k.len(), v.as_ptr(), v.len(), -1.0) };
        assert_eq!(s, ffi::cache_status::CACHE_OK);
    }

    /// `cache_get` as a C caller does it (copy out, then free the buffer), for
    /// benchmarks where every get must hit: the value's length.
    #[inline]
    pub(crate) fn get(&self, k: &[u8]) -> usize {
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

pub(crate) fn print_row(what: &str, ours: f64, peer: f64, peer_name: &str) {
    println!(
        "  {what:<44} duckcache {ours:>7.1} ns/op   {peer_name} {peer:>7.1} ns/op   ratio {:.2}x",
        ours / peer
    );
}
/// Copies `v` into the front of `buf` and returns its length: the peers' "plus copy".
#[inline]
pub(crate) fn copy_out(v: &[u8], buf: &mut [u8]) -> usize {
    buf[..v.len()].copy_from_slice(v);
    v.len()
}

impl CHandle {
    /// `cache_get_into` into `buf`: the value's length, or 0 on a miss.
    #[inline]
    pub(crate) fn get_into(&self, k: &[u8], buf: &mut [u8]) -> usize {
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
/// A Zipf(s) stream of `len` ranks in 0..n (rank 0 the most popular), from a splitmix
/// uniform stream and the inverse of the CDF.
pub(crate) fn zipf_order(n: u64, s: f64, len: usize, seed: u64) -> Vec<u64> {
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
pub(crate) fn every_tenth() -> bool {
    thread_local! {
        static CALLS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }
    CALLS.with(|n| {
        n.set(n.get() + 1);
        n.get() % 10 == 0
    })
}

/// ns per operation of `op` over `order`, on 1 thread or (aggregate) 2 threads.
pub(crate) fn run_order(
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
/// Aggregate ns per operation with two threads each running the whole order.
pub(crate) fn two_threads(
    order: &[u64],
    op: impl Fn(u64) -> usize + Send + Sync + Clone + 'static,
) -> f64 {
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

pub(crate) fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// The peak resident set since the last `reset_peak_resident` (VmHWM).
pub(crate) fn peak_resident_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .unwrap_or(0)
        * 1024
}

pub(crate) fn reset_peak_resident() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}
pub(crate) fn scratch_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("duckcache-bench-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
/// `cache_entry`s storing `value` under each key, no TTL (borrowing both).
pub(crate) fn entries_of(keys: &[[u8; 16]], value: &[u8]) -> Vec<ffi::cache_entry> {
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
pub(crate) fn open_uri(uri: &str) -> CHandle {
    let uri = std::ffi::CString::new(uri).unwrap();
    let mut c = std::ptr::null_mut();
    assert_eq!(
        unsafe { ffi::cache_open(uri.as_ptr(), &mut c) },
        ffi::cache_status::CACHE_OK
    );
    CHandle(c)
}
/// Mean time of a random-order get over every key of `c` (all hits).
pub(crate) fn get_ns(c: &CHandle, order: &[u64]) -> f64 {
    median_ns_per_op(|| {
        let t = Instant::now();
        let sum: usize = order.iter().map(|&i| c.get(&key(i))).sum();
        black_box(sum);
        (order.len() as u64, t.elapsed().as_secs_f64())
    })
}

/// The floor: a bare key-value table in rusqlite with the pragmas the file cache uses.
pub(crate) struct Floor(pub(crate) rusqlite::Connection);

impl Floor {
    pub(crate) fn open(path: &std::path::Path) -> Floor {
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

    pub(crate) fn set(&self, k: &[u8], v: &[u8]) {
        self.0
            .prepare_cached("INSERT OR REPLACE INTO kv VALUES (?1, ?2)")
            .unwrap()
            .execute((k, v))
            .unwrap();
    }

    pub(crate) fn get(&self, k: &[u8]) -> usize {
        let v: Vec<u8> = self
            .0
            .prepare_cached("SELECT value FROM kv WHERE key = ?1")
            .unwrap()
            .query_row([k], |r| r.get(0))
            .unwrap();
        v.len()
    }
}

/// ns per set of keys 0..n (with `set`) into a fresh store each round, `open` given the
/// round's number; and the last round's number, whose store is left filled for the gets
/// that follow.
pub(crate) fn fresh_set_ns<S>(
    n: u64,
    mut open: impl FnMut(usize) -> S,
    set: impl Fn(&S, &[u8]),
) -> (f64, usize) {
    let mut round = 0;
    let ns = median_ns_per_op(|| {
        round += 1;
        let store = open(round);
        let t = Instant::now();
        for i in 0..n {
            set(&store, &key(i));
        }
        (n, t.elapsed().as_secs_f64())
    });
    (ns, round)
}

/// One cache_get_many of `slices` into `values` and `statuses` (as long as `slices`),
/// which must succeed; frees the values it returns.
pub(crate) fn get_many_and_free(
    c: &CHandle,
    slices: &[ffi::cache_slice],
    values: &mut [ffi::cache_buf],
    statuses: &mut [ffi::cache_status],
) {
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
    for v in values {
        unsafe { ffi::cache_buf_free(v) };
    }
}

/// A cache_slice over each key (which the caller keeps alive).
pub(crate) fn slices_of<K: AsRef<[u8]>>(keys: &[K]) -> Vec<ffi::cache_slice> {
    keys.iter()
        .map(|k| ffi::cache_slice {
            data: k.as_ref().as_ptr(),
            len: k.as_ref().len(),
        })
        .collect()
}
