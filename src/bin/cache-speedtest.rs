//! cache-speedtest: times every operation of every backend and prints per-operation
//! median and p99 latency, throughput, a summary table and the fastest backend for each
//! operation (`--json` for machines). The library's main demonstration: `make speedtest`.

use duckcache::{Backend, FileCache, FolderCache, MemoryCache, ShardedCache, Ttl};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

const USAGE: &str = "\
usage: cache-speedtest [options]

Times open, set, get (hit and miss), ttl, touch, add, incr, set_many and get_many
(batches of 100, timed per entry), keys (a walk, per key), delete, pop and clear on
each backend.

options:
  --ops N            operations per timed step (default 10000)
  --value-size B     bytes per value (default 1024)
  --threads T        threads sharing each step's operations (default 1)
  --backends LIST    comma-separated: memory,file,sharded,folder (default all)
  --dir DIR          work under DIR instead of a fresh temporary directory
  --json             print the results as JSON instead of tables
  -h, --help         this text";

const BACKENDS: [&str; 4] = ["memory", "file", "sharded", "folder"];
const OPERATIONS: [&str; 14] = [
    "open", "set", "get hit", "get miss", "ttl", "touch", "add", "incr", "set_many", "get_many",
    "keys", "delete", "pop", "clear",
];
/// Entries per call of the bulk steps.
const BATCH: usize = 100;
/// Open-and-close cycles timed for "open".
const OPEN_SAMPLES: usize = 20;

