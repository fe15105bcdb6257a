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
