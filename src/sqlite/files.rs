//! Reaching a connection's own files through SQLite, never through a descriptor of ours.
//!
//! POSIX record locks belong to the process and the file: closing *any* descriptor of a
//! database file releases every lock the process holds on it, SQLite's included. A
//! second descriptor opened beside a live connection (to fsync it, or to create it) and
//! then closed leaves that connection unlocked, and an ordinary `sqlite3` client may then
//! delete the WAL and `-shm` the connection still writes to: acknowledged writes lost.
//! So syncing goes through the connection's own `sqlite3_file` objects (the public VFS
//! interface: `SQLITE_FCNTL_FILE_POINTER`, `SQLITE_FCNTL_JOURNAL_POINTER`, `xSync`), and
//! creating a database file is serialised with every connection this library opens.

#![allow(unsafe_code)]

use crate::error::{Error, ErrorKind, Result};
use rusqlite::{ffi, Connection};
use std::ffi::{c_int, c_void};
use std::sync::Mutex;

/// Held while a database file is created (and its descriptor closed) and while a
/// connection to a database file is opened. A connection opened while another thread
/// held a just-created file's descriptor could take locks that the descriptor's close
/// would drop; with both under this lock, the descriptor is gone before any connection
/// of this library exists.
pub(crate) static OPENING: Mutex<()> = Mutex::new(());

/// Takes [`OPENING`]; a panic in another holder does not matter (it guards no data).
pub(crate) fn opening() -> std::sync::MutexGuard<'static, ()> {
    OPENING.lock().unwrap_or_else(|e| e.into_inner())
}

/// fsync of `conn`'s main database file and, in WAL mode, its WAL, through SQLite's own
/// open files: the WAL first (so the commits in it are durable), then, after a passive
/// checkpoint has copied what it could, the database file. `conn` must not be in use by
/// another thread (its owner holds it).
pub(crate) fn sync_wal_and_database(conn: &Connection) -> Result<()> {
    sync_file(conn, ffi::SQLITE_FCNTL_JOURNAL_POINTER, "WAL")?;
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
    sync_file(conn, ffi::SQLITE_FCNTL_FILE_POINTER, "database")
}

/// xSync of the file that `op` (FILE_POINTER or JOURNAL_POINTER) names; a file SQLite has
/// not opened (no WAL yet) has nothing to sync.
fn sync_file(conn: &Connection, op: c_int, what: &str) -> Result<()> {
    let mut file: *mut ffi::sqlite3_file = std::ptr::null_mut();
    // SAFETY: `conn` is an open connection held by this thread; both file controls write
    // a `sqlite3_file *` (or NULL) into `file`, a live local of that type.
    let rc = unsafe {
        ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            op,
            (&mut file as *mut *mut ffi::sqlite3_file).cast::<c_void>(),
        )
    };
    if rc != ffi::SQLITE_OK {
        return Err(Error::new(
            ErrorKind::Io,
            format!("SQLite would not name its {what} file (code {rc})"),
        ));
    }
    // SAFETY: a non-NULL `file` is open for as long as the connection is, and its
    // methods table (NULL when the file is not open) is SQLite's own.
    let sync = unsafe {
        if file.is_null() || (*file).pMethods.is_null() {
            return Ok(());
        }
        (*(*file).pMethods).xSync
    };
    let Some(sync) = sync else { return Ok(()) };
    // SAFETY: xSync of an open file of this connection, which no other thread uses now.
    let rc = unsafe { sync(file, ffi::SQLITE_SYNC_NORMAL) };
    if rc != ffi::SQLITE_OK {
        return Err(Error::new(
            ErrorKind::Io,
            format!("cannot sync the {what} file (SQLite I/O error, code {rc})"),
        ));
    }
    Ok(())
}
