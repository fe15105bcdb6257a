//! What every SQLite database of the library shares: owner-only creation, the pragmas
//! (WAL, synchronous NORMAL, busy timeout), schema versioning, and how SQLite errors map
//! to [`ErrorKind`]s. Used by the file cache's store and the sharded cache's index.

pub(crate) mod checkpointer;
pub(crate) mod files;
pub(crate) mod process;

use crate::disk;
use crate::error::{Error, ErrorKind, Result};
use checkpointer::WalWatch;
use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
                // The schema this library created is gone: the file was replaced or
                // emptied by someone else (not a bug in a statement).
                Unknown if f.extended_code == 1 && is_missing_schema(&e) => ErrorKind::Corrupt,
                _ => ErrorKind::Internal,
            },
            _ => ErrorKind::Internal,
        };
        let error = Error::new(kind, format!("SQLite: {e}"));
        match &e {
            // SQLITE_READONLY and its extended codes: the connection opened a file
            // read-only after a fault, or its file was moved or removed.
            rusqlite::Error::SqliteFailure(f, _) if f.code == ReadOnly => {
                error.with_stale_connection()
            }
            // SQLITE_CORRUPT is also what SQLite returns when the OS fails a read with
            // EIO (unixRead's SQLITE_IOERR_CORRUPTFS, turned into SQLITE_CORRUPT on the
            // way out): a new connection tries again, and `confirm_damage` tells.
            rusqlite::Error::SqliteFailure(f, _) if f.code == DatabaseCorrupt => {
                error.with_stale_connection().with_unconfirmed_damage()
            }
            _ => error,
        }
    }
}

/// Whether a quick_check verdict says only that a page could not be read ("Tree 3 page
/// 3: unable to get the page. error code=8458": an SQLITE_IOERR code, 10 in its low
/// byte), not that what was read is damaged.
fn is_failed_read(verdict: &str) -> bool {
    const SQLITE_IOERR: i64 = 10;
    let codes: Vec<i64> = verdict
        .split("error code=")
        .skip(1)
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect();
    !codes.is_empty() && codes.iter().all(|code| code & 0xff == SQLITE_IOERR)
}

/// The error to report for `e`: damage SQLite reported is confirmed by a quick check of
/// the database through `conn`. Only a check that finds damage confirms it. When the
/// database checks whole, or the check itself cannot finish (its reads fail too), what
/// failed was a read (the OS's EIO, which SQLite reports as damage by design): `Io`, not
/// `Corrupt`, since callers take `Corrupt` as a reason to drop data.
pub(crate) fn confirm_damage(conn: &Connection, e: Error) -> Error {
    if !e.is_unconfirmed_damage() {
        return e;
    }
    match conn.query_row("PRAGMA quick_check(1)", [], |r| r.get::<_, String>(0)) {
        Ok(verdict) if verdict != "ok" && !is_failed_read(&verdict) => e.confirmed(&verdict),
        Ok(_) => Error::new(
            ErrorKind::Io,
            "SQLite: a read of the database failed (SQLite reports that as damage; the \
             database checks whole)",
        ),
        Err(_) => Error::new(
            ErrorKind::Io,
            "SQLite: reads of the database fail (SQLite reports that as damage; a check \
             of the database failed to read too)",
        ),
    }
}

fn is_missing_schema(e: &rusqlite::Error) -> bool {
    let text = e.to_string();
    text.contains("no such table") || text.contains("no such column")
}

/// The one-row `totals` table both stores keep, by triggers on their entry table, so
/// counting entries and bytes never scans. Spliced into each schema with `concat!`.
macro_rules! totals_table {
    () => {
        "
CREATE TABLE IF NOT EXISTS totals (
    id    INTEGER PRIMARY KEY CHECK (id = 0),
    count INTEGER NOT NULL,
    size  INTEGER NOT NULL
);
INSERT OR IGNORE INTO totals VALUES (0, 0, 0);
"
    };
}
pub(crate) use totals_table;

