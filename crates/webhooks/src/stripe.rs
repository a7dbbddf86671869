//! Stripe: `Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>…]`.
//!
//! The signature is the hex HMAC-SHA256 of `"{t}.{raw body}"`, keyed with the endpoint's signing
//! secret string (the whole `whsec_…` text as bytes, exactly as Stripe's SDKs use it). Only the
//! `v1` scheme counts; any one matching `v1` accepts (Stripe sends two while a secret is being
//! rolled). Then `t` must be within the tolerance of `now`, in either direction; Stripe's SDKs
//! only look backwards, but a timestamp far in the future would keep a captured request
//! replayable until then.

use crate::error::{Provider, RejectReason, WebhookError};
use crate::fields::{MAX_ID_LEN, MAX_LABEL_LEN};
use crate::request::{Checks, InboundRequest, any_hmac_matches};
use kernel::Secret;
use ring::hmac;
use serde::Deserialize;
use std::time::Duration;
use time::OffsetDateTime;
use uuid::Uuid;

const CHECKS: Checks = Checks::new(Provider::Stripe);

/// Stripe's own default tolerance.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// More `v1` entries than any real header carries (Stripe sends one, two while rolling secrets).
const MAX_SIGNATURES: usize = 8;

/// How far `t` may be from `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StripeTolerance {
    /// `|now - t|` must not exceed this.
    Within(Duration),
    /// No timestamp check, as Stripe's SDKs allow with a tolerance of zero. Only for replaying
    /// old events on purpose (e.g. re-delivering from the dashboard in a test); the signature
    /// is still required.
    Disabled,
}

/// One tenant's Stripe endpoint.
#[derive(Debug, Clone)]
pub struct StripeConfig {
    /// Every signing secret still accepted; the newest and, while rolling, the previous one.
    pub signing_secrets: Vec<Secret<String>>,
    pub tolerance: StripeTolerance,
}

impl StripeConfig {
    /// The given secrets with Stripe's default tolerance of five minutes.
    pub fn new(signing_secrets: Vec<Secret<String>>) -> Self {
        Self { signing_secrets, tolerance: StripeTolerance::Within(DEFAULT_TOLERANCE) }
    }
}

/// A verified Stripe event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeEvent {
    /// `evt_…`; the de-duplication key (Stripe re-sends the same event with the same id).
    pub id: String,
    pub livemode: bool,
    pub kind: StripeEventKind,
}

impl StripeEvent {
    /// The event's `type` as Stripe names it.
    pub fn event_type(&self) -> &str {
        match &self.kind {
            StripeEventKind::CheckoutSessionCompleted(_) => CHECKOUT_SESSION_COMPLETED,
            StripeEventKind::PaymentIntentSucceeded(_) => PAYMENT_INTENT_SUCCEEDED,
            StripeEventKind::PaymentIntentPaymentFailed(_) => PAYMENT_INTENT_PAYMENT_FAILED,
            StripeEventKind::Other { event_type } => event_type,
        }
    }

    pub fn dedupe_key(&self) -> &str {
        &self.id
    }
}

const CHECKOUT_SESSION_COMPLETED: &str = "checkout.session.completed";
const PAYMENT_INTENT_SUCCEEDED: &str = "payment_intent.succeeded";
const PAYMENT_INTENT_PAYMENT_FAILED: &str = "payment_intent.payment_failed";

/// The event types Praxis acts on, and everything else by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StripeEventKind {
    CheckoutSessionCompleted(StripePayment),
    PaymentIntentSucceeded(StripePayment),
    PaymentIntentPaymentFailed(StripePayment),
    Other { event_type: String },
}

/// The `data.object` of a payment event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripePayment {
    /// `cs_…` (checkout session) or `pi_…` (payment intent).
    pub object_id: String,
    /// `metadata.appointment_id`, set by Praxis when it created the session or intent.
    pub appointment_id: Option<Uuid>,
    /// A checkout session's `payment_status` (`paid`, `unpaid`, `no_payment_required`): a
    /// completed checkout is not always a paid one (delayed methods such as SEPA complete unpaid).
    pub payment_status: Option<String>,
}

/// Verifies the request, then parses it. The only way to a [`StripeEvent`].
pub fn receive(config: &StripeConfig, request: &InboundRequest<'_>) -> Result<StripeEvent, WebhookError> {
    verify(config, request)?;
    parse(request.body)
}

fn verify(config: &StripeConfig, request: &InboundRequest<'_>) -> Result<(), WebhookError> {
    CHECKS.body_size(request.body)?;
    let secrets = CHECKS.secrets(&config.signing_secrets)?;
    let header = SignatureHeader::parse(CHECKS.header(request.headers, "stripe-signature")?)?;

    let mut signed = Vec::with_capacity(header.timestamp_text.len() + 1 + request.body.len());
    signed.extend_from_slice(header.timestamp_text.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(request.body);
    if !any_hmac_matches(hmac::HMAC_SHA256, &secrets, &signed, &header.v1_signatures) {
        return Err(CHECKS.reject(RejectReason::BadSignature, "no v1 signature matches the payload"));
    }

    if let StripeTolerance::Within(tolerance) = config.tolerance {
        CHECKS.within_tolerance(request.now, header.timestamp, tolerance)?;
    }
    Ok(())
}

struct SignatureHeader<'h> {
    timestamp_text: &'h str,
    timestamp: OffsetDateTime,
    /// Decoded `v1` values; an entry that is not hex decodes to nothing and can match nothing.
    v1_signatures: Vec<Vec<u8>>,
}