struct Options {
    ops: usize,
    value_size: usize,
    threads: usize,
    backends: Vec<&'static str>,
    dir: Option<PathBuf>,
    json: bool,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        ops: 10_000,
        value_size: 1024,
        threads: 1,
        backends: BACKENDS.to_vec(),
        dir: None,
        json: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        let number = |name: &str, text: String, max: usize| -> Result<usize, String> {
            match text.parse::<usize>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(format!(
                    "{name} must be a whole number from 1 to {max}, not {text:?}"
                )),
            }
        };
        match arg.as_str() {
            "--ops" => o.ops = number("--ops", value("--ops")?, 100_000_000)?,
            "--value-size" => {
                o.value_size = number("--value-size", value("--value-size")?, 1 << 30)?
            }
            "--threads" => o.threads = number("--threads", value("--threads")?, 256)?,
            "--backends" => {
                let list = value("--backends")?;
                o.backends = list
                    .split(',')
                    .map(|name| {
                        BACKENDS
                            .into_iter()
                            .find(|b| *b == name.trim())
                            .ok_or(format!(
                                "unknown backend {name:?} (known: {})",
                                BACKENDS.join(",")
                            ))
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--dir" => o.dir = Some(PathBuf::from(value("--dir")?)),
            "--json" => o.json = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if o.threads > o.ops {
        return Err(format!(
            "--threads {} is more than --ops {}",
            o.threads, o.ops
        ));
    }
    Ok(o)
}

/// Latency samples of one operation and the wall time of the step that took them.
struct Measured {
    samples: Vec<Duration>,
    wall: Duration,
}

impl Measured {
    fn percentile(&self, p: f64) -> Duration {
        let mut s = self.samples.clone();
        s.sort_unstable();
        s[((s.len() - 1) as f64 * p).round() as usize]
    }

    fn ops_per_sec(&self) -> f64 {
        self.samples.len() as f64 / self.wall.as_secs_f64().max(1e-9)
    }
}

fn key(i: usize) -> Vec<u8> {
    format!("speedtest-key-{i:012}").into_bytes()
}

/// Opens the backend `kind` in `dir`.
fn open(kind: &str, dir: &Path, ops: usize) -> duckcache::Result<Box<dyn Backend>> {
    Ok(match kind {
        // Bounded (so the LRU order is kept) with room for every key: the set keys, the
        // absent ones add stores and the counters incr makes.
        "memory" => Box::new(MemoryCache::new(3 * ops as u64)),
        "file" => Box::new(FileCache::open(dir, 0)?),
        "sharded" => Box::new(ShardedCache::open(dir, 0, 0)?),
        _ => Box::new(FolderCache::open(dir, 0)?),
    })
}

/// Runs `op` on the key numbers `keys`, split over `threads` threads, timing each call.
fn step(
    cache: &Arc<dyn Backend>,
    keys: &[usize],
    threads: usize,
    op: fn(&dyn Backend, &[u8], &[u8]) -> duckcache::Result<()>,
    value: &Arc<Vec<u8>>,
) -> duckcache::Result<Measured> {
    let chunks: Vec<Vec<usize>> = keys
        .chunks(keys.len().div_ceil(threads))
        .map(<[usize]>::to_vec)
        .collect();
    let barrier = Arc::new(Barrier::new(chunks.len() + 1));
    let workers: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            let (cache, barrier, value) = (cache.clone(), barrier.clone(), value.clone());
            std::thread::spawn(move || -> duckcache::Result<Vec<Duration>> {
                let mut samples = Vec::with_capacity(chunk.len());
                barrier.wait();
                for i in chunk {
                    let k = key(i);
                    let t = Instant::now();
                    op(&*cache, &k, &value)?;
                    samples.push(t.elapsed());
                }
                Ok(samples)
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let mut samples = Vec::with_capacity(keys.len());
    let mut first_error = None;
    for w in workers {
        match w.join().expect("a speedtest thread panicked") {
            Ok(s) => samples.extend(s),
            Err(e) => first_error = first_error.or(Some(e)),
        }
    }
    let wall = start.elapsed();
    match first_error {
        Some(e) => Err(e),
        None => Ok(Measured { samples, wall }),
    }
}

/// A bulk operation on keys, with the value to store.
type BulkOp = fn(&dyn Backend, &[&[u8]], &[u8]) -> duckcache::Result<()>;

/// Runs `op` on batches of `BATCH` keys (one thread); each entry's sample is its share
/// of its batch's time, so the figures compare with the single-key steps.
fn bulk_step(
    cache: &Arc<dyn Backend>,
    keys: &[usize],
    op: BulkOp,
    value: &[u8],
) -> duckcache::Result<Measured> {
    // On a thread of its own, as `step` runs its operations: the allocator then behaves
    // the same in every step (a step's first allocations in a new arena cost page faults).
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut samples = Vec::with_capacity(keys.len());
            let start = Instant::now();
            for batch in keys.chunks(BATCH) {
                let owned: Vec<Vec<u8>> = batch.iter().map(|&i| key(i)).collect();
                let refs: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
                let t = Instant::now();
                op(&**cache, &refs, value)?;
                let share = t.elapsed() / batch.len() as u32;
                samples.extend(std::iter::repeat_n(share, batch.len()));
            }
            Ok(Measured {
                samples,
                wall: start.elapsed(),
            })
        })
        .join()
        .expect("a speedtest thread panicked")
    })
}

fn must_hit(found: bool) -> duckcache::Result<()> {
    if found {
        Ok(())
    } else {
        Err(duckcache::Error::new(
            duckcache::ErrorKind::Internal,
            "a key that was set is missing",
        ))
    }
}

/// Every operation of one backend, in order, on a fresh directory.
fn run_backend(
    kind: &str,
    dir: &Path,
    o: &Options,
    progress: &mut dyn FnMut(&str),
) -> duckcache::Result<Vec<(&'static str, Measured)>> {
    let value = Arc::new(
        (0..o.value_size)
            .map(|i| (i * 131 + 7) as u8)
            .collect::<Vec<u8>>(),
    );
    let keys: Vec<usize> = shuffled(o.ops, 1);
    let absent: Vec<usize> = (o.ops..2 * o.ops).collect();
    let mut results = Vec::new();

    progress("open");
    let mut opens = Vec::new();
    let start = Instant::now();
    for _ in 0..OPEN_SAMPLES {
        let t = Instant::now();
        let c = open(kind, dir, o.ops)?;
        c.close()?;
        opens.push(t.elapsed());
    }
    results.push((
        "open",
        Measured {
            samples: opens,
            wall: start.elapsed(),
        },
    ));

    let cache: Arc<dyn Backend> = Arc::from(open(kind, dir, o.ops)?);
    progress("set");
    let set: fn(&dyn Backend, &[u8], &[u8]) -> duckcache::Result<()> =
        |c, k, v| c.set(k, v, Ttl::Never);
    results.push(("set", step(&cache, &keys, o.threads, set, &value)?));
    progress("get hit");
    let reads = shuffled(o.ops, 2);
    let get_hit: fn(&dyn Backend, &[u8], &[u8]) -> duckcache::Result<()> =
        |c, k, _| must_hit(c.get(k, &mut |v| drop(std::hint::black_box(v.to_vec())))?);
    results.push(("get hit", step(&cache, &reads, o.threads, get_hit, &value)?));
    progress("get miss");
    let get_miss: fn(&dyn Backend, &[u8], &[u8]) -> duckcache::Result<()> = |c, k, _| {
        let found = c.get(k, &mut |_| {})?;
        must_hit(!found)
    };
    results.push((
        "get miss",
        step(&cache, &absent, o.threads, get_miss, &value)?,
    ));
    progress("ttl");
    let ttl: fn(&dyn Backend, &[u8], &[u8]) -> duckcache::Result<()> =
        |c, k, _| must_hit(c.ttl(k)?.is_some());
    results.push(("ttl", step(&cache, &reads, o.threads, ttl, &value)?));
    progress("touch");
    let touch: fn(&dyn Backend, &[u8], &[u8]) -> duckcache::Result<()> =
        |c, k, _| must_hit(c.touch(k, Ttl::Never)?);
    results.push(("touch", step(&cache, &reads, o.threads, touch, &value)?));
    progress("add");
    let add: fn(&dyn Backend, &[u8], &[u8]) -> duckcache::Result<()> =
        |c, k, v| must_hit(c.add_flagged(k, v, Ttl::Never, 0)?);
    results.push(("add", step(&cache, &absent, o.threads, add, &value)?));
    progress("incr");
    let incr: fn(&dyn Backend, &[u8], &[u8]) -> duckcache::Result<()> = |c, k, _| {
        let mut counter = k.to_vec();
        counter.extend_from_slice(b"#n");
        c.incr(&counter, 1, Ttl::Never).map(drop)
    };
    results.push(("incr", step(&cache, &absent, o.threads, incr, &value)?));
    for &i in &absent {
        let mut counter = key(i);
        counter.extend_from_slice(b"#n");
        cache.delete(&key(i))?;
        cache.delete(&counter)?;
    }
    progress("set_many");
    let set_many: BulkOp = |c, ks, v| {
        let entries: Vec<duckcache::backend::EntryRef> = ks
            .iter()
            .map(|k| duckcache::backend::EntryRef {
                key: k,
                value: v,
                ttl: Ttl::Never,
                flags: 0,
            })
            .collect();
        c.set_many(&entries)
    };
    results.push(("set_many", bulk_step(&cache, &keys, set_many, &value)?));
    progress("get_many");
    let get_many: BulkOp = |c, ks, _| {
        let mut found = 0;
        c.get_many(ks, &mut |_, v, _| {
            std::hint::black_box(v.to_vec());
            found += 1;
        })?;
        must_hit(found == ks.len())
    };
    results.push(("get_many", bulk_step(&cache, &reads, get_many, &value)?));
    progress("keys");
    let t = Instant::now();
    let mut walked = 0usize;
    cache.keys(b"speedtest-key-", &mut |_| {
        walked += 1;
        true
    })?;
    let took = t.elapsed();
    must_hit(walked == keys.len())?;
    results.push((
        "keys",
        Measured {
            samples: vec![took / walked.max(1) as u32; walked.max(1)],
            wall: took,
        },
    ));
    let (first_half, second_half) = keys.split_at(keys.len() / 2);
    progress("delete");
    let delete: fn(&dyn Backend, &[u8], &[u8]) -> duckcache::Result<()> = |c, k, _| c.delete(k);
    results.push((
        "delete",
        step(&cache, first_half, o.threads, delete, &value)?,
    ));
    progress("pop");
    let pop: fn(&dyn Backend, &[u8], &[u8]) -> duckcache::Result<()> =
        |c, k, _| must_hit(c.pop(k, &mut |v| drop(std::hint::black_box(v.to_vec())))?);
    results.push(("pop", step(&cache, second_half, o.threads, pop, &value)?));

    progress("clear");
    for &i in &keys {
        cache.set(&key(i), &value, Ttl::Never)?;
    }
    let t = Instant::now();
    cache.clear()?;
    let took = t.elapsed();
    results.push((
        "clear",
        Measured {
            samples: vec![took],
            wall: took,
        },
    ));
    cache.close()?;
    Ok(results)
}

/// 0..n in a fixed pseudo-random order.
fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    let mut x = seed;
    for i in (1..n).rev() {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        v.swap(i, (x >> 33) as usize % (i + 1));
    }
    v
}