/// The change log both stores keep for read caches ([`crate::read_cache`]): every row of
/// `$table` (whose key column is `key`) that is replaced, updated or removed logs its key,
/// in the transaction that does it, whoever writes (any handle, any process, any
/// statement: the triggers see them all). A new key needs no record: no read cache holds
/// a value for it. Records are numbered one after another (AUTOINCREMENT); the log keeps
/// its last 16,384 to 17,408, and a reader that fell further behind sees the numbers jump
/// and drops everything it holds.
macro_rules! change_log {
    ($table:literal) => {
        concat!(
            "
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, -- never reused, so a reader resumes after the last it saw
    key BLOB NOT NULL                      -- an entry that was replaced, changed or removed
);
CREATE TRIGGER IF NOT EXISTS ",
            $table,
            "_deletion_logged AFTER DELETE ON ",
            $table,
            " BEGIN
    INSERT INTO changes (key) VALUES (old.key);
END;
CREATE TRIGGER IF NOT EXISTS ",
            $table,
            "_update_logged AFTER UPDATE ON ",
            $table,
            " BEGIN
    INSERT INTO changes (key) VALUES (old.key);
END;
CREATE TRIGGER IF NOT EXISTS changes_trimmed AFTER INSERT ON changes WHEN new.seq % 1024 = 0 BEGIN
    DELETE FROM changes WHERE seq <= new.seq - 16384;
END;
"
        )
    };
}
pub(crate) use change_log;

/// (rows, bytes of keys and values) from the `totals` table: expired rows not yet
/// removed included.
pub(crate) fn totals(conn: &Connection) -> Result<(u64, u64)> {
    let (count, size): (i64, i64) = conn
        .prepare_cached("SELECT count, size FROM totals")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok((count.max(0) as u64, size.max(0) as u64))
}

/// Rows of `table` (which has an `expires` column and is counted by `totals`) that have
/// not expired at `now`.
pub(crate) fn live_count(conn: &Connection, table: &str, now: f64) -> Result<u64> {
    let (count, _) = totals(conn)?;
    let expired: i64 = conn
        .prepare_cached(&format!("SELECT count(*) FROM {table} WHERE expires <= ?1"))?
        .query_row([now], |r| r.get(0))?;
    Ok(count.saturating_sub(expired.max(0) as u64))
}

/// The smallest byte string greater than every string starting with `prefix`; None
/// when there is none (an empty prefix, or all 0xff bytes).
pub(crate) fn prefix_upper(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut upper = prefix.to_vec();
    while let Some(last) = upper.pop() {
        if last != 0xff {
            upper.push(last + 1);
            return Some(upper);
        }
    }
    None
}

