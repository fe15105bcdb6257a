//! Section `redis`: the Redis kind against a plain redis-rs client on the same server,
//! one call at a time and in bulk (skipped without `DUCKCACHE_REDIS_URL`).

use crate::harness::*;
use duckcache::ffi;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

pub(crate) fn bench_redis() {
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
    let slices = slices_of(&keys[..100]);
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
            get_many_and_free(&c, &slices, &mut values, &mut statuses);
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
