//! What every SQLite database of the library shares: owner-only creation, the pragmas
//! (WAL, synchronous NORMAL, busy timeout), schema versioning, and how SQLite errors map
//! to [`ErrorKind`]s. Used by the file cache's store and the sharded cache's index.

use crate::disk;
use crate::error::{Error, ErrorKind, Result};
use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a lock held by another process is waited for before `Busy`.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode::*;
        let kind = match &e {
            rusqlite::Error::SqliteFailure(f, _) => match f.code {
                DatabaseBusy | DatabaseLocked => ErrorKind::Busy,
                DatabaseCorrupt | NotADatabase => ErrorKind::Corrupt,
                DiskFull
                | CannotOpen
                | PermissionDenied
                | ReadOnly
                | SystemIoFailure
                | FileLockingProtocolFailed
                | NoLargeFileSupport => ErrorKind::Io,
                OutOfMemory => ErrorKind::NoMemory,
                TooBig => ErrorKind::TooLarge,
                _ => ErrorKind::Internal,
            },
            _ => ErrorKind::Internal,
        };
        Error::new(kind, format!("SQLite: {e}"))
    }
}

/// A database schema: its SQL and the version stored in `PRAGMA user_version`.
pub(crate) struct Schema {
    /// Creates the current version.
    pub sql: &'static str,
    pub version: i64,
    /// `upgrades[i]` turns version `i + 1` into version `i + 2`; the last one yields
    /// `version`.
    pub upgrades: &'static [&'static str],
    /// What the database is, for error messages ("store", "shard index").
    pub what: &'static str,
}

/// Opens (creating owner-only when missing) the database at `path`, configured, with the
/// schema in place. `on_create` runs inside the transaction that creates the schema, so
/// of several processes opening a new database at once exactly one runs it.
pub(crate) fn open(
    path: &Path,
    schema: &Schema,
    on_create: impl FnOnce(&Transaction) -> Result<()>,
) -> Result<Connection> {
    // Create the file before SQLite does (its default is 0644); -wal and -shm inherit
    // these permissions.
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(e, "cannot open", path))?;
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let with_path = |e: Error| Error::new(e.kind(), format!("{}: {}", path.display(), e.message()));
    let mut conn = Connection::open_with_flags(path, flags).map_err(|e| with_path(e.into()))?;
    configure(&mut conn, schema, on_create).map_err(with_path)?;
    Ok(conn)
}

/// Pragmas, then the schema only when it is not there yet.
fn configure(
    conn: &mut Connection,
    schema: &Schema,
    on_create: impl FnOnce(&Transaction) -> Result<()>,
) -> Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // journal_mode reads the header first, so a file that is not a database fails here.
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::new(
            ErrorKind::Io,
            format!("cannot switch to WAL journal (got {mode})"),
        ));
    }
    conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA mmap_size = 67108864;")?;
    conn.set_prepared_statement_cache_capacity(32);
    let version = |c: &Connection| -> Result<i64> {
        Ok(c.query_row("PRAGMA user_version", [], |r| r.get(0))?)
    };
    if version(conn)? == 0 {
        let tx = immediate(conn)?;
        // Another process may have created it while this one waited for the lock.
        if version(&tx)? == 0 {
            tx.execute_batch(schema.sql)?;
            on_create(&tx)?;
            tx.execute_batch(&format!("PRAGMA user_version = {}", schema.version))?;
        }
        tx.commit()?;
    }
    let found = version(conn)?;
    if found >= 1 && found < schema.version {
        let tx = immediate(conn)?;
        // Another process may have upgraded it while this one waited for the lock.
        let mut at = version(&tx)?;
        while at >= 1 && at < schema.version {
            let step = usize::try_from(at - 1)
                .ok()
                .and_then(|i| schema.upgrades.get(i));
            let step = step.ok_or_else(|| {
                Error::new(ErrorKind::Internal, format!("no upgrade from version {at}"))
            })?;
            tx.execute_batch(step)?;
            at += 1;
        }
        tx.execute_batch(&format!("PRAGMA user_version = {at}"))?;
        tx.commit()?;
    }
    match version(conn)? {
        v if v == schema.version => Ok(()),
        v => Err(Error::new(
            ErrorKind::Corrupt,
            format!(
                "{} schema version {v} is not one this duckcache reads ({})",
                schema.what, schema.version
            ),
        )),
    }
}

/// Begins an IMMEDIATE transaction: the write lock from the start, so two writers never
/// deadlock upgrading a read lock.
pub(crate) fn immediate(conn: &mut Connection) -> Result<Transaction<'_>> {
    Ok(conn.transaction_with_behavior(TransactionBehavior::Immediate)?)
}

/// Makes every commit on `conn` durable. With synchronous=NORMAL commits reach the WAL
/// unsynced: sync it, then let a passive checkpoint move what it can into the database
/// file `db`, and sync that.
pub(crate) fn sync(conn: &Connection, db: &Path) -> Result<()> {
    disk::sync_path(&PathBuf::from(format!("{}-wal", db.display())))?;
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
    disk::sync_path(db)
}
