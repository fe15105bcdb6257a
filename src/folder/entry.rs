//! One entry on disk, and every filesystem call the folder cache makes.
//!
//! An entry is a folder holding two plain files:
//! - `value`: the value, byte for byte;
//! - `meta`: a short text header, then the full key:
//!   ```text
//!   duckcache-entry 1
//!   expires never            (or Unix seconds, e.g. "expires 1764000000.25")
//!   value-bytes 5
//!   key-bytes 3
//!   flags 0                  (the caller's flags word; absent in early entries: 0)
//!
//!   <the key's bytes>
//!   ```
//!
//! Every call works relative to the cache directory's descriptor and opens with
//! `O_NOFOLLOW`, so a symbolic link planted in the directory, or in an entry folder, is
//! never followed: it reads as no entry and is replaced or removed as a link. Entries
//! are written whole into a fresh `.tmp-*` folder and then renamed into place (an
//! atomic exchange when one exists), so no reader ever sees a partial entry.

use crate::error::{Error, ErrorKind, Result};
use crate::sync::Mutex;
use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, RenameFlags};
use rustix::io::Errno;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Prefix of the library's own working folders (entries being written or removed). No
/// encoded key starts with `.`.
pub const TMP_PREFIX: &str = ".tmp-";

const MAGIC: &str = "duckcache-entry 1";

/// A stored entry's metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Meta {
    pub key: Vec<u8>,
    pub value_len: u64,
    /// Unix time the entry dies at; None = never.
    pub expires: Option<f64>,
    /// The caller's flags word, returned untouched.
    pub flags: u32,
}

impl Meta {
    pub fn is_expired_at(&self, now: f64) -> bool {
        crate::ttl::expired(self.expires, now)
    }

    fn encode(&self) -> Vec<u8> {
        let expires = match self.expires {
            None => "never".to_owned(),
            Some(t) => format!("{t}"),
        };
        let mut out = format!(
            "{MAGIC}\nexpires {expires}\nvalue-bytes {}\nkey-bytes {}\nflags {}\n\n",
            self.value_len,
            self.key.len(),
            self.flags
        )
        .into_bytes();
        out.extend_from_slice(&self.key);
        out
    }

    fn parse(bytes: &[u8]) -> Option<Meta> {
        let split = bytes.windows(2).position(|w| w == b"\n\n")?;
        let header = std::str::from_utf8(&bytes[..split]).ok()?;
        let key = &bytes[split + 2..];
        let mut lines = header.lines();
        if lines.next()? != MAGIC {
            return None;
        }
        let mut field = |name: &str| lines.next()?.strip_prefix(name)?.strip_prefix(' ');
        let expires = match field("expires")? {
            "never" => None,
            t => Some(t.parse::<f64>().ok().filter(|t| !t.is_nan())?),
        };
        let value_len = field("value-bytes")?.parse().ok()?;
        let key_len: usize = field("key-bytes")?.parse().ok()?;
        let flags = match lines.next() {
            None => 0,
            Some(line) => line.strip_prefix("flags ")?.parse().ok()?,
        };
        if lines.next().is_some() {
            return None;
        }
        (key_len == key.len()).then(|| Meta {
            key: key.to_vec(),
            value_len,
            expires,
            flags,
        })
    }
}

/// The cache directory, opened once; every entry is reached through it.
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

/// Work a failed system call left unfinished, by cache directory: tried again after
/// every operation of any handle of this process on that directory, at open and at
/// close, so a fault neither leaves working folders to fill the disk nor loses an entry
/// a failed pop was putting back.
static LEFTOVERS: Mutex<Vec<Leftover>> = Mutex::new(Vec::new());

struct Leftover {
    dir: PathBuf,
    /// The working folder.
    tmp: String,
    /// Where it goes back to (an entry a failed pop took away), or None to remove it.
    restore_to: Option<String>,
}

/// A folder that is not a plain directory (a planted link or file) or is gone reads as
/// no entry.
fn is_absent(e: Errno) -> bool {
    matches!(e, Errno::NOENT | Errno::LOOP | Errno::NOTDIR)
}

use crate::disk::DIR_FLAGS;

/// The file that marks a directory as a folder store (written when a handle first opens
/// it). Its leading dot is never an entry's name (entry names escape a leading dot).
pub const STORE_MARK: &str = ".duckcache-folder";

