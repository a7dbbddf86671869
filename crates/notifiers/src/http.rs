//! What the HTTP adapters share: the HTTPS client (the workspace's one: reqwest on ring-based
//! rustls, Mozilla's roots, no redirects, so a credential is never carried elsewhere) and how a
//! transport failure or an HTTP status becomes a [`NotifyError`].

use crate::{NotifyError, codes};
use std::time::Duration;

/// One attempt per send, bounded: the reminder worker retries with backoff, and neither Meta nor
/// Twilio accept an idempotency key on sends, so retrying inside the adapter would only add
/// duplicates when an answer is lost.
pub(crate) fn client() -> Result<reqwest::Client, String> {
    let policy = kms_http::RetryPolicy {
        max_attempts: 1,
        connect_timeout: Duration::from_secs(5),
        attempt_timeout: Duration::from_secs(15),
        operation_timeout: Duration::from_secs(15),
        ..kms_http::RetryPolicy::default()
    };
    kms_http::client(&policy, None).map_err(|e| e.to_string())
}

/// A request that got no HTTP answer.
pub(crate) fn transport_error(error: &reqwest::Error) -> NotifyError {
    if error.is_timeout() {
        NotifyError::Temporary { code: codes::TIMEOUT }
    } else {
        NotifyError::Temporary { code: codes::CONNECTION_FAILED }
    }
}

/// The classes every provider shares: rate limits and server errors are temporary, and so is a
/// refused credential (see [`NotifyError::Temporary`]). `None`: the provider's own error body
/// decides.
pub(crate) fn common_status_error(status: reqwest::StatusCode) -> Option<NotifyError> {
    match status.as_u16() {
        429 => Some(NotifyError::Temporary { code: codes::RATE_LIMITED }),
        401 | 403 => Some(NotifyError::Temporary { code: codes::PROVIDER_AUTH }),
        500..=599 => Some(NotifyError::Temporary { code: codes::PROVIDER_UNAVAILABLE }),
        _ => None,
    }
}
