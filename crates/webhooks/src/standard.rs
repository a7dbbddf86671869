//! Standard Webhooks (standardwebhooks.com), the scheme Svix and others send.
//!
//! Headers `webhook-id`, `webhook-timestamp` (Unix seconds) and `webhook-signature`, a
//! space-separated list of `<version>,<base64>`; only `v1` entries count (others, such as the
//! asymmetric `v1a`, are ignored), and any one matching `v1` accepts. The secret is
//! `whsec_<base64>`; its decoded bytes (24 to 64 of them, as the specification asks) are the
//! HMAC-SHA256 key. The signed content is `"{webhook-id}.{webhook-timestamp}.{raw body}"`, and
//! the timestamp must be within five minutes of `now`, in either direction.

use crate::error::{Provider, RejectReason, WebhookError};
use crate::fields::{MAX_ID_LEN, MAX_LABEL_LEN};
use crate::request::{Checks, InboundRequest, any_hmac_matches};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use kernel::Secret;
use ring::hmac;
use std::fmt;
use std::time::Duration;
use time::OffsetDateTime;

const CHECKS: Checks = Checks::new(Provider::Standard);

/// The specification's replay window, both directions.
pub const TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// More signatures than a sender rotating keys would list.
const MAX_SIGNATURES: usize = 8;

const SECRET_PREFIX: &str = "whsec_";
const MIN_SECRET_BYTES: usize = 24;
const MAX_SECRET_BYTES: usize = 64;

/// A decoded `whsec_…` secret: the HMAC key bytes, zeroized on drop, never printed.
#[derive(Clone)]
pub struct StandardSecret(Secret<Vec<u8>>);

impl StandardSecret {
    /// Decodes `whsec_<base64>` (the prefix may be left off, as the reference libraries allow).
    /// Refused with [`RejectReason::InvalidConfiguration`] unless it decodes to 24..=64 bytes,
    /// so a broken secret is found when the configuration is loaded, not on the first delivery.
    pub fn parse(secret: &Secret<String>) -> Result<Self, WebhookError> {
        let text = secret.expose_secret();
        let encoded = text.strip_prefix(SECRET_PREFIX).unwrap_or(text);
        let key = Secret::new(BASE64.decode(encoded).map_err(|_| {
            CHECKS.reject(RejectReason::InvalidConfiguration, "secret is not whsec_ followed by base64")
        })?);
        if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&key.expose_secret().len()) {
            return Err(CHECKS.reject(RejectReason::InvalidConfiguration, "secret does not decode to 24 to 64 bytes"));
        }
        Ok(Self(key))
    }

    fn key(&self) -> &[u8] {
        self.0.expose_secret()
    }
}

impl fmt::Debug for StandardSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StandardSecret(")?;
        fmt::Debug::fmt(&self.0, f)?;
        f.write_str(")")
    }
}

/// One tenant's Standard Webhooks endpoint.
#[derive(Debug, Clone)]
pub struct StandardConfig {
    /// Every secret still accepted, newest first.
    pub secrets: Vec<StandardSecret>,
}

/// A verified Standard Webhooks message.
#[derive(Clone, PartialEq)]
pub struct StandardEvent {
    /// `webhook-id`: the de-duplication key (the same for every retry of a message).
    pub webhook_id: String,
    pub timestamp: OffsetDateTime,
    /// The payload's top-level `type`, when it has one (the specification recommends it).
    pub event_type: Option<String>,
    /// The body, parsed. Treat as personal data.
    pub payload: serde_json::Value,
}

impl StandardEvent {
    pub fn dedupe_key(&self) -> &str {
        &self.webhook_id
    }
}

impl fmt::Debug for StandardEvent {
    // The payload may hold personal data; only its presence is printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StandardEvent")
            .field("webhook_id", &self.webhook_id)
            .field("timestamp", &self.timestamp)
            .field("event_type", &self.event_type)
            .finish_non_exhaustive()
    }
}

/// Verifies the request, then parses it. The only way to a [`StandardEvent`].
pub fn receive(config: &StandardConfig, request: &InboundRequest<'_>) -> Result<StandardEvent, WebhookError> {
    CHECKS.body_size(request.body)?;
    if config.secrets.is_empty() {
        return Err(CHECKS.reject(RejectReason::NoSecretConfigured, "no secret is configured for this provider"));
    }
    let id = CHECKS.header(request.headers, "webhook-id")?;
    let timestamp_text = CHECKS.header(request.headers, "webhook-timestamp")?;
    let timestamp = CHECKS.unix_seconds(timestamp_text)?;
    let signatures = v1_signatures(CHECKS.header(request.headers, "webhook-signature")?)?;

    let mut signed = Vec::with_capacity(id.len() + timestamp_text.len() + 2 + request.body.len());
    signed.extend_from_slice(id.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(timestamp_text.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(request.body);
    let keys: Vec<&[u8]> = config.secrets.iter().map(StandardSecret::key).collect();
    if !any_hmac_matches(hmac::HMAC_SHA256, &keys, &signed, &signatures) {
        return Err(CHECKS.reject(RejectReason::BadSignature, "no v1 signature matches the payload"));
    }
    CHECKS.within_tolerance(request.now, timestamp, TOLERANCE)?;

    let webhook_id = CHECKS.token(id.to_owned(), MAX_ID_LEN, "webhook-id is too long or not printable ASCII")?;
    let payload: serde_json::Value = CHECKS.json(request.body)?;
    let event_type = match payload.get("type") {
        None => None,
        Some(serde_json::Value::String(t)) => {
            Some(CHECKS.token(t.clone(), MAX_LABEL_LEN, "type is not a short label")?)
        }
        Some(_) => return Err(CHECKS.reject(RejectReason::PayloadInvalid, "type is not a string")),
    };
    Ok(StandardEvent { webhook_id, timestamp, event_type, payload })
}

fn v1_signatures(header: &str) -> Result<Vec<Vec<u8>>, WebhookError> {
    let mut signatures = Vec::new();
    for entry in header.split_ascii_whitespace() {
        if let Some(encoded) = entry.strip_prefix("v1,") {
            // A v1 entry that is not base64 can match nothing; it is kept as an empty tag.
            signatures.push(BASE64.decode(encoded).unwrap_or_default());
        }
    }
    if signatures.is_empty() {
        return Err(CHECKS.reject(RejectReason::BadSignature, "webhook-signature has no v1 signature"));
    }
    if signatures.len() > MAX_SIGNATURES {
        return Err(CHECKS.reject(RejectReason::MalformedHeader, "webhook-signature has too many signatures"));
    }
    Ok(signatures)
}
