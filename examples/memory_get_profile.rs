//! A get loop to profile, one contender at a time, so `perf stat` and callgrind count
//! only it (the benchmark runs every contender in one process):
//!
//! ```text
//! cargo build --release --example memory_get_profile
//! perf stat -e cycles,instructions,cache-misses target/release/examples/memory_get_profile lru uniform 2000000
//! valgrind --tool=callgrind target/release/examples/memory_get_profile s3fifo uniform 200000
//! ```
//!
//! Contenders: `lru` and `s3fifo` (duckcache's memory kind through `cache_get_into`),
//! `rust-lru` (the same cache through the Rust `Backend::get_into`, no C boundary),
//! `mutex-lru` (`parking_lot::Mutex<lru::LruCache>` get plus copy), `mutex-lru-c` (the same
//! behind an `extern "C"` function of `cache_get_into`'s shape, not inlined: what the
//! boundary alone costs). Orders: `uniform`, `same` (one key over and over: everything
//! in cache, so the time is instructions), `none` (set-up only, to subtract). 100,000
//! keys of 16 bytes, 100-byte values, as in `cargo bench --bench bench -- "memory speed"`.
//! With callgrind, `--toggle-collect=cache_get_into` counts the gets alone.
//!
//! What it showed (this VM, AMD EPYC, no hardware counters, so time and callgrind): a
//! uniform get is a chain of dependent cache misses (the index bucket, the slab node, the
//! entry's key bytes; under LRU also the two list neighbours), and how fast a loop of gets
//! runs depends on how much of the next get's misses the processor overlaps with this
//! one's, which every instruction between them reduces: forty instructions of filler per
//! get cost 30%. The C boundary's shape costs the same way: `mutex-lru-c` takes about
//! 1.35x the time of `mutex-lru` for the same work. LRU's list move is about 100 ns of a
//! uniform get here (measured by skipping it); S3-FIFO's hit only sets a count.

use duckcache::ffi;
use std::hint::black_box;

const KEYS: u64 = 100_000;
const VALUE: usize = 100;

fn key(i: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&i.to_le_bytes());
    k[8..].copy_from_slice(&(i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_le_bytes());
    k
}

fn order(n: usize) -> Vec<u64> {
    let mut x = 42u64;
    (0..n)
        .map(|_| {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) % KEYS
        })
        .collect()
}

fn open(uri: &str) -> *mut ffi::cache_t {
    let uri = std::ffi::CString::new(uri).unwrap();
    let mut c = std::ptr::null_mut();
    assert_eq!(
        // SAFETY: a NUL-terminated URI and a live out-pointer.
        unsafe { ffi::cache_open(uri.as_ptr(), &mut c) },
        ffi::cache_status::CACHE_OK
    );
    c
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (who, how, ops) = match &args[..] {
        [_, who, how, ops] => (who.as_str(), how.as_str(), ops.parse::<usize>().unwrap()),
        _ => panic!("usage: memory_get_profile lru|s3fifo|rust-lru|mutex-lru uniform|none OPS"),
    };
    let order = match how {
        "none" => Vec::new(),
        // One key over and over: every access a cache hit, so the time is instructions.
        "same" => vec![7; ops],
        _ => order(ops),
    };
    let value = [7u8; VALUE];
    let mut buf = [0u8; VALUE];
    let mut sum = 0usize;
    match who {
        "lru" | "s3fifo" => {
            let c = open(&format!("memory:?max_keys={KEYS}&policy={who}"));
            for i in 0..KEYS {
                let k = key(i);
                // SAFETY: an open handle; the key and value buffers hold the lengths given.
                let s = unsafe { ffi::cache_set(c, k.as_ptr(), 16, value.as_ptr(), VALUE, -1.0) };
                assert_eq!(s, ffi::cache_status::CACHE_OK);
            }
            for &i in &order {
                let k = key(i);
                let mut len = 0;
                // SAFETY: as above; the out-pointers are live locals.
                let s = unsafe {
                    ffi::cache_get_into(c, k.as_ptr(), 16, buf.as_mut_ptr(), VALUE, &mut len)
                };
                assert_eq!(s, ffi::cache_status::CACHE_OK);
                sum += len + buf[0] as usize;
            }
            // SAFETY: the handle opened above, freed once, with no call running on it.
            unsafe { ffi::cache_free(c) };
        }
        "mutex-lru-c" => {
            type L = parking_lot::Mutex<lru::LruCache<Vec<u8>, Vec<u8>>>;
            #[inline(never)]
            extern "C" fn get(
                c: *const L,
                k: *const u8,
                kl: usize,
                b: *mut u8,
                cap: usize,
                out: *mut usize,
            ) -> i32 {
                // SAFETY: the caller passes a live peer, keys and buffers of the lengths
                // given, and a live out-pointer (the loop below, like a C caller).
                let c = unsafe { &*c };
                // SAFETY: as above.
                let k = unsafe { std::slice::from_raw_parts(k, kl) };
                // SAFETY: as above.
                let b = unsafe { std::slice::from_raw_parts_mut(b, cap) };
                match c.lock().get(k) {
                    Some(v) if v.len() <= cap => {
                        b[..v.len()].copy_from_slice(v);
                        // SAFETY: as above.
                        unsafe { *out = v.len() };
                        0
                    }
                    _ => -1,
                }
            }
            let c: L = parking_lot::Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(KEYS as usize).unwrap(),
            ));
            for i in 0..KEYS {
                c.lock().put(key(i).to_vec(), value.to_vec());
            }
            for &i in &order {
                let k = key(i);
                let mut len = 0;
                assert_eq!(
                    get(&c, k.as_ptr(), 16, buf.as_mut_ptr(), VALUE, &mut len),
                    0
                );
                sum += len + buf[0] as usize;
            }
        }
        "mutex-lru" => {
            let c = parking_lot::Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(KEYS as usize).unwrap(),
            ));
            for i in 0..KEYS {
                c.lock().put(key(i).to_vec(), value.to_vec());
            }
            for &i in &order {
                let k = key(i);
                let len = c.lock().get(&k[..]).map_or(0, |v: &Vec<u8>| {
                    buf[..v.len()].copy_from_slice(v);
                    v.len()
                });
                sum += len + buf[0] as usize;
            }
        }
        "rust1" | "rust8" => {
            use duckcache::Backend;
            let c = duckcache::MemoryCache::with_shards(KEYS, if who == "rust1" { 1 } else { 8 });
            for i in 0..KEYS {
                c.set_flagged(&key(i), &value, duckcache::Ttl::Never, 0)
                    .unwrap();
            }
            for &i in &order {
                let mut len = 0;
                c.get_flagged(&key(i), &mut |v, _| {
                    buf[..v.len()].copy_from_slice(v);
                    len = v.len();
                })
                .unwrap();
                sum += len + buf[0] as usize;
            }
        }
        "rust-lru" => {
            use duckcache::Backend;
            let c: Box<dyn Backend> = Box::new(duckcache::MemoryCache::with_policy(
                KEYS,
                0,
                duckcache::Policy::Lru,
            ));
            for i in 0..KEYS {
                c.set(&key(i), &value, duckcache::Ttl::Never).unwrap();
            }
            for &i in &order {
                let (len, _) = c.get_into(&key(i), &mut buf).unwrap().expect("a hit");
                sum += len + buf[0] as usize;
            }
        }
        other => panic!("unknown contender {other}"),
    }
    black_box(sum);
}
