//! Section `folder`: set and get against a SQLite store per key opened for each call
//! (how the original's KeyAsFolderCache works once more keys are in use than it keeps
//! open).

use crate::harness::*;
use std::hint::black_box;
use std::time::Instant;

pub(crate) fn bench_folder() {
    println!(
        "== folder backend against a SQLite store per key opened on each call (the original `duck.utils.caching` design, without Python); target >= 100x faster"
    );
    const KEYS: u64 = 1000;
    let value = vec![9u8; 1024];
    let base = scratch_dir("folder");
    let order = access_order(KEYS, KEYS as usize * 2, 13);
    let (ours_set, round) = fresh_set_ns(
        KEYS,
        |round| CHandle::folder(&base.join(format!("ours-{round}"))),
        |c, k| c.set(k, &value),
    );
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
