//! Section `sharded`: get with 32 shards against 1 shard, and against the file kind.

use crate::harness::*;

pub(crate) fn bench_sharded() {
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
