//! Helpers shared by the integration tests.
#![allow(dead_code)]

use duckcache::{Backend, Ttl};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How long a "short" TTL lasts: long enough that a check made right after the set still
/// sees the entry on a loaded machine, short enough to wait out. No test depends on a
/// sleep being exact to tens of milliseconds.
pub const SHORT_TTL: Duration = Duration::from_millis(500);

/// A TTL of [`SHORT_TTL`].
pub fn short_ttl() -> Ttl {
    Ttl::After(SHORT_TTL)
}

/// Sleeps until every entry set with [`short_ttl`] before the call has expired.
pub fn outlive_short_ttl() {
    std::thread::sleep(SHORT_TTL + Duration::from_millis(250));
}

/// `len` bytes of a pattern that differs with `seed`.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// The value under the text key `key`, unwrapped.
pub fn get(c: &dyn Backend, key: &str) -> Option<Vec<u8>> {
    c.get_vec(key.as_bytes()).unwrap()
}

/// Sets text `key` to text `value` without a TTL, unwrapped.
pub fn set(c: &dyn Backend, key: &str, value: &str) {
    c.set(key.as_bytes(), value.as_bytes(), Ttl::Never).unwrap();
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "duckcache-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Number of files in `<dir>/values`.
pub fn value_files(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("values")).map_or(0, |d| d.count())
}

