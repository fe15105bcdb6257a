//! The entries table of a store: its schema, the columns of an entry row and how one
//! decodes, and the reads that change nothing, shared by the store's own connection
//! ([`super::store`]) and the handle's read-only connections ([`super::readers`]).

use super::values::Values;
use crate::clock::wall_now;
use crate::error::{Error, Result};
use crate::sink::Sink;
use crate::sqlite::{self, Schema};
use crate::ttl;
use rusqlite::{Connection, OptionalExtension};
use std::path::Path;

/// Version 2 added `flags`, version 3 the change log; bump whenever the schema changes,
/// with an upgrade step.
pub(crate) const SCHEMA: Schema = Schema {
    version: 3,
    upgrades: &[
        "ALTER TABLE entries ADD COLUMN flags INTEGER NOT NULL DEFAULT 0;",
        sqlite::change_log!("entries"),
    ],
    what: "store",
    sql: concat!(
        "
CREATE TABLE IF NOT EXISTS entries (
    id      INTEGER PRIMARY KEY,   -- order of storing: a set deletes and inserts anew
    key     BLOB NOT NULL UNIQUE,
    value   BLOB,                  -- the value when stored inline, else NULL
    file    TEXT,                  -- the value's file under values/, else NULL
    size    INTEGER NOT NULL,      -- bytes of key and value
    expires REAL,                  -- Unix time the entry dies at; NULL = never
    flags   INTEGER NOT NULL DEFAULT 0 -- the caller's flags word, returned untouched
);
CREATE INDEX IF NOT EXISTS entries_expires ON entries(expires) WHERE expires IS NOT NULL;
",
        sqlite::totals_table!(),
        "
CREATE TRIGGER IF NOT EXISTS entries_added AFTER INSERT ON entries BEGIN
    UPDATE totals SET count = count + 1, size = size + new.size WHERE id = 0;
END;
CREATE TRIGGER IF NOT EXISTS entries_removed AFTER DELETE ON entries BEGIN
    UPDATE totals SET count = count - 1, size = size - old.size WHERE id = 0;
END;
CREATE TABLE IF NOT EXISTS orphans (
    name  TEXT PRIMARY KEY,        -- a value file no row may name
    since REAL NOT NULL            -- 0: unreferenced; else when its writer started
);
",
        sqlite::change_log!("entries")
    ),
};

/// What one read of a key's entry found ([`read_entry`]).
pub(crate) enum Read {
    Miss,
    /// The value went to the sink.
    Hit,
    /// The entry expired by this Unix time; it is still there, to be removed by a write.
    Expired(f64),
    /// The row names a value file that is gone (replaced by another handle meanwhile).
    FileVanished(String),
    /// The row names a value file that cannot be read.
    FileFailed(String, Error),
}

/// The columns every read of an entry's value selects, in the order [`entry_row`] reads.
macro_rules! entry_columns {
    () => {
        "value, file, expires, size - length(key), flags"
    };
}
pub(crate) use entry_columns;

/// An entry row selected by `entry_columns!`: where its value is, its expiry, its flags.
pub(crate) struct EntryRow<'r> {
    pub value: ValueAt<'r>,
    pub expires: Option<f64>,
    pub flags: u32,
}

/// Where a row's value is: inline (borrowed from the row) or in a value file of a length.
pub(crate) enum ValueAt<'r> {
    Inline(&'r [u8]),
    File(String, u64),
}

pub(crate) fn entry_row<'r>(r: &'r rusqlite::Row<'_>) -> rusqlite::Result<EntryRow<'r>> {
    let value = match r.get::<_, Option<String>>(1)? {
        Some(name) => ValueAt::File(name, r.get::<_, i64>(3)? as u64),
        None => ValueAt::Inline(r.get_ref(0)?.as_blob_or_null()?.unwrap_or_default()),
    };
    Ok(EntryRow {
        value,
        expires: r.get(2)?,
        flags: stored_flags(r.get(4)?),
    })
}

impl EntryRow<'_> {
    /// The row with its inline value copied out (to outlive the statement).
    pub fn owned(self) -> (RowValue, Option<f64>, u32) {
        let value = match self.value {
            ValueAt::Inline(bytes) => RowValue::Inline(bytes.to_vec()),
            ValueAt::File(name, len) => RowValue::File(name, len),
        };
        (value, self.expires, self.flags)
    }
}

/// Reads `key`'s entry through `conn` (one autocommit read, so it sees every commit made
/// before it began) and hands a live value to `sink`; changes nothing. Shared by the
/// store's own get and the handle's read-only connections ([`super::readers`]).
pub(crate) fn read_entry(
    conn: &Connection,
    values: &Values,
    key: &[u8],
    sink: &mut dyn Sink,
) -> Result<Read> {
    let now = wall_now();
    let found = conn
        .prepare_cached(concat!(
            "SELECT ",
            entry_columns!(),
            " FROM entries WHERE key = ?1"
        ))?
        .query_row([key], |r| {
            let row = entry_row(r)?;
            if ttl::expired(row.expires, now) {
                return Ok(None);
            }
            Ok(Some(match row.value {
                ValueAt::File(name, len) => Some((name, len, row.flags, row.expires)),
                ValueAt::Inline(value) => {
                    sink.take(value, row.flags, row.expires);
                    None
                }
            }))
        })
        .optional()?;
    let (name, len, flags, expires) = match found {
        None => return Ok(Read::Miss),
        Some(None) => return Ok(Read::Expired(now)),
        Some(Some(None)) => return Ok(Read::Hit),
        Some(Some(Some(file))) => file,
    };
    Ok(
        match sink.take_file(&mut values.file(&name, len), flags, expires) {
            Ok(true) => Read::Hit,
            Ok(false) => Read::FileVanished(name),
            Err(e) => Read::FileFailed(name, e),
        },
    )
}

/// Whether `key` holds a live entry, without reading its value: Hit, Miss or
/// Expired (still there, for a write to remove). Changes nothing.
pub(crate) fn probe_entry(conn: &Connection, key: &[u8]) -> Result<Read> {
    let now = wall_now();
    let expires: Option<Option<f64>> = conn
        .prepare_cached("SELECT expires FROM entries WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?;
    Ok(match expires {
        None => Read::Miss,
        Some(e) if ttl::expired(e, now) => Read::Expired(now),
        Some(_) => Read::Hit,
    })
}

/// Opens a connection to the store in `dir` for [`read_entry`] alone (see
/// [`sqlite::open_for_reads`]).
pub(crate) fn open_reader(dir: &Path) -> Result<(Connection, Values)> {
    let conn = sqlite::open_for_reads(&dir.join("cache.db"), &SCHEMA)?;
    Ok((conn, Values::open(dir)?))
}

/// A row's value as read: inline bytes or the file holding `len` bytes.
pub(crate) enum RowValue {
    Inline(Vec<u8>),
    File(String, u64),
}

/// The flags column as written by `put` (a u32); anything else reads as 0.
fn stored_flags(column: i64) -> u32 {
    u32::try_from(column).unwrap_or(0)
}
