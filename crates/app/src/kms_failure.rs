//! Logging of KMS refusals without flooding the log.
//!
//! When the KMS refuses our credentials or our key, every request that needs a key fails the
//! same way until an operator acts: logging each one at ERROR would bury the cause under
//! thousands of identical lines. [`LogThrottle`] lets one ERROR line per kind through per
//! [`LOG_INTERVAL`]; the rest go to debug. The logged text is the adapter's message, which by
//! the port's contract carries no key material or plaintext.

use crypto::KmsError;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// At most one ERROR line per kind of refusal in this interval.
pub const LOG_INTERVAL: Duration = Duration::from_secs(60);

/// The kinds of refusal, each throttled on its own (a revoked token must not hide a deleted key).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalKind {
    AccessDenied,
    KeyNotFound,
    KeyVersionRetired,
    InvalidCiphertext,
}

impl RefusalKind {
    const ALL: [RefusalKind; 4] =
        [Self::AccessDenied, Self::KeyNotFound, Self::KeyVersionRetired, Self::InvalidCiphertext];

    /// The kind of `error`, or `None` for the errors that are not throttled refusals.
    pub fn of(error: &KmsError) -> Option<Self> {
        match error {
            KmsError::AccessDenied(_) => Some(Self::AccessDenied),
            KmsError::KeyNotFound(_) => Some(Self::KeyNotFound),
            KmsError::KeyVersionRetired(_) => Some(Self::KeyVersionRetired),
            KmsError::InvalidCiphertext => Some(Self::InvalidCiphertext),
            KmsError::Unavailable(_) | KmsError::Other(_) => None,
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|kind| *kind == self).unwrap_or(0)
    }
}

/// When each kind was last logged at ERROR.
#[derive(Debug, Default)]
pub struct LogThrottle {
    last_logged: Mutex<[Option<Instant>; 4]>,
}

impl LogThrottle {
    pub const fn new() -> Self {
        Self { last_logged: Mutex::new([None; 4]) }
    }

    /// True when `kind` may be logged at ERROR `now` (and records that it was); false when it
    /// was logged less than [`LOG_INTERVAL`] ago.
    pub fn should_log(&self, kind: RefusalKind, now: Instant) -> bool {
        let mut last = self.last_logged.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = &mut last[kind.index()];
        match slot {
            Some(at) if now.saturating_duration_since(*at) < LOG_INTERVAL => false,
            _ => {
                *slot = Some(now);
                true
            }
        }
    }
}

/// The process's one throttle: the refusals come from the one keyring, whatever the request.
static THROTTLE: LogThrottle = LogThrottle::new();

/// Logs a refusal of `kind`: ERROR at most once per kind per [`LOG_INTERVAL`], debug otherwise.
pub fn log_refusal(kind: RefusalKind, error: &KmsError) {
    if THROTTLE.should_log(kind, Instant::now()) {
        match kind {
            RefusalKind::InvalidCiphertext => tracing::error!(
                error = %error,
                "a wrapped data key does not authenticate under its key and context (tampering, or a row \
                 copied to another context); further ones are logged at debug for a minute"
            ),
            _ => tracing::error!(
                error = %error,
                "the key management service refuses our credentials or key: requests needing patient keys \
                 answer 503 until an operator fixes it; further refusals are logged at debug for a minute"
            ),
        }
    } else {
        tracing::debug!(error = %error, "key management refusal (already logged)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_error_line_per_kind_per_interval() {
        let throttle = LogThrottle::new();
        let start = Instant::now();
        assert!(throttle.should_log(RefusalKind::AccessDenied, start));
        assert!(!throttle.should_log(RefusalKind::AccessDenied, start + Duration::from_secs(59)));
        // Another kind is not hidden by the first.
        assert!(throttle.should_log(RefusalKind::KeyNotFound, start + Duration::from_secs(1)));
        assert!(throttle.should_log(RefusalKind::AccessDenied, start + LOG_INTERVAL));
        assert!(!throttle.should_log(RefusalKind::AccessDenied, start + LOG_INTERVAL + Duration::from_secs(1)));
    }

    #[test]
    fn only_refusals_are_throttled() {
        assert_eq!(RefusalKind::of(&KmsError::AccessDenied("x".into())), Some(RefusalKind::AccessDenied));
        assert_eq!(RefusalKind::of(&KmsError::KeyVersionRetired("x".into())), Some(RefusalKind::KeyVersionRetired));
        assert_eq!(RefusalKind::of(&KmsError::InvalidCiphertext), Some(RefusalKind::InvalidCiphertext));
        assert_eq!(RefusalKind::of(&KmsError::Unavailable("x".into())), None);
        assert_eq!(RefusalKind::of(&KmsError::Other("x".into())), None);
    }
}
