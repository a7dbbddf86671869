//! Vapi server messages (the assistant's "server URL" webhooks).
//!
//! Two modes, chosen explicitly per tenant; neither is ever tried as a fallback for the other:
//!
//! - [`VapiConfig::Hmac`]: a Vapi HMAC credential with its defaults (algorithm `sha256`,
//!   signature header `x-signature`, hex encoding, no signature prefix, timestamp header
//!   `x-timestamp`, timestamp included, payload format `{timestamp}.{body}`, secret not
//!   base64). The signature is the hex HMAC-SHA256 of `"{x-timestamp}.{raw body}"`, and the
//!   timestamp must be within the tolerance of `now`. Vapi's documentation does not state the
//!   timestamp's unit, so both Unix seconds and Unix milliseconds are accepted, told apart by
//!   magnitude (any value of 10^11 or more is milliseconds: as seconds it would be past the year
//!   5000). The signed string uses the header text as received, so the unit does not affect it.
//! - [`VapiConfig::LegacySharedSecret`]: the older inline `secret`, which Vapi sends verbatim in
//!   `x-vapi-secret`; compared in constant time. No body integrity and no replay window: only
//!   for assistants not yet moved to an HMAC credential.

use crate::error::{Provider, RejectReason, WebhookError};
use crate::fields::{MAX_ID_LEN, MAX_LABEL_LEN};
use crate::request::{Checks, InboundRequest, any_hmac_matches, parse_digits, tokens_match};
use kernel::Secret;
use ring::hmac;
use serde::Deserialize;
use std::time::Duration;
use time::OffsetDateTime;

const CHECKS: Checks = Checks::new(Provider::Vapi);

/// Default window for `x-timestamp`.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// The smallest `x-timestamp` read as milliseconds rather than seconds.
const MILLISECONDS_FROM: i64 = 100_000_000_000;

/// How one tenant's Vapi endpoint authenticates Vapi.
#[derive(Debug, Clone)]
pub enum VapiConfig {
    /// The HMAC credential (recommended): body integrity and a replay window.
    Hmac { secrets: Vec<Secret<String>>, tolerance: Duration },
    /// The legacy `x-vapi-secret` shared secret. Must be chosen explicitly.
    LegacySharedSecret { secrets: Vec<Secret<String>> },
}

impl VapiConfig {
    /// HMAC mode with the default tolerance of five minutes.
    pub fn hmac(secrets: Vec<Secret<String>>) -> Self {
        Self::Hmac { secrets, tolerance: DEFAULT_TOLERANCE }
    }
}

/// A verified Vapi server message. Metadata only: transcripts and recordings are not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VapiEvent {
    /// `message.type`: `status-update`, `end-of-call-report`, `tool-calls`, …
    pub message_type: String,
    /// `message.call.id`
    pub call_id: String,
    /// `message.status` (status updates): `queued`, `ringing`, `in-progress`, `ended`, …
    pub status: Option<String>,
    /// `message.endedReason`, once the call has ended.
    pub ended_reason: Option<String>,
}

impl VapiEvent {
    /// Call id and message type, plus the status when there is one (a call sends one
    /// `status-update` per status).
    pub fn dedupe_key(&self) -> String {
        match &self.status {
            Some(status) => format!("{}:{}:{}", self.call_id, self.message_type, status),
            None => format!("{}:{}", self.call_id, self.message_type),
        }
    }
}

/// Verifies the request in the configured mode, then parses it. The only way to a
/// [`VapiEvent`].
pub fn receive(config: &VapiConfig, request: &InboundRequest<'_>) -> Result<VapiEvent, WebhookError> {
    CHECKS.body_size(request.body)?;
    match config {
        VapiConfig::Hmac { secrets, tolerance } => verify_hmac(secrets, *tolerance, request)?,
        VapiConfig::LegacySharedSecret { secrets } => verify_shared_secret(secrets, request)?,
    }
    parse(request.body)
}

