//! A sharded handle's locked state: its index connection (and which file it has open),
//! its open shards, and the write transaction every change runs in.

use super::index;
use super::shards::OpenShards;
use crate::backend::{Backend, Stats};
use crate::error::{Error, ErrorKind, Result};
use crate::sqlite;
use rusqlite::{Connection, Transaction};

/// Superseded copies removed at the start of each write (more at open and close).
const STALE_PER_WRITE: u32 = 4;

pub(super) struct State {
    /// The index connection; None once closed.
    pub(super) index: Option<Connection>,
    /// Device and inode of the `index.db` the connection has open.
    pub(super) index_file: Option<(u64, u64)>,
    /// The last call failed with an I/O error or found the index damaged: the index is
    /// opened anew before the next call (a connection SQLite left unable to write, or
    /// an `index.db` removed or replaced, which the new open finds or rebuilds).
    pub(super) suspect: bool,
    pub(super) shards: OpenShards,
    pub(super) stats: Stats,
}

impl State {
    pub(super) fn index(&self) -> Result<&Connection> {
        self.index.as_ref().ok_or_else(Error::closed)
    }

    /// Runs `f` in a write transaction on the index (see [`index`] for why every shard
    /// change happens inside one), after removing a few superseded copies.
    pub(super) fn transaction<R>(
        &mut self,
        f: impl FnOnce(&Transaction, &mut OpenShards) -> Result<R>,
    ) -> Result<R> {
        self.check_index_file()?;
        let State { index, shards, .. } = self;
        let tx = sqlite::immediate(index.as_mut().ok_or_else(Error::closed)?)?;
        // Best effort: a copy that cannot be removed now is tried again later, and is
        // never returned meanwhile.
        let _ = remove_stale(&tx, shards, STALE_PER_WRITE);
        let done = f(&tx, shards).and_then(|r| Ok(tx.commit().map(|()| r)?));
        let unlisted = std::mem::take(&mut shards.unlisted);
        if done.is_ok() {
            for id in unlisted {
                shards.remove_folder(id);
            }
        }
        done
    }

    /// Fails with a stale-connection error when `index.db` is no longer the file this
    /// handle has open (removed, or replaced by another process's new index): writing
    /// on would split the cache in two. The caller reopens the index and tries again.
    pub(super) fn check_index_file(&self) -> Result<()> {
        let path = self.shards.dir.join("index.db");
        let now = crate::disk::file_id(&path);
        if now.is_some() && now == self.index_file {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::Corrupt,
            format!("{} was removed or replaced while open", path.display()),
        )
        .with_stale_connection())
    }

    /// Removes every superseded copy (at open and close).
    pub(super) fn remove_all_stale(&mut self) -> Result<()> {
        while self.transaction(|tx, shards| remove_stale(tx, shards, 64))? > 0 {}
        Ok(())
    }
}

/// Removes up to `limit` superseded copies from their shards; returns how many.
pub(super) fn remove_stale(tx: &Transaction, shards: &mut OpenShards, limit: u32) -> Result<usize> {
    let stale = index::stale(tx, limit)?;
    for (shard, key) in &stale {
        shards.get(*shard, true)?.delete(key)?;
        index::forget_stale(tx, *shard, key)?;
    }
    Ok(stale.len())
}
