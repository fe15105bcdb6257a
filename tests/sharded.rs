//! The sharded persistent cache through the Backend trait.

mod common;

use common::TempDir;
use duckcache::{Backend, ErrorKind, FileCache, ShardedCache, Ttl, INLINE_MAX};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

fn shard_folders(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("shard-"))
        .collect();
    names.sort();
    names
}

/// Keys held by the store of one shard folder, read directly.
fn keys_in_shard(dir: &Path, name: &str) -> usize {
    let shard = FileCache::open(dir.join(name), 0).unwrap();
    let n = shard.len().unwrap() as usize;
    shard.close().unwrap();
    n
}

#[test]
fn get_into_reads_a_value_file_into_the_callers_buffer() {
    let dir = TempDir::new("get-into");
    let c = ShardedCache::open(dir.path(), 0, 0).unwrap();
    common::check_get_into_of_a_value_file(&c, || common::the_file_ending(dir.path(), ".val"));
}

#[test]
fn every_operation() {
    let dir = TempDir::new("sharded-ops");
    let c = ShardedCache::open(dir.path(), 0, 0).unwrap();
    assert_eq!(c.shard_size_limit(), 1_000_000_000);
    common::check_every_operation(&c);
}

#[test]
fn rolls_over_to_new_shards_in_creation_order() {
    let dir = TempDir::new("sharded-roll");
    let c = ShardedCache::open(dir.path(), 1000, 0).unwrap();
    let value = vec![7u8; 297]; // 300 bytes with a 3-byte key: three fit a shard
    for i in 0..10 {
        c.set(format!("k{i:02}").as_bytes(), &value, Ttl::Never)
            .unwrap();
    }
    assert_eq!(c.shard_count().unwrap(), 4);
    assert_eq!(
        shard_folders(dir.path()),
        [
            "shard-000001",
            "shard-000002",
            "shard-000003",
            "shard-000004"
        ]
    );
    for i in 0..10 {
        assert_eq!(
            c.get_vec(format!("k{i:02}").as_bytes()).unwrap().as_deref(),
            Some(&value[..])
        );
    }
    assert_eq!(c.len().unwrap(), 10);
    assert_eq!(c.stats().unwrap().bytes, 3000);
    // An entry that can never fit a shard is refused and changes nothing.
    let e = c.set(b"big", &[0u8; 1000], Ttl::Never).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TooLarge);
    assert_eq!(c.len().unwrap(), 10);
    c.close().unwrap();
    // Shards and their order survive a restart; sets continue in the newest one.
    let c = ShardedCache::open(dir.path(), 1000, 0).unwrap();
    assert_eq!(c.shard_count().unwrap(), 4);
    c.set(b"k10", &value, Ttl::Never).unwrap();
    c.set(b"k11", &value, Ttl::Never).unwrap();
    assert_eq!(c.shard_count().unwrap(), 4);
    c.set(b"k12", &value, Ttl::Never).unwrap();
    assert_eq!(c.shard_count().unwrap(), 5);
    assert_eq!(c.len().unwrap(), 13);
}

#[test]
fn newest_value_wins_and_older_copies_go() {
    let dir = TempDir::new("sharded-newest");
    let c = ShardedCache::open(dir.path(), 1000, 0).unwrap();
    c.set(b"key", b"old", Ttl::Never).unwrap();
    c.set(b"pad", &[1u8; 990], Ttl::Never).unwrap(); // shard 1 now holds 999 bytes
    c.set(b"key", b"newer value", Ttl::Never).unwrap();
    c.set(b"key", b"newest value", Ttl::Never).unwrap();
    assert_eq!(c.get_vec(b"key").unwrap(), Some(b"newest value".to_vec()));
    assert_eq!(c.shard_count().unwrap(), 2);
    c.close().unwrap();
    assert_eq!(keys_in_shard(dir.path(), "shard-000001"), 1, "only pad");
    assert_eq!(keys_in_shard(dir.path(), "shard-000002"), 1, "only key");
    let c = ShardedCache::open(dir.path(), 1000, 0).unwrap();
    assert_eq!(c.get_vec(b"key").unwrap(), Some(b"newest value".to_vec()));
    // Delete and pop reach the key wherever it is.
    c.delete(b"key").unwrap();
    assert_eq!(c.get_vec(b"key").unwrap(), None);
    assert_eq!(c.pop_vec(b"pad").unwrap(), Some(vec![1u8; 990]));
    assert_eq!(c.len().unwrap(), 0);
}

