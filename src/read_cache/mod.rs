//! A consistent in-process read cache for the SQLite-backed kinds (`read_cache=BYTES`
//! on `file:` and `sharded:`): values this handle has read, kept in memory and served
//! without SQLite while nothing they depend on has changed, exactly as fresh as a read
//! through SQLite, across every handle and process that shares the store.
//!
//! How it knows what changed:
//! - Every write to the store, by any handle of any process, logs the keys whose entries
//!   it replaced, changed or removed in the store's change log (the `changes` table,
//!   kept by triggers: [`crate::sqlite::change_log`]), in the writer's own transaction,
//!   under sequence numbers that are never reused.
//! - Whether anything has committed at all since a moment is read from SQLite's WAL
//!   index header in shared memory ([`wal_index`]): no system call, no lock.
//! - A get first reads that header. Unchanged since the cache last caught up: the
//!   cached value is served. Changed: the cache catches up (reads the log's records
//!   after the last it applied, in one autocommit read, and drops those keys), then
//!   serves. A gap in the log (this cache fell more than the log's length behind) drops
//!   everything.
//!
//! Why that is exact: the header is read before the log, so a commit after the read
//! shows as a changed header at the next get; a commit that was acknowledged before a
//! get began changed the header before it, so that get catches up past it. A value
//! read from the store is cached only if no catch-up happened between the moment the
//! read was about to begin (its [`Ticket`]) and the fill, so a value read before a
//! change is never cached after the change's record was applied; one cached before it
//! is dropped by it. This handle's own writes are logged and seen the same way.
//!
//! One thing no header or log can tell: the store's file removed and made anew under
//! the handle (an operator deleting `index.db`, which the next opener rebuilds). The
//! cache's connection still follows the removed file, whose header never moves again.
//! So a get also checks, at most every [`FILE_CHECK_EVERY`], that the path still names
//! the file it follows (a `stat`, too dear for every get); a replaced file drops
//! everything and the cache follows the new one. Only there is a served value up to that
//! long behind.
//!
//! Admission: a value is cached on its key's second miss (`ReadCache::missed`), so keys
//! read once cost no copy. TTLs: an entry is cached with the store's expiry and not
//! served after it. Stats: a get served here counts as a hit like any other.
//!
//! Locks: a get holds the read side of one lock while it checks the header and looks
//! up the entry (so threads serve in parallel); a catch-up holds the write side. The
//! lock is registered with the fork handlers, so no thread is inside SQLite on the
//! cache's connection at a fork; a child of fork does not use the cache at all (the
//! connection is its parent's).

mod wal_index;

use crate::backend::{Backend, Visit};
use crate::clock::{mono_coarse_now, wall_now};
use crate::disk::{file_id, FileId};
use crate::error::Result;
use crate::memory::{MemoryCache, Policy};
use crate::sink::{Sink, ValueFile};
use crate::sqlite;
use crate::sync::fork;
use crate::sync::{Mutex, RwLock};
use crate::ttl::Ttl;
use hashbrown::DefaultHashBuilder;
use rusqlite::Connection;
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wal_index::{Header, WalIndex};

/// The read cache of one SQLite database's entries.
pub(crate) struct ReadCache {
    /// The database whose change log it follows.
    db: PathBuf,
    entries: MemoryCache,
    follow: Arc<RwLock<Follow>>,
    /// The fork count ([`fork::forks`]) of the process that made it.
    forks: u64,
    /// Gets served here.
    pub hits: AtomicU64,
    /// The doorkeeper: the hash of the last key that missed, per slot. A value is cached
    /// on its key's second miss only, so a pass over keys read once copies nothing (a
    /// fill cost a cold get a fifth more), while a key read again is cached at once.
    missed: Box<[AtomicU64]>,
    hasher: DefaultHashBuilder,
    /// When the path was last found to name the followed file ([`mono_coarse_now`]).
    file_checked_at: AtomicU64,
}

/// How often a served get checks that the store's path still names the file the cache
/// follows (see the module's note).
const FILE_CHECK_EVERY: Duration = Duration::from_millis(10);

