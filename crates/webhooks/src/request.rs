//! What the HTTP layer hands in, and the checks every provider shares: body size, single
//! well-formed headers, configured secrets, timestamps within tolerance, constant-time matching.

use crate::error::{Provider, RejectReason, WebhookError};
use kernel::Secret;
use ring::hmac;
use std::fmt;
use time::OffsetDateTime;

/// Largest body accepted, checked before any hashing so an oversized request costs nothing.
/// Generous for the providers' real payloads (a Vapi end-of-call report with a long transcript is
/// the largest); the HTTP layer should enforce the same or a smaller limit while reading.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Largest header value looked at. Real signature headers are well under 1 KiB.
const MAX_HEADER_BYTES: usize = 8 * 1024;

/// The request's headers, looked up ASCII-case-insensitively.
///
/// `Debug` prints header names only: values include signatures and, for Vapi's legacy mode, the
/// shared secret itself.
#[derive(Clone, Default)]
pub struct Headers {
    entries: Vec<(String, Vec<u8>)>,
}

impl Headers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one value; a header received twice is appended twice (and then refused where this
    /// crate needs it, because two signature headers are ambiguous).
    pub fn append(&mut self, name: &str, value: impl AsRef<[u8]>) {
        self.entries.push((name.to_ascii_lowercase(), value.as_ref().to_vec()));
    }

    /// Builder form of [`Headers::append`].
    #[must_use]
    pub fn with(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.append(name, value);
        self
    }

    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.entries.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice())
    }
}

impl<N: AsRef<str>, V: AsRef<[u8]>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        let mut headers = Self::new();
        for (name, value) in iter {
            headers.append(name.as_ref(), value);
        }
        headers
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.entries.iter().map(|(name, _)| name)).finish()
    }
}

/// One inbound webhook request, as received.
#[derive(Clone, Copy)]
pub struct InboundRequest<'a> {
    pub headers: &'a Headers,
    /// The body bytes exactly as received: verification runs on these, before any parsing.
    pub body: &'a [u8],
    /// The endpoint's public URL as the provider called it: the configured public base URL,
    /// the path, and `?` + the raw query string when there is one. Never built from the Host
    /// header. Only Twilio signs it; the other providers ignore it.
    pub public_url: &'a str,
    /// The time the request was received.
    pub now: OffsetDateTime,
}

impl fmt::Debug for InboundRequest<'_> {
    // The body is personal data and the URL may carry basic-auth credentials: neither is printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InboundRequest")
            .field("headers", &self.headers)
            .field("body_len", &self.body.len())
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

/// Shared checks, each failing with a rejection attributed to one provider.
#[derive(Clone, Copy)]
pub(crate) struct Checks {
    pub(crate) provider: Provider,
}

impl Checks {
    pub(crate) const fn new(provider: Provider) -> Self {
        Self { provider }
    }

    pub(crate) fn reject(self, reason: RejectReason, detail: &'static str) -> WebhookError {
        WebhookError::new(self.provider, reason, detail)
    }

    pub(crate) fn body_size(self, body: &[u8]) -> Result<(), WebhookError> {
        if body.len() > MAX_BODY_BYTES {
            return Err(self.reject(RejectReason::PayloadTooLarge, "body exceeds the size limit"));
        }
        Ok(())
    }

    /// The non-empty secrets, or a rejection when there are none: an empty key would let anyone
    /// compute a valid signature.
    pub(crate) fn secrets(self, configured: &[Secret<String>]) -> Result<Vec<&[u8]>, WebhookError> {
        let usable: Vec<&[u8]> =
            configured.iter().map(|s| s.expose_secret().as_bytes()).filter(|s| !s.is_empty()).collect();
        if usable.is_empty() {
            return Err(self.reject(RejectReason::NoSecretConfigured, "no secret is configured for this provider"));
        }
        Ok(usable)
    }

    /// The value of a header that must be present exactly once, as trimmed UTF-8.
    pub(crate) fn header<'h>(self, headers: &'h Headers, name: &'static str) -> Result<&'h str, WebhookError> {
        let mut values = headers.values(name);
        let Some(first) = values.next() else {
            return Err(self.reject(RejectReason::MissingHeader, missing_detail(name)));
        };
        if values.next().is_some() {
            return Err(self.reject(RejectReason::MalformedHeader, "a required header is repeated"));
        }
        if first.len() > MAX_HEADER_BYTES {
            return Err(self.reject(RejectReason::MalformedHeader, "a required header is too long"));
        }
        let value = std::str::from_utf8(first)
            .map_err(|_| self.reject(RejectReason::MalformedHeader, "a required header is not UTF-8"))?
            .trim();
        if value.is_empty() {
            return Err(self.reject(RejectReason::MissingHeader, missing_detail(name)));
        }
        Ok(value)
    }

    /// A Unix timestamp in whole seconds, written as plain ASCII digits.
    pub(crate) fn unix_seconds(self, text: &str) -> Result<OffsetDateTime, WebhookError> {
        let seconds = parse_digits(text)
            .ok_or_else(|| self.reject(RejectReason::MalformedHeader, "timestamp is not a Unix time in seconds"))?;
        OffsetDateTime::from_unix_timestamp(seconds)
            .map_err(|_| self.reject(RejectReason::MalformedHeader, "timestamp is out of range"))
    }

    /// Rejects a signed timestamp more than `tolerance` away from `now`, in the past or the
    /// future (a far-future timestamp would stay replayable for that long).
    pub(crate) fn within_tolerance(
        self,
        now: OffsetDateTime,
        signed_at: OffsetDateTime,
        tolerance: std::time::Duration,
    ) -> Result<(), WebhookError> {
        let skew = (now - signed_at).whole_seconds().unsigned_abs();
        if skew > tolerance.as_secs() {
            return Err(self.reject(RejectReason::TimestampOutOfTolerance, "timestamp is outside the tolerance"));
        }
        Ok(())
    }
}

