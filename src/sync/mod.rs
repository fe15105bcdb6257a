//! The library's locks: a mutex, a read-write lock and a condition variable on Linux
//! futexes, with no state outside the lock itself; and [`Gate`], which counts the
//! threads inside a section and can be closed around a fork.
//!
//! Why not parking_lot: its waiting threads queue in one process-wide hash table guarded
//! by small per-bucket locks. A fork() that happens while another thread holds one of
//! those bucket locks (it is parking or waking someone) leaves it held forever in the
//! child, and the child's first unlock of a contended mutex (the fork handlers' own
//! release, found by the Python fork test) or its first wait hangs. A futex lock keeps
//! everything in its own word: in a child, releasing a lock the fork handlers took is a
//! store and at most a harmless wake system call.
//!
//! The designs are the usual futex ones: the mutex word is 0 (free), 1 (locked) or 2
//! (locked, maybe with waiters); the read-write lock word holds a reader count and a
//! writer bit; the condition variable is a sequence number waiters sleep on.

#![deny(clippy::undocumented_unsafe_blocks)]

pub(crate) mod fork;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering::*};
use std::time::Duration;

/// Sleeps while `word` holds `expected` (or until woken; spurious returns are fine,
/// every caller loops).
fn futex_wait(word: &AtomicU32, expected: u32) {
    futex_wait_for(word, expected, None)
}

/// As `futex_wait`, giving up after `timeout` (None: no limit).
fn futex_wait_for(word: &AtomicU32, expected: u32, timeout: Option<std::time::Duration>) {
    let spec = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let spec_ptr = spec
        .as_ref()
        .map_or(std::ptr::null(), |s| s as *const libc::timespec);
    // SAFETY: FUTEX_WAIT reads the aligned u32 at the address of a live atomic; the
    // timeout is NULL (no limit) or a relative timespec that outlives the call.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            spec_ptr,
        );
    }
}

#[cfg(test)]
thread_local! {
    /// The wake calls this thread made (the tests check that an uncontended unlock makes
    /// none).
    static WAKE_CALLS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Wakes up to `count` threads sleeping on `word`.
fn futex_wake(word: &AtomicU32, count: i32) {
    #[cfg(test)]
    WAKE_CALLS.with(|n| n.set(n.get() + 1));
    // SAFETY: FUTEX_WAKE only uses the address as a key.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            count,
        );
    }
}

/// Spins briefly while `word` satisfies `busy`: a lock held for a few instructions is
/// usually free again before a system call would return.
fn spin_while(word: &AtomicU32, busy: impl Fn(u32) -> bool) -> u32 {
    let mut state = word.load(Relaxed);
    for _ in 0..100 {
        if !busy(state) {
            break;
        }
        std::hint::spin_loop();
        state = word.load(Relaxed);
    }
    state
}

/// A mutex word: 0 free, 1 locked, 2 locked with possible waiters.
pub struct RawMutex {
    state: AtomicU32,
}

const LOCKED: u32 = 1;
const CONTENDED: u32 = 2;

impl RawMutex {
    #[cold]
    fn lock_contended(&self) {
        let mut state = spin_while(&self.state, |s| s == LOCKED);
        if state == 0 {
            match self.state.compare_exchange(0, LOCKED, Acquire, Relaxed) {
                Ok(_) => return,
                Err(s) => state = s,
            }
        }
        loop {
            // Mark it contended; whoever unlocks then wakes a waiter.
            if state != CONTENDED && self.state.swap(CONTENDED, Acquire) == 0 {
                return;
            }
            futex_wait(&self.state, CONTENDED);
            state = spin_while(&self.state, |s| s == LOCKED);
        }
    }
}

// SAFETY: a thread holds the lock exactly from a successful 0 -> locked exchange (with
// Acquire) to the Release store of 0 in unlock; no two threads can both succeed.
unsafe impl lock_api::RawMutex for RawMutex {
    #[allow(clippy::declare_interior_mutable_const)] // lock_api's way to build one
    const INIT: RawMutex = RawMutex {
        state: AtomicU32::new(0),
    };
    type GuardMarker = lock_api::GuardSend;