#[test]
fn lost_index_is_rebuilt_from_the_shards() {
    let dir = TempDir::new("sharded-rebuild");
    {
        let c = ShardedCache::open(dir.path(), 1000, 0).unwrap();
        for i in 0..6 {
            c.set(format!("k{i}").as_bytes(), &[i as u8; 400], Ttl::Never)
                .unwrap();
        }
        c.close().unwrap();
    }
    // Plant an older copy of k5 in the first shard, as a crash could leave.
    let first = FileCache::open(dir.path().join("shard-000001"), 0).unwrap();
    first.set(b"k5", b"stale", Ttl::Never).unwrap();
    first.close().unwrap();
    for f in ["index.db", "index.db-wal", "index.db-shm"] {
        let _ = std::fs::remove_file(dir.path().join(f));
    }
    let c = ShardedCache::open(dir.path(), 1000, 0).unwrap();
    assert_eq!(c.shard_count().unwrap(), 3);
    assert_eq!(c.len().unwrap(), 6);
    for i in 0..6 {
        assert_eq!(
            c.get_vec(format!("k{i}").as_bytes()).unwrap(),
            Some(vec![i as u8; 400])
        );
    }
    c.close().unwrap();
    assert_eq!(
        keys_in_shard(dir.path(), "shard-000001"),
        2,
        "stale k5 removed"
    );
}

#[test]
fn at_most_max_open_shards_are_open() {
    let dir = TempDir::new("sharded-lru");
    let c = ShardedCache::open(dir.path(), 100, 2).unwrap();
    for i in 0..8 {
        c.set(format!("k{i}").as_bytes(), &[i as u8; 90], Ttl::Never)
            .unwrap();
    }
    assert_eq!(c.shard_count().unwrap(), 8);
    let open = c.open_shard_count();
    assert!((1..=2).contains(&open), "{open} open after the sets");
    for round in 0..2 {
        for i in 0..8 {
            assert_eq!(
                c.get_vec(format!("k{i}").as_bytes()).unwrap(),
                Some(vec![i as u8; 90]),
                "round {round}"
            );
            // The shard just read is open, and at most two are.
            let open = c.open_shard_count();
            assert!(
                (1..=2).contains(&open),
                "{open} open, round {round}, key {i}"
            );
        }
    }
    c.clear().unwrap();
    assert!(c.open_shard_count() <= 2);
    assert_eq!(c.len().unwrap(), 0);
}

#[test]
fn ttl_expiry_and_space_reclaimed_before_a_new_shard() {
    let dir = TempDir::new("sharded-ttl");
    let c = ShardedCache::open(dir.path(), 1000, 0).unwrap();
    c.set(b"short", &[0u8; 600], common::short_ttl()).unwrap();
    c.set(b"keep", b"v", Ttl::Never).unwrap();
    c.set(b"gone", b"v", Ttl::After(Duration::ZERO)).unwrap();
    assert!(c.has(b"short").unwrap());
    assert!(!c.has(b"gone").unwrap());
    common::outlive_short_ttl();
    assert_eq!(c.len().unwrap(), 1);
    // The expired 600 bytes are reclaimed instead of starting a second shard.
    c.set(b"next", &[0u8; 600], Ttl::Never).unwrap();
    assert_eq!(c.shard_count().unwrap(), 1);
    assert_eq!(c.get_vec(b"short").unwrap(), None);
    assert_eq!(c.len().unwrap(), 2);
    assert_eq!(c.stats().unwrap().expirations, 1);
}

#[test]
fn large_values_across_shards() {
    let dir = TempDir::new("sharded-large");
    let c = ShardedCache::open(dir.path(), 3 * INLINE_MAX as u64, 0).unwrap();
    let big = |seed: u8| -> Vec<u8> { (0..INLINE_MAX * 2).map(|i| (i as u8) ^ seed).collect() };
    for i in 0..4u8 {
        c.set(&[i], &big(i), Ttl::Never).unwrap();
    }
    c.set(&[0], &big(9), Ttl::Never).unwrap();
    assert_eq!(c.shard_count().unwrap(), 5);
    assert_eq!(c.get_vec(&[0]).unwrap(), Some(big(9)));
    assert_eq!(c.pop_vec(&[3]).unwrap(), Some(big(3)));
    assert_eq!(c.len().unwrap(), 3);
}

