//! Clocks. The in-memory backend uses a monotonic clock (immune to wall-clock jumps);
//! the persistent backends use the wall clock, since their deadlines must mean the same
//! thing to every process and after a restart.

#![deny(clippy::undocumented_unsafe_blocks)]

use crate::ttl::Ttl;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// A deadline on the monotonic clock (CLOCK_MONOTONIC), in nanoseconds. 0 means "never
/// expires" so it fits a plain u64 field.
pub type MonoDeadline = u64;

pub const NO_DEADLINE: MonoDeadline = 0;

/// Nanoseconds of `clock`, read through libc (whose vDSO use valgrind and every libc
/// environment understand; rustix's own vDSO parser crashed under valgrind).
fn clock_ns(clock: libc::clockid_t, resolution: bool) -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid, writable timespec for the call; the clocks are ones Linux
    // has, and on failure `t` stays zero.
    unsafe {
        if resolution {
            libc::clock_getres(clock, &mut t);
        } else {
            libc::clock_gettime(clock, &mut t);
        }
    }
    (t.tv_sec.max(0) as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t.tv_nsec.max(0) as u64)
}

/// Nanoseconds on CLOCK_MONOTONIC, never 0 (0 is [`NO_DEADLINE`]).
pub fn mono_now() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC, false).max(1)
}

/// Nanoseconds on CLOCK_MONOTONIC_COARSE: the last timer tick's value, a fraction of
/// the precise clock's cost, for checks that only need to run now and then.
pub fn mono_coarse_now() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC_COARSE, false)
}

/// How far CLOCK_MONOTONIC_COARSE may lag CLOCK_MONOTONIC: its resolution (one timer
/// tick), doubled for safety.
fn coarse_lag() -> u64 {
    static LAG: OnceLock<u64> = OnceLock::new();
    *LAG.get_or_init(|| clock_ns(libc::CLOCK_MONOTONIC_COARSE, true).clamp(1, 100_000_000) * 2)
}

/// True when `deadline` has passed now, exactly as [`mono_now`] tells, but without
/// reading the precise clock while the deadline is more than a timer tick away: the
/// coarse clock (the last tick's value of the same clock, a fifth of the cost here)
/// lags the precise one by at most a tick, so `coarse + lag < deadline` proves the
/// entry alive. Gets of entries with a TTL read the precise clock only near the end.
#[inline]
pub fn mono_expired_now(deadline: MonoDeadline) -> bool {
    if deadline == NO_DEADLINE {
        return false;
    }
    let coarse = clock_ns(libc::CLOCK_MONOTONIC_COARSE, false);
    if coarse.saturating_add(coarse_lag()) < deadline {
        return false;
    }
    mono_now() >= deadline
}

/// The monotonic deadline of an entry set now with `ttl`.
pub fn mono_deadline(ttl: Ttl) -> MonoDeadline {
    match ttl {
        Ttl::Never => NO_DEADLINE,
        Ttl::After(d) => {
            let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
            match mono_now().checked_add(nanos) {
                Some(deadline) if deadline != u64::MAX => deadline,
                _ => NO_DEADLINE, // centuries away: the same as never
            }
        }
    }
}

/// True when `deadline` has passed at `now`.
#[inline]
pub fn mono_expired(deadline: MonoDeadline, now: u64) -> bool {
    deadline != NO_DEADLINE && now >= deadline
}

/// Wall-clock seconds since the Unix epoch, as stored by the persistent backends.
pub fn wall_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