    #[inline]
    fn lock(&self) {
        if self
            .state
            .compare_exchange(0, LOCKED, Acquire, Relaxed)
            .is_err()
        {
            self.lock_contended();
        }
    }

    #[inline]
    fn try_lock(&self) -> bool {
        self.state
            .compare_exchange(0, LOCKED, Acquire, Relaxed)
            .is_ok()
    }

    #[inline]
    unsafe fn unlock(&self) {
        if self.state.swap(0, Release) == CONTENDED {
            futex_wake(&self.state, 1);
        }
    }
}

/// A read-write lock word: the number of readers (or [`WRITER`] while a writer holds
/// it) in the low bits, [`WRITER_WAITING`] while a writer waits, and [`WAITING`] while
/// some thread sleeps on the word. Unlocking makes a system call only when that bit is
/// set: an uncontended read is two atomic operations (the read cache's and the sharded
/// index's every get takes one).
///
/// Writers come first: while one waits, new readers hold back (for at most
/// [`READER_YIELD`]), so readers that never pause cannot starve a writer. Without it,
/// three threads setting on a folder handle kept `cache_close` and `fork()` (whose
/// handlers take these locks exclusively) waiting 15 to 60 s. The bound keeps a thread
/// that reads again while already reading (which would otherwise wait for the writer
/// that waits for it) from deadlocking: it is only delayed.
pub struct RawRwLock {
    state: AtomicU32,
}

/// Some thread is asleep on the word (or about to be): the unlocker wakes them all.
const WAITING: u32 = 1 << 31;
/// A writer waits for the readers to leave: new readers hold back.
const WRITER_WAITING: u32 = 1 << 30;
/// How long a new reader holds back for a waiting writer before it goes in anyway.
const READER_YIELD: Duration = Duration::from_millis(50);
/// The lock part of the word.
const HOLDERS: u32 = WRITER_WAITING - 1;
/// The lock part while a writer holds it (the reader count never reaches it).
const WRITER: u32 = HOLDERS;
/// The most readers at once.
const MAX_READERS: u32 = WRITER - 1;

impl RawRwLock {
    /// Marks the word as waited on (with `also`, unless it already is, or `state` is
    /// stale) and sleeps until an unlock wakes every sleeper, `timeout` passes, or
    /// spuriously; the caller then tries again.
    #[cold]
    fn wait(&self, state: u32, also: u32, timeout: Option<Duration>) {
        let waited = state | WAITING | also;
        if state == waited
            || self
                .state
                .compare_exchange(state, waited, Relaxed, Relaxed)
                .is_ok()
        {
            futex_wait_for(&self.state, waited, timeout);
        }
    }

    /// A new reader's turn: waits while the readers are at their most, and holds back
    /// while a writer waits, until `READER_YIELD` has passed since it first held back.
    #[cold]
    fn lock_shared_slow(&self) {
        let mut held_back_since: Option<std::time::Instant> = None;
        loop {
            let state = spin_while(&self.state, |s| {
                s & HOLDERS >= MAX_READERS || s & WRITER_WAITING != 0
            });
            let yielded = held_back_since.map_or(Duration::ZERO, |t| t.elapsed());
            let holding_back = state & WRITER_WAITING != 0 && yielded < READER_YIELD;
            if state & HOLDERS >= MAX_READERS {
                self.wait(state, 0, None);
            } else if holding_back {
                held_back_since.get_or_insert_with(std::time::Instant::now);
                self.wait(state, 0, Some(READER_YIELD - yielded));
            } else if self
                .state
                .compare_exchange_weak(state, state + 1, Acquire, Relaxed)
                .is_ok()
            {
                return;
            }
        }
    }

    /// Clears [`WAITING`] and wakes every sleeper, which all try again (and those that
    /// must wait set the bit again).
    #[cold]
    fn wake_all(&self) {
        self.state.fetch_and(!WAITING, Relaxed);
        futex_wake(&self.state, i32::MAX);
    }
}

