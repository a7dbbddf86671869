//! The Clock port: domain code asks a `Clock` for the time instead of reading it ambiently, so
//! tests can pin time and rules such as "consent expires at T" are deterministic.

use std::sync::{Arc, Mutex};
use time::{Duration, OffsetDateTime};

/// Source of the current time, in UTC.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> OffsetDateTime;
}

/// The real clock. This is the only place in the workspace that reads ambient time
/// (clippy.toml disallows it everywhere else).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one clock adapter
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A shared clock as a `Clock` value, for components generic over their clock (the DEK cache)
/// that must read the same clock as the rest of the process.
#[derive(Debug, Clone)]
pub struct SharedClock(pub Arc<dyn Clock>);

impl Clock for SharedClock {
    fn now(&self) -> OffsetDateTime {
        self.0.now()
    }
}

/// A clock that only moves when told to; for tests and simulations.
#[derive(Debug, Clone)]
pub struct FixedClock {
    now: Arc<Mutex<OffsetDateTime>>,
}

impl FixedClock {
    pub fn at(now: OffsetDateTime) -> Self {
        Self { now: Arc::new(Mutex::new(now)) }
    }

    pub fn advance(&self, by: Duration) {
        let mut guard = self.now.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *guard += by;
    }

    pub fn set(&self, to: OffsetDateTime) {
        let mut guard = self.now.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *guard = to;
    }
}

impl Clock for FixedClock {
    fn now(&self) -> OffsetDateTime {
        *self.now.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn fixed_clock_moves_only_when_told() {
        let clock = FixedClock::at(datetime!(2026-01-01 00:00 UTC));
        assert_eq!(clock.now(), datetime!(2026-01-01 00:00 UTC));
        clock.advance(Duration::minutes(5));
        assert_eq!(clock.now(), datetime!(2026-01-01 00:05 UTC));
    }
}
