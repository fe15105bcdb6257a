//! Section `file`: get and set of 1 KiB and 100 KiB values against a bare rusqlite
//! key-value table with the same pragmas (the floor for this design); open time.

use crate::harness::*;
use std::hint::black_box;
use std::time::Instant;

pub(crate) fn bench_file() {
    println!(
        "== file backend against a bare rusqlite key-value table (same pragmas); target <= 1.5x"
    );
    for (label, size, keys) in [("1 KiB", 1024usize, 2000u64), ("100 KiB", 100 * 1024, 200)] {
        let value = vec![5u8; size];
        let base = scratch_dir("file");
        let order = access_order(keys, keys as usize * 4, 7);
        let (ours_set, ours_round) = fresh_set_ns(
            keys,
            |round| CHandle::file(&base.join(format!("ours-{round}"))),
            |c, k| c.set(k, &value),
        );
        let (floor_set, floor_round) = fresh_set_ns(
            keys,
            |round| Floor::open(&base.join(format!("floor-{round}.db"))),
            |f, k| f.set(k, &value),
        );
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
