//! The read cache (`read_cache=BYTES` on `file:` and `sharded:`): a handle with a warm
//! cache never serves a value another process has replaced or deleted before its get
//! began, and still honours TTLs and its own writes.
//!
//! The other process is this test binary run again (`writer_child` below, which does
//! nothing unless started by a test): it applies what the test sends it on its stdin,
//! one command a line, and acknowledges each after the write returned.

mod common;

use common::TempDir;
use duckcache::{uri, Backend, Ttl};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

const CHILD_URI: &str = "DUCKCACHE_READ_CACHE_CHILD_URI";

/// The other process's side: applies `set KEY SIZE SEED`, `del KEY` and `quit` lines
/// from stdin to the store at $DUCKCACHE_READ_CACHE_CHILD_URI, answering `@@ok` on
/// stdout after each write returned.
#[test]
fn writer_child() {
    let Ok(location) = std::env::var(CHILD_URI) else {
        return; // a plain test run: nothing to do
    };
    let cache = uri::open(&location).unwrap();
    let mut out = std::io::stdout();
    for line in std::io::stdin().lock().lines() {
        let line = line.unwrap();
        let words: Vec<&str> = line.split(' ').collect();
        match words[..] {
            ["set", key, size, seed] => {
                let value = value_of(size.parse().unwrap(), seed.parse().unwrap());
                cache.set(key.as_bytes(), &value, Ttl::Never).unwrap();
            }
            ["del", key] => cache.delete(key.as_bytes()).unwrap(),
            ["quit"] => break,
            _ => panic!("unknown command {line:?}"),
        }
        writeln!(out, "@@ok").unwrap();
        out.flush().unwrap();
    }
}

fn value_of(size: usize, seed: u64) -> Vec<u8> {
    let mut value = common::pattern(size, seed as u8);
    value[..8.min(size)].copy_from_slice(&seed.to_le_bytes()[..8.min(size)]);
    value
}

/// The writing process, driven line by line.
struct Writer {
    child: Child,
    commands: ChildStdin,
    answers: BufReader<ChildStdout>,
}

