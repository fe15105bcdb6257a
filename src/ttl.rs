//! Time-to-live as the C contract defines it, parsed once at the boundary.

use crate::error::{Error, Result};
use std::time::Duration;

/// When an entry stops being returned.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Ttl {
    /// Never expires (a negative or infinite ttl in the C API).
    Never,
    /// Expires this long after the set. A zero duration means the entry is dead at once:
    /// the set replaces (removes) any earlier value and no later read returns it.
    After(Duration),
}

/// Whether an entry that dies at `expires` (Unix time; `None` = never) is dead at `now`.
/// The one expiry test of the persistent kinds: an entry is dead from its deadline on.
pub fn expired(expires: Option<f64>, now: f64) -> bool {
    expires.is_some_and(|e| e <= now)
}

impl Ttl {
    /// The contract's meaning of `ttl_seconds`: negative or +inf never expire, 0 expires
    /// at once, NaN is rejected. A finite ttl too long to represent never expires.
    pub fn from_seconds(seconds: f64) -> Result<Ttl> {
        if seconds.is_nan() {
            return Err(Error::invalid_arg("ttl_seconds is NaN"));
        }
        if seconds < 0.0 || seconds.is_infinite() {
            return Ok(Ttl::Never);
        }
        Ok(Duration::try_from_secs_f64(seconds).map_or(Ttl::Never, Ttl::After))
    }

    /// The wall-clock expiry (Unix seconds) of an entry set at `now`; None = never.
    pub fn deadline_from(&self, now: f64) -> Option<f64> {
        match self {
            Ttl::Never => None,
            Ttl::After(d) => Some(now + d.as_secs_f64()),
        }
    }

    /// True for a ttl that is already over when the set happens.
    pub fn is_expired_at_once(&self) -> bool {
        matches!(self, Ttl::After(d) if d.is_zero())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_values() {
        assert_eq!(Ttl::from_seconds(-1.0).unwrap(), Ttl::Never);
        assert_eq!(Ttl::from_seconds(-0.5).unwrap(), Ttl::Never);
        assert_eq!(Ttl::from_seconds(f64::INFINITY).unwrap(), Ttl::Never);
        assert_eq!(Ttl::from_seconds(f64::NEG_INFINITY).unwrap(), Ttl::Never);
        assert_eq!(Ttl::from_seconds(1e300).unwrap(), Ttl::Never);
        assert!(Ttl::from_seconds(0.0).unwrap().is_expired_at_once());
        assert_eq!(
            Ttl::from_seconds(1.5).unwrap(),
            Ttl::After(Duration::from_millis(1500))
        );
        assert_eq!(
            Ttl::from_seconds(f64::NAN).unwrap_err().kind(),
            crate::ErrorKind::InvalidArg
        );
    }
}
