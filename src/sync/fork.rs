//! fork() with other threads inside the library.
//!
//! A child made by fork() has one thread; every lock another thread of the parent held at
//! that moment stays locked in the child forever, so the child's first call that needs it
//! hangs (a memory cache's shard, a worker queue, SQLite's own global mutexes: a
//! pre-forking server whose threads are busy in the cache hung that way). The remedy is
//! the one malloc uses: `pthread_atfork` handlers that, just before fork, take every such
//! lock (waiting for the threads holding them to let go), and release them right after,
//! in the parent and in the child alike, so the child starts with all of them free.
//!
//! What is taken: the registered locks, by rank ([`register`], [`register_static`]), in
//! the order the library itself nests them in: the executor's table of drain waits,
//! every worker queue, the worker pool, then every handle's own lock (sharded, file,
//! folder, tiered, memory shards), the checkpointer's, the Redis pools', and last
//! SQLite's global VFS mutex. Holding a persistent handle's lock means no thread is
//! inside SQLite on its connections at the fork, so the child inherits SQLite's
//! per-process lock bookkeeping at rest, and a connection the child opens on the same
//! database takes its locks normally.
//!
//! This module knows no owner of a lock: each registers its own (the SQLite module its
//! process-wide steps, `crate::sqlite::process`). It is infrastructure at the bottom of
//! the house, beside the locks themselves.
//!
//! None of these locks is held while waiting for anything else, or while a user's
//! callback runs, so the handler's wait is short and cannot deadlock with the thread
//! that forks (which may hold the Python interpreter's lock, say).

use crate::sync::Gate;
use crate::sync::{Mutex, RwLock};
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Once, Weak};

/// A lock the fork handlers take and release.
pub(crate) trait ForkMutex: Sync {
    /// Takes the lock and keeps it (the guard is forgotten).
    fn lock_for_fork(&self);
    /// Releases a lock taken by [`ForkMutex::lock_for_fork`].
    ///
    /// # Safety
    /// Only after `lock_for_fork` on this mutex by this thread (or, in a child of fork,
    /// by the thread that forked), once.
    unsafe fn unlock_after_fork(&self);
}

impl<T: Send> ForkMutex for Mutex<T> {
    fn lock_for_fork(&self) {
        std::mem::forget(self.lock());
    }

    unsafe fn unlock_after_fork(&self) {
        // SAFETY: the caller guarantees this thread holds the lock through a guard
        // forgotten by `lock_for_fork`.
        unsafe { self.force_unlock() }
    }
}

/// Something holding locks that must be free in a child of fork.
pub(crate) trait ForkLocks: Send + Sync {
    /// Its locks, in the order to take them.
    fn fork_mutexes(&self) -> Vec<&dyn ForkMutex>;
}

/// A mutex is a lock set of its own.
impl<T: Send> ForkLocks for Mutex<T> {
    fn fork_mutexes(&self) -> Vec<&dyn ForkMutex> {
        vec![self]
    }
}

/// A read-write lock is taken for writing: every reader has left.
impl<T: Send + Sync> ForkMutex for RwLock<T> {
    fn lock_for_fork(&self) {
        std::mem::forget(self.write());
    }

    unsafe fn unlock_after_fork(&self) {
        // SAFETY: the caller guarantees this thread holds the write lock through a guard
        // forgotten by `lock_for_fork`.
        unsafe { self.force_unlock_write() }
    }
}

impl<T: Send + Sync> ForkLocks for RwLock<T> {
    fn fork_mutexes(&self) -> Vec<&dyn ForkMutex> {
        vec![self]
    }
}

/// A [`Gate`] for work that steps aside during a fork rather than hold it up: the fork
/// handlers close it and wait for those inside to leave, and while it is closed
/// `enter` answers None at once (the caller takes another way, typically through a lock
/// the handlers hold). Unlike a read-write lock, a stream of entries that never pauses
/// cannot keep the fork waiting.
impl ForkMutex for Gate {
    fn lock_for_fork(&self) {
        self.close(0);
    }

    unsafe fn unlock_after_fork(&self) {
        // In a child, a parent thread half-way through `enter` left its count behind.
        self.open(in_child_of_fork().then_some(0));
    }
}

impl ForkLocks for Gate {
    fn fork_mutexes(&self) -> Vec<&dyn ForkMutex> {
        vec![self]
    }
}