impl Root {
    /// Opens the directory `path` (created owner-only, with parents, when missing).
    pub fn open(path: &Path) -> Result<Root> {
        // Taken inside operations (which hold the handle's root lock): after it.
        crate::sync::fork::register_static(crate::sync::fork::RANK_FOLDER_LEFTOVERS, &LEFTOVERS);
        crate::disk::create_dir(path)?;
        let fd = rfs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io(e.into(), "cannot open", path))?;
        let root = Root {
            fd,
            path: path.to_owned(),
        };
        root.claim_as_store()?;
        Ok(root)
    }

    /// Marks the directory as a folder store ([`STORE_MARK`]), so tools can tell it from
    /// a folder of someone's files; a directory holding another kind's store is refused
    /// (its `clear` would remove that store's files as if they were entries).
    fn claim_as_store(&self) -> Result<()> {
        let exists = |name: &str| rfs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW).is_ok();
        if exists(STORE_MARK) {
            return Ok(());
        }
        for (file, kind) in [("cache.db", "file"), ("index.db", "sharded")] {
            if exists(file) {
                return Err(Error::new(
                    ErrorKind::InvalidArg,
                    format!(
                        "{} holds a {kind} cache ({file}), not a folder cache: open it as {kind}:{}",
                        self.path.display(),
                        self.path.display()
                    ),
                ));
            }
        }
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match rfs::openat(&self.fd, STORE_MARK, flags, Mode::from_raw_mode(0o600)) {
            Ok(fd) => {
                let _ = rustix::io::write(&fd, b"a duckcache folder cache: one folder per key\n");
                Ok(())
            }
            Err(Errno::EXIST) => Ok(()),
            // A directory this process may read but not write is still a store to read.
            Err(Errno::ACCESS | Errno::PERM | Errno::ROFS) => Ok(()),
            Err(e) => Err(self.error(e, "cannot create", STORE_MARK)),
        }
    }

    fn error(&self, e: Errno, what: &str, name: &str) -> Error {
        Error::io(e.into(), what, &self.path.join(name))
    }

    /// The entry folder `name`, pinned: later renames of the name do not change what
    /// is read through it. None when there is no such folder.
    pub fn open_folder(&self, name: &str) -> Result<Option<OwnedFd>> {
        match rfs::openat(&self.fd, name, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => Ok(Some(fd)),
            Err(e) if is_absent(e) => Ok(None),
            Err(e) => Err(self.error(e, "cannot open entry", name)),
        }
    }

    /// The metadata of an entry folder; None when it has none (being removed, or left
    /// empty by a crash). Damaged metadata is `Corrupt`.
    pub fn read_meta(&self, folder: BorrowedFd, name: &str) -> Result<Option<Meta>> {
        let Some(bytes) = self.read_file(folder, name, "meta", None)? else {
            return Ok(None);
        };
        Meta::parse(&bytes).map(Some).ok_or_else(|| {
            Error::new(
                ErrorKind::Corrupt,
                format!(
                    "{}: damaged entry metadata",
                    self.path.join(name).join("meta").display()
                ),
            )
        })
    }

    /// The value of an entry folder, which must hold `meta.value_len` bytes.
    pub fn read_value(
        &self,
        folder: BorrowedFd,
        name: &str,
        meta: &Meta,
    ) -> Result<Option<Vec<u8>>> {
        self.read_file(folder, name, "value", Some(meta.value_len))
    }

    /// The value file of an entry folder, unread, to hand to a
    /// [`Sink`](crate::sink::Sink).
    pub fn value_file<'a>(
        &'a self,
        folder: BorrowedFd<'a>,
        name: &'a str,
        meta: &Meta,
    ) -> crate::disk::SizedFile<'a> {
        crate::disk::SizedFile {
            dir: folder,
            name: "value",
            len: meta.value_len,
            path: self.path.join(name).join("value"),
        }
    }

    fn read_file(
        &self,
        folder: BorrowedFd,
        name: &str,
        file: &str,
        expected_len: Option<u64>,
    ) -> Result<Option<Vec<u8>>> {
        crate::disk::read_regular_at(folder, file, expected_len, &self.path.join(name).join(file))
    }

    /// The directory's path (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the file `name` directly in the directory with `bytes` (never through a
    /// link, never over an existing file).
    pub fn write_plain_file(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.write_file(self.fd.as_fd(), ".", name, bytes)
    }

    /// The regular file `name` directly in the directory, whole (None when absent).
    pub fn read_plain_file(&self, name: &str) -> Result<Option<Vec<u8>>> {
        crate::disk::read_regular_at(self.fd.as_fd(), name, None, &self.path.join(name))
    }

    /// Renames `from` to `to` in the directory (replacing a file there).
    pub fn rename_file(&self, from: &str, to: &str) -> Result<()> {
        rfs::renameat(&self.fd, from, &self.fd, to)
            .map_err(|e| self.error(e, "cannot rename", from))
    }

    /// A working folder name no other writer, in this or another process, will pick.
    pub fn new_tmp_name() -> String {
        format!("{TMP_PREFIX}{}", crate::disk::unique_name())
    }

    /// Writes a complete entry into the new working folder `tmp`.
    pub fn write_tmp(&self, tmp: &str, meta: &Meta, value: &[u8]) -> Result<()> {
        rfs::mkdirat(&self.fd, tmp, Mode::from_raw_mode(0o700))
            .map_err(|e| self.error(e, "cannot create", tmp))?;
        let written = (|| {
            let folder = rfs::openat(&self.fd, tmp, DIR_FLAGS, Mode::empty())
                .map_err(|e| self.error(e, "cannot open", tmp))?;
            self.write_file(folder.as_fd(), tmp, "value", value)?;
            self.write_file(folder.as_fd(), tmp, "meta", &meta.encode())
        })();
        if written.is_err() {
            self.discard(tmp);
        }
        written
    }

    fn write_file(&self, folder: BorrowedFd, name: &str, file: &str, bytes: &[u8]) -> Result<()> {
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rfs::openat(folder, file, flags, Mode::from_raw_mode(0o600))
            .map_err(|e| self.error(e, "cannot create", &format!("{name}/{file}")))?;
        File::from(fd)
            .write_all(bytes)
            .map_err(|e| Error::io(e, "cannot write", &self.path.join(name).join(file)))
    }

    /// Moves the written folder `tmp` to `name`, atomically replacing whatever is there
    /// (an entry, or a planted link, which is then removed as a link). Where the file
    /// system cannot exchange, the old entry is moved away first.
    pub fn install(&self, tmp: &str, name: &str) -> Result<()> {
        let rename = |flags| rfs::renameat_with(&self.fd, tmp, &self.fd, name, flags);
        for _ in 0..64 {
            match rename(RenameFlags::NOREPLACE) {
                Ok(()) => return Ok(()),
                Err(Errno::EXIST | Errno::NOTEMPTY) => {}
                Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {
                    return self.install_plain(tmp, name)
                }
                Err(e) => return Err(self.error(e, "cannot store entry", name)),
            }
            match rename(RenameFlags::EXCHANGE) {
                Ok(()) => {
                    // `tmp` now names the replaced entry.
                    self.discard(tmp);
                    return Ok(());
                }
                // Removed meanwhile: try the plain move again.
                Err(Errno::NOENT) => {}
                Err(e) => return Err(self.error(e, "cannot store entry", name)),
            }
        }
        Err(self.gave_up(tmp, name))
    }

    /// After too many lost races with other writers: drops the written entry.
    fn gave_up(&self, tmp: &str, name: &str) -> Error {
        self.discard(tmp);
        Error::new(
            ErrorKind::Busy,
            format!(
                "{}: other writers kept replacing the entry",
                self.path.join(name).display()
            ),
        )
    }

    /// Puts the entry taken away to `tmp` back at `name`, unless a newer entry is there
    /// now (then the taken one is removed). When the move fails for another reason it
    /// is tried again after later operations rather than dropped.
    pub fn put_back(&self, tmp: &str, name: &str) {
        match rfs::renameat_with(&self.fd, tmp, &self.fd, name, RenameFlags::NOREPLACE) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(Errno::EXIST | Errno::NOTEMPTY) => self.discard(tmp),
            Err(_) => LEFTOVERS.lock().push(Leftover {
                dir: self.path.clone(),
                tmp: tmp.to_owned(),
                restore_to: Some(name.to_owned()),
            }),
        }
    }

    /// `install` without atomic exchange: move the old entry away, then the new in.
    fn install_plain(&self, tmp: &str, name: &str) -> Result<()> {
        for _ in 0..64 {
            let old = Root::new_tmp_name();
            if self.take(name, &old)? {
                self.discard(&old);
            }
            match rfs::renameat(&self.fd, tmp, &self.fd, name) {
                Ok(()) => return Ok(()),
                Err(Errno::EXIST | Errno::NOTEMPTY) => {}
                Err(e) => return Err(self.error(e, "cannot store entry", name)),
            }
        }
        Err(self.gave_up(tmp, name))
    }

    /// Puts the written folder `tmp` at `name` only if nothing is there: false (and
    /// `tmp` left in place) when something is.
    pub fn place_new(&self, tmp: &str, name: &str) -> Result<bool> {
        match rfs::renameat_with(&self.fd, tmp, &self.fd, name, RenameFlags::NOREPLACE) {
            Ok(()) => Ok(true),
            Err(Errno::EXIST | Errno::NOTEMPTY) => Ok(false),
            Err(e) => Err(self.error(e, "cannot store entry", name)),
        }
    }

    /// Swaps the folders at `tmp` and `name` atomically: true when done (`tmp` then
    /// names what was at `name`), false when nothing is at `name`. Where the file
    /// system cannot exchange, `name`'s entry is moved to `tmp`'s place after `tmp`
    /// has been moved aside (a short moment without an entry).
    pub fn exchange(&self, tmp: &str, name: &str) -> Result<bool> {
        match rfs::renameat_with(&self.fd, tmp, &self.fd, name, RenameFlags::EXCHANGE) {
            Ok(()) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {
                let aside = Root::new_tmp_name();
                if !self.take(name, &aside)? {
                    return Ok(false);
                }
                rfs::renameat(&self.fd, tmp, &self.fd, name)
                    .map_err(|e| self.error(e, "cannot store entry", name))?;
                rfs::renameat(&self.fd, &aside, &self.fd, tmp)
                    .map_err(|e| self.error(e, "cannot move entry", tmp))?;
                Ok(true)
            }
            Err(e) => Err(self.error(e, "cannot store entry", name)),
        }
    }

    /// Serialises the read-modify-write operations (add over an expired entry, incr,
    /// touch) of every handle and process on this directory: an exclusive `flock` on a
    /// descriptor of the directory itself (no lock file), released when the returned
    /// descriptor closes. Each call opens its own descriptor, so threads exclude each
    /// other too.
    pub fn lock_updates(&self) -> Result<OwnedFd> {
        let fd = rfs::openat(&self.fd, ".", DIR_FLAGS, Mode::empty())
            .map_err(|e| self.error(e, "cannot open", "."))?;
        rfs::flock(&fd, rfs::FlockOperation::LockExclusive)
            .map_err(|e| self.error(e, "cannot lock", "."))?;
        Ok(fd)
    }

    /// Moves the entry `name` to the working name `to`: of any number of processes
    /// taking one entry, exactly one succeeds. False when there was none.
    pub fn take(&self, name: &str, to: &str) -> Result<bool> {
        match rfs::renameat(&self.fd, name, &self.fd, to) {
            Ok(()) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(self.error(e, "cannot remove entry", name)),
        }
    }

    /// Removes the exact folder `folder` (opened as `name`), not whatever a concurrent
    /// writer has put at `name` since: its files go through the pinned descriptor, and
    /// the name only if it still holds an empty folder.
    /// True when this call removed the entry's metadata (of several processes removing
    /// one entry, exactly one does: the one to count the removal).
    pub fn remove_instance(&self, folder: BorrowedFd, name: &str) -> bool {
        let removed = rfs::unlinkat(folder, "meta", AtFlags::empty()).is_ok();
        let _ = rfs::unlinkat(folder, "value", AtFlags::empty());
        let _ = rfs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR);
        removed
    }

    /// Best-effort removal of the working folder (or planted link or file) `name` and
    /// everything in it, never following a link.
    pub fn discard(&self, name: &str) {
        if !remove_tree(self.fd.as_fd(), name, 8) {
            LEFTOVERS.lock().push(Leftover {
                dir: self.path.clone(),
                tmp: name.to_owned(),
                restore_to: None,
            });
        }
    }

    /// Tries again to remove the working folders of this directory that earlier
    /// removals left behind.
    pub fn retry_leftovers(&self) {
        let mine: Vec<Leftover> = {
            let mut all = LEFTOVERS.lock();
            if all.is_empty() {
                return;
            }
            let (mine, others) = std::mem::take(&mut *all)
                .into_iter()
                .partition(|l| l.dir == self.path);
            *all = others;
            mine
        };
        for leftover in mine {
            match &leftover.restore_to {
                Some(name) => self.put_back(&leftover.tmp, name),
                None => self.discard(&leftover.tmp),
            }
        }
    }

    /// A new descriptor of the directory (for a listing that outlives a call).
    pub fn reopen(&self) -> Result<OwnedFd> {
        rfs::openat(&self.fd, ".", DIR_FLAGS, Mode::empty())
            .map_err(|e| self.error(e, "cannot open", "."))
    }

    /// Names in the directory.
    pub fn list(&self) -> Result<Vec<String>> {
        crate::disk::list_at(self.fd.as_fd(), &self.path)
    }

    /// True when the working folder `name` was last changed longer ago than `age`.
    pub fn is_older_than(&self, name: &str, age: Duration) -> bool {
        let Ok(st) = rfs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) else {
            return false;
        };
        let changed = UNIX_EPOCH + Duration::new(st.st_mtime.max(0) as u64, 0);
        SystemTime::now()
            .duration_since(changed)
            .is_ok_and(|d| d > age)
    }

    /// Flushes the entry `name` (its files and folder) to disk.
    pub fn sync_entry(&self, name: &str) -> Result<()> {
        let Some(folder) = self.open_folder(name)? else {
            return Ok(());
        };
        crate::disk::sync_files_and_dir(folder.as_fd(), &["value", "meta"], &self.path.join(name))
    }

    /// Flushes the directory itself (the names of entries).
    pub fn sync(&self) -> Result<()> {
        rfs::fsync(&self.fd).map_err(|e| self.error(e, "cannot sync", ""))
    }
}

