//! Value files: values of [`INLINE_MAX`] bytes and more live in their own files under
//! `<dir>/values/`, created owner-only, never overwritten, and named uniquely across
//! processes so a name is never reused while a row or an orphan record may mention it.
//!
//! Every call goes through the descriptor of `values/` opened once without following a
//! link, and opens files with `O_NOFOLLOW | O_NONBLOCK`: a link planted as `values` or
//! as a value file is never followed (nothing outside the store is read, written or
//! removed), and a FIFO in a value file's place is refused instead of blocking.

use crate::disk;
use crate::error::{Error, ErrorKind, Result};
use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};
use rustix::io::Errno;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Values this size or larger go to their own file (diskcache's threshold).
pub const INLINE_MAX: usize = 32 * 1024;

/// The open `values/` directory of a store.
pub(crate) struct Values {
    fd: OwnedFd,
    path: PathBuf,
}

/// A value file name no other writer, in this or another process, will ever pick.
pub(crate) fn new_name() -> String {
    format!("{}.val", disk::unique_name())
}

impl Values {
    /// Opens (creating owner-only when missing) `<dir>/values`; a link or anything but a
    /// directory there is refused.
    pub fn open(dir: &Path) -> Result<Values> {
        let path = dir.join("values");
        match rfs::mkdir(&path, Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(Error::io(e.into(), "cannot create directory", &path)),
        }
        let fd = rfs::open(&path, disk::DIR_FLAGS, Mode::empty()).map_err(|e| {
            let why = if e == Errno::LOOP || e == Errno::NOTDIR {
                "is not a directory (a link or a file stands there):"
            } else {
                "cannot open"
            };
            Error::io(e.into(), why, &path)
        })?;
        Ok(Values { fd, path })
    }

    fn path_of(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes a new value file completely (not synced: `sync` does that on save).
    pub fn write(&self, name: &str, value: &[u8]) -> Result<()> {
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let written = rfs::openat(&self.fd, name, flags, Mode::from_raw_mode(0o600))
            .map_err(std::io::Error::from)
            .and_then(|fd| File::from(fd).write_all(value));
        written.map_err(|e| {
            self.remove(name);
            Error::io(e, "cannot write value file", &self.path_of(name))
        })
    }

    /// Reads a value file that must hold exactly `expected_len` bytes. `Ok(None)` when
    /// the file does not exist (a concurrent writer may have just replaced it); a file
    /// of the wrong length, or not a regular file, is damage.
    pub fn read(&self, name: &str, expected_len: u64) -> Result<Option<Vec<u8>>> {
        disk::read_regular_at(
            self.fd.as_fd(),
            name,
            Some(expected_len),
            &self.path_of(name),
        )
    }

    /// The value file `name`, recorded as `len` bytes long, to hand to a
    /// [`Sink`](crate::sink::Sink) unread.
    pub fn file<'a>(&'a self, name: &'a str, len: u64) -> disk::SizedFile<'a> {
        disk::SizedFile {
            dir: self.fd.as_fd(),
            name,
            len,
            path: self.path_of(name),
        }
    }

    /// Removes a value file (or whatever stands at its name); one already gone is fine.
    pub fn remove(&self, name: &str) {
        let _ = rfs::unlinkat(&self.fd, name, AtFlags::empty());
    }

    /// Flushes the named files (those still present) and the values directory to disk.
    pub fn sync(&self, names: &[String]) -> Result<()> {
        disk::sync_files_and_dir(self.fd.as_fd(), names, &self.path)
    }

    /// Names of every file in the values directory (for a full cleanup pass).
    pub fn list(&self) -> Result<Vec<String>> {
        disk::list_at(self.fd.as_fd(), &self.path)
    }

    /// Reads a value file that a row names; its absence is damage.
    pub fn read_required(&self, name: &str, len: u64) -> Result<Vec<u8>> {
        self.read(name, len)?.ok_or_else(|| {
            Error::new(
                ErrorKind::Corrupt,
                format!("value file {name} named by the store is missing"),
            )
        })
    }
}