/// Lock sets by rank (taken lowest rank first): see the module comment. A handle's lock
/// is taken before the locks of what it wraps (a sharded cache's before its shards').
pub(crate) const RANK_DRAIN_WAITS: usize = 0;
pub(crate) const RANK_QUEUE: usize = 1;
pub(crate) const RANK_POOL: usize = 2;
pub(crate) const RANK_SHARDED: usize = 3;
pub(crate) const RANK_FILE: usize = 4;
pub(crate) const RANK_FOLDER: usize = 5;
pub(crate) const RANK_FOLDER_LEFTOVERS: usize = 6;
/// A tiered handle's fill epochs: near's (memory) locks are taken under them.
pub(crate) const RANK_TIERED: usize = 7;
pub(crate) const RANK_MEMORY: usize = 8;
/// The checkpointer's request list and gate: requested from inside commits, under the
/// locks of every handle kind above.
pub(crate) const RANK_CHECKPOINT: usize = 9;
/// A Redis handle's connection pool: taken briefly, with nothing else held.
pub(crate) const RANK_REDIS_POOL: usize = 10;
/// SQLite's own global mutexes (its list of open files): taken by every open and close
/// of a connection, under any of the above.
pub(crate) const RANK_SQLITE: usize = 11;
const RANKS: usize = 12;

struct Registry {
    /// Process-wide locks (statics), taken before the sets of the same rank.
    statics: [Vec<&'static dyn ForkMutex>; RANKS],
    sets: [Vec<Weak<dyn ForkLocks>>; RANKS],
    /// The sets locked by `prepare`, kept alive until `release`.
    held: Vec<Arc<dyn ForkLocks>>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    statics: [const { Vec::new() }; RANKS],
    sets: [const { Vec::new() }; RANKS],
    held: Vec::new(),
});

/// Adds a lock set, held only weakly (a dropped one is skipped and forgotten).
///
/// A thread that holds a registered lock ([`HoldingLock`]) does not wait for the
/// registry: a fork in progress holds it while it waits for that thread's lock. When the
/// registry is busy such a set is deferred (taken in by the next registration or fork,
/// or when the fork in progress ends). A set deferred during a fork is not locked for
/// it; its owner holds the lock it was registered under until it is published, and the
/// sharded kind's lock-free reads of published shards stay inside a gate the fork
/// closes, so none of its locks is held at the fork.
pub(crate) fn register<L: ForkLocks + 'static>(rank: usize, locks: Weak<L>) {
    let locks: Weak<dyn ForkLocks> = locks;
    install();
    let mut registry = if HOLDING.with(|h| h.get()) > 0 {
        match REGISTRY.try_lock() {
            Some(registry) => registry,
            None => return defer(rank, locks),
        }
    } else {
        REGISTRY.lock()
    };
    take_deferred(&mut registry);
    let set = &mut registry.sets[rank];
    set.retain(|w| w.strong_count() > 0);
    set.push(locks);
}

