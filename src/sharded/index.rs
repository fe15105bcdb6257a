//! The shard index: one small SQLite database (`<dir>/index.db`) saying which shard
//! holds each key, how full each shard is, and which superseded copies still wait to be
//! removed. It is what makes a get cost the same with 1 shard or 1000, and what several
//! processes on one directory agree through.
//!
//! Rules every write follows (the callers in `super` keep them):
//! - Every change to a shard happens inside an IMMEDIATE transaction on the index, so
//!   writers from every process are ordered by the index lock, and the index commit is
//!   the moment an operation takes effect.
//! - A key's row names the only shard a reader may return it from. A copy in another
//!   shard is never returned; the copy a set supersedes is recorded in `stale` in the
//!   set's own transaction and removed by a later write transaction.
//! - A crash between a shard's commit and the index's commit leaves either an
//!   unreachable copy (harmless, its space is reclaimed when the key is next written to
//!   that shard) or a row whose shard lacks the key, which reads as a miss and is removed
//!   by the first read that meets it.

use crate::disk::file_id;
use crate::error::{Error, ErrorKind, Result};
use crate::file::readers::ReadConnection;
use crate::sqlite::{self, Schema};
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use std::path::Path;

/// The triggers that keep each shard's size and key count, and the totals, in step with
/// `keys` (version 2 added the count).
macro_rules! key_triggers {
    () => {
        "
CREATE TRIGGER IF NOT EXISTS keys_added AFTER INSERT ON keys BEGIN
    UPDATE shards SET size = size + new.size, count = count + 1 WHERE id = new.shard;
    UPDATE totals SET count = count + 1, size = size + new.size WHERE id = 0;
END;
CREATE TRIGGER IF NOT EXISTS keys_removed AFTER DELETE ON keys BEGIN
    UPDATE shards SET size = size - old.size, count = count - 1 WHERE id = old.shard;
    UPDATE totals SET count = count - 1, size = size - old.size WHERE id = 0;
END;
CREATE TRIGGER IF NOT EXISTS keys_moved AFTER UPDATE ON keys BEGIN
    UPDATE shards SET size = size - old.size, count = count - 1 WHERE id = old.shard;
    UPDATE shards SET size = size + new.size, count = count + 1 WHERE id = new.shard;
    UPDATE totals SET size = size - old.size + new.size WHERE id = 0;
END;
"
    };
}

/// Version 2 added each shard's key count (so empty shards are found without a scan),
/// version 3 the change log.
pub(super) const SCHEMA: Schema = Schema {
    version: 3,
    upgrades: &[
        concat!(
            "ALTER TABLE shards ADD COLUMN count INTEGER NOT NULL DEFAULT 0;
UPDATE shards SET count = (SELECT count(*) FROM keys WHERE keys.shard = shards.id);
DROP TRIGGER keys_added; DROP TRIGGER keys_removed; DROP TRIGGER keys_moved;",
            key_triggers!()
        ),
        sqlite::change_log!("keys"),
    ],
    what: "shard index",
    sql: concat!(
        "
CREATE TABLE IF NOT EXISTS shards (
    id    INTEGER PRIMARY KEY,     -- creation order; the folder is shard-<id>
    size  INTEGER NOT NULL DEFAULT 0, -- bytes of keys and values the index places there
    count INTEGER NOT NULL DEFAULT 0  -- keys the index places there
);
CREATE TABLE IF NOT EXISTS keys (
    key     BLOB PRIMARY KEY,
    shard   INTEGER NOT NULL,
    size    INTEGER NOT NULL,      -- bytes of key and value
    expires REAL                   -- Unix time the entry dies at; NULL = never
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS keys_expires ON keys(expires) WHERE expires IS NOT NULL;
",
        sqlite::totals_table!(),
        "
CREATE TABLE IF NOT EXISTS stale (
    shard INTEGER NOT NULL,        -- a superseded copy of key waits in this shard
    key   BLOB NOT NULL,
    PRIMARY KEY (shard, key)
) WITHOUT ROWID;
",
        key_triggers!(),
        sqlite::change_log!("keys")
    ),
};

/// A key's row: its shard, size and expiry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Placement {
    pub shard: i64,
    /// Bytes of key and value.
    pub size: u64,
    pub expires: Option<f64>,
}

impl Placement {
    pub fn is_expired_at(&self, now: f64) -> bool {
        crate::ttl::expired(self.expires, now)
    }

