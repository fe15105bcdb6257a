//! Section `async`: submission-to-callback latency of a memory get (median, p99), and
//! the throughput of a queued batch against synchronous gets on the same handle.

use crate::harness::*;
use duckcache::ffi;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Latency from submission to callback, and async throughput against sync calls.
pub(crate) fn bench_async() {
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
