//! `make bench`: duckcache against its peers, measured in the same run, printed as
//! figures and ratios. Not a pass/fail test: the machines are shared and noisy, so each
//! figure is the median of several rounds and the verdict is left to the reader.
//!
//! One module per section (its documentation says what it measures); `SECTIONS`
//! below lists them in the order they run, and `cargo bench -- NAME` runs those whose
//! name contains NAME.

// The benchmark drives the C ABI as a C program would: its unsafe blocks pass live locals
// and open handles to the exported functions, the same few patterns dozens of times, which
// the library's own rule (a SAFETY comment on every block) would only repeat.
#![allow(clippy::undocumented_unsafe_blocks)]

mod async_calls;
mod encrypted;
mod file;
mod folder;
mod harness;
mod memory;
mod read_cache;
mod redis;
mod sharded;
mod v2;

use harness::ROUNDS;

/// Every section, in the order they run, by the name `cargo bench -- NAME` picks them
/// with (a name containing the argument). Memory last, its overhead first, while the
/// heap is fresh, so the resident-set figure means something (`-- memory` runs both,
/// `-- overhead` the first alone).
const SECTIONS: &[(&str, fn())] = &[
    ("file", file::bench_file),
    ("sharded", sharded::bench_sharded),
    ("folder", folder::bench_folder),
    ("read cache", read_cache::bench_read_cache),
    ("encrypted", encrypted::bench_encrypted),
    ("v2", v2::bench_v2),
    ("v2 key walk", v2::bench_key_walk_memory),
    ("redis", redis::bench_redis),
    ("async", async_calls::bench_async),
    ("memory overhead", memory::bench_memory_overhead),
    ("memory speed", memory::bench_memory),
];

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
    for (name, run) in SECTIONS {
        if wanted(name) {
            run();
        }
    }
}