    /// From a row of (shard, size, expires).
    fn from_row(r: &rusqlite::Row) -> rusqlite::Result<Placement> {
        Ok(Placement {
            shard: r.get(0)?,
            size: r.get::<_, i64>(1)?.max(0) as u64,
            expires: r.get(2)?,
        })
    }
}

/// A read-only connection to the index, for the handle's reads without its lock, and
/// the device and inode of the `index.db` it reads.
pub(super) struct IndexReader {
    pub conn: Connection,
    pub file: (u64, u64),
}

impl ReadConnection for IndexReader {
    fn open(dir: &Path) -> Result<Self> {
        let path = dir.join("index.db");
        let before = file_id(&path);
        let conn = sqlite::open_for_reads(&path, &SCHEMA)?;
        match (before, file_id(&path)) {
            (Some(file), Some(after)) if file == after => Ok(IndexReader { conn, file }),
            _ => {
                sqlite::discard(conn);
                Err(Error::new(
                    ErrorKind::Busy,
                    "the index was replaced while opening",
                ))
            }
        }
    }
}

/// Opens the index; `on_create` fills a new one (from shards found on disk).
pub(super) fn open(
    path: &Path,
    options: sqlite::SqliteOptions,
    on_create: impl Fn(&Transaction) -> Result<()>,
) -> Result<Connection> {
    Ok(sqlite::open(path, &SCHEMA, options, on_create)?.0)
}

/// Where `key` lives, read outside any write transaction.
pub(super) fn placement(conn: &Connection, key: &[u8]) -> Result<Option<Placement>> {
    Ok(conn
        .prepare_cached("SELECT shard, size, expires FROM keys WHERE key = ?1")?
        .query_row([key], Placement::from_row)
        .optional()?)
}

/// Removes `key`'s row and returns where it was.
pub(super) fn remove(tx: &Transaction, key: &[u8]) -> Result<Option<Placement>> {
    Ok(tx
        .prepare_cached("DELETE FROM keys WHERE key = ?1 RETURNING shard, size, expires")?
        .query_row([key], Placement::from_row)
        .optional()?)
}

/// Removes `key`'s row if it places the key in `shard` (a row that has moved on is kept).
pub(super) fn remove_placed(tx: &Transaction, key: &[u8], shard: i64) -> Result<()> {
    tx.prepare_cached("DELETE FROM keys WHERE key = ?1 AND shard = ?2")?
        .execute(rusqlite::params![key, shard])?;
    Ok(())
}

/// Places `key` in `shard`, recording the copy it supersedes in another shard as stale.
pub(super) fn place(
    tx: &Transaction,
    key: &[u8],
    shard: i64,
    size: u64,
    expires: Option<f64>,
    old: Option<Placement>,
) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO keys (key, shard, size, expires) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (key) DO UPDATE SET shard = ?2, size = ?3, expires = ?4",
    )?
    .execute(params![key, shard, size as i64, expires])?;
    // The write just made supersedes any stale copy waiting in this very shard.
    tx.prepare_cached("DELETE FROM stale WHERE shard = ?1 AND key = ?2")?
        .execute(params![shard, key])?;
    if let Some(old) = old.filter(|o| o.shard != shard) {
        mark_stale(tx, old.shard, key)?;
    }
    Ok(())
}

pub(super) fn mark_stale(tx: &Transaction, shard: i64, key: &[u8]) -> Result<()> {
    tx.prepare_cached("INSERT OR IGNORE INTO stale (shard, key) VALUES (?1, ?2)")?
        .execute(params![shard, key])?;
    Ok(())
}

