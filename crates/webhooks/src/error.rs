//! The one rejection type of this crate.
//!
//! A rejection names the provider, one reason from a small closed set (each with a stable slug for
//! the audit entry and the problem type) and a fixed, static detail sentence. The detail is a
//! `&'static str` on purpose: it can never carry a secret, a signature, a header value or a piece
//! of the body, whatever the code around it does.

use std::fmt;

/// The senders this crate verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    Stripe,
    WhatsApp,
    Twilio,
    Vapi,
    /// Any sender following the Standard Webhooks specification (standardwebhooks.com).
    Standard,
}

impl Provider {
    /// Stable machine-readable name, for audit entries, metrics and idempotency key namespaces.
    pub fn slug(self) -> &'static str {
        match self {
            Self::Stripe => "stripe",
            Self::WhatsApp => "whatsapp",
            Self::Twilio => "twilio",
            Self::Vapi => "vapi",
            Self::Standard => "standard_webhooks",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.slug())
    }
}

/// Why a webhook was rejected. Closed on purpose: the HTTP layer matches it exhaustively to pick a
/// status, and the audit trail records the slug.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// A header the provider always sends is absent (or empty).
    MissingHeader,
    /// A signature or timestamp header is present but not in the provider's format, or is
    /// repeated.
    MalformedHeader,
    /// No configured secret produces any of the signatures presented.
    BadSignature,
    /// The signed timestamp is further from `now` than the tolerance, in either direction.
    TimestampOutOfTolerance,
    /// Twilio JSON webhooks: the body's SHA-256 differs from the signed `bodySHA256`.
    BodyDigestMismatch,
    /// WhatsApp subscription handshake: the `hub.verify_token` matches no configured token.
    VerifyTokenMismatch,
    /// The tenant has no (non-empty) secret for this provider: nothing can be verified, so
    /// everything is refused.
    NoSecretConfigured,
    /// The configuration handed in cannot be used (a Standard Webhooks secret that is not
    /// `whsec_` + base64 of 24 to 64 bytes, a Twilio endpoint URL that is not an http(s) URL).
    InvalidConfiguration,
    /// The request is authentic (or, for the handshake, well-formed enough to judge) but its
    /// content is not the shape this crate accepts: bad JSON, missing ids, bounds exceeded.
    PayloadInvalid,
    /// The body is larger than [`crate::MAX_BODY_BYTES`]; rejected before any hashing.
    PayloadTooLarge,
}

impl RejectReason {
    /// Stable machine-readable name (snake_case), for audit entries and problem types.
    pub fn slug(self) -> &'static str {
        match self {
            Self::MissingHeader => "missing_header",
            Self::MalformedHeader => "malformed_header",
            Self::BadSignature => "bad_signature",
            Self::TimestampOutOfTolerance => "timestamp_out_of_tolerance",
            Self::BodyDigestMismatch => "body_digest_mismatch",
            Self::VerifyTokenMismatch => "verify_token_mismatch",
            Self::NoSecretConfigured => "no_secret_configured",
            Self::InvalidConfiguration => "invalid_configuration",
            Self::PayloadInvalid => "payload_invalid",
            Self::PayloadTooLarge => "payload_too_large",
        }
    }

    /// Whether the request failed to prove it came from the provider (the HTTP layer answers
    /// 401 / 403). `PayloadInvalid` (400), `PayloadTooLarge` (413) and the two configuration
    /// reasons (a server-side fault, 5xx) are not authentication failures.
    pub fn is_authentication_failure(self) -> bool {
        matches!(
            self,
            Self::MissingHeader
                | Self::MalformedHeader
                | Self::BadSignature
                | Self::TimestampOutOfTolerance
                | Self::BodyDigestMismatch
                | Self::VerifyTokenMismatch
        )
    }

    /// Whether the fault lies in the tenant's configuration rather than in the request.
    pub fn is_configuration_fault(self) -> bool {
        matches!(self, Self::NoSecretConfigured | Self::InvalidConfiguration)
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.slug())
    }
}

/// A rejected webhook. Carries no request data: see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{provider} webhook rejected ({reason}): {detail}")]
pub struct WebhookError {
    provider: Provider,
    reason: RejectReason,
    detail: &'static str,
}

impl WebhookError {
    pub(crate) const fn new(provider: Provider, reason: RejectReason, detail: &'static str) -> Self {
        Self { provider, reason, detail }
    }

    pub fn provider(&self) -> Provider {
        self.provider
    }

    pub fn reason(&self) -> RejectReason {
        self.reason
    }

    /// The reason's slug; shorthand for `reason().slug()`.
    pub fn slug(&self) -> &'static str {
        self.reason.slug()
    }

    /// A fixed sentence naming which check failed (never any request or secret data).
    pub fn detail(&self) -> &'static str {
        self.detail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [RejectReason; 10] = [
        RejectReason::MissingHeader,
        RejectReason::MalformedHeader,
        RejectReason::BadSignature,
        RejectReason::TimestampOutOfTolerance,
        RejectReason::BodyDigestMismatch,
        RejectReason::VerifyTokenMismatch,
        RejectReason::NoSecretConfigured,
        RejectReason::InvalidConfiguration,
        RejectReason::PayloadInvalid,
        RejectReason::PayloadTooLarge,
    ];

    #[test]
    fn slugs_are_distinct_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for reason in ALL {
            let slug = reason.slug();
            assert!(slug.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{slug}");
            assert!(seen.insert(slug), "duplicate slug {slug}");
        }
    }

    #[test]
    fn every_reason_falls_in_exactly_one_class() {
        for reason in ALL {
            let classes = [
                reason.is_authentication_failure(),
                reason.is_configuration_fault(),
                matches!(reason, RejectReason::PayloadInvalid | RejectReason::PayloadTooLarge),
            ];
            assert_eq!(classes.iter().filter(|c| **c).count(), 1, "{reason}");
        }
    }

    #[test]
    fn display_names_provider_reason_and_detail() {
        let err = WebhookError::new(Provider::Stripe, RejectReason::BadSignature, "no v1 signature matched");
        assert_eq!(err.to_string(), "stripe webhook rejected (bad_signature): no v1 signature matched");
        assert_eq!(err.slug(), "bad_signature");
    }
}