impl<'h> SignatureHeader<'h> {
    fn parse(header: &'h str) -> Result<Self, WebhookError> {
        let mut timestamp_text = None;
        let mut v1_signatures = Vec::new();
        for item in header.split(',') {
            // Items that are not `key=value` and schemes other than v1 (v0 is Stripe's test-mode
            // legacy) are skipped, as Stripe's SDKs do.
            let Some((key, value)) = item.trim().split_once('=') else { continue };
            match key {
                "t" if timestamp_text.is_some() => {
                    return Err(CHECKS.reject(RejectReason::MalformedHeader, "Stripe-Signature has two timestamps"));
                }
                "t" => timestamp_text = Some(value),
                "v1" => v1_signatures.push(hex::decode(value).unwrap_or_default()),
                _ => {}
            }
        }
        let timestamp_text = timestamp_text
            .ok_or_else(|| CHECKS.reject(RejectReason::MalformedHeader, "Stripe-Signature has no timestamp"))?;
        let timestamp = CHECKS.unix_seconds(timestamp_text)?;
        if v1_signatures.is_empty() {
            return Err(CHECKS.reject(RejectReason::BadSignature, "Stripe-Signature has no v1 signature"));
        }
        if v1_signatures.len() > MAX_SIGNATURES {
            return Err(CHECKS.reject(RejectReason::MalformedHeader, "Stripe-Signature has too many signatures"));
        }
        Ok(Self { timestamp_text, timestamp, v1_signatures })
    }
}

#[derive(Deserialize)]
struct WireEvent {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    /// Stripe always sends it; hand-built events (SDK test helpers, fixtures) often leave it
    /// out. Absent reads as `false`, a test-mode event: the stricter of the two readings, and
    /// the event is verified by its signature either way.
    #[serde(default)]
    livemode: bool,
}

/// Read in a second pass, only for the payment types: other events' objects have other shapes.
#[derive(Deserialize)]
struct WirePaymentEvent {
    data: WireData,
}

#[derive(Deserialize)]
struct WireData {
    object: WireObject,
}

#[derive(Deserialize)]
struct WireObject {
    id: String,
    #[serde(default)]
    metadata: Option<WireMetadata>,
    #[serde(default)]
    payment_status: Option<String>,
}

#[derive(Deserialize)]
struct WireMetadata {
    #[serde(default)]
    appointment_id: Option<String>,
}

fn parse(body: &[u8]) -> Result<StripeEvent, WebhookError> {
    let wire: WireEvent = CHECKS.json(body)?;
    let id = CHECKS.token(wire.id, MAX_ID_LEN, "event id is empty, too long or not printable ASCII")?;
    let event_type =
        CHECKS.token(wire.event_type, MAX_LABEL_LEN, "event type is empty, too long or not printable ASCII")?;
    let kind = match event_type.as_str() {
        CHECKOUT_SESSION_COMPLETED => StripeEventKind::CheckoutSessionCompleted(payment(body)?),
        PAYMENT_INTENT_SUCCEEDED => StripeEventKind::PaymentIntentSucceeded(payment(body)?),
        PAYMENT_INTENT_PAYMENT_FAILED => StripeEventKind::PaymentIntentPaymentFailed(payment(body)?),
        _ => StripeEventKind::Other { event_type },
    };
    Ok(StripeEvent { id, livemode: wire.livemode, kind })
}

fn payment(body: &[u8]) -> Result<StripePayment, WebhookError> {
    let wire: WirePaymentEvent = CHECKS.json(body)?;
    let object = wire.data.object;
    let object_id = CHECKS.token(object.id, MAX_ID_LEN, "data.object.id is empty, too long or not printable ASCII")?;
    let appointment_id = match object.metadata.and_then(|m| m.appointment_id) {
        None => None,
        // Praxis writes this value itself when it creates the payment; anything but a UUID
        // means the event is not one of ours as we understand it, and is refused loudly.
        Some(text) => Some(
            Uuid::parse_str(&text)
                .map_err(|_| CHECKS.reject(RejectReason::PayloadInvalid, "metadata.appointment_id is not a UUID"))?,
        ),
    };
    let payment_status = object
        .payment_status
        .map(|status| {
            CHECKS.token(status, MAX_LABEL_LEN, "data.object.payment_status is too long or not printable ASCII")
        })
        .transpose()?;
    Ok(StripePayment { object_id, appointment_id, payment_status })
}
