//! Security-event rules, as pure decisions over counts kept elsewhere (the Redis counter lives in
//! cache-redis).

use kernel::UserId;
use std::net::IpAddr;
use time::Duration;

/// Who a detector flagged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SuspicionSubject {
    /// A known account. Failed logins for an unknown login name are counted by source IP
    /// instead: the attempted login name (often an email) must not reach the audit log.
    Account(UserId),
    /// A source address; personal data under the GDPR, kept for incident response (see
    /// [`crate::AuditEvent::suspicious_activity`]).
    SourceIp(IpAddr),
}

/// "More than `threshold` failed logins for one account or one source IP within `window`
/// writes one `security.suspicious_activity` entry."
///
/// Why one and not one per attempt: a password-spraying run makes thousands of attempts; an
/// entry per attempt would flood the chain (each `auth.login_failed` is already recorded) and
/// bury the signal. One entry per window says "look here" once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailedLoginPolicy {
    /// Failed attempts allowed in a window before the subject is flagged.
    pub threshold: u64,
    /// The counting window.
    pub window: Duration,
}

impl FailedLoginPolicy {
    pub const DEFAULT_THRESHOLD: u64 = 10;
    pub const DEFAULT_WINDOW: Duration = Duration::minutes(5);

    /// Whether this failed attempt, the `count_in_window`-th in the current window (counting it),
    /// should write the suspicious-activity entry: true exactly when the count crosses the
    /// threshold (10 -> 11 by default).
    ///
    /// "Exactly once per window" holds with a fixed-window counter (Redis `INCR`, `EXPIRE` set on
    /// the first increment), whose count only grows until the key expires. With a sliding window
    /// the count can fall back to the threshold and cross it again, writing more than one entry.
    pub const fn on_failed_login(&self, count_in_window: u64) -> bool {
        count_in_window == self.threshold.saturating_add(1)
    }
}

impl Default for FailedLoginPolicy {
    fn default() -> Self {
        Self { threshold: Self::DEFAULT_THRESHOLD, window: Self::DEFAULT_WINDOW }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_the_eleventh_failure_in_a_window_is_flagged() {
        let policy = FailedLoginPolicy::default();
        let flagged: Vec<u64> = (0..=1000).filter(|count| policy.on_failed_login(*count)).collect();
        assert_eq!(flagged, vec![11]);
        assert_eq!(policy.window, Duration::minutes(5));
    }

    #[test]
    fn threshold_is_configurable() {
        let policy = FailedLoginPolicy { threshold: 3, window: Duration::minutes(1) };
        assert!(!policy.on_failed_login(3));
        assert!(policy.on_failed_login(4));
        assert!(!policy.on_failed_login(5));
        let max = FailedLoginPolicy { threshold: u64::MAX, window: Duration::minutes(1) };
        assert!(!max.on_failed_login(u64::MAX - 1));
    }
}
