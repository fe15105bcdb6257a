//! Read-only connections that let the threads of one handle read in parallel: a pool
//! of them per database, generic over what a connection holds ([`ReadConnection`]), used
//! by the file kind's store and the sharded kind's index and shards.
//!
//! The handle's own connection sits behind its lock, so every call of every thread
//! queues there, although SQLite in WAL mode lets readers run beside each other and
//! beside a writer. A get or has first borrows one of these connections (opened on
//! demand, at most [`MAX_READERS`]) and reads through it without the handle's lock.
//! Whatever a plain read cannot finish (an expired entry to remove, a value file that
//! vanished or is damaged, any error, every connection busy) goes the usual way, through
//! the handle's connection, which reads again and does the rest; a failed connection is
//! dropped, not reused.
//!
//! An autocommit read sees every commit made before it began, by this handle or any
//! other process, so a get through a reader is exactly as fresh as one through the
//! handle's connection.
//!
//! Fork safety: a read enters a [`Gate`] first; the fork handlers close the gate and
//! wait until no read is inside, so no thread is inside SQLite on a reader when the
//! process forks. A read that finds the gate closed does not wait: it takes the handle's
//! connection (whose lock the fork handlers hold), so reads that never stop coming cannot
//! keep a fork waiting, as they could a read-write lock's writer.

use super::rows::{open_reader, probe_entry, read_entry, Read};
use super::values::Values;
use crate::backend::Lookup;
use crate::error::Result;
use crate::sink::Sink;
use crate::sync::fork;
use crate::sync::{Gate, Inside, Mutex};
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

/// Read connections per handle at most (more threads than this share them, or take
/// the handle's connection).
pub(crate) const MAX_READERS: usize = 4;

/// What a pooled reader holds, and how one is opened for the database(s) in a directory.
pub(crate) trait ReadConnection: Sized + Send {
    fn open(dir: &Path) -> Result<Self>;
}

/// A reader of the file kind's store: its database and its `values/` folder.
pub(crate) struct StoreReader {
    conn: Connection,
    values: Values,
}

impl ReadConnection for StoreReader {
    fn open(dir: &Path) -> Result<Self> {
        let (conn, values) = open_reader(dir)?;
        Ok(StoreReader { conn, values })
    }
}

/// How many connections a set of pools may hold open together: each file handle has
/// its own; a sharded handle's shards share one, so their number bounds the files held
/// open however many shards are.
#[derive(Clone)]
pub(crate) struct ConnectionBudget {
    open: Arc<AtomicUsize>,
    max: usize,
}

impl ConnectionBudget {
    pub fn new(max: usize) -> ConnectionBudget {
        ConnectionBudget {
            open: Arc::new(AtomicUsize::new(0)),
            max,
        }
    }

    fn take(&self) -> bool {
        if self.open.fetch_add(1, Relaxed) >= self.max {
            self.open.fetch_sub(1, Relaxed);
            return false;
        }
        true
    }

    fn give_back(&self, n: usize) {
        self.open.fetch_sub(n, Relaxed);
    }
}

struct Pooled<R> {
    reader: R,
    /// The [`Readers::generation`] it was opened in.
    generation: u64,
}

pub(crate) struct Readers<R> {
    dir: PathBuf,
    /// Entered while a connection is in use; closed by the fork handlers.
    gate: Arc<Gate>,
    /// The connections not in use; None once closed.
    idle: Arc<Mutex<Option<Vec<Pooled<R>>>>>,
    /// Connections open, in use or idle (with those of the pools it is shared with).
    budget: ConnectionBudget,
    /// Advanced when the handle replaces its own connection (after an I/O error, or a
    /// store replaced under it): connections of an older generation are not reused.
    generation: AtomicU64,
    /// Lookups answered here (the handle's counters hold the others).
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    /// The fork count ([`fork::forks`]) of the process that opened the connections. A
    /// child of fork reads through the handle's connection instead (SQLite connections
    /// are not to be used on both sides of a fork; the handle's own is kept safe by the
    /// fork handlers, these are not).
    forks: u64,
}