impl Writer {
    fn start(location: &str) -> Writer {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["writer_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_URI, location)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let commands = child.stdin.take().unwrap();
        let answers = BufReader::new(child.stdout.take().unwrap());
        Writer {
            child,
            commands,
            answers,
        }
    }

    /// Sends `command` and returns once the other process has acknowledged it.
    fn run(&mut self, command: &str) {
        writeln!(self.commands, "{command}").unwrap();
        self.commands.flush().unwrap();
        loop {
            let mut line = String::new();
            assert!(
                self.answers.read_line(&mut line).unwrap() > 0,
                "the writer process ended"
            );
            if line.trim_end().ends_with("@@ok") {
                return;
            }
        }
    }

    fn finish(mut self) {
        self.run_quit();
        assert!(self.child.wait().unwrap().success());
    }

    fn run_quit(&mut self) {
        writeln!(self.commands, "quit").unwrap();
        self.commands.flush().unwrap();
    }
}

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Thousands of rounds: another process replaces or deletes a key this handle has
/// cached (read just before), acknowledges, and this handle's next get must see the
/// change; a key the other process did not touch must still read as before. Values
/// are small (inline) or large (in value files).
///
/// Two more threads read the same keys all along, so values read from the store just
/// before a change race with the catch-up that applies it (a value read before a
/// change must never be cached after it).
fn check_never_serves_what_another_process_changed(location: &str, cached: &str) {
    const KEYS: u64 = 24;
    const ROUNDS: usize = 3000;
    let reader: Arc<dyn Backend> = Arc::from(uri::open(cached).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let racers: Vec<_> = (0..2u64)
        .map(|t| {
            let (reader, stop) = (reader.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut rng = Rng(0x1234_5678 + t);
                while !stop.load(Relaxed) {
                    let k = rng.below(KEYS);
                    reader.get_vec(format!("key-{k}").as_bytes()).unwrap();
                }
            })
        })
        .collect();
    let mut writer = Writer::start(location);
    let mut model: Vec<Option<Vec<u8>>> = vec![None; KEYS as usize];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let key = |k: u64| format!("key-{k}");
    for round in 0..ROUNDS {
        let k = rng.below(KEYS);
        // Warm: the key and another one read (and so cached) before the change.
        let other = rng.below(KEYS);
        assert_eq!(
            reader.get_vec(key(k).as_bytes()).unwrap(),
            model[k as usize]
        );
        assert_eq!(
            reader.get_vec(key(other).as_bytes()).unwrap(),
            model[other as usize]
        );
        if rng.below(5) == 0 {
            writer.run(&format!("del {}", key(k)));
            model[k as usize] = None;
        } else {
            let size = if rng.below(10) == 0 {
                40_000
            } else {
                1 + rng.below(2000) as usize
            };
            let seed = round as u64;
            writer.run(&format!("set {} {size} {seed}", key(k)));
            model[k as usize] = Some(value_of(size, seed));
        }
        let got = reader.get_vec(key(k).as_bytes()).unwrap();
        assert!(
            got == model[k as usize],
            "round {round}: {} read {:?} bytes (seed {:?}), the other process wrote {:?} bytes",
            key(k),
            got.as_ref().map(Vec::len),
            got.as_ref().map(|v| v.get(..8).map(|s| s.to_vec())),
            model[k as usize].as_ref().map(Vec::len),
        );
        assert_eq!(
            reader.get_vec(key(other).as_bytes()).unwrap(),
            model[other as usize]
        );
    }
    writer.finish();
    stop.store(true, Relaxed);
    for racer in racers {
        racer.join().unwrap();
    }
    reader.close().unwrap();
}

#[test]
fn file_never_serves_what_another_process_changed() {
    let dir = TempDir::new("read-cache-file");
    let location = format!("file:{}", dir.path().display());
    check_never_serves_what_another_process_changed(
        &location,
        &format!("{location}?read_cache=4MiB"),
    );
}

/// The cache serves what it holds without reading the store (shown by changing the
/// store behind the change log's back: a cached key still reads its old value), while
/// this handle's own writes, deletes and TTLs are honoured, and gets it serves count as
/// hits.
fn check_serves_own_writes_and_ttls(location: &str, db: &std::path::Path, table: &str) {
    let c = uri::open(location).unwrap();
    let hits = |c: &dyn Backend| c.stats().unwrap().hits;
    c.set(b"k", b"v1", Ttl::Never).unwrap();
    // A key is cached on its second miss.
    for _ in 0..2 {
        assert_eq!(c.get_vec(b"k").unwrap().as_deref(), Some(&b"v1"[..]));
    }
    let before = hits(&*c);
    for _ in 0..10 {
        assert_eq!(c.get_vec(b"k").unwrap().as_deref(), Some(&b"v1"[..]));
    }
    assert_eq!(
        hits(&*c),
        before + 10,
        "gets served by the cache count as hits"
    );
    c.set(b"k", b"v2", Ttl::Never).unwrap();
    assert_eq!(c.get_vec(b"k").unwrap().as_deref(), Some(&b"v2"[..]));
    c.delete(b"k").unwrap();
    assert_eq!(c.get_vec(b"k").unwrap(), None);

    c.set(b"t", b"short", common::short_ttl()).unwrap();
    for _ in 0..2 {
        assert_eq!(c.get_vec(b"t").unwrap().as_deref(), Some(&b"short"[..]));
    }
    common::outlive_short_ttl();
    assert_eq!(
        c.get_vec(b"t").unwrap(),
        None,
        "a cached entry dies at its TTL"
    );

    // Served from memory: a row removed without logging the change (the triggers
    // dropped first) still reads from the cache; a logged removal does not.
    c.set(b"hidden", b"old", Ttl::Never).unwrap();
    c.set(b"seen", b"old", Ttl::Never).unwrap();
    for _ in 0..2 {
        assert!(c.get_vec(b"hidden").unwrap().is_some());
        assert!(c.get_vec(b"seen").unwrap().is_some());
    }
    // Read once only: not cached (a pass over keys read once copies nothing).
    c.set(b"once", b"old", Ttl::Never).unwrap();
    assert!(c.get_vec(b"once").unwrap().is_some());
    let raw = rusqlite::Connection::open(db).unwrap();
    raw.execute_batch(&format!(
        "DELETE FROM {table} WHERE key = x'{}';
         DROP TRIGGER {table}_deletion_logged;
         DELETE FROM {table} WHERE key = x'{}';
         DELETE FROM {table} WHERE key = x'{}';",
        hex(b"seen"),
        hex(b"hidden"),
        hex(b"once")
    ))
    .unwrap();
    drop(raw);
    assert_eq!(c.get_vec(b"seen").unwrap(), None);
    assert_eq!(c.get_vec(b"hidden").unwrap().as_deref(), Some(&b"old"[..]));
    assert_eq!(c.get_vec(b"once").unwrap(), None);
    c.close().unwrap();
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn file_serves_own_writes_and_ttls() {
    let dir = TempDir::new("read-cache-file-own");
    let location = format!("file:{}?read_cache=1MiB", dir.path().display());
    check_serves_own_writes_and_ttls(&location, &dir.path().join("cache.db"), "entries");
}

#[test]
fn a_bad_read_cache_size_is_refused() {
    let dir = TempDir::new("read-cache-bad");
    for bad in ["lots", "-1", "1XB"] {
        let location = format!("file:{}?read_cache={bad}", dir.path().display());
        let e = uri::open(&location).err().unwrap();
        assert!(e.message().contains("read_cache"), "{e}");
    }
}

#[test]
fn sharded_never_serves_what_another_process_changed() {
    let dir = TempDir::new("read-cache-sharded");
    // Small shards, so keys move between shards as they are replaced.
    let location = format!("sharded:{}?shard_size_limit=200KB", dir.path().display());
    check_never_serves_what_another_process_changed(
        &location,
        &format!("{location}&read_cache=4MiB"),
    );
}

#[test]
fn sharded_serves_own_writes_and_ttls() {
    let dir = TempDir::new("read-cache-sharded-own");
    let location = format!("sharded:{}?read_cache=1MiB", dir.path().display());
    check_serves_own_writes_and_ttls(&location, &dir.path().join("index.db"), "keys");
}

/// A cache that fell further behind than the change log keeps (another handle changed
/// a cached key, then changed 20,000 more, so the key's record was trimmed before the
/// cache read it) drops everything rather than serve the key.
fn check_a_gap_in_the_log_drops_everything(location: &str) {
    let cached = uri::open(&format!("{location}read_cache=4MiB")).unwrap();
    let writer = uri::open(location.trim_end_matches(['?', '&'])).unwrap();
    writer.set(b"k", b"old", Ttl::Never).unwrap();
    for _ in 0..2 {
        assert_eq!(cached.get_vec(b"k").unwrap().as_deref(), Some(&b"old"[..]));
    }
    let fillers: Vec<Vec<u8>> = (0..20_000)
        .map(|i| format!("filler-{i}").into_bytes())
        .collect();
    let entries: Vec<_> = fillers
        .iter()
        .map(|k| duckcache::backend::EntryRef {
            key: k,
            value: b"f",
            ttl: Ttl::Never,
            flags: 0,
        })
        .collect();
    writer.set_many(&entries).unwrap();
    assert_eq!(cached.get_vec(b"k").unwrap().as_deref(), Some(&b"old"[..]));
    writer.set(b"k", b"new", Ttl::Never).unwrap();
    assert_eq!(writer.delete_prefix(b"filler-").unwrap(), 20_000);
    assert_eq!(cached.get_vec(b"k").unwrap().as_deref(), Some(&b"new"[..]));
    cached.close().unwrap();
    writer.close().unwrap();
}

#[test]
fn file_a_gap_in_the_log_drops_everything() {
    let dir = TempDir::new("read-cache-file-gap");
    check_a_gap_in_the_log_drops_everything(&format!("file:{}?", dir.path().display()));
}

#[test]
fn sharded_a_gap_in_the_log_drops_everything() {
    let dir = TempDir::new("read-cache-sharded-gap");
    check_a_gap_in_the_log_drops_everything(&format!(
        "sharded:{}?shard_size_limit=64MiB&",
        dir.path().display()
    ));
}

/// The store's database removed under a warm reader and made anew by another handle
/// (the sharded index is rebuilt from its shards): the reader's cache followed the
/// removed file, whose header never moves again, and served the old values forever.
/// It must notice the new file within its check interval (10 ms).
fn check_a_replaced_store_file_is_followed(scheme: &str, db: &str) {
    let dir = TempDir::new("read-cache-replaced");
    let plain = format!("{scheme}:{}", dir.path().display());
    let reader = uri::open(&format!("{plain}?read_cache=1MiB")).unwrap();
    let first = uri::open(&plain).unwrap();
    first.set(b"k", b"old", Ttl::Never).unwrap();
    first.set(b"k2", b"old2", Ttl::Never).unwrap();
    for _ in 0..3 {
        assert_eq!(reader.get_vec(b"k").unwrap().as_deref(), Some(&b"old"[..]));
        assert_eq!(
            reader.get_vec(b"k2").unwrap().as_deref(),
            Some(&b"old2"[..])
        );
    }
    first.close().unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.path().join(format!("{db}{suffix}")));
    }
    let writer = uri::open(&plain).unwrap();
    writer.set(b"k", b"new", Ttl::Never).unwrap();
    writer.delete(b"k2").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(60));
    for round in 0..50 {
        assert_eq!(
            reader.get_vec(b"k").unwrap().as_deref(),
            Some(&b"new"[..]),
            "round {round}"
        );
        assert_eq!(reader.get_vec(b"k2").unwrap(), None, "round {round}");
    }
    reader.close().unwrap();
    writer.close().unwrap();
}