/// Removes `name` under `dir`: a link or file is unlinked, a folder emptied (to `depth`
/// levels) and removed.
fn remove_tree(dir: BorrowedFd, name: &str, depth: u32) -> bool {
    match rfs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => return true,
        Err(Errno::ISDIR | Errno::PERM) if depth > 0 => {}
        Err(_) => return false,
    }
    if let Ok(folder) = rfs::openat(dir, name, DIR_FLAGS, Mode::empty()) {
        if let Ok(entries) = rfs::Dir::read_from(&folder) {
            let names: Vec<String> = entries
                .filter_map(|e| e.ok()?.file_name().to_str().ok().map(str::to_owned))
                .filter(|n| n != "." && n != "..")
                .collect();
            for child in names {
                remove_tree(folder.as_fd(), &child, depth - 1);
            }
        }
    }
    matches!(
        rfs::unlinkat(dir, name, AtFlags::REMOVEDIR),
        Ok(()) | Err(Errno::NOENT)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trips() {
        for (expires, flags) in [(None, 0), (Some(1764000000.25), 7), (Some(0.0), u32::MAX)] {
            let meta = Meta {
                key: b"a\n\nb\0".to_vec(),
                value_len: 5,
                expires,
                flags,
            };
            assert_eq!(Meta::parse(&meta.encode()), Some(meta));
        }
    }

    #[test]
    fn meta_without_flags_reads_as_flags_0() {
        let meta =
            Meta::parse(b"duckcache-entry 1\nexpires never\nvalue-bytes 1\nkey-bytes 1\n\nk");
        assert_eq!(meta.map(|m| m.flags), Some(0));
    }

    #[test]
    fn damaged_meta_is_refused() {
        let good = Meta {
            key: b"key".to_vec(),
            value_len: 1,
            expires: None,
            flags: 0,
        }
        .encode();
        assert!(Meta::parse(&good[..good.len() - 1]).is_none(), "short key");
        assert!(Meta::parse(b"").is_none());
        assert!(
            Meta::parse(b"duckcache-entry 2\nexpires never\nvalue-bytes 1\nkey-bytes 0\n\n")
                .is_none()
        );
        assert!(
            Meta::parse(b"duckcache-entry 1\nexpires NaN\nvalue-bytes 1\nkey-bytes 0\n\n")
                .is_none()
        );
        assert!(
            Meta::parse(b"duckcache-entry 1\nexpires never\nvalue-bytes x\nkey-bytes 0\n\n")
                .is_none()
        );
        for bad_flags in ["flags -1", "flags 4294967296", "flag 1", "flags 1\nextra"] {
            let meta = format!(
                "duckcache-entry 1\nexpires never\nvalue-bytes 1\nkey-bytes 0\n{bad_flags}\n\n"
            );
            assert!(Meta::parse(meta.as_bytes()).is_none(), "{bad_flags}");
        }
    }
}