// SAFETY: a writer holds it exactly from an exchange of a word whose lock part is 0 for
// one whose lock part is WRITER, to the swap that clears the word; readers from an
// exchange raising a lock part below MAX_READERS by one to the matching decrement. The
// exchanges exclude each other, and the WAITING bit never changes the lock part.
unsafe impl lock_api::RawRwLock for RawRwLock {
    #[allow(clippy::declare_interior_mutable_const)] // lock_api's way to build one
    const INIT: RawRwLock = RawRwLock {
        state: AtomicU32::new(0),
    };
    type GuardMarker = lock_api::GuardSend;

    #[inline]
    fn lock_shared(&self) {
        let state = self.state.load(Relaxed);
        if state & (HOLDERS | WRITER_WAITING) >= MAX_READERS
            || self
                .state
                .compare_exchange_weak(state, state + 1, Acquire, Relaxed)
                .is_err()
        {
            self.lock_shared_slow();
        }
    }

    fn try_lock_shared(&self) -> bool {
        let state = self.state.load(Relaxed);
        state & (HOLDERS | WRITER_WAITING) < MAX_READERS
            && self
                .state
                .compare_exchange(state, state + 1, Acquire, Relaxed)
                .is_ok()
    }

    unsafe fn unlock_shared(&self) {
        let before = self.state.fetch_sub(1, Release);
        if before & HOLDERS == 1 && before & WAITING != 0 {
            // The last reader, and someone (a writer) sleeps until the count is 0.
            self.wake_all();
        }
    }

    fn lock_exclusive(&self) {
        loop {
            let state = spin_while(&self.state, |s| s & HOLDERS != 0);
            if state & HOLDERS == 0 {
                // In: the mark that held readers back is this writer's to clear (another
                // waiting writer sets it again when it next finds the lock held).
                if self
                    .state
                    .compare_exchange_weak(state, (state & WAITING) | WRITER, Acquire, Relaxed)
                    .is_ok()
                {
                    return;
                }
            } else {
                self.wait(state, WRITER_WAITING, None);
            }
        }
    }

    fn try_lock_exclusive(&self) -> bool {
        let state = self.state.load(Relaxed);
        state & HOLDERS == 0
            && self
                .state
                .compare_exchange(state, (state & WAITING) | WRITER, Acquire, Relaxed)
                .is_ok()
    }

    unsafe fn unlock_exclusive(&self) {
        if self.state.swap(0, Release) & WAITING != 0 {
            futex_wake(&self.state, i32::MAX);
        }
    }
}

pub type Mutex<T> = lock_api::Mutex<RawMutex, T>;
pub type MutexGuard<'a, T> = lock_api::MutexGuard<'a, RawMutex, T>;
pub type RwLock<T> = lock_api::RwLock<RawRwLock, T>;
pub type RwLockReadGuard<'a, T> = lock_api::RwLockReadGuard<'a, RawRwLock, T>;
pub type RwLockWriteGuard<'a, T> = lock_api::RwLockWriteGuard<'a, RawRwLock, T>;

/// Counts the threads inside a section; closed, it lets none in and its closer waits for
/// those inside to leave. Two atomics and a poll, no lock, so a fork may copy it in any
/// state. Closing is rare and short (around a fork), so polling costs nothing that
/// matters.
pub struct Gate {
    closed: AtomicBool,
    inside: AtomicUsize,
}

/// A thread inside a [`Gate`]; it leaves on drop.
pub struct Inside<'a>(&'a Gate);

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        self.0.inside.fetch_sub(1, SeqCst);
    }
}

const GATE_POLL: Duration = Duration::from_micros(50);

impl Gate {
    pub const fn new() -> Gate {
        Gate {
            closed: AtomicBool::new(false),
            inside: AtomicUsize::new(0),
        }
    }