thread_local! {
    /// Registered locks this thread holds, as [`HoldingLock`] counts them.
    static HOLDING: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Marks this thread as holding a registered lock (for the guard's life), so that
/// [`register`] never waits for the registry meanwhile. Taken by handles whose locked
/// code opens and registers new lock sets (the sharded kind's shards).
pub(crate) struct HoldingLock(());

impl HoldingLock {
    pub fn new() -> HoldingLock {
        HOLDING.with(|h| h.set(h.get() + 1));
        HoldingLock(())
    }
}

impl Drop for HoldingLock {
    fn drop(&mut self) {
        HOLDING.with(|h| h.set(h.get() - 1));
    }
}

/// A registration waiting for the registry: a push-only stack taken whole, so no lock
/// (a fork may copy it in any state).
struct Deferred {
    rank: usize,
    locks: Weak<dyn ForkLocks>,
    next: *mut Deferred,
}

static DEFERRED: AtomicPtr<Deferred> = AtomicPtr::new(std::ptr::null_mut());

fn defer(rank: usize, locks: Weak<dyn ForkLocks>) {
    let node = Box::into_raw(Box::new(Deferred {
        rank,
        locks,
        next: std::ptr::null_mut(),
    }));
    let mut head = DEFERRED.load(SeqCst);
    loop {
        // SAFETY: `node` is ours until the exchange publishes it.
        unsafe { (*node).next = head };
        match DEFERRED.compare_exchange(head, node, SeqCst, SeqCst) {
            Ok(_) => return,
            Err(now) => head = now,
        }
    }
}

/// Moves every deferred registration into `registry` (whose lock the caller holds).
fn take_deferred(registry: &mut Registry) {
    let mut at = DEFERRED.swap(std::ptr::null_mut(), SeqCst);
    while !at.is_null() {
        // SAFETY: every node was made by Box::into_raw in `defer` and is taken once:
        // the swap above took the whole stack from every other thread.
        let node = unsafe { Box::from_raw(at) };
        at = node.next;
        registry.sets[node.rank].push(node.locks);
    }
}

/// Wraps `locks` in an `Arc` and registers it (see [`register`]).
pub(crate) fn registered<L: ForkLocks + 'static>(rank: usize, locks: L) -> Arc<L> {
    let locks = Arc::new(locks);
    let weak: Weak<L> = Arc::downgrade(&locks);
    register(rank, weak);
    locks
}

/// Adds a process-wide lock (a static), once however often it is called.
pub(crate) fn register_static(rank: usize, lock: &'static dyn ForkMutex) {
    install();
    add_static(&mut REGISTRY.lock(), rank, lock);
}

fn add_static(registry: &mut Registry, rank: usize, lock: &'static dyn ForkMutex) {
    let statics = &mut registry.statics[rank];
    if !statics.iter().any(|l| std::ptr::addr_eq(*l, lock)) {
        statics.push(lock);
    }
}

/// Installs the handlers (once per process) and turns SQLite's memory statistics off
/// before its first use. Called by every exported function; after the first call it
/// costs one atomic load.
pub(crate) fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: the three handlers are plain functions that live as long as the
        // process; pthread_atfork only records them.
        unsafe {
            libc::pthread_atfork(Some(prepare), Some(release), Some(release_in_child));
        }
    });
}

/// Forks this process has come from: advanced in each child, before its locks are
/// released. A value taken before a fork and seen changed after it means "in a child".
static FORKS: AtomicU64 = AtomicU64::new(0);

/// True while the child handler runs (only there does a lock's release learn it is in a
/// child).
static IN_CHILD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// How many forks led to this process (see [`FORKS`]); one atomic load.
pub(crate) fn forks() -> u64 {
    FORKS.load(SeqCst)
}

fn in_child_of_fork() -> bool {
    IN_CHILD.load(SeqCst)
}

extern "C" fn release_in_child() {
    FORKS.fetch_add(1, SeqCst);
    IN_CHILD.store(true, SeqCst);
    release();
    IN_CHILD.store(false, SeqCst);
}

extern "C" fn prepare() {
    // The registry stays locked until `release`: no set is added or dropped meanwhile
    // (sets registered under a lock are deferred, see `register`).
    let mut registry = REGISTRY.lock();
    take_deferred(&mut registry);
    let mut held: Vec<Arc<dyn ForkLocks>> = Vec::new();
    for (statics, set) in registry.statics.iter().zip(&registry.sets) {
        for lock in statics {
            lock.lock_for_fork();
        }
        for locks in set.iter().filter_map(Weak::upgrade) {
            for m in locks.fork_mutexes() {
                m.lock_for_fork();
            }
            held.push(locks);
        }
    }
    let registry = crate::sync::MutexGuard::leak(registry);
    registry.held = held;
}

extern "C" fn release() {
    // SAFETY: `prepare` ran on this thread (in the child: on the thread that forked,
    // the child's only thread) and left the registry locked with its guard leaked.
    let registry = unsafe { &mut *REGISTRY.data_ptr() };
    for locks in std::mem::take(&mut registry.held).iter().rev() {
        for m in locks.fork_mutexes().iter().rev() {
            // SAFETY: each was locked by `prepare` on this thread, once.
            unsafe { m.unlock_after_fork() };
        }
    }
    for lock in registry.statics.iter().rev().flatten() {
        // SAFETY: locked by `prepare` on this thread, once.
        unsafe { lock.unlock_after_fork() };
    }
    // Registrations deferred while the fork ran.
    take_deferred(registry);
    // SAFETY: locked by `prepare` on this thread, guard leaked.
    unsafe { REGISTRY.force_unlock() };
}