/// A page of the live keys of `table` (columns `key` and `expires`) starting with
/// `prefix`, in key order after `after` (the last key of the previous page).
pub(crate) fn key_page(
    conn: &Connection,
    table: &str,
    prefix: &[u8],
    after: Option<&[u8]>,
    now: f64,
) -> Result<crate::backend::KeyPage> {
    use crate::backend::{KeyPage, KEY_PAGE};
    // Rows from max(prefix, after) on, in key order: the first key without the prefix
    // ends the walk. `key > after` leaves out the last key of the previous page.
    let (from, strict) = match after {
        Some(a) if a >= prefix => (a, true),
        _ => (prefix, false),
    };
    let sql = format!(
        "SELECT key, expires FROM {table} WHERE key {} ?1 ORDER BY key LIMIT {}",
        if strict { ">" } else { ">=" },
        KEY_PAGE
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query([from])?;
    let (mut keys, mut seen, mut last) = (Vec::new(), 0, None);
    while let Some(row) = rows.next()? {
        let key: Vec<u8> = row.get(0)?;
        if !key.starts_with(prefix) {
            return Ok(KeyPage { keys, next: None });
        }
        seen += 1;
        if !crate::ttl::expired(row.get(1)?, now) {
            keys.push(key.clone());
        }
        last = Some(key);
    }
    let next = if seen == KEY_PAGE { last } else { None };
    Ok(KeyPage { keys, next })
}

/// How a store's connections are set up (`cache_open`'s `sync` and `busy_timeout_ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqliteOptions {
    /// `synchronous=FULL` (and value files synced before their rows commit): every
    /// acknowledged write survives power loss. Otherwise `NORMAL`: it survives a crash
    /// of the process, and `save` makes it survive power loss.
    pub sync_full: bool,
    /// How long a lock held by another process is waited for before `Busy`.
    pub busy_timeout: Duration,
    /// Bytes of keys and values the handle's read cache holds (`read_cache`; see
    /// [`crate::read_cache`]); 0: no read cache.
    pub read_cache: u64,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            sync_full: false,
            busy_timeout: BUSY_TIMEOUT,
            read_cache: 0,
        }
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
/// schema in place, its WAL checkpointed off the writers' path (see [`checkpointer`]). `on_create` runs inside the transaction that creates the schema, so
/// of several processes opening a new database at once exactly one runs it.
///
/// Refused with an error, never handed out half-working:
/// - a path that is a symbolic link, a FIFO or anything but a regular file (SQLite would
///   follow the link, or block forever opening the FIFO), and likewise its `-wal` and
///   `-shm` files;
/// - a database SQLite could open only read-only (it falls back silently when opening
///   for writing fails, as on a transient I/O error), whose every write would fail.
///
/// Several processes opening one new database at once race to create the file, switch
/// it to WAL and create the schema; a step that finds another process's lock is retried
/// until [`BUSY_TIMEOUT`], as every later operation waits.
pub(crate) fn open(
    path: &Path,
    schema: &Schema,
    options: SqliteOptions,
    on_create: impl Fn(&Transaction) -> Result<()>,
) -> Result<(Connection, Arc<WalWatch>)> {
    let with_path = |e: Error| e.prefixed(path.display());
    process::prepare();
    let mut conn = {
        let _opening = files::opening();
        disk::create_regular_file(path)?;
        for suffix in ["-wal", "-shm"] {
            disk::refuse_non_regular(&PathBuf::from(format!("{}{suffix}", path.display())))?;
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_NOFOLLOW;
        Connection::open_with_flags(path, flags).map_err(|e| with_path(e.into()))?
    };
    if conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(true) {
        discard(conn);
        return Err(with_path(Error::new(
            ErrorKind::Io,
            "SQLite could open it only read-only (cannot open it for writing)",
        )));
    }
    let started = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        let configured = configure(&mut conn, schema, options, &on_create)
            .and_then(|()| probe_writable(&mut conn));
        match configured {
            Err(e) if e.kind() == ErrorKind::Busy && started.elapsed() < options.busy_timeout => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Ok(()) => match checkpointer::watch(&mut conn, path) {
                Ok(watch) => return Ok((conn, watch)),
                Err(e) => {
                    discard(conn);
                    return Err(with_path(e.into()));
                }
            },
            Err(e) => {
                let e = confirm_damage(&conn, e);
                discard(conn);
                return Err(with_path(e));
            }
        }
    }
}

/// Opens a second connection to the existing database at `path`, for reads alone (the
/// handle's parallel readers). Unlike [`open`] it creates and changes nothing, and gives
/// up rather than wait: a missing or non-regular file, a schema version other than
/// `schema`'s (a file replaced or emptied under the handle), a connection that could only
/// be read-only (it could see an older state), a lock held by a writer now: each is an
/// error, and the caller reads through its main connection instead.
pub(crate) fn open_for_reads(path: &Path, schema: &Schema) -> Result<Connection> {
    checked(open_second(path)?, |conn| {
        // The write lock once, as for the main connection: a connection that fell back to
        // a read-only -shm shows here (see probe_writable).
        probe_writable(conn)?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version != schema.version {
            return Err(Error::new(ErrorKind::Corrupt, "not the expected schema"));
        }
        // 8 MiB of pages (SQLite's default is 2): with no memory map, a page the cache
        // lost is a pread. Measured: 1 KiB gets over a 4 MB store, 4.3-4.7 -> 3.3-3.7 us,
        // a quarter of the time having been reads of pages evicted by the previous gets.
        conn.execute_batch("PRAGMA query_only = 1; PRAGMA cache_size = -8192;")?;
        Ok(())
    })
}

/// `conn` once `check` passed on it; discarded (see [`discard`]) when it did not.
fn checked(
    mut conn: Connection,
    check: impl FnOnce(&mut Connection) -> Result<()>,
) -> Result<Connection> {
    match check(&mut conn) {
        Ok(()) => Ok(conn),
        Err(e) => {
            discard(conn);
            Err(e)
        }
    }
}