/// Up to `limit` superseded copies waiting for removal.
pub(super) fn stale(tx: &Transaction, limit: u32) -> Result<Vec<(i64, Vec<u8>)>> {
    let rows = tx
        .prepare_cached("SELECT shard, key FROM stale LIMIT ?1")?
        .query_map([limit], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

pub(super) fn forget_stale(tx: &Transaction, shard: i64, key: &[u8]) -> Result<()> {
    tx.prepare_cached("DELETE FROM stale WHERE shard = ?1 AND key = ?2")?
        .execute(params![shard, key])?;
    Ok(())
}

/// The newest shard and the bytes placed in it.
pub(super) fn newest_shard(tx: &Transaction) -> Result<Option<(i64, u64)>> {
    Ok(tx
        .prepare_cached("SELECT id, size FROM shards ORDER BY id DESC LIMIT 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)?.max(0) as u64)))
        .optional()?)
}

/// Records a new shard after the newest; returns its id.
pub(super) fn add_shard(tx: &Transaction) -> Result<i64> {
    Ok(tx
        .prepare_cached(
            "INSERT INTO shards (id) SELECT coalesce(max(id), 0) + 1 FROM shards RETURNING id",
        )?
        .query_row([], |r| r.get(0))?)
}

/// Shards other than the newest where the index places no key.
pub(super) fn empty_old_shards(tx: &Transaction) -> Result<Vec<i64>> {
    let ids = tx
        .prepare_cached(
            "SELECT id FROM shards WHERE count = 0 AND id < (SELECT max(id) FROM shards)",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(ids)
}

/// Forgets the shard `id` and its stale copies (its folder is being removed).
pub(super) fn drop_shard(tx: &Transaction, id: i64) -> Result<()> {
    tx.prepare_cached("DELETE FROM stale WHERE shard = ?1")?
        .execute([id])?;
    tx.prepare_cached("DELETE FROM shards WHERE id = ?1")?
        .execute([id])?;
    Ok(())
}

/// The shard count, and the least filled shard older than `newest` with its bytes.
pub(super) fn sparsest_old_shard(
    tx: &Transaction,
    newest: i64,
) -> Result<(u64, Option<(i64, u64)>)> {
    let count: i64 = tx
        .prepare_cached("SELECT count(*) FROM shards")?
        .query_row([], |r| r.get(0))?;
    let sparsest = tx
        .prepare_cached("SELECT id, size FROM shards WHERE id < ?1 ORDER BY size LIMIT 1")?
        .query_row([newest], |r| {
            Ok((r.get(0)?, r.get::<_, i64>(1)?.max(0) as u64))
        })
        .optional()?;
    Ok((count.max(0) as u64, sparsest))
}

/// Every key the index places in `shard`, with its row.
pub(super) fn keys_in(tx: &Transaction, shard: i64) -> Result<Vec<(Vec<u8>, Placement)>> {
    let rows = tx
        .prepare_cached("SELECT key, shard, size, expires FROM keys WHERE shard = ?1")?
        .query_map([shard], |r| {
            let key: Vec<u8> = r.get(0)?;
            Ok((
                key,
                Placement {
                    shard: r.get(1)?,
                    size: r.get::<_, i64>(2)?.max(0) as u64,
                    expires: r.get(3)?,
                },
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// Records a shard found on disk (when rebuilding the index).
pub(super) fn add_shard_with_id(tx: &Transaction, id: i64) -> Result<()> {
    tx.prepare_cached("INSERT OR IGNORE INTO shards (id) VALUES (?1)")?
        .execute([id])?;
    Ok(())
}

/// Every shard id, oldest first.
pub(super) fn shard_ids(conn: &Connection) -> Result<Vec<i64>> {
    let ids = conn
        .prepare_cached("SELECT id FROM shards ORDER BY id")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(ids)
}

/// Removes every row of expired keys; returns (shard, key) of each.
pub(super) fn remove_expired(tx: &Transaction, now: f64) -> Result<Vec<(i64, Vec<u8>)>> {
    let rows = tx
        .prepare_cached("DELETE FROM keys WHERE expires <= ?1 RETURNING shard, key")?
        .query_map([now], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// Removes every row and stale record; returns how many rows there were.
pub(super) fn clear(tx: &Transaction) -> Result<u64> {
    let (count, _) = totals(tx)?;
    tx.execute_batch("DELETE FROM keys; DELETE FROM stale;")?;
    Ok(count)
}

/// (rows, bytes of keys and values), expired rows included.
pub(super) fn totals(conn: &Connection) -> Result<(u64, u64)> {
    sqlite::totals(conn)
}

/// Rows that have not expired.
pub(super) fn live_count(conn: &Connection, now: f64) -> Result<u64> {
    sqlite::live_count(conn, "keys", now)
}

/// Places `key` in `shard` unless a newer shard already holds it (rebuilding the index
/// newest shard first); a copy that loses is recorded as stale.
pub(super) fn adopt(
    tx: &Transaction,
    key: &[u8],
    shard: i64,
    size: u64,
    expires: Option<f64>,
) -> Result<()> {
    let added = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO keys (key, shard, size, expires) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![key, shard, size as i64, expires])?;
    if added == 0 {
        mark_stale(tx, shard, key)?;
    }
    Ok(())
}
