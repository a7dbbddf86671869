//! WhatsApp Business Platform (Cloud API) webhooks, as Meta's Graph API delivers them.
//!
//! - POST: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret, raw body)>`. Meta sends
//!   no timestamp header, so replays are caught by de-duplication on the message ids only.
//! - GET (subscription handshake): `hub.mode=subscribe&hub.verify_token=…&hub.challenge=…`;
//!   when the token is one of the configured verify tokens the challenge is echoed back.

use crate::error::{Provider, RejectReason, WebhookError};
use crate::fields::{MAX_ID_LEN, MAX_LABEL_LEN, MAX_TEXT_BYTES};
use crate::request::{Checks, InboundRequest, any_hmac_matches, parse_digits, tokens_match};
use kernel::{Pii, Secret};
use ring::hmac;
use serde::Deserialize;
use time::OffsetDateTime;

const CHECKS: Checks = Checks::new(Provider::WhatsApp);

/// More entries than one delivery carries in practice (Meta batches up to a few).
pub const MAX_ENTRIES: usize = 10;
/// Messages in one delivery, summed over every entry and change.
pub const MAX_MESSAGES: usize = 50;
/// Status updates in one delivery, summed likewise.
pub const MAX_STATUSES: usize = 50;
/// Longest `hub.challenge` echoed (Meta sends a decimal number of about ten digits).
pub const MAX_CHALLENGE_LEN: usize = 128;

/// One tenant's WhatsApp endpoint.
#[derive(Debug, Clone)]
pub struct WhatsAppConfig {
    /// The Meta app secret(s) still accepted, newest first.
    pub app_secrets: Vec<Secret<String>>,
    /// The WhatsApp Business phone number ids this endpoint's practice owns. When set, every
    /// change in a delivery must name one of them in `metadata.phone_number_id`: one Meta app
    /// (one app secret) may serve several practices, and the signature alone would not say
    /// which practice a delivery is for. Empty: not checked (one app, one practice).
    pub phone_number_ids: Vec<String>,
}

/// A verified delivery: the inbound messages and the status updates of sent messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhatsAppEvent {
    pub messages: Vec<WhatsAppMessage>,
    pub statuses: Vec<WhatsAppStatus>,
}

impl WhatsAppEvent {
    /// One key per message (its `wamid`) and per status update (`wamid:status`, because a sent
    /// message's id comes back once for `sent`, `delivered` and `read`).
    pub fn dedupe_keys(&self) -> Vec<String> {
        self.messages
            .iter()
            .map(|m| m.id.clone())
            .chain(self.statuses.iter().map(|s| format!("{}:{}", s.id, s.status)))
            .collect()
    }
}

/// An inbound message. The text is personal data: store its SHA-256, never the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhatsAppMessage {
    /// `wamid.…`
    pub id: String,
    /// The sender in E.164 (`+` and up to 15 digits).
    pub from: Pii<String>,
    pub timestamp: OffsetDateTime,
    /// `text`, `image`, `audio`, `button`, `interactive`, … as Meta names it.
    pub message_type: String,
    /// `text.body`, for messages of type `text`.
    pub text: Option<Pii<String>>,
}

/// A status update for a message Praxis sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhatsAppStatus {
    /// The `wamid` of the message the status is about.
    pub id: String,
    /// `sent`, `delivered`, `read`, `failed`, …
    pub status: String,
    pub timestamp: OffsetDateTime,
    /// The recipient in E.164, when Meta includes one that is a phone number.
    pub recipient: Option<Pii<String>>,
}

/// Verifies the request, then parses it. The only way to a [`WhatsAppEvent`].
pub fn receive(config: &WhatsAppConfig, request: &InboundRequest<'_>) -> Result<WhatsAppEvent, WebhookError> {
    verify(config, request)?;
    parse(request.body, &config.phone_number_ids)
}