fn human(d: Duration) -> String {
    let ns = d.as_nanos() as f64;
    match ns {
        n if n < 1e3 => format!("{n:.0} ns"),
        n if n < 1e6 => format!("{:.1} µs", n / 1e3),
        n if n < 1e9 => format!("{:.2} ms", n / 1e6),
        n => format!("{:.2} s", n / 1e9),
    }
}

fn rate(per_sec: f64) -> String {
    match per_sec {
        r if r >= 1e6 => format!("{:.2} M/s", r / 1e6),
        r if r >= 1e3 => format!("{:.1} k/s", r / 1e3),
        r => format!("{r:.1} /s"),
    }
}

type Results = Vec<(&'static str, Vec<(&'static str, Measured)>)>;

/// The backend with the lowest median for `op`.
fn fastest<'a>(results: &'a Results, op: &str) -> Option<(&'static str, &'a Measured)> {
    results
        .iter()
        .filter_map(|(b, ms)| ms.iter().find(|(o, _)| *o == op).map(|(_, m)| (*b, m)))
        .min_by_key(|(_, m)| m.percentile(0.5))
}

fn print_tables(results: &Results, o: &Options) {
    println!(
        "cache-speedtest: {} ops per step, {} B values, {} thread{}\n",
        o.ops,
        o.value_size,
        o.threads,
        if o.threads == 1 { "" } else { "s" }
    );
    for (backend, measured) in results {
        println!("{backend}");
        println!(
            "  {:<10} {:>10} {:>10} {:>12} {:>8}",
            "operation", "median", "p99", "throughput", "count"
        );
        for (op, m) in measured {
            println!(
                "  {op:<10} {:>10} {:>10} {:>12} {:>8}",
                human(m.percentile(0.5)),
                human(m.percentile(0.99)),
                rate(m.ops_per_sec()),
                m.samples.len()
            );
        }
        println!();
    }
    println!("summary: median latency per operation");
    print!("  {:<10}", "operation");
    for (backend, _) in results {
        print!(" {backend:>10}");
    }
    println!("   fastest");
    for op in OPERATIONS {
        print!("  {op:<10}");
        for (_, measured) in results {
            let m = measured.iter().find(|(o, _)| *o == op).map(|(_, m)| m);
            print!(
                " {:>10}",
                m.map_or("-".into(), |m| human(m.percentile(0.5)))
            );
        }
        println!("   {}", fastest(results, op).map_or("-", |(b, _)| b));
    }
    println!("\n(open: open and close of an existing store, {OPEN_SAMPLES} times; clear: one call on {} entries)", o.ops);
}