impl<R: ReadConnection + 'static> Readers<R> {
    /// Registers with the fork handlers at `rank`, after the handle's own lock (same
    /// rank, taken in registration order); no thread holds a reader while waiting for
    /// that lock. Opens connections only while `budget` allows (0: every call takes
    /// the handle's connection).
    pub fn new(dir: &Path, rank: usize, budget: ConnectionBudget) -> Readers<R> {
        Readers {
            dir: dir.to_owned(),
            gate: fork::registered(rank, Gate::new()),
            idle: fork::registered(rank, Mutex::new(Some(Vec::new()))),
            budget,
            generation: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            forks: fork::forks(),
        }
    }

    /// Inside the pool's gate (which the fork handlers close, waiting for those inside)
    /// for the guard's life: None when closed, or in a child of fork. For a read that
    /// goes on past its use of a connection.
    pub fn enter(&self) -> Option<Inside<'_>> {
        if fork::forks() != self.forks {
            return None; // a child of fork: its parent's connections stay untouched
        }
        self.gate.enter()
    }

    /// Runs `read` on an idle connection (or a new one, within the budget); None
    /// when closed, when every connection is busy, or when `read` gives None (the
    /// connection is then dropped: it may have failed).
    pub fn with_reader<T>(&self, read: impl FnOnce(&R) -> Option<T>) -> Option<T> {
        let _inside = self.enter()?;
        let idle = self.idle.lock().as_mut()?.pop();
        let pooled = match idle {
            Some(pooled) => pooled,
            None => self.open_one()?,
        };
        let result = read(&pooled.reader);
        let current = pooled.generation == self.generation.load(Relaxed);
        let unused = match (&result, current, self.idle.lock().as_mut()) {
            (Some(_), true, Some(idle)) => {
                idle.push(pooled);
                None
            }
            _ => Some(pooled),
        };
        if let Some(pooled) = unused {
            self.budget.give_back(1);
            drop(pooled); // outside the idle list's lock
        }
        result
    }

    /// Counts a lookup answered here.
    pub fn count(&self, lookup: Lookup) -> Lookup {
        match lookup {
            Lookup::Hit => self.hits.fetch_add(1, Relaxed),
            _ => self.misses.fetch_add(1, Relaxed),
        };
        lookup
    }

    /// The handle replaced its connection: the idle connections are closed, and the
    /// ones in use are when their read ends.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Relaxed);
        let stale = self.idle.lock().as_mut().map(std::mem::take);
        if let Some(stale) = stale {
            self.budget.give_back(stale.len());
        }
    }

    fn open_one(&self) -> Option<Pooled<R>> {
        if !self.budget.take() {
            return None;
        }
        let generation = self.generation.load(Relaxed);
        match R::open(&self.dir) {
            Ok(reader) => Some(Pooled { reader, generation }),
            Err(_) => {
                self.budget.give_back(1);
                None
            }
        }
    }

    /// Closes every idle connection; one in use is dropped when its read ends. Later
    /// reads go to the handle (which reports it closed).
    pub fn close(&self) {
        let idle = self.idle.lock().take();
        if let Some(idle) = idle {
            self.budget.give_back(idle.len());
        }
    }
}

impl<R> Drop for Readers<R> {
    /// Idle connections give their share of the budget back (in use, none are: the
    /// handle is going).
    fn drop(&mut self) {
        if let Some(idle) = self.idle.lock().take() {
            self.budget.give_back(idle.len());
        }
    }
}

impl Readers<StoreReader> {
    /// A get through a read connection: Some(hit or miss), or None when the handle's
    /// connection must answer (see the module documentation). `sink` takes a value only
    /// on Some(Hit).
    pub fn get(&self, key: &[u8], sink: &mut dyn Sink) -> Option<Lookup> {
        self.answer(|r| read_entry(&r.conn, &r.values, key, sink))
    }

    /// As [`Readers::get`] for has: a live entry found without reading its value.
    pub fn has(&self, key: &[u8]) -> Option<Lookup> {
        self.answer(|r| probe_entry(&r.conn, key))
    }

    /// Runs `read` on a reader and keeps a plain hit or miss (counted); anything else
    /// (expired, vanished or damaged: the writer path removes what it must; an error:
    /// the connection is dropped) is None.
    fn answer(&self, read: impl FnOnce(&StoreReader) -> Result<Read>) -> Option<Lookup> {
        let lookup = match self.with_reader(|r| read(r).ok())? {
            Read::Hit => Lookup::Hit,
            Read::Miss => Lookup::Miss,
            _ => return None,
        };
        Some(self.count(lookup))
    }
}