/// How far the cache has followed the store.
struct Follow {
    /// The WAL-index header of `conn`'s database. Declared before `conn`: it must be
    /// dropped first (it points into the connection's mapping).
    index: Option<WalIndex>,
    /// Reads the change log; None until connected, after a failure, and once closed.
    /// Used only under the write side of the lock (the mutex makes `Follow` shareable;
    /// it is never contended).
    conn: Mutex<Option<Connection>>,
    /// The header as read just before the log was last read: while the header still
    /// reads this, nothing has committed since. None: catch up before serving.
    seen: Option<Header>,
    /// The number of the last change-log record applied (or, when connecting, the last
    /// number handed out).
    last: i64,
    /// Advanced by every catch-up: a fill whose ticket is older is not stored.
    epoch: u64,
    /// After a failed connection, not tried again before this (the store answers
    /// meanwhile): a store that cannot be followed does not cost every get an open.
    retry_at: Option<Instant>,
    closed: bool,
    /// The file `conn` has open (as its path named it when connecting).
    file: Option<FileId>,
}

/// How long after a failed connection the cache tries again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The moment a get that missed here was about to read the store.
#[derive(Clone, Copy)]
struct Ticket(u64);

/// What the read cache answered.
enum Cached {
    /// The value went to the visitor.
    Hit,
    /// Not here: read the store, then [`ReadCache::fill`] with the ticket.
    Miss(Ticket),
    /// The cache cannot answer (closed, a child of fork, the store unreadable): read the
    /// store, and do not fill.
    Off,
}

impl ReadCache {
    /// A cache of at most `bytes` bytes of keys and values (see
    /// [`MemoryCache::with_limits`] for what an entry takes beyond them) over the
    /// database at `db`, registered with the fork handlers at `rank`. It connects at the
    /// first get.
    pub fn new(db: &Path, bytes: u64, rank: usize) -> ReadCache {
        ReadCache {
            db: db.to_owned(),
            // S3-FIFO: a hit sets a bit under the shard lock rather than moving the entry,
            // and a scan through cold keys does not flush the hot ones.
            entries: MemoryCache::with_policy(0, bytes, Policy::S3Fifo),
            follow: fork::registered(
                rank,
                RwLock::new(Follow {
                    index: None,
                    conn: Mutex::new(None),
                    seen: None,
                    last: 0,
                    epoch: 0,
                    retry_at: None,
                    closed: false,
                    file: None,
                }),
            ),
            forks: fork::forks(),
            hits: AtomicU64::new(0),
            missed: (0..(bytes / 256).clamp(1024, 1 << 20))
                .map(|_| AtomicU64::new(0))
                .collect(),
            hasher: DefaultHashBuilder::default(),
            file_checked_at: AtomicU64::new(0),
        }
    }

    /// True unless a check is due and finds the path naming another file (or none).
    fn still_following_the_file(&self, follow: &Follow) -> bool {
        let now = mono_coarse_now();
        if now.saturating_sub(self.file_checked_at.load(Relaxed))
            < FILE_CHECK_EVERY.as_nanos() as u64
        {
            return true;
        }
        let same = follow.file.is_some() && file_id(&self.db) == follow.file;
        if same {
            self.file_checked_at.store(now, Relaxed);
        }
        same
    }

    /// True when `key` missed before (and the slot is then free again); else it is
    /// remembered as missed once.
    fn missed_before(&self, key: &[u8]) -> bool {
        let hash = self.hasher.hash_one(key) | 1; // never 0, an empty slot
        let slot = &self.missed[(hash >> 1) as usize % self.missed.len()];
        if slot.load(Relaxed) == hash {
            slot.store(0, Relaxed);
            return true;
        }
        slot.store(hash, Relaxed);
        false
    }

    /// Serves `key` to `visit` if it is cached and nothing has committed to the store
    /// since the cache last caught up; otherwise catches up first.
    fn get(&self, key: &[u8], visit: &mut Visit) -> Cached {
        if fork::forks() != self.forks {
            return Cached::Off;
        }
        {
            let follow = self.follow.read();
            if follow.closed {
                return Cached::Off;
            }
            if follow.is_current() && self.still_following_the_file(&follow) {
                return self.serve(key, visit, follow.epoch);
            }
        }
        let mut follow = self.follow.write();
        if follow.closed {
            return Cached::Off;
        }
        if follow.file.is_some() && file_id(&self.db) != follow.file {
            // The store's file was replaced: follow the new one from scratch.
            follow.epoch += 1;
            follow.disconnect();
            follow.retry_at = None;
            let _ = self.entries.clear();
        }
        // Another thread may have caught up while this one waited for the lock.
        if !follow.is_current() && !self.catch_up(&mut follow) {
            return Cached::Off;
        }
        self.serve(key, visit, follow.epoch)
    }