fn verify(config: &WhatsAppConfig, request: &InboundRequest<'_>) -> Result<(), WebhookError> {
    CHECKS.body_size(request.body)?;
    let secrets = CHECKS.secrets(&config.app_secrets)?;
    let header = CHECKS.header(request.headers, "x-hub-signature-256")?;
    let signature = header
        .strip_prefix("sha256=")
        .and_then(|hex_digest| hex::decode(hex_digest).ok())
        .filter(|digest| digest.len() == 32)
        .ok_or_else(|| CHECKS.reject(RejectReason::MalformedHeader, "X-Hub-Signature-256 is not sha256=<64 hex>"))?;
    if !any_hmac_matches(hmac::HMAC_SHA256, &secrets, request.body, &[signature]) {
        return Err(CHECKS.reject(RejectReason::BadSignature, "X-Hub-Signature-256 does not match the payload"));
    }
    Ok(())
}

/// Answers Meta's GET subscription handshake, given the raw query string (without `?`) and the
/// configured verify tokens: the challenge to echo with 200 as `text/plain`, or a rejection.
///
/// The token is compared in constant time against every configured token. The challenge is
/// echoed only when it is 1..=[`MAX_CHALLENGE_LEN`] characters of `[A-Za-z0-9._-]`, so the
/// response can carry nothing a browser would interpret. A parameter given twice is refused.
pub fn verify_subscription(query: &str, verify_tokens: &[Secret<String>]) -> Result<String, WebhookError> {
    let tokens = CHECKS.secrets(verify_tokens)?;
    let mut mode = None;
    let mut token = None;
    let mut challenge = None;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let slot = match key.as_ref() {
            "hub.mode" => &mut mode,
            "hub.verify_token" => &mut token,
            "hub.challenge" => &mut challenge,
            _ => continue,
        };
        if slot.replace(value).is_some() {
            return Err(CHECKS.reject(RejectReason::PayloadInvalid, "a hub.* parameter is repeated"));
        }
    }
    if mode.as_deref() != Some("subscribe") {
        return Err(CHECKS.reject(RejectReason::PayloadInvalid, "hub.mode is not subscribe"));
    }
    let presented = token.ok_or_else(|| CHECKS.reject(RejectReason::PayloadInvalid, "hub.verify_token is missing"))?;
    let challenge = challenge.ok_or_else(|| CHECKS.reject(RejectReason::PayloadInvalid, "hub.challenge is missing"))?;
    // Every configured token is compared, not just until the first match, so the time taken
    // does not say which one (or whether an earlier one) matched.
    let matched =
        tokens.iter().fold(false, |matched, configured| matched | tokens_match(configured, presented.as_bytes()));
    if !matched {
        return Err(CHECKS.reject(RejectReason::VerifyTokenMismatch, "hub.verify_token matches no configured token"));
    }
    let well_formed = !challenge.is_empty()
        && challenge.len() <= MAX_CHALLENGE_LEN
        && challenge.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !well_formed {
        return Err(
            CHECKS.reject(RejectReason::PayloadInvalid, "hub.challenge is empty, too long or has odd characters")
        );
    }
    Ok(challenge.into_owned())
}

#[derive(Deserialize)]
struct WireNotification {
    object: String,
    #[serde(default)]
    entry: Vec<WireEntry>,
}

#[derive(Deserialize)]
struct WireEntry {
    #[serde(default)]
    changes: Vec<WireChange>,
}

#[derive(Deserialize)]
struct WireChange {
    #[serde(default)]
    value: Option<WireValue>,
}

#[derive(Deserialize)]
struct WireValue {
    #[serde(default)]
    metadata: Option<WireMetadata>,
    #[serde(default)]
    messages: Vec<WireMessage>,
    #[serde(default)]
    statuses: Vec<WireStatus>,
}

#[derive(Deserialize)]
struct WireMetadata {
    #[serde(default)]
    phone_number_id: Option<String>,
}

#[derive(Deserialize)]
struct WireMessage {
    id: String,
    from: String,
    timestamp: String,
    #[serde(rename = "type")]
    message_type: String,
    #[serde(default)]
    text: Option<WireText>,
}