#[test]
fn sharded_follows_an_index_made_anew() {
    check_a_replaced_store_file_is_followed("sharded", "index.db");
}

/// A value kept in a file of its own is cached from its second read, through a get into
/// the caller's buffer too (served from memory: the file can be gone); one larger than
/// the cache is never cached (read from its file each time).
#[test]
fn a_value_in_a_file_is_cached_from_its_second_read() {
    let dir = TempDir::new("rc-file-value");
    let cache = uri::open(&format!("file:{}?read_cache=1MiB", dir.path().display())).unwrap();
    let value = value_of(100_000, 3);
    let huge = value_of(2_000_000, 4);
    cache.set(b"big", &value, Ttl::Never).unwrap();
    cache.set(b"huge", &huge, Ttl::Never).unwrap();
    let mut buf = vec![0u8; 3_000_000];
    for _ in 0..2 {
        assert_eq!(
            cache.get_into(b"big", &mut buf).unwrap(),
            Some((100_000, 0))
        );
        assert_eq!(
            cache.get_into(b"huge", &mut buf).unwrap(),
            Some((2_000_000, 0))
        );
    }
    for entry in std::fs::read_dir(dir.path().join("values")).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    assert_eq!(
        cache.get_into(b"big", &mut buf).unwrap(),
        Some((100_000, 0))
    );
    assert!(buf[..100_000] == value[..], "served from the read cache");
    assert!(
        cache.get_into(b"huge", &mut buf).is_err(),
        "too large to cache: read from its file"
    );
}
