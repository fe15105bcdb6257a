//! Whether any connection has committed to a WAL-mode database since a moment: read
//! from the header of SQLite's WAL index (the `-shm` file every connection to the
//! database maps), a few dozen bytes of shared memory, with no system call and no lock.
//!
//! The header's layout is SQLite's documented WAL-index format
//! (<https://sqlite.org/walformat.html>, "The WAL-Index Header", stable since 3.7.0):
//! two copies of a 48-byte header at offsets 0 and 48. A commit writes copy 1, a memory
//! barrier, then copy 0, before the commit returns, and every commit changes the header
//! (its frame count, transaction counter and checksum). So a reader that reads copy 0,
//! then copy 1, and finds them equal and equal to what it saw at a moment, knows no
//! commit became visible since; two unequal copies are a commit in progress.
//!
//! The mapping is SQLite's own, asked of the connection through the public VFS
//! interface (`SQLITE_FCNTL_FILE_POINTER`, then the file's `xShmMap`): opening the
//! `-shm` file a second time would be unsafe, as closing that descriptor would drop
//! every POSIX lock SQLite holds on the file in this process. The mapping lives as long
//! as the connection; [`WalIndex`] must not outlive it (its owner drops it first).

#![allow(unsafe_code)]

use rusqlite::{ffi, Connection};
use std::ffi::c_void;
use std::sync::atomic::{fence, AtomicU32, Ordering};

/// The header's version word (`WALINDEX_MAX_VERSION`).
const WAL_INDEX_VERSION: u32 = 3_007_000;
/// Words in one copy of the header.
const HEADER_WORDS: usize = 12;
/// The size of a WAL-index region, which `xShmMap` is asked for (`WALINDEX_PGSZ`).
const REGION_BYTES: i32 = 32_768;

/// One copy of the WAL-index header, as words.
pub(crate) type Header = [u32; HEADER_WORDS];

/// The WAL-index header of one database, as mapped by one connection.
pub(crate) struct WalIndex {
    /// Both copies of the header: the first two copies' words in SQLite's mapping.
    words: *const AtomicU32,
}

// SAFETY: the pointer is to shared memory that every thread may read (SQLite's own
// readers do, from any thread); it is only read, through atomics.
unsafe impl Send for WalIndex {}
// SAFETY: as for Send: shared reads only.
unsafe impl Sync for WalIndex {}

impl WalIndex {
    /// The header of `conn`'s main database, which must be in WAL mode and have been
    /// read once (its WAL index is then mapped). None when it is not mapped, or the
    /// VFS has no shared memory (the header is then not there to read).
    ///
    /// The result is valid while `conn` stays open.
    pub fn of(conn: &Connection) -> Option<WalIndex> {
        let mut file: *mut ffi::sqlite3_file = std::ptr::null_mut();
        // SAFETY: `conn` is an open connection; FILE_POINTER writes the main database's
        // sqlite3_file pointer (or NULL) into `file`, a live local of that type.
        let rc = unsafe {
            ffi::sqlite3_file_control(
                conn.handle(),
                c"main".as_ptr(),
                ffi::SQLITE_FCNTL_FILE_POINTER,
                (&mut file as *mut *mut ffi::sqlite3_file).cast::<c_void>(),
            )
        };
        if rc != ffi::SQLITE_OK || file.is_null() {
            return None;
        }
        // SAFETY: `file` is the connection's open main-database file; its methods
        // table is SQLite's, valid while the file is open.
        let methods = unsafe { (*file).pMethods };
        if methods.is_null() {
            return None;
        }
        // SAFETY: as above; version 2 and later tables have the shared-memory methods.
        let map = unsafe {
            if (*methods).iVersion < 2 {
                return None;
            }
            (*methods).xShmMap?
        };
        let mut region: *mut c_void = std::ptr::null_mut();
        // SAFETY: xShmMap with bExtend = 0 returns region 0 of the file's existing
        // WAL-index mapping (or NULL when it is not that large yet), allocating nothing.
        // The connection is not in use by any other thread during this call (its
        // owner holds it exclusively).
        let rc = unsafe { map(file, 0, REGION_BYTES, 0, &mut region) };
        if rc != ffi::SQLITE_OK || region.is_null() {
            return None;
        }
        let index = WalIndex {
            words: region.cast::<AtomicU32>(),
        };
        // A header this code does not know (a future format) is not read at all.
        let header = index.read()?;
        (header[0] == WAL_INDEX_VERSION).then_some(index)
    }

    /// The header as it is now: None while a commit is writing it (the two copies
    /// differ) or before SQLite has initialised it.
    pub fn read(&self) -> Option<Header> {
        let mut first = [0u32; HEADER_WORDS];
        let mut second = [0u32; HEADER_WORDS];
        // SAFETY: `words` points to the start of a mapped 32 KiB region, suitably
        // aligned (page-aligned), of which the two copies take the first 96 bytes;
        // the mapping outlives `self` (see `of`). The words are read as atomics: other
        // processes write them concurrently.
        unsafe {
            for (i, word) in first.iter_mut().enumerate() {
                *word = (*self.words.add(i)).load(Ordering::Relaxed);
            }
            // SQLite writes copy 1, a barrier, then copy 0; reading them in the other
            // order, a copy 0 that is new implies a copy 1 that is at least as new.
            fence(Ordering::Acquire);
            for (i, word) in second.iter_mut().enumerate() {
                *word = (*self.words.add(HEADER_WORDS + i)).load(Ordering::Relaxed);
            }
        }
        // isInit is the byte at offset 12, the fourth word's first byte in memory.
        let initialised = first[3].to_ne_bytes()[0] == 1;
        (first == second && initialised).then_some(first)
    }
}
