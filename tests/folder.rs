//! The key-as-folder persistent cache through the Backend trait.

mod common;

use common::TempDir;
use duckcache::{Backend, ErrorKind, FolderCache, Ttl};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Every name directly in `dir`.
/// The names in `dir`, the store's mark aside.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != duckcache::folder::STORE_MARK)
        .collect();
    v.sort();
    v
}

#[test]
fn get_into_reads_a_value_file_into_the_callers_buffer() {
    let dir = TempDir::new("get-into");
    let c = FolderCache::open(dir.path(), 0).unwrap();
    common::check_get_into_of_a_value_file(&c, || {
        c.entry_path(b"big").unwrap().unwrap().join("value")
    });
}

#[test]
fn every_operation() {
    let dir = TempDir::new("folder-ops");
    let c = FolderCache::open(dir.path(), 0).unwrap();
    assert_eq!(c.max_concurrent_ops(), 128);
    common::check_every_operation(&c);
    assert!(names(dir.path()).is_empty(), "{:?}", names(dir.path()));
}

#[test]
fn entries_are_plain_inspectable_files() {
    let dir = TempDir::new("folder-plain");
    let c = FolderCache::open(dir.path(), 0).unwrap();
    c.set(b"user:42", b"hello", Ttl::Never).unwrap();
    assert_eq!(names(dir.path()), ["user%3A42"]);
    let folder = dir.path().join("user%3A42");
    assert_eq!(std::fs::read(folder.join("value")).unwrap(), b"hello");
    let meta = std::fs::read(folder.join("meta")).unwrap();
    assert!(meta.starts_with(b"duckcache-entry 1\nexpires never\n"));
    assert!(meta.ends_with(b"\n\nuser:42"));
    // Owner-only, like the other persistent kinds.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&folder), 0o700);
    assert_eq!(mode(&folder.join("value")), 0o600);
    // Removing the folder by hand removes the entry.
    std::fs::remove_dir_all(&folder).unwrap();
    assert_eq!(c.get_vec(b"user:42").unwrap(), None);
}

#[test]
fn path_like_and_binary_keys_stay_inside() {
    let outer = TempDir::new("folder-escape");
    let dir = outer.path().join("cache");
    let c = FolderCache::open(&dir, 0).unwrap();
    let long = vec![b'k'; 10 * 1024];
    let keys: Vec<&[u8]> = vec![
        b"../x",
        b"../../etc/passwd",
        b"/etc/passwd",
        b"a/b",
        b".",
        b"..",
        b"",
        b"\0",
        b"a\0b",
        b"\xff\xfe\x80",
        b".tmp-123",
        b"%2E",
        &long,
    ];
    for (i, k) in keys.iter().enumerate() {
        c.set(k, &[i as u8], Ttl::Never).unwrap();
    }
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(c.get_vec(k).unwrap(), Some(vec![i as u8]), "{k:?}");
    }
    assert_eq!(c.len().unwrap(), keys.len() as u64);
    // Nothing was written beside the cache directory, and every entry is one level down.
    assert_eq!(names(outer.path()), ["cache"]);
    for name in names(&dir) {
        assert!(dir.join(&name).join("meta").is_file(), "{name}");
    }
    for k in &keys {
        assert!(c.pop_vec(k).unwrap().is_some(), "{k:?}");
    }
    assert!(names(&dir).is_empty());
}

#[test]
fn planted_symlinks_are_never_followed() {
    let outer = TempDir::new("folder-symlink");
    let dir = outer.path().join("cache");
    let victim = outer.path().join("victim");
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::write(victim.join("value"), b"secret").unwrap();
    std::fs::write(
        victim.join("meta"),
        b"duckcache-entry 1\nexpires never\nvalue-bytes 6\nkey-bytes 1\n\nk",
    )
    .unwrap();
    let c = FolderCache::open(&dir, 0).unwrap();
    // A link where key "k" would live, pointing at a folder outside.
    std::os::unix::fs::symlink(&victim, dir.join("k")).unwrap();
    assert_eq!(c.get_vec(b"k").unwrap(), None);
    assert!(!c.has(b"k").unwrap());
    assert_eq!(c.len().unwrap(), 0);
    // A set replaces the link, not what it points to.
    c.set(b"k", b"mine", Ttl::Never).unwrap();
    assert_eq!(c.get_vec(b"k").unwrap(), Some(b"mine".to_vec()));
    assert_eq!(std::fs::read(victim.join("value")).unwrap(), b"secret");
    // A link inside an entry folder is not followed either.
    std::fs::remove_file(dir.join("k").join("value")).unwrap();
    std::os::unix::fs::symlink(victim.join("value"), dir.join("k").join("value")).unwrap();
    assert_eq!(c.get_vec(b"k").unwrap(), None);
    // Delete and pop remove links as links; clear removes entries only, and a link
    // is none (it may be someone's): left as it is, never followed.
    std::os::unix::fs::symlink(&victim, dir.join("j")).unwrap();
    c.delete(b"j").unwrap();
    std::os::unix::fs::symlink(&victim, dir.join("p")).unwrap();
    assert_eq!(c.pop_vec(b"p").unwrap(), None);
    std::os::unix::fs::symlink(&victim, dir.join("q")).unwrap();
    c.set(b"z", b"1", Ttl::Never).unwrap();
    c.clear().unwrap();
    assert_eq!(names(&dir), ["q"]);
    assert!(std::fs::symlink_metadata(dir.join("q"))
        .unwrap()
        .is_symlink());
    assert_eq!(names(&victim), ["meta", "value"]);
    assert_eq!(std::fs::read(victim.join("value")).unwrap(), b"secret");
}