#[test]
fn handles_on_one_directory_see_each_other() {
    let dir = TempDir::new("sharded-shared");
    let a = ShardedCache::open(dir.path(), 500, 0).unwrap();
    let b = ShardedCache::open(dir.path(), 500, 0).unwrap();
    a.set(b"k", b"from a", Ttl::Never).unwrap();
    assert_eq!(b.get_vec(b"k").unwrap(), Some(b"from a".to_vec()));
    // A shard created by a is used by b, and b's newer value is what a reads.
    a.set(b"fill", &[0u8; 450], Ttl::Never).unwrap();
    a.set(b"x", &[0u8; 100], Ttl::Never).unwrap();
    assert_eq!(a.shard_count().unwrap(), 2);
    b.set(b"k", b"from b", Ttl::Never).unwrap();
    assert_eq!(b.shard_count().unwrap(), 2);
    assert_eq!(a.get_vec(b"k").unwrap(), Some(b"from b".to_vec()));
    a.delete(b"k").unwrap();
    assert_eq!(b.get_vec(b"k").unwrap(), None);
    assert!(!b.has(b"k").unwrap());
    assert_eq!(b.len().unwrap(), 2);
}

#[test]
fn pop_is_exactly_once_across_handles_and_threads() {
    let dir = TempDir::new("sharded-pop");
    let handles: Vec<Arc<ShardedCache>> = (0..2)
        .map(|_| Arc::new(ShardedCache::open(dir.path(), 2000, 4).unwrap()))
        .collect();
    const KEYS: usize = 200;
    for i in 0..KEYS {
        handles[0]
            .set(format!("k{i}").as_bytes(), &[1u8; 50], Ttl::Never)
            .unwrap();
    }
    let (threads, popped) = common::spawn_poppers(&handles, KEYS);
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(popped.load(Ordering::Relaxed), KEYS);
    assert_eq!(handles[1].len().unwrap(), 0);
}

#[test]
fn path_that_is_a_file_is_io() {
    let dir = TempDir::new("sharded-file");
    std::fs::create_dir_all(dir.path()).unwrap();
    let file = dir.path().join("plain");
    std::fs::write(&file, b"x").unwrap();
    let e = ShardedCache::open(&file, 0, 0).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::Io);
}

#[test]
fn damaged_index_is_corrupt() {
    let dir = TempDir::new("sharded-damaged");
    std::fs::create_dir_all(dir.path()).unwrap();
    std::fs::write(dir.path().join("index.db"), vec![0x5au8; 8192]).unwrap();
    let e = ShardedCache::open(dir.path(), 0, 0).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.message().contains("index.db"), "{e}");
}

#[test]
fn closed_cache_refuses_everything() {
    let dir = TempDir::new("sharded-closed");
    let c = ShardedCache::open(dir.path(), 0, 0).unwrap();
    c.set(b"a", b"1", Ttl::Never).unwrap();
    c.close().unwrap();
    common::assert_refuses_everything_closed(&c);
}

#[test]
fn a_stale_copy_that_cannot_be_removed_does_not_stop_open() {
    let dir = TempDir::new("sharded-stale");
    let c = ShardedCache::open(dir.path(), 0, 0).unwrap();
    c.set(b"k", b"v", Ttl::Never).unwrap();
    c.close().unwrap();
    // What a crash can leave: a superseded copy recorded in a shard that is now damaged
    // (here a plain file where its folder should be).
    let index = rusqlite::Connection::open(dir.path().join("index.db")).unwrap();
    index
        .execute("INSERT INTO stale (shard, key) VALUES (99, x'6b')", [])
        .unwrap();
    drop(index);
    std::fs::write(dir.path().join("shard-000099"), b"not a folder").unwrap();
    let c = ShardedCache::open(dir.path(), 0, 0).unwrap();
    assert_eq!(c.get_vec(b"k").unwrap(), Some(b"v".to_vec()));
    c.set(b"k2", b"v2", Ttl::Never).unwrap();
    c.delete(b"k").unwrap();
    assert_eq!(c.len().unwrap(), 1);
    c.close().unwrap();
}