    fn serve(&self, key: &[u8], visit: &mut Visit, epoch: u64) -> Cached {
        let mut hit = false;
        // An expired entry is removed by the memory cache and reads as absent.
        let _ = self.entries.get_flagged(key, &mut |value, flags| {
            hit = true;
            visit(value, flags)
        });
        if hit {
            self.hits.fetch_add(1, Relaxed);
            Cached::Hit
        } else {
            Cached::Miss(Ticket(epoch))
        }
    }

    /// Caches what a get read from the store after missing here with `ticket`: `value`
    /// and `flags` under `key`, until the Unix time `expires` (None: never). Dropped
    /// on the key's first miss (see `missed`), when the cache has caught up since the
    /// ticket (the value may predate a change the catch-up applied), or when it does not
    /// fit.
    fn fill(&self, ticket: Ticket, key: &[u8], value: &[u8], flags: u32, expires: Option<f64>) {
        if self.missed_before(key) {
            self.fill_admitted(ticket, key, value, flags, expires);
        }
    }

    /// [`ReadCache::fill`] for a key the doorkeeper (`missed_before`) has let in.
    fn fill_admitted(
        &self,
        ticket: Ticket,
        key: &[u8],
        value: &[u8],
        flags: u32,
        expires: Option<f64>,
    ) {
        let ttl = match expires {
            None => Ttl::Never,
            Some(at) => match Duration::try_from_secs_f64(at - wall_now()) {
                Ok(left) if !left.is_zero() => Ttl::After(left),
                _ => return,
            },
        };
        // Never waits: a fill runs inside the store's read (under the handle's lock or
        // a read gate), and the lock's writer may be the fork handlers, which take those
        // first. A fill that would wait is simply skipped.
        let Some(follow) = self.follow.try_read() else {
            return;
        };
        if follow.epoch == ticket.0 && follow.seen.is_some() && !follow.closed {
            // Too large for the cache's bytes: simply not cached.
            let _ = self.entries.set_flagged(key, value, ttl, flags);
        }
    }

    /// Brings the cache up to the store's current state: reads the change log past the
    /// last record applied and drops those keys (everything, after a gap). False when
    /// the store could not be read: then nothing is cached until a catch-up succeeds.
    fn catch_up(&self, follow: &mut Follow) -> bool {
        follow.epoch += 1;
        match self.read_changes(follow) {
            Ok(()) => true,
            Err(_) => {
                let _ = self.entries.clear();
                follow.disconnect();
                false
            }
        }
    }

    fn read_changes(&self, follow: &mut Follow) -> Result<()> {
        follow.seen = None;
        if follow.conn.get_mut().is_none() {
            if follow.retry_at.is_some_and(|at| Instant::now() < at) {
                return Err(crate::error::Error::new(
                    crate::error::ErrorKind::Io,
                    "the read cache's connection failed recently",
                ));
            }
            let connected = self.connect(follow);
            follow.retry_at = connected.is_err().then(|| Instant::now() + RETRY_AFTER);
            return connected;
        }
        let conn = follow.conn.get_mut();
        let (Some(index), Some(conn)) = (&follow.index, conn.as_ref()) else {
            unreachable!("connected: both are set");
        };
        // Read before the log: a commit after this moment changes the header again.
        let before = index.read();
        let mut stmt =
            conn.prepare_cached("SELECT seq, key FROM changes WHERE seq > ?1 ORDER BY seq")?;
        let mut rows = stmt.query([follow.last])?;
        let mut last = follow.last;
        let mut cleared = false;
        while let Some(row) = rows.next()? {
            let seq: i64 = row.get(0)?;
            // Records are numbered one after another (AUTOINCREMENT, one writer at a
            // time, a rolled-back insert takes its number back): a jump means records
            // were trimmed before this cache read them, and anything cached may be stale.
            if seq != last + 1 && !cleared {
                let _ = self.entries.clear();
                cleared = true;
            }
            let key: Vec<u8> = row.get(1)?;
            let _ = self.entries.delete(&key);
            last = seq;
        }
        follow.last = last;
        follow.seen = before;
        Ok(())
    }

