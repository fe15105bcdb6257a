//! Small filesystem helpers every persistent backend shares.

use crate::error::{Error, ErrorKind, Result};
use crate::sink::ValueFile;
use rustix::fs::{self as rfs, Mode, OFlags};
use rustix::io::Errno;
use std::fs::{self, File};
use std::io::ErrorKind as IoKind;
use std::io::Read;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A name part no other writer, in this or another process, will ever pick: the time in
/// nanoseconds, the process id and a per-process counter. Value files and working
/// folders add their own prefix or suffix.
pub fn unique_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{SystemTime, UNIX_EPOCH};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{nanos:016x}-{:08x}-{n:x}", std::process::id())
}

/// A file's identity: device and inode (a file replaced at the same path has another).
pub(crate) type FileId = (u64, u64);

/// The identity of the file at `path` (None when there is none to stat).
pub(crate) fn file_id(path: &Path) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Creates `path` and its parents owner-only; a path that exists and is not a directory
/// is an I/O error naming it.
pub fn create_dir(path: &Path) -> Result<()> {
    if path.exists() && !path.is_dir() {
        return Err(Error::new(
            ErrorKind::Io,
            format!("{} exists and is not a directory", path.display()),
        ));
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| Error::io(e, "cannot create directory", path))
}

/// Creates `path` owner-only when it does not exist, and otherwise only checks (by its
/// name, opening nothing) that it is a regular file: no symbolic link, FIFO or device.
///
/// An existing file is never opened here: closing a descriptor of a database file that a
/// connection of this process holds would drop that connection's POSIX locks (see
/// `sqlite::files`). A file created here is new, so no connection can hold it yet.
pub fn create_regular_file(path: &Path) -> Result<()> {
    let created = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path);
    match created {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == IoKind::AlreadyExists => refuse_non_regular(path),
        Err(e) => Err(Error::io(e, "cannot create", path)),
    }
}

/// A file that exists at `path` must be a regular file (a missing one is fine).
pub fn refuse_non_regular(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) => check_regular(&meta, path, ErrorKind::Io),
        Err(e) if e.kind() == IoKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(e, "cannot stat", path)),
    }
}

/// Anything but a regular file at `path` is an error of `kind` (`Io` where the store's
/// own files are concerned, `Corrupt` for an entry's data).
fn check_regular(meta: &fs::Metadata, path: &Path, kind: ErrorKind) -> Result<()> {
    if meta.file_type().is_file() {
        return Ok(());
    }
    Err(Error::new(
        kind,
        format!("{} is not a regular file", path.display()),
    ))
}

/// Flags for opening a directory relative to another without following a link.
pub(crate) const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Opens the file `name` in the directory `dir` for reading: never through a symbolic
/// link, never blocking on a FIFO, and only if it is a regular file. `Ok(None)` when
/// there is no such file (or a link or a folder stands in its place); `path` names it in
/// errors.
pub(crate) fn open_regular_at(dir: BorrowedFd, name: &str, path: &Path) -> Result<Option<File>> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = match rfs::openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT | Errno::LOOP | Errno::NOTDIR) => return Ok(None),
        Err(e) => return Err(Error::io(e.into(), "cannot open", path)),
    };
    let file = File::from(fd);
    let meta = file
        .metadata()
        .map_err(|e| Error::io(e, "cannot stat", path))?;
    check_regular(&meta, path, ErrorKind::Corrupt)?;
    Ok(Some(file))
}

/// Reads the regular file `name` in `dir` whole (see [`open_regular_at`]). When
/// `expected_len` is given the file must hold exactly that many bytes, or it is damage
/// (`Corrupt`). `Ok(None)` when the file is absent.
pub(crate) fn read_regular_at(
    dir: BorrowedFd,
    name: &str,
    expected_len: Option<u64>,
    path: &Path,
) -> Result<Option<Vec<u8>>> {
    let Some((mut f, len)) = open_sized_at(dir, name, expected_len, path)? else {
        return Ok(None);
    };
    let mut buf = Vec::new();
    buf.try_reserve_exact(len as usize)
        .map_err(|_| Error::no_memory(len as usize))?;
    f.read_to_end(&mut buf)
        .map_err(|e| Error::io(e, "cannot read", path))?;
    if expected_len.is_some_and(|want| want != buf.len() as u64) {
        return Err(wrong_len(
            path,
            buf.len() as u64,
            "changed while read to",
            len,
        ));
    }
    Ok(Some(buf))
}

