//! A gate around the user code the library runs (completion callbacks, compute
//! functions), so a language runtime can fork with none of it half-way through.
//!
//! Why: a callback into an interpreter from a library thread first registers that thread
//! with the interpreter, under the interpreter's own global lock. CPython (3.11 at least)
//! does it in `PyGILState_Ensure` without holding the GIL, so `os.fork()` in another
//! thread can copy that lock held, and the child hangs in its after-fork clean-up before
//! any Python code runs (seen in the Python fork test: one child in about 25 runs).
//! The library's own `pthread_atfork` handlers run too late to help: inside `fork()`,
//! with the GIL held by the forking thread, a callback waiting for the GIL could never
//! finish. So the runtime closes the gate *before* it forks, with its own lock released
//! (`cache_before_fork`, from a `before` hook of `os.register_at_fork`): that waits for the
//! user code in flight on other threads and keeps new user code from starting until
//! `cache_after_fork` (in the parent and in the child).
//!
//! The gate is a [`Gate`] (two atomics and a poll, fork-safe by construction).

use crate::sync::fork;
use crate::sync::Gate;
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

/// Closed between `cache_before_fork` and `cache_after_fork`; counts the user code
/// running now, on all threads (nested calls count each).
static GATE: Gate = Gate::new();

thread_local! {
    /// User code running now on this thread (a callback that calls the library again).
    static DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// Runs the user code `f` through the gate: waits while the gate is closed (unless this
/// thread is already inside user code, which the closer does not wait for anyway).
pub(crate) fn run_user_code<R>(f: impl FnOnce() -> R) -> R {
    let _inside = match DEPTH.get() {
        0 => GATE.enter_when_open(),
        _ => GATE.enter_anyway(),
    };
    struct Leave;
    impl Drop for Leave {
        fn drop(&mut self) {
            DEPTH.set(DEPTH.get() - 1);
        }
    }
    DEPTH.set(DEPTH.get() + 1);
    let _leave = Leave;
    f()
}

/// Closes the gate and waits until no other thread is inside user code.
pub(crate) fn close() {
    GATE.close(DEPTH.get());
}

/// Opens the gate. In a child of fork, also forgets the user code the parent's other
/// threads were waiting to run (those threads do not exist here).
pub(crate) fn open(in_child: bool) {
    GATE.open(in_child.then(|| DEPTH.get()));
}

/// The fork count ([`fork::forks`]) when the gate was last closed.
static FORKS_AT_CLOSE: AtomicU64 = AtomicU64::new(0);

/// Waits until no other thread is running a callback or compute function the library
/// called (cache_keys visitors, run on the caller's own thread, are not held), and holds
/// new ones back, until cache_after_fork. For runtimes whose callbacks need a lock that
/// the thread about to fork holds (CPython's GIL): call it just before fork, with that
/// lock released (the Python binding does, from an os.register_at_fork hook). Calls
/// made from inside a callback do not wait for that callback. Every cache_before_fork
/// needs its cache_after_fork, in the parent and in the child.
#[no_mangle]
pub extern "C" fn cache_before_fork() {
    fork::install(); // so the fork that follows is counted
    FORKS_AT_CLOSE.store(fork::forks(), SeqCst);
    close();
}

/// Lets callbacks run again after cache_before_fork: call it in the parent and in the
/// child once fork has returned.
#[no_mangle]
pub extern "C" fn cache_after_fork() {
    // The child has one thread, the one that forked; only there is the count of the
    // parent's other threads stale. The library's fork handlers count the forks.
    open(fork::forks() != FORKS_AT_CLOSE.load(SeqCst));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn closing_waits_for_user_code_in_flight_and_holds_new_code_back() {
        let release = Arc::new(AtomicBool::new(false));
        let inside = Arc::new(AtomicBool::new(false));
        let worker = {
            let (release, inside) = (release.clone(), inside.clone());
            std::thread::spawn(move || {
                run_user_code(|| {
                    inside.store(true, SeqCst);
                    while !release.load(SeqCst) {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                })
            })
        };
        while !inside.load(SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let closer = {
            let release = release.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                release.store(true, SeqCst);
            })
        };
        let started = std::time::Instant::now();
        close();
        assert!(
            started.elapsed() >= Duration::from_millis(40),
            "close waited for the callback"
        );
        let ran = Arc::new(AtomicBool::new(false));
        let late = {
            let ran = ran.clone();
            std::thread::spawn(move || run_user_code(|| ran.store(true, SeqCst)))
        };
        std::thread::sleep(Duration::from_millis(30));
        assert!(!ran.load(SeqCst), "no new user code while closed");
        open(false);
        late.join().unwrap();
        assert!(ran.load(SeqCst));
        worker.join().unwrap();
        closer.join().unwrap();
    }
}
