//! Fixed-window failure counters: login lockout and suspicious-activity detection.
//!
//! "5 failed attempts per 15 minutes per account and IP, successes not counted": the app calls
//! [`FailureCounter::failures`] *before* verifying a password and refuses when the count has
//! reached 5 (so the 6th attempt never reaches the password hash), and calls
//! [`FailureCounter::record_failure`] after a failed verification. Successes neither count nor
//! clear the counter; only an administrator's unlock calls [`FailureCounter::reset`]. Clearing on
//! success would let an attacker who knows one valid credential (their own) reset the counter of
//! a shared IP between guesses.
//!
//! # Why a fixed window
//!
//! The window starts at the first failure and is not extended by later ones; the count only grows
//! until the key expires. So "more than 10 failures within 5 minutes" crosses 10 -> 11 exactly once
//! per window, and the app writes exactly one suspicious-activity entry (see
//! `audit::FailedLoginPolicy`). A lockout also ends at a predictable time, which the response can
//! state, instead of sliding forward with every attempt an attacker makes in the victim's name.
//!
//! # Why a script
//!
//! `INCR` then `PEXPIRE` as two commands leaves a key without expiry if the process dies between
//! them: a permanent lockout. In the script both happen or neither. The expiry is set whenever the
//! key has none (not only when the count is 1), which also repairs a key someone `PERSIST`ed.

use crate::{CacheError, RedisStore, keys, micros, millis_ceil};
use std::time::Duration;

/// KEYS[1]: the counter. ARGV[1]: window (ms). Returns the count including this failure.
const RECORD_SCRIPT: &str = r"
local count = redis.call('INCR', KEYS[1])
if redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return count
";

/// A counter's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureStatus {
    /// Failures in the current window.
    pub count: u64,
    /// Time until the window ends and the count returns to 0; `None` when there is no window.
    pub reset_after: Option<Duration>,
}

/// Fixed-window failure counters in Redis.
#[derive(Clone)]
pub struct FailureCounter {
    store: RedisStore,
    script: redis::Script,
}

impl std::fmt::Debug for FailureCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailureCounter").field("store", &self.store).finish_non_exhaustive()
    }
}

impl FailureCounter {
    pub fn new(store: RedisStore) -> Self {
        Self { store, script: redis::Script::new(RECORD_SCRIPT) }
    }

    /// `prefix + "fail:" + digest(key)`. The app chooses `key`, e.g. `"login:acct:<user id>"`,
    /// `"login:ip:<ip>"`, or both joined for a per-(account, IP) counter; it is hashed, so it may
    /// contain anything (an attempted login name) without shaping or leaking into key names.
    pub fn key_for(&self, key: &str) -> String {
        self.store.key(&format!("fail:{}", keys::digest(key)))
    }

    /// Counts one failure; the first failure starts a window of `window`. Returns the count in
    /// the window including this one. Concurrent calls each get a distinct count, so exactly one
    /// caller sees any given value (e.g. 11).
    pub async fn record_failure(&self, key: &str, window: Duration) -> Result<u64, CacheError> {
        let key = self.key_for(key);
        let script = &self.script;
        let window_ms = millis_ceil(window);
        self.store
            .with_connection(
                |mut conn| async move { Ok(script.key(&key).arg(window_ms).invoke_async(&mut conn).await?) },
            )
            .await
    }

    /// Failures in the current window (0 when none).
    pub async fn failures(&self, key: &str) -> Result<u64, CacheError> {
        let key = self.key_for(key);
        self.store
            .with_connection(|mut conn| async move {
                let count: Option<u64> = redis::cmd("GET").arg(&key).query_async(&mut conn).await?;
                Ok(count.unwrap_or(0))
            })
            .await
    }

    /// Count and time until the window ends, read atomically (`MULTI`), for a lockout response
    /// that says when to try again.
    pub async fn status(&self, key: &str) -> Result<FailureStatus, CacheError> {
        let key = self.key_for(key);
        self.store
            .with_connection(|mut conn| async move {
                let (count, pttl): (Option<u64>, i64) =
                    redis::pipe().atomic().get(&key).pttl(&key).query_async(&mut conn).await?;
                let count = count.unwrap_or(0);
                let reset_after = (count > 0 && pttl >= 0).then(|| micros(pttl.saturating_mul(1_000)));
                Ok(FailureStatus { count, reset_after })
            })
            .await
    }

    /// Deletes the counter: an administrator's unlock. Not for successful logins (see the module
    /// docs). Returns whether there was a counter.
    pub async fn reset(&self, key: &str) -> Result<bool, CacheError> {
        let key = self.key_for(key);
        self.store
            .with_connection(|mut conn| async move {
                let deleted: i64 = redis::cmd("DEL").arg(&key).query_async(&mut conn).await?;
                Ok(deleted > 0)
            })
            .await
    }
}
