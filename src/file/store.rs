//! One SQLite store in a directory: the schema and every statement the file cache runs
//! (opening, pragmas and error mapping are shared with the sharded index, in
//! [`crate::sqlite`]). Not thread-safe by itself; [`super::FileCache`] guards it.
//!
//! Layout of `<dir>`:
//! - `cache.db` (+ `-wal`, `-shm`): the entries, in WAL mode.
//! - `values/`: one file per value of 32 KiB or more (see [`super::values`]).
//!
//! Consistency of value files with rows, whatever moment a process dies at:
//! - A new file's name is committed to `orphans` (with the time) *before* the file is
//!   written; the transaction that inserts the row naming it deletes that record. A
//!   writer whose record has gone (collected as stale) aborts instead of committing.
//! - The transaction that stops a row naming a file (delete, pop, replace, evict,
//!   expire, clear) records the name in `orphans` (time 0); the file is removed after
//!   the commit and the record deleted later.
//! - Opening a store removes the files of every record at time 0 or older than
//!   [`STALE_PENDING`], and the records. So no row ever names a missing or partial
//!   file, and no crash leaks a file past the next open, without scanning `values/`.

use super::rows::{
    entry_columns, entry_row, probe_entry, read_entry, EntryRow, Read, RowValue, ValueAt, SCHEMA,
};
use super::values::Values;
use crate::backend::VisitMany;
use crate::backend::{Change, Current, Decide, KeyPage, Lookup, Remaining, Visit};
use crate::clock::wall_now;
use crate::disk;
use crate::error::{Error, ErrorKind, Result};
use crate::sink::Sink;
use crate::sqlite::checkpointer::WalWatch;
use crate::sqlite::{self, SqliteOptions};
use crate::ttl;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use std::path::Path;
use std::sync::Arc;

/// A pending value file older than this belongs to a writer that died (a live writer
/// commits within the busy timeout).
const STALE_PENDING: f64 = 120.0;

/// Called with an entry's key, size (bytes of key and value) and expiry.
pub(crate) type EntryVisitor<'a> = dyn FnMut(&[u8], u64, Option<f64>) -> Result<()> + 'a;

/// Where a value being stored lives.
#[derive(Clone, Copy)]
pub(crate) enum Stored<'a> {
    Inline(&'a [u8]),
    /// In the value file of this name, already written in full.
    File(&'a str),
}

/// What a set removed besides the key's old value.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Culled {
    pub expired: u64,
    pub evicted: u64,
}

pub(crate) struct Store {
    conn: Connection,
    /// The checkpoints of its WAL (see [`crate::sqlite::checkpointer`]); read by tests.
    #[cfg_attr(not(test), allow(dead_code))]
    pub wal: Arc<WalWatch>,
    options: SqliteOptions,
    /// Shared with closures that run inside a transaction (which borrows the store).
    pub values: Arc<Values>,
    /// Orphan records whose files this handle has removed; deleted in the next write.
    removed_orphans: Vec<String>,
    /// Value files written since the last save, to fsync on save.
    unsynced: Vec<String>,
}

impl Store {
    /// Opens (creating when needed) the store in `dir`.
    pub fn open(dir: &Path, options: SqliteOptions) -> Result<Store> {
        disk::create_dir(dir)?;
        let values = Arc::new(Values::open(dir)?);
        let (conn, wal) = sqlite::open(&dir.join("cache.db"), &SCHEMA, options, |_| Ok(()))?;
        let mut store = Store {
            conn,
            wal,
            options,
            values,
            removed_orphans: Vec::new(),
            unsynced: Vec::new(),
        };
        store
            .collect_orphans()
            .map_err(|e| store.confirm_damage(e))?;
        Ok(store)
    }

