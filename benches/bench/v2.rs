//! Sections `v2` and `v2 key walk`: the version 2 calls (bulk, conditional, compute,
//! TTL) on the file kind against the rusqlite floor; a walk over a million keys holds a
//! page at a time.

use crate::harness::*;
use duckcache::ffi;
use std::hint::black_box;
use std::time::Instant;

/// A key walk over 1,000,000 keys holds a page at a time: the peak resident set during
/// the walk against the resident set before it.
pub(crate) fn bench_key_walk_memory() {
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

/// A compute function for the get_or_compute rows: never runs on a hit.
unsafe extern "C" fn compute_unreachable(
    _: *mut std::ffi::c_void,
    _: *const u8,
    _: usize,
    _: *mut ffi::cache_sink,
) -> ffi::cache_status {
    ffi::cache_status::CACHE_ERR_INTERNAL
}

pub(crate) fn bench_v2() {
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
    let slices = slices_of(&keys);
    let get_many = median_ns_per_op(|| {
        let mut values: Vec<ffi::cache_buf> = (0..N)
            .map(|_| ffi::cache_buf {
                data: std::ptr::null_mut(),
                len: 0,
            })
            .collect();
        let mut statuses = vec![ffi::cache_status::CACHE_OK; N as usize];
        let t = Instant::now();
        get_many_and_free(&c, &slices, &mut values, &mut statuses);
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
