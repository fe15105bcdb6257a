//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

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