fn missing_detail(name: &'static str) -> &'static str {
    match name {
        "stripe-signature" => "Stripe-Signature header is missing",
        "x-hub-signature-256" => "X-Hub-Signature-256 header is missing",
        "x-twilio-signature" => "X-Twilio-Signature header is missing",
        "x-signature" => "x-signature header is missing",
        "x-timestamp" => "x-timestamp header is missing",
        "x-vapi-secret" => "x-vapi-secret header is missing",
        "webhook-id" => "webhook-id header is missing",
        "webhook-timestamp" => "webhook-timestamp header is missing",
        "webhook-signature" => "webhook-signature header is missing",
        _ => "a required header is missing",
    }
}

/// Plain ASCII digits (no sign, no spaces) as an `i64`; `None` otherwise or on overflow.
pub(crate) fn parse_digits(text: &str) -> Option<i64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Whether any key's HMAC of `message` equals any candidate tag. `ring::hmac::verify` does the
/// comparison in constant time; trying every pair is how secret rotation and providers sending
/// several signatures at once are both honoured.
pub(crate) fn any_hmac_matches(
    algorithm: hmac::Algorithm,
    keys: &[&[u8]],
    message: &[u8],
    candidates: &[Vec<u8>],
) -> bool {
    keys.iter().any(|key| {
        let key = hmac::Key::new(algorithm, key);
        candidates.iter().any(|tag| hmac::verify(&key, message, tag).is_ok())
    })
}

/// Compares a presented token with a configured one in constant time, independent of where they
/// differ and of the presented token's length: both are HMACed under a fixed key and the tags
/// compared by `ring::hmac::verify`. (The key need not be secret: it only turns two strings of
/// any length into two fixed-length values; equal tags mean equal inputs, short of a SHA-256
/// collision.)
pub(crate) fn tokens_match(configured: &[u8], presented: &[u8]) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, b"praxis webhooks token comparison");
    let expected = hmac::sign(&key, configured);
    hmac::verify(&key, presented, expected.as_ref()).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const CHECKS: Checks = Checks::new(Provider::Stripe);

    #[test]
    fn header_lookup_ignores_case_and_refuses_repeats() {
        let headers = Headers::new().with("Stripe-Signature", "t=1,v1=ab");
        assert_eq!(CHECKS.header(&headers, "stripe-signature").unwrap(), "t=1,v1=ab");

        let twice = headers.clone().with("STRIPE-SIGNATURE", "t=2,v1=cd");
        assert_eq!(CHECKS.header(&twice, "stripe-signature").unwrap_err().reason(), RejectReason::MalformedHeader);

        let empty = Headers::new().with("stripe-signature", "  ");
        assert_eq!(CHECKS.header(&empty, "stripe-signature").unwrap_err().reason(), RejectReason::MissingHeader);

        let binary = Headers::new().with("stripe-signature", [0xff, 0xfe]);
        assert_eq!(CHECKS.header(&binary, "stripe-signature").unwrap_err().reason(), RejectReason::MalformedHeader);
    }

    #[test]
    fn headers_debug_prints_names_only() {
        let headers = Headers::new().with("X-Vapi-Secret", "do-not-print-me");
        let printed = format!("{headers:?}");
        assert!(printed.contains("x-vapi-secret"));
        assert!(!printed.contains("do-not-print-me"));
    }

    #[test]
    fn inbound_request_debug_prints_neither_body_nor_url() {
        let headers = Headers::new();
        let request = InboundRequest {
            headers: &headers,
            body: b"patient-name-here",
            public_url: "https://user:pw-here@example.test/hook",
            now: datetime!(2026-03-01 12:00 UTC),
        };
        let printed = format!("{request:?}");
        assert!(!printed.contains("patient-name-here"));
        assert!(!printed.contains("pw-here"));
        assert!(printed.contains("body_len: 17"));
    }

    #[test]
    fn empty_secrets_do_not_count_as_configured() {
        let none: Vec<Secret<String>> = vec![Secret::new(String::new())];
        assert_eq!(CHECKS.secrets(&none).unwrap_err().reason(), RejectReason::NoSecretConfigured);
        assert_eq!(CHECKS.secrets(&[]).unwrap_err().reason(), RejectReason::NoSecretConfigured);
    }

    #[test]
    fn digits_only() {
        assert_eq!(parse_digits("1700000000"), Some(1_700_000_000));
        for bad in ["", "-1", "+1", " 1", "1.0", "1e9", "99999999999999999999"] {
            assert_eq!(parse_digits(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn tolerance_applies_both_ways() {
        let now = datetime!(2026-03-01 12:00 UTC);
        let five_minutes = std::time::Duration::from_secs(300);
        for offset in [-300, 0, 300] {
            assert!(CHECKS.within_tolerance(now, now + time::Duration::seconds(offset), five_minutes).is_ok());
        }
        for offset in [-301, 301] {
            let err = CHECKS.within_tolerance(now, now + time::Duration::seconds(offset), five_minutes).unwrap_err();
            assert_eq!(err.reason(), RejectReason::TimestampOutOfTolerance);
        }
    }

    #[test]
    fn token_comparison_is_equality() {
        assert!(tokens_match(b"abc", b"abc"));
        assert!(!tokens_match(b"abc", b"abd"));
        assert!(!tokens_match(b"abc", b"abcd"));
        assert!(!tokens_match(b"abc", b""));
    }
}