    /// Inside, or None while closed. (Announce, then look: with sequentially consistent
    /// order on both sides, either the closer sees this entry or it sees the gate closed.)
    pub fn enter(&self) -> Option<Inside<'_>> {
        let inside = self.enter_anyway();
        (!self.closed.load(SeqCst)).then_some(inside)
    }

    /// Inside even while closed (for a thread the closer does not wait for anyway).
    pub fn enter_anyway(&self) -> Inside<'_> {
        self.inside.fetch_add(1, SeqCst);
        Inside(self)
    }

    /// Inside once the gate is open (waits while it is closed).
    pub fn enter_when_open(&self) -> Inside<'_> {
        loop {
            if let Some(inside) = self.enter() {
                return inside;
            }
            while self.closed.load(SeqCst) {
                std::thread::sleep(GATE_POLL);
            }
        }
    }

    /// Closes the gate and waits until at most `own` threads are inside (the caller's
    /// own entries, which cannot leave while it waits).
    pub fn close(&self, own: usize) {
        self.closed.store(true, SeqCst);
        while self.inside.load(SeqCst) > own {
            std::thread::sleep(GATE_POLL);
        }
    }

    /// Opens the gate. In a child of fork, `inside_now` (the forking thread's own
    /// entries) replaces the count: the parent's other threads, which may have been
    /// half-way through entering, do not exist there.
    pub fn open(&self, inside_now: Option<usize>) {
        if let Some(n) = inside_now {
            self.inside.store(n, SeqCst);
        }
        self.closed.store(false, SeqCst);
    }
}

impl Default for Gate {
    fn default() -> Gate {
        Gate::new()
    }
}

/// A condition variable for [`Mutex`]: waiters sleep on a sequence number that every
/// notification advances, so a notification between unlocking and sleeping is not lost.
pub struct Condvar {
    sequence: AtomicU32,
}

impl Condvar {
    pub const fn new() -> Condvar {
        Condvar {
            sequence: AtomicU32::new(0),
        }
    }

    /// Releases the guard's mutex, sleeps until notified (or spuriously), and locks it
    /// again. Callers re-check their condition in a loop.
    pub fn wait<T>(&self, guard: &mut MutexGuard<'_, T>) {
        let seen = self.sequence.load(Relaxed);
        MutexGuard::unlocked(guard, || futex_wait(&self.sequence, seen));
    }

    /// As `wait`, waking after `timeout` at the latest.
    pub fn wait_for<T>(&self, guard: &mut MutexGuard<'_, T>, timeout: std::time::Duration) {
        let seen = self.sequence.load(Relaxed);
        MutexGuard::unlocked(guard, || {
            futex_wait_for(&self.sequence, seen, Some(timeout))
        });
    }

    pub fn notify_one(&self) {
        self.sequence.fetch_add(1, Release);
        futex_wake(&self.sequence, 1);
    }

    pub fn notify_all(&self) {
        self.sequence.fetch_add(1, Release);
        futex_wake(&self.sequence, i32::MAX);
    }
}