fn print_json(results: &Results, o: &Options) {
    let mut out = format!(
        "{{\"ops\":{},\"value_size\":{},\"threads\":{},\"results\":{{",
        o.ops, o.value_size, o.threads
    );
    for (bi, (backend, measured)) in results.iter().enumerate() {
        out += &format!("{}\"{backend}\":{{", if bi > 0 { "," } else { "" });
        for (oi, (op, m)) in measured.iter().enumerate() {
            out += &format!(
                "{}\"{op}\":{{\"median_ns\":{},\"p99_ns\":{},\"ops_per_sec\":{:.1},\"count\":{}}}",
                if oi > 0 { "," } else { "" },
                m.percentile(0.5).as_nanos(),
                m.percentile(0.99).as_nanos(),
                m.ops_per_sec(),
                m.samples.len()
            );
        }
        out += "}";
    }
    out += "},\"fastest\":{";
    let fastest: Vec<String> = OPERATIONS
        .iter()
        .filter_map(|op| fastest(results, op).map(|(b, _)| format!("\"{op}\":\"{b}\"")))
        .collect();
    out += &fastest.join(",");
    out += "}}";
    println!("{out}");
}

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn main() {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("cache-speedtest: {e}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    let parent = o.dir.clone().unwrap_or_else(std::env::temp_dir);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let scratch = Scratch(parent.join(format!(
        "duckcache-speedtest-{}-{nanos}",
        std::process::id()
    )));
    if let Err(e) = std::fs::create_dir_all(&scratch.0) {
        eprintln!(
            "cache-speedtest: cannot create {}: {e}",
            scratch.0.display()
        );
        std::process::exit(1);
    }
    let show_progress = std::io::stdout().is_terminal() && !o.json;
    let mut results: Results = Vec::new();
    for &backend in &o.backends {
        let mut progress = |op: &str| {
            if show_progress {
                print!("\r\x1b[2K  running {backend}: {op} ...");
                let _ = std::io::stdout().flush();
            }
        };
        match run_backend(backend, &scratch.0.join(backend), &o, &mut progress) {
            Ok(measured) => results.push((backend, measured)),
            Err(e) => {
                eprintln!("\ncache-speedtest: {backend}: {e}");
                std::process::exit(1);
            }
        }
    }
    if show_progress {
        print!("\r\x1b[2K");
    }
    if o.json {
        print_json(&results, &o);
    } else {
        print_tables(&results, &o);
    }
}