/// Opens another connection to the existing database at `path` beside the writing one
/// (for reads, or the background checkpoint): creates nothing, refuses non-regular
/// files and a connection that could only be read-only, waits only briefly for locks,
/// and never checkpoints on close. (One whose `-shm` fell back to read-only after a
/// fault is not refused here; SQLite refuses it every checkpoint.)
pub(crate) fn open_second(path: &Path) -> Result<Connection> {
    for suffix in ["", "-wal", "-shm"] {
        disk::refuse_non_regular(&PathBuf::from(format!("{}{suffix}", path.display())))?;
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_NOFOLLOW;
    process::prepare();
    let conn = {
        let _opening = files::opening();
        Connection::open_with_flags(path, flags)?
    };
    checked(conn, |conn| {
        if conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(true) {
            return Err(Error::new(ErrorKind::Io, "could open it only read-only"));
        }
        // Its close never checkpoints (see `discard`): a connection that saw a fault
        // must not be the one that deletes the WAL.
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
            true,
        )?;
        // Short waits: a busy reader falls back to the main connection, which waits.
        conn.busy_timeout(Duration::from_millis(100))?;
        Ok(())
    })
}

/// Closes a connection that failed, without the checkpoint a close normally runs.
///
/// A close checkpoints and, when that succeeds, deletes the WAL. A connection whose
/// `-shm` setup failed under I/O faults can believe a checkpoint succeeded that copied
/// nothing, and its close then deleted a WAL holding acknowledged commits (found by the
/// fault campaign). Kept, the WAL is replayed by the next connection that opens it.
pub(crate) fn discard(conn: Connection) {
    let _ = conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        true,
    );
    let _ = conn.close();
}

/// Refuses a connection that cannot write. When SQLite cannot open `-shm` read-write
/// (a transient fault) it silently falls back to a read-only `-shm`: such a connection
/// reads the WAL without the shared index, can see an older state, and fails every write.
/// Taking the write lock once shows it before anything is read or written.
fn probe_writable(conn: &mut Connection) -> Result<()> {
    immediate(conn)?.rollback()?;
    Ok(())
}

/// Pragmas, then the schema only when it is not there yet.
/// Safe to run again after a `Busy` failure: each step checks what is already done.
fn configure(
    conn: &mut Connection,
    schema: &Schema,
    options: SqliteOptions,
    on_create: &impl Fn(&Transaction) -> Result<()>,
) -> Result<()> {
    conn.busy_timeout(options.busy_timeout)?;
    // journal_mode reads the header first, so a file that is not a database fails here.
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::new(
            ErrorKind::Io,
            format!("cannot switch to WAL journal (got {mode})"),
        ));
    }
    // No memory map: a page of a mapped file that another process truncates faults
    // with SIGBUS in whatever thread reads it, killing the host. read() fails cleanly.
    // (Measured: a 1 KiB get costs about 7% more; a set nothing. A journal_size_limit,
    // tried to keep WALs small, made every 1 KiB set 25% slower: the WAL then grows
    // into new blocks after each checkpoint instead of reusing its own.)
    conn.execute_batch(if options.sync_full {
        "PRAGMA synchronous = FULL; PRAGMA mmap_size = 0; PRAGMA temp_store = MEMORY;"
    } else {
        "PRAGMA synchronous = NORMAL; PRAGMA mmap_size = 0; PRAGMA temp_store = MEMORY;"
    })?;
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
/// file, and sync that (through SQLite's own descriptors: see [`files`]).
pub(crate) fn sync(conn: &Connection) -> Result<()> {
    files::sync_wal_and_database(conn)
}

#[cfg(test)]
mod tests {
    use super::is_failed_read;

    #[test]
    fn a_page_that_could_not_be_read_is_not_damage() {
        // SQLITE_IOERR_CORRUPTFS (8458) and SQLITE_IOERR_READ (266): reads that failed.
        assert!(is_failed_read(
            "*** in database main ***\nTree 3 page 3: unable to get the page. error code=8458"
        ));
        assert!(is_failed_read(
            "Tree 2 page 9: unable to get the page. error code=266"
        ));
        // Damage: no error code, or SQLITE_CORRUPT (11) itself.
        assert!(!is_failed_read(
            "*** in database main ***\nPage 5 is never used"
        ));
        assert!(!is_failed_read(
            "Tree 3 page 3: unable to get the page. error code=11"
        ));
        assert!(!is_failed_read(
            "Tree 3 page 3: unable to get the page. error code=8458\nPage 7 is never used \
             error code=11"
        ));
    }
}