impl Default for Condvar {
    fn default() -> Self {
        Condvar::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_closed_gate_turns_entries_away_waits_for_those_inside_and_reopens() {
        let gate = Arc::new(Gate::new());
        let inside = gate.enter().expect("open");
        let closer = {
            let gate = gate.clone();
            std::thread::spawn(move || gate.close(0))
        };
        std::thread::sleep(Duration::from_millis(20));
        assert!(!closer.is_finished(), "close waits for the thread inside");
        drop(inside);
        closer.join().unwrap();
        assert!(gate.enter().is_none(), "closed: turned away at once");
        let anyway = gate.enter_anyway();
        drop(anyway);
        // A child of fork: a parent thread's half-done entry is forgotten on opening.
        std::mem::forget(gate.enter_anyway());
        gate.open(Some(0));
        assert!(gate.enter().is_some());
        gate.close(0); // returns: the stale count is gone
        gate.open(None);
    }

    #[test]
    fn the_mutex_excludes_and_the_condvar_wakes() {
        let pair = Arc::new((Mutex::new(0u64), Condvar::new()));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let pair = pair.clone();
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        *pair.0.lock() += 1;
                    }
                    pair.1.notify_all();
                })
            })
            .collect();
        let mut count = pair.0.lock();
        while *count < 80_000 {
            pair.1.wait(&mut count);
        }
        drop(count);
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*pair.0.lock(), 80_000);
    }

    #[test]
    fn the_rwlock_shares_reads_and_excludes_writes() {
        let lock = Arc::new(RwLock::new(0u64));
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let lock = lock.clone();
                std::thread::spawn(move || {
                    for _ in 0..5_000 {
                        if i % 2 == 0 {
                            *lock.write() += 1;
                        } else {
                            let a = *lock.read();
                            let b = *lock.read();
                            assert!(b >= a);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*lock.read(), 10_000);
        let r1 = lock.read();
        assert!(lock.try_read().is_some(), "readers share");
        assert!(lock.try_write().is_none(), "a writer waits for readers");
        drop(r1);
        assert!(lock.try_write().is_some());
    }

    #[test]
    fn a_writer_gets_in_while_readers_never_pause() {
        use std::sync::atomic::AtomicBool;
        let lock = Arc::new(RwLock::new(0u64));
        let stop = Arc::new(AtomicBool::new(false));
        // Overlapping readers: the reader count never drops to 0 on its own.
        let readers: Vec<_> = (0..4)
            .map(|_| {
                let (lock, stop) = (lock.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(Relaxed) {
                        let guard = lock.read();
                        let until = std::time::Instant::now() + Duration::from_micros(200);
                        while std::time::Instant::now() < until {
                            std::hint::black_box(*guard);
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(20));
        for round in 0..20 {
            let started = std::time::Instant::now();
            *lock.write() += 1;
            // A liveness bound, not a speed goal: starved, it took 15 to 60 s.
            let waited = started.elapsed();
            assert!(
                waited < Duration::from_secs(5),
                "round {round}: writer waited {waited:?}"
            );
        }
        stop.store(true, Relaxed);
        readers.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(*lock.read(), 20);
    }

    #[test]
    fn a_thread_reading_again_while_a_writer_waits_is_only_delayed() {
        let lock = Arc::new(RwLock::new(0u64));
        let first = lock.read();
        let writer = {
            let lock = lock.clone();
            std::thread::spawn(move || *lock.write() += 1)
        };
        std::thread::sleep(Duration::from_millis(20)); // the writer now waits
        let again = lock.read(); // held back for at most READER_YIELD, then in
        drop((again, first));
        writer.join().unwrap();
        assert_eq!(*lock.read(), 1);
    }

    #[test]
    fn the_rwlock_wakes_whoever_sleeps_and_an_uncontended_unlock_makes_no_system_call() {
        let lock = Arc::new(RwLock::new(0u64));
        for round in 0..50 {
            // A writer and two readers sleep behind a holder (a reader in even rounds,
            // a writer in odd ones), then must all get through.
            let held_read = (round % 2 == 0).then(|| lock.read());
            let held_write = (round % 2 == 1).then(|| lock.write());
            let (done, finished) = std::sync::mpsc::channel();
            for i in 0..3 {
                let (lock, done) = (lock.clone(), done.clone());
                std::thread::spawn(move || {
                    if i == 0 {
                        *lock.write() += 1;
                    } else {
                        let _ = *lock.read();
                    }
                    done.send(()).unwrap();
                });
            }
            std::thread::sleep(Duration::from_millis(2));
            drop(held_read);
            drop(held_write);
            for _ in 0..3 {
                finished
                    .recv_timeout(Duration::from_secs(10))
                    .expect("a sleeper was never woken");
            }
        }
        assert_eq!(*lock.read(), 50);
        let before = WAKE_CALLS.with(|n| n.get());
        for _ in 0..1000 {
            drop(lock.read());
            drop((lock.read(), lock.read()));
            *lock.write() += 1;
        }
        assert_eq!(
            WAKE_CALLS.with(|n| n.get()),
            before,
            "an uncontended unlock woke"
        );
    }
}