#[test]
fn one_mebibyte_key() {
    let dir = TempDir::new("sharded-hugekey");
    common::check_one_mebibyte_key(&ShardedCache::open(dir.path(), 0, 0).unwrap());
}

#[test]
fn flags_word() {
    let dir = TempDir::new("sharded-flags");
    common::check_flags(
        &|| Box::new(ShardedCache::open(dir.path(), 0, 0).unwrap()),
        true,
    );
}

/// Bytes of every file under `dir`.
fn disk_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            disk_bytes(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

/// Rewrites of a fixed set of live keys (issue 14): shards emptied by supersession are
/// removed and sparse ones compacted, so the shard count and the disk use follow the
/// live data (100 KB here) instead of the bytes ever written (20 MB).
#[test]
fn rewrites_keep_shards_and_disk_in_proportion_to_live_data() {
    let dir = TempDir::new("sharded-rewrites");
    let limit = 20_000;
    let c = ShardedCache::open(dir.path(), limit, 8).unwrap();
    let value = vec![7u8; 1000];
    let mut seed = 12345u64;
    for i in 0..20_000u64 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        // Skewed: a third of the keys are rewritten far more often than the rest.
        let k = if i % 3 == 0 {
            (seed >> 33) % 100
        } else {
            (seed >> 33) % 33
        };
        c.set_flagged(format!("key-{k}").as_bytes(), &value, Ttl::Never, 0)
            .unwrap();
    }
    c.save().unwrap();
    let live: u64 = c.stats().unwrap().bytes;
    assert!(live <= 101_000, "live bytes {live}");
    let shards = c.shard_count().unwrap();
    // Live data fills 5 shards; at most half of each old shard may be dead.
    assert!(
        shards <= 2 * live.div_ceil(limit) + 2,
        "{shards} shards for {live} live bytes"
    );
    let on_disk = disk_bytes(dir.path());
    // The README's bound while checkpoints keep up (as they do for this one writer):
    // twice the live bytes, plus per shard and for the index a SQLite store's fixed
    // cost, a 4 MB write-ahead log (a background checkpoint every 1000 pages) and a
    // 32 KiB shared-memory file. (A store written without pause may reach 33 MB.)
    let fixed = (shards + 1) * (4 * 1024 * 1024 + 64 * 1024);
    assert!(
        on_disk <= 2 * live + fixed,
        "{on_disk} bytes on disk for {live} live bytes in {shards} shards"
    );
    for k in 0..100 {
        let key = format!("key-{k}");
        assert_eq!(
            common::get_flagged(&c, key.as_bytes()).map(|(v, _)| v),
            Some(value.clone()),
            "{key}"
        );
    }
}

