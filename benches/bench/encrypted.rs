//! Section `encrypted`: the encrypted wrapper's get and set against the plain store
//! under it.

use crate::harness::*;
use std::hint::black_box;
use std::time::Instant;

/// Encrypted handles against the same kind unencrypted: set and get of 1 KiB values.
pub(crate) fn bench_encrypted() {
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