/// The first file in `<dir>/values`.
pub fn first_value_file(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir.join("values"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
}

/// Every operation of a closed cache fails with `Closed`.
pub fn assert_refuses_everything_closed(c: &dyn duckcache::Backend) {
    use duckcache::{ErrorKind, Ttl};
    let closed = |what: &str, r: Result<(), duckcache::Error>| {
        assert_eq!(
            r.map_err(|e| e.kind()),
            Err(ErrorKind::Closed),
            "{what} after close"
        )
    };
    closed("set", c.set(b"a", b"1", Ttl::Never));
    closed(
        "large set",
        c.set(b"a", &vec![0u8; duckcache::INLINE_MAX], Ttl::Never),
    );
    closed("get", c.get_vec(b"a").map(|_| ()));
    closed("pop", c.pop_vec(b"a").map(|_| ()));
    closed("has", c.has(b"a").map(|_| ()));
    closed("delete", c.delete(b"a"));
    closed("clear", c.clear());
    closed("len", c.len().map(|_| ()));
    closed("stats", c.stats().map(|_| ()));
    closed("save", c.save());
}

/// Every operation of a cache, from empty, with the stats they must leave. Shared by the
/// backend tests so each kind is held to the same behaviour.
pub fn check_every_operation(c: &dyn duckcache::Backend) {
    use duckcache::Ttl;
    assert_eq!(c.get_vec(b"a").unwrap(), None);
    c.set(b"a", b"1", Ttl::Never).unwrap();
    c.set(b"a", b"22", Ttl::Never).unwrap();
    c.set(b"", b"", Ttl::Never).unwrap();
    c.set(b"\0\xff", b"\0", Ttl::Never).unwrap();
    assert_eq!(c.get_vec(b"a").unwrap(), Some(b"22".to_vec()));
    assert_eq!(c.get_vec(b"").unwrap(), Some(vec![]));
    assert_eq!(c.get_vec(b"\0\xff").unwrap(), Some(vec![0]));
    assert!(c.has(b"a").unwrap());
    assert!(!c.has(b"b").unwrap());
    assert_eq!(c.len().unwrap(), 3);
    assert_eq!(c.stats().unwrap().bytes, 3 + 2 + 1);
    assert_eq!(c.pop_vec(b"a").unwrap(), Some(b"22".to_vec()));
    assert_eq!(c.pop_vec(b"a").unwrap(), None);
    c.delete(b"").unwrap();
    c.delete(b"").unwrap();
    assert_eq!(c.len().unwrap(), 1);
    c.clear().unwrap();
    assert_eq!(c.len().unwrap(), 0);
    let s = c.stats().unwrap();
    assert_eq!(
        (s.sets, s.hits, s.misses, s.deletes, s.entries, s.bytes),
        (4, 5, 3, 3, 0, 0)
    );
    c.save().unwrap();
    c.close().unwrap();
    c.close().unwrap();
}

/// A 1 MiB key: stored, read, told apart from its prefix, popped.
pub fn check_one_mebibyte_key(c: &dyn duckcache::Backend) {
    use duckcache::Ttl;
    let key: Vec<u8> = (0..1usize << 20)
        .map(|i| (i as u8).wrapping_mul(31))
        .collect();
    c.set(&key, b"v", Ttl::Never).unwrap();
    assert_eq!(c.get_vec(&key).unwrap(), Some(b"v".to_vec()));
    assert!(!c.has(&key[..key.len() - 1]).unwrap());
    assert_eq!(c.pop_vec(&key).unwrap(), Some(b"v".to_vec()));
    assert_eq!(c.len().unwrap(), 0);
}

/// `get_flagged` returning an owned copy and the flags.
pub fn get_flagged(c: &dyn duckcache::Backend, key: &[u8]) -> Option<(Vec<u8>, u32)> {
    let mut out = None;
    c.get_flagged(key, &mut |v, f| out = Some((v.to_vec(), f)))
        .unwrap()
        .then(|| out.unwrap())
}

/// The flags word: stored with the entry, replaced by a later set (a plain set stores
/// 0), returned by get and pop, and, for the persistent kinds (`persistent`), still there
/// in a fresh handle from `open`. Inline and large (file-held) values alike.
pub fn check_flags(open: &dyn Fn() -> Box<dyn duckcache::Backend>, persistent: bool) {
    use duckcache::Ttl;
    let big = vec![7u8; 40 << 10];
    let c = open();
    c.set_flagged(b"small", b"v", Ttl::Never, 1).unwrap();
    c.set_flagged(b"big", &big, Ttl::Never, u32::MAX).unwrap();
    c.set_flagged(b"plain", b"p", Ttl::Never, 9).unwrap();
    c.set(b"plain", b"p", Ttl::Never).unwrap();
    assert_eq!(get_flagged(&*c, b"small"), Some((b"v".to_vec(), 1)));
    assert_eq!(get_flagged(&*c, b"plain"), Some((b"p".to_vec(), 0)));
    assert_eq!(get_flagged(&*c, b"absent"), None);
    if persistent {
        c.close().unwrap();
        drop(c);
        let c = open();
        assert_eq!(get_flagged(&*c, b"big"), Some((big.clone(), u32::MAX)));
        check_pop_flagged(&*c, &big);
    } else {
        check_pop_flagged(&*c, &big);
    }
}

fn check_pop_flagged(c: &dyn duckcache::Backend, big: &[u8]) {
    let mut popped = None;
    assert!(c
        .pop_flagged(b"big", &mut |v, f| popped = Some((v.to_vec(), f)))
        .unwrap());
    assert_eq!(popped, Some((big.to_vec(), u32::MAX)));
    c.set_flagged(b"small", b"w", duckcache::Ttl::Never, 2)
        .unwrap();
    assert_eq!(get_flagged(c, b"small"), Some((b"w".to_vec(), 2)));
    assert!(!c
        .pop_flagged(b"big", &mut |_, _| panic!("popped twice"))
        .unwrap());
}

/// Four threads, two on each of `handles`, each popping keys `k0..k{keys}`. Returns the
/// threads and the count of successful pops: `keys` once they have all finished when
/// pop is exactly-once.
pub fn spawn_poppers<B: duckcache::Backend + 'static>(
    handles: &[std::sync::Arc<B>],
    keys: usize,
) -> (
    Vec<std::thread::JoinHandle<()>>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let popped = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let threads = (0..4)
        .map(|t| {
            let c = handles[t % handles.len()].clone();
            let popped = popped.clone();
            std::thread::spawn(move || {
                for i in 0..keys {
                    if c.pop_vec(format!("k{i}").as_bytes()).unwrap().is_some() {
                        popped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    (threads, popped)
}

/// set_many is all or nothing: a failure injected halfway (a trigger added to the SQLite
/// file `db` refuses the entry "half-500") leaves every key as it was, and leaves no
/// value file behind; without the trigger the same call stores everything.
pub fn check_set_many_all_or_nothing(c: &dyn duckcache::Backend, dir: &Path, db: &Path) {
    use duckcache::backend::EntryRef;
    c.set(b"half-0", b"before", Ttl::Never).unwrap();
    let files_before = value_files(dir);
    let keys: Vec<Vec<u8>> = (0..1000)
        .map(|i| format!("half-{i}").into_bytes())
        .collect();
    // Every 100th value is large enough for a value file of its own.
    let values: Vec<Vec<u8>> = (0..1000)
        .map(|i| {
            pattern(
                if i % 100 == 7 {
                    duckcache::INLINE_MAX + 1
                } else {
                    100
                },
                i as u8,
            )
        })
        .collect();
    let entries: Vec<EntryRef> = keys
        .iter()
        .zip(&values)
        .map(|(key, value)| EntryRef {
            key,
            value,
            ttl: Ttl::Never,
            flags: 0,
        })
        .collect();
    let trigger = rusqlite::Connection::open(db).unwrap();
    trigger
        .execute_batch(
            "CREATE TRIGGER fail_halfway BEFORE INSERT ON entries WHEN new.key = CAST('half-500' AS BLOB)
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
        )
        .unwrap();
    let e = c.set_many(&entries).unwrap_err();
    assert!(e.message().contains("injected failure"), "{e:?}");
    assert_eq!(c.get_vec(b"half-0").unwrap(), Some(b"before".to_vec()));
    for key in &keys[1..] {
        assert!(!c.has(key).unwrap(), "{}", String::from_utf8_lossy(key));
    }
    assert_eq!(value_files(dir), files_before, "value files left behind");
    trigger.execute_batch("DROP TRIGGER fail_halfway").unwrap();
    c.set_many(&entries).unwrap();
    for (key, value) in keys.iter().zip(&values) {
        assert_eq!(c.get_vec(key).unwrap().as_ref(), Some(value));
    }
}

/// Opens and closes the SQLite database `db` with an ordinary client in another process
/// (Python's sqlite3), as an operator's `sqlite3 cache.db 'select ...'` would. The last
/// connection to close deletes the WAL and `-shm`, unless another process still holds
/// them: SQLite tells by the POSIX locks those hold.
pub fn visit_with_ordinary_client(db: &Path) {
    let status = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys\n\
             c = sqlite3.connect(sys.argv[1])\n\
             c.execute('select count(*) from sqlite_master').fetchall()\n\
             c.close()",
        ])
        .arg(db)
        .status()
        .expect("python3 runs");
    assert!(status.success());
}

/// Process A's locks on `db` outlive a second handle's close and a save: after both, an
/// ordinary client in another process must find A still there and leave the WAL in
/// place, and A's next write must reach other processes. `open` opens the store whose
/// database (or one of them) is `db`. Closing any descriptor of a file drops every POSIX
/// lock the process holds on it, so a second descriptor opened and closed beside A's
/// connection (to create or sync the file) unlocked A.
pub fn check_locks_survive_another_handle_and_save(open: &dyn Fn() -> Box<dyn Backend>, db: &Path) {
    let a = open();
    set(&*a, "k", "v0");
    drop(open());
    a.save().unwrap();
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    assert!(wal.exists(), "{} missing before the visit", wal.display());
    visit_with_ordinary_client(db);
    assert!(
        wal.exists(),
        "an ordinary client deleted {} under a live handle: its locks were dropped",
        wal.display()
    );
    set(&*a, "k", "v1");
    assert_eq!(get(&*a, "k").as_deref(), Some(&b"v1"[..]));
}

/// A bulk set the cache cannot hold all at once is refused whole (TooLarge, nothing
/// stored), where it used to return OK with its earlier entries evicted by its later
/// ones; `bound` entries of `each` bytes (key and value) still fit, one more does not.
pub fn check_a_batch_that_cannot_fit_is_refused(c: &dyn Backend, bound: usize, each: usize) {
    use duckcache::backend::EntryRef;
    let keys: Vec<Vec<u8>> = (0..=bound)
        .map(|i| format!("b{i:05}").into_bytes())
        .collect();
    let value = vec![7u8; each - keys[0].len()];
    let entries = |n: usize| -> Vec<EntryRef> {
        keys[..n]
            .iter()
            .map(|k| EntryRef {
                key: k,
                value: &value,
                ttl: Ttl::Never,
                flags: 0,
            })
            .collect()
    };
    let e = c.set_many(&entries(bound + 1)).unwrap_err();
    assert_eq!(e.kind(), duckcache::ErrorKind::TooLarge, "{e:?}");
    assert!(keys.iter().all(|k| !c.has(k).unwrap()), "nothing stored");
    // The same key twice counts once (the last wins); a batch that fits is stored whole.
    let mut fits = entries(bound);
    fits.push(EntryRef {
        key: &keys[0],
        value: &value,
        ttl: Ttl::Never,
        flags: 0,
    });
    c.set_many(&fits).unwrap();
    assert!(
        keys[..bound].iter().all(|k| c.has(k).unwrap()),
        "all of a batch that fits"
    );
}

/// A value kept in a file, read by `get_into` (issue 30 item 17: straight into the
/// caller's buffer): whole into a buffer that fits, its size alone into one that does
/// not, and a value file that no longer holds the size recorded is damage once, then
/// the key is absent. `value_file` finds the file of the one large value stored.
pub fn check_get_into_of_a_value_file(
    c: &dyn duckcache::Backend,
    value_file: impl Fn() -> PathBuf,
) {
    use duckcache::{ErrorKind, Ttl};
    let value = pattern(200_000, 7);
    c.set_flagged(b"big", &value, Ttl::Never, 9).unwrap();
    let mut buf = vec![0u8; 300_000];
    assert_eq!(c.get_into(b"big", &mut buf).unwrap(), Some((200_000, 9)));
    assert!(buf[..200_000] == value[..], "the bytes read");
    let mut small = vec![0u8; 1000];
    assert_eq!(c.get_into(b"big", &mut small).unwrap(), Some((200_000, 9)));
    assert!(
        small.iter().all(|&b| b == 0),
        "nothing copied into a small buffer"
    );
    let mut exact = vec![0u8; 200_000];
    assert_eq!(c.get_into(b"big", &mut exact).unwrap(), Some((200_000, 9)));
    assert!(exact == value);
    // The file grown by a byte: damage, though the buffer had room for more.
    let file = value_file();
    let mut longer = value.clone();
    longer.push(0);
    std::fs::write(&file, &longer).unwrap();
    let err = c.get_into(b"big", &mut buf).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert_eq!(c.get_into(b"big", &mut buf).unwrap(), None);
}

/// The one file under `dir` (searched through every folder) whose name ends with
/// `suffix`.
pub fn the_file_ending(dir: &Path, suffix: &str) -> PathBuf {
    let mut found = Vec::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else if path.to_string_lossy().ends_with(suffix) {
                found.push(path);
            }
        }
    }
    assert_eq!(found.len(), 1, "files ending {suffix}: {found:?}");
    found.remove(0)
}
