//! WAL checkpoints off the writers' path.
//!
//! SQLite's automatic checkpoint runs inside the commit that grows the WAL past 1000
//! pages: in the writing thread, holding its handle's lock, for milliseconds, while
//! every other writer of the handle waits (measured with two threads setting 1 KiB
//! values on one file handle: p99 70-80x the median). Instead each library connection
//! gets a WAL hook ([`watch`]) that, every [`CHECKPOINT_AT`] pages, asks one process-wide
//! thread for a PASSIVE checkpoint on a short-lived connection of its own: it copies
//! what no reader needs any more, waiting for nobody, while writers keep appending.
//!
//! The WAL starts over from its beginning only when a commit begins with all of it
//! copied, which writers that never pause do not allow: the background checkpoints
//! chase them. So the commit that finds the WAL past [`CHECKPOINT_INLINE_AT`] pages
//! copies the rest itself (little, after the background ones), as SQLite would have at
//! 1000; after a pause in writing the background ones alone suffice.
//!
//! Fork safety: the thread runs each checkpoint inside a [`Gate`] the fork handlers
//! close (waiting for a checkpoint in progress), so no thread is inside SQLite on the
//! checkpointer's connection when the process forks. A child has no checkpointer thread;
//! its first request starts one. Requests are made under handle locks (inside a
//! commit), so the request list's lock ranks after them ([`fork::RANK_CHECKPOINT`]), and
//! is registered with the fork handlers up front ([`fork_locks`]), never from inside a
//! request.

use crate::sync::fork;
use crate::sync::{Gate, Mutex};
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::thread::Thread;
use std::time::{Duration, Instant};

/// WAL pages after which a commit asks for a background checkpoint (SQLite's own
/// automatic threshold).
pub(crate) const CHECKPOINT_AT: i32 = 1000;
/// WAL pages after which the committing connection checkpoints itself.
pub(crate) const CHECKPOINT_INLINE_AT: i32 = 8 * CHECKPOINT_AT;

/// One database's WAL as its writing connection sees it.
pub(crate) struct WalWatch {
    path: PathBuf,
    /// `fork::forks() + 1` of the process that queued a checkpoint not yet run; 0 when
    /// none is queued. (A child of fork does not inherit its parent's queued request.)
    queued: AtomicU64,
    /// WAL pages when the last checkpoint was asked for.
    asked_at: AtomicI32,
    /// The background thread is checkpointing this database now.
    running: AtomicBool,
    /// Checkpoints run by the background thread, and by the committing connection.
    pub background: AtomicU64,
    pub inline: AtomicU64,
}

impl WalWatch {
    /// Waits (a second at most) while the background thread checkpoints this database.
    fn wait_for_background(&self) {
        let started = Instant::now();
        while self.running.load(SeqCst) && started.elapsed() < Duration::from_secs(1) {
            std::thread::sleep(Duration::from_micros(100));
        }
    }
}

/// Installs the WAL hook on `conn`, the writing connection of the database at `path`
/// (it replaces SQLite's automatic checkpoint).
pub(crate) fn watch(conn: &mut Connection, path: &Path) -> rusqlite::Result<Arc<WalWatch>> {
    let watch = Arc::new(WalWatch {
        path: path.to_owned(),
        queued: AtomicU64::new(0),
        asked_at: AtomicI32::new(0),
        running: AtomicBool::new(false),
        background: AtomicU64::new(0),
        inline: AtomicU64::new(0),
    });
    let hooked = watch.clone();
    conn.wal_hook(Some(move |wal: &mut rusqlite::hooks::Wal, pages| {
        if pages >= CHECKPOINT_INLINE_AT {
            hooked.inline.fetch_add(1, SeqCst);
            // Background checkpoints never catch up with writers that never pause (the
            // WAL restarts only once all of it is copied): this commit finishes the job.
            // A checkpoint running elsewhere would make it fail at once, so the
            // background one of this process is waited for. Its failure does not fail
            // the commit, as SQLite's automatic checkpoint's does not.
            hooked.wait_for_background();
            let _ = wal.checkpoint();
        } else if pages >= CHECKPOINT_AT {
            // Once per CHECKPOINT_AT pages: the WAL restarts only when a checkpoint copied all of
            // it before a commit began, which writers that never pause do not allow, so
            // asking at every commit would keep the thread checkpointing a few pages.
            let asked_at = hooked.asked_at.load(SeqCst);
            if pages < asked_at || pages - asked_at >= CHECKPOINT_AT {
                hooked.asked_at.store(pages, SeqCst);
                request(&hooked);
            }
        }
        Ok(())
    }))?;
    Ok(watch)
}

struct Pending {
    requests: Vec<Arc<WalWatch>>,
    /// The checkpointer thread and the fork count of the process it runs in.
    thread: Option<(u64, Thread)>,
}

static PENDING: Mutex<Pending> = Mutex::new(Pending {
    requests: Vec::new(),
    thread: None,
});

/// Entered by the checkpointer thread around each checkpoint; closed around fork.
static GATE: Gate = Gate::new();

