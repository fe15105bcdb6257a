//! What SQLite needs once per process, before the first connection: its memory
//! statistics off, and its global mutexes (and the checkpointer's) registered with the
//! fork handlers.
//!
//! - Memory statistics take a global mutex on every allocation anywhere in SQLite; the
//!   library never reads them, and off, no allocation waits on a lock a parent thread
//!   held at a fork.
//! - SQLite's VFS mutex (its list of open files, taken by every open and close of a
//!   connection) is held across fork, last, like the library's own locks.
//! - The checkpointer is asked for work inside commits, under handles' locks: its locks
//!   are registered here, at the first connection, because registering then would wait
//!   for the fork registry, which a fork in progress holds while it waits for those
//!   handles' locks. (The first connection of a process is never opened under a handle's
//!   lock: a store opens its own database before anything runs under its lock.)

#![allow(unsafe_code)]

use crate::sync::fork::{self, ForkMutex};
use std::sync::Once;

/// Runs the once-per-process steps (the first call; later ones cost an atomic load).
pub(crate) fn prepare() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: sqlite3_config with an int argument, as SQLITE_CONFIG_MEMSTATUS
        // documents. Before SQLite is initialised it applies; afterwards it returns
        // SQLITE_MISUSE and changes nothing, which is fine (statistics stay on).
        unsafe {
            rusqlite::ffi::sqlite3_config(rusqlite::ffi::SQLITE_CONFIG_MEMSTATUS, 0 as libc::c_int);
        }
        for lock in super::checkpointer::fork_locks() {
            fork::register_static(fork::RANK_CHECKPOINT, lock);
        }
        fork::register_static(fork::RANK_SQLITE, &VFS_MUTEX);
    });
}

/// SQLite's global mutex guarding its list of open files.
struct VfsMutex;

static VFS_MUTEX: VfsMutex = VfsMutex;

impl VfsMutex {
    fn get() -> *mut rusqlite::ffi::sqlite3_mutex {
        // SAFETY: allocating a static mutex only looks it up (NULL before SQLite is
        // initialised, when no thread can be inside it).
        unsafe { rusqlite::ffi::sqlite3_mutex_alloc(rusqlite::ffi::SQLITE_MUTEX_STATIC_VFS1) }
    }
}

impl ForkMutex for VfsMutex {
    fn lock_for_fork(&self) {
        let vfs = VfsMutex::get();
        if !vfs.is_null() {
            // SAFETY: a valid static mutex; left in `unlock_after_fork`.
            unsafe { rusqlite::ffi::sqlite3_mutex_enter(vfs) };
        }
    }

    unsafe fn unlock_after_fork(&self) {
        let vfs = VfsMutex::get();
        if !vfs.is_null() {
            // SAFETY: entered by `lock_for_fork` on this thread (the caller's guarantee);
            // the mutex is the same static one (SQLite was initialised before it).
            unsafe { rusqlite::ffi::sqlite3_mutex_leave(vfs) };
        }
    }
}