#[test]
fn ttl_expiry_removes_the_folder_when_read() {
    let dir = TempDir::new("folder-ttl");
    let c = FolderCache::open(dir.path(), 0).unwrap();
    c.set(b"short", b"v", common::short_ttl()).unwrap();
    c.set(b"keep", b"v", Ttl::Never).unwrap();
    c.set(b"keep", b"w", Ttl::After(Duration::ZERO)).unwrap();
    assert_eq!(c.get_vec(b"keep").unwrap(), None);
    assert!(c.has(b"short").unwrap());
    common::outlive_short_ttl();
    assert_eq!(c.len().unwrap(), 0);
    assert_eq!(names(dir.path()), ["short"]);
    assert_eq!(c.get_vec(b"short").unwrap(), None);
    assert!(names(dir.path()).is_empty());
    assert_eq!(c.stats().unwrap().expirations, 2);
}

#[test]
fn damaged_entries_are_corrupt_once_then_absent() {
    let dir = TempDir::new("folder-damaged");
    let c = FolderCache::open(dir.path(), 0).unwrap();
    c.set(b"a", b"hello", Ttl::Never).unwrap();
    c.set(b"b", b"hello", Ttl::Never).unwrap();
    std::fs::write(dir.path().join("a").join("value"), b"hel").unwrap();
    std::fs::write(dir.path().join("b").join("meta"), b"garbage").unwrap();
    for k in [b"a", b"b"] {
        let e = c.get_vec(k).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
        assert_eq!(c.get_vec(k).unwrap(), None);
        c.set(k, b"again", Ttl::Never).unwrap();
        assert_eq!(c.get_vec(k).unwrap(), Some(b"again".to_vec()));
    }
}

#[test]
fn survives_reopen_and_other_handles_see_writes() {
    let dir = TempDir::new("folder-shared");
    let a = FolderCache::open(dir.path(), 0).unwrap();
    let b = FolderCache::open(dir.path(), 0).unwrap();
    a.set(b"k", b"from a", Ttl::Never).unwrap();
    assert_eq!(b.get_vec(b"k").unwrap(), Some(b"from a".to_vec()));
    b.set(b"k", b"from b", Ttl::Never).unwrap();
    assert_eq!(a.get_vec(b"k").unwrap(), Some(b"from b".to_vec()));
    a.delete(b"k").unwrap();
    assert!(!b.has(b"k").unwrap());
    b.set(b"stay", b"1", Ttl::Never).unwrap();
    b.save().unwrap();
    drop((a, b));
    let c = FolderCache::open(dir.path(), 0).unwrap();
    assert_eq!(c.get_vec(b"stay").unwrap(), Some(b"1".to_vec()));
}

#[test]
fn crash_leftovers_are_collected_on_open() {
    let dir = TempDir::new("folder-leftover");
    let c = FolderCache::open(dir.path(), 0).unwrap();
    c.set(b"k", b"v", Ttl::Never).unwrap();
    c.close().unwrap();
    // A working folder of a writer that died long ago, and one of a live writer.
    let old = dir.path().join(".tmp-1-dead");
    std::fs::create_dir(&old).unwrap();
    std::fs::write(old.join("value"), b"partial").unwrap();
    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::open(&old)
        .unwrap()
        .set_modified(hour_ago)
        .unwrap();
    std::fs::create_dir(dir.path().join(".tmp-2-live")).unwrap();
    let c = FolderCache::open(dir.path(), 0).unwrap();
    assert_eq!(names(dir.path()), [".tmp-2-live", "k"]);
    assert_eq!(c.len().unwrap(), 1);
}