#[derive(Deserialize)]
struct WireText {
    body: String,
}

#[derive(Deserialize)]
struct WireStatus {
    id: String,
    status: String,
    timestamp: String,
    #[serde(default)]
    recipient_id: Option<String>,
}

fn parse(body: &[u8], phone_number_ids: &[String]) -> Result<WhatsAppEvent, WebhookError> {
    let wire: WireNotification = CHECKS.json(body)?;
    if wire.object != "whatsapp_business_account" {
        return Err(CHECKS.reject(RejectReason::PayloadInvalid, "object is not whatsapp_business_account"));
    }
    if wire.entry.len() > MAX_ENTRIES {
        return Err(CHECKS.reject(RejectReason::PayloadInvalid, "more entries than allowed"));
    }
    let values: Vec<WireValue> =
        wire.entry.into_iter().flat_map(|entry| entry.changes).filter_map(|change| change.value).collect();
    if values.iter().map(|v| v.messages.len()).sum::<usize>() > MAX_MESSAGES {
        return Err(CHECKS.reject(RejectReason::PayloadInvalid, "more messages than allowed"));
    }
    if values.iter().map(|v| v.statuses.len()).sum::<usize>() > MAX_STATUSES {
        return Err(CHECKS.reject(RejectReason::PayloadInvalid, "more statuses than allowed"));
    }

    if !phone_number_ids.is_empty() {
        let owned = |value: &WireValue| {
            value
                .metadata
                .as_ref()
                .and_then(|m| m.phone_number_id.as_deref())
                .is_some_and(|id| phone_number_ids.iter().any(|own| own == id))
        };
        if !values.iter().all(owned) {
            return Err(CHECKS.reject(
                RejectReason::PayloadInvalid,
                "metadata.phone_number_id is not one of this practice's phone numbers",
            ));
        }
    }

    let mut event = WhatsAppEvent { messages: Vec::new(), statuses: Vec::new() };
    for value in values {
        for message in value.messages {
            event.messages.push(WhatsAppMessage {
                id: CHECKS.token(message.id, MAX_ID_LEN, "message id is empty, too long or not printable ASCII")?,
                from: Pii::new(e164(&message.from)?),
                timestamp: timestamp(&message.timestamp)?,
                message_type: CHECKS.token(message.message_type, MAX_LABEL_LEN, "message type is not a short label")?,
                text: CHECKS
                    .optional_text(message.text.map(|t| t.body), MAX_TEXT_BYTES, "message text is too long")?
                    .map(Pii::new),
            });
        }
        for status in value.statuses {
            event.statuses.push(WhatsAppStatus {
                id: CHECKS.token(status.id, MAX_ID_LEN, "status id is empty, too long or not printable ASCII")?,
                status: CHECKS.token(status.status, MAX_LABEL_LEN, "status is not a short label")?,
                timestamp: timestamp(&status.timestamp)?,
                // Optional metadata: a recipient that is not a phone number (a group id) is left
                // out rather than failing the whole delivery.
                recipient: status.recipient_id.as_deref().and_then(|id| e164(id).ok()).map(Pii::new),
            });
        }
    }
    Ok(event)
}

/// Meta writes numbers as bare digits with the country code; E.164 adds the `+`.
fn e164(digits: &str) -> Result<String, WebhookError> {
    let valid =
        (1..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0');
    if !valid {
        return Err(CHECKS.reject(RejectReason::PayloadInvalid, "phone number is not E.164 digits"));
    }
    Ok(format!("+{digits}"))
}

/// Meta's timestamps are Unix seconds written as a JSON string.
fn timestamp(text: &str) -> Result<OffsetDateTime, WebhookError> {
    parse_digits(text)
        .and_then(|seconds| OffsetDateTime::from_unix_timestamp(seconds).ok())
        .ok_or_else(|| CHECKS.reject(RejectReason::PayloadInvalid, "timestamp is not Unix seconds"))
}
