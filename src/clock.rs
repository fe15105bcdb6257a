//! Clocks. The in-memory backend uses a monotonic clock (immune to wall-clock jumps);
//! the persistent backends use the wall clock, since their deadlines must mean the same
//! thing to every process and after a restart.

use crate::ttl::Ttl;
use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// A deadline on the monotonic clock, in nanoseconds since a process-wide epoch.
/// 0 means "never expires" so it fits a plain u64 field.
pub type MonoDeadline = u64;

pub const NO_DEADLINE: MonoDeadline = 0;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since the process epoch, never 0 (0 is [`NO_DEADLINE`]).
pub fn mono_now() -> u64 {
    (epoch().elapsed().as_nanos() as u64).saturating_add(1)
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