#[test]
fn pop_is_exactly_once_and_writers_never_tear_values() {
    let dir = TempDir::new("folder-race");
    let handles: Vec<Arc<FolderCache>> = (0..2)
        .map(|_| Arc::new(FolderCache::open(dir.path(), 2).unwrap()))
        .collect();
    const KEYS: usize = 200;
    for i in 0..KEYS {
        handles[0]
            .set(format!("k{i}").as_bytes(), &[7u8; 100], Ttl::Never)
            .unwrap();
    }
    let (mut threads, popped) = common::spawn_poppers(&handles, KEYS);
    // Meanwhile two writers replace one key with whole values that readers check.
    for t in 0..2u8 {
        let c = handles[t as usize].clone();
        threads.push(std::thread::spawn(move || {
            for round in 0..200u32 {
                let fill = (round as u8).wrapping_add(t);
                c.set(b"hot", &vec![fill; 1000 + round as usize], Ttl::Never)
                    .unwrap();
                if let Some(v) = c.get_vec(b"hot").unwrap() {
                    assert!(v.iter().all(|&b| b == v[0]), "torn value");
                }
            }
        }));
    }
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(popped.load(Ordering::Relaxed), KEYS);
    assert_eq!(handles[1].len().unwrap(), 1);
    assert_eq!(names(dir.path()), ["hot"], "no working folder left behind");
}

#[test]
fn path_that_is_a_file_is_io() {
    let dir = TempDir::new("folder-file");
    std::fs::create_dir_all(dir.path()).unwrap();
    let file = dir.path().join("plain");
    std::fs::write(&file, b"x").unwrap();
    let e = FolderCache::open(&file, 0).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::Io);
}

#[test]
fn closed_cache_refuses_everything() {
    let dir = TempDir::new("folder-closed");
    let c = FolderCache::open(dir.path(), 0).unwrap();
    c.set(b"a", b"1", Ttl::Never).unwrap();
    c.close().unwrap();
    common::assert_refuses_everything_closed(&c);
}

#[test]
fn one_mebibyte_key() {
    let dir = TempDir::new("folder-hugekey");
    common::check_one_mebibyte_key(&FolderCache::open(dir.path(), 0).unwrap());
}

#[test]
fn flags_word() {
    let dir = TempDir::new("folder-flags");
    common::check_flags(
        &|| Box::new(FolderCache::open(dir.path(), 0).unwrap()),
        true,
    );
}