fn verify_hmac(
    secrets: &[Secret<String>],
    tolerance: Duration,
    request: &InboundRequest<'_>,
) -> Result<(), WebhookError> {
    let secrets = CHECKS.secrets(secrets)?;
    let signature = hex::decode(CHECKS.header(request.headers, "x-signature")?)
        .ok()
        .filter(|digest| digest.len() == 32)
        .ok_or_else(|| CHECKS.reject(RejectReason::MalformedHeader, "x-signature is not 64 hex digits"))?;
    let timestamp_text = CHECKS.header(request.headers, "x-timestamp")?;
    let signed_at = timestamp(timestamp_text)?;

    let mut signed = Vec::with_capacity(timestamp_text.len() + 1 + request.body.len());
    signed.extend_from_slice(timestamp_text.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(request.body);
    if !any_hmac_matches(hmac::HMAC_SHA256, &secrets, &signed, &[signature]) {
        return Err(CHECKS.reject(RejectReason::BadSignature, "x-signature does not match the payload"));
    }
    CHECKS.within_tolerance(request.now, signed_at, tolerance)
}

fn timestamp(text: &str) -> Result<OffsetDateTime, WebhookError> {
    let value = parse_digits(text)
        .ok_or_else(|| CHECKS.reject(RejectReason::MalformedHeader, "x-timestamp is not a Unix time"))?;
    let nanos =
        if value >= MILLISECONDS_FROM { i128::from(value) * 1_000_000 } else { i128::from(value) * 1_000_000_000 };
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .map_err(|_| CHECKS.reject(RejectReason::MalformedHeader, "x-timestamp is out of range"))
}

fn verify_shared_secret(secrets: &[Secret<String>], request: &InboundRequest<'_>) -> Result<(), WebhookError> {
    let secrets = CHECKS.secrets(secrets)?;
    let presented = CHECKS.header(request.headers, "x-vapi-secret")?;
    // Every configured secret is compared, so the time taken does not say which one matched.
    let matched =
        secrets.iter().fold(false, |matched, configured| matched | tokens_match(configured, presented.as_bytes()));
    if !matched {
        return Err(CHECKS.reject(RejectReason::BadSignature, "x-vapi-secret matches no configured secret"));
    }
    Ok(())
}

#[derive(Deserialize)]
struct WireEnvelope {
    message: WireMessage,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireMessage {
    #[serde(rename = "type")]
    message_type: String,
    call: WireCall,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    ended_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireCall {
    id: String,
}

fn parse(body: &[u8]) -> Result<VapiEvent, WebhookError> {
    let message = CHECKS.json::<WireEnvelope>(body)?.message;
    Ok(VapiEvent {
        message_type: CHECKS.token(message.message_type, MAX_LABEL_LEN, "message.type is not a short label")?,
        call_id: CHECKS.token(message.call.id, MAX_ID_LEN, "message.call.id is empty, too long or not ASCII")?,
        status: CHECKS.optional_token(message.status, MAX_LABEL_LEN, "message.status is not a short label")?,
        ended_reason: CHECKS.optional_token(
            message.ended_reason,
            MAX_LABEL_LEN,
            "message.endedReason is not a short label",
        )?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn timestamps_in_seconds_and_milliseconds_mean_the_same_instant() {
        let instant = datetime!(2026-03-01 12:00:00 UTC);
        let seconds = instant.unix_timestamp();
        assert_eq!(timestamp(&seconds.to_string()).unwrap(), instant);
        assert_eq!(timestamp(&(seconds * 1000).to_string()).unwrap(), instant);
        assert_eq!(
            timestamp(&(seconds * 1000 + 250).to_string()).unwrap(),
            instant + time::Duration::milliseconds(250)
        );
    }

    #[test]
    fn timestamps_must_be_digits() {
        for bad in ["", "-1", "2026-03-01T12:00:00Z", "1.5", "99999999999999999999"] {
            assert_eq!(timestamp(bad).unwrap_err().reason(), RejectReason::MalformedHeader, "{bad:?}");
        }
    }
}
