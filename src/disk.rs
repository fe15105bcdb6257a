//! Small filesystem helpers every persistent backend shares.

use crate::error::{Error, ErrorKind, Result};
use std::fs::{self, File};
use std::io::ErrorKind as IoKind;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

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

/// fsync of a file or directory by path.
pub fn sync_path(path: &Path) -> Result<()> {
    match File::open(path) {
        Ok(f) => f.sync_all().map_err(|e| Error::io(e, "cannot sync", path)),
        Err(e) if e.kind() == IoKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(e, "cannot open", path)),
    }
}