#[test]
fn readers_beside_writers_replacing_every_key_never_find_it_absent() {
    // Keys set once, then only ever replaced by two writers: every get and every key
    // walk must find each of them (a read that lost three races in a row to
    // replacements answered NOT_FOUND; a walk skipped a folder replaced under it).
    let dir = TempDir::new("folder-replacing");
    let c = std::sync::Arc::new(FolderCache::open(dir.path(), 0).unwrap());
    let keys: Vec<Vec<u8>> = (0..4).map(|i| format!("k{i}").into_bytes()).collect();
    for k in &keys {
        c.set(k, b"0", Ttl::Never).unwrap();
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (c, stop, keys) = (c.clone(), stop.clone(), keys.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let k = &keys[(n % 4) as usize];
                    c.set(k, format!("{w}-{n}").as_bytes(), Ttl::Never).unwrap();
                    n += 1;
                }
            })
        })
        .collect();
    let mut absent = 0;
    let mut walks_short = 0;
    for round in 0..20_000 {
        let k = &keys[round % 4];
        if c.get_vec(k).unwrap().is_none() {
            absent += 1;
        }
        if round % 50 == 0 {
            let mut seen = 0;
            c.keys(b"", &mut |_| {
                seen += 1;
                true
            })
            .unwrap();
            if seen != 4 {
                walks_short += 1;
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writers.into_iter().for_each(|t| t.join().unwrap());
    assert_eq!(
        (absent, walks_short),
        (0, 0),
        "gets found a key absent, walks missed keys"
    );
}

/// Runs `child` in a forked child process and returns its exit status (the child only
/// calls the library, which is fork-safe, and exits without unwinding).
fn in_child(child: impl FnOnce() -> bool) -> i32 {
    // SAFETY: fork in a test: the child runs `child` (library calls) and _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let ok = child();
        // SAFETY: ends the child without the parent's destructors.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waits for that child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    status
}

#[test]
fn set_many_stores_nothing_when_a_value_cannot_be_written() {
    // A file size limit (as a full disk) lets the first two values of the batch be
    // written and stops the third: nothing may be stored (two were, set one by one).
    let dir = TempDir::new("folder-batch-fsize");
    let path = dir.path().to_path_buf();
    FolderCache::open(&path, 0)
        .unwrap()
        .set(b"p1", b"before", Ttl::Never)
        .unwrap();
    let status = in_child(|| {
        // SAFETY: plain calls on this process's limits and signal disposition.
        unsafe {
            let limit = libc::rlimit {
                rlim_cur: 2 << 20,
                rlim_max: 2 << 20,
            };
            libc::setrlimit(libc::RLIMIT_FSIZE, &limit);
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        }
        let c = FolderCache::open(&path, 0).unwrap();
        let (small, big) = (vec![1u8; 1 << 20], vec![3u8; 3 << 20]);
        let batch = [
            duckcache::backend::EntryRef {
                key: b"p1",
                value: &small,
                ttl: Ttl::Never,
                flags: 0,
            },
            duckcache::backend::EntryRef {
                key: b"p2",
                value: &small,
                ttl: Ttl::Never,
                flags: 0,
            },
            duckcache::backend::EntryRef {
                key: b"p3",
                value: &big,
                ttl: Ttl::Never,
                flags: 0,
            },
        ];
        c.set_many(&batch)
            .is_err_and(|e| e.kind() == duckcache::ErrorKind::Io)
    });
    assert_eq!(status, 0, "the batch must fail with CACHE_ERR_IO");
    let c = FolderCache::open(&path, 0).unwrap();
    assert_eq!(c.get_vec(b"p1").unwrap().as_deref(), Some(&b"before"[..]));
    assert_eq!(c.get_vec(b"p2").unwrap(), None);
    assert_eq!(c.get_vec(b"p3").unwrap(), None);
    assert!(names(&path)
        .iter()
        .all(|n| !n.starts_with(".tmp-") && !n.starts_with(".batch-")));
}

#[test]
fn a_batch_killed_midway_is_whole_after_the_next_open() {
    // A writer sets batches of 8 keys (every key of batch n holds n) and is killed at a
    // moment of its own; the next open must find the 8 keys from one batch (a batch
    // set one by one was left part-applied in 7-8 of 8 rounds).
    let dir = TempDir::new("folder-batch-kill");
    let path = dir.path().to_path_buf();
    let keys: Vec<Vec<u8>> = (0..8).map(|i| format!("k{i}").into_bytes()).collect();
    for round in 0..8u64 {
        // SAFETY: fork in a test; the child loops on library calls until killed.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let c = FolderCache::open(&path, 0).unwrap();
            let value = |n: u64| {
                let mut v = n.to_le_bytes().to_vec();
                v.resize(64 << 10, 7);
                v
            };
            for n in 1.. {
                let v = value(n);
                let batch: Vec<_> = keys
                    .iter()
                    .map(|k| duckcache::backend::EntryRef {
                        key: k,
                        value: &v,
                        ttl: Ttl::Never,
                        flags: 0,
                    })
                    .collect();
                let _ = c.set_many(&batch);
            }
            unreachable!();
        }
        std::thread::sleep(std::time::Duration::from_millis(20 + round * 13));
        // SAFETY: kills and reaps the child just forked.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        let c = FolderCache::open(&path, 0).unwrap();
        let seen: Vec<Option<u64>> = keys
            .iter()
            .map(|k| {
                c.get_vec(k)
                    .unwrap()
                    .map(|v| u64::from_le_bytes(v[..8].try_into().unwrap()))
            })
            .collect();
        assert!(
            seen.iter().all(|s| *s == seen[0]),
            "round {round}: a part of a batch: {seen:?}"
        );
        c.close().unwrap();
    }
}

#[test]
fn purges_at_once_count_each_expired_entry_once() {
    let dir = TempDir::new("folder-purge-twice");
    let a = std::sync::Arc::new(FolderCache::open(dir.path(), 0).unwrap());
    let b = std::sync::Arc::new(FolderCache::open(dir.path(), 0).unwrap());
    for i in 0..2000 {
        a.set(format!("k{i}").as_bytes(), b"v", common::short_ttl())
            .unwrap();
    }
    common::outlive_short_ttl();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
    let purgers: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .map(|c| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                c.purge_expired().unwrap()
            })
        })
        .collect();
    let total: u64 = purgers.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(
        total, 2000,
        "each expired entry counted by the purge that removed it"
    );
}