    /// Replaces the connection (and the `values/` descriptor) with new ones, keeping
    /// what this handle still owes the store: value files to sync, orphan records to
    /// delete.
    ///
    /// The old connection closes first: SQLite shares one `-shm` mapping among a
    /// process's connections to a database, so a new connection opened beside a
    /// read-only one would inherit its read-only state. Until the new one is open the
    /// store holds an empty in-memory connection, and the caller tries again later.
    pub fn reconnect(&mut self, dir: &Path) -> Result<()> {
        let placeholder = Connection::open_in_memory()?;
        let old = std::mem::replace(&mut self.conn, placeholder);
        sqlite::discard(old);
        let mut fresh = Store::open(dir, self.options)?;
        fresh.unsynced.append(&mut self.unsynced);
        fresh.removed_orphans.append(&mut self.removed_orphans);
        *self = fresh;
        Ok(())
    }

    /// Removes the value files a crashed or finished writer left recorded as orphans.
    fn collect_orphans(&mut self) -> Result<()> {
        let stale: Vec<String> = {
            let mut stmt = self
                .conn
                .prepare_cached("SELECT name FROM orphans WHERE since <= ?1")?;
            let rows = stmt.query_map([wall_now() - STALE_PENDING], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        if stale.is_empty() {
            return Ok(());
        }
        for name in &stale {
            self.values.remove(name);
        }
        self.removed_orphans.extend(stale);
        self.transaction(|_, _| Ok(()))
    }

    /// Runs `f` in an IMMEDIATE transaction (the write lock from the start, so two
    /// writers never deadlock upgrading). Files `f` pushes to its list stop being named
    /// by any row: they are recorded as orphans in the same transaction and removed after
    /// the commit.
    fn transaction<R>(
        &mut self,
        f: impl FnOnce(&Transaction, &mut Vec<String>) -> Result<R>,
    ) -> Result<R> {
        let done = std::mem::take(&mut self.removed_orphans);
        let mut freed = Vec::new();
        let result = (|| {
            let tx = sqlite::immediate(&mut self.conn)?;
            if !done.is_empty() {
                let mut forget = tx.prepare_cached("DELETE FROM orphans WHERE name = ?1")?;
                for name in &done {
                    forget.execute([name])?;
                }
            }
            let r = f(&tx, &mut freed)?;
            if !freed.is_empty() {
                let mut record = tx.prepare_cached(
                    "INSERT OR REPLACE INTO orphans (name, since) VALUES (?1, 0)",
                )?;
                for name in &freed {
                    record.execute([name])?;
                }
            }
            tx.commit()?;
            Ok(r)
        })();
        match result {
            Ok(r) => {
                for name in &freed {
                    self.values.remove(name);
                }
                self.removed_orphans = freed;
                Ok(r)
            }
            Err(e) => {
                self.removed_orphans = done;
                Err(e)
            }
        }
    }

    /// Records that a value file of this name is about to be written.
    pub fn reserve_file(&mut self, name: &str) -> Result<()> {
        self.conn
            .prepare_cached("INSERT INTO orphans (name, since) VALUES (?1, ?2)")?
            .execute(params![name, wall_now()])?;
        Ok(())
    }

    /// Gives up a reserved file that will not be stored (best effort: if this fails,
    /// the record goes stale and the next open removes the file).
    pub fn release_file(&mut self, name: &str) {
        self.values.remove(name);
        let _ = self
            .conn
            .execute("DELETE FROM orphans WHERE name = ?1", [name]);
    }

    /// After a commit that stored `row`: its value file is synced on save.
    fn note_written(&mut self, row: &Row) {
        if let Stored::File(name) = row.value {
            self.unsynced.push(name.to_owned());
        }
    }

    /// Stores `key` only when no live entry holds it: None (nothing changed) when one
    /// does, else what the cull removed. One write transaction, so of any number of
    /// handles and processes adding one key exactly one stores.
    pub fn add(
        &mut self,
        key: &[u8],
        value: Stored,
        size: u64,
        expires: Option<f64>,
        flags: u32,
        size_limit: u64,
    ) -> Result<Option<Culled>> {
        let now = wall_now();
        let row = Row {
            key,
            value,
            size,
            expires,
            flags,
        };
        let culled = self.transaction(|tx, freed| {
            if live_expiry(tx, key, now)?.is_some() {
                return Ok(None);
            }
            insert_row(tx, &row, freed)?;
            cull(tx, size_limit, now, freed).map(Some)
        })?;
        if culled.is_some() {
            self.note_written(&row);
        }
        Ok(culled)
    }

    /// Reads the live entry of `key` and applies `decide`, in one write transaction.
    /// A new value is stored inline whatever its size. True when it stored.
    pub fn update(
        &mut self,
        key: &[u8],
        decide: &mut Decide,
        size_limit: u64,
    ) -> Result<(bool, Culled)> {
        let now = wall_now();
        let values = self.values.clone();
        self.transaction(|tx, freed| {
            let row = tx
                .prepare_cached(concat!(
                    "SELECT ",
                    entry_columns!(),
                    " FROM entries WHERE key = ?1"
                ))?
                .query_row([key], |r| entry_row(r).map(EntryRow::owned))
                .optional()?;
            let live = row.filter(|(_, expires, _)| !ttl::expired(*expires, now));
            let (current, old_expires) = match live {
                None => (None, None),
                Some((value, expires, flags)) => {
                    let bytes = match value {
                        RowValue::Inline(bytes) => bytes,
                        RowValue::File(name, len) => values.read_required(&name, len)?,
                    };
                    (Some((bytes, flags)), expires)
                }
            };
            let change = decide(current.as_ref().map(|(value, flags)| Current {
                value,
                flags: *flags,
            }))?;
            let Change::Put { value, flags, ttl } = change else {
                return Ok((false, Culled::default()));
            };
            let expires = match ttl {
                Some(ttl) if ttl.is_expired_at_once() => {
                    let old = delete_row(tx, key)?;
                    freed.extend(old.and_then(|(file, _)| file));
                    return Ok((true, Culled::default()));
                }
                Some(ttl) => ttl.deadline_from(now),
                None => old_expires,
            };
            let size = (key.len() + value.len()) as u64;
            crate::backend::check_fits(size, size_limit, "the cache")?;
            let row = Row {
                key,
                value: Stored::Inline(&value),
                size,
                expires,
                flags,
            };
            insert_row(tx, &row, freed)?;
            Ok((true, cull(tx, size_limit, now, freed)?))
        })
    }

    /// Gives the live entry of `key` the expiry `expires` (a TTL of 0: removes it).
    /// False when there is none.
    pub fn touch(&mut self, key: &[u8], expires: Option<f64>, remove: bool) -> Result<bool> {
        let now = wall_now();
        self.transaction(|tx, freed| {
            if live_expiry(tx, key, now)?.is_none() {
                return Ok(false);
            }
            if remove {
                let old = delete_row(tx, key)?;
                freed.extend(old.and_then(|(file, _)| file));
            } else {
                tx.prepare_cached("UPDATE entries SET expires = ?2 WHERE key = ?1")?
                    .execute(params![key, expires])?;
            }
            Ok(true)
        })
    }

    /// The expiry of the live entry of `key`: None when absent or expired.
    pub fn ttl(&mut self, key: &[u8]) -> Result<Option<Remaining>> {
        let now = wall_now();
        Ok(
            live_expiry(&self.conn, key, now)?.map(|expires| match expires {
                None => Remaining::Forever,
                Some(at) => Remaining::Seconds(at - now),
            }),
        )
    }

    /// Live keys starting with `prefix`, after `after`, in key order.
    pub fn key_page(&mut self, prefix: &[u8], after: Option<&[u8]>) -> Result<KeyPage> {
        key_page(&self.conn, "entries", prefix, after, wall_now())
    }

    /// Removes every expired entry; returns how many.
    pub fn purge_expired(&mut self) -> Result<u64> {
        let now = wall_now();
        self.transaction(|tx, freed| {
            let mut stmt =
                tx.prepare_cached("DELETE FROM entries WHERE expires <= ?1 RETURNING file")?;
            let files = stmt.query_map([now], |r| r.get::<_, Option<String>>(0))?;
            let mut purged = 0;
            for f in files {
                freed.extend(f?);
                purged += 1;
            }
            Ok(purged)
        })
    }

    /// Looks every key up in one read transaction (one snapshot).
    pub fn get_many(&mut self, keys: &[&[u8]], visit: &mut VisitMany) -> Result<()> {
        let now = wall_now();
        let values = self.values.clone();
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(concat!(
                "SELECT ",
                entry_columns!(),
                " FROM entries WHERE key = ?1"
            ))?;
            for (i, key) in keys.iter().enumerate() {
                let file = stmt
                    .query_row([key], |r| {
                        let row = entry_row(r)?;
                        if ttl::expired(row.expires, now) {
                            return Ok(None);
                        }
                        Ok(match row.value {
                            ValueAt::File(name, len) => Some((name, len, row.flags)),
                            ValueAt::Inline(value) => {
                                visit(i, value, row.flags);
                                None
                            }
                        })
                    })
                    .optional()?
                    .flatten();
                if let Some((name, len, flags)) = file {
                    // The read transaction keeps the row, but not the file: a writer
                    // that replaced the key since may have removed it (a miss then).
                    if let Some(bytes) = values.read(&name, len)? {
                        visit(i, &bytes, flags);
                    }
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Stores every row in one transaction, then culls once. Value files are written
    /// (and reserved) by the caller before.
    pub fn put_many(&mut self, rows: &[Row], size_limit: u64) -> Result<Culled> {
        let now = wall_now();
        let culled = self.transaction(|tx, freed| {
            let mut writer = RowWriter::new(tx)?;
            for row in rows {
                writer.insert(row, freed)?;
            }
            drop(writer);
            cull(tx, size_limit, now, freed)
        })?;
        for row in rows {
            self.note_written(row);
        }
        Ok(culled)
    }

    /// Removes every key in one transaction; returns how many were live.
    pub fn delete_many(&mut self, keys: &[&[u8]]) -> Result<(u64, u64)> {
        let now = wall_now();
        self.transaction(|tx, freed| {
            let mut removed = (0, 0);
            let mut writer = RowWriter::new(tx)?;
            for key in keys {
                if let Some(row) = writer.delete(key)? {
                    count_removed(row, now, freed, &mut removed);
                }
            }
            Ok(removed)
        })
    }

    /// Removes every key starting with `prefix` in one transaction; returns how many
    /// were live and how many expired.
    pub fn delete_prefix(&mut self, prefix: &[u8]) -> Result<(u64, u64)> {
        let now = wall_now();
        self.transaction(|tx, freed| {
            let (sql, upper) = match prefix_upper(prefix) {
                Some(upper) => ("DELETE FROM entries WHERE key >= ?1 AND key < ?2 RETURNING file, expires", upper),
                None => ("DELETE FROM entries WHERE key >= ?1 AND ?2 IS NOT NULL RETURNING file, expires", Vec::new()),
            };
            let mut stmt = tx.prepare_cached(sql)?;
            let rows = stmt.query_map(params![prefix, upper], |r| {
                Ok((r.get::<_, Option<String>>(0)?, r.get::<_, Option<f64>>(1)?))
            })?;
            let mut removed = (0, 0);
            for row in rows {
                count_removed(row?, now, freed, &mut removed);
            }
            Ok(removed)
        })
    }

    /// Removes `key` when its entry has expired by `now`.
    fn remove_expired(&mut self, key: &[u8], now: f64) -> Result<()> {
        self.transaction(|tx, freed| {
            let file: Option<Option<String>> = tx
                .prepare_cached(
                    "DELETE FROM entries WHERE key = ?1 AND expires <= ?2 RETURNING file",
                )?
                .query_row(params![key, now], |r| r.get(0))
                .optional()?;
            freed.extend(file.flatten());
            Ok(())
        })
    }

    /// Looks `key` up and hands its value to `sink` (inline values straight from
    /// SQLite's buffer). An expired entry is removed.
    pub fn get(&mut self, key: &[u8], sink: &mut dyn Sink) -> Result<Lookup> {
        // A value file can vanish between reading the row and opening the file when
        // another handle replaces the key at that moment: then look again.
        let mut last_missing = None;
        for _ in 0..3 {
            match read_entry(&self.conn, &self.values, key, sink)? {
                Read::Miss => return Ok(Lookup::Miss),
                Read::Hit => return Ok(Lookup::Hit),
                Read::Expired(now) => {
                    return self.remove_expired(key, now).map(|_| Lookup::Expired)
                }
                Read::FileVanished(name) => last_missing = Some(name),
                Read::FileFailed(name, e) => return Err(self.drop_damaged(key, &name, e)),
            }
        }
        let name = last_missing.unwrap_or_default();
        let e = Error::new(
            ErrorKind::Corrupt,
            format!("value file {name} named by the store is missing"),
        );
        Err(self.drop_damaged(key, &name, e))
    }

    /// After reporting a damaged value file once, removes its entry so the key reads as
    /// absent from then on and the store stays usable.
    fn drop_damaged(&mut self, key: &[u8], name: &str, e: Error) -> Error {
        if e.kind() == ErrorKind::Corrupt {
            let _ = self.transaction(|tx, freed| {
                let n = tx
                    .prepare_cached("DELETE FROM entries WHERE key = ?1 AND file = ?2")?
                    .execute(params![key, name])?;
                if n > 0 {
                    freed.push(name.to_owned());
                }
                Ok(())
            });
        }
        e
    }

    /// True when `key` holds a live entry; an expired one is removed.
    pub fn has(&mut self, key: &[u8]) -> Result<Lookup> {
        match probe_entry(&self.conn, key)? {
            Read::Expired(now) => self.remove_expired(key, now).map(|_| Lookup::Expired),
            Read::Hit => Ok(Lookup::Hit),
            _ => Ok(Lookup::Miss),
        }
    }

    /// Removes `key` and hands its value to `visit`, in one write transaction, so of
    /// any number of handles and processes popping a key exactly one gets it.
    pub fn pop(&mut self, key: &[u8], visit: &mut Visit) -> Result<Lookup> {
        let now = wall_now();
        let values = self.values.clone();
        let taken = self.transaction(|tx, freed| {
            let row = tx
                .prepare_cached(concat!(
                    "DELETE FROM entries WHERE key = ?1 RETURNING ",
                    entry_columns!()
                ))?
                .query_row([key], |r| {
                    let (value, expires, flags) = entry_row(r)?.owned();
                    Ok((value, ttl::expired(expires, now), flags))
                })
                .optional()?;
            let Some((value, expired, flags)) = row else {
                return Ok(None);
            };
            let bytes = match value {
                RowValue::Inline(bytes) => bytes,
                RowValue::File(name, len) => {
                    // Read before the commit: if the file cannot be read, nothing is popped.
                    let bytes = if expired {
                        Vec::new()
                    } else {
                        values.read_required(&name, len)?
                    };
                    freed.push(name);
                    bytes
                }
            };
            Ok(Some((bytes, expired, flags)))
        })?;
        Ok(match taken {
            None => Lookup::Miss,
            Some((_, true, _)) => Lookup::Expired,
            Some((bytes, false, flags)) => {
                visit(&bytes, flags);
                Lookup::Hit
            }
        })
    }

    /// Removes `key`.
    pub fn delete(&mut self, key: &[u8]) -> Result<Lookup> {
        let now = wall_now();
        self.transaction(|tx, freed| {
            Ok(match delete_row(tx, key)? {
                None => Lookup::Miss,
                Some((file, expires)) => {
                    freed.extend(file);
                    if ttl::expired(expires, now) {
                        Lookup::Expired
                    } else {
                        Lookup::Hit
                    }
                }
            })
        })
    }

    /// `e`, or `Io` when it is damage SQLite reported but the store checks whole (see
    /// [`sqlite::confirm_damage`]).
    pub fn confirm_damage(&self, e: Error) -> Error {
        sqlite::confirm_damage(&self.conn, e)
    }

    /// Removes every entry; returns how many there were.
    pub fn clear(&mut self) -> Result<u64> {
        self.transaction(|tx, freed| {
            let (count, _) = sqlite::totals(tx)?;
            {
                let mut stmt =
                    tx.prepare_cached("SELECT file FROM entries WHERE file IS NOT NULL")?;
                let files = stmt.query_map([], |r| r.get::<_, String>(0))?;
                for f in files {
                    freed.push(f?);
                }
            }
            tx.execute("DELETE FROM entries", [])?;
            Ok(count)
        })
    }

    /// Entries that have not expired.
    pub fn len(&mut self) -> Result<u64> {
        sqlite::live_count(&self.conn, "entries", wall_now())
    }

    /// (entries, bytes of keys and values), expired ones not yet removed included.
    pub fn totals(&mut self) -> Result<(u64, u64)> {
        sqlite::totals(&self.conn)
    }

    /// Makes every commit so far and every value file durable.
    pub fn save(&mut self) -> Result<()> {
        if !self.removed_orphans.is_empty() {
            self.transaction(|_, _| Ok(()))?;
        }
        self.values.sync(&self.unsynced)?;
        self.unsynced.clear();
        sqlite::sync(&self.conn)
    }

    /// Calls `f` with every entry's key, size and expiry (expired ones included).
    pub fn for_each_entry(&mut self, f: &mut EntryVisitor) -> Result<()> {
        let mut stmt = self
            .conn
            .prepare("SELECT key, size, expires FROM entries")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let key: Vec<u8> = row.get(0)?;
            f(&key, row.get::<_, i64>(1)?.max(0) as u64, row.get(2)?)?;
        }
        Ok(())
    }

    /// Full cleanup pass: removes files in `values/` that no row names and no writer
    /// has reserved (what a crash between a reserve and its record could leave, and
    /// anything put there by hand). Returns how many files went.
    pub fn remove_unreferenced_files(&mut self) -> Result<u64> {
        let on_disk = self.values.list()?;
        let mut removed = 0;
        let mut referenced = self.conn.prepare(
            "SELECT EXISTS (SELECT 1 FROM entries WHERE file = ?1)
                 OR EXISTS (SELECT 1 FROM orphans WHERE name = ?1 AND since > 0)",
        )?;
        for name in on_disk {
            if !referenced.query_row([&name], |r| r.get::<_, bool>(0))? {
                self.values.remove(&name);
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Checks the store: SQLite's integrity check, every row's value file present with
    /// the right length, no value file that nothing names. With `repair`, drops the rows
    /// whose file is missing or damaged and removes the unnamed files. Returns what it
    /// found, one line each (and what it did about it).
    pub fn check(&mut self, repair: bool) -> Result<Vec<String>> {
        let mut found = Vec::new();
        let verdict: String = self
            .conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        if verdict != "ok" {
            found.push(format!(
                "cache.db: SQLite integrity check: {verdict} (not repairable here)"
            ));
        }
        let rows: Vec<(Vec<u8>, String, u64)> = {
            let mut stmt = self.conn.prepare(
                "SELECT key, file, size - length(key) FROM entries WHERE file IS NOT NULL",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)?.max(0) as u64))
            })?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let mut damaged = Vec::new();
        for (key, name, len) in rows {
            let problem = match self.values.read(&name, len) {
                Ok(Some(_)) => continue,
                Ok(None) => format!("value file {name} is missing"),
                Err(e) => e.message().to_owned(),
            };
            found.push(format!(
                "key {}: {problem}{}",
                String::from_utf8_lossy(&key),
                if repair { "; entry dropped" } else { "" }
            ));
            damaged.push((key, name));
        }
        if repair && !damaged.is_empty() {
            self.transaction(|tx, freed| {
                for (key, name) in &damaged {
                    tx.prepare_cached("DELETE FROM entries WHERE key = ?1 AND file = ?2")?
                        .execute(params![key, name])?;
                    freed.push(name.clone());
                }
                Ok(())
            })?;
        }
        let unnamed = {
            let on_disk = self.values.list()?;
            let mut named = self.conn.prepare(
                "SELECT EXISTS (SELECT 1 FROM entries WHERE file = ?1)
                     OR EXISTS (SELECT 1 FROM orphans WHERE name = ?1)",
            )?;
            let mut unnamed = Vec::new();
            for name in on_disk {
                if !named.query_row([&name], |r| r.get::<_, bool>(0))? {
                    unnamed.push(name);
                }
            }
            unnamed
        };
        for name in &unnamed {
            found.push(format!(
                "values/{name}: no entry names it{}",
                if repair { "; removed" } else { "" }
            ));
            if repair {
                self.values.remove(name);
            }
        }
        Ok(found)
    }

    /// Reclaims the free pages of the database (VACUUM) and checkpoints the WAL.
    pub fn compact(&mut self) -> Result<()> {
        self.conn.execute_batch("VACUUM")?;
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    /// Deletes this handle's leftover orphan records before the connection closes.
    pub fn close(mut self) -> Result<()> {
        if !self.removed_orphans.is_empty() {
            self.transaction(|_, _| Ok(()))?;
        }
        self.conn.close().map_err(|(_, e)| e.into())
    }
}

/// Removes expired entries, then the least recently stored, until the store's bytes are
/// within `limit`. The entry just stored is the most recent and fits, so it stays.
fn cull(tx: &Transaction, limit: u64, now: f64, freed: &mut Vec<String>) -> Result<Culled> {
    let mut culled = Culled::default();
    if limit == 0 {
        return Ok(culled);
    }
    let total = |tx: &Transaction| -> Result<u64> { Ok(sqlite::totals(tx)?.1) };
    let mut size = total(tx)?;
    if size <= limit {
        return Ok(culled);
    }
    {
        let mut stmt =
            tx.prepare_cached("DELETE FROM entries WHERE expires <= ?1 RETURNING file")?;
        let files = stmt.query_map([now], |r| r.get::<_, Option<String>>(0))?;
        for f in files {
            freed.extend(f?);
            culled.expired += 1;
        }
    }
    size = total(tx)?;
    while size > limit {
        let oldest: Vec<(i64, i64, Option<String>)> = tx
            .prepare_cached("SELECT id, size, file FROM entries ORDER BY id LIMIT 64")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        if oldest.is_empty() {
            break;
        }
        let mut delete = tx.prepare_cached("DELETE FROM entries WHERE id = ?1")?;
        for (id, entry_size, file) in oldest {
            if size <= limit {
                break;
            }
            delete.execute([id])?;
            size = size.saturating_sub(entry_size as u64);
            freed.extend(file);
            culled.evicted += 1;
        }
    }
    Ok(culled)
}

/// An entry to store: its key, where its value is, size (bytes of key and value),
/// expiry and flags.
pub(crate) struct Row<'a> {
    pub key: &'a [u8],
    pub value: Stored<'a>,
    pub size: u64,
    pub expires: Option<f64>,
    pub flags: u32,
}

/// The statements that store rows, prepared once per transaction (a bulk set runs
/// them thousands of times).
struct RowWriter<'t> {
    find: rusqlite::CachedStatement<'t>,
    remove: rusqlite::CachedStatement<'t>,
    insert: rusqlite::CachedStatement<'t>,
    claim: rusqlite::CachedStatement<'t>,
}

impl<'t> RowWriter<'t> {
    fn new(tx: &'t Transaction) -> Result<RowWriter<'t>> {
        Ok(RowWriter {
            find: tx.prepare_cached("SELECT id, file, expires FROM entries WHERE key = ?1")?,
            remove: tx.prepare_cached("DELETE FROM entries WHERE id = ?1")?,
            // OR FAIL: no statement journal. The key was just deleted, so no conflict is
            // possible, and any error rolls the whole transaction back anyway.
            insert: tx.prepare_cached(
                "INSERT OR FAIL INTO entries (key, value, file, size, expires, flags) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?,
            claim: tx.prepare_cached("DELETE FROM orphans WHERE name = ?1")?,
        })
    }

    /// Inserts `row`, replacing the key's earlier row (its file goes to `freed`). A value
    /// file is claimed from `orphans`, where the writer reserved it before writing it.
    fn insert(&mut self, row: &Row, freed: &mut Vec<String>) -> Result<()> {
        let (inline, file) = match row.value {
            Stored::Inline(v) => (Some(v), None),
            Stored::File(name) => {
                if self.claim.execute([name])? != 1 {
                    return Err(Error::new(
                        ErrorKind::Io,
                        format!(
                            "value file {name} was reclaimed as stale before its row was written"
                        ),
                    ));
                }
                (None, Some(name))
            }
        };
        let old = self.delete(row.key)?;
        freed.extend(old.and_then(|(file, _)| file));
        self.insert.execute(params![
            row.key,
            inline,
            file,
            row.size as i64,
            row.expires,
            row.flags
        ])?;
        Ok(())
    }

    /// Deletes the row of `key`: its value file (if any) and expiry, None when absent.
    ///
    /// A lookup, then a delete by rowid only when there is a row: cheaper than one
    /// `DELETE ... RETURNING`, which builds an ephemeral table for its result on every
    /// call, most of a bulk set's time when the keys are new (callgrind).
    fn delete(&mut self, key: &[u8]) -> Result<Option<(Option<String>, Option<f64>)>> {
        let row: Option<(i64, Option<String>, Option<f64>)> = self
            .find
            .query_row([key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        let Some((id, file, expires)) = row else {
            return Ok(None);
        };
        self.remove.execute([id])?;
        Ok(Some((file, expires)))
    }
}

/// Inserts one row (see [`RowWriter::insert`]).
fn insert_row(tx: &Transaction, row: &Row, freed: &mut Vec<String>) -> Result<()> {
    RowWriter::new(tx)?.insert(row, freed)
}

/// Deletes the row of `key` (see [`RowWriter::delete`]).
fn delete_row(tx: &Transaction, key: &[u8]) -> Result<Option<(Option<String>, Option<f64>)>> {
    RowWriter::new(tx)?.delete(key)
}

/// Counts a removed row (its value file, expiry) as live or expired, `removed` being
/// (live, expired), and hands its file to `freed`.
fn count_removed(
    (file, expires): (Option<String>, Option<f64>),
    now: f64,
    freed: &mut Vec<String>,
    removed: &mut (u64, u64),
) {
    freed.extend(file);
    if ttl::expired(expires, now) {
        removed.1 += 1;
    } else {
        removed.0 += 1;
    }
}

/// The expiry of the live row of `key` (Some(None): never expires); None when there is
/// no live row.
fn live_expiry(conn: &Connection, key: &[u8], now: f64) -> Result<Option<Option<f64>>> {
    let expires: Option<Option<f64>> = conn
        .prepare_cached("SELECT expires FROM entries WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?;
    Ok(expires.filter(|e| !ttl::expired(*e, now)))
}

pub(crate) use sqlite::{key_page, prefix_upper};
