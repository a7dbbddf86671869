//! Session expiry rules (OWASP Session Management Cheat Sheet): an idle timeout, so a session
//! left open on a shared reception PC dies soon, and an absolute timeout, so even a session in
//! constant use is re-authenticated daily and a stolen cookie has a bounded life.
//!
//! Pure: the caller passes `now` from its `kernel::Clock`.

use time::{Duration, OffsetDateTime};

/// Timeouts for browser sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionPolicy {
    /// A session unused for this long is over.
    pub idle_timeout: Duration,
    /// A session is over this long after sign-in, however active.
    pub absolute_timeout: Duration,
    /// `last_seen_at` is written at most this often (see [`SessionPolicy::should_touch`]).
    pub touch_interval: Duration,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::minutes(30),
            absolute_timeout: Duration::hours(12),
            touch_interval: Duration::SECOND * 60,
        }
    }
}

/// Where a session stands at a given moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionState {
    Active,
    /// Unused for `idle_timeout` or longer.
    IdleExpired,
    /// `absolute_timeout` or longer since sign-in. Reported in preference to `IdleExpired`
    /// when both hold, as it is the one no activity could have prevented.
    AbsoluteExpired,
}

impl SessionState {
    pub const fn is_active(self) -> bool {
        matches!(self, SessionState::Active)
    }
}

impl SessionPolicy {
    /// The state of a session signed in at `created_at` and last seen at `last_seen_at`.
    ///
    /// Boundaries are exclusive: at exactly `last_seen_at + idle_timeout` the session is over.
    /// A `last_seen_at` in the future (clock skew between servers) counts as "just now", never
    /// as extra life beyond the absolute timeout, which depends on `created_at` alone.
    pub fn session_state(
        &self,
        created_at: OffsetDateTime,
        last_seen_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> SessionState {
        if now - created_at >= self.absolute_timeout {
            SessionState::AbsoluteExpired
        } else if now - last_seen_at >= self.idle_timeout {
            SessionState::IdleExpired
        } else {
            SessionState::Active
        }
    }

    /// When the session ends if nothing else happens: the earlier of the idle and absolute
    /// deadlines. Use it for a cache TTL or the cookie's `Max-Age`.
    pub fn expires_at(&self, created_at: OffsetDateTime, last_seen_at: OffsetDateTime) -> OffsetDateTime {
        (last_seen_at + self.idle_timeout).min(created_at + self.absolute_timeout)
    }

    /// Whether to write `last_seen_at = now` for this request. Writing on every request would
    /// put a database write on every read; writing once per `touch_interval` costs at most that
    /// much precision: a session may end up to `touch_interval` before a full `idle_timeout` of
    /// real inactivity, never later.
    pub fn should_touch(&self, last_seen_at: OffsetDateTime, now: OffsetDateTime) -> bool {
        now - last_seen_at >= self.touch_interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-03-01 08:00 UTC);

    #[test]
    fn defaults() {
        let p = SessionPolicy::default();
        assert_eq!(p.idle_timeout, Duration::minutes(30));
        assert_eq!(p.absolute_timeout, Duration::hours(12));
        assert_eq!(p.touch_interval, Duration::seconds(60));
    }

    #[test]
    fn idle_boundary() {
        let p = SessionPolicy::default();
        let just_before = T0 + Duration::minutes(30) - Duration::nanoseconds(1);
        assert_eq!(p.session_state(T0, T0, just_before), SessionState::Active);
        assert_eq!(p.session_state(T0, T0, T0 + Duration::minutes(30)), SessionState::IdleExpired);
    }

    #[test]
    fn absolute_boundary_wins_over_activity() {
        let p = SessionPolicy::default();
        let end = T0 + Duration::hours(12);
        let recent = end - Duration::minutes(1);
        assert_eq!(p.session_state(T0, recent, end - Duration::nanoseconds(1)), SessionState::Active);
        assert_eq!(p.session_state(T0, recent, end), SessionState::AbsoluteExpired);
        // Both expired: absolute is reported.
        assert_eq!(p.session_state(T0, T0, end + Duration::hours(1)), SessionState::AbsoluteExpired);
    }

    #[test]
    fn future_last_seen_gives_no_extra_life() {
        let p = SessionPolicy::default();
        let skewed = T0 + Duration::days(2);
        assert_eq!(p.session_state(T0, skewed, T0 + Duration::hours(13)), SessionState::AbsoluteExpired);
        assert_eq!(p.session_state(T0, skewed, T0 + Duration::hours(1)), SessionState::Active);
    }

    #[test]
    fn expires_at_is_the_earlier_deadline() {
        let p = SessionPolicy::default();
        assert_eq!(p.expires_at(T0, T0), T0 + Duration::minutes(30));
        let late = T0 + Duration::hours(11) + Duration::minutes(50);
        assert_eq!(p.expires_at(T0, late), T0 + Duration::hours(12));
    }

    #[test]
    fn touch_at_most_once_a_minute() {
        let p = SessionPolicy::default();
        assert!(!p.should_touch(T0, T0));
        assert!(!p.should_touch(T0, T0 + Duration::seconds(59)));
        assert!(p.should_touch(T0, T0 + Duration::seconds(60)));
        assert!(!p.should_touch(T0 + Duration::seconds(5), T0), "a future last_seen is not touched");
    }
}