/// The locks the fork handlers take for the checkpointer, registered once per process
/// by [`fork::install`] (never from [`request`], which runs under handles' locks).
pub(crate) fn fork_locks() -> [&'static dyn fork::ForkMutex; 2] {
    [&PENDING, &GATE]
}

/// Queues a checkpoint of `watch`'s database unless one is queued already, starting
/// the checkpointer thread when this process has none.
fn request(watch: &Arc<WalWatch>) {
    let this_process = fork::forks() + 1;
    if watch.queued.swap(this_process, SeqCst) == this_process {
        return;
    }
    let mut pending = PENDING.lock();
    pending.requests.push(watch.clone());
    let running = match &pending.thread {
        Some((forks, thread)) if *forks == this_process - 1 => Some(thread.clone()),
        _ => None,
    };
    let thread = running.or_else(|| {
        // A parent's requests are not this process's: its own come again as it writes.
        pending
            .requests
            .retain(|w| w.queued.load(SeqCst) == this_process);
        let spawned = std::thread::Builder::new()
            .name("duckcache-checkpoint".into())
            .spawn(run);
        let thread = spawned.ok()?.thread().clone();
        pending.thread = Some((this_process - 1, thread.clone()));
        Some(thread)
    });
    match thread {
        Some(thread) => thread.unpark(),
        // No thread: the inline checkpoint at CHECKPOINT_INLINE_AT remains.
        None => {
            for waiting in pending.requests.drain(..) {
                waiting.queued.store(0, SeqCst);
            }
        }
    }
}

/// The checkpointer thread: runs the queued checkpoints, then sleeps until woken.
fn run() {
    loop {
        let next = PENDING.lock().requests.pop();
        match next {
            Some(watch) => {
                // Cleared first: a commit from now on may queue the next one.
                watch.queued.store(0, SeqCst);
                let _inside = GATE.enter_when_open();
                watch.running.store(true, SeqCst);
                if checkpoint(&watch.path).is_ok() {
                    watch.background.fetch_add(1, SeqCst);
                }
                watch.running.store(false, SeqCst);
            }
            None => std::thread::park_timeout(Duration::from_secs(60)),
        }
    }
}

/// One PASSIVE checkpoint of the database at `path` on a connection of its own, closed
/// without the checkpoint-and-delete a close normally runs.
fn checkpoint(path: &Path) -> crate::error::Result<()> {
    let conn = crate::sqlite::open_second(path)?;
    let result = conn.wal_checkpoint_v2(
        Some(rusqlite::MAIN_DB),
        rusqlite::wal::CheckpointMode::PASSIVE,
    );
    crate::sqlite::discard(conn);
    result?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend;
    use crate::file::FileCache;
    use crate::ttl::Ttl;

    fn fresh_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("duckcache-ckpt-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn wait_for(what: impl Fn() -> bool) -> bool {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if what() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    /// A WAL past the threshold is checkpointed by the background thread, not by the
    /// committing writer.
    #[test]
    fn writers_leave_checkpoints_to_the_background_thread() {
        let dir = fresh_dir("background");
        let cache = FileCache::open(&dir, 0).unwrap();
        let wal = cache.wal().unwrap();
        let value = vec![7u8; 1024];
        // Until a commit asks for a checkpoint (well short of the inline backstop).
        let mut key = 0u32;
        while wal.queued.load(SeqCst) == 0 && wal.background.load(SeqCst) == 0 {
            assert!(key < 20_000, "no checkpoint requested");
            cache.set(&key.to_le_bytes(), &value, Ttl::Never).unwrap();
            key += 1;
        }
        assert!(
            wait_for(|| wal.background.load(SeqCst) > 0),
            "no background checkpoint"
        );
        assert_eq!(wal.inline.load(SeqCst), 0, "a writer checkpointed inline");
        drop(cache);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A WAL that cannot be checkpointed (a reader holds an old snapshot) grows until the
    /// committing connection tries itself, as SQLite's automatic checkpoint would.
    #[test]
    fn a_wal_past_the_backstop_is_checkpointed_by_the_writer() {
        let dir = fresh_dir("backstop");
        let cache = FileCache::open(&dir, 0).unwrap();
        let wal = cache.wal().unwrap();
        cache.set(b"first", b"1", Ttl::Never).unwrap();
        let reader = crate::sqlite::open_second(&dir.join("cache.db")).unwrap();
        reader
            .execute_batch("BEGIN; SELECT count(*) FROM entries;")
            .unwrap();
        let value = vec![7u8; 1024];
        for key in 0..3 * CHECKPOINT_INLINE_AT as u32 {
            cache.set(&key.to_le_bytes(), &value, Ttl::Never).unwrap();
            if wal.inline.load(SeqCst) > 0 {
                break;
            }
        }
        assert!(wal.inline.load(SeqCst) > 0, "the writer never checkpointed");
        reader.execute_batch("COMMIT").unwrap();
        crate::sqlite::discard(reader);
        drop(cache);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
