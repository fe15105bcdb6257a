//! Value files: values of [`INLINE_MAX`] bytes and more live in their own files under
//! `<dir>/values/`, created owner-only, never overwritten, and named uniquely across
//! processes so a name is never reused while a row or an orphan record may mention it.

use crate::disk;
use crate::error::{Error, ErrorKind, Result};
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind as IoKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Values this size or larger go to their own file (diskcache's threshold).
pub const INLINE_MAX: usize = 32 * 1024;

pub(crate) fn values_dir(dir: &Path) -> PathBuf {
    dir.join("values")
}

/// A name no other writer, in this or another process, will ever pick.
pub(crate) fn new_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:016x}-{:08x}-{:x}.val", nanos, std::process::id(), n)
}

/// Writes a new value file completely (not synced: `sync` does that on save).
pub(crate) fn write(dir: &Path, name: &str, value: &[u8]) -> Result<()> {
    let path = values_dir(dir).join(name);
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        f.write_all(value)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&path);
        Error::io(e, "cannot write value file", &path)
    })
}

/// Reads a value file that must hold exactly `expected_len` bytes. `Ok(None)` when the
/// file does not exist (a concurrent writer may have just replaced it); a file of the
/// wrong length is damage.
pub(crate) fn read(dir: &Path, name: &str, expected_len: u64) -> Result<Option<Vec<u8>>> {
    let path = values_dir(dir).join(name);
    let mut f = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == IoKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(e, "cannot open value file", &path)),
    };
    let len = f
        .metadata()
        .map_err(|e| Error::io(e, "cannot stat value file", &path))?
        .len();
    if len != expected_len {
        return Err(Error::new(
            ErrorKind::Corrupt,
            format!(
                "value file {} holds {len} bytes, the store expects {expected_len}",
                path.display()
            ),
        ));
    }
    let mut buf = Vec::new();
    buf.try_reserve_exact(len as usize)
        .map_err(|_| Error::no_memory(len as usize))?;
    f.read_to_end(&mut buf)
        .map_err(|e| Error::io(e, "cannot read value file", &path))?;
    if buf.len() as u64 != expected_len {
        return Err(Error::new(
            ErrorKind::Corrupt,
            format!("value file {} changed while read", path.display()),
        ));
    }
    Ok(Some(buf))
}

/// Removes a value file; one already gone is fine.
pub(crate) fn remove(dir: &Path, name: &str) {
    let _ = fs::remove_file(values_dir(dir).join(name));
}

/// Flushes the named files (those still present) and the values directory to disk.
pub(crate) fn sync(dir: &Path, names: &[String]) -> Result<()> {
    for name in names {
        let path = values_dir(dir).join(name);
        match File::open(&path) {
            Ok(f) => f
                .sync_all()
                .map_err(|e| Error::io(e, "cannot sync value file", &path))?,
            Err(e) if e.kind() == IoKind::NotFound => {}
            Err(e) => return Err(Error::io(e, "cannot open value file", &path)),
        }
    }
    disk::sync_path(&values_dir(dir))
}

/// Names of every file in the values directory (for a full cleanup pass).
pub(crate) fn list(dir: &Path) -> Result<Vec<String>> {
    let vdir = values_dir(dir);
    let entries = fs::read_dir(&vdir).map_err(|e| Error::io(e, "cannot list", &vdir))?;
    Ok(entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect())
}