/// Reads the regular file `name` in `dir`, which must hold exactly `dest.len()` bytes
/// (or it is damage), straight into `dest`. `Ok(false)` when the file is absent.
pub(crate) fn read_regular_into(
    dir: BorrowedFd,
    name: &str,
    dest: &mut [u8],
    path: &Path,
) -> Result<bool> {
    let dest_len = dest.len();
    let want = dest_len as u64;
    let Some((mut f, _)) = open_sized_at(dir, name, Some(want), path)? else {
        return Ok(false);
    };
    let mut read = 0;
    loop {
        // One byte past the end is asked for too, to see a file that grew meanwhile.
        let mut past_end = [0u8; 1];
        let into: &mut [u8] = match dest.get_mut(read..) {
            Some(rest) if !rest.is_empty() => rest,
            _ => &mut past_end,
        };
        match f.read(into) {
            Ok(0) => break,
            Ok(n) if read + n > dest_len => {
                read += n;
                break;
            }
            Ok(n) => read += n,
            Err(e) if e.kind() == IoKind::Interrupted => continue,
            Err(e) => return Err(Error::io(e, "cannot read", path)),
        }
    }
    if read as u64 != want {
        return Err(wrong_len(path, read as u64, "changed while read to", want));
    }
    Ok(true)
}

/// A regular file of a length a store recorded, in a directory, not yet read: a value
/// file handed to a [`Sink`](crate::sink::Sink).
pub(crate) struct SizedFile<'a> {
    pub dir: BorrowedFd<'a>,
    pub name: &'a str,
    pub len: u64,
    /// Its path, for messages.
    pub path: PathBuf,
}

impl ValueFile for SizedFile<'_> {
    fn size(&self) -> usize {
        self.len as usize
    }

    fn read_into(&mut self, dest: &mut [u8]) -> Result<bool> {
        read_regular_into(self.dir, self.name, dest, &self.path)
    }

    fn read(&mut self) -> Result<Option<Vec<u8>>> {
        read_regular_at(self.dir, self.name, Some(self.len), &self.path)
    }
}

/// Opens the regular file `name` in `dir` with its length, which must be
/// `expected_len` when that is given.
fn open_sized_at(
    dir: BorrowedFd,
    name: &str,
    expected_len: Option<u64>,
    path: &Path,
) -> Result<Option<(File, u64)>> {
    let Some(f) = open_regular_at(dir, name, path)? else {
        return Ok(None);
    };
    let len = f
        .metadata()
        .map_err(|e| Error::io(e, "cannot stat", path))?
        .len();
    match expected_len {
        Some(want) if want != len => Err(wrong_len(path, len, "holds", want)),
        _ => Ok(Some((f, len))),
    }
}

/// The damage of a file that holds `found` bytes where `expected` were recorded.
fn wrong_len(path: &Path, found: u64, what: &str, expected: u64) -> Error {
    Error::new(
        ErrorKind::Corrupt,
        format!(
            "{} {what} {found} bytes, {expected} expected",
            path.display()
        ),
    )
}

/// Names in the directory `dir` (`.` and `..` left out, names that are not UTF-8
/// skipped); `path` names it in errors.
pub(crate) fn list_at(dir: BorrowedFd, path: &Path) -> Result<Vec<String>> {
    let entries = rfs::Dir::read_from(dir).map_err(|e| Error::io(e.into(), "cannot list", path))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(e.into(), "cannot list", path))?;
        if let Ok(name) = entry.file_name().to_str() {
            if name != "." && name != ".." {
                names.push(name.to_owned());
            }
        }
    }
    Ok(names)
}

/// fsync of the file `name` in `dir` (a missing one is fine), opened as
/// [`open_regular_at`] opens it.
pub(crate) fn sync_at(dir: BorrowedFd, name: &str, path: &Path) -> Result<()> {
    match open_regular_at(dir, name, path)? {
        Some(f) => f.sync_all().map_err(|e| Error::io(e, "cannot sync", path)),
        None => Ok(()),
    }
}

/// fsync of the files `names` in the directory `dir` at `dir_path` (missing ones are
/// fine), then of the directory itself, so the files and their names are durable.
pub(crate) fn sync_files_and_dir<S: AsRef<str>>(
    dir: BorrowedFd,
    names: &[S],
    dir_path: &Path,
) -> Result<()> {
    for name in names {
        let name = name.as_ref();
        sync_at(dir, name, &dir_path.join(name))?;
    }
    rfs::fsync(dir).map_err(|e| Error::io(e.into(), "cannot sync", dir_path))
}