    /// Opens the cache's connection and starts following the log from its end, with
    /// nothing cached.
    fn connect(&self, follow: &mut Follow) -> Result<()> {
        let _ = self.entries.clear();
        let file = file_id(&self.db);
        let conn = sqlite::open_second(&self.db)?;
        if file.is_none() || file_id(&self.db) != file {
            return Err(crate::error::Error::new(
                crate::error::ErrorKind::Busy,
                "the store's file was being replaced",
            ));
        }
        // A first read maps the WAL index.
        conn.query_row("SELECT count(*) FROM changes WHERE seq < 0", [], |_| Ok(()))?;
        let Some(index) = WalIndex::of(&conn) else {
            // No shared WAL index to watch: this cache can never serve.
            return Err(crate::error::Error::new(
                crate::error::ErrorKind::Io,
                "the store's WAL index is not readable",
            ));
        };
        let before = index.read();
        // The last number handed out (the next record gets the one after it).
        follow.last = conn.query_row(
            "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'changes'), 0),
                        coalesce((SELECT max(seq) FROM changes), 0))",
            [],
            |r| r.get(0),
        )?;
        follow.seen = before;
        follow.index = Some(index);
        *follow.conn.get_mut() = Some(conn);
        follow.file = file;
        self.file_checked_at.store(mono_coarse_now(), Relaxed);
        Ok(())
    }

    /// Drops everything and the connection, to connect again at the next get: the
    /// handle replaced its own connection (the store may be another file now).
    pub fn reset(&self) {
        let mut follow = self.follow.write();
        follow.epoch += 1;
        follow.disconnect();
        follow.retry_at = None;
        let _ = self.entries.clear(); // under the lock: no get serves meanwhile
    }

    /// Drops everything and the connection; later gets are answered by the store.
    pub fn close(&self) {
        let mut follow = self.follow.write();
        follow.closed = true;
        follow.disconnect();
        let _ = self.entries.clear();
    }
}

/// A get through `cache` (None: no read cache): served from memory when it can be,
/// else read by `read`, which hands the entry it finds (value, flags, expiry) to the
/// sink it is given; that entry goes to `sink` and into the cache.
pub(crate) fn get_through(
    cache: Option<&ReadCache>,
    key: &[u8],
    sink: &mut dyn Sink,
    read: impl FnOnce(&mut dyn Sink) -> Result<bool>,
) -> Result<bool> {
    let ticket = match cache.map(|cache| cache.get(key, &mut |v, f| sink.take(v, f, None))) {
        Some(Cached::Hit) => return Ok(true),
        Some(Cached::Miss(ticket)) => Some(ticket),
        Some(Cached::Off) | None => None,
    };
    match (cache, ticket) {
        (Some(cache), Some(ticket)) => read(&mut Filling {
            cache,
            ticket,
            key,
            sink,
        }),
        _ => read(sink),
    }
}

/// The sink of a read that missed the read cache: hands the entry on and fills the
/// cache with it.
struct Filling<'a> {
    cache: &'a ReadCache,
    ticket: Ticket,
    key: &'a [u8],
    sink: &'a mut dyn Sink,
}

impl Sink for Filling<'_> {
    fn take(&mut self, value: &[u8], flags: u32, expires: Option<f64>) {
        self.sink.take(value, flags, expires);
        self.cache
            .fill(self.ticket, self.key, value, flags, expires);
    }

    /// A value the cache will keep (one it can hold, of a key that missed before) is
    /// read into memory, for both; any other goes to the caller's sink alone, which
    /// reads it where it wants it.
    fn take_file(
        &mut self,
        file: &mut dyn ValueFile,
        flags: u32,
        expires: Option<f64>,
    ) -> Result<bool> {
        let size = (self.key.len() + file.size()) as u64;
        if size > self.cache.entries.max_bytes() || !self.cache.missed_before(self.key) {
            return self.sink.take_file(file, flags, expires);
        }
        let Some(bytes) = file.read()? else {
            return Ok(false);
        };
        self.sink.take(&bytes, flags, expires);
        self.cache
            .fill_admitted(self.ticket, self.key, &bytes, flags, expires);
        Ok(true)
    }
}

impl Follow {
    /// Forgets the connection and what was seen through it.
    fn disconnect(&mut self) {
        self.seen = None;
        self.file = None;
        self.index = None; // before the connection it points into
        *self.conn.get_mut() = None;
    }

    /// Nothing has committed since the cache last caught up.
    fn is_current(&self) -> bool {
        match (&self.seen, &self.index) {
            (Some(seen), Some(index)) => index.read().as_ref() == Some(seen),
            _ => false,
        }
    }
}
