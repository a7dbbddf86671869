//! Bounded retries: a few attempts with exponential backoff and jitter, a cap on each attempt
//! and on the whole operation.
//!
//! `std::time::Instant` is read here to keep a deadline; it is a monotonic timer for backoff,
//! not wall-clock time, so it does not go through `kernel::Clock`.

use crypto::KmsError;
use ring::rand::{SecureRandom, SystemRandom};
use std::future::Future;
use std::time::{Duration, Instant};

/// How hard one operation tries before it gives up with `KmsError::Unavailable`.
///
/// Only transient failures are retried (connection errors, timeouts, 429, 5xx); a denied
/// permission, a missing key or a bad ciphertext fails at once. The defaults keep a KMS outage
/// from holding a request for long: at most `max_attempts` attempts, each bounded by
/// `attempt_timeout`, all of them (backoff included) by `operation_timeout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included. At least 1.
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubled for each further one.
    pub initial_backoff: Duration,
    /// Cap on the backoff between two attempts.
    pub max_backoff: Duration,
    /// Longest `Retry-After` honoured. A server asking for more ends the operation with
    /// `Unavailable` rather than holding the caller.
    pub max_retry_after: Duration,
    /// Bound on establishing one connection.
    pub connect_timeout: Duration,
    /// Bound on one attempt (request sent, response read).
    pub attempt_timeout: Duration,
    /// Bound on the whole operation, every attempt and backoff included.
    pub operation_timeout: Duration,
}

impl Default for RetryPolicy {
    /// 3 attempts, backoff 100 ms then 200 ms (cap 400 ms), `Retry-After` honoured up to 2 s,
    /// 3 s to connect, 5 s per attempt, 15 s in all.
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(400),
            max_retry_after: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(3),
            attempt_timeout: Duration::from_secs(5),
            operation_timeout: Duration::from_secs(15),
        }
    }
}

impl RetryPolicy {
    pub fn problems(&self, prefix: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if self.max_attempts == 0 {
            problems.push(format!("{prefix}.max_attempts must be at least 1"));
        }
        if self.attempt_timeout.is_zero() || self.operation_timeout.is_zero() || self.connect_timeout.is_zero() {
            problems.push(format!("{prefix}: timeouts must be greater than zero"));
        }
        problems
    }
}

/// What one attempt came to.
#[derive(Debug)]
pub enum Attempt<T> {
    /// Success, or a failure that another attempt would not change.
    Done(Result<T, KmsError>),
    /// A transient failure (`error` is `Unavailable`); the server may have said when to retry.
    Retry { error: KmsError, retry_after: Option<Duration> },
    /// Retry at once, without backoff and without counting the attempt (a fresh credential was
    /// needed). The caller allows this at most once per operation.
    RetryNow(KmsError),
}

impl<T> Attempt<T> {
    /// A failed attempt: retried when the error is transient, final otherwise.
    pub fn fail(error: KmsError, retry_after: Option<Duration>) -> Self {
        if error.is_retryable() { Self::Retry { error, retry_after } } else { Self::Done(Err(error)) }
    }
}

/// Runs `attempt` until it is done, attempts run out, or the operation deadline passes.
pub async fn run<T, F, Fut>(policy: &RetryPolicy, operation: &str, mut attempt: F) -> Result<T, KmsError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Attempt<T>>,
{
    let deadline = Instant::now() + policy.operation_timeout;
    let attempts = async {
        let mut backoff = policy.initial_backoff;
        let mut made = 0u32;
        let mut retried_now = false;
        loop {
            made += 1;
            let (error, retry_after) = match attempt().await {
                Attempt::Done(result) => return result,
                Attempt::RetryNow(_) if !retried_now => {
                    retried_now = true;
                    made -= 1;
                    continue;
                }
                Attempt::RetryNow(error) => return Err(error),
                Attempt::Retry { error, retry_after } => (error, retry_after),
            };
            if made >= policy.max_attempts {
                return Err(error);
            }
            let mut delay = jittered(backoff);
            if let Some(asked) = retry_after {
                if asked > policy.max_retry_after {
                    return Err(error);
                }
                delay = delay.max(asked);
            }
            if Instant::now() + delay >= deadline {
                return Err(error);
            }
            tokio::time::sleep(delay).await;
            backoff = backoff.saturating_mul(2).min(policy.max_backoff);
        }
    };
    match tokio::time::timeout(policy.operation_timeout, attempts).await {
        Ok(result) => result,
        Err(_) => Err(KmsError::Unavailable(format!(
            "{operation}: no answer within {} ms",
            policy.operation_timeout.as_millis()
        ))),
    }
}

/// "Equal jitter": half the backoff fixed, half random, so many clients that failed together
/// do not retry in lockstep. Falls back to the full backoff if the RNG fails.
fn jittered(backoff: Duration) -> Duration {
    let half = backoff / 2;
    let mut byte = [0u8; 1];
    if SystemRandom::new().fill(&mut byte).is_err() {
        return backoff;
    }
    half + half.mul_f64(f64::from(byte[0]) / 255.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn fast() -> RetryPolicy {
        RetryPolicy {
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(4),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn retries_transient_failures_up_to_the_limit() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = run(&fast(), "op", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Attempt::Retry { error: KmsError::Unavailable("503".into()), retry_after: None }
        })
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert!(matches!(result, Err(KmsError::Unavailable(_))));
    }

    #[tokio::test]
    async fn final_answers_are_not_retried() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = run(&fast(), "op", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Attempt::Done(Err(KmsError::AccessDenied("no".into())))
        })
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(matches!(result, Err(KmsError::AccessDenied(_))));
    }

    #[tokio::test]
    async fn a_long_retry_after_ends_the_operation() {
        let calls = AtomicU32::new(0);
        let started = Instant::now();
        let result: Result<(), _> = run(&fast(), "op", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Attempt::Retry { error: KmsError::Unavailable("429".into()), retry_after: Some(Duration::from_secs(60)) }
        })
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(result.is_err());
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn retry_now_is_allowed_once() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = run(&fast(), "op", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Attempt::RetryNow(KmsError::AccessDenied("expired".into()))
        })
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert!(matches!(result, Err(KmsError::AccessDenied(_))));
    }

    #[test]
    fn jitter_stays_within_the_backoff() {
        for _ in 0..100 {
            let d = jittered(Duration::from_millis(100));
            assert!(d >= Duration::from_millis(50) && d <= Duration::from_millis(100), "{d:?}");
        }
    }
}