/// An index written by an earlier duckcache (schema version 1: no key count per shard)
/// is upgraded in place, its counts computed from its rows, and empty shards are then
/// found and removed as usual.
#[test]
fn a_version_1_index_is_upgraded_in_place() {
    let dir = TempDir::new("sharded-index-upgrade");
    {
        let c = ShardedCache::open(dir.path(), 1000, 0).unwrap();
        for i in 0..20 {
            c.set_flagged(format!("k{i}").as_bytes(), &[1u8; 300], Ttl::Never, 0)
                .unwrap();
        }
        c.close().unwrap();
    }
    // Make it the index version 1 had: the shards table without `count`, the old
    // triggers, user_version 1.
    let db = rusqlite::Connection::open(dir.path().join("index.db")).unwrap();
    db.execute_batch(
        "DROP TRIGGER keys_added; DROP TRIGGER keys_removed; DROP TRIGGER keys_moved;
         DROP TRIGGER keys_deletion_logged; DROP TRIGGER keys_update_logged;
         DROP TRIGGER changes_trimmed; DROP TABLE changes;
         ALTER TABLE shards DROP COLUMN count;
         CREATE TRIGGER keys_added AFTER INSERT ON keys BEGIN
             UPDATE shards SET size = size + new.size WHERE id = new.shard;
             UPDATE totals SET count = count + 1, size = size + new.size WHERE id = 0;
         END;
         CREATE TRIGGER keys_removed AFTER DELETE ON keys BEGIN
             UPDATE shards SET size = size - old.size WHERE id = old.shard;
             UPDATE totals SET count = count - 1, size = size - old.size WHERE id = 0;
         END;
         CREATE TRIGGER keys_moved AFTER UPDATE ON keys BEGIN
             UPDATE shards SET size = size - old.size WHERE id = old.shard;
             UPDATE shards SET size = size + new.size WHERE id = new.shard;
             UPDATE totals SET size = size - old.size + new.size WHERE id = 0;
         END;
         PRAGMA user_version = 1;",
    )
    .unwrap();
    drop(db);
    let c = ShardedCache::open(dir.path(), 1000, 0).unwrap();
    let db = rusqlite::Connection::open(dir.path().join("index.db")).unwrap();
    let version: i64 = db
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 3);
    let logging: i64 = db
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name LIKE '%_logged'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(logging, 2, "the upgrade adds the change log's triggers");
    let counted: i64 = db
        .query_row("SELECT sum(count) FROM shards", [], |r| r.get(0))
        .unwrap();
    assert_eq!(counted, 20);
    for i in 0..20 {
        assert!(c.has(format!("k{i}").as_bytes()).unwrap());
    }
    let before = c.shard_count().unwrap();
    // Emptying the old shards and writing on: they are removed.
    for i in 0..20 {
        c.delete(format!("k{i}").as_bytes()).unwrap();
    }
    for i in 0..20 {
        c.set_flagged(format!("n{i}").as_bytes(), &[2u8; 300], Ttl::Never, 0)
            .unwrap();
    }
    assert!(
        c.shard_count().unwrap() < before + 7,
        "{before} shards before"
    );
    assert!(shard_folders(dir.path()).len() as u64 == c.shard_count().unwrap());
}

#[test]
fn set_many_is_all_or_nothing() {
    let dir = TempDir::new("set-many");
    let c = ShardedCache::open(dir.path(), 0, 0).unwrap();
    c.set(b"first", b"v", Ttl::Never).unwrap(); // creates shard 1
    let shard = dir.path().join("shard-000001");
    common::check_set_many_all_or_nothing(&c, &shard, &shard.join("cache.db"));
}

#[test]
fn locks_survive_another_handle_and_save() {
    for db in ["index.db", "shard-000001/cache.db"] {
        let dir = TempDir::new("locks");
        let path = dir.path().to_path_buf();
        common::check_locks_survive_another_handle_and_save(
            &|| Box::new(ShardedCache::open(&path, 0, 0).unwrap()),
            &dir.path().join(db),
        );
    }
}

#[test]
fn check_and_repair_beside_a_writer_lose_nothing_and_report_nothing() {
    // Another handle keeps re-setting keys, which moves them between small shards; a
    // check reads the index without the write lock, so a key it saw in one shard may
    // have moved on. Dropping such a row lost keys whose last set was acknowledged.
    let dir = TempDir::new("check-beside-writer");
    let writer = Arc::new(ShardedCache::open(dir.path(), 40_000, 0).unwrap());
    let checker = ShardedCache::open(dir.path(), 40_000, 0).unwrap();
    let value = |i: usize, round: usize| format!("{i}:{round}:{}", "v".repeat(1000)).into_bytes();
    for i in 0..300 {
        writer
            .set(format!("k{i}").as_bytes(), &value(i, 0), Ttl::Never)
            .unwrap();
    }
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let rounds = 4;
    let writing = {
        let (writer, done) = (writer.clone(), done.clone());
        std::thread::spawn(move || {
            for round in 1..=rounds {
                for i in 0..300 {
                    writer
                        .set(format!("k{i}").as_bytes(), &value(i, round), Ttl::Never)
                        .unwrap();
                }
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let mut checks = 0;
    while !done.load(Ordering::SeqCst) {
        let found = checker.check(checks % 2 == 0).unwrap();
        assert!(
            found.is_empty(),
            "check {checks} reported damage during writes: {found:?}"
        );
        checks += 1;
    }
    writing.join().unwrap();
    assert!(checks > 0);
    for i in 0..300 {
        assert_eq!(
            writer.get_vec(format!("k{i}").as_bytes()).unwrap(),
            Some(value(i, rounds)),
            "k{i} lost after {checks} checks"
        );
    }
}
