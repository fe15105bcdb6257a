//! Holding signals back from a thread while it waits on a socket.
//!
//! A read from a socket with a receive timeout (`SO_RCVTIMEO`, which the Redis client
//! sets to bound every wait) is not restarted by the kernel after a signal handler runs,
//! even one installed with `SA_RESTART`: it fails with EINTR. The Redis client then
//! reports the call failed and drops the connection, and a pop the server already
//! carried out loses its value with the reply. A thread inside a Redis call therefore
//! blocks the asynchronous signals for the call's duration (bounded by its timeout);
//! they stay pending and are delivered the moment the call returns, or meanwhile to any
//! other thread that does not block them. Signals the kernel raises for the thread's own
//! faults (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS) are never blocked.

#![allow(unsafe_code)]

/// The asynchronous signals are blocked in the calling thread while this lives; the
/// mask it found is restored on drop.
pub(crate) struct SignalsHeld {
    previous: libc::sigset_t,
}

impl SignalsHeld {
    pub(crate) fn new() -> SignalsHeld {
        // SAFETY: sigset_t is plain data; sigfillset/sigdelset initialise and edit the
        // local set, and pthread_sigmask reads it and writes the old mask into `previous`,
        // a live local. (SIGKILL and SIGSTOP cannot be blocked; the kernel ignores them
        // in the set.)
        unsafe {
            let mut block: libc::sigset_t = std::mem::zeroed();
            let mut previous: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut block);
            for fault in [
                libc::SIGSEGV,
                libc::SIGBUS,
                libc::SIGFPE,
                libc::SIGILL,
                libc::SIGTRAP,
                libc::SIGSYS,
            ] {
                libc::sigdelset(&mut block, fault);
            }
            libc::pthread_sigmask(libc::SIG_BLOCK, &block, &mut previous);
            SignalsHeld { previous }
        }
    }
}

impl Drop for SignalsHeld {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved by `new` on this same thread (the guard is not
        // Send: it holds a sigset_t, and is only ever a local of the call).
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.previous, std::ptr::null_mut());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocked(signal: libc::c_int) -> bool {
        // SAFETY: reads this thread's mask into a local set.
        unsafe {
            let mut now: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut now);
            libc::sigismember(&now, signal) == 1
        }
    }

    #[test]
    fn async_signals_are_held_while_it_lives_and_faults_never() {
        assert!(!blocked(libc::SIGUSR1));
        {
            let _held = SignalsHeld::new();
            assert!(blocked(libc::SIGUSR1) && blocked(libc::SIGINT) && blocked(libc::SIGALRM));
            assert!(!blocked(libc::SIGSEGV) && !blocked(libc::SIGBUS));
        }
        assert!(!blocked(libc::SIGUSR1), "the mask it found is back");
    }
}
